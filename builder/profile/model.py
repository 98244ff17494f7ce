"""The profile model: frozen dataclasses whose fields are the registry of every key.

Each field's type, default and `metadata` (help text, a full-match `pattern`, `min`/`max`) drive the
loader (builder/yamlconv.py), `xenlive show`, the JSON Schema and the reference docs
(builder/schema.py). Every string that reaches a command line, a boot menu, xl.cfg, an /etc file
or a shell script is limited here by a pattern that excludes what would change its meaning there
(newlines, quotes, option-looking values); docs/threat-model.md lists where each is used.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

XEN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}")
HOSTNAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
VOLUME_LABEL = re.compile(r"[A-Z0-9_]{1,32}")
PACKAGE = re.compile(r"[a-z0-9][a-z0-9+.-]+")
USER_NAME = re.compile(r"[a-z_][a-z0-9_-]{0,31}")
# A crypt(3) hash (yescrypt, sha512, sha256, bcrypt, md5) or "!"/"*" for a locked account.
PASSWORD = re.compile(r"(!|\*|\$(y|gy|7|6|5|2[abxy]|1)\$[./A-Za-z0-9$,=]{8,})")
SSH_KEY = re.compile(
    r"(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-[a-z0-9@.-]+) [A-Za-z0-9+/]+=*( [^\x00-\x1f\x7f]*)?"
)
LOCALE = re.compile(r"(C|POSIX|C\.UTF-8|[a-z]{2,3}_[A-Z]{2}(\.UTF-8)?(@[a-z]+)?)")
TIMEZONE = re.compile(r"(UTC|[A-Z][A-Za-z_-]+(/[A-Za-z0-9_+-]+){1,2})")
XKB_NAME = re.compile(r"[a-z0-9_()+:,-]*")
IFACE = re.compile(r"([A-Za-z0-9_.*-]{1,15})?")
UNIT = re.compile(r"[A-Za-z0-9@_.:\\-]+\.(service|socket|timer|path|target|mount)")
DOM0_PATH = re.compile(r"(/(?!\.\.?(/|$))[A-Za-z0-9_@%+=,.:~-]+)+")  # no . or .. components
OWNER = re.compile(r"[a-z_][a-z0-9_-]{0,31}(:[a-z_][a-z0-9_-]{0,31})?")
FILE_MODE = re.compile(r"0?[0-7]{3}|[0-7]{4}")


# A Debian suite or codename, never an option: mmdebstrap receives it as a positional argument.
SUITE = re.compile(r"[a-z][a-z0-9-]{1,30}")
OPTIONAL_SUITE = re.compile(r"([a-z][a-z0-9-]{1,30})?")
# A plain http(s) mirror URL: no spaces, no `[option=value]` that would turn signature checks off.
MIRROR = re.compile(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~%+-]+)*/?")
# Kernel and Xen command lines: words of safe characters separated by single spaces. No quotes,
# newlines, `$`, `;`, `#` or braces (GRUB syntax), and no `---` word (mboot.c32's module separator).
CMDLINE = re.compile(r"(?!(.* )?-{3,}( |$))([A-Za-z0-9_.,:=+/@%~*-]+( [A-Za-z0-9_.,:=+/@%~*-]+)*)?")
# ISO 9660 a-characters (what a volume descriptor may hold), at most 128 of them.
PUBLISHER = re.compile(r"[A-Za-z0-9 _!%&'()*+,./:;<=>?-]{0,128}")
ONE_LINE = re.compile(r"[^\x00-\x1f\x7f]{0,200}")  # free text shown in menus and reports
GECOS = re.compile(r"[^:\x00-\x1f\x7f]{0,128}")
# Extended regular expressions that mean the same to grep -E (in dom0) and to Python: literal
# characters, `.`, bracket lists without POSIX classes, groups without `(?`, `|`, `*+?`, `{n,m}`,
# `^`/`$`, and backslash only before a punctuation character.
ERE_PORTABLE = re.compile(
    r"([^\\\x00-\x1f\x7f(){}\[\]]"  # a plain character
    r"|\\[^A-Za-z0-9\x00-\x1f\x7f]"  # an escaped punctuation character
    r"|\((?!\?)|\)"  # a group, never (?...)
    r"|\{[0-9]{1,3}(,[0-9]{0,3})?\}"  # a repeat count
    r"|\[\^?\]?[^\]\\\x00-\x1f\x7f\[]*\])*"  # a bracket list, without [:class:] or backslashes
)
CHECK_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
TARGET_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")

MAX_GUEST_MEMORY_MIB = 16 << 20  # 16 TiB, Xen's x86 maximum

# media.size_limit by name; the byte counts are the usual capacities of each disc.
MEDIA_SIZES: dict[str, int] = {
    "cd-650": 681_574_400,
    "cd-700": 737_280_000,
    "dvd-5": 4_700_372_992,
    "dvd-9": 8_543_666_176,
}

# Locales glibc has built in: nothing to install or compile for them.
BUILTIN_LOCALES = ("C", "POSIX", "C.UTF-8")

# Packages the settings need; finalize() adds them so a profile never has to know.
LOCALE_PACKAGES = ("locales",)
KEYBOARD_PACKAGES = ("keyboard-configuration", "console-setup")
SSH_PACKAGES = ("openssh-server",)
NETWORK_UNITS = ("systemd-networkd.service",)


class Firmware(enum.StrEnum):
    """A way a PC's firmware starts a medium. One enum for all three places that name one: what a
    medium carries boot loaders for (media.boot), what a machine has (hardware files' firmware.type)
    and what `xenlive test --firmware` boots with, so the check, the build and the boot test agree.
    """

    BIOS = "bios"  # legacy BIOS, or a UEFI machine's CSM: ISOLINUX from El Torito or the MBR
    UEFI = "uefi"  # x86-64 UEFI: EFI/BOOT/BOOTX64.EFI (GRUB x86_64-efi)
    UEFI_IA32 = "uefi-ia32"  # 32-bit UEFI, also on 64-bit CPUs: EFI/BOOT/BOOTIA32.EFI (GRUB i386-efi)

    @property
    def is_uefi(self) -> bool:
        return self is not Firmware.BIOS


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
    publisher: str = field(
        default="",
        metadata=_meta(
            "publisher recorded in the ISO volume descriptor: ASCII letters, digits, spaces and punctuation,"
            " at most 128",
            pattern=PUBLISHER,
        ),
    )
    boot: tuple[Firmware, ...] = field(
        default=(Firmware.BIOS, Firmware.UEFI, Firmware.UEFI_IA32),
        metadata=_meta(
            "firmware the medium carries boot loaders for: bios (ISOLINUX; also gives the medium its MBR and GPT,"
            " so a USB stick boots), uefi (64-bit UEFI, Xen or Linux) and uefi-ia32 (32-bit UEFI, where only"
            " Linux without Xen can start)",
            nonempty=True,
        ),
    )
    size_limit: int | None = field(
        default=None,
        metadata=_meta(
            "largest ISO the build may produce: cd-650, cd-700, dvd-5, dvd-9, or a number of bytes",
            media_size=MEDIA_SIZES,
            example="cd-700",
        ),
    )


@dataclass(frozen=True, kw_only=True)
class Xen:
    """The hypervisor: Xen comes from dom0's own packages, so only its command line is set here."""

    cmdline: str = field(
        default="dom0_mem=1024M,max:1024M",
        metadata=_meta("extra Xen command line; xenlive adds the serial console options", pattern=CMDLINE),
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
            invalid='a plain-text password is refused; give a crypt hash (mkpasswd -m yescrypt) or "!"',
        ),
    )
    uid: int | None = field(
        default=None, metadata=_meta("user id; default: the next free id from 1000", min=1000, max=59999)
    )
    comment: str = field(default="", metadata=_meta("full name (the GECOS field)", pattern=GECOS))
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
        default="0644", metadata=_meta('permissions in octal, written as a string: "0644"', file_mode=FILE_MODE)
    )
    owner: str = field(default="root", metadata=_meta("USER or USER:GROUP owning the file in dom0", pattern=OWNER))


