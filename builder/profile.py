"""The profile model: frozen dataclasses, and the loader that validates YAML against them.

The dataclass fields are the registry: their types, defaults and `metadata` (help, limits) drive
validation, `xenlive show`, the JSON Schema and the reference docs (builder/schema.py). Parsing goes
through yaml.compose() so each node keeps its line and column, and every error names
file:line:column and the key path.

`extends:` is resolved on the composed node trees, before conversion: a parent's nodes keep the
marks of the parent's file, so an error in an inherited key still points at the line that wrote it.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from builder.errors import ProfileError, TemplateError
from builder.fsutil import sha256_file

REPO_ROOT = Path(__file__).resolve().parent.parent
BUILTIN_PROFILES = REPO_ROOT / "profiles"
MAX_PROFILE_BYTES = 1 << 20
MAX_NODES = 20_000
MAX_PARENTS = 16  # depth of an extends chain; deeper is surely a mistake

XEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
HOSTNAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
VOLUME_LABEL = re.compile(r"^[A-Z0-9_]{1,32}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
SIZE = re.compile(r"^(\d+)\s*([KMGT]i?B?|[kmgt])?$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
# A crypt(3) hash (yescrypt, sha512, sha256, bcrypt, md5) or "!"/"*" for a locked account.
PASSWORD = re.compile(r"^(!|\*|\$(y|gy|7|6|5|2[abxy]|1)\$[./A-Za-z0-9$,=]{8,})$")
SSH_KEY = re.compile(r"^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*( .*)?$")
LOCALE = re.compile(r"^(C|POSIX|C\.UTF-8|[a-z]{2,3}_[A-Z]{2}(\.UTF-8)?(@[a-z]+)?)$")
TIMEZONE = re.compile(r"^(UTC|[A-Z][A-Za-z_-]+(/[A-Za-z0-9_+-]+){1,2})$")
XKB_NAME = re.compile(r"^[a-z0-9_()+:,-]*$")
IFACE = re.compile(r"^([A-Za-z0-9_.*-]{1,15})?$")
UNIT = re.compile(r"^[A-Za-z0-9@_.:\\-]+\.(service|socket|timer|path|target|mount)$")
DOM0_PATH = re.compile(r"^(/(?!\.\.?(/|$))[A-Za-z0-9_@%+=,.:~-]+)+$")  # no . or .. components
OWNER = re.compile(r"^[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?$")
FILE_MODE = re.compile(r"^0?[0-7]{3}$|^[0-7]{4}$")
VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# media.size_limit by name; the byte counts are the usual capacities of each disc.
MEDIA_SIZES: dict[str, int] = {
    "cd-650": 681_574_400,
    "cd-700": 737_280_000,
    "dvd-5": 4_700_372_992,
    "dvd-9": 8_543_666_176,
}

# Packages the settings need; finalize() adds them so a profile never has to know.
LOCALE_PACKAGES = ("locales",)
KEYBOARD_PACKAGES = ("keyboard-configuration", "console-setup")
SSH_PACKAGES = ("openssh-server",)
NETWORK_UNITS = ("systemd-networkd.service",)


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
    """The ISO medium: volume label and publisher, firmware it boots on, and a size it must fit."""

    label: str = field(
        default="XENLIVE",
        metadata=_meta("ISO volume label: A-Z, 0-9 and _, at most 32 characters", pattern=VOLUME_LABEL),
    )
    publisher: str = field(default="", metadata=_meta("publisher recorded in the ISO volume descriptor"))
    boot: tuple[Firmware, ...] = field(
        default=(Firmware.BIOS, Firmware.UEFI),
        metadata=_meta("firmware the medium boots on: bios, uefi or both", nonempty=True),
    )
    size_limit: int | None = field(
        default=None,
        metadata=_meta(
            "largest ISO the build may produce: cd-650, cd-700, dvd-5, dvd-9, or a number of bytes",
            media_size=True,
            example="cd-700",
        ),
    )


@dataclass(frozen=True, kw_only=True)
class Xen:
    """The hypervisor: Xen comes from dom0's own packages, so only its command line is set here."""

    cmdline: str = field(
        default="dom0_mem=1024M,max:1024M",
        metadata=_meta("extra Xen command line; xenlive adds the serial console options"),
    )


@dataclass(frozen=True, kw_only=True)
class Keyboard:
    """The console keyboard, as XKB names: console-setup compiles them into a keymap at boot."""

    model: str = field(default="pc105", metadata=_meta("XKB keyboard model, e.g. pc105 or jp106", pattern=XKB_NAME))
    layout: str = field(default="us", metadata=_meta("XKB layout, e.g. us, de or jp", pattern=XKB_NAME))
    variant: str = field(default="", metadata=_meta("XKB variant, e.g. nodeadkeys", pattern=XKB_NAME))
    options: str = field(default="", metadata=_meta("XKB options, e.g. ctrl:nocaps", pattern=XKB_NAME))


