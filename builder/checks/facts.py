"""Gather BuiltFacts from the profile's own files and, once they exist, dom0's tree and the guests'.

Why here and not in the checks: reading a kernel means inflating megabytes; doing it once per
build and handing the result to every check keeps the checks fast and free of I/O.

A guest's kernel and initrd are read from the best place that has them: what the guests stage put
on the medium; else the profile's own files; else what xenlive would make (dom0's kernel, the
initramfs assembled in memory exactly as the guests stage writes it, for a Debian guest from the
modules of its cache entry); else a Debian guest's cache entry from an earlier build. A Debian
guest built for the first time is known only after the guests stage, so the pipeline checks guests
once more then (gate.guests_unknown says when).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from builder import cache
from builder.context import BuildContext
from builder.initrd import InitrdError, InitrdFacts, read_initrd, read_initrd_bytes
from builder.introspect import BuiltFacts, IntrospectError, KernelFacts, ModuleDb, kernel_facts, xen_facts
from builder.profile.model import Builtin, Guest, GuestKind, Profile

log = logging.getLogger(__name__)

BUSYBOX_RAMDISK_BYTES = 2 << 20  # dom0's static busybox plus an /init, before dom0 is built


def gather(profile: Profile, tree: Path | None = None, *, staging: Path | None = None,
           cache_dir: Path | None = None) -> BuiltFacts:  # fmt: skip
    """Facts about the image; with no tree, only what the profile's own files tell."""
    facts = BuiltFacts()
    if tree is not None:
        facts.xen = xen_facts(tree)
        kernels = sorted((tree / "boot").glob("vmlinuz-*"))
        if kernels:
            try:
                facts.dom0_kernel = _kernel(kernels[-1])
            except IntrospectError as e:
                facts.problems["dom0"] = str(e)
            facts.modules = ModuleDb.load(tree, kernels[-1].name.removeprefix("vmlinuz-"))
    for guest in profile.guests:
        kernel_file, initrd_file = guest_files(profile, guest, staging, cache_dir)
        try:
            if kernel_file is not None:
                facts.guest_kernels[guest.name] = _kernel(kernel_file)
            elif guest.kernel == Builtin.DOM0_KERNEL and facts.dom0_kernel is not None:
                facts.guest_kernels[guest.name] = facts.dom0_kernel
            elif guest.kind == GuestKind.DEBIAN:
                facts.problems[guest.name] = f"guest {guest.name}'s kernel is made with its Debian system"
        except IntrospectError as e:
            facts.problems[guest.name] = str(e)
        try:
            initrd = (
                read_initrd(initrd_file) if initrd_file is not None else made_initrd(profile, guest, tree, cache_dir)
            )
        except InitrdError as e:
            facts.problems[f"{guest.name}:initrd"] = str(e)
            initrd = None
        if initrd is not None:
            facts.guest_initrds[guest.name] = initrd
            facts.ramdisk_bytes[guest.name] = initrd.file_bytes
        elif guest.initrd == Builtin.BUSYBOX and guest.kind == GuestKind.BUSYBOX:
            facts.ramdisk_bytes[guest.name] = BUSYBOX_RAMDISK_BYTES
        else:
            facts.ramdisk_bytes[guest.name] = 0
    return facts


def guest_files(profile: Profile, guest: Guest, staging: Path | None,
                cache_dir: Path | None) -> tuple[Path | None, Path | None]:  # fmt: skip
    """The guest's kernel and initrd files, where they already exist (None: not yet, or none)."""
    kernel: Path | None = None
    initrd: Path | None = None
    if staging is not None and (staging / "guests" / guest.name).is_dir():
        here = staging / "guests" / guest.name
        kernel = here / "vmlinuz" if (here / "vmlinuz").is_file() else None
        initrd = here / "initrd.img" if (here / "initrd.img").is_file() else None
        if kernel is not None and guest.kernel == Builtin.DOM0_KERNEL:
            kernel = None  # dom0's own kernel, read from its tree (where its config is)
        return kernel, initrd
    if isinstance(guest.kernel, Path):
        kernel = profile.base_dir / guest.kernel
    if isinstance(guest.initrd, Path):
        initrd = profile.base_dir / guest.initrd
    if guest.kind == GuestKind.DEBIAN and cache_dir is not None:
        from builder.stages.guests import debian_key

        entry = cache_dir / "guest" / debian_key(guest)
        if (entry / cache.SEAL).exists():
            kernel = entry / "vmlinuz"
    return kernel, initrd


