"""The isohybrid disk layout: the MBR and GPT around the ISO 9660 volume, as xenlive ships them.

pycdlib 1.22 writes an MBR with the ESP inside the ISO partition, a GPT whose partition-array CRC
is wrong and a backup GPT whose disk and partition GUIDs differ from the primary's.
finish_hybrid() lays the partitions side by side and rewrites both GPTs from the primary's
entries, so partitioning tools accept the image as a valid GPT disk. It also pads the volume to a
whole cylinder and puts the backup GPT at the very end even when the padding is shorter than the
GPT, over the volume's last bytes; padding_after_volume() is the padding xenlive asks for instead.

The functions work on any seekable object (`Disk`), not only on files: verify runs the very same
code on a SparseImage holding just the areas outside the volume, to learn what mastering writes
there without reading gigabytes. The Region tables name each field of those areas, so a difference
is reported as "MBR partition entry 2" rather than as a byte offset.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Protocol

SECTOR = 512
SYSTEM_AREA = 16 * 2048  # before the first volume descriptor; ISO 9660 leaves it to the platform
GPT_SIGNATURE = b"EFI PART"
HEADER_FMT = "<8sIIIIQQQQ16sQIII"  # up to and including the partition array CRC
HEADER_SIZE = struct.calcsize(HEADER_FMT)  # 92
MAX_ARRAY_BYTES = 128 * 128  # the array pycdlib writes; a larger claim is never read
BACKUP_GPT_BYTES = MAX_ARRAY_BYTES + SECTOR  # the image's last 33 sectors: the array, then the header
ESP_TYPE = bytes.fromhex("28732ac11ff8d211ba4b00a0c93ec93b")  # C12A7328-F81F-11D2-BA4B-00A0C93EC93B


class Disk(Protocol):
    """What the layout code needs of an image: an open file, or a SparseImage."""

    def seek(self, offset: int, whence: int = 0, /) -> int: ...

    def read(self, size: int = -1, /) -> bytes: ...

    def write(self, data: bytes, /) -> int: ...


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

    @property
    def array_bytes(self) -> int:
        return self.num_entries * self.entry_size


def padding_after_volume(volume_bytes: int, cylinder: int, backup_gpt: bool) -> int:
    """The zeros between the ISO 9660 volume and the image's end.

    Up to a whole cylinder, as isohybrid does (the MBR partition ends on one, for firmware that
    still counts in CHS). With a backup GPT, at least BACKUP_GPT_BYTES, one cylinder more when the
    rest of the last one is shorter: the GPT is written over the end of the padding, and anything
    of it that reached into the volume would overwrite the volume's last file.
    """
    if cylinder <= 0:
        raise ValueError(f"cylinder of {cylinder} bytes")
    padding = -volume_bytes % cylinder
    while backup_gpt and padding < BACKUP_GPT_BYTES:
        padding += cylinder
    return padding


def _read(f: Disk, lba: int, count: int = 1) -> bytes:
    f.seek(lba * SECTOR)
    return f.read(count * SECTOR)


def read_gpt(f: Disk, lba: int) -> tuple[GptHeader, bytes] | None:
    """The GPT header at `lba` and its partition array; None unless it is a header xenlive could have
    written (a 92-byte header, 128-byte entries, an array of at most MAX_ARRAY_BYTES)."""
    header_sector = _read(f, lba)
    if len(header_sector) < HEADER_SIZE or not header_sector.startswith(GPT_SIGNATURE):
        return None
    header = GptHeader.parse(header_sector)
    if header.header_size != HEADER_SIZE or header.entry_size != 128 or header.array_bytes > MAX_ARRAY_BYTES:
        return None
    f.seek(header.entries_lba * SECTOR)
    entries = f.read(header.array_bytes)
    return (header, entries) if len(entries) == header.array_bytes else None


def finish_hybrid(f: Disk, disk_guid: bytes) -> None:
    """Turn pycdlib's isohybrid output into the layout xenlive ships (see the module docstring)."""
    separate_partitions(f)
    repair_gpt(f, disk_guid)


def repair_gpt(f: Disk, disk_guid: bytes | None = None) -> bool:
    """Make the backup GPT a true copy of the primary and fix every CRC; False if there is no GPT."""
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


