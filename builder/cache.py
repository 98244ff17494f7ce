"""Content-addressed cache entries for stage outputs.

An entry is a directory named by the hash of its inputs. It is built under a temporary name and
renamed into place only when complete, so an interrupted build never leaves an entry that a later
build would trust.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def input_hash(inputs: Any) -> str:
    """A stable hash of JSON-able inputs."""
    blob = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


def lookup(cache_dir: Path, kind: str, key: str) -> Path | None:
    entry = cache_dir / kind / key
    return entry if (entry / ".complete").is_file() else None


def begin(cache_dir: Path, kind: str, key: str) -> Path:
    """A fresh temporary directory for building an entry (any stale one is removed)."""
    tmp = cache_dir / kind / f".{key}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def commit(cache_dir: Path, kind: str, key: str, tmp: Path) -> Path:
    """Mark the temporary entry complete and move it into place."""
    (tmp / ".complete").write_text("")
    entry = cache_dir / kind / key
    if entry.exists():
        shutil.rmtree(entry)
    tmp.rename(entry)
    return entry


def abandon(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)
