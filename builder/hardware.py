"""The hardware database: one YAML file per target machine, validated like a profile.

Why a database: the whole point of checking at build time is to know, before a CD is burned,
whether the machine it is meant for can run Xen, dom0 and each guest. That needs a description
of the machine that does not depend on being able to boot it. The descriptions are data
(builder/data/hardware/*.yaml, plus the user's own directories), never code.

A file's name (without .yaml) is the target's name. A mistake in a hardware file is reported
the way a profile's is: file:line:column: key.path: message, every problem at once.
"""

from __future__ import annotations

import enum
import os
import re
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from builder.errors import ProfileError, UsageError
from builder.profile.model import CMDLINE, TARGET_NAME, Firmware
from builder.yamlconv import Converter, compose_file, format_problem, node_at

PCI_ID = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
CLASS_CODE = re.compile(r"[0-9a-f]{4}([0-9a-f]{2})?")
ISSUE_ID = re.compile(r"[a-z0-9][a-z0-9-]{1,62}")
MAX_FILE_BYTES = 256 * 1024
# Text for people (descriptions, names): one line, no control characters, so that printing it can
# never drive the terminal of whoever lists or checks a stranger's hardware file.
TEXT = re.compile(r"[^\x00-\x1f\x7f-\x9f]{0,500}")
TEXT_INVALID = "expected one line of text without control characters, at most 500 characters"

# The QEMU machines `xenlive test` boots; a build checks against these unless the profile names others.
# (qemu-uefi-ia32, the machine of `--firmware uefi-ia32`, is in the database but not a default target:
# Xen cannot start there, so every image would fail its check.)
QEMU_TARGETS = ("qemu-bios", "qemu-uefi")


class Arch(enum.StrEnum):
    X86_64 = "x86_64"
    I686 = "i686"


class DeviceKind(enum.StrEnum):
    """What a PCI device is for; derived from the base class code (the first two hex digits)."""

    STORAGE = "storage"
    NETWORK = "network"
    DISPLAY = "display"
    MULTIMEDIA = "multimedia"
    BRIDGE = "bridge"
    SERIAL_BUS = "serial-bus"
    OTHER = "other"


_BASE_CLASS_KIND = {"01": DeviceKind.STORAGE, "02": DeviceKind.NETWORK, "03": DeviceKind.DISPLAY,
                    "04": DeviceKind.MULTIMEDIA, "06": DeviceKind.BRIDGE, "0c": DeviceKind.SERIAL_BUS,
                    "0d": DeviceKind.NETWORK}  # fmt: skip


def _meta(help: str, **kw: Any) -> dict[str, Any]:
    return {"help": help, **kw}


@dataclass(frozen=True, kw_only=True)
class Cpu:
    model: str = field(metadata=_meta("CPU model as /proc/cpuinfo names it", pattern=TEXT, invalid=TEXT_INVALID))
    arch: Arch = field(metadata=_meta("widest mode the CPU runs: x86_64 (has lm) or i686"))
    threads: int | None = field(metadata=_meta("hardware threads (logical CPUs) in the machine", min=1, max=8192))
    flags: tuple[str, ...] = field(
        default=(), metadata=_meta("relevant /proc/cpuinfo flags: lm pae nx vmx svm ept npt ...")
    )


@dataclass(frozen=True, kw_only=True)
class MachineFirmware:
    """The boot firmware: one kind per machine, and for UEFI whether it can also boot BIOS media."""

    type: Firmware | None = field(
        metadata=_meta(
            "the firmware: bios, uefi (64-bit UEFI) or uefi-ia32 (32-bit UEFI, as on Bay Trail tablets and the"
            " first Intel Macs, whatever the CPU); null when not known",
            replaces={
                "modes": "firmware.modes is now firmware.type (one of bios, uefi, uefi-ia32) and, for a UEFI"
                " machine that can also boot legacy BIOS media, csm: true",
            },
        )
    )
    csm: bool | None = field(
        default=False,
        metadata=_meta(
            'a UEFI firmware can also boot BIOS media (a Compatibility Support Module: "legacy boot" or "CSM"'
            " in the setup, Boot Camp's BIOS emulation on Intel Macs); null when not known"
        ),
    )
    secure_boot: bool | None = field(default=False, metadata=_meta("UEFI Secure Boot is on (and cannot be turned off)"))


@dataclass(frozen=True, kw_only=True)
class Dmi:
    """Who made the machine and what model it is, as its firmware's DMI (SMBIOS) tables say."""

    vendor: str = field(
        default="", metadata=_meta("the maker (/sys/class/dmi/id/sys_vendor)", pattern=TEXT, invalid=TEXT_INVALID)
    )
    product: str = field(
        default="", metadata=_meta("the model (/sys/class/dmi/id/product_name)", pattern=TEXT, invalid=TEXT_INVALID)
    )