def separate_partitions(f: Disk) -> None:
    """Lay the ESP and the ISO data side by side instead of one inside the other.

    pycdlib's isohybrid layout has an MBR and GPT partition covering the whole image from LBA 0,
    with the ESP inside it. Tools count that as overlapping partitions (and a partition over the
    GPT itself). Here the ESP comes first and the ISO partition starts right after it, in both
    tables. Nothing boots from the ISO partition's start: BIOS runs the MBR code, which finds
    ISOLINUX by absolute LBA, and UEFI reads the ESP; the ISO 9660 file system stays readable
    from the whole device, which is what live-boot and the kernel mount.
    """
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
    f.write(bytes(mbr))
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


class SparseImage:
    """An image of `size` bytes that holds only its first `head` bytes and everything from `tail_start`.

    Reads and writes must stay inside those two areas: anything else would be the ISO 9660
    volume, which the layout code never touches; a ValueError says it did.
    """

    def __init__(self, size: int, head: int, tail_start: int) -> None:
        if not 0 <= head <= tail_start <= size:
            raise ValueError(f"areas out of order: head {head}, tail from {tail_start}, size {size}")
        self.size = size
        self.head = bytearray(head)
        self.tail_start = tail_start
        self.tail = bytearray(size - tail_start)
        self.pos = 0

    def seek(self, offset: int, whence: int = 0, /) -> int:
        self.pos = {0: offset, 1: self.pos + offset, 2: self.size + offset}[whence]
        return self.pos

    def _area(self, size: int) -> tuple[bytearray, int]:
        start, end = self.pos, self.pos + size
        if 0 <= start and end <= len(self.head):
            return self.head, start
        if self.tail_start <= start and end <= self.size:
            return self.tail, start - self.tail_start
        raise ValueError(f"bytes {start}..{end} are inside the ISO 9660 volume, which this image does not hold")

    def read(self, size: int = -1, /) -> bytes:
        size = max(0, min(self.size - self.pos, self.size if size < 0 else size))
        area, at = self._area(size)
        self.pos += size
        return bytes(area[at : at + size])

    def write(self, data: bytes, /) -> int:
        area, at = self._area(len(data))
        area[at : at + len(data)] = data
        self.pos += len(data)
        return len(data)


@dataclass(frozen=True)
class Region:
    """A named field of the image; `fmt` (a struct format) shows its value in messages."""

    start: int
    end: int
    name: str
    fmt: str | None = None


def mbr_regions() -> list[Region]:
    """The isohybrid MBR: boot code, ISOLINUX's address for that code, disk signature, partitions."""
    regions = [
        Region(0, 432, "MBR boot code"),
        Region(432, 436, "MBR boot code's address of isolinux.bin (512-byte LBA)", "<I"),
        Region(436, 440, "MBR reserved area"),
        Region(440, 444, "MBR disk signature", "<I"),
        Region(444, 446, "MBR reserved area"),
    ]
    regions += [Region(446 + 16 * i, 462 + 16 * i, f"MBR partition entry {i + 1}") for i in range(4)]
    regions.append(Region(510, 512, "MBR boot signature"))
    return regions


GPT_HEADER_FIELDS = [
    (0, 8, "signature", None),
    (8, 12, "revision", "<I"),
    (12, 16, "size", "<I"),
    (16, 20, "CRC", "<I"),
    (20, 24, "reserved area", None),
    (24, 32, "own LBA", "<Q"),
    (32, 40, "other header's LBA", "<Q"),
    (40, 48, "first usable LBA", "<Q"),
    (48, 56, "last usable LBA", "<Q"),
    (56, 72, "disk GUID", None),
    (72, 80, "partition array LBA", "<Q"),
    (80, 84, "number of partition entries", "<I"),
    (84, 88, "partition entry size", "<I"),
    (88, 92, "partition array CRC", "<I"),
    (92, SECTOR, "reserved area", None),
]


def gpt_regions(which: str, header_at: int, entries_at: int, entries: int = 128) -> list[Region]:
    """A GPT (`which` is "primary" or "backup"): its header fields and each 128-byte partition entry."""
    fields = GPT_HEADER_FIELDS
    regions = [Region(header_at + a, header_at + b, f"{which} GPT header {name}", fmt) for a, b, name, fmt in fields]
    regions += [
        Region(entries_at + 128 * i, entries_at + 128 * (i + 1), f"{which} GPT partition entry {i + 1}")
        for i in range(entries)
    ]
    return regions


