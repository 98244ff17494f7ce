"""`xenlive verify`: read an ISO back and check everything that boots against what xenlive writes.

An ISO handed to verify (or burn) is untrusted, and so is the manifest inside it: a manifest can be
rewritten to match a changed file. So verify checks two things:

- **The image as a whole**, against a sha256 from outside the medium: `--sha256`, or the line for
  the ISO's name in SHA256SUMS beside it (which `xenlive build` writes). Without either, it says
  that the manifest was only checked against itself.
- **Its structure**, against what xenlive's mastering writes, derived from the volume's own
  directory records: the system area (MBR boot code, partition entries, primary GPT), the El
  Torito boot record and catalogue (each entry's load size and LBA against the file it loads),
  isolinux.bin's boot-info table, the padding and backup GPT after the volume (and nothing after
  that), every file against the manifest, and the Joliet and ISO 9660 names against the checked
  Rock Ridge files. pycdlib never sees the system area, so a crafted MBR or GPT cannot upset it.

Each problem names what differs: a file, "MBR boot code", "boot catalogue entry 2 load size", ...
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from builder.errors import UsageError
from builder.hybrid import (
    BACKUP_GPT_BYTES,
    GPT_SIGNATURE,
    SECTOR,
    SYSTEM_AREA,
    Region,
    gpt_regions,
    mbr_regions,
)
from builder.medium import BOOT_CATALOG, EFI_IMAGE, ISOLINUX_BIN, MANIFEST
from builder.profile.model import Firmware
from builder.stages.boot import BOOT_INFO_TABLE
from builder.stages.iso import PLATFORM_UEFI, hybrid_areas

SUMS = "SHA256SUMS"
ISO_BLOCK = 2048
PVD_LBA = 16
BOOT_RECORD_LBA = 17  # El Torito: the boot record is the volume descriptor at sector 17
BIOS_LOAD_SECTORS = 4  # ISOLINUX's El Torito load size: its first 2048 bytes, which load the rest
MANIFEST_MAX_BYTES = 16 << 20
SUMS_MAX_BYTES = 1 << 20
ISOLINUX_MAX_BYTES = 1 << 20  # ISOLINUX runs below 640 KiB; a bigger file is not one
SQUASHFS_MAGIC = b"hsqs"
HEAD_BYTES = 96  # what is kept of each file: enough for a squashfs superblock
KEEP = {MANIFEST: MANIFEST_MAX_BYTES + 1, ISOLINUX_BIN: ISOLINUX_MAX_BYTES + 1}  # files kept whole
DIGEST = re.compile(r"[0-9a-f]{64}")
BUILD_ID = re.compile(r"[0-9a-f]{8,64}")
SUMS_LINE = re.compile(r"([0-9a-fA-F]{64}) [ *](.+)")
FIRMWARE = tuple(f.value for f in Firmware)
MAX_LISTED = 10  # bad manifest entries named one by one; a hostile manifest can have millions

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Verdict:
    """What verify found: `problems` fail it; `warnings` say what it could not vouch for."""

    problems: list[str]
    warnings: list[str] = field(default_factory=list)
    digest_source: str | None = None  # where the out-of-band sha256 that matched came from


@dataclass(frozen=True)
class Manifest:
    files: dict[str, str]
    build_id: str
    boot: frozenset[str]
    size_limit: int | None


@dataclass(frozen=True)
class MediumFile:
    extent: int
    length: int
    sha256: str
    head: bytes  # the first bytes (all of them for isolinux.bin and the manifest)
    error: str | None = None  # why pycdlib could not read its data


@dataclass(frozen=True)
class Tree:
    """What pycdlib read from the volume's directory records: everything later checks need."""

    volume_bytes: int
    block_size: int
    files: dict[str, MediumFile]  # Rock Ridge path without the leading "/"
    other_names: list[tuple[str, str, int, int]]  # (tree, path, extent, length) of Joliet and ISO 9660 names


