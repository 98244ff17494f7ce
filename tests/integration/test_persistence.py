"""A stick that remembers (issue 14): burned with --persistence, booted twice from the same image file.

The profile persists dom0's /root and a Debian guest's disk. The first boot writes a file in /root
(over the serial console, then sync) and the guest counts its own boots on its disk
(XENLIVE-GUEST-NET ... boots=N, written by the guest itself). The second boot must see both: the file,
and boots=2. In between, the image file is the stick: `xenlive test --writable` keeps QEMU's writes.
The first boot is on BIOS, the second on UEFI: the stick's new tables serve both.

The faults a boot can show use the default appliance with dom0's /root on the stick (a busybox guest,
so a boot is about as fast as the default's): a stick whose partition another profile used, and one
whose file system e2fsck cannot repair. Both must reach READY from RAM and say why.

Needs root (mmdebstrap) and the Debian mirror. Under TCG on 2 cores: a few minutes to build the
guest, and two boots of a few minutes each.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.common import xenlive

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]
# Opt-in for its time (a Debian guest's two boots under nested TCG: about 11 minutes); CI runs the
# dom0 half of it in the test below. Passed here end to end on 2026-12-02.
TWO_BOOTS_OPT_IN = pytest.mark.skipif(
    os.environ.get("XENLIVE_TEST_PERSISTENCE") != "1",
    reason="two slow boots of a Debian guest; opt in with XENLIVE_TEST_PERSISTENCE=1",
)

BOOT_TIMEOUT = "1500"
PROFILE = """\
name: keeper
description: dom0's /root and a Debian guest's disk persist on the stick
xen:
  cmdline: dom0_mem=1024M,max:1024M
dom0:
  persist: [/root]
guests:
  - name: keep
    kind: debian
    memory: 256M
    write_buffer: 64M
    persist: true
    ready: "XENLIVE-GUEST-NET keep .*boots="
    ready_timeout: 1200  # a Debian guest's first boot under nested TCG: seen past 600 s on a busy machine
"""


def boot(stick: Path, report: Path, command: str, firmware: str) -> dict[str, Any]:
    proc = xenlive("test", str(stick), "--firmware", firmware, "--media", "usb", "--writable", "--timeout",
                   BOOT_TIMEOUT, "--json", "--report-dir", str(report), "--exec", command, check=False)  # fmt: skip
    result: dict[str, Any] = json.loads(proc.stdout)
    assert proc.returncode == 0 and result["passed"], (proc.stderr, result)
    return result


def guest_boots(result: dict[str, object]) -> list[int]:
    text = (Path(str(result["report_dir"])) / "console.log").read_text(errors="replace")
    # The ready service repeats the line that met the guest's ready pattern once, as its marker (the
    # guest's own log, relayed too, has it as well).
    return [int(n) for n in re.findall(r"XENLIVE-GUEST-MARKER keep: XENLIVE-GUEST-NET keep .* boots=(\d+)", text)]


@TWO_BOOTS_OPT_IN
def test_a_stick_keeps_dom0s_files_and_a_guests_disk_across_boots(tmp_path: Path) -> None:
    profile = tmp_path / "keeper.yaml"
    profile.write_text(PROFILE)
    iso, stick = tmp_path / "keeper.iso", tmp_path / "stick.img"
    xenlive("build", str(profile), "-o", str(iso), check=True)
    xenlive("burn", str(iso), str(stick), "--persistence", "256M", "--yes", check=True)

    first = boot(stick, tmp_path / "first", "echo kept-by-xenlive > /root/persisted && sync", "bios")
    ready = first["ready"]
    assert isinstance(ready, dict)
    assert ready["persistence"]["state"] == "on", ready["persistence"]
    assert ready["guests"]["keep"]["writes"] == "stick", ready["guests"]
    assert guest_boots(first) == [1]

    # Each boot kept its machine report on the stick too, under the machine's name (i440FX, then Q35).
    reports = "ls -1 /run/xenlive/persistence/xenlive-reports"
    second = boot(stick, tmp_path / "second", f"cat /root/persisted; {reports}; sync", "uefi")
    ready = second["ready"]
    assert isinstance(ready, dict)
    assert ready["persistence"]["state"] == "on" and ready["persistence"]["warnings"] == [], ready["persistence"]
    assert second["commands"][0]["output"] == [
        "kept-by-xenlive", "qemu-standard-pc-i440fx-piix-1996.yaml", "qemu-standard-pc-q35-ich9-2009.yaml"
    ], second["commands"]  # fmt: skip
    assert guest_boots(second) == [2]
    print(f"persistent boots: READY after {first['seconds']} s, then {second['seconds']} s")


LIGHT = """\
name: {name}
description: the default appliance, keeping dom0's /root on the stick
extends: [default]
dom0:
  persist: [/root]
