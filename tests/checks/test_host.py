"""`--host` facts from a fake /proc and /sys; anything missing is unknown, never a crash."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.checks import Status, run_checks
from builder.checks.host import SECURE_BOOT_VAR, host_target
from builder.introspect import BuiltFacts
from builder.profile import Firmware, Profile

CPUINFO = """\
processor\t: 0
model name\t: AMD Ryzen 5 3600 6-Core Processor
flags\t\t: fpu lm pae nx svm npt sse2
processor\t: 1
model name\t: AMD Ryzen 5 3600 6-Core Processor
flags\t\t: fpu lm pae nx svm npt sse2
"""


def fake_root(tmp_path: Path, *, efi: bool = False, secure: bool = False, platform_size: str | None = None) -> Path:
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(CPUINFO)
    (root / "proc/meminfo").write_text("MemTotal:       16318504 kB\nMemFree:  1 kB\n")
    (root / "sys/firmware").mkdir(parents=True)
    if efi:
        (root / "sys/firmware/efi/efivars").mkdir(parents=True)
        (root / "sys/firmware/efi/efivars" / SECURE_BOOT_VAR).write_bytes(
            b"\x06\0\0\0" + (b"\x01" if secure else b"\0")
        )
        if platform_size is not None:
            (root / "sys/firmware/efi/fw_platform_size").write_text(platform_size + "\n")
    (root / "sys/class/iommu/dmar0").mkdir(parents=True)
    dev = root / "sys/bus/pci/devices/0000:00:02.0"
    dev.mkdir(parents=True)
    (dev / "vendor").write_text("0x8086\n")
    (dev / "device").write_text("0x27A2\n")
    (dev / "class").write_text("0x030000\n")
    return root


def test_host_from_proc_and_sys(tmp_path: Path) -> None:
    t = host_target(fake_root(tmp_path))
    assert t.name == "host"
    assert t.cpu.model == "AMD Ryzen 5 3600 6-Core Processor" and t.cpu.threads == 2
    assert set(t.cpu.flags) == {"lm", "pae", "nx", "svm", "npt"} and t.has_virt and t.has_hap
    assert t.memory == 15936 and t.iommu is True
    assert t.firmware.type is Firmware.BIOS and t.firmware.csm is False and t.firmware.secure_boot is False
    assert [(d.id, d.class_code) for d in t.pci] == [("8086:27a2", "030000")]


def test_uefi_and_secure_boot(tmp_path: Path) -> None:
    t = host_target(fake_root(tmp_path, efi=True, secure=True))
    assert t.firmware.type is Firmware.UEFI and t.firmware.secure_boot is True
    assert t.firmware.csm is None  # a UEFI boot does not show whether the firmware could also boot BIOS media


@pytest.mark.parametrize(("size", "expected"), [("64", Firmware.UEFI), ("32", Firmware.UEFI_IA32)])
def test_uefi_platform_size_tells_32_from_64_bit_firmware(tmp_path: Path, size: str, expected: Firmware) -> None:
    """A 64-bit kernel on 32-bit UEFI (EFI mixed mode) says so in /sys/firmware/efi/fw_platform_size."""
    t = host_target(fake_root(tmp_path, efi=True, platform_size=size))
    assert t.firmware.type is expected


def test_nothing_readable_means_unknown_not_a_crash(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    t = host_target(empty)
    assert t.cpu.threads is None and t.memory is None and t.iommu is None and t.firmware.type is None
    profile = Profile(name="p")
    report = run_checks(profile, [t], BuiltFacts())
    status = {r.check.id: r.status for r in report.results}
    for check_id in ("cpu-64bit", "memory-budget", "vcpus", "firmware-modes"):
        assert status[check_id] is Status.UNKNOWN, check_id
    assert not report.errors
