"""`xenlive burn`: put an ISO on a USB stick, SD card, disk image file or CD/DVD, and prove it.

Writing to the wrong disk destroys someone's data, so every step that can refuse comes before the
first byte is written: the image is checked (ISO signature, then `verify_iso`), the target is
resolved (a symlink is followed and named, never silently), the kernel's view of the device is
read (`builder.devices`), and a person confirms what will be lost. The device is then opened with
O_EXCL, which the kernel refuses while anything has it mounted or claimed, and identified again
through the open descriptor: its device number, and the disk sequence number, size and model
sysfs now gives for it, must be those the person confirmed, and every refusal is checked once
more. A stick pulled during the prompt and another plugged in can take the same /dev name and
even the same major:minor; its new disk sequence number gives it away before a byte is written.
A file target is identified by its inode the same way, and truncated only after that.

After writing, the data is flushed and read back from the medium (the page cache is dropped first,
so the comparison is against what the device returns, not against our own memory). Any failure on
the way (a short write, ENOSPC, EIO, a device that vanished or shrank) is a MediaError: the command
never says "done" about a medium it could not prove.

Optical drives are written by xorriso's cdrecord emulation. A regular file named as `stdio:PATH` is
xorriso's own pseudo-drive, so the CD path that serves /dev/sr0 is the one the tests run.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import re
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path

from builder import persistence
from builder.devices import BlockDevice, Host, find_block_device, identity_changes, refusals
from builder.errors import CommandError, IsoError, MediaError, UsageError
from builder.hybrid import BACKUP_GPT_BYTES
from builder.run import require_tools, run
from builder.terminal import human_size

log = logging.getLogger(__name__)

CHUNK = 4 * 2**20
ISO_BLOCK = 2048
ISO_SIGNATURE_OFFSET = 16 * ISO_BLOCK + 1  # "CD001" of the primary volume descriptor
STDIO = "stdio:"
INCOMPLETE_HINT = "the medium holds an incomplete image and will not boot; fix the cause and burn again"

Progress = Callable[[str, int, int], None]
"""Called as progress(phase, done, total) with phase "write" or "verify"; bytes."""
Confirm = Callable[[str], bool]
"""Shown the description of what will be overwritten; True to go ahead."""


class TargetKind(StrEnum):
    FILE = "file"
    DISK = "disk"
    OPTICAL = "optical"


@dataclass(frozen=True)
class BurnTarget:
    """Where the image goes, after symlinks were resolved; `path` is what gets opened."""

    given: str
    kind: TargetKind
    path: Path
    drive: str = ""  # xorriso's address for an optical target: /dev/sr0 or stdio:/path
    device: BlockDevice | None = None
    exists: bool = True
    symlink_to: Path | None = None
    file_id: tuple[int, int] | None = None  # (st_dev, st_ino) of an existing file target


@dataclass(frozen=True)
class OpticalMedia:
    """What xorriso reports about the medium in a drive (or about a stdio: pseudo-drive)."""

    current: str
    status: str
    capacity: int  # bytes the image may occupy, from offset 0


@dataclass(frozen=True)
class BurnResult:
    target: str
    kind: TargetKind
    size: int
    sha256: str
    verified: bool
    seconds: float

    def as_dict(self) -> dict[str, object]:
        return {
            "target": self.target,
            "kind": str(self.kind),
            "size": self.size,
            "sha256": self.sha256,
            "verified": self.verified,
            "seconds": round(self.seconds, 1),
        }


def check_image(iso: Path) -> int:
    """The image's size, after making sure it is an ISO 9660 file at all (bad input: exit 2)."""
    if not iso.exists():
        raise UsageError(f"{iso}: no such file", hint="build an image first: xenlive build -o IMAGE.iso")
    if not iso.is_file():
        raise UsageError(f"{iso} is not a regular file; burn takes an ISO image")
    try:
        with iso.open("rb") as f:
            f.seek(ISO_SIGNATURE_OFFSET)
            signature = f.read(5)
    except OSError as e:
        raise UsageError(f"cannot read {iso}: {e.strerror}") from e
    if signature != b"CD001":
        raise UsageError(f"{iso} is not an ISO 9660 image (no CD001 signature at byte {ISO_SIGNATURE_OFFSET})")
    return iso.stat().st_size


