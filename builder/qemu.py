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
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.errors import MissingToolError, UsageError
from builder.profile.model import Firmware

log = logging.getLogger(__name__)

QEMU = "qemu-system-x86_64"
FIRMWARE_DESCRIPTORS = Path("/usr/share/qemu/firmware")
TCG_CPU = "qemu64,+svm"  # with -cpu max Xen boots but dom0 Linux faults early (DESIGN.md)
READY_MARKER = "XENLIVE-READY "
XENLIVE_LINE = "XENLIVE-"  # the start of every line xenlive's dom0 services print
GUEST_LOG_MARKER = "XENLIVE-GUEST-LOG "  # dom0's ready service prints each guest's console log with it
GUEST_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")  # a Xen domain name as xenlive allows it


class MediaKind(enum.StrEnum):
    CDROM = "cdrom"
    USB = "usb"


@dataclass(frozen=True)
class OvmfConfig:
    code: Path
    vars_template: Path


def find_ovmf() -> OvmfConfig:
    """OVMF without Secure Boot, found from QEMU's firmware descriptors."""
    candidates = sorted(FIRMWARE_DESCRIPTORS.glob("*.json")) if FIRMWARE_DESCRIPTORS.is_dir() else []
    for descriptor in candidates:
        try:
            data = json.loads(descriptor.read_text())
        except (OSError, ValueError):
            log.debug("%s: unreadable firmware descriptor, skipped", descriptor)
            continue
        if "uefi" not in data.get("interface-types", []):
            log.debug("%s: not UEFI, skipped", descriptor)
            continue
        if not any(t.get("architecture") == "x86_64" for t in data.get("targets", [])):
            log.debug("%s: not x86_64, skipped", descriptor)
            continue
        if "secure-boot" in data.get("features", []) or "enrolled-keys" in data.get("features", []):
            log.debug("%s: Secure Boot firmware, skipped", descriptor)
            continue
        mapping = data.get("mapping", {})
        code = mapping.get("executable", {}).get("filename")
        nvram = mapping.get("nvram-template", {}).get("filename")
        if not code or not nvram or not Path(code).exists() or not Path(nvram).exists():
            log.debug("%s: firmware files missing, skipped", descriptor)
            continue
        return OvmfConfig(Path(code), Path(nvram))
    raise MissingToolError("no UEFI firmware for QEMU found", hint="install it with: apt-get install ovmf")


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
    if opts.firmware == Firmware.UEFI:
        ovmf = find_ovmf()
        assert vars_file is not None
        cmd += ["-machine", "q35",
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf.code}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_file}"]  # fmt: skip
    else:
        cmd += ["-machine", "pc"]
    if opts.media == MediaKind.CDROM:
        cmd += ["-drive", f"file={iso},media=cdrom,if=none,id=boot,readonly=on",
                "-device", "ide-cd,drive=boot,bootindex=0"]  # fmt: skip
    else:
        cmd += ["-drive", f"file={iso},format=raw,if=none,id=boot,snapshot=on",
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
FAILURE_CONTEXT_SECONDS = 3.0  # after a failure line, read this long for the lines that explain it
FAILURE_CONTEXT_LINES = 2
FAILURES = [
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
    guest_logs: dict[str, str] = field(default_factory=dict)  # each guest's console log, saved in the report

    @property
    def expected_next(self) -> str:
        return EXPECTED_NEXT.get(self.stage, "")

    def as_dict(self) -> dict[str, object]:
        return {
            "passed": self.passed,
            "stage": self.stage,
            "expected_next": None if self.passed else self.expected_next,
            "reason": self.reason,
            "accel": self.accel,
            "seconds": round(self.seconds, 1),
            "stages": {k: round(v, 1) for k, v in self.stages.items()},
            "ready": self.ready,
            "tail": self.tail,
            "screenshots": self.screenshots,
            "guest_logs": self.guest_logs,
        }

    def failed_guests(self) -> dict[str, dict[str, object]]:
        """The guests XENLIVE-READY gives as failed, with what it says about each."""
        guests = (self.ready or {}).get("guests")
        if not isinstance(guests, dict):
            return {}
        return {name: info for name, info in guests.items() if isinstance(info, dict) and info.get("state") == "failed"}


def judge_ready(ready: dict[str, object]) -> str | None:
    """None when every guest XENLIVE-READY lists is running, else why not."""
    guests = ready.get("guests")
    if not isinstance(guests, dict):
        return "XENLIVE-READY has no guests map"
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
        if opts.firmware == Firmware.UEFI:
            vars_file = Path(tmp) / "OVMF_VARS.fd"
            shutil.copyfile(find_ovmf().vars_template, vars_file)
        qmp = Path(tmp) / "qmp.sock"
        cmd = qemu_command(iso.resolve(), opts, accel, vars_file, None if interactive else qmp, interactive)
        log.debug("+ %s", " ".join(cmd))
        yield cmd, qmp, accel


def boot_interactive(iso: Path, opts: BootOptions) -> int:
    """Boot with the serial console on this terminal (Ctrl-A X quits QEMU); QEMU's exit status."""
    with _machine(iso, opts, interactive=True) as (cmd, _qmp, accel):
        log.info("booting %s (%s, %s/%s); quit with Ctrl-A X", iso, accel, opts.firmware, opts.media)
        proc = subprocess.Popen(cmd, start_new_session=False)
        try:
            return proc.wait()
        finally:
            _terminate(proc)


def boot_and_wait(iso: Path, opts: BootOptions, timeout: float, report_dir: Path | None = None) -> BootResult:
    """Boot headless and watch the serial console until XENLIVE-READY, a failure, or the timeout.

    With a report directory: the full console log (console.log), and screenshots of the boot
    menu (menu.png) and of the screen at the end (end.png).
    """
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
    with _machine(iso, opts) as (cmd, qmp, accel), _spawn(cmd) as proc:
        shots = Screenshots(qmp, report_dir) if report_dir is not None else None
        logs = GuestLogs(report_dir / "guests") if report_dir is not None else None
        try:
            result = _watch(proc, timeout, accel, report_dir / "console.log" if report_dir else None, shots,
                            opts.stop, logs)  # fmt: skip
        finally:
            if logs is not None:
                logs.close()
        if logs is not None:
            result.guest_logs = logs.paths()
        if shots is not None:
            shots.take("end")
            result.screenshots = shots.taken
        return result


class GuestLogs:
    """The guests' console logs dom0 prints as XENLIVE-GUEST-LOG lines, one file per guest.

    The names come from the machine being tested: only a plain domain name makes a file, so a
    hostile image cannot write outside the report directory.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files: dict[str, BinaryIO] = {}

    def add(self, text: str) -> None:
        name, _, line = text.partition(" ")
        if not GUEST_NAME.fullmatch(name) or (name not in self.files and len(self.files) >= 256):
            return
        if name not in self.files:
            self.directory.mkdir(parents=True, exist_ok=True)
            self.files[name] = (self.directory / f"{name}.log").open("wb")
        self.files[name].write(line.encode() + b"\n")

    def paths(self) -> dict[str, str]:
        return {name: str(self.directory / f"{name}.log") for name in self.files}

    def close(self) -> None:
        for f in self.files.values():
            f.close()


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
        if self.menu_due is not None and now >= self.menu_due and "menu" not in {Path(t).stem for t in self.taken}:
            self.take("menu")

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


def _watch(proc: subprocess.Popen[bytes], timeout: float, accel: str, console_log: Path | None,
           shots: Screenshots | None = None, stop: threading.Event | None = None,
           guest_logs: GuestLogs | None = None) -> BootResult:  # fmt: skip
    start = time.monotonic()
    tail: deque[str] = deque(maxlen=50)
    stages: dict[str, float] = {}
    buffer = b""
    log_file = console_log.open("wb") if console_log else None
    stage_names = [name for name, _ in STAGES]

    failure: list[str] = []  # the failure line, then the lines after it that explain it
    failure_deadline = 0.0

    def result(passed: bool, reason: str, ready: dict[str, object] | None = None) -> BootResult:
        reached = max(stages, key=stage_names.index) if stages else "firmware"
        return BootResult(passed, reached, reason, accel, time.monotonic() - start, stages, ready, list(tail))

    def failed() -> BootResult:
        return result(False, "failure on the console: " + " ".join(failure))

    try:
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
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
            readable, _, _ = select.select([fd], [], [], min(remaining, 0.5))
            if not readable:
                if proc.poll() is not None:
                    return failed() if failure else result(False, f"QEMU exited with status {proc.returncode}")
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                proc.wait()
                return failed() if failure else result(False, f"QEMU exited with status {proc.returncode}")
            if log_file:
                log_file.write(chunk)
                log_file.flush()
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                line = _clean(raw)
                if GUEST_LOG_MARKER in line:  # a guest's console, not dom0's: never a stage or failure
                    if guest_logs is not None:
                        guest_logs.add(line.split(GUEST_LOG_MARKER, 1)[1])
                    continue
                tail.append(line)
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
                if READY_MARKER in line:
                    payload = line.split(READY_MARKER, 1)[1].strip()
                    try:
                        ready = json.loads(payload)
                    except ValueError:
                        return result(False, f"XENLIVE-READY line is not JSON: {payload[:200]}")
                    verdict = judge_ready(ready)
                    return result(verdict is None, verdict or "every guest is running", ready)
    finally:
        if log_file:
            log_file.close()


ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def _clean(raw: bytes) -> str:
    return ANSI.sub("", raw.decode("utf-8", errors="replace"))


@contextmanager
def _spawn(cmd: list[str]) -> Iterator[subprocess.Popen[bytes]]:
    """Start QEMU in its own process group and make sure the group is gone afterwards.

    Ctrl-C and SIGTERM reach us, not QEMU (its own session), and end here through `finally`; if
    xenlive is killed outright, setpriv's parent-death signal takes QEMU down with it.
    """
    setpriv = shutil.which("setpriv")
    if setpriv:
        cmd = [setpriv, "--pdeathsig", "KILL", "--", *cmd]
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
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
    if proc.stdout:
        proc.stdout.close()


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
