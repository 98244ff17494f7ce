from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from builder import qemu
from builder.profile.model import Firmware
from builder.qemu import BootOptions, MediaKind, judge_ready, qemu_command


@pytest.fixture(autouse=True)
def fake_qemu(monkeypatch):
    monkeypatch.setattr(qemu, "require_qemu", lambda: "qemu-system-x86_64")
    monkeypatch.setattr(qemu, "find_ovmf", lambda: qemu.OvmfConfig(Path("/fw/CODE.fd"), Path("/fw/VARS.fd")))


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


def test_kvm_command():
    cmd = qemu_command(Path("/x.iso"), BootOptions(), "kvm", None)
    assert cmd[cmd.index("-accel") + 1] == "kvm"


def test_judge_ready():
    ok = {"profile": "p", "xen": "4.17.5", "guests": {"a": {"state": "running"}}}
    assert judge_ready(ok) is None
    bad = {"profile": "p", "xen": "4.17.5", "guests": {"a": {"state": "failed", "reason": "no memory"}}}
    assert judge_ready(bad) == "guests not running: a: failed (no memory)"
    assert judge_ready({"xen": None, "guests": {}}) == "dom0 is not running under Xen"


def _fake_boot(script: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, start_new_session=True)


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
        result = qemu._watch(proc, 20, "tcg", tmp_path / "console.log")
    finally:
        qemu._terminate(proc)
    assert result.passed and result.stage == "ready"
    assert list(result.stages) == ["boot loader", "xen", "dom0 kernel", "ready"]
    assert result.ready["guests"]["tiny"]["state"] == "running"
    assert b"Xen version" in (tmp_path / "console.log").read_bytes()
    assert proc.poll() is not None


def test_watch_fails_fast_on_panic_and_keeps_tail():
    proc = _fake_boot("import time\nprint('(XEN) Xen version 4.17', flush=True)\n"
                      "print('(XEN) Panic on CPU 0:', flush=True)\n"
                      "print('(XEN) Could not construct domain 0', flush=True)\n"
                      "print('(XEN) ****************************************', flush=True)\n"
                      "time.sleep(30)\n")  # fmt: skip
    try:
        result = qemu._watch(proc, 20, "tcg", None)
    finally:
        qemu._terminate(proc)
    assert not result.passed and result.stage == "xen"
    assert result.reason == "failure on the console: Panic on CPU 0: Could not construct domain 0"
    assert "(XEN) Panic on CPU 0:" in result.tail
    assert result.seconds < 10


def test_watch_times_out():
    proc = _fake_boot("import time\nprint('GRUB', flush=True)\ntime.sleep(30)\n")
    try:
        result = qemu._watch(proc, 1.5, "tcg", None)
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
    with pytest.raises(qemu.MissingToolError, match="no UEFI firmware"):
        qemu.find_ovmf()


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
        "XENLIVE-GUEST-LOG dies [    0.0] Linux version 6.1.0",
        "XENLIVE-GUEST-LOG dies Kernel panic - not syncing: x",
        "XENLIVE-GUEST-LOG fits XENLIVE-GUEST-READY fits",
        "XENLIVE-GUEST-LOG ../../etc/passwd owned",  # not a domain name: no file anywhere
        "XENLIVE-GUEST-LOG fits ",  # an empty line of the guest's stays one
        f"XENLIVE-READY {ready}",
    ]
    proc = _fake_boot(
        "import time\n" + "".join(f"print({line!r}, flush=True)\n" for line in lines) + "time.sleep(30)\n"
    )
    logs = qemu.GuestLogs(tmp_path / "guests")
    try:
        result = qemu._watch(proc, 20, "tcg", None, guest_logs=logs)
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
    assert not any("GUEST-LOG" in line for line in result.tail)

    from builder.boottest import guest_failures

    assert guest_failures(result) == [
        "guest dies failed: the domain crashed while starting: Out of memory",
        "  xl: Domain 5 has shut down, reason code 3 0x3",
        "  its console ended with:",
        "  | Kernel panic - not syncing: x",
        f"  (its whole console log: {tmp_path / 'guests/dies.log'})",
    ]
