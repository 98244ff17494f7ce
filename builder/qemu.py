"""Booting an ISO in QEMU: firmware discovery, the command line, and boot-and-wait.

KVM is used only when a short probe shows a guest makes progress under it (on some machines
/dev/kvm opens but guests hang); otherwise TCG with a CPU model that Xen and dom0 both run on.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.bootfirmware import XEN_STARTS, firmware_name
from builder.console import CommandResult, Console, Expectations, Session, run_session
from builder.errors import BootTestFailed, MissingToolError, UsageError
from builder.machinereport import XENLIVE_LINE, ReportReader, save_report
from builder.profile.model import Firmware

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
FIRMWARE_DESCRIPTORS = Path("/usr/share/qemu/firmware")
TCG_CPU = "qemu64,+svm"  # with -cpu max Xen boots but dom0 Linux faults early (docs/architecture.md, "Boot tests")
READY_MARKER = "XENLIVE-READY "
XEN_LINE = "(XEN) "  # how each of Xen's own console lines starts
GUEST_LOG_MARKER = "XENLIVE-GUEST-LOG "  # dom0's ready service prints each guest's console log with it
MENU_COUNTDOWN = re.compile(r"Automatic boot in|executed automatically in")  # ISOLINUX's menu.c32, GRUB
GUEST_LOGS_DONE = re.compile(r"XENLIVE-GUEST-LOGS-DONE")  # ... after XENLIVE-READY, then this line
GUEST_LOGS_WAIT = 120.0  # seconds, at most, for the guests' logs after XENLIVE-READY
GUEST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a Xen domain name as xenlive allows it


class MediaKind(enum.StrEnum):
    CDROM = "cdrom"
    USB = "usb"  # the ISO as a USB disk: firmware may boot it through El Torito or its partition tables
    STICK = "stick"  # a USB disk whose El Torito record is hidden: only the partition tables boot it


@dataclass(frozen=True)
class OvmfConfig:
    code: Path
    vars_template: Path
    requires_smm: bool = False  # a Secure Boot capable build: q35 with SMM and a secured flash


# QEMU's name for the CPU architecture each UEFI firmware runs in, and the Debian package with it.
OVMF_ARCH = {Firmware.UEFI: "x86_64", Firmware.UEFI_IA32: "i386"}
OVMF_PACKAGE = {Firmware.UEFI: "ovmf", Firmware.UEFI_IA32: "ovmf-ia32"}


def find_ovmf(firmware: Firmware = Firmware.UEFI) -> OvmfConfig:
    """OVMF for `firmware` with Secure Boot off, found from QEMU's firmware descriptors.

    A build without Secure Boot is preferred. A Secure Boot capable build whose variable store
    template has no keys enrolled boots with Secure Boot off too, and is the only kind Debian ships
    for 32-bit UEFI (ovmf-ia32); it needs SMM, which its descriptor says ("requires-smm").
    """
    arch = OVMF_ARCH[firmware]
    candidates = sorted(FIRMWARE_DESCRIPTORS.glob("*.json")) if FIRMWARE_DESCRIPTORS.is_dir() else []
    fallback: OvmfConfig | None = None
    for descriptor in candidates:
        try:
            data = json.loads(descriptor.read_text())
            features = list(data.get("features", []))
            targets = list(data.get("targets", []))
            mapping = dict(data.get("mapping", {}))
            code = mapping.get("executable", {}).get("filename")
            nvram = mapping.get("nvram-template", {}).get("filename")
            interfaces = list(data.get("interface-types", []))
        except (OSError, ValueError, TypeError, AttributeError):
            log.debug("%s: unreadable firmware descriptor, skipped", descriptor)
            continue
        if "uefi" not in interfaces:
            log.debug("%s: not UEFI, skipped", descriptor)
            continue
        if not any(isinstance(t, dict) and t.get("architecture") == arch for t in targets):
            log.debug("%s: not %s, skipped", descriptor, arch)
            continue
        if "enrolled-keys" in features:
            log.debug("%s: Secure Boot keys enrolled, skipped", descriptor)
            continue
        if not isinstance(code, str) or not isinstance(nvram, str) or not Path(code).is_file() \
                or not Path(nvram).is_file():  # fmt: skip
            log.debug("%s: firmware files missing, skipped", descriptor)
            continue
        found = OvmfConfig(Path(code), Path(nvram), requires_smm="requires-smm" in features)
        if "secure-boot" not in features:
            return found
        log.debug("%s: Secure Boot capable (no keys enrolled), kept in case nothing else fits", descriptor)
        fallback = fallback or found
    if fallback is not None:
        return fallback
    raise MissingToolError(f"no {firmware_name(firmware, None)} firmware for QEMU found ({arch} OVMF)",
                           hint=f"install it with: apt-get install {OVMF_PACKAGE[firmware]}")  # fmt: skip


def require_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise MissingToolError(f"{QEMU} not found", hint="install it with: apt-get install qemu-system-x86")
    return path


def kvm_works(timeout: float = 8.0) -> bool:
    """Whether a KVM guest makes progress here: SeaBIOS must print on the serial line."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False
    cmd = [require_qemu(), "-accel", "kvm", "-cpu", "host", "-m", "64", "-nodefaults", "-vga", "none",
           "-display", "none", "-serial", "stdio", "-no-reboot"]  # fmt: skip
    with _spawn(cmd) as proc:
        output = _read_until(proc, re.compile(rb"SeaBIOS|Booting"), timeout)
    works = output is not None
    log.debug("KVM probe: %s", "works" if works else "no progress, using TCG")
    return works


