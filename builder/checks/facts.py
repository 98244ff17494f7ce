"""Gather BuiltFacts from the profile's own files and, once it exists, the dom0 tree.

Why here and not in the checks: reading a kernel means inflating megabytes; doing it once per
build and handing the result to every check keeps the checks fast and free of I/O.
"""

from __future__ import annotations

import logging
from pathlib import Path

from builder import cache
from builder.context import BuildContext
from builder.introspect import BuiltFacts, IntrospectError, ModuleDb, kernel_facts, xen_facts
from builder.profile.model import Profile

log = logging.getLogger(__name__)

BUSYBOX_RAMDISK_BYTES = 2 << 20  # dom0's static busybox plus an /init, as the guests stage packs it


def gather(profile: Profile, tree: Path | None = None) -> BuiltFacts:
    """Facts about the image; with no tree, only what the profile's own files tell."""
    facts = BuiltFacts()
    if tree is not None:
        facts.xen = xen_facts(tree)
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        if kernels:
            try:
                facts.dom0_kernel = kernel_facts(kernels[-1])
            except IntrospectError as e:
                facts.problems["dom0"] = str(e)
            facts.modules = ModuleDb.load(tree, kernels[-1].name.removeprefix("vmlinuz-"))
    for guest in profile.guests:
        if isinstance(guest.kernel, Path):
            try:
                facts.guest_kernels[guest.name] = kernel_facts(profile.base_dir / guest.kernel)
            except IntrospectError as e:
                facts.problems[guest.name] = str(e)
        elif facts.dom0_kernel is not None:
            facts.guest_kernels[guest.name] = facts.dom0_kernel
        if isinstance(guest.initrd, Path):
            path = profile.base_dir / guest.initrd
            facts.ramdisk_bytes[guest.name] = path.stat().st_size if path.is_file() else 0
        else:
            busybox = tree / "bin/busybox" if tree is not None else None
            facts.ramdisk_bytes[guest.name] = (
                busybox.stat().st_size if busybox is not None and busybox.is_file() else BUSYBOX_RAMDISK_BYTES
            )
    return facts


def cached_tree(profile: Profile, cache_dir: Path) -> Path | None:
    """The dom0 tree a previous build of this profile left in the cache, if any.

    `xenlive check` uses it, so checks that need built files can answer without a new build.
    """
    from builder.stages.rootfs import rootfs_key

    probe = BuildContext(profile=profile, output=Path("unused.iso"), workdir=cache_dir, cache_dir=cache_dir)
    entry = cache_dir / "rootfs" / rootfs_key(probe)
    sealed = any((entry / name).exists() for name in (cache.SEAL, ".complete"))
    if not sealed or not (entry / "tree").is_dir():
        return None
    return entry / "tree"