@dataclass(frozen=True, kw_only=True)
class PciDevice:
    id: str = field(metadata=_meta('vendor:device in lower-case hex, like "8086:27a2"', pattern=PCI_ID))
    class_code: str = field(metadata=_meta('PCI class, subclass (and prog-if) in hex, like "0300"', pattern=CLASS_CODE))
    name: str = field(default="", metadata=_meta("what the device is, for people", pattern=TEXT, invalid=TEXT_INVALID))

    @property
    def kind(self) -> DeviceKind:
        if self.class_code.startswith("0280"):
            return DeviceKind.NETWORK  # wireless
        return _BASE_CLASS_KIND.get(self.class_code[:2], DeviceKind.OTHER)

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


@dataclass(frozen=True, kw_only=True)
class KnownIssue:
    id: str = field(metadata=_meta("kebab-case id of the issue", pattern=ISSUE_ID))
    summary: str = field(metadata=_meta("what goes wrong", pattern=TEXT, invalid=TEXT_INVALID))
    workaround: str = field(metadata=_meta("what the user can do about it", pattern=TEXT, invalid=TEXT_INVALID))
    devices: tuple[str, ...] = field(
        default=(),
        metadata=_meta("PCI vendor:device ids the issue applies to (empty: the machine itself)", pattern=PCI_ID),
    )
    xen_cmdline: str = field(
        default="",
        metadata=_meta(
            "Xen options that work around the issue, e.g. efi=no-rs or iommu=no-igfx; a profile applies them"
            " with checks.target_options",
            pattern=CMDLINE,
        ),
    )
    dom0_cmdline: str = field(
        default="",
        metadata=_meta(
            "dom0 (Linux) kernel options that work around the issue, e.g. intel_idle.max_cstate=1", pattern=CMDLINE
        ),
    )

    @property
    def has_options(self) -> bool:
        return bool(self.xen_cmdline or self.dom0_cmdline)


@dataclass(frozen=True, kw_only=True)
class Target:
    """One machine an image may be run on."""

    description: str = field(
        metadata=_meta("the machine, for people: maker, model, year", pattern=TEXT, invalid=TEXT_INVALID)
    )
    year: int | None = field(default=None, metadata=_meta("year the machine came out", min=1990, max=2100))
    dmi: Dmi | None = field(
        default=None, metadata=_meta("maker and model as the firmware reports them (machine reports carry them)")
    )
    cpu: Cpu = field(metadata=_meta("the processor"))
    memory: int | None = field(metadata=_meta("installed RAM in MiB (or a size like 2G)", size=True, min=16))
    firmware: MachineFirmware = field(metadata=_meta("the boot firmware"))
    iommu: bool | None = field(default=False, metadata=_meta("VT-d or AMD-Vi is present and enabled"))
    pci: tuple[PciDevice, ...] = field(default=(), metadata=_meta("PCI devices that matter: storage, network, display"))
    known_issues: tuple[KnownIssue, ...] = field(default=(), metadata=_meta("problems known on this machine"))
    name: str = field(default="", metadata=_meta("target name (the file name)", internal=True))
    source: Path | None = field(default=None, metadata=_meta("file read from", internal=True))

    @property
    def flags(self) -> frozenset[str]:
        return frozenset(self.cpu.flags)

    @property
    def has_virt(self) -> bool:
        return bool(self.flags & {"vmx", "svm"})

    @property
    def has_hap(self) -> bool:
        return bool(self.flags & {"ept", "npt"})


@dataclass(frozen=True, kw_only=True)
class KnownIssueList:
    issues: tuple[KnownIssue, ...] = field(default=(), metadata=_meta("device problems known in general"))


def hardware_dirs() -> list[Path]:
    """Where targets are looked up, later ones overriding earlier ones of the same name.

    The package's own database, then $XDG_CONFIG_HOME/xenlive/hardware (~/.config/...), then each
    directory of $XENLIVE_HARDWARE_PATH (colon-separated), so a user can describe their machines
    without touching xenlive.
    """
    dirs = [Path(str(resources.files("builder").joinpath("data/hardware")))]
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    dirs.append(Path(config) / "xenlive" / "hardware")
    dirs += [Path(p) for p in os.environ.get("XENLIVE_HARDWARE_PATH", "").split(":") if p]
    return dirs


def target_files(dirs: list[Path] | None = None) -> dict[str, Path]:
    """Every known target name and the file that describes it."""
    found: dict[str, Path] = {}
    for d in hardware_dirs() if dirs is None else dirs:
        if d.is_dir():
            for path in sorted(d.glob("*.yaml")):
                found[path.stem] = path
    return dict(sorted(found.items()))


def _compose(path: Path) -> yaml.Node:
    return compose_file(path, str(path), "hardware file", MAX_FILE_BYTES)


