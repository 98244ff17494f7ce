"""Build the built-in default profile for real and boot it in QEMU four ways (BIOS/UEFI x CD/USB).

Needs root (mmdebstrap), the host tools from scripts/setup and access to the Debian mirror.
Under TCG on a 2-core machine: about 2.5 minutes to build, about 70 s per boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest

from builder.hardware import load_target, load_target_file
from tests.integration.common import xenlive as run_xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

BOOT_TIMEOUT = 900
EPOCH = "1764115200"


def xenlive(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    return run_xenlive(*args, check=check, **env)


@pytest.fixture(scope="module")
def default_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    iso = tmp_path_factory.mktemp("iso") / "default.iso"
    xenlive("build", "-o", str(iso), SOURCE_DATE_EPOCH=EPOCH)
    assert iso.is_file()
    return iso


def test_iso_has_bios_and_uefi_boot_images(default_iso):
    report = subprocess.run(["xorriso", "-indev", str(default_iso), "-report_el_torito", "plain"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "El Torito boot img :   1  BIOS" in report
    assert "El Torito boot img :   2  UEFI" in report


def test_iso_is_hybrid_with_valid_mbr_and_gpt(default_iso):
    report = subprocess.run(["xorriso", "-indev", str(default_iso), "-report_system_area", "plain"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "MBR" in report and "GPT" in report
    assert "/boot/grub/efi.img" in report
    sgdisk = subprocess.run(["sgdisk", "-v", str(default_iso)], capture_output=True, text=True)
    assert "No problems found" in sgdisk.stdout, sgdisk.stdout


def test_verify_passes_and_names_a_changed_file(default_iso, tmp_path):
    assert "OK" in xenlive("verify", str(default_iso)).stdout
    damaged = tmp_path / "damaged.iso"
    data = bytearray(default_iso.read_bytes())
    offset = data.find(b"Loading Xen...")
    data[offset] ^= 0x20
    damaged.write_bytes(bytes(data))
    proc = xenlive("verify", str(damaged), check=False)
    assert proc.returncode == 1
    assert "/boot/grub/grub.cfg: sha256 differs from the manifest" in proc.stderr


def test_rebuild_is_cached_and_byte_identical(default_iso, tmp_path):
    again = tmp_path / "again.iso"
    proc = xenlive("--debug", "build", "-o", str(again), SOURCE_DATE_EPOCH=EPOCH)
    assert "reusing cached dom0 base" in proc.stderr
    assert "+ mmdebstrap" not in proc.stderr
    assert again.read_bytes() == default_iso.read_bytes()
    assert (tmp_path / "SHA256SUMS").read_text().endswith("  again.iso\n")


def test_matrix_boots_to_ready_with_guest_running(default_iso, tmp_path):
    reports, junit = tmp_path / "reports", tmp_path / "junit.xml"
    proc = xenlive("test", str(default_iso), "--matrix", "--timeout", str(BOOT_TIMEOUT), "--json",
                   "--report-dir", str(reports), "--junit", str(junit), "--expect", ".*XENLIVE-HWCHECK.*",
                   "--exec", "xl list", "--exec", "test -d /run/live/medium && echo medium", check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    runs = json.loads(proc.stdout)
    assert {(r["firmware"], r["media"]) for r in runs} == {(f, m) for f in ("bios", "uefi") for m in ("cdrom", "usb")}
    for run in runs:
        assert run["passed"] and run["ready"]["guests"] == {"tiny": {"state": "running"}}, run
        built = json.loads(default_iso.with_name(default_iso.name + ".manifest.json").read_text())["xen"]
        assert run["ready"]["xen"].split(".")[:2] == built.split(".")[:2]  # the Xen the build put on it
        assert {"boot loader", "xen", "dom0 kernel", "dom0 userspace", "ready"} <= set(run["stages"])
        assert run["expected"][".*XENLIVE-HWCHECK.*"] is not None
        xl_list, medium = run["commands"]  # --exec: typed on dom0's serial console, run as root
        assert xl_list["exit"] == 0 and any(line.startswith("Domain-0 ") for line in xl_list["output"]), xl_list
        assert any(line.startswith("tiny ") for line in xl_list["output"]), xl_list
        assert medium["exit"] == 0 and "medium" in medium["output"], medium
        run_dir = Path(run["report_dir"])
        assert {p.name for p in run_dir.iterdir()} >= {"console.log", "menu.png", "end.png", "result.json"}
        assert (run_dir / "menu.png").read_bytes().startswith(b"\x89PNG")
        same_verdict_as_the_shipped_description(run)
        print(f"{run['firmware']}/{run['media']}: READY after {run['seconds']} s ({run['accel']}): {run['stages']}")
    suite = ET.parse(junit).getroot()
    assert suite.get("tests") == "4" and suite.get("failures") == "0"


def same_verdict_as_the_shipped_description(run: dict) -> None:
    """The machine dom0 described (machine.yaml), checked against the default profile, gives the same
    result for every check as the hardware file of the QEMU machine that booted."""
    report = run["machine_report"]
    assert report["problems"] == [] and report["file"] == str(Path(run["report_dir"]) / "machine.yaml"), report
    shipped = f"qemu-{run['firmware']}"
    proc = xenlive("check", "default", "--target", report["file"], "--target", shipped, "--json")
    targets = json.loads(proc.stdout)["targets"]
    checks = {name: {c["id"]: c["status"] for c in t["checks"]} for name, t in targets.items()}
    assert checks["machine"] == checks[shipped], (report, checks)
    assert targets["machine"]["verdict"] == targets[shipped]["verdict"] == "ok"
    seen, known = (load_target_file(Path(report["file"])), load_target(shipped))
    assert seen.dmi == known.dmi and seen.firmware.type == known.firmware.type and seen.memory == known.memory
    assert seen.cpu.threads == known.cpu.threads and set(seen.cpu.flags) == set(known.cpu.flags)


def test_broken_dom0_kernel_fails_at_xen_with_reason(default_iso, tmp_path):
    broken = tmp_path / "broken.iso"
    iso = pycdlib.PyCdlib()
    iso.open(str(default_iso))
    offset = iso.get_record(rr_path="/live/vmlinuz").extent_location() * 2048
    iso.close()
    data = bytearray(default_iso.read_bytes())
    data[offset : offset + 65536] = b"this is not a kernel\n".ljust(65536, b"\0")  # the bzImage header is gone
    broken.write_bytes(bytes(data))
    proc = xenlive("test", str(broken), "--timeout", "300", "--json", "--report-dir", str(tmp_path / "r"),
                   check=False)  # fmt: skip
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    assert result["stage"] == "xen" and "Panic on CPU" in result["reason"], result
    assert result["seconds"] < 300
    assert "expected next: Xen to start the dom0 kernel" in proc.stderr
    leftover = subprocess.run(["pgrep", "-f", f"qemu-system.*{broken}"], capture_output=True, text=True).stdout
    assert leftover == ""
