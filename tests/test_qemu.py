from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import qemu
from builder.console import Console
from builder.profile.model import Firmware
from builder.qemu import BootOptions, MediaKind, judge_ready, qemu_command

from .conftest import REPO


@pytest.fixture(autouse=True)
def fake_qemu(monkeypatch):
    monkeypatch.setattr(qemu, "require_qemu", lambda: "qemu-system-x86_64")

    def find_ovmf(firmware: Firmware = Firmware.UEFI) -> qemu.OvmfConfig:
        if firmware is Firmware.UEFI_IA32:
            return qemu.OvmfConfig(Path("/fw/CODE32.fd"), Path("/fw/VARS32.fd"), requires_smm=True)
        return qemu.OvmfConfig(Path("/fw/CODE.fd"), Path("/fw/VARS.fd"))

    monkeypatch.setattr(qemu, "find_ovmf", find_ovmf)


def test_bios_cdrom_command_uses_tcg_cpu_model():
    cmd = qemu_command(Path("/x.iso"), BootOptions(), "tcg", None)
    assert cmd[cmd.index("-cpu") + 1] == "qemu64,+svm"
    assert "ide-cd,drive=boot,bootindex=0" in cmd
    assert cmd[cmd.index("-machine") + 1] == "pc"


def test_uefi_usb_command_uses_pflash_q35_and_usb_storage():
    cmd = qemu_command(Path("/x.iso"), BootOptions(Firmware.UEFI, MediaKind.USB), "tcg", Path("/t/VARS.fd"))
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE.fd" in cmd
    assert "if=pflash,format=raw,unit=1,file=/t/VARS.fd" in cmd
    assert cmd[cmd.index("-machine") + 1] == "q35"
    assert "usb-storage,bus=xhci.0,drive=boot,bootindex=0" in cmd
    assert "file=/x.iso,format=raw,if=none,id=boot,snapshot=on" in cmd


def test_uefi_ia32_command_uses_32_bit_ovmf_with_smm_and_a_64_bit_cpu():
    cmd = qemu_command(Path("/x.iso"), BootOptions(Firmware.UEFI_IA32, MediaKind.CDROM), "tcg", Path("/t/V.fd"))
    assert "if=pflash,format=raw,unit=0,readonly=on,file=/fw/CODE32.fd" in cmd
    assert cmd[cmd.index("-machine") + 1] == "q35,smm=on"
    assert cmd[cmd.index("-global") + 1] == "driver=cfi.pflash01,property=secure,value=on"
    assert cmd[cmd.index("-cpu") + 1] == "qemu64,+svm"  # a 64-bit CPU behind 32-bit firmware, as on Bay Trail


def test_a_writable_usb_disk_has_no_snapshot_so_writes_reach_the_image():
    opts = BootOptions(Firmware.BIOS, MediaKind.USB, writable=True)
    cmd = qemu_command(Path("/s.img"), opts, "tcg", None)
    assert "file=/s.img,format=raw,if=none,id=boot,snapshot=off" in cmd
    assert not any("snapshot=on" in arg and "id=boot" in arg for arg in cmd)


def test_stick_command_starts_paused_with_the_iso_as_a_usb_disk():
    cmd = qemu_command(Path("/x.iso"), BootOptions(Firmware.UEFI, MediaKind.STICK), "tcg", Path("/t/V.fd"))
    assert "-S" in cmd and "usb-storage,bus=xhci.0,drive=boot,bootindex=0" in cmd
    assert "file=/x.iso,format=raw,if=none,id=boot,snapshot=on" in cmd  # writes go to a snapshot, never the ISO
    assert "-S" not in qemu_command(Path("/x.iso"), BootOptions(Firmware.UEFI, MediaKind.USB), "tcg", Path("/v"))


def test_kvm_command():
    cmd = qemu_command(Path("/x.iso"), BootOptions(), "kvm", None)
    assert cmd[cmd.index("-accel") + 1] == "kvm"


def test_judge_ready():
    ok = {"profile": "p", "xen": "4.17.5", "guests": {"a": {"state": "running"}}}
    assert judge_ready(ok) is None
    bad = {"profile": "p", "xen": "4.17.5", "guests": {"a": {"state": "failed", "reason": "no memory"}}}
    assert judge_ready(bad) == "guests not running: a: failed (no memory)"
    assert judge_ready({"xen": None, "guests": {}}) == "dom0 is not running under Xen"


