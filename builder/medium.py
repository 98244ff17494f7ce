"""The medium's layout: where each file lives on the ISO, stated once.

The stages write these paths, the boot model and the guests' xl configs refer to them, and verify and
the size report read them back. Paths are relative to the medium's root (no leading slash);
`at_boot()` gives the absolute form the boot loaders use.
"""

from __future__ import annotations

XEN = "boot/xen.gz"
KERNEL = "live/vmlinuz"  # dom0's kernel
INITRD = "live/initrd.img"  # dom0's initramfs (live-boot)
BASE_LAYER = "live/10-base.squashfs"  # live-boot stacks every live/*.squashfs, later names on top
PACKAGES_LAYER = "live/15-packages.squashfs"  # the profile's extra dom0 packages; only when it has some
TOP_LAYER = "live/20-custom.squashfs"
GUESTS = "guests"  # guests/NAME/: each guest's kernel, initrd and disk
MANIFEST = "xenlive/manifest.json"
ISOLINUX_DIR = "isolinux"
ISOLINUX_BIN = "isolinux/isolinux.bin"
BOOT_CATALOG = "isolinux/boot.cat"
EFI_DIR = "EFI/BOOT"
EFI_IMAGE = "boot/grub/efi.img"  # the El Torito UEFI image, also the ESP of the hybrid GPT
LIVE_MOUNT = "/run/live/medium"  # where live-boot mounts the medium in dom0


def at_boot(path: str) -> str:
    """The path as a boot loader names it on the medium: /live/vmlinuz."""
    return f"/{path}"


def in_dom0(path: str) -> str:
    """The path as dom0 sees it once live-boot has mounted the medium."""
    return f"{LIVE_MOUNT}/{path}"
