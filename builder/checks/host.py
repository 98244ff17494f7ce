"""Describe the machine xenlive runs on as a Target, from /proc and /sys.

Why: `xenlive check --host` answers "will this image run here?" for the machine in front of the
user. Any entry that is missing (a container without /sys, a kernel without efivars) leaves that
fact unknown, so the checks that need it say "unknown" instead of crashing or guessing.
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.hardware import Arch, Cpu, MachineFirmware, PciDevice, Target
from builder.profile.model import Firmware

SECURE_BOOT_VAR = "SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
FLAG_ALIASES = {"ept": "ept", "npt": "npt", "vmx": "vmx", "svm": "svm", "lm": "lm", "pae": "pae", "nx": "nx"}


def _read(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


def host_target(root: Path = Path("/")) -> Target:
    """This machine (or a tree laid out like one, for tests) as a Target named "host"."""
    cpuinfo = _read(root / "proc/cpuinfo") or ""
    model, threads = "", 0
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "processor":
            threads += 1
        elif key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not flags:
            flags = {f for f in value.split() if f in FLAG_ALIASES}
    memory = None
    for line in (_read(root / "proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // 1024
    sys_fw = root / "sys/firmware"
    csm: bool | None = False
    firmware: Firmware | None
    if (sys_fw / "efi").is_dir():
        # 32 on a 32-bit UEFI (a 64-bit kernel in EFI mixed mode), 64 otherwise; older kernels lack it.
        size = (_read(sys_fw / "efi/fw_platform_size") or "64").strip()
        firmware = Firmware.UEFI_IA32 if size == "32" else Firmware.UEFI
        csm = None  # whether it could also boot BIOS media cannot be seen from a UEFI boot
        secure = _secure_boot(sys_fw / "efi/efivars" / SECURE_BOOT_VAR)
    elif sys_fw.is_dir():
        firmware, secure = Firmware.BIOS, False  # booted the legacy way: BIOS, or a UEFI machine's CSM
    else:
        firmware, csm, secure = None, None, None
    iommu_dir = root / "sys/class/iommu"
    iommu = bool(os.listdir(iommu_dir)) if iommu_dir.is_dir() else None
    return Target(
        name="host",
        description=f"this machine ({os.uname().nodename})" if root == Path("/") else f"machine at {root}",
        cpu=Cpu(
            model=model,
            arch=Arch.X86_64 if "lm" in flags else Arch.I686,
            threads=threads or None,
            flags=tuple(sorted(flags)),
        ),  # fmt: skip
        memory=memory,
        firmware=MachineFirmware(type=firmware, csm=csm, secure_boot=secure),
        iommu=iommu,
        pci=tuple(_pci_devices(root / "sys/bus/pci/devices")),
    )


def _secure_boot(var: Path) -> bool | None:
    """The SecureBoot EFI variable: 4 bytes of attributes, then 1 when Secure Boot is on."""
    try:
        data = var.read_bytes()
    except FileNotFoundError:
        return False
    except OSError:
        return None
    return len(data) >= 5 and data[4] == 1


def _pci_devices(base: Path) -> list[PciDevice]:
    devices: list[PciDevice] = []
    if not base.is_dir():
        return devices
    for dev in sorted(base.iterdir()):
        vendor, device, cls = (_read(dev / n) for n in ("vendor", "device", "class"))
        if vendor and device and cls:
            devices.append(PciDevice(
                id=f"{vendor.strip()[2:]}:{device.strip()[2:]}".lower(),
                class_code=cls.strip()[2:].lower(),
                name=dev.name,
            ))  # fmt: skip
    return devices
