"""`xenlive check` and the build gate from the command line: output, JSON and exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

HVM_PROFILE = """\
name: hvmtest
guests:
  - name: tiny
  - name: desktop
    type: hvm
    memory: 512M
"""


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """An empty cache (so built-file checks say unknown) and no user hardware directories."""
    e = dict(os.environ)
    e["XENLIVE_CACHE_DIR"] = str(tmp_path / "cache")
    e["XDG_CONFIG_HOME"] = str(tmp_path / "config")
    e.pop("XENLIVE_HARDWARE_PATH", None)
    return e


def xenlive(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, env=env, cwd=REPO)


def test_check_passes_on_qemu_targets(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "default", "--target", "qemu-bios", "--target", "qemu-uefi")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "Hardware checks for profile 'default'"
    assert lines[2].split() == ["TARGET", "ERRORS", "WARNINGS", "UNKNOWN", "VERDICT"]
    assert lines[3].startswith("qemu-bios ") and "ok so far (some unknown)" in lines[3]
    assert "run `xenlive build` once" in proc.stdout


def test_hvm_guest_fails_where_there_is_no_vtx(env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "hvm.yaml"
    profile.write_text(HVM_PROFILE)
    proc = xenlive(env, "check", str(profile), "--target", "all")
    assert proc.returncode == 3
    assert ("  ERROR    hvm-needs-vtx: guests desktop (hvm) need VT-x or AMD-V, which Intel(R) Atom(TM) CPU N270"
            " @ 1.60GHz lacks (or the firmware hides)") in proc.stdout  # fmt: skip
    row = next(line for line in proc.stdout.splitlines() if line.startswith("asus-eeepc-1000h "))
    assert row.split()[1] == "3" and row.endswith("FAIL")  # cpu-64bit, hvm-needs-vtx, memory-budget
    assert "error: error-level checks failed on " in proc.stderr and "Traceback" not in proc.stderr


def test_json_report(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "default", "--target", "thinkpad-t480", "--json")
    assert proc.returncode == 3
    data = json.loads(proc.stdout)
    assert data["ok"] is False and data["targets"]["thinkpad-t480"]["verdict"] == "FAIL"
    secure = next(c for c in data["targets"]["thinkpad-t480"]["checks"] if c["id"] == "secure-boot")
    assert secure["status"] == "fail" and secure["severity"] == "error"
    assert "Secure Boot is on" in secure["findings"][0]["message"]


def test_check_tells_the_options_a_target_needs_and_where_they_are(env: dict[str, str], tmp_path: Path) -> None:
    """A hardware file whose known issue carries efi=no-rs: `check` names the option and the boot
    menu entry that carries it (a note, not a warning); without the target in the profile, a warning."""
    env["XENLIVE_HARDWARE_PATH"] = str(REPO / "tests/data/hardware")
    profile = tmp_path / "quirks.yaml"
    profile.write_text("name: quirks\nchecks:\n  targets: [quirky-uefi]\n")
    proc = xenlive(env, "check", str(profile))
    assert proc.returncode == 0, proc.stderr
    assert ('  note     machine-options: needs Xen efi=no-rs (known issue efi-runtime-crash): boot the menu entry'
            ' "Xen for quirky-uefi (Xen efi=no-rs)"') in proc.stdout  # fmt: skip
    row = next(line for line in proc.stdout.splitlines() if line.startswith("quirky-uefi "))
    assert row.split()[1:3] == ["0", "0"]  # a note is neither an error nor a warning
    data = json.loads(xenlive(env, "check", str(profile), "--json").stdout)
    options = next(c for c in data["targets"]["quirky-uefi"]["checks"] if c["id"] == "machine-options")
    assert options["status"] == "pass" and options["findings"] == [] and "efi=no-rs" in options["notes"][0]
    other = xenlive(env, "check", "default", "--target", "quirky-uefi")
    assert "  warn     machine-options: needs Xen efi=no-rs (known issue efi-runtime-crash), which no boot menu" in (
        other.stdout
    )


def test_check_on_32_bit_uefi_says_only_linux_starts(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "default", "--target", "asus-t100ta", "--target", "apple-macbookpro2-2")
    assert proc.returncode == 3
    baytrail = ("  ERROR    firmware-modes: on this machine's 32-bit UEFI without a CSM the medium starts only"
                ' "Linux without Xen", without the guests: Xen cannot start from 32-bit UEFI')  # fmt: skip
    assert baytrail in proc.stdout
    assert "  note     firmware-modes: starts Xen through the CSM (legacy BIOS boot)" in proc.stdout  # the Mac
    assert "error: error-level checks failed on 1 of 2 targets: asus-t100ta" in proc.stderr


def test_unknown_target_exit_2_lists_known(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "default", "--target", "pdp-11")
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: unknown target 'pdp-11'; known targets: ")
    assert "qemu-bios" in proc.stderr and "Traceback" not in proc.stderr


def test_malformed_hardware_file_exit_2_with_place(env: dict[str, str], tmp_path: Path) -> None:
    hw = tmp_path / "hw"
    hw.mkdir()
    (hw / "mybox.yaml").write_text("description: x\ncpu:\n  model: y\n  arch: x86_64\n  threads: two\n"
                                   "memory: 1G\nfirmware:\n  type: bios\n")  # fmt: skip
    env["XENLIVE_HARDWARE_PATH"] = str(hw)
    proc = xenlive(env, "check", "default", "--target", "mybox")
    assert proc.returncode == 2
    assert (
        proc.stderr.splitlines()[0] == f"error: {hw / 'mybox.yaml'}:5:12: cpu.threads: expected an integer, got 'two'"
    )


def test_host_never_crashes(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "default", "--host")
    assert proc.returncode in (0, 3), proc.stderr
    assert "\nhost " in proc.stdout and "Traceback" not in proc.stderr


def test_list(env: dict[str, str]) -> None:
    proc = xenlive(env, "check", "--list")
    assert proc.returncode == 0
    lines = proc.stdout.splitlines()
    assert any(line.startswith("cpu-64bit ") and " target " in line for line in lines)
    assert any(line.startswith("unique-names ") and " profile " in line for line in lines)
    assert "known targets: " in proc.stdout


def test_build_stops_at_static_error_before_long_steps(env: dict[str, str], tmp_path: Path) -> None:
    profile = tmp_path / "big.yaml"
    profile.write_text("name: big\nguests:\n  - name: huge\n    memory: 8G\n")
    out = tmp_path / "big.iso"
    proc = xenlive(env, "build", str(profile), "-o", str(out))
    if "not installed" in proc.stderr:
        pytest.skip("host build tools missing")
    assert proc.returncode == 3
    assert "qemu-bios: [memory-budget] needs " in proc.stderr
    assert "hint: fix the profile, or build anyway with --ignore-check memory-budget" in proc.stderr
    assert "dom0 base system" not in proc.stderr and not out.exists()


def test_build_refuses_unknown_ignore_check(env: dict[str, str], tmp_path: Path) -> None:
    proc = xenlive(env, "build", "default", "-o", str(tmp_path / "x.iso"), "--ignore-check", "memory-budgte")
    if "not installed" in proc.stderr:
        pytest.skip("host build tools missing")
    assert proc.returncode == 2
    assert "error: unknown check id 'memory-budgte'" in proc.stderr