@dataclass
class BootOptions:
    firmware: Firmware = Firmware.BIOS
    media: MediaKind = MediaKind.CDROM
    memory_mib: int = 2048
    cpus: int = 2
    accel: str = "auto"  # auto, kvm or tcg
    cpu: str | None = None  # QEMU -cpu model; default: host under KVM, TCG_CPU under TCG
    disks: tuple[Path, ...] = ()  # extra raw disks (writes go to a temporary snapshot)
    writable: bool = False  # a usb image keeps the guest's writes (a stick's persistence partition)
    display: bool = False  # a window instead of a headless screen
    stop: threading.Event | None = None  # set to end a headless boot early (another boot was interrupted)


def qemu_command(iso: Path, opts: BootOptions, accel: str, vars_file: Path | None,
                 qmp_socket: Path | None = None, interactive: bool = False) -> list[str]:  # fmt: skip
    """The QEMU command line; the serial console is on stdio (with the monitor on it when interactive)."""
    cmd = [require_qemu(), "-m", str(opts.memory_mib), "-smp", str(opts.cpus), "-no-reboot",
           "-display", "gtk" if opts.display else "none", "-vga", "std",
           "-serial", "mon:stdio" if interactive else "stdio"]  # fmt: skip
    if not interactive:
        cmd += ["-monitor", "none"]
    if qmp_socket is not None:
        cmd += ["-qmp", f"unix:{qmp_socket},server=on,wait=off"]
    if accel == "kvm":
        cmd += ["-accel", "kvm", "-cpu", opts.cpu or "host"]
    else:
        cmd += ["-accel", "tcg", "-cpu", opts.cpu or TCG_CPU]
    if opts.firmware.is_uefi:
        ovmf = find_ovmf(opts.firmware)
        assert vars_file is not None
        if ovmf.requires_smm:
            cmd += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
        else:
            cmd += ["-machine", "q35"]
        cmd += ["-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf.code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]  # fmt: skip
    else:
        cmd += ["-machine", "pc"]
    if opts.media == MediaKind.STICK:
        cmd += ["-S"]  # paused until hide_eltorito() has hidden the boot record in the drive's snapshot
    if opts.media == MediaKind.CDROM:
        cmd += ["-drive", f"file={iso},media=cdrom,if=none,id=boot,readonly=on",
                "-device", "ide-cd,drive=boot,bootindex=0"]  # fmt: skip
    else:
        snapshot = "off" if opts.writable else "on"
        cmd += ["-drive", f"file={iso},format=raw,if=none,id=boot,snapshot={snapshot}",
                "-device", "qemu-xhci,id=xhci",
                "-device", "usb-storage,bus=xhci.0,drive=boot,bootindex=0"]  # fmt: skip
    for i, disk in enumerate(opts.disks):
        cmd += ["-drive", f"file={disk},format=raw,if=virtio,snapshot=on,index={i + 1}"]
    return cmd


# Stages recognised on the console, in boot order: (name, pattern). "firmware" is QEMU's start.
STAGES = [
    ("firmware", re.compile(r"SeaBIOS|BdsDxe")),
    ("boot loader", re.compile(r"ISOLINUX|GRUB|Loading Xen")),
    ("xen", re.compile(r"\(XEN\) Xen version")),
    ("dom0 kernel", re.compile(r"Linux version \d")),
    ("dom0 userspace", re.compile(r"systemd\[1\]|Welcome to Debian|live-boot")),
    ("ready", re.compile(re.escape(READY_MARKER))),
]
EXPECTED_NEXT = {
    "firmware": "the boot loader (ISOLINUX on BIOS, GRUB on UEFI) to start from the medium",
    "boot loader": "Xen to start: (XEN) Xen version ...",
    "xen": "Xen to start the dom0 kernel: Linux version ...",
    "dom0 kernel": "the dom0 initramfs to find the live medium and start systemd",
    "dom0 userspace": "xendomains to start the guests and the XENLIVE-READY line",
    "ready": "every autostart guest in state running",
}
# Where Xen cannot start (32-bit UEFI), the medium boots "Linux without Xen" and the test expects that.
EXPECTED_NEXT_BARE = {
    **EXPECTED_NEXT,
    "boot loader": "GRUB to start Linux without Xen (Xen cannot start from this firmware): Linux version ...",
    "dom0 userspace": "the XENLIVE-READY line (dom0's system without Xen)",
    "ready": "dom0's system up without Xen",
}
BARE_PASS = "Linux without Xen is up: all that this firmware can start"
FAILURE_CONTEXT_SECONDS = 3.0  # after a failure line, read this long for the lines that explain it
FAILURE_CONTEXT_LINES = 2
FAILURES = [
    re.compile(r"^ERR: "),  # Xen's earliest refusals ("ERR: EFI IA-32 platforms are not supported!"), then it halts
    re.compile(r"Panic on CPU"),
    re.compile(r"Kernel panic"),
    re.compile(r"Kernel does not support Dom0"),
    re.compile(r"Unable to find a medium containing a live file system"),
]


@dataclass
class BootResult:
    passed: bool
    stage: str
    reason: str
    accel: str
    seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    ready: dict[str, object] | None = None
    tail: list[str] = field(default_factory=list)
    screenshots: list[str] = field(default_factory=list)
    expected: dict[str, float | None] = field(default_factory=dict)  # --expect pattern: when seen (None: not)
    commands: list[CommandResult] = field(default_factory=list)  # --exec results, in order
    expect_xen: bool = True  # False where the firmware cannot start Xen: Linux without Xen passes
    guest_logs: dict[str, str] = field(default_factory=dict)  # each guest's console log, saved in the report
    machine_report: dict[str, object] | None = None  # the machine dom0 described (builder/machinereport.py)
    retried: str | None = None  # why a first boot was not counted (builder/boottest.py, emulator_flake)

    @property
    def expected_next(self) -> str:
        return (EXPECTED_NEXT if self.expect_xen else EXPECTED_NEXT_BARE).get(self.stage, "")

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "stage": self.stage,
            "expected_next": None if self.passed else self.expected_next,
            "reason": self.reason,
            "accel": self.accel,
            "runs": "xen" if self.expect_xen else "linux",
            "seconds": round(self.seconds, 1),
            "stages": {k: round(v, 1) for k, v in self.stages.items()},
            "ready": self.ready,
            "tail": self.tail,
            "screenshots": self.screenshots,
            "expected": self.expected,
            "commands": [c.as_dict() for c in self.commands],
            "guest_logs": self.guest_logs,
            "machine_report": self.machine_report,
            "retried": self.retried,
        }

    def failed_guests(self) -> dict[str, dict[str, object]]:
        """The guests XENLIVE-READY gives as failed, with what it says about each."""
        guests = (self.ready or {}).get("guests")
        if not isinstance(guests, dict):
            return {}
        return {name: info for name, info in guests.items() if isinstance(info, dict) and info.get("state") == "failed"}


