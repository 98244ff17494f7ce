"""Fixtures for the check tests: machines, profiles and tiny synthetic kernels and modules.

The synthetic files are built byte by byte here (an ELF with Xen notes, a bzImage wrapping it in
an xz payload, a .ko with a .modinfo section), so the introspection code is tested on the same
structures a real kernel has, without needing one.
"""

from __future__ import annotations

import dataclasses
import lzma
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from builder.hardware import Arch, Cpu, MachineFirmware, PciDevice, Target
from builder.introspect import BuiltFacts, XenFacts
from builder.profile import Firmware, Profile, load_profile


def note(name: str, ntype: int, desc: bytes) -> bytes:
    raw = name.encode() + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(raw), len(desc), ntype) + pad(raw) + pad(desc)


def elf_with_notes(notes: bytes, *, bits: int = 64) -> bytes:
    """A minimal little-endian ELF executable whose only program header is a PT_NOTE segment."""
    if bits == 64:
        ehsize, phentsize = 64, 56
        phdr_off, notes_off = ehsize, ehsize + phentsize
        header = (
            b"\x7fELF\x02\x01\x01"
            + b"\0" * 9
            + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x1000000, phdr_off, 0, 0, ehsize, phentsize, 1, 64, 0, 0)
        )
        phdr = struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    else:
        ehsize, phentsize = 52, 32
        phdr_off, notes_off = ehsize, ehsize + phentsize
        header = (
            b"\x7fELF\x01\x01\x01"
            + b"\0" * 9
            + struct.pack("<HHIIIIIHHHHHH", 2, 3, 1, 0xC0100000, phdr_off, 0, 0, ehsize, phentsize, 1, 40, 0, 0)
        )
        phdr = struct.pack("<IIIIIIII", 4, notes_off, 0, 0, len(notes), len(notes), 4, 4)
    return header + phdr + notes


def elf_kernel(notes: bytes, loads: list[tuple[int, int, int]], *, ikconfig: str | None = None) -> bytes:
    """An x86-64 kernel as the domain builder sees it: PT_LOAD segments (vaddr, paddr, memsz, with no
    file data, like .bss) and a PT_NOTE; optionally its config embedded as CONFIG_IKCONFIG does."""
    phnum = len(loads) + 1
    notes_off = 64 + 56 * phnum
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 2, 0x3E, 1, 0x1000000, 64, 0, 0, 64, 56, phnum, 64, 0, 0)
    )
    phdrs = b"".join(struct.pack("<IIQQQQQQ", 1, 7, notes_off, v, p, 0, m, 4096) for v, p, m in loads)
    phdrs += struct.pack("<IIQQQQQQ", 4, 4, notes_off, 0, 0, len(notes), len(notes), 4)
    tail = b""
    if ikconfig is not None:
        import gzip

        tail = b"IKCFG_ST" + gzip.compress(ikconfig.encode()) + b"IKCFG_ED"
    return header + phdrs + notes + tail


# The bookworm dom0 kernel's layout (6.1.0-50-amd64): its image from 16 MiB to 74 MiB, and the
# per-CPU segment linked at 0 (x86-64), as load_layout reads them.
LINUX_LOADS = [
    (0xFFFFFFFF81000000, 0x1000000, 0x18E6000),
    (0xFFFFFFFF82A00000, 0x2A00000, 0x642000),
    (0, 0x3042000, 0x35000),
    (0xFFFFFFFF83077000, 0x3077000, 0x1989000),
]


def xen_kernel_notes(*, dom0: bool = True, pvh: bool = True, pv: bool = True) -> bytes:
    out = b""
    if pv:
        out += note("Xen", 6, b"linux\0") + note("Xen", 5, b"xen-3.0\0") + note("Xen", 1, struct.pack("<Q", 0x1000000))
        out += note("Xen", 3, struct.pack("<Q", 0xFFFFFFFF80000000)) + note("Xen", 4, struct.pack("<Q", 0))
    out += note("Xen", 10, b"!writable_page_tables|pae_pgdir_above_4gb\0")
    out += note("Xen", 17, struct.pack("<I", (1 << 11 if dom0 else 0) | 1))
    if pvh:
        out += note("Xen", 18, struct.pack("<I", 0x1000000))
    out += note("GNU", 3, b"\x12\x34")  # a non-Xen note must be ignored
    return out


def bzimage(elf: bytes, *, setup_sects: int = 4) -> bytes:
    """A bzImage-shaped file: boot sector and setup header, then an xz payload holding `elf`."""
    payload = lzma.compress(elf, format=lzma.FORMAT_XZ)
    setup = bytearray((setup_sects + 1) * 512)
    setup[0x1F1] = setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def kernel_module(modinfo: dict[str, list[str]]) -> bytes:
    """An ELF64 relocatable with a .modinfo section, like a .ko file."""
    info = b"".join(f"{k}={v}".encode() + b"\0" for k, vs in modinfo.items() for v in vs)
    shstr = b"\0.modinfo\0.shstrtab\0"
    info_off = 64
    shstr_off = info_off + len(info)
    sh_off = shstr_off + len(shstr)
    header = (
        b"\x7fELF\x02\x01\x01"
        + b"\0" * 9
        + struct.pack("<HHIQQQIHHHHHH", 1, 0x3E, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, 3, 2)
    )
    null = b"\0" * 64
    sec_info = struct.pack("<IIQQQQIIQQ", 1, 1, 0, 0, info_off, len(info), 0, 0, 1, 0)
    sec_str = struct.pack("<IIQQQQIIQQ", 10, 3, 0, 0, shstr_off, len(shstr), 0, 0, 1, 0)
    return header + info + shstr + null + sec_info + sec_str


