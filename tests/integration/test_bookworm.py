"""Debian 12 still builds and boots: profiles/bookworm.yaml (Xen 4.17, Linux 6.1) to XENLIVE-READY.

The default is Debian 13 (tests/integration/test_default_iso.py boots it every way); this boots the
older suite once, BIOS from a CD, and checks the versions the build recorded are bookworm's.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .test_default_iso import BOOT_TIMEOUT, xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]


def test_bookworm_dom0_boots_to_ready(tmp_path: Path) -> None:
    iso = tmp_path / "bookworm.iso"
    build = xenlive("build", "bookworm", "-o", str(iso), "--json")
    versions = json.loads(build.stdout)["versions"]
    assert versions["xen"].startswith("4.17") and versions["linux"].startswith("6.1."), versions
    manifest = json.loads(iso.with_name(iso.name + ".manifest.json").read_text())
    assert manifest["profile"]["dom0"]["suite"] == "bookworm"
    assert manifest["dom0"]["xen"]["package"] == "xen-hypervisor-4.17-amd64"
    proc = xenlive("test", str(iso), "--timeout", str(BOOT_TIMEOUT), "--json", "--report-dir", str(tmp_path / "r"),
                   check=False)  # fmt: skip
    run = json.loads(proc.stdout)
    assert proc.returncode == 0, run
    assert run["ready"]["xen"].startswith("4.17") and run["ready"]["guests"] == {"tiny": {"state": "running"}}
