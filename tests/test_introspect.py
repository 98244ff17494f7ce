"""Introspection of what bookworm and trixie store differently: compressed kernels and modules,
the initrd's archives, Xen's config header, and the versions dpkg installed.

The fixtures are small files made here, compressed each way with Python's own modules or the
zstd command (a host tool), so each test fails if the reader ignores the format it is about.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from builder import cpio
from builder.errors import XenliveError
from builder.introspect import (
    IntrospectError,
    ModuleDb,
    compression_of,
    dom0_platform,
    dom0_versions,
    inflate,
    initrd_layout,
    kernel_compression,
    kernel_facts,
    modinfo,
    package_owning,
    upstream_version,
    vmlinux_of,
    xen_facts,
)
from builder.run import read_output
from tests.checks.conftest import elf_with_notes, kernel_module, xen_kernel_notes

RELEASE = "6.12.117+deb13-amd64"
FIRMWARE = {"firmware": ["rtl_nic/rtl8125b-2.fw", "rtl_nic/rtl8168h-2.fw"], "license": ["GPL"]}


def zstd(data: bytes, tmp_path: Path) -> bytes:
    source = tmp_path / "zstd-input"
    source.write_bytes(data)
    return read_output(["zstd", "-q", "-c", "--", source], limit=len(data) + 4096)


def compressors(tmp_path: Path) -> dict[str, Callable[[bytes], bytes]]:
    """Each module format kmod reads, by the suffix Debian's kernel build gives it."""
    return {
        "": lambda b: b,
        ".xz": lambda b: lzma.compress(b, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32),
        ".zst": lambda b: zstd(b, tmp_path),
        ".gz": gzip.compress,
    }