@dataclass(frozen=True, kw_only=True)
class Dom0:
    """The live Debian control domain: its packages, settings, overlays and files."""

    suite: str = field(
        default="trixie",
        metadata=_meta(
            "Debian suite of dom0, whose own Xen and kernel it gets: trixie (Debian 13), bookworm"
            " (Debian 12), or another suite the mirror has with Xen and live-boot",
            pattern=SUITE,
        ),
    )
    mirror: str = field(
        default="http://deb.debian.org/debian", metadata=_meta("Debian mirror URL (http or https)", pattern=MIRROR)
    )
    packages: tuple[str, ...] = field(default=(), metadata=_meta("extra Debian packages for dom0", pattern=PACKAGE))
    remove_packages: tuple[str, ...] = field(
        default=(),
        metadata=_meta("packages taken out of `packages` (e.g. ones a parent profile added)", pattern=PACKAGE),
    )
    services: tuple[str, ...] = field(
        default=(), metadata=_meta("systemd units to enable, e.g. ssh.service", pattern=UNIT)
    )
    cmdline: str = field(default="", metadata=_meta("extra dom0 kernel command line", pattern=CMDLINE))
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
    persist: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "directories kept on a stick's persistence partition (xenlive burn --persistence), e.g. /root",
            pattern=DOM0_PATH,
        ),
    )


class Builtin(enum.StrEnum):
    """A guest file xenlive makes itself, named in place of a path (Guest.kernel, Guest.initrd)."""

    DOM0_KERNEL = "dom0"
    BUSYBOX = "busybox"


GuestFile = Builtin | Path  # a guest's kernel or initrd: one of xenlive's own, or the profile's file


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


