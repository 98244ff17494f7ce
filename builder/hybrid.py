"""The isohybrid disk layout: reading and repairing the MBR and GPT that pycdlib writes.

pycdlib 1.22 writes a GPT whose partition-array CRC is wrong and a backup GPT whose disk and
partition GUIDs differ from the primary's. repair_gpt() rewrites both headers and arrays from the
primary's partition entries, so partitioning tools accept the image as a valid GPT disk.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SECTOR = 512
GPT_SIGNATURE = b"EFI PART"
HEADER_FMT = "<8sIIIIQQQQ16sQIII"  # up to and including the partition array CRC
HEADER_SIZE = struct.calcsize(HEADER_FMT)  # 92
ESP_TYPE = bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")  # C12A7328-F81F-11D2-BA4B-00A0C93EC93B


@dataclass
class GptHeader:
    signature: bytes
    revision: int
    header_size: int
    header_crc: int
    reserved: int
    my_lba: int
    alternate_lba: int
    first_usable: int
    last_usable: int
    disk_guid: bytes
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int

    @classmethod
    def parse(cls, sector: bytes) -> GptHeader:
        return cls(*struct.unpack_from(HEADER_FMT, sector))

    def pack(self) -> bytes:
        """The header sector with a correct header CRC."""
        self.header_crc = 0
        raw = struct.pack(HEADER_FMT, *self.__dict__.values())
        self.header_crc = zlib.crc32(raw[: self.header_size])
        raw = struct.pack(HEADER_FMT, *self.__dict__.values())
        return raw.ljust(SECTOR, b"\0")

    def crc_ok(self) -> bool:
        saved = self.header_crc
        raw = bytearray(struct.pack(HEADER_FMT, *self.__dict__.values()))
        raw[16:20] = b"\0\0\0\0"
        return zlib.crc32(bytes(raw[: self.header_size])) == saved

    @property
    def array_bytes(self) -> int:
        return self.num_entries * self.entry_size


def _read(f: BinaryIO, lba: int, count: int = 1) -> bytes:
    f.seek(lba * SECTOR)
    return f.read(count * SECTOR)


def read_gpt(f: BinaryIO, lba: int) -> tuple[GptHeader, bytes] | None:
    header_sector = _read(f, lba)
    if not header_sector.startswith(GPT_SIGNATURE):
        return None
    header = GptHeader.parse(header_sector)
    f.seek(header.entries_lba * SECTOR)
    return header, f.read(header.array_bytes)


def repair_gpt(path: Path, disk_guid: bytes | None = None) -> bool:
    """Make the backup GPT a true copy of the primary and fix every CRC; False if there is no GPT."""
    with path.open("r+b") as f:
        primary = read_gpt(f, 1)
        if primary is None:
            return False
        header, entries = primary
        if disk_guid is not None:
            header.disk_guid = disk_guid
        header.entries_crc = zlib.crc32(entries)
        f.seek(header.entries_lba * SECTOR)
        f.write(entries)
        f.seek(SECTOR)
        f.write(header.pack())
        backup_entries_lba = header.alternate_lba - header.array_bytes // SECTOR
        backup = GptHeader(**header.__dict__)
        backup.my_lba, backup.alternate_lba = header.alternate_lba, header.my_lba
        backup.entries_lba = backup_entries_lba
        f.seek(backup_entries_lba * SECTOR)
        f.write(entries)
        f.seek(backup.my_lba * SECTOR)
        f.write(backup.pack())
    return True


def separate_partitions(path: Path) -> None:
    """Lay the ESP and the ISO data side by side instead of one inside the other.

    pycdlib's isohybrid layout has an MBR and GPT partition covering the whole image from LBA 0,
    with the ESP inside it. Tools count that as overlapping partitions (and a partition over the
    GPT itself). Here the ESP comes first and the ISO partition starts right after it, in both
    tables. Nothing boots from the ISO partition's start: BIOS runs the MBR code, which finds
    ISOLINUX by absolute LBA, and UEFI reads the ESP; the ISO 9660 file system stays readable
    from the whole device, which is what live-boot and the kernel mount.
    """
    with path.open("r+b") as f:
        mbr = bytearray(_read(f, 0))
        parts = [struct.unpack_from("<B3xB3xII", mbr, 446 + 16 * i) for i in range(4)]
        esp = next((p for p in parts if p[1] == 0xEF), None)
        iso = next((p for p in parts if p[1] != 0xEF and p[3]), None)
        if esp is None or iso is None:
            return
        esp_start, esp_count = esp[2], esp[3]
        iso_start = esp_start + esp_count
        iso_end = iso[2] + iso[3]  # exclusive
        mbr[446:510] = bytes(64)
        lba_chs = b"\xfe\xff\xff"
        struct.pack_into("<B3sB3sII", mbr, 446, 0x00, lba_chs, 0xEF, lba_chs, esp_start, esp_count)
        struct.pack_into("<B3sB3sII", mbr, 462, 0x80, lba_chs, iso[1], lba_chs, iso_start, iso_end - iso_start)
        f.seek(0)
        f.write(mbr)
        primary = read_gpt(f, 1)
        if primary is None:
            return
        header, entries = primary
        size = header.entry_size
        rows = [bytearray(entries[i * size : (i + 1) * size]) for i in range(header.num_entries)]
        used = [r for r in rows if r[:16] != bytes(16)]
        esp_row = next(r for r in used if struct.unpack_from("<Q", r, 32)[0] == esp_start)
        iso_row = next(r for r in used if r is not esp_row)
        esp_row[:16] = ESP_TYPE
        struct.pack_into("<QQ", iso_row, 32, iso_start, header.last_usable)
        rest = [r for r in rows if r[:16] == bytes(16)]
        f.seek(header.entries_lba * SECTOR)
        f.write(b"".join(bytes(r) for r in [esp_row, iso_row, *rest]))


def gpt_problems(path: Path) -> list[str]:
    """What is wrong with the image's GPT (primary and backup), as messages; [] when valid."""
    problems = []
    with path.open("rb") as f:
        primary = read_gpt(f, 1)
        if primary is None:
            return ["no GPT header at LBA 1"]
        header, entries = primary
        if not header.crc_ok():
            problems.append("primary GPT header CRC is wrong")
        if zlib.crc32(entries) != header.entries_crc:
            problems.append("primary GPT partition array CRC is wrong")
        backup = read_gpt(f, header.alternate_lba)
        if backup is None:
            problems.append(f"no backup GPT header at LBA {header.alternate_lba}")
            return problems
        b_header, b_entries = backup
        if not b_header.crc_ok():
            problems.append("backup GPT header CRC is wrong")
        if zlib.crc32(b_entries) != b_header.entries_crc:
            problems.append("backup GPT partition array CRC is wrong")
        if b_header.disk_guid != header.disk_guid or b_entries != entries:
            problems.append("backup GPT differs from the primary GPT")
    return problems


def mbr_partitions(path: Path) -> list[tuple[int, int, int, int]]:
    """(status, type, start LBA, sectors) of each used MBR entry; [] without a 0x55AA signature."""
    with path.open("rb") as f:
        mbr = f.read(SECTOR)
    if mbr[510:512] != b"\x55\xaa":
        return []
    parts = []
    for i in range(4):
        status, ptype, start, count = struct.unpack_from("<B3xB3xII", mbr, 446 + 16 * i)
        if ptype or count:
            parts.append((status, ptype, start, count))
    return parts