# A stick's persistence partition (`xenlive burn --persistence`), after the image: a Linux file
# system partition in both tables, with the backup GPT moved to the end of the disk.
LINUX_FS_TYPE = bytes.fromhex("af3dc60f838472478e793d69d8477de4")  # 0FC63DAF-8483-4772-8E79-3D69D8477DE4
MBR_LINUX = 0x83
PERSISTENCE_NAME = "persistence"
ALIGN = 1 << 20  # partitions start and end on a MiB, as partitioning tools do
MBR_MAX_SECTORS = 0xFFFFFFFF


@dataclass(frozen=True)
class PersistenceLayout:
    """Where a persistence partition goes on a disk of `disk_bytes` holding an image of `image_bytes`."""

    image_bytes: int
    disk_bytes: int
    start: int  # bytes, the partition's first byte
    end: int  # bytes, exclusive

    @property
    def size(self) -> int:
        return self.end - self.start

    @property
    def backup_gpt_at(self) -> int:
        return self.disk_bytes - BACKUP_GPT_BYTES


def persistence_layout(image_bytes: int, *, size: int | None, disk_bytes: int | None) -> PersistenceLayout:
    """The partition after the image: `size` bytes, or (size None) the rest of a disk of `disk_bytes`.

    Without a disk size (an image file), the disk is made just large enough. Raises ValueError with
    a message naming the sizes when it does not fit.
    """
    start = -(-image_bytes // ALIGN) * ALIGN
    if size is None:
        if disk_bytes is None:
            raise ValueError("the rest of the disk needs a disk: give a size for an image file")
        end = (disk_bytes - BACKUP_GPT_BYTES) // ALIGN * ALIGN
    else:
        end = start + size
        if disk_bytes is None:
            disk_bytes = end + ALIGN  # room for the backup GPT, and a whole MiB
    if end <= start or disk_bytes < end + BACKUP_GPT_BYTES:
        raise ValueError(f"no room for it: the image ends at byte {start}, the disk has {disk_bytes} bytes")
    if disk_bytes // SECTOR > MBR_MAX_SECTORS:
        raise ValueError(f"a disk of {disk_bytes} bytes is larger than the MBR can describe (2 TiB)")
    return PersistenceLayout(image_bytes, disk_bytes, start, end)


def add_persistence(f: Disk, layout: PersistenceLayout) -> None:
    """Add the partition of `layout` to an image's MBR and GPT, the backup GPT at the disk's end.

    `f` holds the image's system area and the disk's last BACKUP_GPT_BYTES (a SparseImage of
    layout.disk_bytes). The image's own partitions stay as they are; the new one is the third.
    """
    mbr = bytearray(_read(f, 0))
    slot = next((i for i in range(4) if struct.unpack_from("<I", mbr, 446 + 16 * i + 12)[0] == 0), None)
    if slot is None or mbr[510:512] != b"\x55\xaa":
        raise ValueError("the image's MBR has no free partition entry")
    first, count = layout.start // SECTOR, layout.size // SECTOR
    struct.pack_into("<B3sB3sII", mbr, 446 + 16 * slot, 0x00, b"\xfe\xff\xff", MBR_LINUX, b"\xfe\xff\xff", first, count)
    f.seek(0)
    f.write(bytes(mbr))
    primary = read_gpt(f, 1)
    if primary is None:
        raise ValueError("the image has no GPT xenlive wrote")
    header, entries = primary
    rows = [entries[i : i + header.entry_size] for i in range(0, len(entries), header.entry_size)]
    free = next((i for i, row in enumerate(rows) if row[:16] == bytes(16)), None)
    if free is None:
        raise ValueError("the image's GPT has no free partition entry")
    unique = zlib.crc32(header.disk_guid).to_bytes(4, "little") + header.disk_guid[4:]  # stable, and not the disk's
    name = PERSISTENCE_NAME.encode("utf-16-le").ljust(72, b"\0")
    rows[free] = LINUX_FS_TYPE + unique + struct.pack("<QQQ", first, first + count - 1, 0) + name
    disk_sectors = layout.disk_bytes // SECTOR
    header.alternate_lba = disk_sectors - 1
    header.last_usable = disk_sectors - BACKUP_GPT_BYTES // SECTOR - 1
    f.seek(SECTOR)
    f.write(header.pack())
    f.seek(header.entries_lba * SECTOR)
    f.write(b"".join(rows))
    repair_gpt(f)