@dataclass(frozen=True, kw_only=True)
class User:
    """An account in dom0. Passwords only as crypt hashes, so a profile kept in git leaks nothing."""

    name: str = field(metadata=_meta("login name; root changes the existing root account", pattern=USER_NAME))
    password: str = field(
        default="!",
        metadata=_meta(
            'a crypt(3) hash (make one with `mkpasswd -m yescrypt`), or "!" to lock the password;'
            " plain text is refused",
            pattern=PASSWORD,
            password=True,
        ),
    )
    uid: int | None = field(
        default=None, metadata=_meta("user id; default: the next free id from 1000", min=1000, max=59999)
    )
    comment: str = field(default="", metadata=_meta("full name (the GECOS field)", pattern=re.compile(r"^[^:\n]*$")))
    shell: str = field(default="/bin/bash", metadata=_meta("login shell", pattern=DOM0_PATH))
    groups: tuple[str, ...] = field(
        default=(), metadata=_meta("supplementary groups; they must exist in dom0 (e.g. sudo)", pattern=USER_NAME)
    )
    ssh_keys: tuple[str, ...] = field(
        default=(),
        metadata=_meta("SSH public keys for ~/.ssh/authorized_keys (adds openssh-server to dom0)", pattern=SSH_KEY),
    )


@dataclass(frozen=True, kw_only=True)
class Network:
    """dom0 networking: the uplink joins a bridge that guests share, and the bridge holds dom0's address."""

    dhcp: bool = field(
        default=True, metadata=_meta("configure dom0's address with DHCP (on the bridge when there is one)")
    )
    interface: str = field(
        default="",
        metadata=_meta(
            'the uplink NIC (a name or a glob like "en*"); empty: the Ethernet NICs named en* or eth*, which on'
            " a usual machine is its one NIC",
            pattern=IFACE,
        ),
    )
    bridge: str = field(
        default="xenbr0",
        metadata=_meta(
            "bridge for guest vifs, holding the uplink NIC and dom0's own address; empty for none", pattern=IFACE
        ),
    )


@dataclass(frozen=True, kw_only=True)
class File:
    """One file written into dom0, for when a whole overlay directory is too much."""

    path: str = field(metadata=_meta("absolute path in dom0, without . or .. components", pattern=DOM0_PATH))
    content: str | None = field(default=None, metadata=_meta("the file's text (give content or template)"))
    template: Path | None = field(
        default=None, metadata=_meta("a jinja2 template, relative to the profile, rendered with the profile and vars")
    )
    mode: str = field(
        default="0644", metadata=_meta('permissions in octal, written as a string: "0644"', file_mode=True)
    )
    owner: str = field(default="root", metadata=_meta("USER or USER:GROUP owning the file in dom0", pattern=OWNER))


@dataclass(frozen=True, kw_only=True)
class Dom0:
    """The live Debian control domain: its packages, settings, overlays and files."""

    suite: str = field(default="bookworm", metadata=_meta("Debian suite of dom0"))
    mirror: str = field(default="http://deb.debian.org/debian", metadata=_meta("Debian mirror URL"))
    packages: tuple[str, ...] = field(default=(), metadata=_meta("extra Debian packages for dom0", pattern=PACKAGE))
    remove_packages: tuple[str, ...] = field(
        default=(),
        metadata=_meta("packages taken out of `packages` (e.g. ones a parent profile added)", pattern=PACKAGE),
    )
    services: tuple[str, ...] = field(
        default=(), metadata=_meta("systemd units to enable, e.g. ssh.service", pattern=UNIT)
    )
    cmdline: str = field(default="", metadata=_meta("extra dom0 kernel command line"))
    hostname: str = field(default="xenlive", metadata=_meta("dom0 host name", pattern=HOSTNAME))
    locale: str = field(default="C.UTF-8", metadata=_meta("LANG of dom0, e.g. ja_JP.UTF-8", pattern=LOCALE))
    timezone: str = field(default="UTC", metadata=_meta("time zone, e.g. Asia/Tokyo", pattern=TIMEZONE))
    keyboard: Keyboard = field(default_factory=Keyboard, metadata=_meta("console keyboard layout"))
    users: tuple[User, ...] = field(default=(), metadata=_meta("accounts; an entry named root changes root"))
    network: Network = field(default_factory=Network, metadata=_meta("dom0 networking (systemd-networkd)"))
    overlays: tuple[Path, ...] = field(
        default=(),
        metadata=_meta("directories copied over dom0's root, relative to the profile; *.j2 files are rendered"),
    )
    files: tuple[File, ...] = field(default=(), metadata=_meta("single files written into dom0 after the overlays"))


class GuestKind(enum.StrEnum):
    """What xenlive builds for a guest (see builder/stages/guests.py)."""

    BUSYBOX = "busybox"
    DEBIAN = "debian"
    IMAGE = "image"


class GuestAction(enum.StrEnum):
    """What Xen does when a guest powers off, reboots or crashes (xl.cfg on_poweroff/on_reboot/on_crash)."""

    DESTROY = "destroy"
    RESTART = "restart"
    RENAME_RESTART = "rename-restart"
    PRESERVE = "preserve"
    COREDUMP_DESTROY = "coredump-destroy"
    COREDUMP_RESTART = "coredump-restart"
    SOFT_RESET = "soft-reset"


SHA256 = re.compile(r"^([0-9a-f]{64})?$")
OPTIONAL_HOSTNAME = re.compile(r"^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?$")
IPV4_CIDR = re.compile(r"^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)/([0-9]|[12]\d|3[0-2])$|^$")
IPV4 = re.compile(r"^((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)$|^$")
READY_PATTERN = re.compile(r"^[^\n]*$")


