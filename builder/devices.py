"""What the kernel says about block devices, read from sysfs and /proc, for `burn` and `devices`.

Everything here is read through a `Host`, which names the sysfs root and the /proc files. Tests
point it at a small fake tree, so both branches of every rule (removable or not, mounted or not,
holding / or not) run against data the test wrote, while the same code reads the real machine.
The rules themselves (`refusals`) are pure functions of a `BlockDevice`, so what `burn` refuses
and what `devices` lists can never disagree.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

SECTOR = 512  # sysfs `size` is always in 512-byte units, whatever the logical block size
SCSI_CDROM_MAJOR = 11  # /dev/sr*
SCSI_TYPE_ROM = "5"  # device/type of a SCSI/ATAPI optical drive
# Buses whose disks are unplugged by hand even when they do not set the removable flag: many
# USB sticks and most USB SSDs and SD readers report removable=0.
HOTPLUG_TRANSPORTS = ("usb", "mmc")
# What a sysfs device path contains, in the order to test it, and the transport it means.
_TRANSPORT_IN_PATH = (
    ("/usb", "usb"),
    ("/mmc", "mmc"),
    ("/nvme", "nvme"),
    ("/virtio", "virtio"),
    ("/ata", "sata"),
    ("/devices/virtual/", "virtual"),
)

DevNum = tuple[int, int]


@dataclass(frozen=True)
class Host:
    """Where the kernel's view of this machine is read from; tests point these at a fake tree."""

    sysfs: Path = Path("/sys")
    mountinfo: Path = Path("/proc/self/mountinfo")
    swaps: Path = Path("/proc/swaps")
    udev: Path = Path("/run/udev/data")


@dataclass(frozen=True)
class Mount:
    """One line of /proc/self/mountinfo: what is mounted where."""

    devnum: DevNum
    source: str
    mountpoint: str
    fstype: str


@dataclass(frozen=True)
class Partition:
    name: str
    devnum: DevNum
    size: int
    mountpoints: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    swap: bool = False


@dataclass(frozen=True)
class BlockDevice:
    """A block device as sysfs describes it; `parent` is set when it is a partition."""

    name: str
    devnum: DevNum
    size: int
    removable: bool
    transport: str
    model: str
    readonly: bool
    optical: bool
    parent: str | None = None
    partitions: tuple[Partition, ...] = ()
    mountpoints: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    swap: bool = False
    system: bool = False  # holds / (directly, through a partition, or under LVM/RAID/crypt)

    @property
    def path(self) -> Path:
        return Path("/dev") / self.name

    @property
    def hotplug(self) -> bool:
        """True for disks a person plugs in: the removable flag, or a USB or SD card bus."""
        return self.removable or self.transport in HOTPLUG_TRANSPORTS

    def as_dict(self) -> dict[str, object]:
        return {
            "path": str(self.path),
            "kind": "optical" if self.optical else "disk",
            "model": self.model,
            "size": self.size,
            "transport": self.transport,
            "removable": self.removable,
            "readonly": self.readonly,
            "partitions": [
                {"path": f"/dev/{p.name}", "size": p.size, "mountpoints": list(p.mountpoints)}
                for p in self.partitions
            ],
        }

    def describe(self) -> list[str]:
        """Lines that let a person recognise the device before it is overwritten."""
        kind = "removable" if self.removable else "hot-plug" if self.hotplug else "NOT removable"
        parts = ", ".join(_describe_partition(p) for p in self.partitions) or "none"
        return [
            f"model       {self.model or '(unknown)'}",
            f"size        {human_size(self.size)} ({self.size} bytes)",
            f"transport   {self.transport or '(unknown)'}, {kind}",
            f"partitions  {parts}",
        ]


def _describe_partition(p: Partition) -> str:
    text = f"{p.name} {human_size(p.size)}"
    if p.mountpoints:
        text += f" mounted on {', '.join(p.mountpoints)}"
    return text


def human_size(size: int) -> str:
    """Binary units with one decimal, as lsblk prints them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return default


def _devnum(text: str) -> DevNum | None:
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    return (int(match[1]), int(match[2])) if match else None


def _unescape(text: str) -> str:
    """mountinfo writes space, tab, newline and backslash in paths as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), text)


