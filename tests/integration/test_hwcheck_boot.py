"""Build an image with a guest too big for QEMU's 2 GiB, boot it, and read the boot-time report.

Proves the whole path: the static gate stops the build (exit 3) until the check is named with
--ignore-check, the built-file gate passes, and at boot the dom0 service prints XENLIVE-HWCHECK
lines, drops the big guest's autostart link and XENLIVE-READY gives it state "skipped" with the
reason, while the small guest runs. One TCG boot: about 2 to 4 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pycdlib
import pytest

from builder.checks.rules import guest_need_mib
from builder.profile import Guest
from tests.integration.common import xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

PROFILE = """\
name: hwproof
description: one guest that fits in QEMU's 2 GiB, one that does not
guests:
  - name: tiny
    memory: 128M
  - name: big
    memory: 1536M
"""


def test_boot_time_report_and_ready_line(tmp_path: Path) -> None:
    profile = tmp_path / "hwproof.yaml"
    profile.write_text(PROFILE)
    iso = tmp_path / "hwproof.iso"
    refused = xenlive("build", str(profile), "-o", str(iso))
    assert refused.returncode == 3 and "[memory-budget]" in refused.stderr and not iso.exists()
    built = xenlive("build", str(profile), "-o", str(iso), "--ignore-check", "memory-budget")
    assert built.returncode == 0, built.stderr
    boot = xenlive("test", str(iso), "--json", "--report-dir", str(tmp_path / "report"), "--timeout", "900")
    result = json.loads(boot.stdout)
    assert boot.returncode == 1  # a guest the profile asked for did not run: the boot test says so
    console = (Path(result["report_dir"]) / "console.log").read_text(errors="replace")
    assert "XENLIVE-HWCHECK host: Xen 4." in console
    assert "XENLIVE-HWCHECK ok   guest tiny (pv, 128 MiB, 1 vCPU)" in console
    # dom0 counts as the build-time budget does: memory, overhead and the initrd as it is on the medium.
    need = guest_need_mib(Guest(name="big", memory=1536), medium_file_size(iso, "/guests/big/initrd.img"))
    assert need > 1536 + 4 + 15
    assert f"XENLIVE-HWCHECK SKIP guest big (pv, 1536 MiB, 1 vCPU): [memory-budget] needs {need} MiB" in console
    ready = result["ready"]
    assert ready["guests"]["tiny"] == {"state": "running"}
    assert ready["guests"]["big"]["state"] == "skipped"
    assert ready["guests"]["big"]["reason"].startswith(f"hardware check [memory-budget] needs {need} MiB")


def medium_file_size(iso: Path, path: str) -> int:
    medium = pycdlib.PyCdlib()
    medium.open(str(iso))
    try:
        return int(medium.get_record(rr_path=path).get_data_length())
    finally:
        medium.close()