def ready_json(payload: str) -> tuple[str, dict[str, object] | None]:
    """The JSON object of a XENLIVE-READY line, read from what follows the marker.

    Xen writes its own lines to the same serial port as dom0 and does not wait for dom0's line to
    end (under TCG, Xen 4.20 prints "uart interrupt taking more than 4ms, switched to polling" once,
    whenever that happens): text after the object is ignored, and a line that a "(XEN) " line cut
    off comes back as the part before it, to be continued with the next line. Returns (the part to
    continue, None) for such a line, ("", the object) or ("", None) when it is not JSON."""
    try:
        value, _ = json.JSONDecoder().raw_decode(payload)
    except ValueError:
        cut = payload.find(XEN_LINE)
        return (payload[:cut], None) if cut > 0 else ("", None)
    return ("", value) if isinstance(value, dict) else ("", None)


def judge_ready(ready: dict[str, object], expect_xen: bool = True) -> str | None:
    """None when every guest XENLIVE-READY lists is running, else why not.

    Where the firmware cannot start Xen (expect_xen False), the medium's menu boots Linux without
    Xen: that is a pass when XENLIVE-READY says no Xen runs, and a failure if one does, since then
    builder/bootfirmware.py is wrong about the firmware.
    """
    guests = ready.get("guests")
    if not isinstance(guests, dict):
        return "XENLIVE-READY has no guests map"
    if not expect_xen:
        if ready.get("xen") is not None:
            return f"Xen {ready.get('xen')} is running where xenlive expects that it cannot start"
        return None
    if ready.get("xen") is None:
        return "dom0 is not running under Xen"
    bad = [
        f"{name}: {info.get('state')} ({info.get('reason', 'no reason given')})"
        if isinstance(info, dict)
        else f"{name}: {info!r}"
        for name, info in guests.items()
        if not isinstance(info, dict) or info.get("state") not in ("running", "not-autostarted")
    ]
    # A guest that declared a ready pattern must also have shown it on its console.
    late = [
        f"{name}: ready marker not seen ({info.get('reason', 'no reason given')})"
        for name, info in guests.items()
        if isinstance(info, dict) and info.get("state") == "running" and info.get("ready") is False
    ]
    problems = (["guests not running: " + "; ".join(bad)] if bad else []) + (
        ["guests not ready: " + "; ".join(late)] if late else []
    )
    return "; ".join(problems) if problems else None