def test_judge_ready_where_xen_cannot_start():
    """On 32-bit UEFI the medium boots Linux without Xen: that passes, and Xen running there is a surprise."""
    bare = {"profile": "p", "xen": None, "guests": {"a": {"state": "failed", "reason": "not running under Xen"}}}
    assert judge_ready(bare, expect_xen=False) is None
    assert judge_ready(bare) == "dom0 is not running under Xen"
    assert judge_ready({**bare, "xen": "4.17.5"}, expect_xen=False) == (
        "Xen 4.17.5 is running where xenlive expects that it cannot start"
    )


def _fake_boot(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)


def _watch(proc: subprocess.Popen[bytes], timeout: float, console_log: Path | None) -> qemu.BootResult:
    log_file = console_log.open("wb") if console_log else None
    try:
        assert proc.stdout is not None
        return qemu._watch(proc, Console(proc.stdout.fileno(), None, log_file), time.monotonic(), timeout, "tcg")
    finally:
        if log_file:
            log_file.close()


def test_watch_reports_stages_and_ready(tmp_path):
    ready = json.dumps({"profile": "p", "xen": "4.17.5", "guests": {"tiny": {"state": "running"}}})
    script = (
        "import time\n"
        "print('ISOLINUX 6.04', flush=True)\n"
        "print('(XEN) Xen version 4.17.5', flush=True)\n"
        "print('[    0.0] Linux version 6.1.0', flush=True)\n"
        f"print('\\x1b[0mXENLIVE-READY {ready}', flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = _fake_boot(script)
    try:
        result = _watch(proc, 20, tmp_path / "console.log")
    finally:
        qemu._terminate(proc)
    assert result.passed and result.stage == "ready"
    assert list(result.stages) == ["boot loader", "xen", "dom0 kernel", "ready"]
    assert result.ready["guests"]["tiny"]["state"] == "running"
    assert b"Xen version" in (tmp_path / "console.log").read_bytes()
    assert proc.poll() is not None


XEN_POLLING = "(XEN) uart interrupt taking more than 4ms, switched to polling"


@pytest.mark.parametrize("shape", ["appended", "cut"])
def test_a_xen_line_on_the_ready_line_does_not_hide_it(tmp_path, shape):
    """Xen writes to the serial port whenever it likes; seen under TCG: its polling notice appended to
    the READY line, or cutting it (Xen's line ends the line, dom0's rest comes on the next)."""
    ready = json.dumps({"profile": "p", "xen": "4.20.4", "guests": {"tiny": {"state": "running"}}})
    at = ready.index("tiny") + 2
    lines = {
        "appended": [f"XENLIVE-READY {ready}{XEN_POLLING}"],
        "cut": [f"XENLIVE-READY {ready[:at]}{XEN_POLLING}", ready[at:]],
    }[shape]
    proc = _fake_boot(
        "import time\nprint('(XEN) Xen version 4.20.4', flush=True)\n"
        + "".join(f"print({line!r}, flush=True)\n" for line in lines)
        + "time.sleep(30)\n"
    )
    try:
        result = _watch(proc, 20, tmp_path / "console.log")
    finally:
        qemu._terminate(proc)
    assert result.passed, result.reason
    assert result.ready == json.loads(ready)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ('{"guests": {}} trailing words', ("", {"guests": {}})),
        ('{"guests": {"ti(XEN) a line of Xen\'s', ('{"guests": {"ti', None)),
        ("not json", ("", None)),
        ("[1, 2]", ("", None)),  # the line is an object, nothing else
        ("(XEN) at the start", ("", None)),
    ],
)
def test_ready_json(payload, expected):
    assert qemu.ready_json(payload) == expected


def test_watch_fails_fast_on_panic_and_keeps_tail():
    proc = _fake_boot("import time\nprint('(XEN) Xen version 4.17', flush=True)\n"
                      "print('(XEN) Panic on CPU 0:', flush=True)\n"
                      "print('(XEN) Could not construct domain 0', flush=True)\n"
                      "print('(XEN) ****************************************', flush=True)\n"
                      "time.sleep(30)\n")  # fmt: skip
    try:
        result = _watch(proc, 20, None)
    finally:
        qemu._terminate(proc)
    assert not result.passed and result.stage == "xen"
    assert result.reason == "failure on the console: Panic on CPU 0: Could not construct domain 0"
    assert "(XEN) Panic on CPU 0:" in result.tail
    assert result.seconds < 10