def load_target_file(path: Path, name: str | None = None) -> Target:
    """Read and validate one hardware file; raise ProfileError (exit 2) naming file:line: key.
    The target's name is the file's, unless `name` is given."""
    name = path.stem if name is None else name
    if not TARGET_NAME.fullmatch(name):
        raise ProfileError([f"{path}: {name!r} is not a valid target name (a-z, 0-9, '.', '_', '-')"])
    root = _compose(path)
    conv = Converter(path.parent, {})
    target: Target | None = conv.convert(root, Target, "", {})
    if conv.problems or target is None:
        raise ProfileError(conv.problems, hint="see builder/data/hardware/*.yaml for the format")
    if target.firmware.csm and target.firmware.type is Firmware.BIOS:
        node = node_at(root, ("firmware", "csm"))
        raise ProfileError([format_problem(node, "firmware.csm", "a BIOS machine has no CSM: that is a UEFI part")],
                           hint="set firmware.type to uefi or uefi-ia32, or drop csm")  # fmt: skip
    return replace(target, name=name, source=path)


def load_target(name: str, dirs: list[Path] | None = None) -> Target:
    """A target by name; an unknown name is a usage error that lists the known ones."""
    files = target_files(dirs)
    if name not in files:
        known = ", ".join(files) or "(none)"
        raise UsageError(
            f"unknown target {name!r}; known targets: {known}",
            hint="give a hardware file or machine report as --target FILE, add one with `xenlive hardware import`,"
            " or use --host",
        )
    return load_target_file(files[name])


def is_target_file(spec: str) -> bool:
    """Whether a --target value names a file (a path, or NAME.yaml) rather than a database entry."""
    return "/" in spec or spec.endswith((".yaml", ".yml"))


def name_for(text: str) -> str:
    """A target name made from any text (a file name, a maker and model): lower case, runs of
    anything else as one '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].rstrip("-") or "machine"


def load_targets(names: tuple[str, ...] | list[str], dirs: list[Path] | None = None) -> list[Target]:
    """Targets by name or file (a machine report, any hardware file); "all" stands for the whole
    database. Two files of the same name (two reports called machine.yaml) get -2, -3, ..."""
    if "all" in names:
        names = [*target_files(dirs), *(n for n in names if is_target_file(n))]
    targets: list[Target] = []
    for spec in dict.fromkeys(names):
        if not is_target_file(spec):
            targets.append(load_target(spec, dirs))
            continue
        path = Path(spec)
        if not path.is_file():
            raise UsageError(f"--target {spec}: no such file", hint="give a hardware file or a machine report")
        base = name_for(path.stem)
        taken = {t.name for t in targets} | {n for n in names if not is_target_file(n)}
        name = next(n for k in range(1, len(names) + 2) if (n := base if k == 1 else f"{base}-{k}") not in taken)
        targets.append(load_target_file(path, name))
    return targets


def target_issues(target: Target, general: tuple[KnownIssue, ...] | None = None) -> list[KnownIssue]:
    """The known issues that apply to a machine: the general ones for the PCI devices it has
    (builder/data/known-issues.yaml), then its own file's, each id once (the machine's own wins)."""
    ids = {d.id for d in target.pci}
    found = {i.id: i for i in (load_known_issues() if general is None else general) if ids & set(i.devices)}
    found.update({i.id: i for i in target.known_issues if not i.devices or ids & set(i.devices)})
    return list(found.values())


@dataclass(frozen=True)
class MachineOptions:
    """The Xen and dom0 options a machine's known issues carry, each once, in the order written."""

    xen: tuple[str, ...] = ()
    dom0: tuple[str, ...] = ()
    issues: tuple[str, ...] = ()  # ids of the issues they come from

    def __bool__(self) -> bool:
        return bool(self.xen or self.dom0)

    def describe(self) -> str:
        parts = ([f"Xen {' '.join(self.xen)}"] if self.xen else []) + (
            [f"dom0 {' '.join(self.dom0)}"] if self.dom0 else []
        )
        return "; ".join(parts)


def machine_options(target: Target, general: tuple[KnownIssue, ...] | None = None) -> MachineOptions:
    """What the target's known issues ask to add to Xen's and dom0's command lines."""
    xen: dict[str, None] = {}
    dom0: dict[str, None] = {}
    issues: list[str] = []
    for issue in target_issues(target, general):
        if issue.has_options:
            issues.append(issue.id)
            xen.update(dict.fromkeys(issue.xen_cmdline.split()))
            dom0.update(dict.fromkeys(issue.dom0_cmdline.split()))
    return MachineOptions(tuple(xen), tuple(dom0), tuple(issues))


def load_known_issues() -> tuple[KnownIssue, ...]:
    """The general list of problem devices (builder/data/known-issues.yaml)."""
    path = Path(str(resources.files("builder").joinpath("data/known-issues.yaml")))
    root = _compose(path)
    conv = Converter(path.parent, {})
    data = conv.convert(root, KnownIssueList, "", {})
    if conv.problems or data is None:
        raise ProfileError(conv.problems)
    return data.issues  # type: ignore[no-any-return]
