"""`xenlive burn --persistence`: the partition after the image, its tables and its file system.

The layout is checked on xenlive's own isohybrid tables (pycdlib's records after finish_hybrid,
around a tiny ISO), and the writes for real: an image file, and a loop device as a stick.
verify_image is replaced here because the tiny ISO's manifest asks for no boot records, so verify
(rightly) refuses tables it did not write; tests/integration/test_persistence.py burns and boots
the real default image.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest

from builder import media, persistence
from builder.errors import UsageError
from builder.hybrid import (
    ALIGN,
    BACKUP_GPT_BYTES,
    ESP_TYPE,
    LINUX_FS_TYPE,
    SECTOR,
    SYSTEM_AREA,
    persistence_layout,
    read_gpt,
)
from tests.test_media_support import MiB, loop_device, make_hybrid_iso, needs_root

needs_e2fs = pytest.mark.skipif(shutil.which("mkfs.ext4") is None, reason="e2fsprogs is not installed")


@pytest.fixture(scope="module")
def iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is needed to make the test ISO")
    return make_hybrid_iso(tmp_path_factory.mktemp("iso"), payload=os.urandom(5 * MiB))


@pytest.fixture
def unverified(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(media, "verify_image", lambda _iso: None)


def yes(_text: str) -> bool:
    return True


def mbr_entries(data: bytes) -> list[tuple[int, int, int, int]]:
    return [struct.unpack_from("<B3xB3xII", data, 446 + 16 * i) for i in range(4)]


def gpt_rows(path: Path, lba: int) -> list[bytes]:
    with path.open("rb") as f:
        found = read_gpt(f, lba)
    assert found is not None, f"no GPT header at LBA {lba}"
    header, entries = found
    assert zlib.crc32(entries) == header.entries_crc
    return [entries[i : i + 128] for i in range(0, len(entries), 128) if entries[i : i + 16] != bytes(16)]


def ext4_label(path: Path, offset: int) -> str:
    proc = subprocess.run(["blkid", "-p", "-O", str(offset), "-o", "value", "-s", "LABEL", str(path)],
                          capture_output=True, text=True)  # fmt: skip
    return proc.stdout.strip()


# --- the layout ------------------------------------------------------------------------------------


def test_a_sized_partition_starts_on_the_mib_after_the_image_and_the_file_just_holds_it():
    layout = persistence_layout(5 * MiB + 4096, size=64 * MiB, disk_bytes=None)
    assert (layout.start, layout.end) == (6 * MiB, 70 * MiB)
    assert layout.disk_bytes == 71 * MiB and layout.backup_gpt_at == 71 * MiB - BACKUP_GPT_BYTES


def test_rest_fills_the_disk_up_to_the_backup_gpt_on_a_mib():
    layout = persistence_layout(5 * MiB, size=None, disk_bytes=1000 * MiB + 7 * SECTOR)
    assert layout.start == 5 * MiB and layout.end == 999 * MiB
    assert layout.end % ALIGN == 0 and layout.end + BACKUP_GPT_BYTES <= layout.disk_bytes


@pytest.mark.parametrize(
    ("size", "disk", "message"),
    [
        (None, None, "give a size for an image file"),
        (64 * MiB, 40 * MiB, "no room for it"),
        (None, 5 * MiB + 100, "no room for it"),
        (64 * MiB, 3 << 40, "larger than the MBR can describe"),
    ],
)
def test_a_layout_that_cannot_be_is_refused_with_the_sizes(size, disk, message):
    with pytest.raises(ValueError, match=message):
        persistence_layout(5 * MiB, size=size, disk_bytes=disk)


@pytest.mark.parametrize(
    ("given", "expected"), [("64M", 64 * MiB), ("1G", 1024 * MiB), ("rest", None), ("128", 128 * MiB)]
)
def test_the_request_is_a_size_or_rest(given, expected):
    assert persistence.parse_request(given) == expected


@pytest.mark.parametrize("given", ["", "lots", "-1G", "1G; rm -rf /", "--help", "16M", "1.5G"])
def test_a_bad_request_is_a_usage_error(given):
    with pytest.raises(UsageError, match="--persistence"):
        persistence.parse_request(given)


# --- the tables --------------------------------------------------------------------------------------


def test_the_plan_adds_a_third_partition_to_both_tables_and_keeps_the_others(iso):
    image = iso.read_bytes()
    plan = persistence.plan(iso, len(image), 64 * MiB, None, "stick.img")
    before, after = mbr_entries(image[:SECTOR]), mbr_entries(plan.head[:SECTOR])
    assert after[:2] == before[:2] and before[2] == (0, 0, 0, 0)
    assert after[2] == (0, 0x83, plan.layout.start // SECTOR, 64 * MiB // SECTOR)
    assert plan.head[SECTOR:] != image[SECTOR:SYSTEM_AREA]  # the GPT changed; the boot code did not
    assert plan.head[:440] == image[:440]


@needs_e2fs
def test_burn_to_a_file_writes_the_image_the_tables_and_an_ext4_partition(iso, tmp_path, unverified):
    target = tmp_path / "stick.img"
    result = media.burn(iso, str(target), confirm=yes, persist="64M")
    size = iso.stat().st_size
    plan = persistence.plan(iso, size, 64 * MiB, None, str(target))
    assert result.verified and result.size == size
    assert target.stat().st_size == plan.layout.disk_bytes
    data, original = target.read_bytes(), iso.read_bytes()
    assert result.sha256 == hashlib.sha256(data[:size]).hexdigest() != hashlib.sha256(original).hexdigest()
    assert data[SYSTEM_AREA : size - BACKUP_GPT_BYTES] == original[SYSTEM_AREA : size - BACKUP_GPT_BYTES]
    assert data[size - BACKUP_GPT_BYTES : size] == bytes(BACKUP_GPT_BYTES)  # the image's old backup GPT is gone
    primary = gpt_rows(target, 1)
    backup = gpt_rows(target, plan.layout.disk_bytes // SECTOR - 1)
    assert primary == backup and len(primary) == 3
    assert primary[0][:16] == ESP_TYPE and primary[2][:16] == LINUX_FS_TYPE
    first, last = struct.unpack_from("<QQ", primary[2], 32)
    assert (first * SECTOR, (last + 1) * SECTOR) == (plan.layout.start, plan.layout.end)
    assert primary[2][56:].decode("utf-16-le").rstrip("\0") == "persistence"
    assert ext4_label(target, plan.layout.start) == "persistence"
    sgdisk = shutil.which("sgdisk")
    if sgdisk:
        assert "No problems found" in subprocess.run([sgdisk, "-v", str(target)], capture_output=True, text=True).stdout


@needs_e2fs
def test_the_new_file_system_is_clean(iso, tmp_path, unverified):
    target = tmp_path / "stick.img"
    media.burn(iso, str(target), confirm=yes, persist="64M")
    start = persistence.plan(iso, iso.stat().st_size, 64 * MiB, None, str(target)).layout.start
    part = tmp_path / "part.img"
    with target.open("rb") as src, part.open("wb") as dst:
        src.seek(start)
        dst.write(src.read(64 * MiB))
    fsck = subprocess.run(["e2fsck", "-fn", str(part)], capture_output=True, text=True)
    assert fsck.returncode == 0, fsck.stdout + fsck.stderr


def test_rest_on_an_image_file_is_refused_before_anything_is_written(iso, tmp_path, unverified):
    target = tmp_path / "stick.img"
    with pytest.raises(UsageError, match="give a size for an image file"):
        media.burn(iso, str(target), confirm=yes, persist="rest")
    assert not target.exists()


def test_a_cd_target_cannot_have_persistence(iso, tmp_path, unverified):
    with pytest.raises(UsageError, match="persistence needs a stick or an image file"):
        media.burn(iso, f"stdio:{tmp_path / 'cd.iso'}", confirm=yes, persist="64M")
    assert not (tmp_path / "cd.iso").exists()


def test_the_cli_names_a_bad_size_and_exits_2(iso, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "builder", "burn", str(iso), str(tmp_path / "s.img"), "--yes",
                           "--persistence", "plenty"], capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 2 and "--persistence 'plenty'" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "s.img").exists()


@needs_root
@needs_e2fs
def test_rest_fills_a_loop_device_as_a_stick(iso, tmp_path, unverified):
    with loop_device(tmp_path / "stick.img", 200 * MiB) as dev:
        result = media.burn(iso, str(dev), confirm=yes, force=True, persist="rest")
        assert result.verified
        rows = gpt_rows(dev, 200 * MiB // SECTOR - 1)
        first, last = struct.unpack_from("<QQ", rows[2], 32)
        assert (last + 1) * SECTOR == 199 * MiB
        assert ext4_label(dev, first * SECTOR) == "persistence"


@needs_root
def test_a_loop_device_too_small_for_the_partition_is_refused_before_writing(iso, tmp_path, unverified):
    with loop_device(tmp_path / "stick.img", 40 * MiB) as dev:
        with pytest.raises(UsageError, match="at least 64.0 MiB needed|no room"):
            media.burn(iso, str(dev), confirm=yes, force=True, persist="rest")
        with dev.open("rb") as f:
            assert b"CD001" not in f.read(64 * 1024)