def test_watch_times_out():
    proc = _fake_boot("import time\nprint('GRUB', flush=True)\ntime.sleep(30)\n")
    try:
        result = _watch(proc, 1.5, None)
    finally:
        qemu._terminate(proc)
    assert not result.passed and result.reason == "timed out after 2 s" and result.stage == "boot loader"


def test_find_ovmf_reads_descriptors(tmp_path, monkeypatch):
    monkeypatch.undo()
    code, nvram = tmp_path / "CODE.fd", tmp_path / "VARS.fd"
    code.write_bytes(b"c")
    nvram.write_bytes(b"v")
    secure = {"interface-types": ["uefi"], "features": ["secure-boot"],
              "targets": [{"architecture": "x86_64"}], "mapping": {}}  # fmt: skip
    mapping = {"executable": {"filename": str(code)}, "nvram-template": {"filename": str(nvram)}}
    plain = {"interface-types": ["uefi"], "features": [], "targets": [{"architecture": "x86_64"}], "mapping": mapping}
    (tmp_path / "50-secure.json").write_text(json.dumps(secure))
    (tmp_path / "60-plain.json").write_text(json.dumps(plain))
    monkeypatch.setattr(qemu, "FIRMWARE_DESCRIPTORS", tmp_path)
    assert qemu.find_ovmf() == qemu.OvmfConfig(code, nvram)
    (tmp_path / "60-plain.json").unlink()
    with pytest.raises(qemu.MissingToolError, match="no 64-bit UEFI firmware") as info:
        qemu.find_ovmf()
    assert info.value.hint == "install it with: apt-get install ovmf"


def _descriptor(arch: str, code: Path, nvram: Path, *features: str) -> str:
    mapping = {"executable": {"filename": str(code)}, "nvram-template": {"filename": str(nvram)}}
    return json.dumps({"interface-types": ["uefi"], "features": list(features),
                       "targets": [{"architecture": arch}], "mapping": mapping})  # fmt: skip


def test_find_ovmf_ia32_takes_a_secure_boot_capable_build_without_enrolled_keys(tmp_path, monkeypatch):
    """Debian's ovmf-ia32 ships only a Secure Boot capable build; with an empty variable store Secure
    Boot stays off, so it is used (with SMM), while a build with keys enrolled never is."""
    monkeypatch.undo()
    files = {}
    for name in ("C32", "V32", "C32E", "V32E", "C64", "V64"):
        files[name] = tmp_path / f"{name}.fd"
        files[name].write_bytes(b"x")
    (tmp_path / "40-i386-enrolled.json").write_text(
        _descriptor("i386", files["C32E"], files["V32E"], "requires-smm", "secure-boot", "enrolled-keys")
    )
    (tmp_path / "50-i386-secure.json").write_text(
        _descriptor("i386", files["C32"], files["V32"], "requires-smm", "secure-boot")
    )
    (tmp_path / "60-x86_64.json").write_text(_descriptor("x86_64", files["C64"], files["V64"]))
    (tmp_path / "70-broken.json").write_text("{not json")
    (tmp_path / "71-odd.json").write_text('{"interface-types": "uefi", "targets": 5}')  # fmt: skip
    monkeypatch.setattr(qemu, "FIRMWARE_DESCRIPTORS", tmp_path)
    assert qemu.find_ovmf(Firmware.UEFI_IA32) == qemu.OvmfConfig(files["C32"], files["V32"], requires_smm=True)
    assert qemu.find_ovmf(Firmware.UEFI) == qemu.OvmfConfig(files["C64"], files["V64"])
    (tmp_path / "50-i386-secure.json").unlink()
    with pytest.raises(qemu.MissingToolError, match=r"no 32-bit UEFI firmware for QEMU found \(i386 OVMF\)") as info:
        qemu.find_ovmf(Firmware.UEFI_IA32)
    assert info.value.hint == "install it with: apt-get install ovmf-ia32"