def verify_image(iso: Path) -> None:
    """Refuse an ISO that `xenlive verify` fails (SHA256SUMS beside it is used when present)."""
    from builder.verify import verify_iso

    verdict = verify_iso(iso)
    if verdict.problems:
        listed = "\n".join(f"  - {p}" for p in verdict.problems)
        raise IsoError(
            f"{iso} failed verification, nothing was written:\n{listed}",
            hint="rebuild the image with: xenlive build",
        )
    for warning in verdict.warnings:
        log.warning("warning: %s", warning)


def _under_dev(path: Path) -> bool:
    return Path(os.path.realpath(path)).parts[:2] == ("/", "dev")


def resolve_target(given: str, host: Host) -> BurnTarget:
    """Decide what TARGET is by what it points at, never by its name, and say where a symlink led."""
    if given.startswith(STDIO):
        return _pseudo_drive(given)
    path = Path(given)
    if not os.path.lexists(path):
        parent = Path(os.path.abspath(path)).parent
        if _under_dev(parent):
            raise UsageError(f"{given}: no such device", hint="list the removable devices with: xenlive devices")
        if not parent.is_dir():
            raise UsageError(f"{given}: directory {parent} does not exist")
        return BurnTarget(given, TargetKind.FILE, Path(os.path.abspath(path)), exists=False)
    real = Path(os.path.realpath(path))
    if not real.exists():
        raise UsageError(f"{given} is a symlink to {real}, which does not exist")
    symlink_to = real if real != Path(os.path.abspath(path)) else None
    mode = real.stat()
    if stat.S_ISBLK(mode.st_mode):
        devnum = (os.major(mode.st_rdev), os.minor(mode.st_rdev))
        device = find_block_device(devnum, host)
        if device is None:
            raise MediaError(f"{given}: block device {devnum[0]}:{devnum[1]} is not listed in {host.sysfs}/dev/block")
        kind = TargetKind.OPTICAL if device.optical else TargetKind.DISK
        return BurnTarget(given, kind, real, drive=str(real), device=device, symlink_to=symlink_to)
    if stat.S_ISREG(mode.st_mode):
        return BurnTarget(given, TargetKind.FILE, real, symlink_to=symlink_to, file_id=(mode.st_dev, mode.st_ino))
    raise UsageError(f"{given} ({real}) is neither a block device nor a regular file; burn cannot write to it")


def _pseudo_drive(given: str) -> BurnTarget:
    """`stdio:PATH`: xorriso writes a regular file as if it were a disc, through the CD code path."""
    raw = given[len(STDIO) :]
    if not raw:
        raise UsageError(f"{given}: expected stdio:PATH, a file for xorriso's pseudo-drive")
    real = Path(os.path.realpath(raw))
    if real.exists() and not real.is_file():
        raise UsageError(
            f"{given}: {real} is not a regular file; stdio: is for image files",
            hint="to write a device, name it directly (e.g. /dev/sr0 or /dev/sdX)",
        )
    if not real.exists() and (_under_dev(real.parent) or not real.parent.is_dir()):
        raise UsageError(f"{given}: directory {real.parent} does not exist")
    symlink_to = real if real != Path(os.path.abspath(raw)) else None
    drive = f"{STDIO}{real}"
    return BurnTarget(given, TargetKind.OPTICAL, real, drive=drive, exists=real.exists(), symlink_to=symlink_to)


def read_optical_media(drive: str) -> OpticalMedia:
    """Ask xorriso about the medium (its -toc and media space reports) before anything is written."""
    require_tools(["xorriso"])
    proc = run(["xorriso", "-outdev", drive, "-toc", "-tell_media_space"], capture=True, check=False)
    text = f"{proc.stdout}\n{proc.stderr}"
    space = re.search(r"^Media space\s*:\s*(\d+)s", text, re.M)
    if proc.returncode != 0 or space is None:
        tail = "\n".join(text.strip().splitlines()[-6:])
        raise MediaError(
            f"cannot read the medium in {drive}:\n{tail}",
            hint="insert a blank or rewritable CD/DVD and close the tray",
        )
    current = _report_field(text, "Media current")
    capacity = int(space[1]) * ISO_BLOCK
    overall = re.search(r"^Media blocks\s*:.*?(\d+) overall", text, re.M)
    if "overwriteable" in current and overall:
        # DVD+RW, BD-RE and stdio files are rewritten from block 0, so the whole medium counts.
        capacity = max(capacity, int(overall[1]) * ISO_BLOCK)
    return OpticalMedia(current=current, status=_report_field(text, "Media status"), capacity=capacity)


