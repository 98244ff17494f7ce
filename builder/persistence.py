"""A stick's persistence partition: what `xenlive burn --persistence` adds after the image.

The image is written as it is, except for its partition tables: the MBR and the GPT gain a third
partition after the image (builder/hybrid.py, add_persistence), and the backup GPT moves from the
image's end to the disk's end, where partitioning tools and firmware look for it. The image's old
backup GPT, in the padding after the ISO 9660 volume, is zeroed. The partition gets an ext4 file
system labelled "persistence", as live-boot names its persistence volumes; xenlive's dom0 finds it
by that label on the disk it booted from (templates/dom0/usr/lib/xenlive/persist).

What is written for the image part is therefore known before a byte is written: `Plan.head` and
`Plan.tail` replace the image's system area and the disk's last sectors, and the read-back compares
the image part as written, so verification still covers every byte of the image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import UsageError
from builder.hybrid import BACKUP_GPT_BYTES, SYSTEM_AREA, PersistenceLayout, SparseImage, add_persistence
from builder.hybrid import persistence_layout as layout_for
from builder.run import require_tools, run
from builder.terminal import human_size
from builder.yamlconv import parse_size_mib

REST = "rest"
MIN_BYTES = 64 << 20  # an ext4 journal, the guests' copy-on-write files and reports need room
LABEL = "persistence"


@dataclass(frozen=True)
class Plan:
    """The partition, and the bytes that replace the image's system area and the disk's end."""

    layout: PersistenceLayout
    head: bytes  # the image's first SYSTEM_AREA bytes, with the new tables
    tail: bytes  # the disk's last BACKUP_GPT_BYTES: the backup GPT

    def image_part(self, offset: int, chunk: bytes) -> bytes:
        """`chunk`, read from the image at `offset`, as it is written to the stick."""
        end = offset + len(chunk)
        data = bytearray(chunk)
        if offset < SYSTEM_AREA:
            n = min(end, SYSTEM_AREA) - offset
            data[:n] = self.head[offset : offset + n]
        old_backup = self.layout.image_bytes - BACKUP_GPT_BYTES
        if end > old_backup:
            at = max(offset, old_backup)
            data[at - offset :] = bytes(end - at)
        return bytes(data)

    def describe(self) -> str:
        return (
            f"then a persistence partition of {human_size(self.layout.size)} after the image "
            f"(ext4, label {LABEL}, bytes {self.layout.start} to {self.layout.end})"
        )


def parse_request(value: str) -> int | None:
    """`--persistence SIZE|rest`: bytes, or None for the rest of the disk. Bad input: UsageError."""
    if value.strip() == REST:
        return None
    mib = parse_size_mib(value)
    if mib is None:
        raise UsageError(f"--persistence {value!r}: expected a size such as 512M or 4G, or {REST}")
    if mib << 20 < MIN_BYTES:
        raise UsageError(f"--persistence {value!r}: at least {human_size(MIN_BYTES)}")
    return mib << 20


def plan(iso: Path, image_bytes: int, size: int | None, disk_bytes: int | None, what: str) -> Plan:
    """The layout and the new tables for `iso` on a disk of `disk_bytes` (None: an image file)."""
    try:
        layout = layout_for(image_bytes, size=size, disk_bytes=disk_bytes)
    except ValueError as e:
        raise UsageError(f"--persistence on {what}: {e}") from None
    if layout.size < MIN_BYTES:
        raise UsageError(
            f"--persistence on {what}: only {human_size(layout.size)} after the image, "
            f"at least {human_size(MIN_BYTES)} needed"
        )
    disk = SparseImage(layout.disk_bytes, SYSTEM_AREA, layout.backup_gpt_at)
    with iso.open("rb") as f:
        disk.head[:] = f.read(SYSTEM_AREA)
    try:
        add_persistence(disk, layout)
    except ValueError as e:
        raise UsageError(f"{iso}: cannot add a persistence partition: {e}") from None
    return Plan(layout, bytes(disk.head), bytes(disk.tail))


def make_filesystem(path: Path, layout: PersistenceLayout) -> None:
    """ext4 labelled `persistence` inside the partition, written through the whole disk or file.

    mke2fs's offset writes the file system where the partition is without a partition device node
    (a stick's new partition has none until the kernel reads its tables again). No discard: a
    discard would not honour the offset on every version, and the stick is written anyway.
    """
    require_tools(["mkfs.ext4"])
    kib = layout.size // 1024
    run(["mkfs.ext4", "-q", "-F", "-L", LABEL, "-m", "0", "-E", f"offset={layout.start},nodiscard",
         str(path), f"{kib}k"])  # fmt: skip
