"""What the kernel says about block devices, read from sysfs and /proc, for `burn` and `devices`.

Everything here is read through a `Host`, which names the sysfs root and the /proc files. Tests
point it at a small fake tree, so both branches of every rule (removable or not, mounted or not,
holding / or not) run against data the test wrote, while the same code reads the real machine.
The rules themselves (`refusals`) are pure functions of a `BlockDevice`, so what `burn` refuses
and what `devices` lists can never disagree.

A device can be a window onto other storage: a device-mapper or md device writes to its
`slaves/`, and a loop device writes to its backing file or backing block device. Writing the
window writes what lies below it, so a `BlockDevice` carries what is below it (`below`,
`backing`) and every other loop device over the same storage (`loops_over`), and `refusals`
applies its rules to all of them.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from builder import mounts
from builder.mounts import Mount
from builder.terminal import human_size

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
MAX_STACK = 8  # dm on md on loop on ...: deeper than any real stack, shallow enough for a cycle
DELETED = " (deleted)"  # what the kernel appends to a loop's backing_file once the file is unlinked

DevNum = tuple[int, int]
FileId = tuple[int, int]  # (st_dev, st_ino)


@dataclass(frozen=True)
class Host:
    """Where the kernel's view of this machine is read from; tests point these at a fake tree."""

    sysfs: Path = Path("/sys")
    mountinfo: Path = mounts.MOUNTINFO
    swaps: Path = Path("/proc/swaps")
    udev: Path = Path("/run/udev/data")


@dataclass(frozen=True)
class Partition:
    name: str
    devnum: DevNum
    size: int
    mountpoints: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    swap: bool = False


@dataclass(frozen=True)
class BackingFile:
    """The regular file under a loop device: writing the device rewrites this file, nothing else."""

    path: str
    swap: bool = False  # the file is a swap file in use
    problem: str = ""  # why the file the path names cannot be trusted to be the one in use


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
    diskseq: int | None = None  # the kernel's number for this disk or medium; a new one when it changes
    backing: BackingFile | None = None  # a loop device over a regular file
    below: tuple[BlockDevice, ...] = ()  # what writes go to: dm/md slaves, a loop's backing device
    loops_over: tuple[BlockDevice, ...] = ()  # other loop devices over the same storage

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
                {"path": f"/dev/{p.name}", "size": p.size, "mountpoints": list(p.mountpoints)} for p in self.partitions
            ],
        }

    def describe(self) -> list[str]:
        """Lines that let a person recognise the device before it is overwritten."""
        kind = "removable" if self.removable else "hot-plug" if self.hotplug else "NOT removable"
        parts = ", ".join(_describe_partition(p) for p in self.partitions) or "none"
        lines = [
            f"model       {self.model or '(unknown)'}",
            f"size        {human_size(self.size)} ({self.size} bytes)",
            f"transport   {self.transport or '(unknown)'}, {kind}",
            f"partitions  {parts}",
        ]
        for lower in self.stack():
            lines.append(f"writes to   {lower.path}: {lower.model or '(unknown model)'}, {human_size(lower.size)}")
        return lines

    def stack(self) -> Iterator[BlockDevice]:
        """Every device below this one, top down: what writing it writes to."""
        for lower in self.below:
            yield lower
            yield from lower.stack()

    def backing_files(self) -> list[str]:
        """The regular files that writing this device rewrites (loop devices, at any depth)."""
        found = [self.backing.path] if self.backing else []
        return found + [lower.backing.path for lower in self.stack() if lower.backing is not None]


def _describe_partition(p: Partition) -> str:
    text = f"{p.name} {human_size(p.size)}"
    if p.mountpoints:
        text += f" mounted on {', '.join(p.mountpoints)}"
    return text


def _read(path: Path, default: str = "") -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return default


def _devnum(text: str) -> DevNum | None:
    match = re.fullmatch(r"(\d+):(\d+)", text.strip())
    return (int(match[1]), int(match[2])) if match else None


def read_mounts(host: Host) -> list[Mount]:
    """Every mount of this mount namespace, in the order the kernel lists them ([] if unreadable)."""
    try:
        return mounts.read(host.mountinfo)
    except OSError:
        return []


