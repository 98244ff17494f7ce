"""Debian 13 builds: builder/profiles/trixie.yaml with Xen 4.20 and Linux 6.12, its facts read from the files.

The default is still Debian 12 (tests/integration/test_default_iso.py boots it every way). This
proves the per-suite package list, the introspection of zstd kernels and .ko.xz modules, the
manifest, and that a trixie dom0 reaches XENLIVE-READY with its guest running (README, "Debian 13").
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .test_default_iso import xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]


def test_trixie_dom0_builds_with_xen_4_20_and_boots_to_ready(tmp_path: Path) -> None:
    iso = tmp_path / "trixie.iso"
    build = xenlive("build", "trixie", "-o", str(iso), "--json")
    versions = json.loads(build.stdout)["versions"]
    assert versions["xen"].startswith("4.20") and versions["linux"].startswith("6.12"), versions
    manifest = json.loads(iso.with_name(iso.name + ".manifest.json").read_text())
    assert manifest["profile"]["dom0"]["suite"] == "trixie"
    dom0 = manifest["dom0"]
    assert dom0["xen"]["package"] == "xen-hypervisor-4.20-amd64"
    assert dom0["xen"]["options"]["PV32"] is False and dom0["xen"]["options"]["SHADOW_PAGING"] is False
    assert dom0["kernel"]["compression"] == "zstd" and "xz" in dom0["kernel"]["modules_compression"]
    verify = xenlive("verify", str(iso))
    assert verify.returncode == 0
    # Debian 13's dom0 takes about twice Debian 12's time to boot under TCG: a longer timeout.
    boot = xenlive("test", str(iso), "--timeout", "1500", "--json", "--report-dir", str(tmp_path / "report"))
    result = json.loads(boot.stdout)
    assert result["passed"] and result["ready"]["guests"]["tiny"]["state"] == "running", result
    print(f"trixie bios/cdrom: READY after {result['seconds']} s: {result['stages']}")
