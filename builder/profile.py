"""The profile model: frozen dataclasses, and the loader that validates YAML against them.

The dataclass fields are the registry: their types, defaults and `metadata` (help, limits) drive
validation, `xenlive show` and the docs. Parsing goes through yaml.compose() so each node keeps
its line and column, and every error names file:line:column and the key path.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.errors import ProfileError

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_PROFILES = REPO_ROOT / "profiles"
MAX_PROFILE_BYTES = 1 << 20
MAX_NODES = 20_000

XEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VOLUME_LABEL = re.compile(r"^[A-Z0-9_]{1,32}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|[kmgt])?$")


class Firmware(enum.StrEnum):
    BIOS = "bios"
    UEFI = "uefi"


class GuestType(enum.StrEnum):
    PV = "pv"
    PVH = "pvh"
    HVM = "hvm"


def _meta(help: str, **kw: Any) -> dict[str, Any]:
    return {"help": help, **kw}


@dataclass(frozen=True, kw_only=True)
class Media:
    label: str = field(
        default="XENLIVE",
        metadata=_meta("ISO volume label: A-Z, 0-9 and _, at most 32 characters", pattern=VOLUME_LABEL),
    )
    publisher: str = field(default="", metadata=_meta("publisher recorded in the ISO volume descriptor"))
    boot: tuple[Firmware, ...] = field(
        default=(Firmware.BIOS, Firmware.UEFI),
        metadata=_meta("firmware the medium boots on: bios, uefi or both", nonempty=True),
    )


@dataclass(frozen=True, kw_only=True)
class Xen:
    cmdline: str = field(
        default="dom0_mem=1024M,max:1024M",
        metadata=_meta("extra Xen command line; xenlive adds the serial console options"),
    )


@dataclass(frozen=True, kw_only=True)
class Dom0:
    suite: str = field(default="bookworm", metadata=_meta("Debian suite of dom0"))
    mirror: str = field(default="http://deb.debian.org/debian", metadata=_meta("Debian mirror URL"))
    packages: tuple[str, ...] = field(
        default=(), metadata=_meta("extra Debian packages for dom0", pattern=PACKAGE)
    )
    cmdline: str = field(default="", metadata=_meta("extra dom0 kernel command line"))
    hostname: str = field(default="xenlive", metadata=_meta("dom0 host name", pattern=HOSTNAME))
    overlays: tuple[Path, ...] = field(
        default=(),
        metadata=_meta("directories copied over dom0's root, relative to the profile; *.j2 files are rendered"),
    )


@dataclass(frozen=True, kw_only=True)
class Guest:
    name: str = field(metadata=_meta("Xen domain name", pattern=XEN_NAME))
    type: GuestType = field(default=GuestType.PV, metadata=_meta("virtualisation type"))
    memory: int = field(default=128, metadata=_meta("memory in MiB (or a size like 256M, 1G)", size=True, min=16))
    vcpus: int = field(default=1, metadata=_meta("virtual CPUs", min=1, max=128))
    kernel: str = field(default="dom0", metadata=_meta('"dom0" (the dom0 kernel) or a path to a kernel'))
    initrd: str = field(default="busybox", metadata=_meta('"busybox" (built from dom0\'s busybox) or a path'))
    cmdline: str = field(default="console=hvc0", metadata=_meta("guest kernel command line"))
    autostart: bool = field(default=True, metadata=_meta("start the guest when dom0 boots"))


@dataclass(frozen=True, kw_only=True)
class Profile:
    name: str = field(metadata=_meta("profile name", pattern=XEN_NAME))
    description: str = field(default="", metadata=_meta("one line about the appliance"))
    media: Media = field(default_factory=Media, metadata=_meta("the ISO medium"))
    xen: Xen = field(default_factory=Xen, metadata=_meta("the Xen hypervisor"))
    dom0: Dom0 = field(default_factory=Dom0, metadata=_meta("the live Debian control domain"))
    guests: tuple[Guest, ...] = field(default=(), metadata=_meta("guest domains carried on the medium"))
    source: Path | None = field(default=None, metadata=_meta("file the profile was read from", internal=True))

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()


class _Converter:
    """Turns composed YAML nodes into the dataclasses, collecting every problem it finds."""

    def __init__(self, filename: str, base_dir: Path) -> None:
        self.filename = filename
        self.base_dir = base_dir
        self.problems: list[str] = []
        self.constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        mark = node.start_mark
        where = f"{self.filename}:{mark.line + 1}:{mark.column + 1}"
        self.problems.append(f"{where}: {path or '(top)'}: {message}" if path else f"{where}: {message}")

    def convert(self, node: yaml.Node, tp: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
            origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.convert_dataclass(node, tp, path)
        if origin is tuple:
            if not isinstance(node, yaml.SequenceNode):
                self.error(node, path, f"expected a list, got {_describe(node)}")
                return None
            item_tp = typing.get_args(tp)[0]
            items = [self.convert(n, item_tp, f"{path}[{i}]", meta) for i, n in enumerate(node.value)]
            if meta.get("nonempty") and not items:
                self.error(node, path, "expected at least one entry")
            return tuple(items)
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"expected {_type_name(tp, meta)}, got {_describe(node)}")
            return None
        value = self.constructor.construct_object(node)
        return self.convert_scalar(node, value, tp, path, meta)

    def convert_scalar(self, node: yaml.Node, value: Any, tp: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
        if meta.get("size"):
            size = parse_size_mib(value)
            if size is None:
                self.error(node, path, f'expected a size in MiB or like "256M", "1G", got {value!r}')
            elif size < meta.get("min", 0):
                self.error(node, path, f"expected at least {meta['min']} MiB, got {size} MiB")
            return size
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            choices = [e.value for e in tp]
            if value not in choices:
                self.error(node, path, f"expected one of {', '.join(choices)}, got {value!r}")
                return None
            return tp(value)
        if tp is bool:
            if not isinstance(value, bool):
                self.error(node, path, f"expected true or false, got {value!r}")
            return value
        if tp is int:
            if not isinstance(value, int) or isinstance(value, bool):
                self.error(node, path, f"expected an integer, got {value!r}")
                return None
            if "min" in meta and value < meta["min"]:
                self.error(node, path, f"expected at least {meta['min']}, got {value}")
            if "max" in meta and value > meta["max"]:
                self.error(node, path, f"expected at most {meta['max']}, got {value}")
            return value
        if tp in (str, Path):
            if not isinstance(value, str):
                self.error(node, path, f"expected a string, got {value!r}")
                return None
            pattern = meta.get("pattern")
            if pattern is not None and not pattern.match(value):
                self.error(node, path, f"{value!r} is not valid: {meta['help']}")
            if tp is Path:
                return (self.base_dir / value).resolve()
            return value
        raise TypeError(f"unsupported field type {tp!r}")  # a bug in the model, not the user's fault

    def convert_dataclass(self, node: yaml.Node, cls: Any, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        seen: dict[str, yaml.Node] = {}
        kwargs: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.error(key_node, path, "keys must be strings")
                continue
            if key in seen:
                self.error(key_node, sub, f"duplicate key (first given on line {seen[key].start_mark.line + 1})")
                continue
            seen[key] = key_node
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
                self.error(key_node, sub, f"unknown key{hint}")
                continue
            kwargs[key] = self.convert(value_node, hints[key], sub, fields[key].metadata)
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(node, path, f"missing required key {name!r}")
        if any(v is None for v in kwargs.values()) or self.problems:
            return None
        return cls(**kwargs)


def parse_size_mib(value: Any) -> int | None:
    """An int is MiB; a string like "512M", "1G", "2GiB" is converted to MiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    m = SIZE.match(value.strip())
    if not m:
        return None
    unit = (m.group(2) or "M")[0].upper()
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return int(int(m.group(1)) * factor)