def _iso_with_descriptors(path: Path, *descriptors: bytes) -> None:
    data = bytearray(16 * 2048)
    for d in descriptors:
        data += d.ljust(2048, b"\0")
    path.write_bytes(bytes(data))


@pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="QEMU is not installed")
def test_hide_eltorito_renames_the_boot_record_in_the_drive_snapshot_only(tmp_path):
    """A real QEMU, paused as `--media stick` starts it: after hide_eltorito the guest reads
    XXX... where the boot system identifier was, and the ISO file itself is untouched."""
    iso = tmp_path / "x.iso"
    _iso_with_descriptors(iso, b"\x01CD001\x01", b"\x00CD001\x01" + qemu.ELTORITO_ID, b"\xffCD001\x01")
    before = iso.read_bytes()
    qmp = tmp_path / "qmp.sock"
    opts = BootOptions(Firmware.BIOS, MediaKind.STICK, memory_mib=64, cpus=1)
    cmd = qemu_command(iso, opts, "tcg", None, qmp)
    offset = 17 * 2048 + 7
    with qemu._spawn(cmd) as proc:
        qemu.hide_eltorito(iso, qmp, proc)
        qemu.qmp_command(qmp, "human-monitor-command", {"command-line": f'qemu-io boot "read -v {offset} 23"'})
        qemu.qmp_command(qmp, "quit", {})
        assert proc.stdout is not None
        output = proc.stdout.read().decode(errors="replace")
    assert " 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58 58  XXXXXXXXXXXXXXXX" in output, output[-2000:]
    assert iso.read_bytes() == before


def test_hide_eltorito_leaves_a_dead_qemu_to_the_watch_and_names_a_deaf_one(tmp_path):
    iso = tmp_path / "x.iso"
    _iso_with_descriptors(iso, b"\x01CD001\x01", b"\xffCD001\x01")
    dead = _fake_boot("pass")
    dead.wait()
    qemu.hide_eltorito(iso, tmp_path / "none.sock", dead)  # returns: _watch reports the exit status
    deaf = _fake_boot("import time\ntime.sleep(30)")
    try:
        with pytest.raises(qemu.BootTestFailed, match="could not hide the El Torito boot record"):
            qemu.hide_eltorito(iso, tmp_path / "none.sock", deaf, timeout=0.5)
    finally:
        qemu._terminate(deaf)


def test_eltorito_id_offset_finds_the_boot_record_and_nothing_else(tmp_path):
    pvd, term = b"\x01CD001\x01", b"\xffCD001\x01"
    boot = b"\x00CD001\x01" + qemu.ELTORITO_ID
    iso = tmp_path / "x.iso"
    _iso_with_descriptors(iso, pvd, boot, term)
    assert qemu.eltorito_id_offset(iso) == 17 * 2048 + 7
    _iso_with_descriptors(iso, pvd, term, boot)  # after the terminator: not part of the set
    assert qemu.eltorito_id_offset(iso) is None
    _iso_with_descriptors(iso, pvd, b"\x00CD001\x01" + b"X" * len(qemu.ELTORITO_ID), term)  # hidden already
    assert qemu.eltorito_id_offset(iso) is None
    _iso_with_descriptors(iso, *[pvd] * 40, boot)  # a hostile set: read only so far
    assert qemu.eltorito_id_offset(iso) is None
    iso.write_bytes(b"short")
    assert qemu.eltorito_id_offset(iso) is None


@pytest.mark.parametrize("extra", [[], ["--matrix", "--jobs", "2"]], ids=["single", "matrix"])
def test_sigterm_to_xenlive_ends_qemu_and_cleans_up(tmp_path, extra):
    """A fake qemu-system-x86_64 that never ends: SIGTERM to xenlive must take every QEMU down too."""
    import os
    import signal
    import time

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    qemu_script = fake_bin / "qemu-system-x86_64"
    qemu_script.write_text(f"#!/bin/sh\necho $$ >> {tmp_path}/qemu.pids\necho SeaBIOS\nexec sleep 600\n")
    qemu_script.chmod(0o755)
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 4096)
    env = {**os.environ, "PATH": f"{fake_bin}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen([sys.executable, "-m", "builder", "test", str(iso), "--accel", "tcg",
                             "--report-dir", str(tmp_path / "r"), *extra], env=env, stderr=subprocess.PIPE)  # fmt: skip
    pids = tmp_path / "qemu.pids"
    for _ in range(100):
        if pids.exists() and len(pids.read_text().split()) >= (2 if extra else 1):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 130
    time.sleep(0.5)
    for pid in pids.read_text().split():
        status = Path(f"/proc/{pid}/status")
        assert not status.exists() or "zombie" in status.read_text(), f"QEMU {pid} still running"
    assert not list(tmp_path.glob("xenlive-qemu-*")), "temporary directory left behind"


