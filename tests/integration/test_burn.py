"""Burn the real default ISO and boot what was written: the image on a "stick" must still boot.

Builds the built-in default profile (about 30 s with a warm dom0 cache), writes it with `xenlive burn`
to an image file and through the CD path (xorriso's stdio: pseudo-drive), then boots the written
file in QEMU as a USB disk (about 70 s to XENLIVE-READY under TCG on 2 cores).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.integration.common import xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

BOOT_TIMEOUT = 900


@pytest.fixture(scope="module")
def default_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    iso = tmp_path_factory.mktemp("iso") / "default.iso"
    proc = xenlive("build", "-o", str(iso))
    assert proc.returncode == 0, proc.stderr
    return iso


@pytest.fixture(scope="module")
def burned_file(default_iso: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    stick = tmp_path_factory.mktemp("stick") / "stick.img"
    proc = xenlive("burn", str(default_iso), str(stick), "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["verified"] is True and result["size"] == default_iso.stat().st_size
    return stick


def test_burned_file_is_the_iso_byte_for_byte(default_iso, burned_file):
    assert burned_file.stat().st_size == default_iso.stat().st_size
    assert burned_file.read_bytes() == default_iso.read_bytes()


def test_burned_file_boots_in_qemu_as_a_usb_disk(burned_file, tmp_path):
    report = tmp_path / "report"
    proc = xenlive("test", str(burned_file), "--media", "usb", "--timeout", str(BOOT_TIMEOUT),
                   "--report-dir", str(report), "--json")  # fmt: skip
    console = report / "bios-usb/console.log"
    assert proc.returncode == 0, f"{proc.stderr}\n{console.read_text(errors='replace')[-3000:]}"
    result = json.loads(proc.stdout)
    assert result["passed"] and (result["firmware"], result["media"]) == ("bios", "usb")


def test_cd_path_writes_the_real_iso_to_a_stdio_pseudo_drive(default_iso, tmp_path):
    disc = tmp_path / "dvd.img"
    proc = xenlive("burn", str(default_iso), f"stdio:{disc}", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["verified"] is True
    size = default_iso.stat().st_size
    with disc.open("rb") as f:
        assert f.read(size) == default_iso.read_bytes()
