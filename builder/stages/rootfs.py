"""The dom0 base system: mmdebstrap of Debian with xenlive's own package list, and its base squashfs layer.

Both are cached together, keyed by suite, mirror and xenlive's package list (never the profile's),
so every profile of a suite shares them; the profile's own packages are a layer over this one
(stages/pkglayer.py). Xen, the kernel and the initrd are later taken from dom0's /boot, so the
hypervisor, kernel, modules and tools always come from the same packages.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path

from builder import cache, mmdebstrap
from builder.context import BuildContext
from builder.errors import XenliveError
from builder.fsutil import unmount_below
from builder.log import VERBOSE, Meter
from builder.packages import dom0_packages
from builder.run import run

log = logging.getLogger(__name__)

# zstd: not to make the tree, but to read it (introspect.py): trixie's kernel is zstd-compressed.
REQUIRED_TOOLS = ["mmdebstrap", "mksquashfs", "zstd"]
STAGE_VERSION = 2  # bump when the way the tree is made changes (2: zstd level 6)
# zstd at level 6 rather than mksquashfs's default 15: for trixie's dom0 base (2 cores, 2026-12-04)
# level 15 took 17.2 s for 153 MiB, level 6 2.5 s for 170 MiB, level 3 1.2 s for 175 MiB. Reading
# zstd back costs the same at every level, so dom0 boots as fast; the medium is 17 MiB larger.
SQUASHFS_COMPRESSION = ["-comp", "zstd", "-Xcompression-level", "6"]

# Files that go on the medium itself, not into the squashfs.
MEDIUM_FILES = ["boot/initrd.img-*", "boot/vmlinuz-*", "boot/xen-*.gz", "boot/xen-*.efi", "boot/System.map-*"]
# Never read pseudo file systems: a /proc left mounted in the tree makes mksquashfs block on
# /proc/kmsg. (Not part of the cache key: a clean tree has these directories empty anyway.)
PSEUDO_FS = ["proc/*", "sys/*"]
SQUASHFS_EXCLUDES = MEDIUM_FILES + PSEUDO_FS
DPKG_OPTIONS = [
    "path-exclude=/usr/share/man/*",
    "path-exclude=/usr/share/doc/*",
    "path-include=/usr/share/doc/*/copyright",
]


def rootfs_key(ctx: BuildContext) -> str:
    """The cache key of the dom0 base: suite, mirror, xenlive's package list and the rendered hooks,
    never the profile's packages, so every profile of a suite shares it. mmdebstrap's unshare mode
    (a build without root) leaves /dev empty where root mode makes device nodes (devtmpfs covers
    /dev at boot either way): its trees are keyed apart."""
    dom0 = ctx.profile.dom0
    inputs = {
        "stage": STAGE_VERSION,
        "suite": dom0.suite,
        "mirror": dom0.mirror,
        "packages": sorted(dom0_packages(dom0.suite)),
        "excludes": MEDIUM_FILES,
        "dpkg": DPKG_OPTIONS,
        "hooks": dom0_hooks(),  # rendered: an edited hook template rebuilds the tree
    }
    if mmdebstrap.mode() != "root":
        inputs["mode"] = mmdebstrap.mode()
    return cache.input_hash(inputs)


def mmdebstrap_command(ctx: BuildContext, target: Path) -> list[str]:
    dom0 = ctx.profile.dom0
    packages = dom0_packages(dom0.suite)
    return mmdebstrap.mmdebstrap_command(
        suite=dom0.suite,
        mirror=dom0.mirror,
        target=target,
        packages=packages,
        dpkg_options=DPKG_OPTIONS,
        options=dom0_hooks(),
    )


def dom0_hooks() -> list[str]:
    """The initramfs is made once, from the finished tree (templates/mmdebstrap/initramfs-*.j2)."""
    return [mmdebstrap.hook("initramfs-deferred"), mmdebstrap.hook("initramfs-final")]


def squashfs_command(tree: Path, output: Path, excludes: list[str] | None = None) -> list[str]:
    args: list[str | Path] = ["mksquashfs", tree, output, "-noappend", *SQUASHFS_COMPRESSION, "-quiet"]
    cmd = [os.fspath(p) for p in args]
    if excludes:
        cmd += ["-wildcards", "-e", *excludes]
    return cmd


SQUASHFS_PROGRESS = re.compile(r".*\]\s+(\d+)/(\d+)\s+(\d+)%")  # mksquashfs: [===|   ] 3600/4947  72%


def squashfs_progress(what: str) -> Callable[[str], None]:
    """Follows mksquashfs's progress bar (-quiet leaves only the bar) and reports its percentage."""
    meter = Meter(what)

    def feed(line: str) -> None:
        found = SQUASHFS_PROGRESS.fullmatch(line.strip())
        if found:
            meter(int(found[3]), 100)

    return feed


def build_rootfs(ctx: BuildContext) -> None:
    key = rootfs_key(ctx)

    def make(tmp: Path) -> list[str]:
        log.log(VERBOSE, "    mmdebstrap %s from %s", ctx.profile.dom0.suite, ctx.profile.dom0.mirror)
        try:
            mmdebstrap.run_for_dom0(mmdebstrap_command(ctx, tmp / "tree"), profile=ctx.profile, key="dom0.suite",
                                    epoch=ctx.epoch, label="dom0")  # fmt: skip
        finally:
            unmount_below(tmp / "tree")
        log.log(VERBOSE, "    mksquashfs (%s)", " ".join(SQUASHFS_COMPRESSION))
        run(squashfs_command(tmp / "tree", tmp / "base.squashfs", SQUASHFS_EXCLUDES),
            env={"SOURCE_DATE_EPOCH": str(ctx.epoch)}, output=squashfs_progress("base layer (mksquashfs)"))  # fmt: skip
        sealed = ["base.squashfs", "tree/var/lib/dpkg/status"]
        return sealed + [f"tree/boot/{p.name}" for p in (tmp / "tree/boot").iterdir() if p.is_file()]

    entry, cached = ctx.holds.enter_context(cache.use(ctx.cache_dir, "rootfs", key, make))
    ctx.cache_hits["rootfs"] = cached
    if cached:
        log.log(VERBOSE, "    reusing cached dom0 base %s", key)
    ctx.base_tree = ctx.rootfs = entry / "tree"
    ctx.base_squashfs = entry / "base.squashfs"


BOOT_PATTERNS = {"xen": "xen-*.gz", "kernel": "vmlinuz-*", "initrd": "initrd.img-*"}


def boot_file(tree: Path, kind: str) -> Path:
    """Xen, the dom0 kernel or its initrd from the tree's /boot (the newest if several)."""
    pattern = BOOT_PATTERNS[kind]
    matches = sorted((tree / "boot").glob(pattern))
    if not matches:
        raise XenliveError(f"dom0 tree has no /boot/{pattern}", hint="is the package that provides it installed?")
    return matches[-1]