def test_guest_console_logs_go_to_the_report_and_never_count_as_dom0s(tmp_path):
    """dom0 prints each guest's console as XENLIVE-GUEST-LOG lines: a guest's "Kernel panic" is its
    own failure, not dom0's, and each guest's lines land in REPORT/guests/NAME.log."""
    ready = json.dumps({"profile": "p", "xen": "4.17.5", "guests": {
        "dies": {"state": "failed", "reason": "the domain crashed while starting: Out of memory",
                 "xl": ["Domain 5 has shut down, reason code 3 0x3"], "console": ["Kernel panic - not syncing: x"]},
        "fits": {"state": "running"}, "spare": {"state": "not-autostarted"}}})  # fmt: skip
    lines = [
        "(XEN) Xen version 4.17.5",
        "[    0.0] Linux version 6.1.0",
        f"XENLIVE-READY {ready}",  # the logs come after the line, and their end is marked
        "XENLIVE-GUEST-LOG dies [    0.0] Linux version 6.1.0",
        "XENLIVE-GUEST-LOG dies Kernel panic - not syncing: x",
        "XENLIVE-GUEST-LOG fits XENLIVE-GUEST-READY fits",
        "XENLIVE-GUEST-LOG ../../etc/passwd owned",  # not a domain name: no file anywhere
        "XENLIVE-GUEST-LOG fits ",  # an empty line of the guest's stays one
        "XENLIVE-GUEST-LOGS-DONE",
    ]
    proc = _fake_boot(
        "import time\n" + "".join(f"print({line!r}, flush=True)\n" for line in lines) + "time.sleep(30)\n"
    )
    logs = qemu.GuestLogs(tmp_path / "guests")
    try:
        assert proc.stdout is not None
        console = Console(proc.stdout.fileno(), None, None, asides=(logs.take,))
        result = qemu._watch(proc, console, time.monotonic(), 20, "tcg")
        assert qemu.read_guest_logs(console, time.monotonic() + 20)
    finally:
        qemu._terminate(proc)
        logs.close()
    result.guest_logs = logs.paths()
    assert result.stage == "ready" and not result.passed  # judged by XENLIVE-READY, not by the guest's panic
    assert result.reason == "guests not running: dies: failed (the domain crashed while starting: Out of memory)"
    assert (
        tmp_path / "guests/dies.log"
    ).read_text() == "[    0.0] Linux version 6.1.0\nKernel panic - not syncing: x\n"
    assert (tmp_path / "guests/fits.log").read_text() == "XENLIVE-GUEST-READY fits\n\n"
    assert sorted(p.name for p in (tmp_path / "guests").iterdir()) == ["dies.log", "fits.log"]
    assert not any(line.startswith("XENLIVE-GUEST-LOG ") for line in result.tail)

    from builder.boottest import guest_failures

    assert guest_failures(result) == [
        "guest dies failed: the domain crashed while starting: Out of memory",
        "  xl: Domain 5 has shut down, reason code 3 0x3",
        "  its console ended with:",
        "  | Kernel panic - not syncing: x",
        f"  (its whole console log: {tmp_path / 'guests/dies.log'})",
    ]