@dataclass(frozen=True, kw_only=True)
class DebianGuest:
    """A Debian system built with mmdebstrap into the guest's own ext4 disk; it boots its own kernel."""

    suite: str = field(default="bookworm", metadata=_meta("Debian suite of the guest"))
    mirror: str = field(default="http://deb.debian.org/debian", metadata=_meta("Debian mirror URL"))
    packages: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "packages on top of the guest's minimal system (kernel, systemd, iproute2, ping)", pattern=PACKAGE
        ),
    )
    hostname: str = field(
        default="", metadata=_meta("the guest's host name; default: its domain name", pattern=OPTIONAL_HOSTNAME)
    )
    users: tuple[User, ...] = field(
        default=(), metadata=_meta("accounts in the guest; an entry named root changes root")
    )
    dhcp: bool = field(default=True, metadata=_meta("get the guest's address with DHCP on its first NIC"))
    address: str = field(
        default="", metadata=_meta("a static IPv4 address with prefix, e.g. 10.99.0.10/24", pattern=IPV4_CIDR)
    )
    gateway: str = field(default="", metadata=_meta("IPv4 gateway for a static address", pattern=IPV4))
    disk_size: int = field(
        default=0,
        metadata=_meta("size of the guest's ext4 disk in MiB (or like 512M); 0 fits the system plus 25 %", size=True),
    )


@dataclass(frozen=True, kw_only=True)
class Guest:
    """A guest domain carried on the medium and (by default) started when dom0 boots."""

    name: str = field(metadata=_meta("Xen domain name", pattern=XEN_NAME))
    kind: GuestKind = field(
        default=GuestKind.BUSYBOX,
        metadata=_meta("busybox (a RAM-only guest from dom0's busybox), debian (built here) or image (your files)"),
    )
    type: GuestType = field(default=GuestType.PV, metadata=_meta("virtualisation type"))
    memory: int = field(default=128, metadata=_meta("memory in MiB (or a size like 256M, 1G)", size=True, min=16))
    vcpus: int = field(default=1, metadata=_meta("virtual CPUs", min=1, max=128))
    kernel: str = field(default="dom0", metadata=_meta('"dom0" (the dom0 kernel) or a path to a kernel'))
    initrd: str = field(default="busybox", metadata=_meta('"busybox" (built from dom0\'s busybox) or a path'))
    kernel_sha256: str = field(
        default="", metadata=_meta("sha256 of kernel when it is a path (kind image)", pattern=SHA256)
    )
    initrd_sha256: str = field(
        default="", metadata=_meta("sha256 of initrd when it is a path (kind image)", pattern=SHA256)
    )
    disk: Path | None = field(default=None, metadata=_meta("a raw disk image, relative to the profile (kind image)"))
    disk_sha256: str = field(default="", metadata=_meta("sha256 of disk; required with disk", pattern=SHA256))
    cdrom: Path | None = field(default=None, metadata=_meta("an ISO an hvm guest boots from (kind image, type hvm)"))
    cdrom_sha256: str = field(default="", metadata=_meta("sha256 of cdrom; required with cdrom", pattern=SHA256))
    overlay: Path | None = field(
        default=None, metadata=_meta("a directory copied over a busybox guest's initramfs, relative to the profile")
    )
    debian: DebianGuest = field(default_factory=DebianGuest, metadata=_meta("the Debian system of a debian guest"))
    cmdline: str = field(default="console=hvc0", metadata=_meta("guest kernel command line"))
    write_buffer: int = field(
        default=64,
        metadata=_meta(
            "MiB of dom0 RAM that hold the writes to the guest's disk (the medium is never written);"
            " counted in the memory budget",
            size=True,
            min=1,
        ),
    )
    autostart: bool = field(default=True, metadata=_meta("start the guest when dom0 boots"))
    order: int = field(
        default=50, metadata=_meta("start order: lower starts first, equal ones by name", min=0, max=999)
    )
    network: bool = field(default=True, metadata=_meta("give the guest a NIC on dom0's bridge"))
    on_poweroff: GuestAction = field(
        default=GuestAction.DESTROY, metadata=_meta("what Xen does when the guest powers off")
    )
    on_reboot: GuestAction = field(default=GuestAction.RESTART, metadata=_meta("what Xen does when the guest reboots"))
    on_crash: GuestAction = field(default=GuestAction.DESTROY, metadata=_meta("what Xen does when the guest crashes"))
    ready: str = field(
        default="",
        metadata=_meta(
            "an extended regular expression; XENLIVE-READY waits until the guest's console shows it",
            pattern=READY_PATTERN,
        ),
    )
    ready_timeout: int = field(default=600, metadata=_meta("seconds XENLIVE-READY waits for `ready`", min=1, max=7200))

    @property
    def has_disk(self) -> bool:
        """Whether the guest gets a writable disk (and so a RAM write buffer in dom0)."""
        return self.kind == GuestKind.DEBIAN or self.disk is not None