def _mount_devnum(mount: Mount) -> DevNum:
    """The device a mount lives on; btrfs and friends show an anonymous 0:N, so ask the source."""
    if mount.devnum[0] == 0 and mount.source.startswith("/dev/"):
        try:
            rdev = os.stat(mount.source).st_rdev
        except OSError:
            return mount.devnum
        return (os.major(rdev), os.minor(rdev))
    return mount.devnum


def _swaps(host: Host) -> tuple[set[DevNum], set[FileId]]:
    """Block devices and files in use as swap: writing over them crashes the machine later, not now."""
    devices: set[DevNum] = set()
    files: set[FileId] = set()
    try:
        lines = host.swaps.read_bytes().split(b"\n")[1:]
    except OSError:
        return devices, files
    for line in lines:
        fields = line.split()
        if not fields:
            continue
        try:
            st = os.stat(mounts.unescape(fields[0]))
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            files.add((st.st_dev, st.st_ino))
        else:  # a partition or disk; the kernel lists nothing else
            devices.add((os.major(st.st_rdev), os.minor(st.st_rdev)))
    return devices, files


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


def _backing_path(sysdir: Path) -> str:
    """A loop device's loop/backing_file, byte for byte (the kernel does not escape it); "" if none."""
    try:
        raw = (sysdir / "loop" / "backing_file").read_bytes()
    except OSError:
        return ""
    return os.fsdecode(raw.removesuffix(b"\n"))


def _model(sysdir: Path) -> str:
    vendor = _read(sysdir / "device" / "vendor")
    model = _read(sysdir / "device" / "model") or _read(sysdir / "device" / "name")
    backing = _backing_path(sysdir)
    if backing:
        return f"loop device backed by {backing}"
    return " ".join(w for w in (vendor, model) if w)


def _diskseq(sysdir: Path) -> int | None:
    text = _read(sysdir / "diskseq")
    return int(text) if text.isdigit() else None


def _is_optical(sysdir: Path, devnum: DevNum) -> bool:
    return devnum[0] == SCSI_CDROM_MAJOR or _read(sysdir / "device" / "type") == SCSI_TYPE_ROM


@dataclass(frozen=True)
class _Loop:
    """A loop device and what its backing path names now (None: nothing, or nothing readable)."""

    name: str
    devnum: DevNum
    path: str
    target: os.stat_result | None


@dataclass
class _View:
    """One reading of the machine's mounts, swaps and loop devices, shared by a whole stack."""

    host: Host
    mounts: list[Mount]
    mounted: dict[DevNum, list[str]]
    swap_devices: set[DevNum]
    swap_files: set[FileId]
    loops: list[_Loop]

    @classmethod
    def read(cls, host: Host) -> _View:
        found = read_mounts(host)
        mounted: dict[DevNum, list[str]] = {}
        for m in found:
            mounted.setdefault(_mount_devnum(m), []).append(m.mountpoint)
        swap_devices, swap_files = _swaps(host)
        return cls(host, found, mounted, swap_devices, swap_files, list(_read_loops(host)))

    def loops_on_device(self, devnums: set[DevNum]) -> list[_Loop]:
        return [
            loop
            for loop in self.loops
            if loop.target is not None
            and stat.S_ISBLK(loop.target.st_mode)
            and (os.major(loop.target.st_rdev), os.minor(loop.target.st_rdev)) in devnums
        ]

    def loops_on_file(self, file: os.stat_result) -> list[_Loop]:
        return [
            loop
            for loop in self.loops
            if loop.target is not None
            and stat.S_ISREG(loop.target.st_mode)
            and (loop.target.st_dev, loop.target.st_ino) == (file.st_dev, file.st_ino)
        ]


def _read_loops(host: Host) -> Iterator[_Loop]:
    block = host.sysfs / "block"
    for entry in sorted(block.iterdir()) if block.is_dir() else ():
        path = _backing_path(entry)
        devnum = _devnum(_read(entry / "dev"))
        if not path or devnum is None:
            continue
        try:
            target = None if path.endswith(DELETED) else os.stat(path)
        except OSError:
            target = None
        yield _Loop(entry.name, devnum, path, target)


def find_block_device(devnum: DevNum, host: Host) -> BlockDevice | None:
    """The device with this major:minor, with its partitions, mounts, holders and what is below it;
    None if absent."""
    view = _View.read(host)
    return _device(devnum, view, system_disks(host, view.mounts), depth=0)