def test_a_machine_report_on_the_console_is_kept_checked_and_never_judged_as_dom0s(tmp_path):
    """dom0 prints its machine report between markers: the lines go to the report's machine.yaml
    (a "Kernel panic" in a DMI string there is text, not a failure); a damaged one is not kept."""
    import hashlib

    from builder.hardware import load_target_file
    from builder.machinereport import ReportReader, save_report

    text = (
        (REPO / "builder/data/hardware/qemu-bios.yaml")
        .read_text()
        .replace("description: QEMU", "description: Kernel panic - not syncing QEMU")
    )
    digest = hashlib.sha256(text.encode()).hexdigest()
    ready = json.dumps({"profile": "p", "xen": "4.20.4", "guests": {"g": {"state": "running"}}})
    lines = ["(XEN) Xen version 4.20.4", "XENLIVE-MACHINE-BEGIN qemu-standard-pc", *text.splitlines(),
             f"XENLIVE-MACHINE-END qemu-standard-pc sha256={digest}", f"XENLIVE-READY {ready}"]  # fmt: skip
    proc = _fake_boot(
        "import time\n" + "".join(f"print({line!r}, flush=True)\n" for line in lines) + "time.sleep(30)\n"
    )
    reports = ReportReader()
    try:
        assert proc.stdout is not None
        console = Console(proc.stdout.fileno(), None, None, asides=(reports,))
        result = qemu._watch(proc, console, time.monotonic(), 20, "tcg")
    finally:
        qemu._terminate(proc)
    assert result.passed, result.reason
    assert not any("panic" in line for line in result.tail)
    saved = save_report(reports.last, tmp_path)
    assert saved == {"file": str(tmp_path / "machine.yaml"), "name": "qemu-standard-pc", "problems": []}
    assert load_target_file(tmp_path / "machine.yaml").description.startswith("Kernel panic")

    damaged = ReportReader()
    for line in lines[1:4] + lines[5:-1]:  # one line lost on the way
        assert damaged(line)
    assert save_report(damaged.last, tmp_path / "other") == {
        "file": None, "name": "qemu-standard-pc",
        "problems": ["the machine report arrived damaged (its sha256 does not match)"]}  # fmt: skip
    assert save_report(None, tmp_path)["problems"] == ["no machine report on the console"]


def test_the_menus_default_entry_is_chosen_once_it_counts_down(tmp_path):
    """The fake boot loader draws a menu whose countdown ends no line, then boots the entry it is
    given at once, or after its timeout: READY names which."""
    ready = '{"profile": "%s", "xen": "4.20.4", "guests": {}}'
    script = (
        "import os, select, sys\n"
        "print('ISOLINUX 6.04', flush=True)\n"
        "sys.stdout.write('\\x1b[2J menu \\x1b[12;1HAutomatic boot in 3 seconds...'); sys.stdout.flush()\n"
        "key = select.select([0], [], [], 5)[0] and os.read(0, 1)\n"
        f"print('\\nXENLIVE-READY ' + '{ready}' % ('enter' if key == b'\\r' else 'timeout'), flush=True)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        console = Console(proc.stdout.fileno(), proc.stdin, None)
        result = qemu._watch(proc, console, time.monotonic(), 20, "tcg")
    finally:
        qemu._terminate(proc)
    assert result.ready is not None and result.ready["profile"] == "enter"


class _Shots:
    def __init__(self) -> None:
        self.menu = False

    def has(self, name: str) -> bool:
        return name == "menu" and self.menu


class _TypedConsole:
    def __init__(self, pending: str = "") -> None:
        self.typed: list[str] = []
        self.line = pending

    def pending(self) -> str:
        return self.line

    def type(self, text: str) -> None:
        self.typed.append(text)


@pytest.mark.parametrize(
    "countdown", ["Automatic boot in 3 seconds...", "The highlighted entry will be executed automatically in 3s."]
)
def test_enter_waits_for_the_countdown_and_the_menus_screenshot(countdown):
    console, shots = _TypedConsole(), _Shots()
    choice = qemu.MenuChoice(console, shots)  # type: ignore[arg-type]
    choice.watch(["ISOLINUX 6.04 2018-02-04"])
    assert console.typed == []  # the banner is not the menu
    choice.watch([countdown])
    assert console.typed == []  # the menu's screenshot is not taken yet
    shots.menu = True
    choice.watch([])
    choice.watch([countdown])
    assert console.typed == ["\r"]  # once


def test_a_boot_without_a_menu_gets_no_key():
    console = _TypedConsole(pending="(XEN) Xen version 4.20")
    choice = qemu.MenuChoice(console, None)  # type: ignore[arg-type]
    for _ in range(3):
        choice.watch(["Loading Xen...", "Linux version 6.12"])
    assert console.typed == []
