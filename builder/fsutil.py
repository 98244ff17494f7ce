"""File-system helpers shared by the stages and the cache: hashing, sizes, and safe removal.

remove_tree() exists because a killed mmdebstrap can leave /proc (or worse, a bind mount of a
host directory) mounted inside a tree; a plain rmtree would then delete through the mount.
"""

from __future__ import annotations

import hashlib
import logging
import os
import stat
from dataclasses import dataclass
from pathlib import Path

from builder import mounts
from builder.run import run

log = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_SHOWN = 5  # kept paths named in the warning; the rest are counted


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


def mounts_below(root: Path, mountinfo: Path = mounts.MOUNTINFO) -> list[Path]:
    """Mount points at or under `root`, deepest first; OSError if the mount table cannot be read."""
    root = Path(os.path.realpath(root))
    points = {Path(m.mountpoint) for m in mounts.read(mountinfo)}
    found = [p for p in points if p == root or root in p.parents]
    return sorted(found, key=lambda p: (len(p.parts), str(p)), reverse=True)


def unmount_below(root: Path, mountinfo: Path = mounts.MOUNTINFO) -> None:
    """Unmount whatever is mounted under `root` (lazily: a busy mount goes once it is free)."""
    try:
        points = mounts_below(root, mountinfo)
    except OSError as e:
        log.warning("cannot read the mount table %s (%s); not unmounting anything below %s", mountinfo, e, root)
        return
    for point in points:
        log.warning("    %s is still mounted; unmounting it", point)
        run(["umount", "--lazy", "--", point], check=False)


def remove_tree(path: Path, *, mountinfo: Path = mounts.MOUNTINFO) -> None:
    """Delete `path` and everything below it, except whatever lies on another mount.

    Mounts below are unmounted first (lazily). Whatever is still mounted afterwards, because
    umount failed or the mount table did not show it, is kept: the walk never enters a
    directory that the mount table names as a mount point, nor one whose st_dev differs from
    the tree's root (which also catches a mount made after the table was read, or one the table
    of this namespace does not list). A bind mount of the same file system has the same st_dev,
    which is why both tests are needed. What is kept is logged, never deleted.
    """
    if not os.path.lexists(path):
        return
    if path.is_symlink() or not path.is_dir():
        path.unlink()
        return
    unmount_below(path, mountinfo)
    root = Path(os.path.realpath(path))
    try:
        mounted = set(mounts_below(root, mountinfo))
    except OSError as e:
        log.warning("cannot read the mount table %s (%s); deleting %s by st_dev alone", mountinfo, e, root)
        mounted = set()
    if root in mounted:
        log.warning("%s is itself a mount point; leaving it in place", root)
        return
    kept = _remove_contents(root, mounted)
    if kept:
        shown = ", ".join(str(p) for p in kept[:_SHOWN])
        if len(kept) > _SHOWN:
            shown += f" and {len(kept) - _SHOWN} more"
        log.warning("%s: left in place what is still mounted or could not be deleted: %s", root, shown)
        return
    try:
        os.rmdir(root)
    except FileNotFoundError:
        pass


@dataclass
class _Dir:
    fd: int
    path: Path
    names: list[str]
    kept: bool = False


def _remove_contents(root: Path, mounted: set[Path]) -> list[Path]:
    """Delete what is below `root` without crossing a mount; return what had to be kept.

    Directories are walked by file descriptor (os.open with O_NOFOLLOW relative to the parent's
    descriptor), so a symlink swapped in during the walk is never followed, and without
    recursion, so a hostile tree thousands of levels deep cannot exhaust Python's stack.
    """
    kept: list[Path] = []
    try:
        fd = os.open(root, _DIR_FLAGS)
    except OSError as e:
        log.debug("cannot open %s: %s", root, e.strerror)
        return [root]
    device = os.fstat(fd).st_dev
    try:
        stack = [_Dir(fd, root, os.listdir(fd))]
    except OSError as e:
        os.close(fd)
        log.debug("cannot list %s: %s", root, e.strerror)
        return [root]
    try:
        while stack:
            top = stack[-1]
            if not top.names:
                stack.pop()
                os.close(top.fd)
                if stack and not _remove_dir(stack[-1], top, kept):
                    stack[-1].kept = True
                continue
            name = top.names.pop()
            path = top.path / name
            try:
                st = os.stat(name, dir_fd=top.fd, follow_symlinks=False)
            except FileNotFoundError:
                continue
            except OSError as e:
                _keep(top, path, kept, e.strerror)
                continue
            if st.st_dev != device or path in mounted:
                _keep(top, path, kept, "a mount point")
            elif stat.S_ISDIR(st.st_mode):
                child = _open_child(top, name, st)
                if child is None:
                    _keep(top, path, kept, "changed while it was being deleted")
                else:
                    stack.append(child)
            else:
                try:
                    os.unlink(name, dir_fd=top.fd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    _keep(top, path, kept, e.strerror)
    finally:
        for frame in stack:
            os.close(frame.fd)
    return kept


def _open_child(parent: _Dir, name: str, seen: os.stat_result) -> _Dir | None:
    """The directory `name` that was just stat'ed, or None if something else is there now."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent.fd)
    except OSError:
        return None
    now = os.fstat(fd)
    if (now.st_dev, now.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)  # mounted over, or replaced, between the stat and the open
        return None
    try:
        return _Dir(fd, parent.path / name, os.listdir(fd))
    except OSError:
        os.close(fd)
        return None


def _remove_dir(parent: _Dir, child: _Dir, kept: list[Path]) -> bool:
    """rmdir an emptied directory; False if it had to stay (something in it was kept)."""
    if child.kept:
        return False
    try:
        os.rmdir(child.path.name, dir_fd=parent.fd)
    except FileNotFoundError:
        pass
    except OSError as e:
        log.debug("cannot remove %s: %s", child.path, e.strerror)
        kept.append(child.path)
        return False
    return True


def _keep(frame: _Dir, path: Path, kept: list[Path], why: str | None) -> None:
    log.debug("keeping %s: %s", path, why)
    kept.append(path)
    frame.kept = True