def _report_field(text: str, name: str) -> str:
    match = re.search(rf"^{name}\s*:\s*(.*)$", text, re.M)
    return match[1].strip() if match else ""


def preflight(iso: Path, image_size: int, target: BurnTarget, *, force: bool) -> None:
    """Every refusal that does not need the confirmation: raise MediaError naming them all.

    `image_size` is what the target must hold: the image, or the whole disk with persistence."""
    problems: list[str] = []
    if target.device is not None:
        problems += refusals(target.device, image_size).blocking(force=force)
        problems += _backed_by_image(iso, target.device)
    if target.kind is TargetKind.FILE:
        problems += _file_problems(iso, image_size, target, check_space=True)
    elif target.device is None:  # a stdio: pseudo-drive: xorriso reports its capacity below
        problems += _file_problems(iso, image_size, target, check_space=False)
    if target.kind is TargetKind.OPTICAL and not problems:
        media = read_optical_media(target.drive)
        log.info("%s: %s, %s", target.drive, media.current or "medium", media.status or "status unknown")
        if media.capacity < image_size:
            problems.append(
                f"the medium in {target.drive} is too small: {human_size(media.capacity)} free "
                f"for an image of {human_size(image_size)} (status: {media.status or 'unknown'})"
            )
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise MediaError(f"refusing to write {target.given}, nothing was written:\n{listed}")


def _backed_by_image(iso: Path, device: BlockDevice) -> list[str]:
    """A loop device over the ISO itself (at any depth) would be read and overwritten at once."""
    found = []
    for backing in device.backing_files():
        try:
            same = os.path.samefile(iso, backing)
        except OSError:
            continue  # refusals() already names a backing file that cannot be found
        if same:
            found.append(f"{device.path} is a loop device over {backing}, which is the image itself")
    return found


def _file_problems(iso: Path, image_size: int, target: BurnTarget, *, check_space: bool) -> list[str]:
    """An image file must not be the ISO itself, and its filesystem must hold the image."""
    if target.exists and os.path.samefile(iso, target.path):
        return [f"{target.path} is the image itself"]
    directory = target.path.parent
    try:
        fs = os.statvfs(directory)
    except OSError as e:
        return [f"cannot inspect {directory}: {e.strerror}"]
    if fs.f_flag & os.ST_RDONLY:
        return [f"{target.path} is not writable: {directory} is on a read-only filesystem"]
    writable = os.access(target.path, os.W_OK) if target.exists else os.access(directory, os.W_OK | os.X_OK)
    if not writable:
        return [f"{target.path} is not writable (permission denied)"]
    free = fs.f_bavail * fs.f_frsize + (target.path.stat().st_size if target.exists else 0)
    if check_space and free < image_size:
        return [
            f"not enough space for {target.path}: {human_size(free)} free on its filesystem, "
            f"{human_size(image_size)} needed"
        ]
    return []


def describe(target: BurnTarget, iso: Path, image_size: int) -> str:
    """What will be overwritten, in enough detail to recognise the stick before it is too late."""
    lines = [f"About to write {iso} ({human_size(image_size)}) to {target.given}"]
    if target.symlink_to is not None:
        lines.append(f"  {target.given} is a symlink to {target.symlink_to}")
    if target.device is not None:
        lines.append(f"  device      {target.device.path} ({target.kind})")
        lines += [f"  {line}" for line in target.device.describe()]
        lines.append(f"All data on {target.device.path} will be lost.")
    elif target.kind is TargetKind.OPTICAL:
        lines.append(f"  xorriso pseudo-drive {target.drive}; its contents will be replaced")
    elif target.exists:
        lines.append(f"  file {target.path} ({human_size(target.path.stat().st_size)}) will be replaced")
    else:
        lines.append(f"  new file {target.path}")
    return "\n".join(lines)