def _device(devnum: DevNum, view: _View, system: set[str], *, depth: int) -> BlockDevice | None:
    host = view.host
    sysdir = _sysdir(devnum, host)
    if sysdir is None:
        return None
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
                    mountpoints=tuple(view.mounted.get(child_num, ())),
                    holders=_names(child / "holders"),
                    swap=child_num in view.swap_devices,
                )
            )
    below: list[BlockDevice] = []
    backing: BackingFile | None = None
    loops_over: list[_Loop] = []
    if depth < MAX_STACK:
        below, backing, loops_over = _underneath(sysdir, devnum, partitions, view, system, depth)
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
        mountpoints=tuple(view.mounted.get(devnum, ())),
        holders=_names(sysdir / "holders"),
        swap=devnum in view.swap_devices,
        system=bool({sysdir.name, disk_dir.name} & system),
        diskseq=_diskseq(disk_dir),
        backing=backing,
        below=tuple(below),
        loops_over=tuple(
            d for loop in loops_over if (d := _device(loop.devnum, view, system, depth=MAX_STACK)) is not None
        ),
    )


def _underneath(
    sysdir: Path, devnum: DevNum, partitions: list[Partition], view: _View, system: set[str], depth: int
) -> tuple[list[BlockDevice], BackingFile | None, list[_Loop]]:
    """What a device writes to (slaves, or a loop's backing), and the other loops on that storage."""
    below = []
    for slave in _names(sysdir / "slaves"):
        number = _devnum(_read(sysdir / "slaves" / slave / "dev"))
        lower = _device(number, view, system, depth=depth + 1) if number else None
        if lower is not None:
            below.append(lower)
    others = view.loops_on_device({devnum, *(p.devnum for p in partitions)})
    backing = None
    this = next((loop for loop in view.loops if loop.devnum == devnum), None)
    if this is not None and this.target is not None and stat.S_ISBLK(this.target.st_mode):
        rdev = this.target.st_rdev
        lower = _device((os.major(rdev), os.minor(rdev)), view, system, depth=depth + 1)
        if lower is not None:
            below.append(lower)
    elif this is not None:
        backing = _backing_file(this, view)
        if this.target is not None:
            others += view.loops_on_file(this.target)
    return below, backing, [loop for loop in others if loop.devnum != devnum]


def _backing_file(loop: _Loop, view: _View) -> BackingFile:
    if loop.target is None:
        why = (
            "was deleted"
            if loop.path.endswith(DELETED)
            else "cannot be found here (moved, or the loop device was set up in another mount namespace)"
        )
        return BackingFile(loop.path, problem=why)
    if not stat.S_ISREG(loop.target.st_mode):
        return BackingFile(loop.path, problem="is neither a regular file nor a block device")
    return BackingFile(loop.path, swap=(loop.target.st_dev, loop.target.st_ino) in view.swap_files)


