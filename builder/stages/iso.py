"""Mastering: the medium's file tree into a hybrid ISO with pycdlib.

Rock Ridge (for Linux and GRUB) and Joliet names, El Torito entries for BIOS (ISOLINUX,
no emulation) and UEFI (the FAT image), and an isohybrid MBR/GPT so the same file boots from a
CD and from a USB stick written with dd. The ISO is written to a temporary file beside the
output and renamed at the end, so a failed build never leaves half an ISO at the output path.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import random
import re
import time
import types
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pycdlib
import pycdlib.dates
import pycdlib.headervd
import pycdlib.isohybrid
import pycdlib.pycdlib
from pycdlib.pycdlibexception import PyCdlibException

from builder.context import BuildContext
from builder.errors import IsoError
from builder.fsutil import sha256_file
from builder.hybrid import SECTOR, SYSTEM_AREA, SparseImage, finish_hybrid, padding_after_volume
from builder.log import Meter
from builder.medium import BOOT_CATALOG, EFI_IMAGE, ISOLINUX_BIN
from builder.profile.model import Firmware

log = logging.getLogger(__name__)

PLATFORM_UEFI = 0xEF  # El Torito platform id of an EFI boot image
BOOT_IMAGES = (ISOLINUX_BIN, EFI_IMAGE)  # El Torito's own: never shared with another name


class _IsoNames:
    """ISO 9660 level 3 names (d-characters, 30 characters) unique within each directory."""

    def __init__(self) -> None:
        self.used: dict[str, set[str]] = {}
        self.paths: dict[str, str] = {"": ""}

    def add(self, rel: str, is_dir: bool) -> str:
        parent, _, name = rel.rpartition("/")
        parent_iso = self.paths[parent]
        used = self.used.setdefault(parent_iso, set())
        stem, dot, ext = name.rpartition(".") if not is_dir and "." in name.lstrip(".") else (name, "", "")
        ext = re.sub(r"[^A-Z0-9_]", "_", ext.upper())[:8]
        limit = 30 - len(ext) - 1 if ext else 31
        stem = re.sub(r"[^A-Z0-9_]", "_", stem.upper())[:limit] or "_"
        candidate = f"{stem}.{ext}" if ext else stem
        n = 1
        while candidate in used:
            suffix = f"_{n}"
            base = stem[: limit - len(suffix)] + suffix
            candidate = f"{base}.{ext}" if ext else base
            n += 1
        used.add(candidate)
        iso = f"{parent_iso}/{candidate}"
        self.paths[rel] = iso
        return iso if is_dir else f"{iso};1" if ext else f"{iso}.;1"


@contextlib.contextmanager
def pinned_pycdlib(epoch: int, seed: str) -> Iterator[random.Random]:
    """Make pycdlib deterministic while mastering: every date is `epoch` (in UTC) and the MBR id
    and GPT GUIDs come from a generator seeded with `seed`.

    pycdlib reads time.time(), time.localtime(), uuid.uuid4() and the random module directly; only
    its own module references are swapped, and only inside this block, so nothing else in the
    process sees a fake clock.
    """
    rng = random.Random(seed)
    fake_time = types.SimpleNamespace(**{n: getattr(time, n) for n in dir(time) if not n.startswith("__")})
    fake_time.time = lambda: float(epoch)
    fake_time.localtime = lambda secs=None: time.gmtime(epoch if secs is None else secs)
    fake_uuid = types.SimpleNamespace(UUID=uuid.UUID, uuid4=lambda: uuid.UUID(int=rng.getrandbits(128), version=4))
    patches = [
        (pycdlib.pycdlib, "time", fake_time),
        (pycdlib.headervd, "time", fake_time),
        (pycdlib.dates, "time", fake_time),
        (pycdlib.isohybrid, "uuid", fake_uuid),
        (pycdlib.isohybrid, "random", rng),
    ]
    saved = [(module, name, getattr(module, name)) for module, name, _ in patches]
    try:
        for module, name, value in patches:
            setattr(module, name, value)
        yield rng
    finally:
        for module, name, value in saved:
            setattr(module, name, value)


class RoomyHybrid(pycdlib.isohybrid.IsoHybrid):
    """pycdlib's isohybrid MBR and GPT, with padding after the volume that always holds the backup GPT.

    pycdlib pads to a whole cylinder (1 MiB) and writes the 33-sector backup GPT at the very end,
    however short the padding: on a volume ending less than 16,896 bytes before a cylinder boundary
    (about one build in sixty) the GPT overwrote the end of the volume's last file, and UEFI boot
    with it. _calc_cc() is where pycdlib derives the padding and everything that depends on it (the
    MBR partition's size and end CHS, the GPT's backup LBA and last usable LBA), so they all follow
    padding_after_volume(). Without a GPT (BIOS only) the padding stays pycdlib's.
    """

    __slots__ = ()

    def _calc_cc(self, iso_size: int) -> tuple[int, int]:
        cylinder = self.geometry_heads * self.geometry_sectors * SECTOR
        padding = padding_after_volume(iso_size, cylinder, self.efi)
        return min((iso_size + padding) // cylinder, 1024), padding  # 1024: the most an MBR's CHS can say


def master_iso(ctx: BuildContext, accept: Callable[[Path], None] | None = None) -> None:
    """Master the staged medium into ctx.output; `accept(tmp_iso)` may refuse it (raise) before the rename."""
    tmp = ctx.output.with_name(f".{ctx.output.name}.tmp-{os.getpid()}")
    try:
        with pinned_pycdlib(ctx.epoch, ctx.build_id) as rng:
            _master(ctx, tmp, rng)
        if Firmware.BIOS in ctx.profile.media.boot:
            with tmp.open("r+b") as f:
                finish_hybrid(f, disk_guid(ctx.build_id))
        if accept is not None:
            accept(tmp)
        os.replace(tmp, ctx.output)
    except PyCdlibException as e:
        raise IsoError(f"mastering {ctx.output} failed: {e}") from e
    finally:
        tmp.unlink(missing_ok=True)


def _master(ctx: BuildContext, tmp: Path, rng: random.Random) -> None:
    profile = ctx.profile
    iso = pycdlib.PyCdlib()
    iso.new(
        interchange_level=3,
        vol_ident=profile.media.label,
        pub_ident_str=profile.media.publisher,
        app_ident_str="xenlive",
        joliet=3,
        rock_ridge="1.09",
    )
    iso_paths = add_tree(iso, ctx.staging)
    if Firmware.BIOS in profile.media.boot:
        iso.add_eltorito(
            iso_paths[ISOLINUX_BIN],
            bootcatfile=_boot_catalog_path(iso_paths),
            rr_bootcatname="boot.cat",
            joliet_bootcatfile=f"/{BOOT_CATALOG}",
            boot_load_size=4,
            boot_info_table=True,
        )
    uefi = any(f.is_uefi for f in profile.media.boot)  # one FAT image holds BOOTX64.EFI and BOOTIA32.EFI
    if uefi:
        # Added last: pycdlib sizes the hybrid ESP from the last El Torito entry.
        # platform_id only counts when this is the first entry (a UEFI-only medium): a section gets 0xEF from efi=True.
        iso.add_eltorito(iso_paths[EFI_IMAGE], efi=True, platform_id=PLATFORM_UEFI)
    if Firmware.BIOS in profile.media.boot:
        iso.add_isohybrid(mbr_id=rng.getrandbits(32), **_isohybrid_args(uefi))
        # add_isohybrid() checks the boot file and builds pycdlib's own IsoHybrid; only its padding changes.
        if iso.isohybrid_mbr is not None:
            iso.isohybrid_mbr.__class__ = RoomyHybrid
    meter = Meter("writing the ISO", unit="bytes")
    iso.write(os.fspath(tmp), progress_cb=lambda done, total, _opaque: meter(done, total))
    iso.close()


def _isohybrid_args(efi: bool) -> dict[str, Any]:
    """pycdlib's add_isohybrid defaults, spelled out so that hybrid_areas() repeats them exactly."""
    return {"efi": efi, "mac": False, "part_entry": 1, "part_offset": 0, "geometry_sectors": 32,
            "geometry_heads": 64, "part_type": 0 if efi else 0x17}  # fmt: skip


