from __future__ import annotations

import dataclasses
import io
import os
import shutil
import struct
import subprocess
from pathlib import Path

import pycdlib
import pytest

from builder.context import BuildContext
from builder.hybrid import BACKUP_GPT_BYTES, SYSTEM_AREA
from builder.profile import Firmware, load_profile
from builder.stages.boot import install_bootloaders
from builder.stages.iso import RoomyHybrid, _isohybrid_args, _IsoNames, hybrid_areas, master_iso, pinned_pycdlib

needs_tools = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("grub-mkimage", "mkfs.vfat", "mcopy", "xorriso"))
    or not Path("/usr/lib/ISOLINUX/isolinux.bin").exists(),
    reason="host tools not installed (scripts/setup installs them)",
)


def test_iso_names_are_level3_and_unique():
    names = _IsoNames()
    assert names.add("live", is_dir=True) == "/LIVE"
    assert names.add("live/10-base.squashfs", is_dir=False) == "/LIVE/10_BASE.SQUASHFS;1"
    assert names.add("live/vmlinuz", is_dir=False) == "/LIVE/VMLINUZ.;1"
    assert names.add("live/VMLINUZ", is_dir=False) == "/LIVE/VMLINUZ_1.;1"
    long = names.add("live/" + "x" * 40 + ".img", is_dir=False)
    assert len(long.rsplit("/", 1)[1].split(";")[0]) <= 30


@pytest.fixture
def small_medium(tmp_path: Path) -> BuildContext:
    ctx = BuildContext(profile=load_profile(None), output=tmp_path / "out/x.iso", workdir=tmp_path / "w",
                       cache_dir=tmp_path, build_id="0123abcd")  # fmt: skip
    for rel, data in {"boot/xen.gz": b"xen", "live/vmlinuz": b"k", "live/10-base.squashfs": b"s" * 5000}.items():
        path = ctx.staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return ctx


