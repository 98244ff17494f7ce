"""The boot-time check script (dom0's /usr/lib/xenlive/hwcheck), run with a fake `xl` on PATH.

`xl` is the edge mocked here: the script's logic (parse `xl info`, drop autostart links of
guests that cannot run, write their reasons, report) runs for real under /bin/sh.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.profile import Guest, GuestType, Profile
from builder.templating import render

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "builder/templates/dom0/usr/lib/xenlive/hwcheck"

XL_INFO = """\
host                   : xenlive
release                : 6.1.0-50-amd64
nr_cpus                : 2
total_memory           : 2047
free_memory            : 900
virt_caps              : {caps}
xen_version            : 4.17.5
"""


def guest_cfg(name: str, type: str = "pv", memory: int = 128, vcpus: int = 1) -> str:
    """The xl config exactly as the guests stage renders it."""
    guest = Guest(name=name, type=GuestType(type), memory=memory, vcpus=vcpus)
    return render("guest.cfg.j2", profile=Profile(name="p"), guest=guest, kernel="/k", ramdisk="/r")


def run(tmp_path: Path, guests: list[str], caps: str = "pv hvm hvm_directio pv_directio shadow gnttab-v1",
        cmdline: str = "boot=live") -> tuple[subprocess.CompletedProcess[str], Path, Path]:  # fmt: skip
    bin_dir, auto, out, sysfs = (tmp_path / d for d in ("bin", "auto", "out", "sys"))
    for d in (bin_dir, auto, sysfs / "bus/pci/devices/0000:00:03.0"):
        d.mkdir(parents=True)
    xl = bin_dir / "xl"
    xl.write_text(f"#!/bin/sh\n[ \"$1\" = info ] && cat <<'EOF'\n{XL_INFO.format(caps=caps)}EOF\n")
    xl.chmod(0o755)
    nic = sysfs / "bus/pci/devices/0000:00:03.0"
    (nic / "class").write_text("0x020000\n")
    (nic / "vendor").write_text("0x8086\n")
    (nic / "device").write_text("0x100e\n")
    for cfg in guests:
        name = cfg.split('name = "')[1].split('"')[0]
        (auto / f"{name}.cfg").write_text(cfg)
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", XENLIVE_AUTO_DIR=str(auto),
               XENLIVE_HWCHECK_DIR=str(out), XENLIVE_CONSOLE=str(tmp_path / "console"),
               XENLIVE_SYSFS=str(sysfs), XENLIVE_CMDLINE=str(tmp_path / "cmdline"))  # fmt: skip
    proc = subprocess.run(["/bin/sh", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc, auto, out


def test_guest_too_big_for_free_memory_is_skipped(tmp_path: Path) -> None:
    proc, auto, out = run(tmp_path, [guest_cfg("tiny"), guest_cfg("big", memory=1536)])
    lines = proc.stdout.splitlines()
    assert lines[0] == ("XENLIVE-HWCHECK host: Xen 4.17.5, 2 CPUs, 2047 MiB (900 MiB free for guests),"
                        " virt_caps: pv hvm hvm_directio pv_directio shadow gnttab-v1")  # fmt: skip
    assert "XENLIVE-HWCHECK ok   guest tiny (pv, 128 MiB, 1 vCPU)" in lines
    assert ("XENLIVE-HWCHECK SKIP guest big (pv, 1536 MiB, 1 vCPU): [memory-budget] needs 1555 MiB,"
            " only 900 MiB of 2047 MiB are free") in lines  # fmt: skip
    assert lines[-1] == "XENLIVE-HWCHECK done: 1 guests will start, 1 skipped"
    assert sorted(p.name for p in auto.iterdir()) == ["tiny.cfg"]
    assert (out / "big").read_text() == (
        "skipped\nhardware check [memory-budget] needs 1555 MiB, only 900 MiB of 2047 MiB are free\n"
    )
    assert (tmp_path / "console").read_text().splitlines()[-1] == lines[-1]


def test_unbound_device_is_reported(tmp_path: Path) -> None:
    proc, _, _ = run(tmp_path, [])
    assert "XENLIVE-HWCHECK warn device-drivers: 0000:00:03.0 (8086:100e, class 020000) has no driver in dom0" in (
        proc.stdout.splitlines()
    )


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ("pv hvm hap shadow", "XENLIVE-HWCHECK ok   guest h (hvm, 128 MiB, 1 vCPU)"),
        ("pv", "XENLIVE-HWCHECK SKIP guest h (hvm, 128 MiB, 1 vCPU): [hvm-needs-vtx] type hvm needs VT-x or AMD-V,"
               " which this machine lacks or its firmware disables"),
        ("pv hvm", "XENLIVE-HWCHECK SKIP guest h (hvm, 128 MiB, 1 vCPU): [hvm-needs-hap] type hvm needs EPT/NPT:"
                   " the CPU has none and Xen has no shadow paging"),
        ("pv hvm shadow", "XENLIVE-HWCHECK warn hvm-shadow-paging: guest h runs on shadow paging (no EPT/NPT):"
                          " expect it to be slow"),
    ],
)  # fmt: skip
def test_hvm_guest_against_virt_caps(tmp_path: Path, caps: str, expected: str) -> None:
    proc, _, _ = run(tmp_path, [guest_cfg("h", type="hvm")], caps=caps)
    assert expected in proc.stdout.splitlines()


def test_vcpus_warning_and_safe_mode(tmp_path: Path) -> None:
    proc, auto, _ = run(tmp_path / "a", [guest_cfg("wide", vcpus=4)])
    assert "XENLIVE-HWCHECK warn vcpus: guest wide has 4 vCPUs, the machine 2 CPUs" in proc.stdout.splitlines()
    assert (auto / "wide.cfg").exists()
    proc, auto, _ = run(tmp_path / "b", [guest_cfg("big", memory=4096)], cmdline="boot=live xenlive.safe")
    assert proc.stdout.splitlines()[-1] == "XENLIVE-HWCHECK safe mode: guests are not started, nothing to check"
    assert (auto / "big.cfg").exists()


def test_without_xen_nothing_is_touched(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "xl").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "xl").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", XENLIVE_HWCHECK_DIR=str(tmp_path / "out"),
               XENLIVE_CONSOLE=str(tmp_path / "console"))  # fmt: skip
    proc = subprocess.run(["/bin/sh", str(SCRIPT)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0
    assert proc.stdout == "XENLIVE-HWCHECK not running under Xen (xl info failed): no guest is checked\n"