def read_mounts(host: Host) -> list[Mount]:
    """Every mount of this mount namespace, in the order the kernel lists them."""
    mounts = []
    for line in _read(host.mountinfo).splitlines():
        left, sep, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        devnum = _devnum(fields[2]) if len(fields) >= 5 else None
        if not sep or devnum is None or len(tail) < 2:
            continue
        mounts.append(Mount(devnum, _unescape(tail[1]), _unescape(fields[4]), tail[0]))
    return mounts


def _mount_devnum(mount: Mount) -> DevNum:
    """The device a mount lives on; btrfs and friends show an anonymous 0:N, so ask the source."""
    if mount.devnum[0] == 0 and mount.source.startswith("/dev/"):
        try:
            rdev = os.stat(mount.source).st_rdev
        except OSError:
            return mount.devnum
        return (os.major(rdev), os.minor(rdev))
    return mount.devnum


def _swap_devnums(host: Host) -> set[DevNum]:
    """Block devices in use as swap: writing over them crashes the machine later, not now."""
    found = set()
    for line in _read(host.swaps).splitlines()[1:]:
        name = line.split()[0] if line.split() else ""
        if name.startswith("/dev/"):
            try:
                rdev = os.stat(_unescape(name)).st_rdev
            except OSError:
                continue
            found.add((os.major(rdev), os.minor(rdev)))
    return found


def _sysdir(devnum: DevNum, host: Host) -> Path | None:
    link = host.sysfs / "dev" / "block" / f"{devnum[0]}:{devnum[1]}"
    return link.resolve() if link.exists() else None


def _names(directory: Path) -> tuple[str, ...]:
    try:
        return tuple(sorted(p.name for p in directory.iterdir()))
    except OSError:
        return ()


def _transport(sysdir: Path, devnum: DevNum, host: Host) -> str:
    """udev's ID_BUS when udev has recorded it, else read from where the device sits in sysfs."""
    for line in _read(host.udev / f"b{devnum[0]}:{devnum[1]}").splitlines():
        if line.startswith("E:ID_BUS="):
            return line.split("=", 1)[1]
    where = "/" + sysdir.relative_to(host.sysfs).as_posix()
    for needle, transport in _TRANSPORT_IN_PATH:
        if needle in where:
            return transport
    return "scsi" if "/host" in where else ""


def _model(sysdir: Path) -> str:
    vendor = _read(sysdir / "device" / "vendor")
    model = _read(sysdir / "device" / "model") or _read(sysdir / "device" / "name")
    backing = _read(sysdir / "loop" / "backing_file")
    if backing:
        return f"loop device backed by {backing}"
    return " ".join(w for w in (vendor, model) if w)


def _is_optical(sysdir: Path, devnum: DevNum) -> bool:
    return devnum[0] == SCSI_CDROM_MAJOR or _read(sysdir / "device" / "type") == SCSI_TYPE_ROM


def find_block_device(devnum: DevNum, host: Host) -> BlockDevice | None:
    """The device with this major:minor, with its partitions, mounts and holders; None if absent."""
    sysdir = _sysdir(devnum, host)
    if sysdir is None:
        return None
    mounts = read_mounts(host)
    swaps = _swap_devnums(host)
    mounted: dict[DevNum, list[str]] = {}
    for m in mounts:
        mounted.setdefault(_mount_devnum(m), []).append(m.mountpoint)
    is_partition = (sysdir / "partition").exists()
    disk_dir = sysdir.parent if is_partition else sysdir
    partitions = []
    for child in sorted(disk_dir.iterdir()) if not is_partition else ():
        child_num = _devnum(_read(child / "dev")) if (child / "partition").exists() else None
        if child_num is not None:
            partitions.append(
                Partition(
                    name=child.name,
                    devnum=child_num,
                    size=int(_read(child / "size", "0") or 0) * SECTOR,
                    mountpoints=tuple(mounted.get(child_num, ())),
                    holders=_names(child / "holders"),
                    swap=child_num in swaps,
                )
            )
    return BlockDevice(
        name=sysdir.name,
        devnum=devnum,
        size=int(_read(sysdir / "size", "0") or 0) * SECTOR,
        removable=_read(disk_dir / "removable") == "1",
        transport=_transport(disk_dir, _devnum(_read(disk_dir / "dev")) or devnum, host),
        model=_model(disk_dir),
        readonly=_read(sysdir / "ro") == "1",
        optical=_is_optical(disk_dir, devnum),
        parent=disk_dir.name if is_partition else None,
        partitions=tuple(partitions),
        mountpoints=tuple(mounted.get(devnum, ())),
        holders=_names(sysdir / "holders"),
        swap=devnum in swaps,
        system=bool({sysdir.name, disk_dir.name} & system_disks(host, mounts)),
    )