class _Sink:
    """A write-only file object that hashes what pycdlib streams into it and keeps its first bytes."""

    def __init__(self, keep: int) -> None:
        self.digest = hashlib.sha256()
        self.keep = keep
        self.head = bytearray()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        if len(self.head) < self.keep:
            self.head += data[: self.keep - len(self.head)]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        """Only what pycdlib's zero padding does: skip forward over bytes that then read as zeros."""
        if whence != os.SEEK_CUR or offset < 0:
            raise ValueError("a hashing sink only skips forward")
        self.write(bytes(offset))
        return 0


class _FileSystemOnly:
    """The image as pycdlib reads it: only the ISO 9660 file system, none of the boot structures.

    pycdlib parses an isohybrid MBR and GPT and the El Torito catalogue when it opens an image.
    Crafted GPT fields make it raise struct.error or read far past the end, a crafted catalogue
    makes it refuse the whole image, and it hands out its own rendering of the catalogue and of
    isolinux.bin's boot-info table instead of the bytes on the medium. So it sees zeros in the
    system area and a boot record whose system id is blank (a boot record of no known kind, which
    it ignores); verify compares those structures byte for byte itself.
    """

    mode = "rb"

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._hidden = [(0, SYSTEM_AREA)]
        f.seek(BOOT_RECORD_LBA * ISO_BLOCK)
        if f.read(6) == b"\0CD001":
            self._hidden.append((BOOT_RECORD_LBA * ISO_BLOCK + 7, BOOT_RECORD_LBA * ISO_BLOCK + 39))

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int = -1) -> bytes:
        at = self._f.tell()
        data = self._f.read(size)
        for start, end in self._hidden:
            a, b = max(start, at), min(end, at + len(data))
            if a < b:
                data = data[: a - at] + bytes(b - a) + data[b - at :]
        return data

    def close(self) -> None:
        """pycdlib does not own the file: the caller closes it."""


