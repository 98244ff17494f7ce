"""`xenlive verify`: read an ISO back and check it against what xenlive promised to write.

Checks: the El Torito catalog (BIOS no-emulation and UEFI entries), the MBR and GPT of the
hybrid layout, every file against /xenlive/manifest.json (sha256 and set of files), the squashfs
images' headers, and the size against the medium named in the manifest.
"""

from __future__ import annotations

import hashlib
import io
import json
import struct
from pathlib import Path
from typing import Any

import pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from builder.hybrid import gpt_problems, mbr_partitions

MANIFEST = "/xenlive/manifest.json"
ISO_BLOCK = 2048
# ISOLINUX's boot-info table is patched into isolinux.bin while mastering, so its bytes on the
# medium differ from the file that was hashed; the catalog is made by the mastering step itself.
NOT_IN_MANIFEST = {"isolinux/isolinux.bin", "isolinux/boot.cat", "xenlive/manifest.json"}
PLATFORM_BIOS = 0x00
PLATFORM_UEFI = 0xEF
SQUASHFS_MAGIC = b"hsqs"


class _Sha256Sink:
    """A write-only file object that hashes what pycdlib streams into it."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return len(data)


def eltorito_entries(iso: Path) -> list[tuple[int, int]]:
    """(platform id, media type) of each bootable El Torito entry; [] when there is no catalog."""
    with iso.open("rb") as f:
        f.seek(17 * ISO_BLOCK)
        record = f.read(ISO_BLOCK)
        if record[1:6] != b"CD001" or not record[7:30].startswith(b"EL TORITO SPECIFICATION"):
            return []
        (catalog_lba,) = struct.unpack_from("<I", record, 0x47)
        f.seek(catalog_lba * ISO_BLOCK)
        catalog = f.read(ISO_BLOCK)
    if catalog[0] != 1 or catalog[30:32] != b"\x55\xaa":
        return []
    entries = []
    platform = catalog[1]
    if catalog[32] == 0x88:
        entries.append((platform, catalog[33]))
    offset = 64
    while offset + 32 <= len(catalog) and catalog[offset] in (0x90, 0x91):
        header, platform = catalog[offset], catalog[offset + 1]
        (count,) = struct.unpack_from("<H", catalog, offset + 2)
        offset += 32
        for _ in range(count):
            if catalog[offset] == 0x88:
                entries.append((platform, catalog[offset + 1]))
            offset += 32
        if header == 0x91:
            break
    return entries


def verify_iso(iso: Path) -> list[str]:
    """Every problem found, as messages naming what is wrong; [] when the ISO is sound."""
    if not iso.is_file():
        return [f"{iso}: no such file"]
    iso_fs = pycdlib.PyCdlib()
    try:
        iso_fs.open(str(iso))
    except PyCdlibException as e:
        return [f"{iso}: not a readable ISO 9660 image ({e})"]
    try:
        manifest = _read_manifest(iso_fs)
        if manifest is None:
            return [f"{iso}: no {MANIFEST}; not an ISO built by xenlive"]
        problems = _check_boot(iso, manifest)
        problems += _check_files(iso_fs, manifest)
    finally:
        iso_fs.close()
    limit = manifest.get("profile", {}).get("media", {}).get("size_limit")
    if isinstance(limit, int) and iso.stat().st_size > limit:
        problems.append(f"{iso}: {iso.stat().st_size} bytes, more than the medium's {limit}")
    return problems


def _read_manifest(iso_fs: pycdlib.PyCdlib) -> dict[str, Any] | None:
    try:
        record = iso_fs.get_record(rr_path=MANIFEST)
    except PyCdlibException:
        return None
    if record is None:
        return None
    buf = io.BytesIO()
    iso_fs.get_file_from_iso_fp(buf, rr_path=MANIFEST)
    try:
        data = json.loads(buf.getvalue())
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _check_boot(iso: Path, manifest: dict[str, Any]) -> list[str]:
    problems = []
    boot = manifest.get("profile", {}).get("media", {}).get("boot", [])
    entries = eltorito_entries(iso)
    if "bios" in boot and (PLATFORM_BIOS, 0) not in entries:
        problems.append("El Torito: no BIOS no-emulation boot entry")
    if "uefi" in boot and not any(p == PLATFORM_UEFI for p, _ in entries):
        problems.append("El Torito: no UEFI (platform 0xEF) boot entry")
    if "bios" in boot:
        parts = mbr_partitions(iso)
        if not parts:
            problems.append("MBR: no partition table (the image cannot boot from a USB stick)")
        elif "uefi" in boot:
            if not any(ptype == 0xEF for _, ptype, _, _ in parts):
                problems.append("MBR: no EFI system partition (type 0xEF)")
            problems += [f"GPT: {p}" for p in gpt_problems(iso)]
    return problems


def _check_files(iso_fs: pycdlib.PyCdlib, manifest: dict[str, Any]) -> list[str]:
    problems = []
    expected: dict[str, str] = manifest.get("files", {})
    found: set[str] = set()
    for dirpath, _dirs, files in iso_fs.walk(rr_path="/"):
        for name in files:
            rel = f"{dirpath}/{name}".lstrip("/")
            found.add(rel)
            if rel in NOT_IN_MANIFEST:
                continue
            if rel not in expected:
                problems.append(f"/{rel}: on the medium but not in the manifest")
                continue
            sink = _Sha256Sink()
            iso_fs.get_file_from_iso_fp(sink, rr_path=f"/{rel}")  # type: ignore[arg-type]  # only .write() is used
            if sink.digest.hexdigest() != expected[rel]:
                problems.append(f"/{rel}: sha256 differs from the manifest")
            elif rel.endswith(".squashfs"):
                problems += _check_squashfs(iso_fs, rel, sink.size)
    problems += [f"/{rel}: in the manifest but missing from the medium" for rel in sorted(set(expected) - found)]
    return problems


def _check_squashfs(iso_fs: pycdlib.PyCdlib, rel: str, size: int) -> list[str]:
    with iso_fs.open_file_from_iso(rr_path=f"/{rel}") as f:
        header = f.read(96)
    if header[:4] != SQUASHFS_MAGIC:
        return [f"/{rel}: not a squashfs image"]
    (bytes_used,) = struct.unpack_from("<Q", header, 40)
    if bytes_used > size:
        return [f"/{rel}: squashfs claims {bytes_used} bytes but the file has {size}"]
    return []
