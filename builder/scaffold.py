"""`xenlive init` and `xenlive profiles`: making a new profile, and finding the existing ones."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

from builder.errors import ProfileError, UsageError
from builder.profile import builtin_profiles_dir, load_profile
from builder.profile.model import XEN_NAME
from builder.templating import render

INIT_TEMPLATES = "templates/init"


def profile_name_for(directory: Path) -> str:
    """A valid profile (and Xen domain) name from a directory name: other characters become '-'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", directory.resolve().name).strip("-.") or "appliance"
    return name[:63]


def scaffold(directory: Path, name: str | None = None) -> list[Path]:
    """Write DIRECTORY/profile.yaml and DIRECTORY/overlay/; refuse to overwrite anything.

    The new profile is loaded before returning, so what `init` writes always validates.
    """
    name = name or profile_name_for(directory)
    if not XEN_NAME.fullmatch(name):
        raise UsageError(f"--name {name!r} is not valid: letters, digits, '_', '.', '-', at most 63 characters")
    profile = directory / "profile.yaml"
    overlay = directory / "overlay"
    for existing in (profile, overlay):
        if existing.exists() or existing.is_symlink():
            raise UsageError(f"{existing} already exists; not overwriting it", hint="pick an empty directory")
    source = resources.files("builder").joinpath(INIT_TEMPLATES)
    text = render("init/profile.yaml.j2", appliance=name)
    created = [profile]
    directory.mkdir(parents=True, exist_ok=True)
    profile.write_text(text)
    created += _copy_tree(source.joinpath("overlay"), overlay)
    load_profile(profile)
    return created


def _copy_tree(src: Traversable, dest: Path) -> list[Path]:
    created = []
    dest.mkdir(parents=True, exist_ok=True)
    for item in sorted(src.iterdir(), key=lambda i: i.name):
        target = dest / item.name
        if item.is_dir():
            created += _copy_tree(item, target)
        else:
            target.write_bytes(item.read_bytes())
            # Package data does not keep modes: the example script under usr/local/bin is executable.
            os.chmod(target, 0o755 if "/bin/" in target.as_posix() else 0o644)
            created.append(target)
    return created


@dataclass(frozen=True)
class ProfileEntry:
    name: str
    origin: str  # "local" (./profiles) or "built-in"
    description: str
    path: Path
    valid: bool

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "origin": self.origin, "description": self.description,
                "path": str(self.path), "valid": self.valid}  # fmt: skip


def list_profiles(local_dir: Path) -> list[ProfileEntry]:
    """Profiles in ./profiles, then the built-in ones; each name once, as `xenlive build NAME` finds
    it (a local profile hides a built-in one of the same name); an invalid one says why."""
    entries: list[ProfileEntry] = []
    seen: set[str] = set()
    for origin, directory in (("local", local_dir), ("built-in", builtin_profiles_dir())):
        if not directory.is_dir():
            continue
        for path in sorted(directory.glob("*.yaml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                profile = load_profile(path)
                description, valid = profile.description or "(no description)", True
            except ProfileError as e:
                description, valid = f"INVALID: {e.problems[0] if e.problems else 'unreadable'}", False
            entries.append(ProfileEntry(path.stem, origin, description, path, valid))
    return entries
