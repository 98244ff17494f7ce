"""The boot model (menu entries, Xen and dom0 command lines) and the boot loaders it is rendered to.

BIOS boots ISOLINUX, whose mboot.c32 loads Xen as a Multiboot kernel; 64-bit UEFI boots GRUB
x86_64-efi (BOOTX64.EFI) from a FAT image, which loads Xen with multiboot2; 32-bit UEFI boots GRUB
i386-efi (BOOTIA32.EFI) from the same image and the same grub.cfg, which there offers only what
can start from 32-bit firmware: Linux without Xen (builder/bootfirmware.py says why). Every menu
comes from the same BootModel, so the command lines cannot drift apart.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder import medium
from builder.bootfirmware import Runs, best_way
from builder.context import BuildContext
from builder.hardware import QEMU_TARGETS, Target, load_targets, machine_options
from builder.profile.model import Firmware, Profile, TargetOptions, persists
from builder.run import run
from builder.templating import render


@dataclass(frozen=True)
class EfiLoader:
    """GRUB for one UEFI platform: its grub-mkimage format and its removable-media file name."""

    platform: str
    file: str  # in EFI/BOOT/, the name firmware looks for on removable media

    @property
    def modules(self) -> list[str]:
        # i386-efi never loads Xen (it cannot start there), so it goes without multiboot2.
        return GRUB_MODULES if self.platform == "x86_64-efi" else [m for m in GRUB_MODULES if m != "multiboot2"]


EFI_LOADERS = {
    Firmware.UEFI: EfiLoader("x86_64-efi", "BOOTX64.EFI"),
    Firmware.UEFI_IA32: EfiLoader("i386-efi", "BOOTIA32.EFI"),
}
REQUIRED_TOOLS = {
    Firmware.BIOS: ["/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/mboot.c32"],
    Firmware.UEFI: ["grub-mkimage", "/usr/lib/grub/x86_64-efi/multiboot2.mod", "mkfs.vfat", "mcopy"],
    Firmware.UEFI_IA32: ["grub-mkimage", "/usr/lib/grub/i386-efi/linux.mod", "mkfs.vfat", "mcopy"],
}
XEN, KERNEL, INITRD = (medium.at_boot(p) for p in (medium.XEN, medium.KERNEL, medium.INITRD))  # as the menus name them
HOST_ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
SYSLINUX_MODULES = Path("/usr/lib/syslinux/modules/bios")
ISOLINUX_MODULES = ["ldlinux.c32", "mboot.c32", "libcom32.c32", "menu.c32", "libutil.c32"]
GRUB_MODULES = [
    "part_gpt", "part_msdos", "iso9660", "fat", "search", "search_fs_file", "configfile", "normal",
    "echo", "serial", "terminal", "multiboot2", "linux", "gzio", "test", "all_video", "ls", "cat",
    "sleep", "reboot", "halt",
]  # fmt: skip
# isolinux.bin's El Torito boot-info table: mastering (boot_info_table=True) overwrites these bytes
# with the medium's LBAs, the file's length and its checksum. They are staged as zeros, so the
# manifest holds the sha256 of isolinux.bin with the table masked, which verify can check.
BOOT_INFO_TABLE = slice(8, 64)
MENU_TIMEOUT = 3  # seconds

XEN_CONSOLE = "console=com1,vga com1=115200,8n1"
DOM0_CONSOLE = "console=hvc0"
BARE_CONSOLE = "console=tty0 console=ttyS0,115200"  # the last console= is /dev/console
# nonetworking: live-boot would write an ifupdown /etc/network/interfaces that dom0 does not use
# (systemd-networkd runs its bridge), after a second `udevadm trigger` and `settle` of every
# device: 2-4 s of every boot under TCG.
LIVE_ARGS = "boot=live nonetworking"
# Safe mode's trouble-savers, each for a common way Xen dies on real hardware: one dom0 vCPU,
# no IOMMU (broken DMAR/IVRS tables, VT-d faults on integrated graphics), no EFI runtime services
# (firmware that crashes when Xen calls it), no deep C-states (machines that hang in them); dom0
# without kernel modesetting (graphics drivers that hang under Xen). Guests are not started.
SAFE_XEN_ARGS = "dom0_max_vcpus=1 iommu=0 efi=no-rs max_cstate=1"
SAFE_DOM0_ARGS = "xenlive.safe nomodeset"
FRESH_DOM0_ARGS = "xenlive.fresh"  # usr/lib/xenlive/persist leaves the stick's saved state alone


@dataclass(frozen=True)
class BootEntry:
    id: str
    title: str
    xen: str | None  # path of Xen on the medium, None to boot Linux bare
    xen_args: str
    kernel: str
    kernel_args: str
    initrd: str


def _join(*parts: str) -> str:
    return " ".join(p for p in parts if p)


def profile_targets(profile: Profile) -> list[Target]:
    """The machines the profile is built for (checks.targets, else the QEMU machines)."""
    return load_targets(profile.checks.targets or QEMU_TARGETS)


def boot_model(profile: Profile, targets: Sequence[Target] | None = None) -> list[BootEntry]:
    """The Xenoppix-style menu: Xen with guests, Xen safe mode, and Linux without Xen; then, with
    checks.target_options: menu, one entry per target whose known issues carry options. A profile
    that persists anything boots persistent by default, with a "fresh" entry after it.

    With checks.target_options: cmdline, those options are on every entry instead.
    """
    targets = profile_targets(profile) if targets is None else targets
    xen_extra: list[str] = []
    dom0_extra: list[str] = []
    if profile.checks.target_options is TargetOptions.CMDLINE:
        for target in targets:
            options = machine_options(target)
            xen_extra += [o for o in options.xen if o not in xen_extra]
            dom0_extra += [o for o in options.dom0 if o not in dom0_extra]
    xen_args = _join(XEN_CONSOLE, profile.xen.cmdline, *xen_extra)
    dom0_cmdline = _join(profile.dom0.cmdline, *dom0_extra)
    dom0_args = _join(LIVE_ARGS, DOM0_CONSOLE, dom0_cmdline)
    keeps = persists(profile)
    entries = [
        BootEntry("xen", "Xen with dom0 and guests" + (" (persistent)" if keeps else ""), XEN, xen_args,
                  KERNEL, dom0_args, INITRD),
        *([BootEntry("fresh", "Xen (fresh, ignore the stick's saved state)", XEN, xen_args, KERNEL,
                     _join(dom0_args, FRESH_DOM0_ARGS), INITRD)] if keeps else []),
        BootEntry("safe", "Xen safe mode (no guests, conservative options)", XEN,
                  _join(xen_args, SAFE_XEN_ARGS), KERNEL,
                  _join(dom0_args, SAFE_DOM0_ARGS), INITRD),
        BootEntry("linux", "Linux without Xen", None, "", KERNEL,
                  _join(LIVE_ARGS, BARE_CONSOLE, dom0_cmdline), INITRD),
    ]  # fmt: skip
    for target in targets:
        entry = target_entry(profile, target)
        if entry is not None:
            entries.append(entry)
    return entries


def target_entry(profile: Profile, target: Target) -> BootEntry | None:
    """The boot menu entry that carries a target's options (checks.target_options: menu), if it needs one.

    It starts what the medium can start on that machine: Xen, or on a machine where only "Linux
    without Xen" can (32-bit UEFI) that, with the dom0 options. Titles and ids are built from the
    target's name and the options, both limited by patterns to characters safe in either menu.
    """
    options = machine_options(target)
    if profile.checks.target_options is not TargetOptions.MENU or not options:
        return None
    fw = target.firmware
    way = best_way(profile.media.boot, fw.type, fw.csm) if fw.type is not None else None
    runs = way.runs if way is not None else Runs.XEN if fw.type is None else None
    dom0_cmdline = _join(profile.dom0.cmdline, *options.dom0)
    if runs is Runs.XEN:
        return BootEntry(f"xen-{target.name}", f"Xen for {target.name} ({options.describe()})", XEN,
                         _join(XEN_CONSOLE, profile.xen.cmdline, *options.xen), KERNEL,
                         _join(LIVE_ARGS, DOM0_CONSOLE, dom0_cmdline), INITRD)  # fmt: skip
    if runs is Runs.LINUX and options.dom0:
        return BootEntry(f"linux-{target.name}", f"Linux without Xen for {target.name} (dom0 {' '.join(options.dom0)})",
                         None, "", KERNEL, _join(LIVE_ARGS, BARE_CONSOLE, dom0_cmdline), INITRD)  # fmt: skip
    return None


def render_isolinux(profile: Profile, targets: Sequence[Target] | None = None) -> str:
    return render("isolinux.cfg.j2", title=profile.name, timeout=MENU_TIMEOUT, entries=boot_model(profile, targets))


def render_grub(profile: Profile, targets: Sequence[Target] | None = None) -> str:
    return render("grub.cfg.j2", title=profile.name, timeout=MENU_TIMEOUT, entries=boot_model(profile, targets),
                  ia32=Firmware.UEFI_IA32 in profile.media.boot)  # fmt: skip


def marker_path(build_id: str) -> str:
    """A file only this build's medium has: GRUB's early config searches for it."""
    return f"/xenlive/{build_id}.id"


def install_bootloaders(ctx: BuildContext) -> None:
    profile = ctx.profile
    marker = ctx.staging / marker_path(ctx.build_id).lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(ctx.build_id + "\n")
    targets = profile_targets(profile)
    if Firmware.BIOS in profile.media.boot:
        install_isolinux(ctx, targets)
    if any(f.is_uefi for f in profile.media.boot):
        install_grub_efi(ctx, targets)


def install_isolinux(ctx: BuildContext, targets: Sequence[Target] | None = None) -> None:
    target = ctx.staging / medium.ISOLINUX_DIR
    target.mkdir(parents=True, exist_ok=True)
    isolinux = bytearray(HOST_ISOLINUX_BIN.read_bytes())
    isolinux[BOOT_INFO_TABLE] = bytes(BOOT_INFO_TABLE.stop - BOOT_INFO_TABLE.start)
    (target / "isolinux.bin").write_bytes(isolinux)
    for module in ISOLINUX_MODULES:
        shutil.copyfile(SYSLINUX_MODULES / module, target / module)
    (target / "isolinux.cfg").write_text(render_isolinux(ctx.profile, targets))


def install_grub_efi(ctx: BuildContext, targets: Sequence[Target] | None = None) -> None:
    """GRUB for every UEFI platform in media.boot, sharing one grub.cfg, in EFI/BOOT/ and in the FAT image."""
    grub_dir = ctx.staging / "boot/grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(render_grub(ctx.profile, targets))
    early = ctx.workdir / "grub-early.cfg"
    early.write_text(render("grub-early.cfg.j2", marker=marker_path(ctx.build_id)))
    efi_dir = ctx.staging / medium.EFI_DIR
    efi_dir.mkdir(parents=True, exist_ok=True)
    binaries = []
    for firmware, loader in EFI_LOADERS.items():
        if firmware in ctx.profile.media.boot:
            binary = efi_dir / loader.file
            run(["grub-mkimage", "-O", loader.platform, "-o", binary, "-p", "/boot/grub", "-c", early,
                 *loader.modules])  # fmt: skip
            binaries.append(binary)
    make_efi_image(binaries, ctx.staging / medium.EFI_IMAGE, ctx.epoch)


def make_efi_image(efi_binaries: Sequence[Path], image: Path, epoch: int) -> None:
    """A FAT image holding /EFI/BOOT/BOOT*.EFI, sized to the binaries plus room for FAT metadata.

    Reproducible: a fixed volume id, --invariant, and every timestamp at `epoch` (mtools honours
    SOURCE_DATE_EPOCH; the binaries' own mtimes are copied with -m).
    """
    size_kib = math.ceil((sum(b.stat().st_size for b in efi_binaries) + 512 * 1024) / (1024 * 1024)) * 1024
    if image.exists():
        image.unlink()
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch)}
    run(["mkfs.vfat", "-C", "--invariant", "-n", "XENLIVE_EFI", "-i", "58454e4c", image, str(size_kib)])
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], env=env)
    for binary in efi_binaries:
        os.utime(binary, (epoch, epoch))
        run(["mcopy", "-m", "-i", image, binary, f"::/EFI/BOOT/{binary.name}"], env=env)
    os.chmod(image, 0o644)