def _check_guests(profile: Profile, root: yaml.Node) -> list[str]:
    """Guest rules that span fields or read files, so bad guests fail before the hour-long steps.

    Files given by path must exist and match their sha256 (a disk image copied from the wrong
    place otherwise boots, or fails, only on the target); each kind accepts only its own keys.
    """
    problems: list[str] = []

    def err(message: str, i: int, *keys: str) -> None:
        where = ".".join([f"guests[{i}]", *keys])
        problems.append(_format(_at(root, "guests", i, *keys), where, message))

    medium_bytes = 0
    for i, g in enumerate(profile.guests):
        given = {k for k in ("kernel", "initrd") if getattr(g, k) not in ("dom0", "busybox")}
        if g.kind == GuestKind.BUSYBOX:
            for key in ("disk", "cdrom"):
                if getattr(g, key) is not None:
                    err(f"a busybox guest has no {key}; use kind: image", i, key)
            if g.overlay is not None and not (profile.base_dir / g.overlay).is_dir():
                err(f"overlay directory not found: {g.overlay}", i, "overlay")
        elif g.kind == GuestKind.DEBIAN:
            for key in sorted(given) + [k for k in ("disk", "cdrom", "overlay") if getattr(g, k) is not None]:
                err("a debian guest boots the kernel, initrd and disk built from its own tree; remove this key", i, key)
            if g.type == GuestType.HVM:
                err("a debian guest boots its own kernel directly: type pv or pvh", i, "type")
            if g.debian.address and g.debian.dhcp:
                err("give either dhcp: true or a static address", i, "debian", "address")
        elif g.kind == GuestKind.IMAGE:
            if g.type == GuestType.HVM:
                if g.disk is None and g.cdrom is None:
                    err("an hvm image guest needs a disk or a cdrom to boot from", i)
            else:
                if "kernel" not in given:
                    err("an image guest of type pv or pvh needs kernel: a path to its kernel", i, "kernel")
                if g.cdrom is not None:
                    err("cdrom is for type hvm guests", i, "cdrom")
            if g.overlay is not None:
                err("overlay is for busybox guests", i, "overlay")
        for key in ("kernel", "initrd", "disk", "cdrom"):
            value = getattr(g, key)
            if value is None or (key in ("kernel", "initrd") and key not in given):
                continue
            path = profile.base_dir / value
            expected = getattr(g, f"{key}_sha256")
            if not path.is_file():
                if key in ("disk", "cdrom"):  # kernel and initrd are reported by _check_semantics
                    err(f"file not found: {value}", i, key)
                continue
            medium_bytes += path.stat().st_size
            if not expected:
                if g.kind == GuestKind.IMAGE:
                    err(f"{key}_sha256 is required with {key} (sha256sum prints it)", i, key)
                continue
            actual = sha256_file(path)
            if actual != expected:
                err(f"{value}: sha256 is {actual}, the profile says {expected}", i, f"{key}_sha256")
        if g.kind == GuestKind.DEBIAN:
            medium_bytes += g.debian.disk_size << 20
        limit = profile.media.size_limit
        if limit is not None and medium_bytes > limit:
            key = next((k for k in ("disk", "cdrom") if getattr(g, k) is not None), "")
            key = key or ("debian" if g.kind == GuestKind.DEBIAN else "")
            message = (
                f"the guests' files come to {medium_bytes} bytes by here, more than media.size_limit ({limit} bytes)"
            )
            err(message, i, *([key] if key else []))
            medium_bytes = -(1 << 62)  # report it once
        if g.ready:
            try:
                re.compile(g.ready)
            except re.error as e:
                err(f"not a regular expression: {e}", i, "ready")
    return problems


