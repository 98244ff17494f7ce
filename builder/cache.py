"""Content-addressed cache entries for stage outputs, under the XDG cache directory.

An entry is a directory named by the hash of its inputs. It is built under a temporary name while
holding a lock on its key, and renamed into place only when complete, with a seal listing the
size and sha256 of the files it promises. So an interrupted build never leaves an entry that a
later build trusts, two builds of the same key do the work once, and an entry damaged later (a
truncated or edited file) is detected and rebuilt.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.fsutil import remove_tree, sha256_file, tree_size

log = logging.getLogger(__name__)

SEAL = ".complete"


def input_hash(inputs: Any) -> str:
    """A stable hash of JSON-able inputs."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


@contextlib.contextmanager
def _locked(cache_dir: Path, kind: str, key: str) -> Iterator[None]:
    lock_path = cache_dir / kind / f".{key}.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("    waiting for another build of the same %s (%s)", kind, key)
            fcntl.flock(lock, fcntl.LOCK_EX)
        yield


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


def obtain(cache_dir: Path, kind: str, key: str, make: Callable[[Path], list[str]]) -> tuple[Path, bool]:
    """The entry for `key`, made by `make(tmpdir)` when missing or damaged; returns (entry, was_cached).

    `make` fills the directory and returns the relative paths whose contents the seal protects.
    """
    entry = cache_dir / kind / key
    with _locked(cache_dir, kind, key):
        if (entry / SEAL).exists() and _sealed_ok(entry):
            os.utime(entry / SEAL)  # last use, for `xenlive cache prune`
            return entry, True
        tmp = cache_dir / kind / f".{key}.tmp-{os.getpid()}"
        remove_tree(tmp)
        tmp.mkdir(parents=True)
        try:
            sealed = make(tmp)
            seal = {"made": int(time.time()), "files": {rel: [(tmp / rel).stat().st_size, sha256_file(tmp / rel)]
                                                        for rel in sealed}}  # fmt: skip
            (tmp / SEAL).write_text(json.dumps(seal, indent=1))
            remove_tree(entry)
            tmp.rename(entry)
        except BaseException:
            remove_tree(tmp)
            raise
    return entry, False


@dataclass(frozen=True)
class Entry:
    kind: str
    key: str
    path: Path
    size: int
    last_used: float
    complete: bool


def entries(cache_dir: Path) -> list[Entry]:
    """Every entry (and leftover temporary directory) in the cache."""
    found = []
    for kind_dir in sorted(p for p in cache_dir.glob("*") if p.is_dir() and p.name != "work"):
        for path in sorted(kind_dir.iterdir()):
            if not path.is_dir():
                continue
            seal = path / SEAL
            complete = seal.exists() and not path.name.startswith(".")
            last_used = (seal if seal.exists() else path).stat().st_mtime
            found.append(Entry(kind_dir.name, path.name, path, tree_size(path), last_used, complete))
    return found


def remove(cache_dir: Path, entry: Entry) -> bool:
    """Remove an entry unless a build holds its lock; True if removed."""
    key = entry.key.lstrip(".").split(".tmp-")[0]
    lock_path = cache_dir / entry.kind / f".{key}.lock"
    with lock_path.open("a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        remove_tree(entry.path)
    return True


def clean_stale_workdirs(cache_dir: Path) -> None:
    """Remove build work directories whose build process is gone (killed with SIGKILL, power loss)."""
    for work in (cache_dir / "work").glob("build-*"):
        pid = work.name.split("-")[1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            log.debug("removing stale work directory %s", work)
            remove_tree(work)