def burn(
    iso: Path,
    given: str,
    *,
    confirm: Confirm,
    force: bool = False,
    verify: bool = True,
    progress: Progress | None = None,
    host: Host | None = None,
    persist: str | None = None,
) -> BurnResult:
    """Write `iso` to the target named `given`, then read it back; raise unless it is proven.

    With `persist` (--persistence SIZE|rest), a persistence partition follows the image
    (builder/persistence.py); what is read back is the image part as written, tables included.
    """
    host = host or Host()
    report = progress or (lambda _phase, _done, _total: None)
    image_size = check_image(iso)
    target = resolve_target(given, host)
    if target.symlink_to is not None:
        log.info("%s is a symlink to %s", given, target.symlink_to)
    plan = _persistence_plan(iso, image_size, target, persist)
    needed = image_size if plan is None else plan.layout.disk_bytes  # what the target must hold
    preflight(iso, needed, target, force=force)
    if target.kind is TargetKind.OPTICAL and target.device is not None:
        # xorriso's look at the disc made the kernel read it (a new size, perhaps a new diskseq):
        # what the person confirms, and what is checked again before writing, is the drive now.
        now = find_block_device(target.device.devnum, host)
        target = replace(target, device=now or target.device)
    verify_image(iso)
    text = describe(target, iso, image_size)
    if plan is not None:
        text += "\n" + plan.describe()
    if not confirm(text):
        raise MediaError(f"not confirmed; nothing was written to {target.given}")
    start = time.monotonic()
    if target.kind is TargetKind.OPTICAL:
        digest = _write_optical(iso, image_size, target, report, _Recheck(host, image_size, force))
    else:
        recheck = _Recheck(host, needed, force)
        digest = _write_direct(iso, image_size, target, report, recheck, plan)
        if plan is not None:
            _make_persistence(target, plan, recheck)
    verified = False
    if verify:
        back = _read_back(target, image_size, report, host)
        if plan is not None and _read_at(target, plan.layout.backup_gpt_at, BACKUP_GPT_BYTES) != plan.tail:
            raise MediaError(f"verification failed: the backup GPT read back from {target.path} differs from "
                             "what was written", hint=INCOMPLETE_HINT)  # fmt: skip
        if back != digest:
            raise MediaError(
                f"verification failed: the data read back from {target.path} differs from {iso} "
                f"(sha256 {back} instead of {digest})",
                hint=INCOMPLETE_HINT,
            )
        verified = True
    if target.kind is TargetKind.OPTICAL:
        _eject(target.drive)  # a no-op for a stdio: pseudo-drive, so tests run this line too
    return BurnResult(str(target.path), target.kind, image_size, digest, verified, time.monotonic() - start)


def _persistence_plan(iso: Path, image_size: int, target: BurnTarget, persist: str | None) -> persistence.Plan | None:
    """The persistence partition for this target, checked before anything else is asked."""
    if persist is None:
        return None
    size = persistence.parse_request(persist)
    if target.kind is TargetKind.OPTICAL:
        raise UsageError(f"--persistence: {target.given} is a CD/DVD; persistence needs a stick or an image file")
    disk_bytes = target.device.size if target.device is not None else None
    return persistence.plan(iso, image_size, size, disk_bytes, target.given)


def _make_persistence(target: BurnTarget, plan: persistence.Plan, recheck: _Recheck) -> None:
    """The partition's file system, on the device that was written (identified once more)."""
    if target.device is not None:
        changes = _reidentify(target.device, recheck, target.device.devnum)
        if changes:
            raise _not_confirmed(target, changes)
    try:
        persistence.make_filesystem(target.path, plan.layout)
    except CommandError as e:
        raise MediaError(f"the persistence partition's file system could not be made: {e.message}",
                         hint=INCOMPLETE_HINT) from e  # fmt: skip
    if target.device is not None:
        _reread_partitions(target.path)


