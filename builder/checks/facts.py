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
from builder.profile import Profile

log = logging.getLogger(__name__)

BUSYBOX_RAMDISK_BYTES = 2 << 20  # dom0's static busybox plus an /init, as the guests stage packs it
MEDIUM_OVERHEAD_BYTES = 8 << 20  # boot loaders, EFI image, top layer, manifest


def gather(profile: Profile, tree: Path | None = None, base_squashfs: Path | None = None) -> BuiltFacts:
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
        if guest.kernel == "dom0":
            if facts.dom0_kernel is not None:
                facts.guest_kernels[guest.name] = facts.dom0_kernel
        else:
            try:
                facts.guest_kernels[guest.name] = kernel_facts(profile.base_dir / guest.kernel)
            except IntrospectError as e:
                facts.problems[guest.name] = str(e)
        if guest.initrd == "busybox":
            busybox = tree / "bin/busybox" if tree is not None else None
            facts.ramdisk_bytes[guest.name] = (
                busybox.stat().st_size if busybox is not None and busybox.is_file() else BUSYBOX_RAMDISK_BYTES
            )
        else:
            path = profile.base_dir / guest.initrd
            facts.ramdisk_bytes[guest.name] = path.stat().st_size if path.is_file() else 0
    if tree is not None and base_squashfs is not None and base_squashfs.is_file():
        facts.medium_bytes = _medium_estimate(profile, tree, base_squashfs, facts)
    return facts


def _medium_estimate(profile: Profile, tree: Path, base_squashfs: Path, facts: BuiltFacts) -> int:
    """The ISO's size before it is mastered: base layer, boot files, guests, a margin."""
    total = base_squashfs.stat().st_size + MEDIUM_OVERHEAD_BYTES
    for pattern in ("xen-*.gz", "vmlinuz-*", "initrd.img-*"):
        found = sorted((tree / "boot").glob(pattern))
        total += found[-1].stat().st_size if found else 0
    for guest in profile.guests:
        kernel = facts.guest_kernels.get(guest.name)
        total += kernel.path.stat().st_size if kernel is not None else 0
        total += facts.ramdisk_bytes.get(guest.name, 0)
    return total


def cached_tree(profile: Profile, cache_dir: Path) -> tuple[Path, Path] | None:
    """The dom0 tree and base squashfs a previous build of this profile left in the cache, if any.

    `xenlive check` uses it, so checks that need built files can answer without a new build.
    """
    from builder.stages.rootfs import rootfs_key

    probe = BuildContext(profile=profile, output=Path("unused.iso"), workdir=cache_dir, cache_dir=cache_dir)
    entry = cache_dir / "rootfs" / rootfs_key(probe)
    sealed = any((entry / name).exists() for name in (getattr(cache, "SEAL", ".seal"), ".complete"))
    if not sealed or not (entry / "tree").is_dir():
        return None
    return entry / "tree", entry / "base.squashfs"