def choose_accel(accel: str) -> str:
    if accel == "auto":
        return "kvm" if kvm_works() else "tcg"
    if accel == "kvm" and not os.access("/dev/kvm", os.R_OK | os.W_OK):
        raise UsageError("--accel kvm: /dev/kvm is not usable here", hint="use --accel auto or tcg")
    return accel


@contextmanager
def _machine(iso: Path, opts: BootOptions, *, interactive: bool = False) -> Iterator[tuple[list[str], Path, str]]:
    """A temporary directory with the UEFI variable store and QMP socket, and the QEMU command."""
    if not iso.is_file():
        raise UsageError(f"{iso}: no such ISO file")
    accel = choose_accel(opts.accel)
    with tempfile.TemporaryDirectory(prefix="xenlive-qemu-") as tmp:
        vars_file = None
        if opts.firmware.is_uefi:
            vars_file = Path(tmp) / "OVMF_VARS.fd"
            shutil.copyfile(find_ovmf(opts.firmware).vars_template, vars_file)
        qmp = Path(tmp) / "qmp.sock"
        with_qmp = not interactive or opts.media == MediaKind.STICK
        cmd = qemu_command(iso.resolve(), opts, accel, vars_file, qmp if with_qmp else None, interactive)
        log.debug("+ %s", " ".join(cmd))
        yield cmd, qmp, accel


# The El Torito boot record: the volume descriptor of type 0 whose boot system identifier is this.
ELTORITO_ID = b"EL TORITO SPECIFICATION"
VOLUME_DESCRIPTORS_MAX = 32  # volume descriptors looked at from sector 16 before giving up


def eltorito_id_offset(iso: Path) -> int | None:
    """The byte offset of the El Torito boot system identifier in the ISO, or None if it has none.

    Read from the volume descriptor set (2048-byte sectors from 16), which ends at a terminator
    or at the first sector that is no volume descriptor; a hostile file is read at most
    VOLUME_DESCRIPTORS_MAX sectors far.
    """
    with iso.open("rb") as f:
        for lba in range(16, 16 + VOLUME_DESCRIPTORS_MAX):
            f.seek(lba * 2048)
            sector = f.read(2048)
            if len(sector) < 2048 or sector[1:6] != b"CD001" or sector[0] == 255:
                return None
            if sector[0] == 0 and sector[7 : 7 + len(ELTORITO_ID)] == ELTORITO_ID:
                return lba * 2048 + 7
    return None


