"""What a loaded profile implies: derived defaults, the plain data views of it, its templates.

finalize() is the one place for derived defaults (the packages and services dom0's settings need).
to_data() is the profile as plain data: what `xenlive show` prints, what the build id hashes, and
the only view of the profile that templates get (plain dicts, lists and strings, never an object
with methods that could reach files or the OS).
"""

from __future__ import annotations

import dataclasses
import enum
from pathlib import Path
from typing import Any

from builder.profile.model import (
    BUILTIN_LOCALES,
    KEYBOARD_PACKAGES,
    LOCALE_PACKAGES,
    NETWORK_UNITS,
    SSH_PACKAGES,
    Keyboard,
    Profile,
)


def finalize(profile: Profile) -> Profile:
    """Derived defaults, in one place: the packages and services that the dom0 settings need, and
    the suite of Debian guests that name none (dom0's)."""
    dom0 = profile.dom0
    wanted = list(dom0.packages)
    if dom0.locale not in BUILTIN_LOCALES:
        wanted += LOCALE_PACKAGES
    if dom0.keyboard != Keyboard():
        wanted += KEYBOARD_PACKAGES
    if any(u.ssh_keys for u in dom0.users):
        wanted += SSH_PACKAGES
    packages: list[str] = []
    for package in wanted:
        if package not in packages and package not in dom0.remove_packages:
            packages.append(package)
    services = list(dom0.services)
    if dom0.network.dhcp or dom0.network.bridge:
        services += [u for u in NETWORK_UNITS if u not in services]
    dom0 = dataclasses.replace(dom0, packages=tuple(packages), services=tuple(services))
    guests = tuple(
        dataclasses.replace(g, debian=dataclasses.replace(g.debian, suite=g.debian.suite or dom0.suite))
        for g in profile.guests
    )
    return dataclasses.replace(profile, dom0=dom0, guests=guests)


def to_data(obj: Any) -> Any:
    """The profile as plain data (for `xenlive show` and for hashing); `extends` is already resolved."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_data(getattr(obj, f.name))
            for f in dataclasses.fields(obj)
            if not f.metadata.get("internal")
            and not f.metadata.get("resolved")
            and not (getattr(obj, f.name) is None and f.default is None)
        }
    if isinstance(obj, tuple | list):
        return [to_data(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_data(v) for k, v in obj.items()}
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return obj.as_posix()
    return obj


def template_context(profile: Profile) -> dict[str, Any]:
    """What every template sees: the profile and its vars as plain data, and the autostarted guests."""
    return {
        "profile": to_data(profile),
        "vars": to_data(profile.vars),
        "autostart": [g.name for g in profile.guests if g.autostart],
    }


@dataclasses.dataclass(frozen=True)
class UserTemplate:
    """A template of the profile's: the file, the directory it may include from, and the key naming it."""

    path: Path
    root: Path
    key: str


def profile_templates(profile: Profile) -> list[UserTemplate]:
    """Every user template: overlays' *.j2 files and files[].template."""
    found: list[UserTemplate] = []
    for i, overlay in enumerate(profile.dom0.overlays):
        root = profile.base_dir / overlay
        for path in sorted(root.rglob("*.j2")):
            if path.is_file() and not path.is_symlink():
                found.append(UserTemplate(path, root, f"dom0.overlays[{i}]"))
    for i, entry in enumerate(profile.dom0.files):
        if entry.template is not None:
            path = profile.base_dir / entry.template
            found.append(UserTemplate(path, path.parent, f"dom0.files[{i}].template"))
    return found
