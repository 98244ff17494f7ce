"""The squashfs layers in /live/: live-boot stacks every /live/*.squashfs, later names on top."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from builder.context import BuildContext
from builder.medium import BASE_LAYER, PACKAGES_LAYER, TOP_LAYER
from builder.run import run
from builder.stages.rootfs import squashfs_command, squashfs_progress


def squash(ctx: BuildContext) -> None:
    assert ctx.base_squashfs is not None
    _place(ctx.base_squashfs, ctx.staging / BASE_LAYER)
    if ctx.packages_squashfs is not None:  # only a profile with extra packages has this layer
        _place(ctx.packages_squashfs, ctx.staging / PACKAGES_LAYER)
    # mksquashfs stamps the image and every file with SOURCE_DATE_EPOCH (and refuses -all-time with it).
    top = squashfs_command(ctx.top, ctx.staging / TOP_LAYER)
    run([*top, "-all-root"], env={"SOURCE_DATE_EPOCH": str(ctx.epoch)}, output=squashfs_progress("top layer"))


def _place(cached: Path, staged: Path) -> None:
    staged.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(cached, staged)  # same file system as the cache: no copy
    except OSError:
        shutil.copyfile(cached, staged)