def hide_eltorito(iso: Path, qmp: Path, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """Hide the medium's El Torito boot record from a paused QEMU (-S), then let it run.

    What real firmware sees of a USB stick is its partition tables: many never look for El Torito
    on a disk, but OVMF does, and would boot a stick whose MBR or GPT is broken. Renaming the boot
    system identifier in the drive's snapshot (qemu-io through QMP; the ISO file is never written)
    leaves the partition tables as the only way in. The volume descriptor keeps its "CD001" and
    type, so the ISO 9660 file system still mounts. If QEMU has already exited, nothing is done:
    the caller reports its exit.
    """
    offset = eltorito_id_offset(iso)
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        try:
            if offset is None:
                log.info("%s has no El Torito boot record to hide", iso)
            else:
                command = f'qemu-io boot "write -P 0x58 {offset} {len(ELTORITO_ID)}"'
                qmp_command(qmp, "human-monitor-command", {"command-line": command})
                log.debug("El Torito boot record hidden (%d bytes at %d)", len(ELTORITO_ID), offset)
            qmp_command(qmp, "cont", {})
            return
        except (OSError, ValueError) as e:
            if time.monotonic() > deadline:
                raise BootTestFailed(f"could not hide the El Torito boot record through QEMU's QMP socket: {e}",
                                     hint="try --media usb, which needs no QMP") from e  # fmt: skip
            time.sleep(0.2)  # QEMU has not opened its QMP socket yet


def boot_interactive(iso: Path, opts: BootOptions) -> int:
    """Boot with the serial console on this terminal (Ctrl-A X quits QEMU); QEMU's exit status."""
    with _machine(iso, opts, interactive=True) as (cmd, qmp, accel):
        log.info("booting %s (%s, %s/%s); quit with Ctrl-A X", iso, accel, opts.firmware, opts.media)
        proc = subprocess.Popen(cmd, start_new_session=False)
        try:
            if opts.media == MediaKind.STICK:
                hide_eltorito(iso, qmp, proc)
            return proc.wait()
        finally:
            _terminate(proc)


def boot_and_wait(iso: Path, opts: BootOptions, timeout: float, report_dir: Path | None = None,
                  session: Session | None = None) -> BootResult:  # fmt: skip
    """Boot headless and watch the serial console until XENLIVE-READY, a failure, or the timeout;
    then, with a session, wait for its expected lines and run its commands in dom0.

    With a report directory: the full console log (console.log), and screenshots of the boot
    menu (menu.png) and of the screen at the end (end.png).
    """
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    session = session or Session()
    with _machine(iso, opts) as (cmd, qmp, accel), _spawn(cmd) as proc:
        if opts.media == MediaKind.STICK:
            hide_eltorito(iso, qmp, proc)
        shots = Screenshots(qmp, report_dir) if report_dir is not None else None
        log_file = (report_dir / "console.log").open("wb") if report_dir is not None else None
        logs = GuestLogs(report_dir / "guests" if report_dir is not None else None)
        reports = ReportReader()
        try:
            assert proc.stdout is not None
            console = Console(proc.stdout.fileno(), proc.stdin, log_file, opts.stop, asides=(logs.take, reports))
            start = time.monotonic()
            expectations = Expectations(session.expect, start)
            console.listeners.append(expectations)
            result = _watch(
                proc, console, start, timeout, accel, shots, opts.stop, expect_xen=XEN_STARTS[opts.firmware]
            )
            if result.ready is not None:
                read_guest_logs(console, start + timeout)
            if result.passed and session.active:
                failure, done = run_session(console, session, expectations, start + timeout)
                result.commands = done
                if failure is not None:
                    result.passed, result.stage, result.reason = False, "ready", failure
                result.tail = list(console.tail)
                result.seconds = time.monotonic() - start
            result.expected = expectations.as_dict()
        finally:
            if log_file:
                log_file.close()
            logs.close()
        result.guest_logs = logs.paths()
        if report_dir is not None:
            result.machine_report = save_report(reports.last, report_dir)
        if shots is not None:
            shots.take("end")
            result.screenshots = shots.taken
        return result


def read_guest_logs(console: Console, deadline: float) -> bool:
    """Read on after XENLIVE-READY until dom0 has relayed the guests' console logs (the console's
    asides keep them); whether their end came before the deadline or GUEST_LOGS_WAIT."""
    until = min(deadline, time.monotonic() + GUEST_LOGS_WAIT)
    return console.wait_for(GUEST_LOGS_DONE, until) is not None


class GuestLogs:
    """The guests' console logs dom0 prints as XENLIVE-GUEST-LOG lines, one file per guest.

    The names come from the machine being tested: only a plain domain name makes a file, so a
    hostile image cannot write outside the report directory.
    """

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory  # None: the lines are set aside and not kept
        self.files: dict[str, BinaryIO] = {}

    def take(self, line: str) -> bool:
        """A Console's aside: keep a XENLIVE-GUEST-LOG line (True) and pass on any other (False)."""
        if GUEST_LOG_MARKER not in line:
            return False
        self.add(line.split(GUEST_LOG_MARKER, 1)[1])
        return True

    def add(self, text: str) -> None:
        name, _, line = text.partition(" ")
        if (
            self.directory is None
            or not GUEST_NAME.fullmatch(name)
            or (name not in self.files and len(self.files) >= 256)
        ):
            return
        if name not in self.files:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.files[name] = (self.directory / f"{name}.log").open("wb")
        self.files[name].write(line.encode() + b"\n")

    def paths(self) -> dict[str, str]:
        return {name: str(self.directory / f"{name}.log") for name in self.files if self.directory is not None}

    def close(self) -> None:
        for f in self.files.values():
            f.close()


class MenuChoice:
    """Choose the boot menu's default entry (Enter) as soon as the menu counts down to it, as a user
    at the machine would, rather than sit out its timeout (MENU_TIMEOUT, 3 s, in builder/stages/boot.py).
    With screenshots, only once the menu's is taken. An Enter that comes too early or is lost
    changes nothing: the countdown still boots the same entry."""

    def __init__(self, console: Console, shots: Screenshots | None) -> None:
        self.console = console
        self.shots = shots
        self.seen = False
        self.done = False

    def watch(self, lines: list[str]) -> None:
        if self.done:
            return
        self.seen = self.seen or any(MENU_COUNTDOWN.search(line) for line in (*lines, self.console.pending()))
        if self.seen and (self.shots is None or self.shots.has("menu")):
            self.done = True
            try:
                self.console.type("\r")
            except OSError as e:  # no input: the countdown boots it
                log.debug("could not choose the menu's entry: %s", e)


class Screenshots:
    """PNG screen dumps through QMP: the boot menu once the boot loader shows it, and the end."""

    MENU_DELAY = 1.0  # seconds after the boot loader's first line, so the menu is drawn

    def __init__(self, socket_path: Path, directory: Path) -> None:
        self.socket_path = socket_path
        self.directory = directory
        self.taken: list[str] = []
        self.menu_due: float | None = None

    def on_stage(self, stage: str, now: float) -> None:
        if stage == "boot loader" and self.menu_due is None:
            self.menu_due = now + self.MENU_DELAY

    def poll(self, now: float) -> None:
        if self.menu_due is not None and now >= self.menu_due and not self.has("menu"):
            self.take("menu")

    def has(self, name: str) -> bool:
        return name in {Path(t).stem for t in self.taken}

    def take(self, name: str) -> None:
        target = self.directory / f"{name}.png"
        try:
            qmp_command(self.socket_path, "screendump", {"filename": str(target), "format": "png"})
        except (OSError, ValueError) as e:
            log.debug("screendump %s failed: %s", name, e)
            return
        if target.exists():
            self.taken.append(str(target))


def qmp_command(socket_path: Path, command: str, arguments: dict[str, object], timeout: float = 10.0) -> object:
    """Send one QMP command and return its result (raises OSError or ValueError on failure)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(socket_path))
        reader = sock.makefile("rb")

        def receive() -> dict[str, object]:
            while True:
                line = reader.readline()
                if not line:
                    raise OSError("QMP connection closed")
                message = json.loads(line)
                if "event" not in message:
                    return dict(message)

        receive()  # greeting
        sock.sendall(b'{"execute": "qmp_capabilities"}\n')
        receive()
        sock.sendall(json.dumps({"execute": command, "arguments": arguments}).encode() + b"\n")
        reply = receive()
        if "error" in reply:
            raise ValueError(f"QMP {command}: {reply['error']}")
        return reply.get("return")


def _watch(proc: subprocess.Popen[bytes], console: Console, start: float, timeout: float, accel: str,
           shots: Screenshots | None = None, stop: threading.Event | None = None,
           expect_xen: bool = True) -> BootResult:  # fmt: skip
    stages: dict[str, float] = {}
    stage_names = [name for name, _ in STAGES]

    menu = MenuChoice(console, shots)
    failure: list[str] = []  # the failure line, then the lines after it that explain it
    failure_deadline = 0.0
    ready_part = ""  # a XENLIVE-READY line that Xen's own line cut, until its rest comes

    def result(passed: bool, reason: str, ready: dict[str, object] | None = None) -> BootResult:
        reached = max(stages, key=stage_names.index) if stages else "firmware"
        return BootResult(passed, reached, reason, accel, time.monotonic() - start, stages, ready, list(console.tail),
                          expect_xen=expect_xen)  # fmt: skip

    def failed() -> BootResult:
        return result(False, "failure on the console: " + " ".join(failure))

    while True:
        now = time.monotonic()
        if shots is not None:
            shots.poll(now)
        if stop is not None and stop.is_set():
            return result(False, "stopped: another boot was interrupted")
        if failure and (now >= failure_deadline or len(failure) >= FAILURE_CONTEXT_LINES):
            return failed()
        remaining = timeout - (now - start)
        if remaining <= 0:
            return result(False, f"timed out after {timeout:.0f} s")
        exited = proc.poll() is not None  # asked before the read, so what it printed last is read first
        lines = console.read(min(remaining, 0.5))
        menu.watch(lines)
        if console.closed or (not lines and exited):
            proc.wait()
            return failed() if failure else result(False, f"QEMU exited with status {proc.returncode}")
        for index, line in enumerate(lines):
            for name, pattern in STAGES:
                if name not in stages and pattern.search(line):
                    stages[name] = time.monotonic() - start
                    log.info("    %6.1f s  %s", stages[name], name)
                    if shots is not None:
                        shots.on_stage(name, time.monotonic())
            if failure:
                text = line.replace("(XEN)", "").strip(" *")
                if text:
                    failure.append(text)
                continue
            # xenlive's own report lines (XENLIVE-...) quote guests' consoles: a guest's panic
            # there is the guest's failure, which XENLIVE-READY judges, not dom0's.
            if XENLIVE_LINE not in line and any(pattern.search(line) for pattern in FAILURES):
                failure = [line.replace("(XEN)", "").strip()]
                failure_deadline = time.monotonic() + FAILURE_CONTEXT_SECONDS
                continue
            if READY_MARKER in line or ready_part:
                rest = line.split(READY_MARKER, 1)[1].strip() if READY_MARKER in line else line.rstrip()
                payload = ready_part + rest
                ready_part, ready = ready_json(payload)
                if ready_part:
                    continue  # Xen cut the line: the rest of it is the next line
                if ready is None:
                    return result(False, f"XENLIVE-READY line is not JSON: {payload[:200]}")
                verdict = judge_ready(ready, expect_xen)
                passed = "every guest is running" if expect_xen else BARE_PASS
                console.give_back(lines[index + 1 :])  # what came after the line is read on from there
                return result(verdict is None, verdict or passed, ready)


@contextmanager
def _spawn(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Start QEMU in its own process group and make sure the group is gone afterwards.

    Ctrl-C and SIGTERM reach us, not QEMU (its own session), and end here through `finally`; if
    xenlive is killed outright, setpriv's parent-death signal takes QEMU down with it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip
    try:
        yield proc
    finally:
        _terminate(proc)


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    for pipe in (proc.stdin, proc.stdout):
        if pipe:
            try:
                pipe.close()
            except OSError:  # the last typed bytes could not be delivered: QEMU is gone anyway
                pass


def _read_until(proc: subprocess.Popen[bytes], pattern: re.Pattern[bytes], timeout: float) -> bytes | None:
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    seen = b""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([fd], [], [], remaining)
        if not readable:
            break
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        seen += chunk
        if pattern.search(seen):
            return seen
    return None