@needs_tools
def test_master_writes_hybrid_iso_with_bios_and_uefi_boot(small_medium):
    ctx = small_medium
    install_bootloaders(ctx)
    ctx.output.parent.mkdir()
    master_iso(ctx)
    assert ctx.output.is_file()
    assert not list(ctx.output.parent.glob(".*tmp*")), "temporary file left behind"
    eltorito = subprocess.run(["xorriso", "-indev", ctx.output, "-report_el_torito", "plain"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "El Torito boot img :   1  BIOS  y   none" in eltorito
    assert "El Torito boot img :   2  UEFI  y   none" in eltorito
    area = subprocess.run(["xorriso", "-indev", ctx.output, "-report_system_area", "plain"],
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "MBR partition table" in area and "GPT" in area
    iso = pycdlib.PyCdlib()
    iso.open(str(ctx.output))
    assert iso.get_record(rr_path="/live/10-base.squashfs").get_data_length() == 5000
    assert iso.get_record(joliet_path="/boot/grub/grub.cfg") is not None
    iso.close()


@needs_tools
def test_failed_master_leaves_nothing_at_output(small_medium, monkeypatch):
    ctx = small_medium
    install_bootloaders(ctx)
    ctx.output.parent.mkdir(parents=True)

    def boom(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(pycdlib.PyCdlib, "write", boom)
    with pytest.raises(KeyboardInterrupt):
        master_iso(ctx)
    assert list(ctx.output.parent.iterdir()) == []


@needs_tools
def test_refused_iso_keeps_the_previous_output(small_medium):
    from builder.errors import CheckFailed

    ctx = small_medium
    install_bootloaders(ctx)
    ctx.output.parent.mkdir(parents=True)
    ctx.output.write_bytes(b"the previous, good ISO")

    def refuse(iso: Path) -> None:
        assert iso.stat().st_size > 0 and iso != ctx.output
        raise CheckFailed("too big")

    with pytest.raises(CheckFailed):
        master_iso(ctx, refuse)
    assert ctx.output.read_bytes() == b"the previous, good ISO"
    assert [p.name for p in ctx.output.parent.iterdir()] == ["x.iso"]


@needs_tools
def test_an_output_that_is_a_symlink_is_replaced_not_its_target(small_medium, tmp_path):
    from builder.pipeline import output_path

    ctx = small_medium
    install_bootloaders(ctx)
    ctx.output.parent.mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.write_text("a host file\n")
    ctx.output.symlink_to(victim)
    ctx.output = output_path(ctx.output)
    assert ctx.output.is_symlink()  # the name is kept, not resolved to the victim
    master_iso(ctx, lambda iso: None)
    assert victim.read_text() == "a host file\n"
    assert not ctx.output.is_symlink() and ctx.output.stat().st_size > 0


@needs_tools
@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tiny file system needs root")
def test_disk_full_while_mastering_leaves_nothing(small_medium, tmp_path):
    import errno

    ctx = small_medium
    install_bootloaders(ctx)
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(full)], check=True)
    try:
        ctx.output = full / "x.iso"
        with pytest.raises(OSError) as info:
            master_iso(ctx)
        assert info.value.errno == errno.ENOSPC
        assert list(full.iterdir()) == []
    finally:
        subprocess.run(["umount", str(full)], check=True)


@needs_tools
def test_files_with_the_same_bytes_and_mode_are_written_once(small_medium):
    ctx = small_medium
    kernel = b"a guest kernel" * 1000
    files = {"guests/a/vmlinuz": (kernel, 0o644), "guests/b/vmlinuz": (kernel, 0o644),
             "guests/c/vmlinuz": (kernel, 0o755),  # the same bytes, another mode
             "guests/d/vmlinuz": (kernel[:-1] + b"!", 0o644)}  # the same size, other bytes  # fmt: skip
    for rel, (data, mode) in files.items():
        (ctx.staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (ctx.staging / rel).write_bytes(data)
        (ctx.staging / rel).chmod(mode)
    install_bootloaders(ctx)
    ctx.output.parent.mkdir()
    master_iso(ctx)
    iso = pycdlib.PyCdlib()
    iso.open(str(ctx.output))
    extent = {rel: iso.get_record(rr_path=f"/{rel}").extent_location() for rel in files}
    assert extent["guests/a/vmlinuz"] == extent["guests/b/vmlinuz"]
    assert len({extent["guests/a/vmlinuz"], extent["guests/c/vmlinuz"], extent["guests/d/vmlinuz"]}) == 3
    assert iso.get_record(joliet_path="/guests/b/vmlinuz").extent_location() == extent["guests/a/vmlinuz"]
    for rel, (data, mode) in files.items():
        assert iso.get_record(rr_path=f"/{rel}").rock_ridge.get_file_mode() & 0o7777 == mode
        for kind in ("rr_path", "joliet_path"):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, **{kind: f"/{rel}"})
            assert out.getvalue() == data, (rel, kind)
    iso.close()


def _with_boot(ctx: BuildContext, *boot: Firmware) -> BuildContext:
    media = dataclasses.replace(ctx.profile.media, boot=boot)
    return dataclasses.replace(ctx, profile=dataclasses.replace(ctx.profile, media=media))


@needs_tools
@pytest.mark.parametrize("boot", [(Firmware.BIOS, Firmware.UEFI), (Firmware.BIOS,)], ids=["bios+uefi", "bios"])
def test_hybrid_areas_are_what_mastering_writes(small_medium, boot):
    """verify compares media with hybrid_areas(): it must reproduce the MBR, GPTs and padding exactly."""
    ctx = _with_boot(small_medium, *boot)
    install_bootloaders(ctx)
    ctx.output.parent.mkdir()
    master_iso(ctx)
    iso = pycdlib.PyCdlib()
    iso.open(str(ctx.output))
    isolinux = iso.get_record(rr_path="/isolinux/isolinux.bin").extent_location()
    efi = None
    if Firmware.UEFI in boot:
        record = iso.get_record(rr_path="/boot/grub/efi.img")
        efi = (record.extent_location(), -(-record.get_data_length() // 2048) * 4)
    volume = iso.pvd.space_size * 2048
    iso.close()
    expected = hybrid_areas(volume, isolinux, efi, ctx.build_id)
    data = ctx.output.read_bytes()
    assert len(data) == expected.size
    assert data[:SYSTEM_AREA] == bytes(expected.head)
    assert data[expected.tail_start :] == bytes(expected.tail)
    assert hybrid_areas(volume, isolinux, efi, "ffff0000").head != expected.head  # the IDs follow the build


@needs_tools
def test_uefi_only_medium_names_the_uefi_platform(small_medium):
    ctx = _with_boot(small_medium, Firmware.UEFI)
    install_bootloaders(ctx)
    ctx.output.parent.mkdir()
    master_iso(ctx)
    eltorito = subprocess.run(["xorriso", "-indev", ctx.output, "-report_el_torito", "plain"],
                              capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "El Torito boot img :   1  UEFI  y   none" in eltorito
    assert ctx.output.read_bytes()[:SYSTEM_AREA] == bytes(SYSTEM_AREA)  # no MBR without BIOS


def _hybrid_bytes(cls: type[pycdlib.isohybrid.IsoHybrid], volume: int, efi: bool) -> tuple[bytes, int, bytes]:
    """What an isohybrid object writes for a volume: system area, padding length, backup GPT."""
    with pinned_pycdlib(0, "0123abcd"):
        hybrid = cls()
        hybrid.new(mbr_id=0x12345678, **_isohybrid_args(efi))
    hybrid.update_rba(1071)
    if efi:
        hybrid.update_efi(47, 4096, volume)
    backup = hybrid.secondary_gpt.record() if efi else b""
    return hybrid.record(volume), len(hybrid.record_padding(volume)), backup


@pytest.mark.parametrize("efi", [True, False], ids=["bios+uefi", "bios"])
@pytest.mark.parametrize("room", [0, 2048, 8 * 2048, 9 * 2048, 500 * 2048])
def test_roomy_hybrid_differs_from_pycdlib_only_where_the_backup_gpt_did_not_fit(room, efi):
    """The output layout changes for media whose volume ends within 16,896 bytes of a 1 MiB boundary:
    one more MiB of padding, and the MBR partition, backup GPT LBA and last usable LBA follow it."""
    volume = 5 * 2**20 - room
    pycdlib_area, pycdlib_padding, pycdlib_backup = _hybrid_bytes(pycdlib.isohybrid.IsoHybrid, volume, efi)
    area, padding, backup = _hybrid_bytes(RoomyHybrid, volume, efi)
    if efi and room < BACKUP_GPT_BYTES:
        assert padding == pycdlib_padding + 2**20 == room + 2**20
        assert area != pycdlib_area and backup != pycdlib_backup
    else:
        assert (area, padding, backup) == (pycdlib_area, pycdlib_padding, pycdlib_backup)
    sectors = (volume + padding) // 512
    assert struct.unpack_from("<II", area, 446 + 8) == (0, sectors)  # the MBR partition covers the image
    if efi:
        header = area[512:1024]
        assert struct.unpack_from("<QQQQ", header, 24) == (1, sectors - 1, 34, sectors - 34)
        assert len(backup) == BACKUP_GPT_BYTES
        assert struct.unpack_from("<QQ", backup, BACKUP_GPT_BYTES - 512 + 24) == (sectors - 1, 1)