def disk_guid(build_id: str) -> bytes:
    """The GPT disk GUID: derived from the build, so that a rebuild is byte-identical."""
    return hashlib.sha256(f"disk:{build_id}".encode()).digest()[:16]


def hybrid_areas(volume_bytes: int, isolinux_lba: int, efi: tuple[int, int] | None, build_id: str) -> SparseImage:
    """What master_iso writes outside the ISO 9660 volume of a BIOS-bootable medium.

    Derived from the volume's own structure: its size in bytes, the 2048-byte LBA of isolinux.bin
    and, with UEFI, the LBA and El Torito sector count of the EFI image. The result's `head` is
    the system area (MBR and primary GPT), its `tail` the padding (padding_after_volume()) and the
    backup GPT. It runs the same pycdlib calls with the same seed, the same RoomyHybrid and the
    same finish_hybrid() as mastering, so verify can compare the medium with it byte for byte.
    """
    with pinned_pycdlib(0, build_id) as rng:  # the same seed gives the same MBR id and GUIDs
        hybrid = RoomyHybrid()
        hybrid.new(mbr_id=rng.getrandbits(32), **_isohybrid_args(efi is not None))
    hybrid.update_rba(isolinux_lba)
    if efi is not None:
        hybrid.update_efi(efi[0], efi[1], volume_bytes)
    size = volume_bytes + len(hybrid.record_padding(volume_bytes))
    backup = hybrid.secondary_gpt.record() if efi is not None else b""
    image = SparseImage(size, SYSTEM_AREA, volume_bytes)  # raises if the backup GPT reached into the volume
    image.write(hybrid.record(volume_bytes))
    image.seek(size - len(backup))
    image.write(backup)
    finish_hybrid(image, disk_guid(build_id))
    return image


