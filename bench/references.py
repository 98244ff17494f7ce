"""The reference builds bench.py's `cold` benchmark times against xenlive's cold build.

Both make an ISO of the same dom0 as the default profile, from the same suite and mirror, from
nothing (every package downloaded):

- hand: what a user would type with xenlive's own tools at their default settings: mmdebstrap of
  xenlive's dom0 packages, mksquashfs (gzip), GRUB and ISOLINUX set up by hand, xorriso with an
  isohybrid MBR and GPT for BIOS and UEFI, from a CD and a stick. Nothing is cached or tuned.
- live-build: Debian's live-build (`apt-get install live-build`), configured to match: the same
  suite and mirror, main only, no security or updates suites, no recommends, Xen's packages, an
  iso-hybrid image with ISOLINUX and GRUB EFI, and its defaults for the rest.

Each runs in a directory of its own and returns the ISO it made.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

LIVE_BUILD_OPTIONS = [  # lb config: a live ISO comparable to xenlive's default one
    "--archive-areas", "main", "--security", "false", "--updates", "false",
    "--binary-images", "iso-hybrid", "--bootloaders", "syslinux,grub-efi",
    "--debian-installer", "none", "--apt-recommends", "false", "--memtest", "none",
    "--firmware-binary", "false", "--firmware-chroot", "false", "--linux-flavours", "amd64",
    "--apt-indices", "false", "--zsync", "false",
]  # fmt: skip
KERNEL_PACKAGE = "linux-image-amd64"  # live-build installs the kernel itself (--linux-flavours)

ISOLINUX_FILES = [
    "/usr/lib/ISOLINUX/isolinux.bin",
    "/usr/lib/syslinux/modules/bios/ldlinux.c32",
    "/usr/lib/syslinux/modules/bios/mboot.c32",
    "/usr/lib/syslinux/modules/bios/libcom32.c32",
]
GRUB_MODULES = "part_gpt part_msdos iso9660 fat search multiboot2 linux normal configfile"
ISOLINUX_CFG = """default xen
label xen
  kernel /isolinux/mboot.c32
  append /live/xen.gz --- /live/vmlinuz boot=live --- /live/initrd.img
"""
GRUB_CFG = """search --no-floppy --set=root --file /live/filesystem.squashfs
menuentry xen {
  multiboot2 /live/xen.gz
  module2 /live/vmlinuz boot=live
  module2 /live/initrd.img
}
"""


def run(cmd: Sequence[str | Path], cwd: Path | None = None) -> None:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[0]} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def hand_pipeline(work: Path, suite: str, mirror: str, packages: Sequence[str]) -> Path:
    tree, iso_root = work / "tree", work / "iso"
    work.mkdir(parents=True)
    run(["mmdebstrap", "--variant=minbase", "--include=" + ",".join(packages), "--", suite, tree, mirror])
    live = iso_root / "live"
    live.mkdir(parents=True)
    boot = tree / "boot"
    for pattern, name in (("vmlinuz-*", "vmlinuz"), ("initrd.img-*", "initrd.img"), ("xen-*.gz", "xen.gz")):
        shutil.copy(sorted(boot.glob(pattern))[-1], live / name)
    run(["mksquashfs", tree, live / "filesystem.squashfs", "-noappend", "-quiet"])
    isolinux = iso_root / "isolinux"
    isolinux.mkdir()
    for file in ISOLINUX_FILES:
        shutil.copy(file, isolinux)
    (isolinux / "isolinux.cfg").write_text(ISOLINUX_CFG)
    grub_cfg = work / "grub.cfg"
    grub_cfg.write_text(GRUB_CFG)
    efi_binary = work / "BOOTX64.EFI"
    run(["grub-mkstandalone", "-O", "x86_64-efi", "-o", efi_binary, f"--install-modules={GRUB_MODULES}",
         f"boot/grub/grub.cfg={grub_cfg}"])  # fmt: skip
    efi_img = iso_root / "efi.img"
    run(["mkfs.vfat", "-C", efi_img, "8192"])
    run(["mmd", "-i", efi_img, "::/EFI", "::/EFI/BOOT"])
    run(["mcopy", "-i", efi_img, efi_binary, "::/EFI/BOOT/BOOTX64.EFI"])
    iso = work / "hand.iso"
    run(["xorriso", "-as", "mkisofs", "-o", iso, "-R", "-J", "-V", "HAND",
         "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
         "-boot-info-table", "-eltorito-alt-boot", "-e", "efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
         iso_root])  # fmt: skip
    return iso


def live_build(work: Path, suite: str, mirror: str, packages: Sequence[str]) -> Path:
    if shutil.which("lb") is None:
        raise SystemExit("live-build is not installed: apt-get install live-build")
    work.mkdir(parents=True, exist_ok=True)
    mirrors = [f"--mirror-{where}={mirror}" for where in ("bootstrap", "chroot", "binary")]
    run(["lb", "config", "--distribution", suite, *mirrors, *LIVE_BUILD_OPTIONS], cwd=work)
    extra = [p for p in packages if p != KERNEL_PACKAGE]
    (work / "config/package-lists/xenlive.list.chroot").write_text("\n".join(extra) + "\n")
    run(["lb", "build"], cwd=work)
    (iso,) = work.glob("*.hybrid.iso")
    return iso