def system_disks(host: Host, mounts: list[Mount] | None = None) -> set[str]:
    """Names of the devices under / : its partition, the disk, and what LVM, RAID or dm-crypt sit on.

    The last mount of "/" wins, as it does for the kernel. Walking `slaves/` finds the disks
    under a device-mapper or md device; walking up from a partition finds its disk.
    """
    mounts = read_mounts(host) if mounts is None else mounts
    roots = [m for m in mounts if m.mountpoint == "/"]
    if not roots:
        return set()
    start = _sysdir(_mount_devnum(roots[-1]), host)
    found: set[str] = set()
    todo = [start] if start is not None else []
    while todo:
        node = todo.pop()
        if node.name in found:
            continue
        found.add(node.name)
        if (node / "partition").exists():
            todo.append(node.parent)
        for slave in _names(node / "slaves"):
            todo.append((node / "slaves" / slave).resolve())
    return found


def list_block_devices(host: Host) -> list[BlockDevice]:
    """Every whole disk and optical drive in /sys/block, in name order."""
    devices = []
    for entry in sorted((host.sysfs / "block").iterdir()) if (host.sysfs / "block").is_dir() else ():
        devnum = _devnum(_read(entry / "dev"))
        device = find_block_device(devnum, host) if devnum else None
        if device is not None:
            devices.append(device)
    return devices


@dataclass(frozen=True)
class Refusals:
    """Why a device must not be written: `absolute` ones no flag lifts; `unless_forced` --force does."""

    absolute: list[str] = field(default_factory=list)
    unless_forced: list[str] = field(default_factory=list)

    def blocking(self, *, force: bool) -> list[str]:
        return self.absolute + ([] if force else self.unless_forced)


def refusals(device: BlockDevice, image_size: int) -> Refusals:
    """Every reason not to overwrite `device` with an image of `image_size` bytes.

    Why each rule: the disk under / is the running system; a mounted or held partition is in use
    and writing under a mounted filesystem corrupts both; a partition would get a disk image
    that no firmware boots from; a disk smaller than the image would get a truncated system; a
    read-only device would fail halfway. Fixed disks are where people's data lives, so they
    need --force.
    """
    dev = device.path
    absolute: list[str] = []
    if device.system:
        absolute.append(f"{dev} holds the running system (/); xenlive never writes to it")
    if device.parent is not None:
        absolute.append(f"{dev} is a partition of /dev/{device.parent}; write the image to the whole disk")
    for where, mountpoints in [(dev, device.mountpoints)] + [
        (Path("/dev") / p.name, p.mountpoints) for p in device.partitions
    ]:
        if mountpoints:
            absolute.append(f"{where} is mounted on {', '.join(mountpoints)}; unmount it first")
    for where, holders in [(dev, device.holders)] + [(Path("/dev") / p.name, p.holders) for p in device.partitions]:
        if holders:
            absolute.append(f"{where} is in use by {', '.join(holders)} (LVM, RAID or dm-crypt); stop that first")
    for where, swap in [(dev, device.swap)] + [(Path("/dev") / p.name, p.swap) for p in device.partitions]:
        if swap:
            absolute.append(f"{where} is in use as swap; swapoff it first")
    if device.readonly:
        absolute.append(f"{dev} is read-only (write-protect switch, or set read-only by the kernel)")
    if device.size == 0 and not device.optical:
        absolute.append(f"{dev} has no medium (size 0); insert the card or stick")
    elif image_size > device.size and not device.optical:
        absolute.append(
            f"{dev} is too small: {human_size(device.size)} ({device.size} bytes) for an image of "
            f"{human_size(image_size)} ({image_size} bytes)"
        )
    forced: list[str] = []
    if not device.hotplug and not device.optical:
        forced.append(
            f"{dev} is not a removable disk (transport {device.transport or 'unknown'}, removable flag 0); "
            "pass --force if you really mean to overwrite it"
        )
    return Refusals(absolute, forced)


def acceptable_devices(host: Host) -> list[tuple[BlockDevice, list[str]]]:
    """Every removable disk and optical drive, with what would stop `burn` from using it now."""
    found = []
    for device in list_block_devices(host):
        if not (device.hotplug or device.optical):
            continue
        found.append((device, refusals(device, 0).blocking(force=False)))
    return found
