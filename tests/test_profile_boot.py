"""Build profiles/xenoppix.yaml for real, boot it once in QEMU, and read the settings off the console.

The dom0 service xenlive-report prints one XENLIVE-SETTINGS line before XENLIVE-READY; it is the
evidence that the Japanese locale loads, the jp106 keymap is in the kernel, the time zone is set and
the xenbr0 bridge holds dom0's DHCP address. Needs root; about 2 minutes to build (once the dom0 base
is cached; 7 the first time) and 2.5 minutes to boot under TCG.
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


def xenlive(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.fail(f"xenlive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def test_xenoppix_boots_with_japanese_locale_keyboard_and_bridge(tmp_path: Path) -> None:
    iso = tmp_path / "xenoppix.iso"
    reports = tmp_path / "report"
    xenlive("build", "profiles/xenoppix.yaml", "-o", str(iso))
    xenlive("test", str(iso), "--report-dir", str(reports), "--json")
    (log,) = reports.glob("*/console.log")
    result = json.loads((log.parent / "result.json").read_text())
    assert result["passed"], result["reason"]
    assert set(result["ready"]["guests"]) == {"tiny", "sakura", "fuji"}
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("XENLIVE-SETTINGS ")]
    assert lines, "dom0 printed no XENLIVE-SETTINGS line"
    settings = json.loads(lines[-1].split(" ", 1)[1])
    assert settings["lang"] == "ja_JP.UTF-8" and settings["charmap"] == "UTF-8"  # the locale data loads
    assert settings["weekday"].endswith("曜日")  # dates come out in Japanese
    assert settings["timezone"] == "JST"
    assert settings["keyboard"] == "jp106/jp" and settings["keyboard_setup"] == "active"
    assert settings["keycode_89"].startswith("keycode 89 = backslash")  # the jp106 "ro" key; unmapped on us
    assert settings["bridge"] == "xenbr0" and settings["address"].startswith("10.0.2.")
    assert settings["ports"]  # the NIC is enslaved to the bridge
