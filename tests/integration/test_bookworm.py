"""Debian 12 still builds and boots: builder/profiles/bookworm.yaml with Xen 4.17 and Linux 6.1.

The default is Debian 13 (tests/integration/test_default_iso.py boots it every way). This proves
that the older suite keeps working: its own Xen and kernel from the per-suite package list, the
facts read from its files (an xz kernel, plain modules, Xen 4.17 with shadow paging), its
versions in the manifest, and a bookworm dom0 reaching XENLIVE-READY with its guest running.
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


def test_bookworm_dom0_builds_with_xen_4_17_and_boots_to_ready(tmp_path: Path) -> None:
    iso = tmp_path / "bookworm.iso"
    build = xenlive("build", "bookworm", "-o", str(iso), "--json", check=True)
    versions = json.loads(build.stdout)["versions"]
    assert versions["xen"].startswith("4.17") and versions["linux"].startswith("6.1."), versions
    manifest = json.loads(iso.with_name(iso.name + ".manifest.json").read_text())
    assert manifest["profile"]["dom0"]["suite"] == "bookworm"
    assert [g["debian"]["suite"] for g in manifest["profile"]["guests"]] == ["bookworm"]  # guests follow dom0
    dom0 = manifest["dom0"]
    assert dom0["xen"]["package"] == "xen-hypervisor-4.17-amd64"
    assert dom0["xen"]["options"]["SHADOW_PAGING"] is True  # Debian 13's Xen 4.20 is built without it
    assert dom0["kernel"]["compression"] == "xz" and dom0["kernel"]["modules_compression"] == ["none"]
    assert xenlive("verify", str(iso)).returncode == 0
    boot = xenlive("test", str(iso), "--timeout", "1200", "--json", "--report-dir", str(tmp_path / "report"))
    result = json.loads(boot.stdout)
    assert result["passed"] and result["ready"]["guests"]["tiny"]["state"] == "running", result
    assert result["ready"]["xen"].startswith("4.17."), result["ready"]
    print(f"bookworm bios/cdrom: READY after {result['seconds']} s: {result['stages']}")
