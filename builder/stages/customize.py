"""The top layer over dom0's base: xenlive's own services, then the profile's overlays.

Kept apart from the base layer so that an overlay edit rebuilds only this small layer.
"""

from __future__ import annotations

import configparser
import logging
import os
import shutil
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from builder.context import BuildContext
from builder.errors import ProfileError
from builder.templating import render, render_file

log = logging.getLogger(__name__)


def template_context(ctx: BuildContext) -> dict[str, Any]:
    profile = ctx.profile
    return {
        "profile": profile,
        "autostart": [g.name for g in profile.guests if g.autostart],
    }


def customize(ctx: BuildContext) -> None:
    ctx.top.mkdir(parents=True, exist_ok=True)
    context = template_context(ctx)
    _copy_builtin(resources.files("builder").joinpath("templates/dom0"), "dom0", ctx.top, context)
    for overlay in ctx.profile.dom0.overlays:
        log.info("    overlay %s", overlay)
        apply_overlay(overlay, ctx.top, context)
    enable_units(ctx.top)


def _copy_builtin(src: Traversable, template_dir: str, dest: Path, context: dict[str, Any]) -> None:
    for item in src.iterdir():
        target = dest / item.name
        if item.is_dir():
            target.mkdir(exist_ok=True)
            _copy_builtin(item, f"{template_dir}/{item.name}", target, context)
        elif item.name.endswith(".j2"):
            target.with_suffix("").write_text(render(f"{template_dir}/{item.name}", **context))
        else:
            target.write_bytes(item.read_bytes())
            # Package data does not promise modes: executables are the scripts under usr/lib.
            os.chmod(target, 0o755 if "/usr/lib/" in f"/{template_dir}/" else 0o644)


def enable_units(root: Path) -> None:
    """Do what `systemctl enable` does for units in /etc/systemd/system: link them into WantedBy targets.

    systemctl cannot run here (no systemd in the build), and the units come from overlays too.
    """
    units = root / "etc/systemd/system"
    if not units.is_dir():
        return
    for unit in sorted(units.glob("*.service")) + sorted(units.glob("*.timer")):
        if unit.is_symlink():
            continue
        parser = configparser.ConfigParser(strict=False, interpolation=None)
        parser.optionxform = str  # type: ignore[assignment,method-assign]
        parser.read_string(unit.read_text())
        for target in parser.get("Install", "WantedBy", fallback="").split():
            wants = units / f"{target}.wants"
            wants.mkdir(exist_ok=True)
            link = wants / unit.name
            if not link.is_symlink():
                link.symlink_to(f"../{unit.name}")


def apply_overlay(root: Path, dest: Path, context: dict[str, Any]) -> None:
    """Copy an overlay tree over `dest`, rendering *.j2 files and keeping modes.

    Symlinks are copied as links (they point into dom0's file system, not the host's), but a
    file or directory reached through a symlink that leaves the overlay is refused.
    """
    root = root.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        (dest / rel).mkdir(parents=True, exist_ok=True)
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            src = here / name
            target = dest / rel / name
            if src.is_symlink():
                if target.is_symlink() or target.exists():
                    target.unlink()
                target.symlink_to(os.readlink(src))
            elif name.endswith(".j2"):
                target = target.with_suffix("")
                target.write_text(render_file(src, **context))
                shutil.copymode(src, target)
            elif src.is_file():
                shutil.copy2(src, target)
            else:
                raise ProfileError([f"{src}: overlays may hold only files, directories and symlinks"])