def verify_iso(iso: Path, *, sha256: str | None = None) -> Verdict:
    """Check `iso`; `sha256` is the image's digest from a trusted source (SHA256SUMS beside it otherwise)."""
    if sha256 is not None and not DIGEST.fullmatch(sha256.lower()):
        raise UsageError(f"--sha256: expected 64 hexadecimal digits, got {sha256!r}")
    try:
        fd = os.open(iso, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a FIFO must not hang us
    except FileNotFoundError:
        return Verdict([f"{iso}: no such file"])
    except OSError as e:
        return Verdict([f"{iso}: cannot open: {e.strerror}"])
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return Verdict([f"{iso}: not a regular file; verify reads an ISO image file"])
    with os.fdopen(fd, "rb") as f:
        warnings: list[str] = []
        problems, source = _check_digest(iso, f, sha256, warnings)
        problems += _check_medium(iso, f, info.st_size)
    return Verdict(problems, warnings, source if not problems else None)


# --- the out-of-band digest -----------------------------------------------------------------------


def _check_digest(iso: Path, f: BinaryIO, given: str | None, warnings: list[str]) -> tuple[list[str], str | None]:
    if given is not None:
        expected, source = given.lower(), "--sha256"
    else:
        found = _digest_from_sums(iso, warnings)
        if found is None:
            warnings.append(
                f"{iso}: no out-of-band sha256 (--sha256, or a line for {iso.name} in {SUMS} beside it): "
                "the manifest on the medium was only checked against itself"
            )
            return [], None
        expected, source = found
    actual = hashlib.sha256()
    f.seek(0)
    while chunk := f.read(1 << 20):
        actual.update(chunk)
    if actual.hexdigest() != expected:
        return [f"{iso}: sha256 {actual.hexdigest()} differs from {expected} given by {source}"], None
    return [], source


def _digest_from_sums(iso: Path, warnings: list[str]) -> tuple[str, str] | None:
    """The sha256 that SHA256SUMS beside the ISO gives for its name, and where it came from."""
    sums = iso.parent / SUMS
    try:
        fd = os.open(sums, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        warnings.append(f"{sums}: cannot open: {e.strerror}; not used")
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        warnings.append(f"{sums}: not a regular file; not used")
        return None
    with os.fdopen(fd, "rb") as f:
        raw = f.read(SUMS_MAX_BYTES + 1)
    if len(raw) > SUMS_MAX_BYTES:
        warnings.append(f"{sums}: larger than {SUMS_MAX_BYTES} bytes; not used")
        return None
    digests = set()
    for line in raw.decode("utf-8", "replace").splitlines():
        m = SUMS_LINE.fullmatch(line)
        if m and m.group(2) == iso.name:
            digests.add(m.group(1).lower())
    if len(digests) > 1:
        return " and ".join(sorted(digests)), f"{sums} (which lists {iso.name} with different digests)"
    if not digests:
        warnings.append(f"{sums} has no line for {iso.name}")
        return None
    return digests.pop(), str(sums)


# --- reading the volume ---------------------------------------------------------------------------


def _check_medium(iso: Path, f: BinaryIO, size: int) -> list[str]:
    try:
        tree = _read_tree(f)
    except Exception as e:  # pycdlib parses hostile bytes: whatever it raises, the image is unreadable
        log.debug("pycdlib could not read %s", iso, exc_info=True)
        return [f"{iso}: not a readable ISO 9660 image ({type(e).__name__}: {e})"]
    manifest_file = tree.files.get(MANIFEST)
    if manifest_file is None:
        return [f"{iso}: no /{MANIFEST}; not an ISO built by xenlive"]
    if manifest_file.length > MANIFEST_MAX_BYTES:
        return [f"/{MANIFEST}: {manifest_file.length} bytes, more than a manifest's {MANIFEST_MAX_BYTES}"]
    manifest, problems = parse_manifest(manifest_file.head)
    if manifest is None:
        return problems
    if tree.block_size != ISO_BLOCK:
        return [f"{iso}: logical block size {tree.block_size}, xenlive writes {ISO_BLOCK}"]
    problems += _check_boot(f, size, tree, manifest)
    problems += _check_files(tree, manifest)
    if manifest.size_limit is not None and size > manifest.size_limit:
        problems.append(f"{iso}: {size} bytes, more than the medium's {manifest.size_limit}")
    return problems


def _read_tree(f: BinaryIO) -> Tree:
    iso_fs = pycdlib.PyCdlib()
    iso_fs.open_fp(_FileSystemOnly(f))  # type: ignore[arg-type]  # seek/tell/read is all it uses
    try:
        files: dict[str, MediumFile] = {}
        for rel in _walk(iso_fs, "rr_path"):
            record = iso_fs.get_record(rr_path=f"/{rel}")
            sink = _Sink(KEEP.get(rel, HEAD_BYTES))
            error = None
            try:
                iso_fs.get_file_from_iso_fp(sink, rr_path=f"/{rel}", blocksize=1 << 20)  # type: ignore[arg-type]
            except PyCdlibException as e:  # a symlink, a record without data
                error = str(e)
            digest = sink.digest.hexdigest()
            files[rel] = MediumFile(record.extent_location(), record.get_data_length(), digest, bytes(sink.head), error)
        others = []
        for kind, tree in (("joliet_path", "Joliet"), ("iso_path", "ISO 9660")):
            if kind == "joliet_path" and iso_fs.joliet_vd is None:
                continue
            for rel in _walk(iso_fs, kind):
                record = iso_fs.get_record(**{kind: f"/{rel}"})
                others.append((tree, rel, record.extent_location(), record.get_data_length()))
        return Tree(
            iso_fs.pvd.space_size * iso_fs.pvd.logical_block_size(), iso_fs.pvd.logical_block_size(), files, others
        )
    finally:
        iso_fs.close()


def _walk(iso_fs: pycdlib.PyCdlib, kind: str) -> list[str]:
    found = []
    for dirpath, _dirs, names in iso_fs.walk(**{kind: "/"}):
        found += [f"{dirpath}/{name}".lstrip("/") for name in names]
    return found


# --- the manifest ---------------------------------------------------------------------------------


def parse_manifest(raw: bytes) -> tuple[Manifest | None, list[str]]:
    """The manifest, or None and every way in which it is not one xenlive writes."""
    where = f"/{MANIFEST}"
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as e:
        return None, [f"{where}: not valid JSON ({type(e).__name__}: {e})"]
    if not isinstance(data, dict):
        return None, [f"{where}: expected a JSON object, got {_kind(data)}"]
    problems = []
    files = data.get("files")
    if not isinstance(files, dict):
        problems.append(f"{where}: files: expected an object mapping paths to sha256 digests, got {_kind(files)}")
        files = {}
    elif not files:
        problems.append(f"{where}: files: lists no files, so it vouches for nothing")
    bad_entries = []
    for path, digest in files.items():
        if not _medium_path(path):
            bad_entries.append(f"{where}: files: {path!r} is not a relative path on the medium")
        elif not (isinstance(digest, str) and DIGEST.fullmatch(digest)):
            bad_entries.append(
                f"{where}: files: {path}: expected a sha256 as 64 lowercase hex digits, got {_kind(digest)}"
            )
    problems += bad_entries[:MAX_LISTED]
    if len(bad_entries) > MAX_LISTED:
        problems.append(f"{where}: files: {len(bad_entries) - MAX_LISTED} more entries like these")
    build_id = data.get("build_id")
    if not (isinstance(build_id, str) and BUILD_ID.fullmatch(build_id)):
        problems.append(f"{where}: build_id: expected 8 to 64 lowercase hex digits, got {_kind(build_id)}")
    profile = data.get("profile")
    media = profile.get("media") if isinstance(profile, dict) else None
    if not isinstance(media, dict):
        problems.append(f"{where}: profile.media: expected an object, got {_kind(media)}")
        media = {}
    boot = media.get("boot")
    if not (isinstance(boot, list) and all(b in FIRMWARE for b in boot) and len(set(boot)) == len(boot)):
        problems.append(
            f"{where}: profile.media.boot: expected a list of distinct {', '.join(map(repr, FIRMWARE))},"
            f" got {_kind(boot)}"
        )
        boot = []
    limit = media.get("size_limit")
    if limit is not None and (type(limit) is not int or limit <= 0):
        problems.append(f"{where}: profile.media.size_limit: expected a positive number of bytes, got {_kind(limit)}")
    if problems:
        return None, problems
    return Manifest(dict(files), str(build_id), frozenset(boot), limit), []


def _medium_path(path: str) -> bool:
    parts = path.split("/")
    return all(p not in ("", ".", "..") and "\0" not in p for p in parts)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    text = json.dumps(value) if isinstance(value, str | int | float | bool) else type(value).__name__
    return text if len(text) <= 40 else text[:37] + "..."


# --- boot records, system area and what follows the volume ---------------------------------------


def _check_boot(f: BinaryIO, size: int, tree: Tree, manifest: Manifest) -> list[str]:
    bios = Firmware.BIOS in manifest.boot
    uefi = any(Firmware(b).is_uefi for b in manifest.boot)  # every UEFI loader is in the one EFI image
    problems = []
    boot_files = {}
    for wanted, path, firmware in ((bios, ISOLINUX_BIN, "BIOS"), (uefi, EFI_IMAGE, "UEFI")):
        if wanted:
            if path in tree.files:
                boot_files[path] = tree.files[path]
            else:
                problems.append(f"/{path}: missing, but the manifest says the medium boots with {firmware}")
    if problems:
        return problems
    isolinux, efi = boot_files.get(ISOLINUX_BIN), boot_files.get(EFI_IMAGE)
    efi_sectors = -(-efi.length // ISO_BLOCK) * (ISO_BLOCK // 512) if efi else 0
    catalog_path = BOOT_CATALOG if bios else "boot.cat"
    if bios or uefi:
        catalog = tree.files.get(catalog_path)
        if catalog is None:
            return [f"/{catalog_path}: missing (the El Torito boot catalogue)"]
        problems += _compare(
            _read_at(f, BOOT_RECORD_LBA * ISO_BLOCK, ISO_BLOCK), _boot_record(catalog.extent), _boot_record_regions()
        )
        if catalog.length != ISO_BLOCK:
            problems.append(f"/{catalog_path}: {catalog.length} bytes, xenlive's boot catalogue has {ISO_BLOCK}")
        entries = []
        if isolinux:
            entries.append((0, BIOS_LOAD_SECTORS, isolinux.extent))
        if efi:
            entries.append((PLATFORM_UEFI, efi_sectors, efi.extent))
        problems += _compare(
            _read_at(f, catalog.extent * ISO_BLOCK, ISO_BLOCK), _catalog(entries), _catalog_regions(entries)
        )
    elif _read_at(f, BOOT_RECORD_LBA * ISO_BLOCK, 6) == b"\0CD001":
        problems.append("El Torito boot record present, but the manifest says the medium boots with nothing")
    if isolinux:
        problems += _check_boot_info_table(isolinux)
    efi_area = (efi.extent, efi_sectors) if efi else None
    problems += _check_outside_volume(f, size, tree.volume_bytes, manifest, isolinux, efi_area)
    return problems


def _boot_record(catalog_lba: int) -> bytes:
    record = bytearray(ISO_BLOCK)
    record[0:7] = b"\0CD001\x01"
    record[7:39] = b"EL TORITO SPECIFICATION".ljust(32, b"\0")
    struct.pack_into("<I", record, 71, catalog_lba)
    return bytes(record)


def _boot_record_regions() -> list[Region]:
    return [
        Region(0, 71, "El Torito boot record"),
        Region(71, 75, "El Torito boot record's boot catalogue LBA", "<I"),
        Region(75, ISO_BLOCK, "El Torito boot record's unused area"),
    ]


def _catalog(entries: list[tuple[int, int, int]]) -> bytes:
    """The boot catalogue pycdlib writes for (platform, load size, load LBA) entries: the first is the
    initial entry, the second a section of its own."""
    catalog = bytearray(ISO_BLOCK)
    validation = bytearray(32)
    validation[0], validation[1], validation[30:32] = 1, entries[0][0], b"\x55\xaa"
    struct.pack_into("<H", validation, 28, -sum(struct.unpack("<16H", validation)) & 0xFFFF)
    catalog[0:32] = validation
    offset = 32
    for i, (platform, sectors, lba) in enumerate(entries):
        if i:
            struct.pack_into("<BBH", catalog, offset, 0x91, platform, 1)  # the final section header, 1 entry
            offset += 32
        struct.pack_into("<BBHBxHI", catalog, offset, 0x88, 0, 0, 0, sectors, lba)  # bootable, no emulation
        offset += 32
    return bytes(catalog)


def _catalog_regions(entries: list[tuple[int, int, int]]) -> list[Region]:
    regions = [Region(0, 32, "boot catalogue validation entry")]
    offset = 32
    for i in range(len(entries)):
        if i:
            regions.append(Region(offset, offset + 32, "boot catalogue section header"))
            offset += 32
        name = f"boot catalogue entry {i + 1}"
        regions += [
            Region(offset, offset + 1, f"{name} boot indicator", "<B"),
            Region(offset + 1, offset + 2, f"{name} media type", "<B"),
            Region(offset + 2, offset + 4, f"{name} load segment", "<H"),
            Region(offset + 4, offset + 5, f"{name} system type", "<B"),
            Region(offset + 5, offset + 6, f"{name} reserved byte", "<B"),
            Region(offset + 6, offset + 8, f"{name} load size (512-byte sectors)", "<H"),
            Region(offset + 8, offset + 12, f"{name} load RBA", "<I"),
            Region(offset + 12, offset + 32, f"{name} selection criteria"),
        ]
        offset += 32
    regions.append(Region(offset, ISO_BLOCK, "boot catalogue after its last entry"))
    return regions


def _check_boot_info_table(isolinux: MediumFile) -> list[str]:
    """The 56 bytes ISOLINUX reads to find the rest of itself: its own LBA, length and checksum."""
    data = isolinux.head
    if len(data) != isolinux.length or len(data) < BOOT_INFO_TABLE.stop:
        return [f"/{ISOLINUX_BIN}: {isolinux.length} bytes, not an ISOLINUX xenlive writes"]
    rest = data[BOOT_INFO_TABLE.stop :]
    rest += bytes(-len(rest) % 4)
    checksum = sum(struct.unpack(f"<{len(rest) // 4}I", rest)) & 0xFFFFFFFF
    table = struct.pack("<IIII", PVD_LBA, isolinux.extent, isolinux.length, checksum).ljust(56, b"\0")
    name = f"/{ISOLINUX_BIN} boot-info table"
    regions = [
        Region(8, 12, f"{name} primary volume descriptor LBA", "<I"),
        Region(12, 16, f"{name} file LBA", "<I"),
        Region(16, 20, f"{name} file length", "<I"),
        Region(20, 24, f"{name} checksum", "<I"),
        Region(24, 64, f"{name} reserved area"),
    ]
    return _compare(data[: BOOT_INFO_TABLE.stop], bytes(8) + table, regions)


def _check_outside_volume(
    f: BinaryIO, size: int, volume: int, manifest: Manifest, isolinux: MediumFile | None, efi: tuple[int, int] | None
) -> list[str]:
    """The system area and everything after the volume, byte for byte against what mastering writes."""
    if volume > size:
        return [f"image is {size} bytes, shorter than its ISO 9660 volume ({volume} bytes): truncated"]
    if isolinux is None:
        problems = _compare(
            _read_at(f, 0, SYSTEM_AREA),
            bytes(SYSTEM_AREA),
            [Region(0, SYSTEM_AREA, "system area (an MBR, or anything in the first 32 KiB)")],
        )
        if size > volume:
            problems.append(f"{size - volume} appended bytes after the ISO 9660 volume")
        return problems
    image = hybrid_areas(volume, isolinux.extent, efi, manifest.build_id)
    head_regions = mbr_regions()
    if efi:
        head_regions += gpt_regions("primary", 512, 1024)
    after = head_regions[-1].end
    head_regions.append(Region(after, SYSTEM_AREA, f"system area after the {'GPT' if efi else 'MBR'}"))
    problems = _compare(_read_at(f, 0, SYSTEM_AREA), bytes(image.head), head_regions)
    backup_at = image.size - BACKUP_GPT_BYTES if efi else image.size
    if efi:
        problems += _check_backup_gpt_room(f, size, volume)
    tail_regions = [Region(image.tail_start, backup_at, "padding after the ISO 9660 volume")]
    if efi:
        tail_regions += gpt_regions("backup", image.size - 512, backup_at)
    actual_tail = _read_at(f, image.tail_start, min(size, image.size) - image.tail_start)
    problems += _compare(actual_tail, bytes(image.tail), tail_regions, base=image.tail_start)
    if size < image.size:
        problems.append(
            f"image is {size} bytes, {image.size - size} short of the {image.size} xenlive writes: truncated"
        )
    elif size > image.size:
        after_what = "backup GPT" if efi else "padding after the ISO 9660 volume"
        problems.append(f"{size - image.size} appended bytes after the {after_what}")
    return problems


def _check_backup_gpt_room(f: BinaryIO, size: int, volume: int) -> list[str]:
    """A GPT header in the image's last sector whose 33 sectors reach back into the volume.

    xenlive always leaves room for the backup GPT after the volume; an image whose GPT overwrote the
    volume's last bytes (as pycdlib's own padding did when the volume ended within 16,896 bytes of
    a 1 MiB boundary) fails that last file's checksum too, and this says why.
    """
    start = size - BACKUP_GPT_BYTES
    if start >= volume or _read_at(f, size - SECTOR, len(GPT_SIGNATURE)) != GPT_SIGNATURE:
        return []
    return [
        f"the backup GPT at the image's end overlaps the last {volume - max(start, 0)} bytes of the ISO 9660 "
        f"volume (only {size - volume} bytes follow the volume, the GPT takes {BACKUP_GPT_BYTES})"
    ]


def _read_at(f: BinaryIO, offset: int, size: int) -> bytes:
    f.seek(offset)
    return f.read(size)


def _compare(actual: bytes, expected: bytes, regions: list[Region], *, base: int = 0) -> list[str]:
    """Name each region in which `actual` differs from `expected` (both start at offset `base`); a
    short `actual` (a truncated image) is compared as far as it goes."""
    problems = []
    for region in regions:
        a, b = region.start - base, region.end - base
        got = actual[a:b]
        want = expected[a:b][: len(got)]
        if got == want:
            continue
        if region.fmt is not None and len(got) == len(want) == struct.calcsize(region.fmt):
            problems.append(
                f"{region.name} is {struct.unpack(region.fmt, got)[0]}, expected {struct.unpack(region.fmt, want)[0]}"
            )
        else:
            problems.append(f"{region.name} differs from what xenlive writes")
    return problems


# --- files ----------------------------------------------------------------------------------------


def _check_files(tree: Tree, manifest: Manifest) -> list[str]:
    problems = []
    catalog = BOOT_CATALOG if "bios" in manifest.boot else "boot.cat"
    not_listed = {MANIFEST, catalog} if manifest.boot else {MANIFEST}
    for rel, medium in sorted(tree.files.items()):
        problems += _check_extent(f"/{rel}", medium.extent, medium.length, tree.volume_bytes)
        if rel in not_listed:
            continue
        expected = manifest.files.get(rel)
        if medium.error is not None:
            problems.append(f"/{rel}: cannot be read ({medium.error})")
        elif expected is None:
            problems.append(f"/{rel}: on the medium but not in the manifest")
        elif rel == ISOLINUX_BIN and "bios" in manifest.boot:
            masked = bytearray(medium.head)
            masked[BOOT_INFO_TABLE] = bytes(BOOT_INFO_TABLE.stop - BOOT_INFO_TABLE.start)
            if hashlib.sha256(masked).hexdigest() != expected:
                problems.append(f"/{rel}: sha256 (boot-info table masked) differs from the manifest")
        elif medium.sha256 != expected:
            problems.append(f"/{rel}: sha256 differs from the manifest")
        elif rel.endswith(".squashfs"):
            problems += _check_squashfs(rel, medium)
    problems += [
        f"/{rel}: in the manifest but missing from the medium" for rel in sorted(set(manifest.files) - set(tree.files))
    ]
    checked = {(m.extent, m.length) for rel, m in tree.files.items()}
    for name_tree, rel, extent, length in tree.other_names:
        if (extent, length) not in checked:
            problems.append(f"{name_tree} name /{rel}: points at data no checked file has")
    return problems


def _check_extent(name: str, extent: int, length: int, volume_bytes: int) -> list[str]:
    """A file's data lies inside the volume, after the system area and the volume descriptors."""
    start = extent * ISO_BLOCK
    if length and start < SYSTEM_AREA:
        return [f"{name}: its data starts at byte {start}, inside the system area"]
    if start + length > volume_bytes:
        return [f"{name}: its data ends at byte {start + length}, past the ISO 9660 volume ({volume_bytes} bytes)"]
    return []


def _check_squashfs(rel: str, medium: MediumFile) -> list[str]:
    if medium.head[:4] != SQUASHFS_MAGIC or len(medium.head) < 48:
        return [f"/{rel}: not a squashfs image"]
    (bytes_used,) = struct.unpack_from("<Q", medium.head, 40)
    if bytes_used > medium.length:
        return [f"/{rel}: squashfs claims {bytes_used} bytes but the file has {medium.length}"]
    return []