"""


def persistence_partition(stick: Path) -> tuple[int, int]:
    """Byte offset and size of the stick's third MBR entry, the one burn --persistence adds."""
    with stick.open("rb") as f:
        f.seek(446 + 2 * 16 + 8)
        entry = f.read(8)
    return int.from_bytes(entry[:4], "little") * 512, int.from_bytes(entry[4:], "little") * 512


def light_stick(tmp_path: Path, name: str) -> Path:
    profile, iso, stick = tmp_path / f"{name}.yaml", tmp_path / f"{name}.iso", tmp_path / f"{name}.img"
    profile.write_text(LIGHT.format(name=name))
    xenlive("build", str(profile), "-o", str(iso), check=True)
    xenlive("burn", str(iso), str(stick), "--persistence", "64M", "--yes", check=True)
    return stick


def test_a_stick_of_another_profile_or_a_damaged_one_boots_from_ram_and_says_why(tmp_path: Path) -> None:
    """The faults of issue 14 that a boot can show: each ends at READY, with dom0 in RAM and the reason."""
    mine = light_stick(tmp_path, "mine")
    first = boot(mine, tmp_path / "mine", "echo mine > /root/owner-test && sync", "bios")
    assert first["ready"]["persistence"]["state"] == "on", first["ready"]

    # Another profile's image on a stick whose partition "mine" used: left as it is, RAM only.
    other = light_stick(tmp_path, "other")
    (at_mine, size), (at_other, other_size) = persistence_partition(mine), persistence_partition(other)
    assert size == other_size
    with mine.open("rb") as src, other.open("r+b") as dst:
        src.seek(at_mine)
        dst.seek(at_other)
        dst.write(src.read(size))
    result = boot(other, tmp_path / "other", "ls /root", "uefi")
    persistence = result["ready"]["persistence"]
    assert persistence["state"] == "ram" and "another profile's (mine)" in persistence["reason"], persistence
    assert "owner-test" not in result["commands"][0]["output"]

    # The stick of its own profile still has what the first boot wrote, on the other firmware too.
    again = boot(mine, tmp_path / "again", "cat /root/owner-test", "uefi")
    assert again["ready"]["persistence"]["state"] == "on", again["ready"]
    assert again["commands"][0]["output"] == ["mine"], again["commands"]

    # A damaged file system (its root directory's inode cleared, the file system marked as having
    # errors): e2fsck -p cannot repair that, so RAM only, and a warning. QEMU was stopped with the
    # file system mounted: its journal is replayed first, or the replay would undo the damage.
    part = tmp_path / "part.ext4"
    with mine.open("rb") as f:
        f.seek(at_mine)
        part.write_bytes(f.read(size))
    subprocess.run(["e2fsck", "-y", "-E", "journal_only", str(part)], check=False, capture_output=True)
    for request in ("clri <2>", "ssv state 2"):
        subprocess.run(["debugfs", "-w", "-R", request, str(part)], check=True, capture_output=True)
    with mine.open("r+b") as f:
        f.seek(at_mine)
        f.write(part.read_bytes())
    result = boot(mine, tmp_path / "damaged", "ls /root", "bios")
    persistence = result["ready"]["persistence"]
    assert persistence["state"] == "ram" and "damaged" in persistence["reason"], persistence
    assert any("e2fsck found errors" in w for w in persistence["warnings"]), persistence
    assert "owner-test" not in result["commands"][0]["output"]
