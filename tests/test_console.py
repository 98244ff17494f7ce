"""`xenlive test --expect/--exec` against a stand-in for QEMU: a program that prints a boot log and
XENLIVE-READY, then behaves like dom0's serial console (echoing what is typed, with a shell behind it,
and kernel messages in between). The real thing is proven by a boot of the default ISO (see README)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

FAKE_QEMU = textwrap.dedent(
    """\
    #!{python}
    import json, os, subprocess, sys, time
    dom0_tmp = os.environ["FAKE_DOM0_TMP"]
    mode = os.environ.get("FAKE_MODE", "")
    out = sys.stdout
    for line in ["SeaBIOS (version 1.16)", "ISOLINUX 6.04", "(XEN) Xen version 4.17.5",
                 "[    0.000000] Linux version 6.1.0", "systemd[1]: Started", "guest tiny: hello from tiny"]:
        print(line, flush=True)
    ready = {{"profile": "default", "xen": "4.17.5", "guests": {{"tiny": {{"state": "running"}}}}}}
    print("\\x1b[0mXENLIVE-READY " + json.dumps(ready), flush=True)
    print("XENLIVE-GUEST-LOG tiny hello from tiny", flush=True)
    print("XENLIVE-GUEST-LOGS-DONE", flush=True)
    if mode == "silent":
        time.sleep(600)
    shell = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=out, stderr=subprocess.STDOUT)
    damaged = False
    n = 0
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            break
        text = line.decode().replace("/tmp/", dom0_tmp + "/")
        if mode == "damage" and not damaged and text.startswith("printf %s '"):
            text = text.replace("'", "'A", 1)  # a character more in the first base64 chunk
            damaged = True
        out.write("root@xenlive:~# " + line.decode())  # the terminal's echo of what was typed
        out.flush()
        n += 1
        if n % 3 == 0:
            print("[   80.123456] xenbr0: port 2(vif1.0) entered forwarding state", flush=True)
        shell.stdin.write(text.encode())
        shell.stdin.flush()
    """
)


@pytest.fixture
def fake_qemu(tmp_path: Path) -> dict[str, str]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "qemu-system-x86_64"
    script.write_text(FAKE_QEMU.format(python=sys.executable))
    script.chmod(0o755)
    dom0_tmp = tmp_path / "dom0-tmp"
    dom0_tmp.mkdir()
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "FAKE_DOM0_TMP": str(dom0_tmp)}


def xenlive_test(tmp_path: Path, env: dict[str, str], *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    iso = tmp_path / "x.iso"
    iso.write_bytes(b"\0" * 4096)
    report = tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "builder", "test", str(iso), "--accel", "tcg", "--timeout", "60",
                           "--report-dir", str(report), "--json", "--junit", str(tmp_path / "junit.xml"), *args],
                          capture_output=True, text=True, env={**os.environ, **env})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc, json.loads(proc.stdout) if proc.stdout.strip() else {}


def test_exec_runs_commands_in_dom0_and_reports_their_output(tmp_path, fake_qemu):
    command = "echo \"it's $((6 * 7))\"; printf 'no newline at the end'"
    proc, result = xenlive_test(tmp_path, fake_qemu, "--exec", command, "--exec", "echo second >&2")
    assert proc.returncode == 0, proc.stderr
    assert result["passed"] is True
    assert [c["command"] for c in result["commands"]] == [command, "echo second >&2"]
    first, second = result["commands"]
    assert first["exit"] == 0 and second["exit"] == 0
    assert [line for line in first["output"] if "xenbr0" not in line] == ["it's 42", "no newline at the end"]
    assert second["output"] == ["second"]
    saved = json.loads((tmp_path / "report/bios-cdrom/result.json").read_text())
    assert saved["commands"][0]["output"] == first["output"]
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    out = junit.find("testcase/system-out")
    assert out is not None and out.text is not None and "$ echo second >&2\nsecond\n(exit 0)" in out.text


def test_a_failing_command_fails_the_test_and_the_rest_do_not_run(tmp_path, fake_qemu):
    proc, result = xenlive_test(tmp_path, fake_qemu, "--exec", "echo before; exit 3", "--exec", "echo never")
    assert proc.returncode == 1
    assert result["passed"] is False and result["reason"] == "--exec 'echo before; exit 3': exited with status 3"
    failed, skipped = result["commands"]
    assert failed["exit"] == 3 and failed["output"] == ["before"]
    assert skipped == {"command": "echo never", "exit": None, "output": [], "seconds": 0.0,
                       "reason": "not run: an earlier command failed"}  # fmt: skip
    assert "bios/cdrom: after XENLIVE-READY: --exec 'echo before; exit 3': exited with status 3" in proc.stderr
    assert "--exec 'echo before; exit 3': exited with status 3; its output:\n  | before" in proc.stderr
    junit = ET.parse(tmp_path / "junit.xml").getroot()
    assert junit.get("failures") == "1"


def test_a_command_damaged_on_the_way_is_not_run(tmp_path, fake_qemu):
    marker = tmp_path / "dom0-tmp/ran"
    proc, result = xenlive_test(tmp_path, {**fake_qemu, "FAKE_MODE": "damage"}, "--exec", f"touch {marker}")
    assert proc.returncode == 1
    assert result["commands"][0]["reason"] == "the command arrived damaged over the serial console"
    assert not marker.exists()


def test_expect_waits_for_whole_console_lines(tmp_path, fake_qemu):
    proc, result = xenlive_test(tmp_path, fake_qemu, "--timeout", "5", "--expect", "guest tiny: hello from \\w+",
                                "--expect", "Xen")  # fmt: skip
    assert proc.returncode == 1  # "Xen" alone is no whole line of this log
    assert result["reason"] == "expected console lines not seen: 'Xen'"
    assert result["expected"]["guest tiny: hello from \\w+"] is not None and result["expected"]["Xen"] is None


def test_expect_seen_passes(tmp_path, fake_qemu):
    proc, result = xenlive_test(tmp_path, fake_qemu, "--expect", r".*Xen version 4\.17.*")
    assert proc.returncode == 0, proc.stderr
    assert result["passed"] is True and list(result["expected"]) == [r".*Xen version 4\.17.*"]


def test_no_shell_on_the_console_fails_with_the_reason(tmp_path, fake_qemu):
    proc, result = xenlive_test(tmp_path, {**fake_qemu, "FAKE_MODE": "silent"}, "--timeout", "8", "--exec", "true")
    assert proc.returncode == 1
    assert result["reason"] == "no shell answered on dom0's serial console"


def test_a_bad_expect_pattern_is_a_usage_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "builder", "test", "x.iso", "--expect", "(unclosed"],
                          capture_output=True, text=True, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2 and "'(unclosed' is not a regular expression" in proc.stderr
