"""BuildContext: the profile, the workspace paths, and what earlier stages produced."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import UsageError
from builder.profile.model import Profile


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH when set (reproducible builds), else now."""
    value = os.environ.get("SOURCE_DATE_EPOCH")
    if value is None:
        return int(time.time())
    if not value.isdigit():
        raise UsageError(f"SOURCE_DATE_EPOCH must be a number of seconds, got {value!r}")
    return int(value)


def cache_root() -> Path:
    """$XENLIVE_CACHE_DIR, else $XDG_CACHE_HOME/xenlive, else ~/.cache/xenlive."""
    if os.environ.get("XENLIVE_CACHE_DIR"):
        return Path(os.environ["XENLIVE_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "xenlive"


@dataclass
class BuildContext:
    profile: Profile
    output: Path
    workdir: Path
    cache_dir: Path
    timings: dict[str, float] = field(default_factory=dict)
    cache_hits: dict[str, bool] = field(default_factory=dict)
    # dom0's tree as the later stages read it: the base tree (inside a cache entry), or, when the profile
    # has extra packages, the merged view of base and package layer (stages/pkglayer.py)
    rootfs: Path | None = None
    base_tree: Path | None = None  # the dom0 base tree alone, set by the rootfs stage
    base_squashfs: Path | None = None
    packages_squashfs: Path | None = None  # the package layer's squashfs, when there is one
    packages_key: str = ""  # its cache key
    build_id: str = ""  # names the medium, so GRUB finds this ISO and not another one
    output_sha256: str = ""  # set once the ISO is written
    platform: dict[str, Any] = field(default_factory=dict)  # Xen, kernel, live-boot as built (manifest "dom0")
    epoch: int = 0  # every timestamp in the output (SOURCE_DATE_EPOCH, else the build's start)
    # What the build keeps until it ends (the locks on the cache entries it uses); pipeline.build closes it.
    holds: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)

    @property
    def staging(self) -> Path:
        """The medium's file tree: the master stage writes exactly this into the ISO."""
        return self.workdir / "medium"

    @property
    def top(self) -> Path:
        """The top layer over dom0's base system: overlays and xenlive's services."""
        return self.workdir / "top"

    def require_rootfs(self) -> Path:
        if self.rootfs is None:
            raise RuntimeError("the rootfs stage has not run")
        return self.rootfs