def system_disks(host: Host, table: list[Mount] | None = None) -> set[str]:
    """Names of the devices under / : its partition, the disk, and what LVM, RAID or dm-crypt sit on.

    The last mount of "/" wins, as it does for the kernel. Walking `slaves/` finds the disks
    under a device-mapper or md device; walking up from a partition finds its disk.
    """
    table = read_mounts(host) if table is None else table
    roots = [m for m in table if m.mountpoint == "/"]
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

    The rules that protect data in use (system, mounted, held, swap, read-only) apply again to
    everything below the device, and to any other loop device over the same storage. The rules
    about the image (partition, size, medium) apply to the device alone. A loop device over a
    regular file rewrites that file and nothing else, just as `burn ISO FILE` would, so the file
    system holding the file (always mounted, perhaps the system's) is not a reason to refuse; the
    file itself must not be a swap file, nor reached by a loop device in use, nor unidentifiable.
    """
    dev = device.path
    absolute: list[str] = []
    if device.system:
        absolute.append(f"{dev} holds the running system (/); xenlive never writes to it")
    if device.parent is not None:
        absolute.append(f"{dev} is a partition of /dev/{device.parent}; write the image to the whole disk")
    absolute += [f"{where} {why}" for where, why in _in_use(device)]
    if device.readonly:
        absolute.append(f"{dev} is read-only (write-protect switch, or set read-only by the kernel)")
    if device.size == 0 and not device.optical:
        absolute.append(f"{dev} has no medium (size 0); insert the card or stick")
    elif image_size > device.size and not device.optical:
        absolute.append(
            f"{dev} is too small: {human_size(device.size)} ({device.size} bytes) for an image of "
            f"{human_size(image_size)} ({image_size} bytes)"
        )
    absolute += _refusals_below(device)
    forced: list[str] = []
    if not device.hotplug and not device.optical:
        forced.append(
            f"{dev} is not a removable disk (transport {device.transport or 'unknown'}, removable flag 0); "
            "pass --force if you really mean to overwrite it"
        )
    return Refusals(absolute, forced)


def _in_use(device: BlockDevice, *, stacked: frozenset[str] = frozenset()) -> list[tuple[Path, str]]:
    """(where, why) for each way the device or one of its partitions is in use right now.

    `stacked` names the devices between the target and this one: holders that writing the target
    goes through, not other users.
    """
    found: list[tuple[Path, str]] = []
    parts = [(device.path, device.mountpoints, device.holders, device.swap)]
    parts += [(Path("/dev") / p.name, p.mountpoints, p.holders, p.swap) for p in device.partitions]
    for where, mountpoints, _holders, _swap in parts:
        if mountpoints:
            found.append((where, f"is mounted on {', '.join(mountpoints)}; unmount it first"))
    for where, _mountpoints, holders, _swap in parts:
        others = [h for h in holders if h not in stacked]
        if others:
            found.append((where, f"is in use by {', '.join(others)} (LVM, RAID or dm-crypt); stop that first"))
    for where, _mountpoints, _holders, swap in parts:
        if swap:
            found.append((where, "is in use as swap; swapoff it first"))
    return found


def _refusals_below(device: BlockDevice) -> list[str]:
    """The data-in-use rules for what `device` writes through to, and for loops sharing it."""
    found: list[str] = []
    layers = [device, *device.stack()]
    chain = frozenset(layer.name for layer in layers)  # the way writes go down, not other users
    for layer in layers:
        below = "" if layer is device else f" (below {device.path})"
        if layer is not device:
            if layer.system:
                found.append(f"{layer.path}{below} holds the running system (/); xenlive never writes to it")
            found += [f"{where}{below} {why}" for where, why in _in_use(layer, stacked=chain)]
            if layer.readonly:
                found.append(f"{layer.path}{below} is read-only")
        if layer.backing is not None:
            file = layer.backing
            if file.problem:
                found.append(
                    f"{layer.path}{below} is a loop device over {file.path}, which {file.problem}; "
                    "detach it (losetup -d) and attach the file again"
                )
            if file.swap:
                found.append(f"{layer.path}{below} is a loop device over {file.path}, a swap file in use")
        for other in (d for d in layer.loops_over if d.name not in chain):
            for where, why in _in_use(other):
                part = "" if where == other.path else f" (a partition of {other.path})"
                found.append(f"{where}{part}, another loop device over the storage of {layer.path}{below}, {why}")
    return found


def identity_changes(before: BlockDevice, now: BlockDevice | None) -> list[str]:
    """How the device at `before`'s number now differs from the one a person confirmed.

    A stick pulled during the prompt and another plugged in can get the same /dev name and the
    same major:minor; the kernel's disk sequence number (diskseq, Linux 5.15 and later) is new for
    every disk and every medium change, and the size and model tell most others apart.
    """
    if now is None:
        return [f"{before.path} is no longer there"]
    changes = []
    if now.devnum != before.devnum:
        changes.append(f"its device number changed from {_num(before.devnum)} to {_num(now.devnum)}")
    if now.diskseq != before.diskseq:
        changes.append(
            f"its disk sequence number changed from {before.diskseq} to {now.diskseq} "
            "(another disk or medium is in its place)"
        )
    if now.size != before.size:
        changes.append(f"its size changed from {before.size} to {now.size} bytes")
    if now.model != before.model:
        changes.append(f"its model changed from {before.model or '(unknown)'!r} to {now.model or '(unknown)'!r}")
    return changes


def _num(devnum: DevNum) -> str:
    return f"{devnum[0]}:{devnum[1]}"


def acceptable_devices(host: Host) -> list[tuple[BlockDevice, list[str]]]:
    """Every removable disk and optical drive, with what would stop `burn` from using it now."""
    found = []
    for device in list_block_devices(host):
        if not (device.hotplug or device.optical):
            continue
        found.append((device, refusals(device, 0).blocking(force=False)))
    return found
