"""Boot the default image the ways real machines do that the classic matrix does not (issue 13).

- As a USB stick seen through its partition tables alone (`--media stick`: the El Torito boot
  record is renamed in the drive's snapshot), on BIOS through the MBR, on 64-bit UEFI through the
  GPT's ESP (BOOTX64.EFI) and on 32-bit UEFI through the same ESP (BOOTIA32.EFI).
- On 32-bit UEFI (ovmf-ia32, a 64-bit CPU) from a CD, where the medium offers Linux without Xen.
- A control: with the partition tables wiped as well, the stick does not boot on UEFI, so the
  stick boots above really went through the tables and not through El Torito.

Needs root (mmdebstrap), the host tools from scripts/setup (grub-efi-ia32-bin, ovmf-ia32) and the
Debian mirror. Under TCG on 2 cores: about 70 to 100 s per boot that reaches XENLIVE-READY, plus
the control's timeout.
"""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder.hybrid import SECTOR
from tests.integration.common import xenlive as run_xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

BOOT_TIMEOUT = 900
CONTROL_TIMEOUT = 150  # OVMF tries the stick, then the network, then gives up to its shell


def xenlive(*args: str, check: bool = True, **env: str) -> subprocess.CompletedProcess[str]:
    return run_xenlive(*args, check=check, **env)


@pytest.fixture(scope="module")
def default_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    iso = tmp_path_factory.mktemp("iso") / "default.iso"
    xenlive("build", "-o", str(iso))
    return iso


def console(run: dict[str, object]) -> str:
    text = (Path(str(run["report_dir"])) / "console.log").read_text(errors="replace")
    return text


def test_sticks_boot_through_the_partition_tables_alone(default_iso: Path, tmp_path: Path) -> None:
    reports, junit = tmp_path / "reports", tmp_path / "junit.xml"
    proc = xenlive("test", str(default_iso), "--firmware", "all", "--media", "stick", "--timeout", str(BOOT_TIMEOUT),
                   "--json", "--report-dir", str(reports), "--junit", str(junit), check=False)  # fmt: skip
    runs = {(r["firmware"], r["media"]): r for r in json.loads(proc.stdout)}
    assert proc.returncode == 0, proc.stderr
    built_xen = json.loads(default_iso.with_name(default_iso.name + ".manifest.json").read_text())["dom0"]["xen"]
    assert set(runs) == {("bios", "stick"), ("uefi", "stick"), ("uefi-ia32", "stick")}
    for firmware in ("bios", "uefi"):
        run = runs[(firmware, "stick")]
        assert run["passed"] and run["runs"] == "xen", run
        assert run["ready"]["xen"] == built_xen["version"] and run["ready"]["guests"] == {"tiny": {"state": "running"}}
    ia32 = runs[("uefi-ia32", "stick")]
    assert ia32["passed"] and ia32["runs"] == "linux" and ia32["ready"]["xen"] is None, ia32
    for firmware in ("uefi", "uefi-ia32"):
        assert "USB HARDDRIVE" in console(runs[(firmware, "stick")])  # OVMF started the stick's loader
    assert "32-bit UEFI: Xen cannot start from it" in console(ia32)
    for firmware, run in runs.items():
        print(f"{'/'.join(firmware)}: READY after {run['seconds']} s: {run['stages']}")
    assert ET.parse(junit).getroot().get("failures") == "0"


def test_32_bit_uefi_boots_linux_without_xen_from_a_cd(default_iso: Path, tmp_path: Path) -> None:
    proc = xenlive("test", str(default_iso), "--firmware", "uefi-ia32", "--timeout", str(BOOT_TIMEOUT), "--json",
                   "--report-dir", str(tmp_path / "r"), check=False)  # fmt: skip
    run = json.loads(proc.stdout)
    assert proc.returncode == 0 and run["passed"], proc.stderr
    assert run["ready"]["xen"] is None and "xen" not in run["stages"]
    text = console(run)
    # The menu's one entry, and the kernel on the bare console. (GRUB prints "Booting `...'" only
    # when its countdown boots the entry; `xenlive test` chooses it with Enter.)
    assert "default: Linux without Xen" in text and "console=ttyS0,115200" in text and "(XEN)" not in text
    assert "Loading Xen" not in text  # the Xen entries are not even offered by GRUB i386-efi
    print(f"uefi-ia32/cdrom: READY after {run['seconds']} s: {run['stages']}")


def test_control_a_stick_without_partition_tables_does_not_boot_on_uefi(default_iso: Path, tmp_path: Path) -> None:
    """The stick way must depend on the tables: wipe the MBR's partition entries and both GPT
    headers of a copy and it no longer starts (El Torito, the other way in, is hidden)."""
    wiped = tmp_path / "wiped.iso"
    data = bytearray(default_iso.read_bytes())
    data[446:510] = bytes(64)  # MBR partition entries
    data[SECTOR : 2 * SECTOR] = bytes(SECTOR)  # primary GPT header
    data[-SECTOR:] = bytes(SECTOR)  # backup GPT header, in the image's last sector
    wiped.write_bytes(bytes(data))
    proc = xenlive("test", str(wiped), "--firmware", "uefi", "--media", "stick", "--timeout", str(CONTROL_TIMEOUT),
                   "--json", "--report-dir", str(tmp_path / "r"), check=False)  # fmt: skip
    run = json.loads(proc.stdout)
    assert proc.returncode == 1 and not run["passed"]
    assert run["stage"] == "firmware" and "boot loader" not in run["stages"], run