def _reread_partitions(path: Path) -> None:
    """Ask the kernel to read the new partition tables (BLKRRPART), so the partition shows at once."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, 0x125F)  # BLKRRPART
        finally:
            os.close(fd)
    except OSError as e:
        log.info("the kernel did not re-read %s's partition tables (%s); unplug and replug the stick", path, e)


def _read_at(target: BurnTarget, offset: int, size: int) -> bytes:
    """`size` bytes at `offset` as the medium returns them."""
    fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, size, offset)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class _Recheck:
    """What checking the target again needs: where sysfs is, the image size, and --force."""

    host: Host
    image_size: int
    force: bool


def _reidentify(confirmed: BlockDevice, recheck: _Recheck, devnum: tuple[int, int]) -> list[str]:
    """How the device now at `devnum` differs from the one confirmed, and what refuses it now."""
    now = find_block_device(devnum, recheck.host)
    changes = identity_changes(confirmed, now)
    if now is not None:
        changes += refusals(now, recheck.image_size).blocking(force=recheck.force)
    return changes


def _not_confirmed(target: BurnTarget, changes: list[str]) -> MediaError:
    listed = "\n".join(f"  - {c}" for c in changes)
    return MediaError(
        f"{target.path} is not the device that was confirmed, or can no longer be written; nothing was written:\n"
        f"{listed}",
        hint="check which device you mean (xenlive devices) and run burn again",
    )


def _open_for_writing(target: BurnTarget, recheck: _Recheck) -> int:
    """Open the resolved target and make sure it is still what was inspected and confirmed.

    O_EXCL on a block device fails while anything has it mounted or claimed. A file is opened
    without O_TRUNC and truncated only once its inode is known to be the one inspected.
    """
    flags = os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    if target.kind is TargetKind.DISK:
        flags |= os.O_EXCL
    else:
        flags |= os.O_CREAT | (0 if target.exists else os.O_EXCL)
    try:
        fd = os.open(target.path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.EBUSY:
            raise MediaError(
                f"{target.path} is busy: mounted or opened exclusively by another program; nothing was written"
            ) from e
        raise MediaError(f"cannot open {target.path} for writing: {e.strerror}; nothing was written") from e
    try:
        opened = os.fstat(fd)
        if target.device is not None:
            if not stat.S_ISBLK(opened.st_mode):
                raise _not_confirmed(target, ["it is no longer a block device"])
            devnum = (os.major(opened.st_rdev), os.minor(opened.st_rdev))
            changes = _reidentify(target.device, recheck, devnum)
            if changes:
                raise _not_confirmed(target, changes)
        else:
            if not stat.S_ISREG(opened.st_mode):
                raise MediaError(f"{target.path} is no longer a regular file; nothing was written")
            if target.file_id is not None and (opened.st_dev, opened.st_ino) != target.file_id:
                raise MediaError(f"{target.path} was replaced since it was inspected; nothing was written")
            os.ftruncate(fd, 0)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _write_direct(iso: Path, total: int, target: BurnTarget, progress: Progress, recheck: _Recheck,
                  plan: persistence.Plan | None = None) -> str:  # fmt: skip
    """Copy the image with plain writes, then fsync: the USB stick, SD card and image file path.

    With a persistence plan, the image part is written as the plan has it, then the backup GPT at
    the disk's end (an image file grows to the plan's disk size)."""
    host = recheck.host
    digest = hashlib.sha256()
    done = 0
    fd = _open_for_writing(target, recheck)
    try:
        with iso.open("rb", buffering=0) as src:
            while chunk := src.read(CHUNK):
                if plan is not None:
                    chunk = plan.image_part(done, chunk)
                view = memoryview(chunk)
                while view:
                    try:
                        written = os.write(fd, view)
                    except OSError as e:
                        raise _failure(e, "writing", target, done, total, host) from e
                    if written <= 0:
                        raise MediaError(
                            f"short write to {target.path}: the device took no more data after {done} of {total} bytes",
                            hint=INCOMPLETE_HINT,
                        )
                    view = view[written:]
                    done += written
                digest.update(chunk)
                progress("write", done, total)
        if done != total:
            raise MediaError(f"{iso} changed while it was written ({done} bytes read, {total} expected)")
        if plan is not None:
            try:
                if target.device is None:
                    os.ftruncate(fd, plan.layout.disk_bytes)
                if os.pwrite(fd, plan.tail, plan.layout.backup_gpt_at) != len(plan.tail):
                    raise OSError(errno.ENOSPC, "short write of the backup GPT")
            except OSError as e:
                raise _failure(e, "writing the backup GPT", target, done, total, host) from e
        try:
            os.fsync(fd)
        except OSError as e:
            raise _failure(e, "flushing", target, done, total, host) from e
    finally:
        try:
            os.close(fd)
        except OSError as e:
            log.debug("closing %s: %s", target.path, e)
    return digest.hexdigest()


def _read_back(target: BurnTarget, total: int, progress: Progress, host: Host) -> str:
    """sha256 of the first `total` bytes as the medium returns them, not as the page cache has them."""
    digest = hashlib.sha256()
    done = 0
    try:
        fd = os.open(target.path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise _failure(e, "reading back", target, done, total, host) from e
    try:
        _same_device_as_written(fd, target, host)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        while done < total:
            chunk = os.read(fd, min(CHUNK, total - done))
            if not chunk:
                raise MediaError(
                    f"verification failed: only {done} of {total} bytes could be read back from {target.path}",
                    hint=INCOMPLETE_HINT,
                )
            digest.update(chunk)
            done += len(chunk)
            progress("verify", done, total)
    except OSError as e:
        raise _failure(e, "reading back", target, done, total, host) from e
    finally:
        os.close(fd)
    return digest.hexdigest()


def _same_device_as_written(fd: int, target: BurnTarget, host: Host) -> None:
    """Reading back another disk than the one written would prove nothing (nor "verify" it)."""
    if target.device is None:
        return
    rdev = os.fstat(fd).st_rdev
    devnum = (os.major(rdev), os.minor(rdev))
    changes = [] if devnum == target.device.devnum else [f"it is now device {devnum[0]}:{devnum[1]}"]
    if target.kind is TargetKind.DISK:  # a burner may reload its disc after writing: a new diskseq
        changes += identity_changes(target.device, find_block_device(devnum, host))
    if changes:
        raise MediaError(
            f"verification failed: {target.path} is no longer the device that was written: {'; '.join(changes)}",
            hint=INCOMPLETE_HINT,
        )


def _failure(e: OSError, doing: str, target: BurnTarget, done: int, total: int, host: Host) -> MediaError:
    """Turn an OSError into a message that says what happened to the medium, not just errno."""
    where = f"after {human_size(done)} of {human_size(total)} ({done} of {total} bytes)"
    gone = _what_went_away(target, host)
    if gone:
        message = f"{target.path} went away while {doing} {where}: {gone}"
    elif e.errno == errno.ENOSPC and target.kind is TargetKind.FILE:
        message = f"the filesystem holding {target.path} is full: {doing} failed {where}"
    elif e.errno == errno.ENOSPC:
        message = f"no space left on {target.path}: {doing} failed {where}"
    else:
        name = errno.errorcode.get(e.errno or 0, "error")
        message = f"I/O error while {doing} {target.path} {where}: {e.strerror} ({name})"
    return MediaError(message, hint=INCOMPLETE_HINT)


def _what_went_away(target: BurnTarget, host: Host) -> str | None:
    """Whether the device vanished or changed size (as a pulled stick or detached loop does)."""
    if target.device is None:
        return None if target.path.exists() else "the file was removed"
    now = find_block_device(target.device.devnum, host)
    if now is None:
        return "the device is no longer there"
    if now.size != target.device.size:
        return f"its size changed from {target.device.size} to {now.size} bytes (removed or replaced)"
    return None


def _write_optical(iso: Path, total: int, target: BurnTarget, progress: Progress, recheck: _Recheck) -> str:
    """Burn with xorriso's cdrecord emulation in one session (-dao), blanking a rewritable if needed.

    xorriso opens the drive itself, so the drive is identified again through sysfs just before:
    a disc swapped during the prompt has a new disk sequence number.
    """
    if target.device is not None:
        changes = _reidentify(target.device, recheck, target.device.devnum)
        if changes:
            raise _not_confirmed(target, changes)
    progress("write", 0, total)
    cmd: list[str | Path] = ["xorriso", "-as", "cdrecord", "-v", f"dev={target.drive}", "blank=as_needed", "-dao", iso]
    try:
        run(cmd)
    except CommandError as e:
        raise MediaError(f"xorriso could not write {target.drive}: {e.message}", hint=INCOMPLETE_HINT) from e
    progress("write", total, total)
    digest = hashlib.sha256()
    with iso.open("rb") as src:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _eject(drive: str) -> None:
    proc = run(["xorriso", "-outdev", drive, "-eject", "all"], check=False)
    if proc.returncode != 0:
        log.warning("could not eject %s (the disc is written and verified)", drive)
