"""Xen, the dom0 kernel and its initrd: taken from the dom0 tree and put on the medium."""

from __future__ import annotations

import shutil
from pathlib import Path

from builder import medium
from builder.context import BuildContext
from builder.introspect import dpkg_status
from builder.stages.rootfs import boot_file


def install_xen(ctx: BuildContext) -> None:
    tree = ctx.require_rootfs()
    for kind, dest in (("xen", medium.XEN), ("kernel", medium.KERNEL), ("initrd", medium.INITRD)):
        target = ctx.staging / dest
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(boot_file(tree, kind), target)


def package_versions(tree: Path) -> dict[str, str]:
    """Installed packages and versions (introspect.dpkg_status; dom0_platform has Xen's, the kernel's
    and live-boot's found by the files they own)."""
    return dpkg_status(tree)


def xen_version(versions: dict[str, str]) -> str:
    for name, version in versions.items():
        if name.startswith("xen-hypervisor-") and name != "xen-hypervisor-common":
            return version.split("+")[0].split("-")[0]
    return "unknown"


def kernel_version(tree: Path) -> str:
    return boot_file(tree, "kernel").name.removeprefix("vmlinuz-")