def made_initrd(profile: Profile, guest: Guest, tree: Path | None, cache_dir: Path | None) -> InitrdFacts | None:
    """The initramfs the guests stage will write for this guest (busybox, or a Debian guest's from
    its cache entry), read before it is written; None when it cannot be known yet."""
    if tree is None or not (tree / "bin/busybox").is_file():
        return None
    from builder import cpio
    from builder.stages.guests import INITRD_MODULES, busybox_initrd, debian_initrd, debian_key

    if guest.kind == GuestKind.BUSYBOX and guest.initrd == Builtin.BUSYBOX:
        entries = busybox_initrd(tree, guest, profile.base_dir)
    elif guest.kind == GuestKind.DEBIAN and cache_dir is not None:
        entry = cache_dir / "guest" / debian_key(guest)
        if not (entry / cache.SEAL).exists():
            return None
        entries = debian_initrd(tree, guest, entry / INITRD_MODULES)
    else:
        return None
    data = gzip.compress(cpio.archive(entries), compresslevel=9, mtime=0)
    return read_initrd_bytes(data, f"guest {guest.name}'s initramfs")


@functools.lru_cache(maxsize=16)
def _kernel_of(path: Path, identity: tuple[int, int, int, int]) -> KernelFacts:
    return kernel_facts(path)


def _kernel(path: Path) -> KernelFacts:
    """kernel_facts, once per file and build: the same kernel is read by both gates and the guests
    stage, and inflating it takes a second or two."""
    st = path.stat()
    return _kernel_of(path, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))


def cached_tree(profile: Profile, cache_dir: Path) -> Path | None:
    """The dom0 base tree a previous build of this profile's suite and mirror left in the cache, if any."""
    from builder.stages.rootfs import rootfs_key

    probe = BuildContext(profile=profile, output=Path("unused.iso"), workdir=cache_dir, cache_dir=cache_dir)
    entry = cache_dir / "rootfs" / rootfs_key(probe)
    sealed = any((entry / name).exists() for name in (cache.SEAL, ".complete"))
    if not sealed or not (entry / "tree").is_dir():
        return None
    return entry / "tree"


@contextlib.contextmanager
def cached_dom0(profile: Profile, cache_dir: Path) -> Iterator[Path | None]:
    """dom0 as a previous build of this profile left it in the cache: the base tree, or for a profile
    with extra packages the merged view of the base and its cached package layer, mounted while the
    with-block runs (an overlayfs mount: as root only; otherwise None, as when nothing is cached).

    `xenlive check` uses it, so checks that need built files can answer without a new build.
    """
    from builder.overlayfs import merged_view
    from builder.stages.pkglayer import extra_packages, layer_key
    from builder.stages.rootfs import rootfs_key

    base = cached_tree(profile, cache_dir)
    packages = extra_packages(profile)
    if base is None or not packages:
        yield base
        return
    probe = BuildContext(profile=profile, output=Path("unused.iso"), workdir=cache_dir, cache_dir=cache_dir)
    layer = cache_dir / "packages" / layer_key(rootfs_key(probe), packages)
    if not (layer / cache.SEAL).exists() or not (layer / "tree").is_dir():
        yield None
        return
    if os.geteuid() != 0:
        log.info("dom0's package layer is cached, but reading it needs an overlayfs mount: run as root to use it")
        yield None
        return
    with cache.workspace(cache_dir) as work, merged_view([layer / "tree", base], work, "the cached dom0") as tree:
        yield tree
