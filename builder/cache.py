"""Content-addressed cache entries for stage outputs, under the XDG cache directory.

An entry is a directory named by the hash of its inputs. It is built under a temporary name while
holding a lock on its key, and renamed into place only when complete, with a seal listing the
size and sha256 of the files it promises. So an interrupted build never leaves an entry that a
later build trusts, two builds of the same key do the work once, and an entry damaged later (a
truncated or edited file) is detected and rebuilt.

Who is alive is told by flock(2), never by a PID: a lock is held exactly as long as its holder
lives (SIGKILL and power loss included), and it means the same in every PID namespace that
shares the cache, where a PID names different processes or none. Two locks per key:

- `.KEY.lock`, the make lock: held exclusively while the entry is checked, made or replaced,
  and by `cache clear`/`prune` while they remove it. Only its holder ever creates
  `.KEY.tmp-*`, so a temporary found while holding it is a leftover of a dead build, and is
  swept then.
- `.KEY.use`, the use lock: every build holds it shared for as long as it uses the entry (the
  whole build, see `use`). Removing or replacing the entry needs it exclusively, so `cache
  clear`/`prune` skip an entry in use instead of deleting files under a running build.

The locks are always taken in that order (make, then use), so no two holders wait on each other.
Each build's work directory is locked the same way: its build holds a lock on the directory for
its whole life, and a directory whose lock can be taken is stale.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.fsutil import remove_tree, sha256_file, tree_size

log = logging.getLogger(__name__)

SEAL = ".complete"
WORK = "work"  # build work directories, one per running build, under the cache root
WORKDIR_PREFIX = "build-"
TEMPORARY = ".tmp-"  # .KEY.tmp-XXXX: an entry being made


def input_hash(inputs: Any) -> str:
    """A stable hash of JSON-able inputs."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def _lock_file(cache_dir: Path, kind: str, key: str, role: str) -> int:
    path = cache_dir / kind / f".{key}.{role}"
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)


def _try(fd: int, operation: int) -> bool:
    """flock without waiting: True if taken, False if someone else holds a conflicting lock."""
    try:
        fcntl.flock(fd, operation | fcntl.LOCK_NB)
    except OSError as e:
        if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
            return False
        raise
    return True


def _wait(fd: int, operation: int, why: str) -> None:
    if not _try(fd, operation):
        log.info("    %s", why)
        fcntl.flock(fd, operation)


@contextlib.contextmanager
def _held(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)  # closing the last descriptor releases the lock


def _sealed_ok(entry: Path) -> bool:
    """Whether the entry's sealed files still have the size and sha256 they had when it was made."""
    try:
        seal = json.loads((entry / SEAL).read_text())
        for rel, (size, digest) in seal["files"].items():
            path = entry / rel
            if path.stat().st_size != size or sha256_file(path) != digest:
                log.warning("cache entry %s: %s changed since it was made; rebuilding it", entry, rel)
                return False
    except (OSError, ValueError, KeyError, TypeError):
        log.warning("cache entry %s is incomplete or damaged; rebuilding it", entry)
        return False
    return True


def _sweep_temporaries(kind_dir: Path, key: str) -> None:
    """Remove `.KEY.tmp-*` left by builds that died; call only while holding KEY's make lock."""
    for leftover in kind_dir.glob(f".{key}{TEMPORARY}*"):
        log.info("    removing %s, left by an interrupted build", leftover)
        remove_tree(leftover)


@contextlib.contextmanager
def use(cache_dir: Path, kind: str, key: str, make: Callable[[Path], list[str]]) -> Iterator[tuple[Path, bool]]:
    """The entry for `key`, made by `make(tmpdir)` when missing or damaged: yields (entry, was_cached).

    The entry is kept from `cache clear`/`prune` (and from being replaced) until the with-block
    ends, so a build enters this into the exit stack it closes when it ends (BuildContext.holds).
    `make` fills the directory and returns the relative paths whose contents the seal protects.
    """
    entry = cache_dir / kind / key
    with _held(_lock_file(cache_dir, kind, key, "use")) as use_lock:
        with _held(_lock_file(cache_dir, kind, key, "lock")) as make_lock:
            _wait(make_lock, fcntl.LOCK_EX, f"waiting for another build of the same {kind} ({key})")
            _sweep_temporaries(entry.parent, key)
            cached = (entry / SEAL).exists() and _sealed_ok(entry)
            if cached:
                os.utime(entry / SEAL)  # last use, for `xenlive cache prune`
            else:
                _make(entry, make, use_lock)
            # Nobody holds the use lock exclusively while we hold the make lock, so this never waits,
            # and turning our own exclusive lock into a shared one cannot let a remover in between.
            fcntl.flock(use_lock, fcntl.LOCK_SH)
        yield entry, cached


