"""The built-in xenoppix profile for real: one build, one boot in QEMU (TCG), read off the console.

The evidence: dom0's XENLIVE-SETTINGS line (the Japanese locale loads, the jp106 keymap is in the
kernel, the time zone is set, the xenbr0 bridge holds dom0's DHCP address), and XENLIVE-READY
listing every guest running with its ready marker seen, including the Debian guest's proof that it
has an address and pings dom0 over the bridge (the ready script copies that line to dom0's console).
About 3 minutes to build the first time (dom0 with locales, the Debian guest) and 3 to 10 minutes
to boot: the Debian guest boots under nested TCG, hence the long timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from tests.integration.common import xenlive as run_xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 1200


def xenlive(*args: str) -> subprocess.CompletedProcess[str]:
    return run_xenlive(*args, cwd=REPO)


@pytest.fixture(scope="module")
def boot(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], str]:
    """Build and boot once; the tests read the result and the console log."""
    tmp = tmp_path_factory.mktemp("xenoppix")
    iso = tmp / "xenoppix.iso"
    built = xenlive("build", "xenoppix", "-o", str(iso))
    assert built.returncode == 0, built.stderr
    report = tmp / "report"
    proc = xenlive("test", str(iso), "--timeout", str(BOOT_TIMEOUT), "--report-dir", str(report), "--json")
    return proc, (report / "bios-cdrom/console.log").read_text(errors="replace")


def test_guests_run_with_ready_markers_and_network_proof(boot):
    proc, log = boot
    assert proc.returncode == 0, f"{proc.stderr}\n{log[-4000:]}"
    ready_line = next(line for line in log.splitlines() if line.startswith("XENLIVE-READY "))
    ready = json.loads(ready_line.removeprefix("XENLIVE-READY "))
    assert set(ready["guests"]) == {"tiny", "sakura", "fuji"}
    for name, info in ready["guests"].items():
        assert info == {"state": "running", "ready": True}, name
    proof = re.search(
        r"XENLIVE-GUEST-MARKER sakura: XENLIVE-GUEST-NET sakura iface=\S+ addr=(\S+) dom0=(\S+) ping=ok", log
    )
    assert proof is not None, log[-4000:]
    assert proof.group(1) != "none" and proof.group(2) != "unknown"


def test_dom0_has_japanese_locale_keyboard_and_bridge(boot):
    _proc, log = boot
    lines = [line for line in log.splitlines() if line.startswith("XENLIVE-SETTINGS ")]
    assert lines, "dom0 printed no XENLIVE-SETTINGS line"
    settings = json.loads(lines[-1].split(" ", 1)[1])
    assert settings["lang"] == "ja_JP.UTF-8" and settings["charmap"] == "UTF-8"  # the locale data loads
    assert settings["weekday"].endswith("曜日")  # dates come out in Japanese
    assert settings["timezone"] == "JST"
    assert settings["keyboard"] == "jp106/jp" and settings["keyboard_setup"] == "active"
    assert settings["keycode_89"].startswith("keycode 89 = backslash")  # the jp106 "ro" key; unmapped on us
    assert settings["bridge"] == "xenbr0" and settings["address"].startswith("10.0.2.")
    assert settings["ports"]  # the NIC is enslaved to the bridge
