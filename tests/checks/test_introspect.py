"""Introspection of built files, on small synthetic kernels, modules and configs."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from builder.checks.facts import gather
from builder.introspect import IntrospectError, ModuleDb, kernel_facts, modinfo, read_kconfig, vmlinux_of, xen_facts
from tests.checks.conftest import bzimage, elf_with_notes, kernel_module, xen_kernel_notes


def test_bzimage_payload_is_inflated_and_xen_notes_read(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz-6.1.0-9-amd64"
    path.write_bytes(bzimage(elf_with_notes(xen_kernel_notes())))
    k = kernel_facts(path)
    assert k.bits == 64
    assert k.notes.guest_os == "linux" and k.notes.xen_version == "xen-3.0"
    assert k.notes.pv and k.notes.dom0 and k.notes.pvh
    assert k.config is None and k.option("CONFIG_XEN_DOM0") is None  # no config beside it: unknown


def test_config_beside_kernel_is_read_and_unset_options_are_n(dom0_tree: Path) -> None:
    k = kernel_facts(dom0_tree / "boot/vmlinuz-6.1.0-9-amd64")
    assert k.option("CONFIG_XEN_DOM0") == "y"
    assert k.option("CONFIG_XEN_PV") == "n"


def test_kernel_without_dom0_bit_or_pvh_entry(tmp_path: Path) -> None:
    path = tmp_path / "vmlinuz-cloud"
    path.write_bytes(bzimage(elf_with_notes(xen_kernel_notes(dom0=False, pvh=False))))
    notes = kernel_facts(path).notes
    assert notes.pv and not notes.dom0 and not notes.pvh


def test_plain_elf_32bit_kernel(tmp_path: Path) -> None:
    path = tmp_path / "vmlinux-i386"
    path.write_bytes(elf_with_notes(xen_kernel_notes(pvh=False), bits=32))
    k = kernel_facts(path)
    assert k.bits == 32 and k.notes.pv


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"MZ" + b"\0" * 1000, "neither an ELF kernel nor a bzImage"),
        (b"", "neither an ELF kernel nor a bzImage"),
    ],
)
def test_not_a_kernel_is_a_clear_error(tmp_path: Path, data: bytes, message: str) -> None:
    path = tmp_path / "junk"
    path.write_bytes(data)
    with pytest.raises(IntrospectError, match=message) as e:
        kernel_facts(path)
    assert str(path) in str(e.value)


def test_corrupt_and_unknown_payloads(tmp_path: Path) -> None:
    good = bytearray(bzimage(elf_with_notes(xen_kernel_notes())))
    good[-20:] = b"\xff" * 20
    with pytest.raises(IntrospectError, match="corrupt kernel payload"):
        vmlinux_of(bytes(good))
    lz4 = bytearray(bzimage(b"x"))
    start = 5 * 512
    lz4[start : start + 4] = b"\x02\x21\x4c\x18"
    with pytest.raises(IntrospectError, match="unsupported kernel payload compression"):
        vmlinux_of(bytes(lz4))


def test_gzip_payload(tmp_path: Path) -> None:
    import struct

    elf = elf_with_notes(xen_kernel_notes())
    payload = gzip.compress(elf)
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020D)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    assert vmlinux_of(bytes(setup) + payload) == elf


def test_xen_build_config(dom0_tree: Path) -> None:
    x = xen_facts(dom0_tree)
    assert x is not None and x.version == "4.17.5"
    assert x.enabled("CONFIG_SHADOW_PAGING") and not x.enabled("CONFIG_PV32")
    assert xen_facts(dom0_tree / "nowhere") is None


def test_read_kconfig_strips_quotes(tmp_path: Path) -> None:
    path = tmp_path / "config"
    path.write_text('CONFIG_A=y\nCONFIG_S="credit2"\n# CONFIG_B is not set\n')
    assert read_kconfig(path) == {"CONFIG_A": "y", "CONFIG_S": "credit2"}


def test_pci_drivers_from_aliases_and_builtin(dom0_tree: Path) -> None:
    db = ModuleDb.load(dom0_tree, "6.1.0-9-amd64")
    assert db.drivers_for("8086:27a2", "0300") == ["i915"]
    assert db.drivers_for("8086:27a2", "0200") == []  # class must match too
    assert db.drivers_for("1022:43f6", "0106") == ["ahci"]  # by class only; prog-if unknown
    assert db.drivers_for("1022:43f6", "010601") == ["ahci"]
    assert db.drivers_for("1022:43f6", "010600") == []
    assert db.drivers_for("dead:beef", "0200") == []


def test_firmware_from_modinfo_and_presence(dom0_tree: Path) -> None:
    db = ModuleDb.load(dom0_tree, "6.1.0-9-amd64")
    assert db.firmware_for("bnx2") == ["bnx2/bnx2-mips-09-6.2.1b.fw", "bnx2/bnx2-rv2p-09-6.0.17.fw"]
    assert db.firmware_for("i915") == ["i915/kbl_dmc_ver1_04.bin"]  # built in: modules.builtin.modinfo
    assert db.firmware_for("nonexistent") == []
    assert not db.has_firmware("iwlwifi-3945-2.ucode")
    (dom0_tree / "usr/lib/firmware/iwlwifi-3945-2.ucode.xz").write_bytes(b"fw")
    assert db.has_firmware("iwlwifi-3945-2.ucode")


def test_modinfo_of_compressed_module(tmp_path: Path) -> None:
    import lzma

    path = tmp_path / "e.ko.xz"
    path.write_bytes(lzma.compress(kernel_module({"firmware": ["a.bin"], "alias": ["x", "y"]})))
    assert modinfo(path) == {"firmware": ["a.bin"], "alias": ["x", "y"]}


def test_gather_reads_tree_and_guest_files(dom0_tree: Path, profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "k").write_bytes(elf_with_notes(xen_kernel_notes(pvh=False), bits=32))
    (tmp_path / "i").write_bytes(b"x" * 3000)
    p = profile("guests:\n  - name: a\n  - name: b\n    kernel: k\n    initrd: i\n")
    facts = gather(p, dom0_tree)
    assert facts.xen is not None and facts.dom0_kernel is not None and facts.modules is not None
    assert facts.guest_kernels["a"] is facts.dom0_kernel
    assert facts.guest_kernels["b"].bits == 32
    assert facts.ramdisk_bytes["b"] == 3000
    static = gather(p)
    assert static.xen is None and "a" not in static.guest_kernels and static.guest_kernels["b"].bits == 32


def test_build_gate_stops_on_built_file_error(dom0_tree: Path, profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """The second gate runs once dom0 exists: a kernel that cannot be dom0 stops the build (exit 3)."""
    from builder.checks.gate import gate
    from builder.context import BuildContext
    from builder.errors import CheckFailed

    kernel = dom0_tree / "boot/vmlinuz-6.1.0-9-amd64"
    kernel.write_bytes(bzimage(elf_with_notes(xen_kernel_notes(dom0=False))))
    (dom0_tree / "boot/config-6.1.0-9-amd64").write_text("CONFIG_XEN_PVH=y\n")
    ctx = BuildContext(profile=profile("checks:\n  targets: [qemu-bios]\n"), output=tmp_path / "o.iso",
                       workdir=tmp_path, cache_dir=tmp_path, rootfs=dom0_tree)  # fmt: skip
    gate(ctx, built=False)  # nothing static is wrong
    with pytest.raises(CheckFailed) as e:
        gate(ctx, built=True)
    assert e.value.exit_code == 3
    assert e.value.message.splitlines()[1] == (
        "qemu-bios: [dom0-kernel] the dom0 kernel vmlinuz-6.1.0-9-amd64 cannot run as dom0: CONFIG_XEN_DOM0 is not set"
    )
    assert "--ignore-check dom0-kernel" in (e.value.hint or "")
    gate(ctx, ("dom0-kernel",), built=True)  # named: the build goes on
