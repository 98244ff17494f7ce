"""Shared pieces of the burn tests (no tests here): a fake sysfs tree, a tiny ISO, loop devices.

The fake tree mimics the three places builder.devices reads (/sys/block/NAME, /sys/dev/block/M:m
and the device directory they both point at), so removable and non-removable, mounted and not,
system disk and not can all be written down as data and checked without real hardware.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from builder.devices import Host

USB_PATH = "devices/pci0000:00/0000:00:14.0/usb1/1-1/1-1:1.0/host6/target6:0:0/6:0:0:0/block"
SATA_PATH = "devices/pci0000:00/0000:00:17.0/ata1/host0/target0:0:0/0:0:0:0/block"
MMC_PATH = "devices/pci0000:00/0000:00:1e.6/mmc_host/mmc0/mmc0:0001/block"
SR_PATH = "devices/pci0000:00/0000:00:17.0/ata2/host1/target1:0:0/1:0:0:0/block"
VIRTUAL_PATH = "devices/virtual/block"


@dataclass
class FakePartition:
    name: str
    devnum: tuple[int, int]
    size: int  # bytes
    holders: tuple[str, ...] = ()


@dataclass
class FakeDisk:
    name: str
    devnum: tuple[int, int]
    size: int  # bytes
    where: str = USB_PATH
    removable: bool = False
    model: str = ""
    vendor: str = ""
    readonly: bool = False
    scsi_type: str = "0"
    partitions: list[FakePartition] = field(default_factory=list)
    holders: tuple[str, ...] = ()
    slaves: tuple[str, ...] = ()  # names of other fake devices (disks or partitions) under this one
    diskseq: int | None = None
    backing_file: str = ""  # a loop device's loop/backing_file


def fake_host(root: Path, disks: list[FakeDisk], mounts: Sequence[tuple[tuple[int, int], str, str]] = (),
              swaps: Sequence[str] = ()) -> Host:  # fmt: skip
    """Write a sysfs tree, a mountinfo (devnum, mountpoint, source) and /proc/swaps under root."""
    sysfs = root / "sys"
    (sysfs / "block").mkdir(parents=True, exist_ok=True)
    (sysfs / "dev" / "block").mkdir(parents=True, exist_ok=True)
    dirs: dict[str, Path] = {}
    for disk in disks:
        ddir = sysfs / disk.where / disk.name
        ddir.mkdir(parents=True)
        dirs[disk.name] = ddir
        _write(ddir, dev=f"{disk.devnum[0]}:{disk.devnum[1]}", size=str(disk.size // 512),
               removable="1" if disk.removable else "0", ro="1" if disk.readonly else "0")  # fmt: skip
        if disk.diskseq is not None:
            _write(ddir, diskseq=str(disk.diskseq))
        if disk.backing_file:
            (ddir / "loop").mkdir()
            (ddir / "loop" / "backing_file").write_bytes(os.fsencode(disk.backing_file) + b"\n")
        (ddir / "device").mkdir()
        _write(ddir / "device", model=disk.model, vendor=disk.vendor, type=disk.scsi_type)
        _holders(ddir, disk.holders)
        (sysfs / "block" / disk.name).symlink_to(os.path.relpath(ddir, sysfs / "block"))
        _devlink(sysfs, disk.devnum, ddir)
        for part in disk.partitions:
            pdir = ddir / part.name
            pdir.mkdir()
            dirs[part.name] = pdir
            _write(pdir, dev=f"{part.devnum[0]}:{part.devnum[1]}", size=str(part.size // 512), partition="1", ro="0")
            _holders(pdir, part.holders)
            _devlink(sysfs, part.devnum, pdir)
    for disk in disks:
        (dirs[disk.name] / "slaves").mkdir()
        for slave in disk.slaves:
            (dirs[disk.name] / "slaves" / slave).symlink_to(dirs[slave])
    lines = [
        f"{20 + i} 1 {dev[0]}:{dev[1]} / {mountpoint.replace(' ', chr(92) + '040')} rw - ext4 {source} rw"
        for i, (dev, mountpoint, source) in enumerate(mounts)
    ]
    (root / "mountinfo").write_text("".join(f"{line}\n" for line in lines))
    swap_lines = ["Filename\tType\tSize\tUsed\tPriority", *(f"{s}\tpartition\t1024\t0\t-2" for s in swaps)]
    (root / "swaps").write_text("\n".join(swap_lines) + "\n")
    return Host(sysfs=sysfs, mountinfo=root / "mountinfo", swaps=root / "swaps", udev=root / "udev")


def _write(directory: Path, **files: str) -> None:
    for name, text in files.items():
        (directory / name).write_text(f"{text}\n")


def _holders(directory: Path, holders: tuple[str, ...]) -> None:
    (directory / "holders").mkdir()
    for holder in holders:
        (directory / "holders" / holder).write_text("")


def _devlink(sysfs: Path, devnum: tuple[int, int], target: Path) -> None:
    link = sysfs / "dev" / "block" / f"{devnum[0]}:{devnum[1]}"
    link.symlink_to(os.path.relpath(target, link.parent))


def make_iso(directory: Path, *, payload: bytes, corrupt_manifest: bool = False) -> Path:
    """A small ISO in xenlive's shape (Rock Ridge, /xenlive/manifest.json) that verify_iso accepts.

    The manifest asks for no boot records, so it stays a few MiB and builds in a blink; its
    payload is large enough that writing it takes several chunks, so faults can strike mid-write.
    """
    tree = directory / "tree"
    (tree / "xenlive").mkdir(parents=True)
    (tree / "payload.bin").write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    if corrupt_manifest:
        digest = "0" * 64
    manifest = {"profile": {"name": "tiny", "media": {"boot": []}}, "build_id": "0123abcd",
                "files": {"payload.bin": digest}}  # fmt: skip
    (tree / "xenlive" / "manifest.json").write_text(json.dumps(manifest))
    iso = directory / ("bad.iso" if corrupt_manifest else "tiny.iso")
    subprocess.run(["xorriso", "-as", "mkisofs", "-R", "-V", "TINY", "-o", str(iso), str(tree)],
                   check=True, capture_output=True)  # fmt: skip
    shutil.rmtree(tree)
    return iso


MiB = 2**20


def have_root_tools() -> str | None:
    """Why loop-device tests cannot run here, or None when they can."""
    if os.geteuid() != 0:
        return "loop devices need root"
    if shutil.which("losetup") is None:
        return "losetup (util-linux) is not installed"
    if not Path("/dev/loop-control").exists():
        return "this kernel has no loop devices"
    return None


needs_root = pytest.mark.skipif(have_root_tools() is not None, reason=str(have_root_tools()))


@contextlib.contextmanager
def loop_device(backing: Path, size: int | None = None) -> Iterator[Path]:
    """Attach a loop device over `backing` (first made a sparse file of `size` bytes, if given).

    Detached afterwards, but only while it is still over `backing`: a test that re-attaches it
    must not make the cleanup detach a device another process has taken since.
    """
    if size is not None:
        backing.write_bytes(b"")
        os.truncate(backing, size)
    proc = subprocess.run(["losetup", "-f", "--show", "--", str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        import pytest

        pytest.skip(f"cannot attach a loop device: {proc.stderr.strip()}")
    device = Path(proc.stdout.strip())
    try:
        yield device
    finally:
        if loop_backing(device) == os.path.realpath(backing):
            subprocess.run(["losetup", "-d", str(device)], capture_output=True)


def loop_backing(device: Path) -> str:
    """What the kernel says a loop device is attached to ("" when it is free)."""
    try:
        return (Path("/sys/block") / device.name / "loop" / "backing_file").read_text().rstrip("\n")
    except OSError:
        return ""


@contextlib.contextmanager
def tmpfs(mountpoint: Path, size: str, *, options: str = "") -> Iterator[Path]:
    """Mount a small tmpfs (a filesystem that fills up on cue); unmounted whatever happens."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (f",{options}" if options else "")
    cmd = ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mountpoint)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        import pytest

        pytest.skip(f"cannot mount a tmpfs: {proc.stderr.strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], capture_output=True)


def make_hybrid_iso(directory: Path, *, payload: bytes) -> Path:
    """make_iso's ISO with xenlive's isohybrid MBR and GPT around it (not bootable: the tables alone).

    pycdlib's isohybrid records, as mastering gets them, then finish_hybrid: what burn's
    --persistence adds a partition to. The ESP entry points at a made-up extent inside the volume.
    """
    import pycdlib.isohybrid

    from builder.hybrid import SECTOR, finish_hybrid

    iso = make_iso(directory, payload=payload)
    volume = iso.stat().st_size
    hybrid = pycdlib.isohybrid.IsoHybrid()
    hybrid.new(True, False, 1, 0x12345678, 0, 32, 64, 0)
    hybrid.update_rba(20)
    hybrid.update_efi(24, 64, volume)
    with iso.open("r+b") as f:
        f.seek(0, 2)
        f.write(hybrid.record_padding(volume))
        backup = hybrid.secondary_gpt.record()
        f.seek(-len(backup), 2)
        f.write(backup)
        f.seek(0)
        f.write(hybrid.record(volume))
        finish_hybrid(f, bytes(range(16)))
    assert iso.stat().st_size % SECTOR == 0
    return iso