MODULES_ALIAS = """\
# Aliases extracted from modules themselves.
alias pci:v00008086d000027A2sv*sd*bc03sc*i* i915
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00008086d00004222sv*sd*bc*sc*i* iwl3945
alias pci:v000014E4d0000164Csv*sd*bc*sc*i* bnx2
"""


@pytest.fixture
def dom0_tree(tmp_path: Path) -> Path:
    """A dom0 tree with just what introspection reads: /boot and /lib/modules."""
    root = tmp_path / "tree"
    (root / "boot").mkdir(parents=True)
    (root / "boot/xen-4.17-amd64.config").write_text(
        "#\n# Automatically generated file; DO NOT EDIT.\n# Xen/x86 4.17.5 Configuration\n#\n"
        "CONFIG_PV=y\n# CONFIG_PV32 is not set\nCONFIG_HVM=y\nCONFIG_SHADOW_PAGING=y\n"
    )
    (root / "boot/vmlinuz-6.1.0-9-amd64").write_bytes(bzimage(elf_with_notes(xen_kernel_notes())))
    (root / "boot/config-6.1.0-9-amd64").write_text("CONFIG_X86_64=y\nCONFIG_XEN_DOM0=y\nCONFIG_XEN_PVH=y\n")
    (root / "usr/lib/systemd/system").mkdir(parents=True)
    (root / "usr/lib/systemd/system/systemd-networkd.service").write_text("[Unit]\n")
    mods = root / "lib/modules/6.1.0-9-amd64"
    (mods / "kernel/drivers/net").mkdir(parents=True)
    (mods / "modules.alias").write_text(MODULES_ALIAS)
    (mods / "modules.dep").write_text("kernel/drivers/net/bnx2.ko:\nkernel/drivers/net/iwl3945.ko:\n")
    (mods / "kernel/drivers/net/bnx2.ko").write_bytes(
        kernel_module({"firmware": ["bnx2/bnx2-mips-09-6.2.1b.fw", "bnx2/bnx2-rv2p-09-6.0.17.fw"], "license": ["GPL"]})
    )
    (mods / "kernel/drivers/net/iwl3945.ko").write_bytes(kernel_module({"firmware": ["iwlwifi-3945-2.ucode"]}))
    (mods / "modules.builtin.modinfo").write_bytes(
        b"ahci.alias=pci:v*d*sv*sd*bc01sc06i01*\0ahci.license=GPL\0i915.firmware=i915/kbl_dmc_ver1_04.bin\0"
    )
    (root / "usr/lib/firmware").mkdir(parents=True)
    (root / "lib").joinpath("firmware").symlink_to("../usr/lib/firmware")
    return root


def make_target(name: str = "box", **changes: Any) -> Target:
    """A capable 2015-ish machine; tests change what they are about."""
    cpu = Cpu(model="Test CPU", arch=Arch.X86_64, threads=4, flags=("lm", "pae", "nx", "vmx", "ept"))
    base = Target(
        name=name,
        description="a test machine",
        cpu=changes.pop("cpu", cpu),
        memory=changes.pop("memory", 8192),
        firmware=changes.pop("firmware", MachineFirmware(type=Firmware.UEFI, csm=True, secure_boot=False)),
        iommu=changes.pop("iommu", True),
        pci=changes.pop("pci", (PciDevice(id="8086:27a2", class_code="0300", name="945GM"),)),
    )
    return dataclasses.replace(base, **changes)


def cpu(flags: tuple[str, ...], *, arch: Arch = Arch.X86_64, threads: int = 4, model: str = "Test CPU") -> Cpu:
    return Cpu(model=model, arch=arch, threads=threads, flags=flags)


@pytest.fixture
def profile(tmp_path: Path) -> Callable[[str], Profile]:
    """A profile from YAML text, through the real loader."""

    def load(text: str) -> Profile:
        path = tmp_path / "p.yaml"
        path.write_text("name: p\n" + text)
        return load_profile(path)

    return load


def xen(shadow: bool = True, pv32: bool = False) -> XenFacts:
    config = {"CONFIG_PV": "y", "CONFIG_HVM": "y"}
    if shadow:
        config["CONFIG_SHADOW_PAGING"] = "y"
    if pv32:
        config["CONFIG_PV32"] = "y"
    return XenFacts(version="4.17.5", config=config)


def no_facts() -> BuiltFacts:
    return BuiltFacts()
