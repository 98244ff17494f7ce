"""Guest domains: their kernel and initrd on the medium, and their xl configs in dom0.

Guest files live on the medium under /guests/NAME/ and are read from there by xl in dom0,
so they are not copied into the squashfs layers.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from builder import cpio
from builder.context import BuildContext
from builder.errors import XenliveError
from builder.profile import Guest, GuestType
from builder.stages.rootfs import boot_file
from builder.stages.xen import LIVE_MEDIUM
from builder.templating import render

BUSYBOX = "bin/busybox"


def build_guests(ctx: BuildContext) -> None:
    tree = ctx.require_rootfs()
    guest_dir = ctx.top / "etc/xen/guests"
    auto_dir = ctx.top / "etc/xen/auto"
    guest_dir.mkdir(parents=True, exist_ok=True)
    auto_dir.mkdir(parents=True, exist_ok=True)
    for guest in ctx.profile.guests:
        if guest.type == GuestType.HVM:
            raise XenliveError(f"guest {guest.name!r}: building HVM guests is not supported yet")
        medium_dir = ctx.staging / "guests" / guest.name
        medium_dir.mkdir(parents=True, exist_ok=True)
        kernel = boot_file(tree, "kernel") if guest.kernel == "dom0" else ctx.profile.base_dir / guest.kernel
        shutil.copyfile(kernel, medium_dir / "vmlinuz")
        if guest.initrd == "busybox":
            cpio.write_gzip(busybox_initrd(tree, guest), medium_dir / "initrd.img")
        else:
            shutil.copyfile(ctx.profile.base_dir / guest.initrd, medium_dir / "initrd.img")
        (guest_dir / f"{guest.name}.cfg").write_text(xl_config(ctx, guest))
        if guest.autostart:
            (auto_dir / f"{guest.name}.cfg").symlink_to(f"../guests/{guest.name}.cfg")


def xl_config(ctx: BuildContext, guest: Guest) -> str:
    base = f"{LIVE_MEDIUM}/guests/{guest.name}"
    return render(
        "guest.cfg.j2",
        profile=ctx.profile,
        guest=guest,
        kernel=f"{base}/vmlinuz",
        ramdisk=f"{base}/initrd.img",
    )


def busybox_initrd(tree: Path, guest: Guest) -> list[cpio.Entry]:
    """A minimal initramfs: dom0's static busybox and an /init that prints a ready marker."""
    busybox = tree / BUSYBOX
    if not busybox.is_file():
        raise XenliveError(
            f"dom0 tree has no /{BUSYBOX} for guest {guest.name!r}",
            hint="keep busybox-static in dom0's packages",
        )
    init = render("busybox-init.j2", guest=guest)
    return [
        cpio.directory("bin"),
        cpio.regular("bin/busybox", busybox.read_bytes(), 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("dev"),
        cpio.chardev("dev/console", 5, 1),
        cpio.directory("proc"),
        cpio.directory("sys"),
        cpio.directory("tmp", 0o1777),
        cpio.directory("root", 0o700),
        cpio.regular("init", init.encode(), 0o755),
    ]
