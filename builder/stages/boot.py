"""The boot model (menu entries, Xen and dom0 command lines) and the boot loaders it is rendered to.

BIOS boots ISOLINUX, whose mboot.c32 loads Xen as a Multiboot kernel; UEFI boots GRUB from a FAT
image, which loads Xen with multiboot2. Both menus come from the same BootModel, so the command
lines cannot drift apart.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder import medium
from builder.context import BuildContext
from builder.profile.model import Firmware, Profile
from builder.run import run
from builder.templating import render

REQUIRED_TOOLS = {
    Firmware.BIOS: ["/usr/lib/ISOLINUX/isolinux.bin", "/usr/lib/syslinux/modules/bios/mboot.c32"],
    Firmware.UEFI: ["grub-mkimage", "/usr/lib/grub/x86_64-efi/multiboot2.mod", "mkfs.vfat", "mcopy"],
}
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
LIVE_ARGS = "boot=live"


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


def boot_model(profile: Profile) -> list[BootEntry]:
    """The Xenoppix-style menu: Xen with guests, Xen safe mode, and Linux without Xen."""
    xen_args = _join(XEN_CONSOLE, profile.xen.cmdline)
    dom0_args = _join(LIVE_ARGS, DOM0_CONSOLE, profile.dom0.cmdline)
    xen, kernel, initrd = (medium.at_boot(p) for p in (medium.XEN, medium.KERNEL, medium.INITRD))
    return [
        BootEntry("xen", "Xen with dom0 and guests", xen, xen_args,
                  kernel, dom0_args, initrd),
        BootEntry("safe", "Xen safe mode (no guests, 1 dom0 CPU, no IOMMU)", xen,
                  _join(xen_args, "dom0_max_vcpus=1 iommu=0"), kernel,
                  _join(dom0_args, "xenlive.safe nomodeset"), initrd),
        BootEntry("linux", "Linux without Xen", None, "", kernel,
                  _join(LIVE_ARGS, BARE_CONSOLE, profile.dom0.cmdline), initrd),
    ]  # fmt: skip


def render_isolinux(profile: Profile) -> str:
    return render("isolinux.cfg.j2", title=profile.name, timeout=MENU_TIMEOUT, entries=boot_model(profile))


def render_grub(profile: Profile) -> str:
    return render("grub.cfg.j2", title=profile.name, timeout=MENU_TIMEOUT, entries=boot_model(profile))


def marker_path(build_id: str) -> str:
    """A file only this build's medium has: GRUB's early config searches for it."""
    return f"/xenlive/{build_id}.id"


def install_bootloaders(ctx: BuildContext) -> None:
    profile = ctx.profile
    marker = ctx.staging / marker_path(ctx.build_id).lstrip("/")
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(ctx.build_id + "\n")
    if Firmware.BIOS in profile.media.boot:
        install_isolinux(ctx)
    if Firmware.UEFI in profile.media.boot:
        install_grub_efi(ctx)


def install_isolinux(ctx: BuildContext) -> None:
    target = ctx.staging / medium.ISOLINUX_DIR
    target.mkdir(parents=True, exist_ok=True)
    isolinux = bytearray(HOST_ISOLINUX_BIN.read_bytes())
    isolinux[BOOT_INFO_TABLE] = bytes(BOOT_INFO_TABLE.stop - BOOT_INFO_TABLE.start)
    (target / "isolinux.bin").write_bytes(isolinux)
    for module in ISOLINUX_MODULES:
        shutil.copyfile(SYSLINUX_MODULES / module, target / module)
    (target / "isolinux.cfg").write_text(render_isolinux(ctx.profile))


def install_grub_efi(ctx: BuildContext) -> None:
    grub_dir = ctx.staging / "boot/grub"
    grub_dir.mkdir(parents=True, exist_ok=True)
    (grub_dir / "grub.cfg").write_text(render_grub(ctx.profile))
    early = ctx.workdir / "grub-early.cfg"
    early.write_text(render("grub-early.cfg.j2", marker=marker_path(ctx.build_id)))
    efi_dir = ctx.staging / medium.EFI_DIR
    efi_dir.mkdir(parents=True, exist_ok=True)
    efi_binary = efi_dir / "BOOTX64.EFI"
    run(["grub-mkimage", "-O", "x86_64-efi", "-o", efi_binary, "-p", "/boot/grub", "-c", early, *GRUB_MODULES])
    make_efi_image(efi_binary, ctx.staging / medium.EFI_IMAGE, ctx.epoch)


def make_efi_image(efi_binary: Path, image: Path, epoch: int) -> None:
    """A FAT image holding /EFI/BOOT/BOOTX64.EFI, sized to the binary plus room for FAT metadata.

    Reproducible: a fixed volume id, --invariant, and every timestamp at `epoch` (mtools honours
    SOURCE_DATE_EPOCH; the binary's own mtime is copied with -m).
    """
    size_kib = math.ceil((efi_binary.stat().st_size + 512 * 1024) / (1024 * 1024)) * 1024
    if image.exists():
        image.unlink()
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(epoch)}
    os.utime(efi_binary, (epoch, epoch))
    run(["mkfs.vfat", "-C", "--invariant", "-n", "XENLIVE_EFI", "-i", "58454e4c", image, str(size_kib)])
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], env=env)
    run(["mcopy", "-m", "-i", image, efi_binary, "::/EFI/BOOT/BOOTX64.EFI"], env=env)
    os.chmod(image, 0o644)