# ---- modules --------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", ["", ".xz", ".zst", ".gz"])
def test_modinfo_reads_each_module_compression(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"r8169.ko{suffix}"
    path.write_bytes(compressors(tmp_path)[suffix](kernel_module(FIRMWARE)))
    assert path.read_bytes()[:4] != b"\x7fELF" or suffix == ""
    assert modinfo(path) == FIRMWARE


@pytest.mark.parametrize(("suffix", "kind"), [("", "none"), (".xz", "xz"), (".zst", "zstd"), (".gz", "gzip")])
def test_module_db_finds_firmware_of_compressed_modules(tmp_path: Path, suffix: str, kind: str) -> None:
    """modules.dep names the compressed file; firmware_for must read it, not answer 'none needed'."""
    root = tmp_path / "tree"
    mods = root / "usr/lib/modules" / RELEASE
    (mods / "kernel/drivers/net/ethernet/realtek").mkdir(parents=True)
    rel = f"kernel/drivers/net/ethernet/realtek/r8169.ko{suffix}"
    (mods / rel).write_bytes(compressors(tmp_path)[suffix](kernel_module(FIRMWARE)))
    (mods / "modules.dep").write_text(f"{rel}:\n")
    (mods / "modules.alias").write_text("alias pci:v000010ECd00008168sv*sd*bc*sc*i* r8169\n")
    (root / "lib").symlink_to("usr/lib")  # merged /usr, as both suites' trees are
    db = ModuleDb.load(root, RELEASE)
    assert db.drivers_for("10ec:8168", "0200") == ["r8169"]
    assert db.firmware_for("r8169") == FIRMWARE["firmware"]
    assert db.compression == (kind,)


def test_unreadable_module_is_an_error_not_no_firmware(tmp_path: Path) -> None:
    broken = tmp_path / "broken.ko.xz"
    broken.write_bytes(lzma.compress(kernel_module(FIRMWARE))[:-40])
    with pytest.raises(IntrospectError, match=r"corrupt .*broken\.ko\.xz: the compressed data ends early"):
        modinfo(broken)
    flipped = bytearray(lzma.compress(kernel_module(FIRMWARE)))
    flipped[30:40] = b"\xff" * 10
    broken.write_bytes(flipped)
    with pytest.raises(IntrospectError, match=r"corrupt .*broken\.ko\.xz \(xz\)"):
        modinfo(broken)
    junk = tmp_path / "junk.ko"
    junk.write_bytes(b"not an ELF file at all")
    with pytest.raises(IntrospectError, match=r"junk\.ko: not a 64-bit ELF kernel module"):
        modinfo(junk)
    truncated = tmp_path / "short.ko.zst"
    truncated.write_bytes(zstd(kernel_module(FIRMWARE), tmp_path)[:-8])
    with pytest.raises(IntrospectError, match=r"corrupt .*short\.ko\.zst \(zstd\)") as e:
        modinfo(truncated)
    assert isinstance(e.value, XenliveError) and e.value.exit_code == 1  # a message, never a traceback


def test_inflate_refuses_more_than_its_limit(tmp_path: Path) -> None:
    zeros = b"\0" * (4 << 20)
    for packed in (lzma.compress(zeros), gzip.compress(zeros), bz2.compress(zeros), zstd(zeros, tmp_path)):
        assert len(packed) < 1 << 20
        with pytest.raises(IntrospectError, match="bomb inflates to more than 1048576 bytes"):
            inflate(packed, 1 << 20, "bomb")
        assert inflate(packed, 4 << 20, "fine") == zeros


def test_missing_zstd_command_names_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    packed = zstd(b"data", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(IntrospectError, match="zstd-compressed and the zstd command is missing") as e:
        inflate(packed, 100, "m.ko.zst")
    assert e.value.hint == "install it with: apt-get install zstd"


def test_compression_magic() -> None:
    assert compression_of(b"\x28\xb5\x2f\xfd....") == "zstd"
    assert compression_of(b"\xfd7zXZ\x00..") == "xz"
    assert compression_of(b"\x1f\x8b\x08") == "gzip"
    assert compression_of(b"070701") is None
    assert compression_of(b"") is None


# ---- kernels ------------------------------------------------------------------------------------


def bzimage_with(payload: bytes, inflated_size: int) -> bytes:
    """A bzImage as the kernel build makes it: the payload followed by its inflated size (le32)."""
    payload += struct.pack("<I", inflated_size)
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def test_zstd_kernel_as_trixie_ships_it(tmp_path: Path) -> None:
    """trixie's kernel is CONFIG_KERNEL_ZSTD; its Xen notes are read through the zstd command."""
    elf = elf_with_notes(xen_kernel_notes())
    path = tmp_path / f"vmlinuz-{RELEASE}"
    path.write_bytes(bzimage_with(zstd(elf, tmp_path), len(elf)))
    (tmp_path / f"config-{RELEASE}").write_text("CONFIG_XEN_DOM0=y\nCONFIG_KERNEL_ZSTD=y\n")
    k = kernel_facts(path)
    assert k.compression == "zstd"
    assert k.notes.dom0 and k.notes.pvh and k.notes.pv and k.bits == 64
    assert k.option("CONFIG_XEN_DOM0") == "y"


def test_xz_kernel_as_bookworm_ships_it(tmp_path: Path) -> None:
    elf = elf_with_notes(xen_kernel_notes(pvh=False))
    image = bzimage_with(lzma.compress(elf, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32), len(elf))
    assert kernel_compression(image) == "xz"
    assert vmlinux_of(image) == elf
    assert kernel_compression(elf) == "none"


def test_corrupt_zstd_kernel_names_the_file(tmp_path: Path) -> None:
    elf = elf_with_notes(xen_kernel_notes())
    packed = bytearray(zstd(elf, tmp_path))
    packed[len(packed) // 2 :] = b"\xaa" * (len(packed) - len(packed) // 2)
    path = tmp_path / "vmlinuz-broken"
    path.write_bytes(bzimage_with(bytes(packed), len(elf)))
    with pytest.raises(IntrospectError, match=r"vmlinuz-broken: corrupt kernel payload \(zstd\)"):
        kernel_facts(path)


# ---- initrd -------------------------------------------------------------------------------------


def archive(*names: str) -> bytes:
    return cpio.archive([cpio.regular(name, name.encode() * 3) for name in names])


def padded(data: bytes, to: int = 512) -> bytes:
    return data + b"\0" * (-len(data) % to)


def test_initrd_with_plain_archives_before_the_compressed_one(tmp_path: Path) -> None:
    """trixie's layout: early archives stored plain (its modules are .ko.xz already), then the main one."""
    early = padded(archive("kernel/x86/microcode/GenuineIntel.bin"))
    modules = padded(archive("usr/lib/modules/m/kernel/a.ko.xz", "usr/lib/modules/m/kernel/b.ko.xz"))
    main = gzip.compress(archive("init", "scripts/live"))
    path = tmp_path / "initrd.img"
    path.write_bytes(early + modules + main)
    facts = initrd_layout(path)
    assert facts.segments == (("cpio", len(early)), ("cpio", len(modules)), ("gzip", len(main)))
    assert facts.compression == "gzip" and facts.uncompressed_bytes == len(early) + len(modules)


@pytest.mark.parametrize("kind", ["zstd", "xz", "gzip"])
def test_initrd_compressed_whole(tmp_path: Path, kind: str) -> None:
    data = archive("init")
    packed = {
        "zstd": lambda: zstd(data, tmp_path),
        "xz": lambda: lzma.compress(data),
        "gzip": lambda: gzip.compress(data),
    }
    path = tmp_path / "initrd.img"
    path.write_bytes(packed[kind]())
    facts = initrd_layout(path)
    assert facts.compression == kind and facts.uncompressed_bytes == 0


def test_initrd_all_plain_and_broken_ones(tmp_path: Path) -> None:
    path = tmp_path / "initrd.img"
    path.write_bytes(archive("init"))
    assert initrd_layout(path).compression == "none"
    path.write_bytes(archive("init") + b"\0" * 100 + b"PK\x03\x04zip")
    with pytest.raises(IntrospectError, match=r"initrd\.img: neither cpio nor a known compression at byte"):
        initrd_layout(path)
    path.write_bytes(archive("init")[:150])
    with pytest.raises(IntrospectError, match="initrd.img: cpio entry runs past the end|broken cpio header"):
        initrd_layout(path)
    path.write_bytes(b"070701" + b"zz" * 60)
    with pytest.raises(IntrospectError, match="broken cpio header at byte 0"):
        initrd_layout(path)


# ---- Xen and dpkg ---------------------------------------------------------------------------------

XEN_420_CONFIG = """\
#
# Automatically generated file; DO NOT EDIT.
# Xen/x86 4.20.5-pre Configuration
#
CONFIG_PV=y
# CONFIG_PV32 is not set
CONFIG_HVM=y
# CONFIG_SHADOW_PAGING is not set
CONFIG_SCHED_DEFAULT="credit2"
"""


def test_xen_420_config_version_and_options(tmp_path: Path) -> None:
    (tmp_path / "boot").mkdir()
    (tmp_path / "boot/xen-4.20-amd64.config").write_text(XEN_420_CONFIG)
    xen = xen_facts(tmp_path)
    assert xen is not None and xen.version == "4.20.5-pre"
    assert xen.options == {"PV": True, "PV32": False, "HVM": True, "SHADOW_PAGING": False, "XSM": None, "DEBUG": None}
    (tmp_path / "boot/xen-4.20-amd64.config").write_text("CONFIG_PV=y\n")  # no header line
    assert xen_facts(tmp_path).version == "4.20"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("version", "upstream"),
    [
        ("4.20.4+63-g7abfd2bce2-0+deb13u1", "4.20.4"),
        ("4.17.5+72-g01140da4e8-1", "4.17.5"),
        ("1:20250815~deb13u1", "20250815"),
        ("6.12.117-1", "6.12.117"),
        ("2:4.0.4-9", "4.0.4"),
        ("1.0", "1.0"),
    ],
)
def test_upstream_version(version: str, upstream: str) -> None:
    assert upstream_version(version) == upstream


STATUS = """\
Package: xen-hypervisor-4.20-amd64
Status: install ok installed
Version: 4.20.4+63-g7abfd2bce2-0+deb13u1

Package: xen-hypervisor-4.17-amd64
Status: deinstall ok config-files
Version: 4.17.5+72-g01140da4e8-1

Package: linux-image-{release}
Status: install ok installed
Version: 6.12.117-1

Package: live-boot
Status: install ok installed
Version: 1:20250815~deb13u1
"""


def platform_tree(root: Path, tmp_path: Path) -> Path:
    """A trixie-shaped dom0 tree: zstd kernel, .ko.xz modules, plain+gzip initrd, dpkg's records."""
    (root / "boot").mkdir(parents=True)
    (root / "boot/xen-4.20-amd64.config").write_text(XEN_420_CONFIG)
    (root / "boot/xen-4.20-amd64.gz").write_bytes(gzip.compress(b"xen"))
    elf = elf_with_notes(xen_kernel_notes())
    (root / f"boot/vmlinuz-{RELEASE}").write_bytes(bzimage_with(zstd(elf, tmp_path), len(elf)))
    (root / f"boot/initrd.img-{RELEASE}").write_bytes(padded(archive("a.ko.xz")) + gzip.compress(archive("init")))
    mods = root / "usr/lib/modules" / RELEASE
    (mods / "kernel").mkdir(parents=True)
    (mods / "kernel/r8169.ko.xz").write_bytes(lzma.compress(kernel_module(FIRMWARE)))
    (mods / "modules.dep").write_text("kernel/r8169.ko.xz:\n")
    (root / "lib").symlink_to("usr/lib")
    dpkg = root / "var/lib/dpkg"
    (dpkg / "info").mkdir(parents=True)
    (dpkg / "status").write_text(STATUS.format(release=RELEASE))
    (dpkg / "info/xen-hypervisor-4.20-amd64.list").write_text("/.\n/boot\n/boot/xen-4.20-amd64.gz\n")
    (dpkg / f"info/linux-image-{RELEASE}.list").write_text(f"/boot/vmlinuz-{RELEASE}\n/boot/config-{RELEASE}\n")
    (dpkg / "info/live-boot.list").write_text("/usr/share/initramfs-tools/scripts/live\n")
    (dpkg / "info/decoy.list").write_text(f"/boot/vmlinuz-{RELEASE}.old\n")  # a longer name is not the file
    return root


def test_versions_found_by_the_boot_files_packages_own(tmp_path: Path) -> None:
    tree = platform_tree(tmp_path / "tree", tmp_path)
    assert package_owning(tree, f"/boot/vmlinuz-{RELEASE}") == f"linux-image-{RELEASE}"
    assert package_owning(tree, "/boot/nothing") is None
    versions = dom0_versions(tree)
    assert versions.xen is not None and versions.xen.package == "xen-hypervisor-4.20-amd64"
    assert versions.xen.upstream == "4.20.4"
    assert versions.kernel is not None and versions.kernel.version == "6.12.117-1"
    assert versions.live_boot is not None and versions.live_boot.upstream == "20250815"


def test_dom0_platform_for_the_manifest(tmp_path: Path) -> None:
    tree = platform_tree(tmp_path / "tree", tmp_path)
    facts = dom0_platform(tree)
    assert facts["xen"]["package"] == "xen-hypervisor-4.20-amd64"
    assert facts["xen"]["package_version"] == "4.20.4+63-g7abfd2bce2-0+deb13u1"
    assert facts["xen"]["version"] == "4.20.5-pre"
    assert facts["xen"]["options"]["SHADOW_PAGING"] is False
    assert facts["kernel"] == {
        "package": f"linux-image-{RELEASE}",
        "package_version": "6.12.117-1",
        "release": RELEASE,
        "compression": "zstd",
        "modules_compression": ["xz"],
    }
    assert facts["initrd"]["compression"] == "gzip" and facts["initrd"]["uncompressed_bytes"] == 512
    assert facts["live_boot"] == {
        "package": "live-boot",
        "package_version": "1:20250815~deb13u1",
        "version": "20250815",
    }


def test_dom0_platform_of_an_empty_tree_knows_nothing(tmp_path: Path) -> None:
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg/status").write_text("")
    (tmp_path / "boot").mkdir()
    facts = dom0_platform(tmp_path)
    assert facts["xen"] == {"package": None, "package_version": None, "version": None, "options": None}
    assert facts["kernel"]["release"] is None and facts["initrd"] is None
    assert facts["live_boot"]["package"] is None


@pytest.mark.integration
def test_platform_of_cached_dom0_trees() -> None:
    """Every dom0 tree a build left in the cache, whatever its suite: each fact can be read."""
    from builder.context import cache_root

    trees = sorted(cache_root().glob("rootfs/*/tree"))
    if not trees:
        pytest.skip("no cached dom0 tree; run a build first")
    for tree in trees:
        facts = dom0_platform(tree)
        assert facts["xen"]["package"] and facts["kernel"]["package"] and facts["live_boot"]["package"], tree
        assert facts["kernel"]["compression"] in ("xz", "zstd") and facts["initrd"]["compression"] != "none"