@contextlib.contextmanager
def shared_dir(cache_dir: Path, kind: str, key: str) -> Iterator[Path]:
    """An entry that builds write into rather than make once (apt's package lists and downloads,
    stages/pkglayer.py): made empty and sealed with no files the first time, kept from `cache
    clear`/`prune` by its use lock like any entry, and written by one build at a time, under its write
    lock `.KEY.write` (taken after the make and use locks, so the order above still holds)."""
    with use(cache_dir, kind, key, lambda tmp: []) as (entry, _cached):
        with _held(_lock_file(cache_dir, kind, key, "write")) as write_lock:
            _wait(write_lock, fcntl.LOCK_EX, f"waiting for another build writing {kind} ({key})")
            yield entry


def _make(entry: Path, make: Callable[[Path], list[str]], use_lock: int) -> None:
    """Make the entry under a temporary name, then put it in place once no build uses the old one."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{entry.name}{TEMPORARY}", dir=entry.parent))
    try:
        sealed = make(tmp)
        seal = {"made": int(time.time()), "files": {rel: [(tmp / rel).stat().st_size, sha256_file(tmp / rel)]
                                                    for rel in sealed}}  # fmt: skip
        (tmp / SEAL).write_text(json.dumps(seal, indent=1))
        _wait(use_lock, fcntl.LOCK_EX, f"waiting for the builds still using the old {entry} to finish")
        remove_tree(entry)
        tmp.rename(entry)
    except BaseException:
        remove_tree(tmp)
        raise


@contextlib.contextmanager
def workspace(cache_dir: Path) -> Iterator[Path]:
    """A new work directory for one build, locked while the with-block runs and removed after it.

    Work directories of builds that died (their lock is free) are swept first.
    """
    work = cache_dir / WORK
    work.mkdir(parents=True, exist_ok=True)
    for stale in _workdirs(cache_dir):
        _remove_workdir(stale)
    while True:
        path = Path(tempfile.mkdtemp(prefix=WORKDIR_PREFIX, dir=work))
        try:
            fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            continue  # another build's sweep took it for stale before it was locked: take another
        fcntl.flock(fd, fcntl.LOCK_EX)
        if _is(fd, path):
            break
        os.close(fd)
    with _held(fd):
        try:
            yield path
        finally:
            remove_tree(path)


def _is(fd: int, path: Path) -> bool:
    """Whether `path` still names the directory open as `fd`."""
    try:
        now = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    opened = os.fstat(fd)
    return (now.st_dev, now.st_ino) == (opened.st_dev, opened.st_ino)


def _workdirs(cache_dir: Path) -> list[Path]:
    work = cache_dir / WORK
    if not work.is_dir():
        return []
    return sorted(p for p in work.iterdir() if p.name.startswith(WORKDIR_PREFIX) and not p.is_symlink() and p.is_dir())


def _remove_workdir(path: Path) -> bool:
    """Remove a work directory unless its build still holds its lock; True if removed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except FileNotFoundError:
        return True
    with _held(fd):
        if not _try(fd, fcntl.LOCK_EX):
            return False
        if _is(fd, path):
            log.info("removing %s, left by a build that is no longer running", path)
            remove_tree(path)
    return True


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    size: int
    last_used: float
    complete: bool


def entries(cache_dir: Path) -> list[Entry]:
    """Every entry, leftover temporary directory and build work directory in the cache."""
    found = []
    for kind_dir in sorted(p for p in cache_dir.glob("*") if p.is_dir() and p.name != WORK):
        for path in sorted(kind_dir.iterdir()):
            if not path.is_dir():
                continue
            seal = path / SEAL
            complete = seal.exists() and not path.name.startswith(".")
            last_used = (seal if seal.exists() else path).stat().st_mtime
            found.append(Entry(kind_dir.name, path.name, path, tree_size(path), last_used, complete))
    for path in _workdirs(cache_dir):
        found.append(Entry(WORK, path.name, path, tree_size(path), path.stat().st_mtime, False))
    return found


def remove(cache_dir: Path, entry: Entry) -> bool:
    """Remove an entry unless a build is making or using it; True if removed.

    A temporary `.KEY.tmp-*` is removable once KEY's make lock is free, for only the holder of
    that lock makes temporaries. A work directory is removable once its build's lock is free.
    """
    if entry.kind == WORK:
        return _remove_workdir(entry.path)
    key = entry.key.removeprefix(".").split(TEMPORARY)[0]
    with _held(_lock_file(cache_dir, entry.kind, key, "lock")) as make_lock:
        if not _try(make_lock, fcntl.LOCK_EX):
            return False
        if entry.key.startswith("."):
            remove_tree(entry.path)
            return True
        with _held(_lock_file(cache_dir, entry.kind, key, "use")) as use_lock:
            if not _try(use_lock, fcntl.LOCK_EX):
                return False
            remove_tree(entry.path)
    return True
