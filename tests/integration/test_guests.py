"""The real guests: build profiles/xenoppix.yaml and boot it once in QEMU (TCG).

One build (about 2 min with a warm dom0 cache; the Debian guest's mmdebstrap and mkfs.ext4 add
about 1 min the first time) and one boot: XENLIVE-READY must list every guest running with its
ready marker seen, and the Debian guest must have proved on its console that it has an address
and pings dom0 over the bridge (the ready script copies that line to dom0's console). The Debian
guest boots under nested TCG, hence the long timeout.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

REPO = Path(__file__).resolve().parents[2]
BOOT_TIMEOUT = 900


def xenlive(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, cwd=REPO)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_xenoppix_guests_run_and_prove_their_network(tmp_path: Path) -> None:
    iso = tmp_path / "xenoppix.iso"
    built = xenlive("build", "profiles/xenoppix.yaml", "-o", str(iso))
    assert built.returncode == 0, built.stderr
    report = tmp_path / "report"
    proc = xenlive("test", str(iso), "--timeout", str(BOOT_TIMEOUT), "--report-dir", str(report), "--json")
    console = report / "bios-cdrom/console.log"
    log = console.read_text(errors="replace")
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