@dataclass(frozen=True, kw_only=True)
class Checks:
    """Hardware-compatibility checks (builder/checks/): which machines a build is checked against."""

    targets: tuple[str, ...] = field(
        default=(),
        metadata=_meta("hardware database names the build is checked against (default: qemu-bios, qemu-uefi)"),
    )
    skip: tuple[str, ...] = field(default=(), metadata=_meta("check ids not to run (see `xenlive check --list`)"))


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A whole appliance: the medium, Xen, dom0 and the guests."""

    name: str = field(metadata=_meta("profile name", pattern=XEN_NAME))
    description: str = field(default="", metadata=_meta("one line about the appliance"))
    extends: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "parent profiles (files relative to this one, or built-in names), merged in order before this file:"
            " maps merge key by key, lists replace, and a key written `KEY+` appends to the inherited list",
            resolved=True,
            scalar_ok=True,
        ),
    )
    vars: dict[str, Any] = field(
        default_factory=dict, metadata=_meta("values for templates, available as `vars.NAME`", mapping=True)
    )
    media: Media = field(default_factory=Media, metadata=_meta("the ISO medium"))
    xen: Xen = field(default_factory=Xen, metadata=_meta("the Xen hypervisor"))
    dom0: Dom0 = field(default_factory=Dom0, metadata=_meta("the live Debian control domain"))
    guests: tuple[Guest, ...] = field(default=(), metadata=_meta("guest domains carried on the medium"))
    checks: Checks = field(default_factory=Checks, metadata=_meta("hardware-compatibility checks at build time"))
    source: Path | None = field(default=None, metadata=_meta("file the profile was read from", internal=True))

    @property
    def base_dir(self) -> Path:
        """Relative paths in the model (overlays, templates, guest files) are relative to this."""
        return self.source.parent if self.source else Path.cwd()


_UNREADABLE = object()  # what _Converter.construct returns after reporting an unreadable value


class _Converter:
    """Turns composed YAML nodes into the dataclasses, collecting every problem it finds.

    Paths are rebased onto the directory of the profile being loaded (`root_dir`), kept relative
    as written, so `xenlive show` and the build id do not depend on where the checkout lives.
    """

    def __init__(self, root_dir: Path, file_dirs: dict[str, Path]) -> None:
        self.root_dir = root_dir
        self.file_dirs = file_dirs
        self.problems: list[str] = []
        self.constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(_format(node, path, message))

    def convert(self, node: yaml.Node, tp: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            if isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null":
                return None  # an optional field written as null: its default
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
            origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.convert_dataclass(node, tp, path)
        if meta.get("mapping"):
            return self.convert_vars(node, path)
        if origin is tuple:
            if meta.get("scalar_ok") and isinstance(node, yaml.ScalarNode):
                node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)
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
        if meta.get("file_mode"):
            return self.convert_mode(node, path)
        value = self.construct(node, path)
        if value is _UNREADABLE:
            return None
        return self.convert_scalar(node, value, tp, path, meta)

    def construct(self, node: yaml.Node, path: str, deep: bool = False) -> Any:
        """The node's Python value; an unknown tag (`!!foo`) is the user's error, not a crash."""
        try:
            return self.constructor.construct_object(node, deep=deep)
        except yaml.YAMLError as e:
            self.error(node, path, f"cannot read this value: {getattr(e, 'problem', None) or e}")
            return _UNREADABLE

    def convert_vars(self, node: yaml.Node, path: str) -> dict[str, Any] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or not VAR_NAME.match(key):
                self.error(key_node, path, f"variable names are identifiers like site_name, got {_describe(key_node)}")
                continue
            value = self.construct(value_node, f"{path}.{key}", deep=True)
            if value is _UNREADABLE:
                continue
            odd = _non_json(value)
            if odd is not None:
                self.error(value_node, f"{path}.{key}", f"expected text, numbers, true/false, lists and maps, got {odd}"
                           " (quote it to make it text)")  # fmt: skip
                continue
            result[key] = value
        return result

    def convert_mode(self, node: yaml.ScalarNode, path: str) -> str | None:
        """Read the mode from the raw text: YAML 1.1 turns 0644 into 420 and 644 into 644, a trap."""
        text = str(node.value)
        if not FILE_MODE.match(text):
            self.error(node, path, f'expected an octal mode like "0644", got {text!r}')
            return None
        return text.rjust(4, "0")

    def convert_scalar(self, node: yaml.Node, value: Any, tp: Any, path: str, meta: typing.Mapping[str, Any]) -> Any:
        if meta.get("size"):
            size = parse_size_mib(value)
            if size is None:
                self.error(node, path, f'expected a size in MiB or like "256M", "1G", got {value!r}')
            elif size < meta.get("min", 0):
                self.error(node, path, f"expected at least {meta['min']} MiB, got {size} MiB")
            return size
        if meta.get("media_size"):
            size = parse_media_size(value)
            if size is None:
                names = ", ".join(MEDIA_SIZES)
                self.error(node, path, f"expected {names} or a number of bytes, got {value!r}")
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
                return None
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
            if meta.get("password") and not PASSWORD.match(value):
                self.error(
                    node, path, 'a plain-text password is refused; give a crypt hash (mkpasswd -m yescrypt) or "!"'
                )
                return value
            pattern = meta.get("pattern")
            if pattern is not None and not pattern.match(value):
                self.error(node, path, f"{value!r} is not valid: {meta['help']}")
            if tp is Path:
                return self.rebase(node, path, value)
            return value
        raise TypeError(f"unsupported field type {tp!r}")  # a bug in the model, not the user's fault

    def rebase(self, node: yaml.Node, path: str, value: str) -> Path | None:
        """A path written in some file of the extends chain, made relative to the loaded profile."""
        if not value or os.path.isabs(value):
            self.error(node, path, f"expected a path relative to the profile, got {value!r}")
            return None
        here = self.file_dirs.get(node.start_mark.name, self.root_dir)
        return Path(os.path.normpath(os.path.relpath(here / value, self.root_dir)))

    def convert_dataclass(self, node: yaml.Node, cls: Any, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {_describe(node)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.error(key_node, path, "keys must be strings")
                continue
            if key not in fields:
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
                self.error(key_node, sub, f"unknown key{hint}")
                continue
            if fields[key].metadata.get("resolved"):
                continue
            kwargs[key] = self.convert(value_node, hints[key], sub, fields[key].metadata)
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(node, path, f"missing required key {name!r}")
        if self.problems:
            return None
        return cls(**{k: v for k, v in kwargs.items() if v is not None})


def _non_json(value: Any) -> str | None:
    """What in a vars value would not survive JSON (the build id hashes the profile as JSON), if anything."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next((odd for odd in map(_non_json, value) if odd), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "a map with keys that are not text"
        return next((odd for odd in map(_non_json, value.values()) if odd), None)
    return f"a {type(value).__name__} ({value!r})"


def _format(node: yaml.Node, path: str, message: str) -> str:
    mark = node.start_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}"
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


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


def parse_media_size(value: Any) -> int | None:
    """A disc name from MEDIA_SIZES or a positive number of bytes."""
    if isinstance(value, str) and value in MEDIA_SIZES:
        return MEDIA_SIZES[value]
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    return None


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


def resolve_profile_path(spec: str | Path | None, base: Path | None = None) -> Path:
    """A path as given (relative to `base` when set), or the name of a built-in profile (profiles/NAME.yaml)."""
    if spec is None:
        return BUILTIN_PROFILES / "default.yaml"
    path = Path(base, spec) if base is not None else Path(spec)
    if not path.exists() and re.fullmatch(r"[A-Za-z0-9_-]+", str(spec)):
        builtin = BUILTIN_PROFILES / f"{spec}.yaml"
        if builtin.exists():
            return builtin
    return path


