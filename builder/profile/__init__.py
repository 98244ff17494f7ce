"""The profile: its model (model.py), how it is loaded (loader.py) and what it implies (finalize.py).

The rules a profile must follow live with every other rule, in builder/checks/ (profile_rules.py);
the generic YAML-to-dataclass reader it shares with the hardware database is builder/yamlconv.py.
"""

from builder.profile.finalize import UserTemplate, finalize, profile_templates, template_context, to_data
from builder.profile.loader import builtin_profiles_dir, display, load_profile, resolve_profile_path
from builder.profile.model import (
    BUILTIN_LOCALES,
    MEDIA_SIZES,
    Builtin,
    Checks,
    DebianGuest,
    Dom0,
    File,
    Firmware,
    Guest,
    GuestAction,
    GuestFile,
    GuestKind,
    GuestType,
    Keyboard,
    Media,
    Network,
    Profile,
    TargetOptions,
    User,
    Xen,
)

__all__ = [
    "BUILTIN_LOCALES",
    "MEDIA_SIZES",
    "Builtin",
    "Checks",
    "DebianGuest",
    "Dom0",
    "File",
    "Firmware",
    "Guest",
    "GuestAction",
    "GuestFile",
    "GuestKind",
    "GuestType",
    "Keyboard",
    "Media",
    "Network",
    "Profile",
    "TargetOptions",
    "User",
    "UserTemplate",
    "Xen",
    "builtin_profiles_dir",
    "display",
    "finalize",
    "load_profile",
    "profile_templates",
    "resolve_profile_path",
    "template_context",
    "to_data",
]