def _boot_catalog_path(iso_paths: dict[str, str]) -> str:
    return iso_paths["isolinux"] + "/BOOT.CAT;1"


def add_tree(iso: pycdlib.PyCdlib, root: Path) -> dict[str, str]:
    """Add every directory and file under `root`; return relative path -> ISO 9660 path.

    Files with the same bytes and mode are written once: the later names are hard links to the
    first one's data (one extent, several directory records), as the guests' kernels are when they
    come from the same package. Only files whose size another file shares are hashed.
    """
    names = _IsoNames()
    iso_paths: dict[str, str] = {}
    same_size = _sizes_shared(root)
    written: dict[tuple[int, int, str], str] = {}  # (size, mode, sha256) -> the ISO 9660 path with the data
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        here = Path(dirpath)
        for name in dirnames:
            rel = (here / name).relative_to(root).as_posix()
            iso_path = names.add(rel, is_dir=True)
            iso_paths[rel] = iso_path
            mode = (here / name).stat().st_mode
            iso.add_directory(iso_path, rr_name=name, joliet_path=f"/{rel}", file_mode=mode)
        for name in sorted(filenames):
            path = here / name
            rel = path.relative_to(root).as_posix()
            iso_path = names.add(rel, is_dir=False)
            iso_paths[rel] = iso_path
            info = path.stat()
            shareable = info.st_size in same_size and rel not in BOOT_IMAGES  # El Torito patches isolinux.bin
            content = (info.st_size, info.st_mode, sha256_file(path)) if shareable else None
            first = written.get(content) if content else None
            if first is not None:
                iso.add_hard_link(iso_old_path=first, iso_new_path=iso_path, rr_name=name)
                iso.add_hard_link(iso_old_path=first, joliet_new_path=f"/{rel}")
                continue
            iso.add_file(os.fspath(path), iso_path, rr_name=name, joliet_path=f"/{rel}", file_mode=info.st_mode)
            if content:
                written[content] = iso_path
    return iso_paths


def _sizes_shared(root: Path) -> set[int]:
    """The sizes (above zero) that more than one file under `root` has."""
    seen: set[int] = set()
    shared: set[int] = set()
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            size = (Path(dirpath) / name).stat().st_size
            if size:
                (shared if size in seen else seen).add(size)
    return shared