def _describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def _type_name(tp: Any, meta: typing.Mapping[str, Any]) -> str:
    if meta.get("size"):
        return "a size"
    return {str: "a string", int: "an integer", bool: "true or false", Path: "a path"}.get(tp, "a value")


def resolve_profile_path(spec: str | Path | None) -> Path:
    """A path as given, or the name of a built-in profile (profiles/NAME.yaml)."""
    if spec is None:
        return BUILTIN_PROFILES / "default.yaml"
    path = Path(spec)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_-]+", str(spec)):
        builtin = BUILTIN_PROFILES / f"{spec}.yaml"
        if builtin.exists():
            return builtin
    return path


def load_profile(spec: str | Path | None) -> Profile:
    """Read, validate and finalize a profile; raise ProfileError listing every problem."""
    path = resolve_profile_path(spec)
    name = str(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError([f"{name}: profile not found"], hint="give a profile file or a built-in name") from None
    except OSError as e:
        raise ProfileError([f"{name}: cannot read profile: {e.strerror}"]) from None
    if len(data) > MAX_PROFILE_BYTES:
        raise ProfileError([f"{name}: profile is {len(data)} bytes, more than the {MAX_PROFILE_BYTES} allowed"])
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as e:
        raise ProfileError([f"{name}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ProfileError([f"{where}: YAML syntax error: {e.problem}"]) from None
    if root is None:
        raise ProfileError([f"{name}: the profile is empty"])
    _refuse_alias_bombs(root, name)
    conv = _Converter(name, path.resolve().parent)
    profile = conv.convert(root, Profile, "", {})
    if profile is not None:
        profile = dataclasses.replace(profile, source=path.resolve())
        _check_semantics(profile, root, conv)
    if conv.problems or profile is None:
        raise ProfileError(conv.problems)
    return profile


def _refuse_alias_bombs(root: yaml.Node, name: str) -> None:
    """Count nodes as if aliases were expanded; refuse documents that would blow up (billion laughs)."""
    count = 0
    stack = [root]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ProfileError([f"{name}: more than {MAX_NODES} YAML nodes once aliases are expanded (an alias bomb?)"])
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def _check_semantics(profile: Profile, root: yaml.Node, conv: _Converter) -> None:
    """Rules that span fields: unique guest names, overlays that exist, guest files that exist."""
    guests_node = _child(root, "guests")
    names: dict[str, int] = {}
    for i, guest in enumerate(profile.guests):
        node = _child(guests_node.value[i], "name") if guests_node else root
        if guest.name in names:
            conv.error(node or root, f"guests[{i}].name", f"duplicate guest name {guest.name!r} (also guests[{names[guest.name]}])")
        names.setdefault(guest.name, i)
        for key in ("kernel", "initrd"):
            value = getattr(guest, key)
            if value not in ("dom0", "busybox") and not (profile.base_dir / value).is_file():
                conv.error(node or root, f"guests[{i}].{key}", f"file not found: {value}")
        if guest.kernel == "busybox" or guest.initrd == "dom0":
            conv.error(node or root, f"guests[{i}]", 'kernel may be "dom0" or a path, initrd "busybox" or a path')
    dom0_node = _child(root, "dom0")
    overlays_node = _child(dom0_node, "overlays") if dom0_node else None
    for i, overlay in enumerate(profile.dom0.overlays):
        if not overlay.is_dir():
            at = overlays_node.value[i] if overlays_node else root
            conv.error(at, f"dom0.overlays[{i}]", f"overlay directory not found: {overlay}")


def _child(node: yaml.Node | None, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v
    return None


def to_data(obj: Any) -> Any:
    """The profile as plain data (for `xenlive show` and for hashing)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_data(getattr(obj, f.name)) for f in dataclasses.fields(obj) if not f.metadata.get("internal")
        }
    if isinstance(obj, tuple | list):
        return [to_data(v) for v in obj]
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    return obj
