"""Build profiles/default.yaml for real and boot it in QEMU four ways (BIOS/UEFI x CD/USB).

Needs root (mmdebstrap), the host tools from scripts/setup and network access to the Debian mirror.
Under TCG on a 2-core machine: about 2.5 minutes to build, 1.5 to 3 minutes per boot.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

BOOT_TIMEOUT = 900


def xenlive(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True)
    if check and proc.returncode != 0:
        pytest.fail(f"xenlive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def default_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    iso = tmp_path_factory.mktemp("iso") / "default.iso"
    xenlive("build", "-o", str(iso))
    assert iso.is_file()
    return iso


def test_iso_has_bios_and_uefi_boot_images(default_iso):
    report = subprocess.run(["xorriso", "-indev", str(default_iso), "-report_el_torito", "plain"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "El Torito boot img :   1  BIOS" in report
    assert "El Torito boot img :   2  UEFI" in report


def test_iso_is_hybrid_with_mbr_and_gpt(default_iso):
    report = subprocess.run(["xorriso", "-indev", str(default_iso), "-report_system_area", "plain"],
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "MBR isohybrid" in report and "GPT" in report
    assert "/boot/grub/efi.img" in report


def test_rebuild_reuses_the_cached_dom0_base(default_iso, tmp_path):
    proc = xenlive("--debug", "build", "-o", str(tmp_path / "again.iso"))
    assert "reusing cached dom0 base" in proc.stderr
    assert "+ mmdebstrap" not in proc.stderr


@pytest.mark.parametrize(
    ("firmware", "media"), [("bios", "cdrom"), ("bios", "usb"), ("uefi", "cdrom"), ("uefi", "usb")]
)
def test_boots_to_ready_with_guest_running(default_iso, firmware, media, tmp_path):
    console = tmp_path / "console.log"
    proc = xenlive("test", str(default_iso), "--firmware", firmware, "--media", media,
                   "--timeout", str(BOOT_TIMEOUT), "--json", "--log", str(console), check=False)  # fmt: skip
    assert proc.returncode == 0, f"{firmware}/{media} failed:\n{proc.stderr}"
    result = json.loads(proc.stdout)
    assert result["passed"] and result["ready"]["guests"] == {"tiny": {"state": "running"}}
    assert result["ready"]["xen"].startswith("4.17")
    assert {"xen", "dom0 kernel", "dom0 userspace", "ready"} <= set(result["stages"])
    print(f"{firmware}/{media}: READY after {result['seconds']} s ({result['accel']})")
