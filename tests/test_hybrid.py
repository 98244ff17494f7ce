"""The isohybrid layout code on pycdlib's own output, held in a SparseImage (no ISO needed)."""

from __future__ import annotations

import io
import struct
import zlib

import pycdlib.isohybrid
import pytest

from builder.hybrid import (
    BACKUP_GPT_BYTES,
    ESP_TYPE,
    GPT_HEADER_FIELDS,
    SECTOR,
    SYSTEM_AREA,
    GptHeader,
    Region,
    SparseImage,
    finish_hybrid,
    gpt_regions,
    mbr_regions,
    padding_after_volume,
    read_gpt,
)

VOLUME = 3 * 2**20 + 5 * 2048  # bytes in a made-up ISO 9660 volume
EFI_LBA, EFI_SECTORS, ISOLINUX_LBA = 47, 4096, 1071


def pycdlib_image(efi: bool = True) -> SparseImage:
    """What pycdlib writes outside the volume for add_isohybrid(efi=...), before xenlive's repairs."""
    hybrid = pycdlib.isohybrid.IsoHybrid()
    hybrid.new(efi, False, 1, 0x12345678, 0, 32, 64, 0 if efi else 0x17)
    hybrid.update_rba(ISOLINUX_LBA)
    if efi:
        hybrid.update_efi(EFI_LBA, EFI_SECTORS, VOLUME)
    size = VOLUME + len(hybrid.record_padding(VOLUME))
    backup = hybrid.secondary_gpt.record() if efi else b""
    image = SparseImage(size, SYSTEM_AREA, min(VOLUME, size - len(backup)))
    image.write(hybrid.record(VOLUME))
    image.seek(size - len(backup))
    image.write(backup)
    return image


def mbr_entries(image: SparseImage) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<B3xB3xII", image.head, 446 + 16 * i) for i in range(4)]


def header_crc_ok(sector: bytes) -> bool:
    raw = bytearray(sector[:92])
    (crc,) = struct.unpack_from("<I", raw, 16)
    raw[16:20] = bytes(4)
    return zlib.crc32(bytes(raw)) == crc


def test_pycdlib_writes_the_backup_gpt_over_a_volume_ending_near_a_cylinder_boundary():
    """The fault padding_after_volume exists for; if pycdlib fixes it, this test says so."""
    hybrid = pycdlib.isohybrid.IsoHybrid()
    hybrid.new(True, False, 1, 0x12345678, 0, 32, 64, 0)
    volume = 3 * 2**20 - 4 * 2048
    hybrid.update_efi(EFI_LBA, EFI_SECTORS, volume)
    assert len(hybrid.record_padding(volume)) == 4 * 2048 < BACKUP_GPT_BYTES
    assert hybrid.secondary_gpt.header.current_lba == 3 * 2**20 // SECTOR - 1  # the image's last sector


@pytest.mark.parametrize(
    ("room", "gpt", "padding"),
    [
        (0, False, 0),  # BIOS only: up to the cylinder, as pycdlib pads
        (8192, False, 8192),
        (0, True, 2**20),  # a backup GPT never fits in no padding: one cylinder more
        (8192, True, 8192 + 2**20),
        (BACKUP_GPT_BYTES - 512, True, BACKUP_GPT_BYTES - 512 + 2**20),
        (BACKUP_GPT_BYTES, True, BACKUP_GPT_BYTES),  # fits exactly
        (2**20 - 2048, True, 2**20 - 2048),
    ],
)
def test_padding_after_the_volume_holds_the_backup_gpt(room, gpt, padding):
    for cylinders in (1, 7):
        assert padding_after_volume(cylinders * 2**20 - room, 2**20, gpt) == padding


def test_padding_with_a_cylinder_smaller_than_the_gpt_adds_as_many_as_it_takes():
    assert padding_after_volume(10 * 4096, 4096, True) == 5 * 4096 >= BACKUP_GPT_BYTES
    with pytest.raises(ValueError, match="cylinder of 0 bytes"):
        padding_after_volume(4096, 0, True)


def test_pycdlib_layout_needs_repair():
    """The faults finish_hybrid exists for; if pycdlib fixes them, this test says so."""
    image = pycdlib_image()
    header, entries = read_gpt(image, 1) or pytest.fail("no GPT")
    assert zlib.crc32(entries) != header.entries_crc
    status, _ptype, start, _count = mbr_entries(image)[0]
    assert (status, start) == (0x80, 0)  # the ISO partition starts at LBA 0, over the ESP