def _display(path: Path) -> str:
    """How a file is named in messages: as given when relative, else relative to cwd when inside it."""
    if not path.is_absolute():
        return os.path.normpath(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def compose_file(path: Path, name: str, what: str, max_bytes: int, hint: str | None = None) -> yaml.Node:
    """Read and compose one YAML file (a profile, a hardware description) for the converter.

    Every node's mark names the file, aliases are counted as if expanded (billion laughs), and
    each way the file itself can be wrong raises ProfileError naming it.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ProfileError([f"{name}: {what} not found"], hint=hint) from None
    except IsADirectoryError:
        raise ProfileError([f"{name}: is a directory, not a {what}"]) from None
    except OSError as e:
        raise ProfileError([f"{name}: cannot read {what}: {e.strerror}"]) from None
    if len(data) > max_bytes:
        raise ProfileError([f"{name}: {what} is {len(data)} bytes, more than the {max_bytes} allowed"])
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as e:
        raise ProfileError([f"{name}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ProfileError([f"{where}: YAML syntax error: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ProfileError([f"{name}: YAML error: {e}"]) from None
    if root is None:
        raise ProfileError([f"{name}: the {what} is empty"])
    _refuse_alias_bombs(root, name)
    _name_marks(root, name)
    return root


class _Loader:
    """Reads a profile and its parents into one merged node tree, collecting problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.file_dirs: dict[str, Path] = {}

    def read(self, path: Path, name: str) -> yaml.Node:
        """Compose one file; a problem here stops that file (there is no tree to look at)."""
        root = compose_file(path, name, "profile", MAX_PROFILE_BYTES, hint="give a profile file or a built-in name")
        self.file_dirs[name] = path.resolve().parent
        return root


    def load(self, path: Path, name: str, chain: list[Path]) -> yaml.Node:
        """The file's tree with its parents merged under it (cycle-checked via `chain`)."""
        root = self.read(path, name)
        if not isinstance(root, yaml.MappingNode):
            return root
        self.check_duplicates(root, "")
        merged: yaml.MappingNode | None = None
        extends = _child(root, "extends")
        for spec_node in _extends_entries(extends, self):
            spec = str(spec_node.value)
            parent = resolve_profile_path(spec, path.parent)
            resolved = parent.resolve()
            if resolved in chain:
                cycle = " -> ".join(_display(p) for p in [*chain[chain.index(resolved) :], resolved])
                self.problems.append(_format(spec_node, "extends", f"extends cycle: {cycle}"))
                continue
            if not parent.is_file():
                self.problems.append(_format(spec_node, "extends", f"parent profile not found: {spec}"))
                continue
            if len(chain) >= MAX_PARENTS:
                self.problems.append(_format(spec_node, "extends", f"more than {MAX_PARENTS} levels of extends"))
                continue
            try:
                tree = self.load(parent, _display(parent), [*chain, resolved])
            except ProfileError as e:
                self.problems.extend(e.problems)
                continue
            if not isinstance(tree, yaml.MappingNode):
                self.problems.append(_format(spec_node, "extends", f"parent profile {spec} is not a mapping"))
                continue
            merged = tree if merged is None else _merge(merged, tree, self)
        own = yaml.MappingNode(root.tag, [(k, v) for k, v in root.value if getattr(k, "value", None) != "extends"],
                               root.start_mark, root.end_mark)  # fmt: skip
        return _merge(merged, own, self) if merged is not None else _merge(_empty_like(root), own, self)

    def check_duplicates(self, node: yaml.Node, path: str) -> None:
        """The YAML parser keeps the last of two equal keys silently; a profile is refused instead."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = getattr(key_node, "value", None)
                sub = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    if key in seen:
                        line = seen[key].start_mark.line + 1
                        self.problems.append(_format(key_node, sub, f"duplicate key (first given on line {line})"))
                    seen.setdefault(key, key_node)
                self.check_duplicates(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.check_duplicates(item, f"{path}[{i}]")


def _extends_entries(node: yaml.Node | None, loader: _Loader) -> list[yaml.ScalarNode]:
    if node is None:
        return []
    items = [node] if isinstance(node, yaml.ScalarNode) else node.value if isinstance(node, yaml.SequenceNode) else None
    if items is None:
        loader.problems.append(_format(node, "extends", "expected a profile name or a list of them, got a mapping"))
        return []
    good = []
    for i, item in enumerate(items):
        if isinstance(item, yaml.ScalarNode) and isinstance(item.value, str) and item.value:
            good.append(item)
        else:
            loader.problems.append(_format(item, f"extends[{i}]", f"expected a profile name, got {_describe(item)}"))
    return good


def _empty_like(node: yaml.MappingNode) -> yaml.MappingNode:
    return yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)


def _merge(base: yaml.MappingNode, over: yaml.MappingNode, loader: _Loader, path: str = "") -> yaml.MappingNode:
    """`over` on top of `base`: maps merge key by key, anything else replaces; `KEY+: [...]` appends.

    Duplicate keys were reported before; the first of each wins here, as in the report.
    """
    entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
    others: list[tuple[yaml.Node, yaml.Node]] = []
    for key_node, value_node in base.value:
        key = getattr(key_node, "value", None)
        if isinstance(key, str):
            entries.setdefault(key, (key_node, value_node))
        else:
            others.append((key_node, value_node))
    seen: set[str] = set()
    for key_node, value_node in over.value:
        key = getattr(key_node, "value", None)
        if not isinstance(key, str):
            others.append((key_node, value_node))
            continue
        if key in seen:
            continue
        seen.add(key)
        sub = f"{path}.{key}" if path else key
        if key.endswith("+") and len(key) > 1:
            name = key[:-1]
            if not isinstance(value_node, yaml.SequenceNode):
                loader.problems.append(_format(value_node, sub, f"{key} appends a list, got {_describe(value_node)}"))
                continue
            old = entries.get(name)
            old_items = old[1].value if old and isinstance(old[1], yaml.SequenceNode) else []
            plain_key = yaml.ScalarNode("tag:yaml.org,2002:str", name, key_node.start_mark, key_node.end_mark)
            joined = yaml.SequenceNode(value_node.tag, [*old_items, *value_node.value],
                                       value_node.start_mark, value_node.end_mark)  # fmt: skip
            entries[name] = (old[0] if old else plain_key, joined)
            continue
        old = entries.get(key)
        if old and isinstance(old[1], yaml.MappingNode) and isinstance(value_node, yaml.MappingNode):
            entries[key] = (key_node, _merge(old[1], value_node, loader, sub))
        elif isinstance(value_node, yaml.MappingNode):
            entries[key] = (key_node, _merge(_empty_like(value_node), value_node, loader, sub))
        else:
            entries[key] = (key_node, value_node)
    return yaml.MappingNode(over.tag, [*entries.values(), *others], over.start_mark, over.end_mark)


def _name_marks(root: yaml.Node, name: str) -> None:
    """Stamp every node with its file's name, so errors in merged trees still name the right file."""
    stack = [root]
    seen: set[int] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        node.start_mark.name = name
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend((key, value))


def load_profile(spec: str | Path | None) -> Profile:
    """Read, validate and finalize a profile; raise ProfileError listing every problem."""
    path = resolve_profile_path(spec)
    name = str(path) if spec is not None else _display(path)
    loader = _Loader()
    root = loader.load(path, name, [path.resolve()])
    if not isinstance(root, yaml.MappingNode):
        raise ProfileError([*loader.problems, _format(root, "", f"expected a mapping, got {_describe(root)}")])
    conv = _Converter(path.resolve().parent, loader.file_dirs)
    profile = conv.convert(root, Profile, "", {})
    problems = loader.problems + conv.problems
    if profile is not None and not problems:
        profile = dataclasses.replace(profile, source=path.resolve())
        problems += _check_semantics(profile, root)
    if problems or profile is None:
        raise ProfileError(problems)
    profile = finalize(profile)
    template_problems = check_templates(profile, root)
    if template_problems:
        raise ProfileError(template_problems)
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


def _at(root: yaml.Node, *keys: str | int) -> yaml.Node:
    """The node at a key path, or the deepest existing one (errors then point near the cause)."""
    node = root
    for key in keys:
        if isinstance(key, int):
            ok = isinstance(node, yaml.SequenceNode) and key < len(node.value)
            nxt = node.value[key] if ok else None
        else:
            nxt = _child(node, key)
        if nxt is None:
            return node
        node = nxt
    return node


def base_packages() -> list[str]:
    """xenlive's own dom0 package list (builder/data/dom0-packages.txt)."""
    text = resources.files("builder").joinpath("data/dom0-packages.txt").read_text()
    return [p for p in (line.split("#")[0].strip() for line in text.splitlines()) if p]


def _check_semantics(profile: Profile, root: yaml.Node) -> list[str]:
    """Rules that span fields or look at files: unique names, files that exist, overlays that stay inside."""
    problems: list[str] = []

    def err(message: str, path: str, *keys: str | int) -> None:
        problems.append(_format(_at(root, *keys), path, message))

    names: dict[str, int] = {}
    for i, guest in enumerate(profile.guests):
        if guest.name in names:
            err(f"duplicate guest name {guest.name!r} (also guests[{names[guest.name]}])", f"guests[{i}].name",
                "guests", i, "name")  # fmt: skip
        names.setdefault(guest.name, i)
        for key in ("kernel", "initrd"):
            value = getattr(guest, key)
            if value not in ("dom0", "busybox") and not (profile.base_dir / value).is_file():
                err(f"file not found: {value}", f"guests[{i}].{key}", "guests", i, key)
        if guest.kernel == "busybox" or guest.initrd == "dom0":
            err('kernel may be "dom0" or a path, initrd "busybox" or a path', f"guests[{i}]", "guests", i)
    users: dict[str, int] = {}
    uids: dict[int, int] = {}
    for i, user in enumerate(profile.dom0.users):
        if user.name in users:
            err(f"duplicate user name {user.name!r} (also dom0.users[{users[user.name]}])", f"dom0.users[{i}].name",
                "dom0", "users", i, "name")  # fmt: skip
        users.setdefault(user.name, i)
        if user.uid is not None:
            if user.uid in uids:
                err(f"uid {user.uid} is also dom0.users[{uids[user.uid]}]'s", f"dom0.users[{i}].uid",
                    "dom0", "users", i, "uid")  # fmt: skip
            uids.setdefault(user.uid, i)
            if user.name == "root":
                err("root's uid is always 0", f"dom0.users[{i}].uid", "dom0", "users", i, "uid")
    base = set(base_packages())
    for i, package in enumerate(profile.dom0.remove_packages):
        if package in base:
            err(f"{package!r} is part of xenlive's own dom0 and cannot be removed", f"dom0.remove_packages[{i}]",
                "dom0", "remove_packages", i)  # fmt: skip
    for i, overlay in enumerate(profile.dom0.overlays):
        where = f"dom0.overlays[{i}]"
        directory = profile.base_dir / overlay
        if not directory.is_dir():
            err(f"overlay directory not found: {overlay}", where, "dom0", "overlays", i)
            continue
        for problem in overlay_escapes(directory):
            err(problem, where, "dom0", "overlays", i)
    paths: dict[str, int] = {}
    for i, entry in enumerate(profile.dom0.files):
        where = f"dom0.files[{i}]"
        if (entry.content is None) == (entry.template is None):
            err("give exactly one of content and template", where, "dom0", "files", i)
        if entry.template is not None and not (profile.base_dir / entry.template).is_file():
            err(f"template not found: {entry.template}", f"{where}.template", "dom0", "files", i, "template")
        if entry.path in paths:
            err(f"{entry.path} is also written by dom0.files[{paths[entry.path]}]", f"{where}.path",
                "dom0", "files", i, "path")  # fmt: skip
        paths.setdefault(entry.path, i)
        owner = entry.owner.split(":")[0]
        if owner not in users and owner not in SYSTEM_ACCOUNTS:
            err(f"owner {owner!r} is neither root, a system account nor one of dom0.users", f"{where}.owner",
                "dom0", "files", i, "owner")  # fmt: skip
    problems += _check_guests(profile, root)
    return problems


# Accounts every Debian base system has (base-passwd); a file may belong to one of these.
SYSTEM_ACCOUNTS = frozenset(
    "root daemon bin sys sync games man lp mail news uucp proxy www-data backup list irc _apt nobody".split()
)


def overlay_escapes(root: Path) -> list[str]:
    """What in an overlay tree could reach outside it.

    Symlinks are copied as links and resolved later inside dom0, so an absolute target names a dom0
    path and is fine; a relative target that climbs above the overlay's root is an escape. Device
    nodes, fifos and sockets have no place in an overlay.
    """
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(filenames + dirnames):
            item = here / name
            rel = item.relative_to(root).as_posix()
            if item.is_symlink():
                target = os.readlink(item)
                if not target.startswith("/"):
                    joined = os.path.normpath(PurePosixPath("/", rel).parent / target)
                    if joined.startswith("//") or not _inside(rel, target):
                        problems.append(f"symlink {rel} -> {target} points outside the overlay")
            elif not (item.is_file() or item.is_dir()):
                problems.append(f"{rel}: overlays may hold only files, directories and symlinks")
    return problems


def _inside(rel: str, target: str) -> bool:
    """Whether a relative link at `rel` stays inside its tree, checked without touching the disk."""
    depth = len(PurePosixPath(rel).parts) - 1
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


def finalize(profile: Profile) -> Profile:
    """Derived defaults, in one place: the packages and services that the dom0 settings need."""
    dom0 = profile.dom0
    wanted = list(dom0.packages)
    if dom0.locale not in ("C", "POSIX", "C.UTF-8"):
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
    return dataclasses.replace(profile, dom0=dom0)


def template_context(profile: Profile) -> dict[str, Any]:
    """What every template sees: the profile, its vars, and the names of the autostarted guests."""
    return {
        "profile": profile,
        "vars": profile.vars,
        "autostart": [g.name for g in profile.guests if g.autostart],
    }


def profile_templates(profile: Profile) -> list[tuple[Path, tuple[str | int, ...], str]]:
    """Every user template with the key path that brings it in: overlays' *.j2 and files[].template."""
    found: list[tuple[Path, tuple[str | int, ...], str]] = []
    for i, overlay in enumerate(profile.dom0.overlays):
        for path in sorted((profile.base_dir / overlay).rglob("*.j2")):
            if path.is_file() and not path.is_symlink():
                found.append((path, ("dom0", "overlays", i), f"dom0.overlays[{i}]"))
    for i, entry in enumerate(profile.dom0.files):
        if entry.template is not None:
            keys: tuple[str | int, ...] = ("dom0", "files", i, "template")
            found.append((profile.base_dir / entry.template, keys, f"dom0.files[{i}].template"))
    return found


def check_templates(profile: Profile, root: yaml.Node) -> list[str]:
    """Render every template now, so a typo fails in a second instead of after the dom0 build."""
    from builder.templating import render_file

    context = template_context(profile)
    problems = []
    for path, keys, where in profile_templates(profile):
        try:
            render_file(path, **context)
        except TemplateError as e:
            problems.append(f"{_format(_at(root, *keys), where, 'template error')}: {_relative_template(e.message)}")
    return problems


def _relative_template(message: str) -> str:
    """Template errors name the template by absolute path; show it relative to cwd when inside."""
    head, sep, rest = message.partition(":")
    return f"{_display(Path(head))}{sep}{rest}" if sep and os.path.isabs(head) else message


def _child(node: yaml.Node | None, key: str) -> Any:
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v
    return None


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