SHA256 = re.compile(r"([0-9a-f]{64})?")
OPTIONAL_HOSTNAME = re.compile(r"([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)?")
IPV4_CIDR = re.compile(r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)/([0-9]|[12]\d|3[0-2])|")
IPV4 = re.compile(r"((25[0-5]|2[0-4]\d|1?\d?\d)\.){3}(25[0-5]|2[0-4]\d|1?\d?\d)|")
READY_PATTERN = ERE_PORTABLE


@dataclass(frozen=True, kw_only=True)
class DebianGuest:
    """A Debian system built with mmdebstrap into the guest's own ext4 disk; it boots its own kernel."""

    suite: str = field(default="", metadata=_meta("Debian suite of the guest; default: dom0's", pattern=OPTIONAL_SUITE))
    mirror: str = field(
        default="http://deb.debian.org/debian", metadata=_meta("Debian mirror URL (http or https)", pattern=MIRROR)
    )
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
        metadata=_meta(
            "size of the guest's ext4 disk in MiB (or like 512M); 0 fits the system plus 25 %", size=True, max=16 << 20
        ),
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
    memory: int = field(
        default=128,
        metadata=_meta("memory in MiB (or a size like 256M, 1G)", size=True, min=16, max=MAX_GUEST_MEMORY_MIB),
    )
    vcpus: int = field(default=1, metadata=_meta("virtual CPUs", min=1, max=128))
    kernel: GuestFile = field(
        default=Builtin.DOM0_KERNEL,
        metadata=_meta('"dom0" (the dom0 kernel) or a path to a kernel, relative to the profile', builtins=("dom0",)),
    )
    initrd: GuestFile = field(
        default=Builtin.BUSYBOX,
        metadata=_meta(
            '"busybox" (built from dom0\'s busybox) or a path, relative to the profile', builtins=("busybox",)
        ),
    )
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
    cmdline: str = field(default="console=hvc0", metadata=_meta("guest kernel command line", pattern=CMDLINE))
    write_buffer: int = field(
        default=64,
        metadata=_meta(
            "MiB of dom0 RAM that hold the writes to the guest's disk (the medium is never written);"
            " counted in the memory budget",
            size=True,
            min=1,
            max=1 << 20,
        ),
    )
    persist: bool = field(
        default=False,
        metadata=_meta("keep the disk's writes on a stick's persistence partition instead of the RAM buffer"),
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


def persists(profile: Profile) -> bool:
    """Whether the profile keeps anything on a stick's persistence partition."""
    return bool(profile.dom0.persist) or any(g.persist for g in profile.guests)


class TargetOptions(enum.StrEnum):
    """What a build does with the Xen and dom0 options its targets' known issues carry."""

    MENU = "menu"  # one more boot menu entry per target that needs options, with them
    CMDLINE = "cmdline"  # on every entry's command lines, as if written into xen.cmdline and dom0.cmdline
    NONE = "none"  # nowhere: `xenlive check` names them and warns


@dataclass(frozen=True, kw_only=True)
class Checks:
    """Hardware-compatibility checks (builder/checks/): which machines a build is checked against."""

    targets: tuple[str, ...] = field(
        default=(),
        metadata=_meta(
            "hardware database names the build is checked against (default: qemu-bios, qemu-uefi)",
            pattern=TARGET_NAME,
        ),
    )
    skip: tuple[str, ...] = field(
        default=(), metadata=_meta("check ids not to run (see `xenlive check --list`)", pattern=CHECK_ID)
    )
    target_options: TargetOptions = field(
        default=TargetOptions.MENU,
        metadata=_meta(
            "where the Xen/dom0 options that the targets' known issues carry (efi=no-rs, iommu=no-igfx, ...) go:"
            ' menu (a boot menu entry "Xen for TARGET" per target that needs some), cmdline (every entry, so every'
            " machine gets them) or none (`xenlive check` only names them)"
        ),
    )


@dataclass(frozen=True, kw_only=True)
class Profile:
    """A whole appliance: the medium, Xen, dom0 and the guests."""

    name: str = field(metadata=_meta("profile name", pattern=XEN_NAME))
    description: str = field(default="", metadata=_meta("one line about the appliance", pattern=ONE_LINE))
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
    locations: dict[str, str] = field(
        default_factory=dict,
        compare=False,
        repr=False,
        metadata=_meta("file:line:column where each key path was written, for messages", internal=True),
    )

    def where(self, key: str) -> str:
        """file:line:column of a key path ("guests[1].memory"), or of its nearest written parent."""
        probe = key
        while probe:
            if probe in self.locations:
                return self.locations[probe]
            probe = probe[: max(probe.rfind("."), probe.rfind("["), 0)]
        return self.locations.get("", str(self.source or "profile"))

    @property
    def base_dir(self) -> Path:
        """Relative paths in the model (overlays, templates, guest files) are relative to this."""
        return self.source.parent if self.source else Path.cwd()