def test_finish_hybrid_lays_partitions_side_by_side_with_a_valid_gpt():
    image = pycdlib_image()
    guid = bytes(range(16))
    finish_hybrid(image, guid)
    esp, iso, *rest = mbr_entries(image)
    assert esp == (0x00, 0xEF, EFI_LBA * 4, EFI_SECTORS)
    assert iso[0] == 0x80 and iso[2] == EFI_LBA * 4 + EFI_SECTORS
    assert iso[2] + iso[3] == (VOLUME + 2**20 - 1) // 2**20 * 2**20 // SECTOR  # up to the end of the cylinder
    assert rest == [(0, 0, 0, 0)] * 2
    header, entries = read_gpt(image, 1) or pytest.fail("no primary GPT")
    assert header.disk_guid == guid and zlib.crc32(entries) == header.entries_crc
    assert header_crc_ok(bytes(image.head[SECTOR : 2 * SECTOR]))
    assert entries[:16] == ESP_TYPE and struct.unpack_from("<QQ", entries, 32) == (EFI_LBA * 4, EFI_LBA * 4 + 4095)
    assert struct.unpack_from("<Q", entries, 128 + 32)[0] == EFI_LBA * 4 + EFI_SECTORS
    backup, backup_entries = read_gpt(image, header.alternate_lba) or pytest.fail("no backup GPT")
    assert backup_entries == entries and backup.disk_guid == guid
    assert (backup.my_lba, backup.alternate_lba) == (header.alternate_lba, 1)
    assert backup.my_lba == image.size // SECTOR - 1
    assert header_crc_ok(bytes(image.tail[-SECTOR:]))


def test_finish_hybrid_without_uefi_leaves_the_bios_mbr_alone():
    image = pycdlib_image(efi=False)
    before = bytes(image.head)
    finish_hybrid(image, bytes(16))
    assert bytes(image.head) == before
    assert mbr_entries(image)[0][:2] == (0x80, 0x17)


def test_read_gpt_refuses_headers_xenlive_never_writes():
    image = pycdlib_image()
    finish_hybrid(image, bytes(16))
    sector = bytes(image.head[SECTOR : 2 * SECTOR])
    for offset, value in ((80, 0xFFFFFFFF), (84, 1 << 31), (12, 512), (84, 0)):
        forged = bytearray(sector)
        struct.pack_into("<I", forged, offset, value)
        disk = io.BytesIO(bytes(SECTOR) + bytes(forged) + bytes(16384))
        assert read_gpt(disk, 1) is None, offset
    far = bytearray(sector)
    struct.pack_into("<Q", far, 72, 1 << 40)  # the array lies far past the end: a short read
    assert read_gpt(io.BytesIO(bytes(SECTOR) + bytes(far)), 1) is None
    assert read_gpt(io.BytesIO(bytes(SECTOR) + b"EFI PART"), 1) is None  # a header cut short


def test_gpt_header_pack_round_trips_with_a_valid_crc():
    image = pycdlib_image()
    finish_hybrid(image, bytes(16))
    header, _ = read_gpt(image, 1) or pytest.fail("no GPT")
    sector = header.pack()
    assert len(sector) == SECTOR and header_crc_ok(sector) and GptHeader.parse(sector) == header


def test_sparse_image_refuses_the_volume_in_between():
    image = SparseImage(10_000, 100, 9_000)
    image.seek(50)
    image.write(b"ab")
    image.seek(-1000, 2)
    image.write(b"cd")
    assert image.head[50:52] == b"ab" and image.tail[:2] == b"cd"
    image.seek(9_998)
    assert image.read() == b"\0\0" and image.read(5) == b""
    for offset, size in ((99, 2), (100, 1), (8_999, 2), (5_000, 1)):
        image.seek(offset)
        with pytest.raises(ValueError, match="inside the ISO 9660 volume"):
            image.read(size)
    with pytest.raises(ValueError, match="out of order"):
        SparseImage(100, 50, 10)


def covers(regions: list[Region], start: int, end: int) -> bool:
    """The regions tile [start, end): in order, no gap, no overlap."""
    at = start
    for region in regions:
        if region.start != at or region.end <= region.start:
            return False
        if region.fmt is not None and struct.calcsize(region.fmt) != region.end - region.start:
            return False
        at = region.end
    return at == end


def test_regions_name_every_byte_once():
    assert covers(mbr_regions(), 0, SECTOR)
    assert covers(gpt_regions("primary", SECTOR, 2 * SECTOR), SECTOR, 2 * SECTOR + 128 * 128)
    assert covers([Region(a, b, n, f) for a, b, n, f in GPT_HEADER_FIELDS], 0, SECTOR)
    names = [r.name for r in gpt_regions("backup", 100 * SECTOR, 67 * SECTOR)]
    assert "backup GPT header CRC" in names and "backup GPT partition entry 128" in names
