"""File-system helpers shared by the stages and the cache: hashing, sizes, and safe removal.

remove_tree() exists because a killed mmdebstrap can leave /proc (or worse, a bind mount of a
host directory) mounted inside a tree; a plain rmtree would then delete through the mount.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path

from builder.run import run

log = logging.getLogger(__name__)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def tree_size(root: Path) -> int:
    """Bytes in the regular files under `root` (symlinks not followed, not counted)."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            full = os.path.join(dirpath, name)
            try:
                if not os.path.islink(full):
                    total += os.path.getsize(full)
            except OSError:
                continue
    return total


def mounts_below(root: Path) -> list[Path]:
    """Mount points at or under `root`, deepest first (from /proc/self/mountinfo)."""
    root = root.resolve()
    found = []
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        point = Path(line.split()[4].encode().decode("unicode_escape"))
        if point == root or root in point.parents:
            found.append(point)
    return sorted(found, key=lambda p: len(p.parts), reverse=True)


def unmount_below(root: Path) -> None:
    """Unmount whatever is mounted under `root` (lazily: a busy mount goes once it is free)."""
    for point in mounts_below(root):
        log.warning("    %s is still mounted; unmounting it", point)
        run(["umount", "--lazy", point], check=False)


def remove_tree(path: Path) -> None:
    """rmtree that never deletes through a mount point left inside the tree."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_below(path)
    if mounts_below(path):
        log.warning("%s still has mounts inside; leaving it in place", path)
        return
    shutil.rmtree(path, ignore_errors=True)
