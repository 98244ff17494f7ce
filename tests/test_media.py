"""`xenlive burn` for real: loop devices, image files, xorriso's stdio: pseudo-drive, and faults.

Loop devices and small tmpfs mounts need root; those tests skip cleanly without it. Every loop
device and mount is released in a `finally`, whatever the test does.
"""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder import media
from builder.devices import Host, system_disks
from builder.errors import IsoError, MediaError, UsageError
from tests.test_media_support import (
    VIRTUAL_PATH,
    FakeDisk,
    MiB,
    fake_host,
    loop_backing,
    loop_device,
    make_iso,
    needs_root,
    tmpfs,
)

needs_xorriso = pytest.mark.skipif(shutil.which("xorriso") is None, reason="xorriso is not installed")


@pytest.fixture(scope="module")
def isos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good tiny ISO (about 9 MiB: three write chunks) and one whose manifest does not match."""
    if shutil.which("xorriso") is None:
        pytest.skip("xorriso is needed to make the test ISOs")
    payload = os.urandom(9 * MiB)
    good = make_iso(tmp_path_factory.mktemp("good"), payload=payload)
    bad = make_iso(tmp_path_factory.mktemp("bad"), payload=payload, corrupt_manifest=True)
    return {"good": good, "bad": bad}


def yes(_description: str) -> bool:
    return True


def xenlive(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, stdin=stdin)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def head(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        return f.read(size)


def untouched(path: Path) -> bool:
    """No ISO volume descriptor at 32 KiB: the image was not written there, not even its start."""
    return b"CD001" not in head(path, 64 * 1024)


# --- image files ---------------------------------------------------------------------------


def test_burn_to_new_file_writes_an_identical_copy(isos, tmp_path):
    out = tmp_path / "stick.img"
    proc = xenlive("burn", str(isos["good"]), str(out), "--yes")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"done: wrote {isos['good']} to {out} (")
    assert "verified" in proc.stdout and "NOT verified" not in proc.stdout
    assert "new file" in proc.stderr
    assert out.read_bytes() == isos["good"].read_bytes()


def test_burn_replaces_a_longer_existing_file_exactly(isos, tmp_path):
    out = tmp_path / "old.img"
    out.write_bytes(b"x" * (20 * MiB))
    result = media.burn(isos["good"], str(out), confirm=yes)
    assert result.verified and out.read_bytes() == isos["good"].read_bytes()


def test_no_verify_skips_the_read_back_and_says_so(isos, tmp_path):
    phases: list[str] = []
    out = tmp_path / "fast.img"
    result = media.burn(isos["good"], str(out), confirm=yes, verify=False, progress=lambda p, d, t: phases.append(p))
    assert not result.verified and set(phases) == {"write"}
    proc = xenlive("burn", str(isos["good"]), str(out), "--yes", "--no-verify")
    assert proc.returncode == 0 and "NOT verified (--no-verify)" in proc.stdout


def test_progress_reports_write_then_verify_up_to_the_image_size(isos, tmp_path):
    seen: list[tuple[str, int, int]] = []
    media.burn(isos["good"], str(tmp_path / "p.img"), confirm=yes, progress=lambda *a: seen.append(a))
    size = isos["good"].stat().st_size
    assert [s for s in seen if s[0] == "write"][-1] == ("write", size, size)
    assert seen[-1] == ("verify", size, size)
    assert [p for p, _, _ in seen] == sorted((p for p, _, _ in seen), key=["write", "verify"].index)


def test_data_that_reads_back_different_fails_verification(isos, tmp_path):
    """The medium returns other bytes than were written (a fake-capacity stick does this)."""
    out = tmp_path / "liar.img"
    size = isos["good"].stat().st_size

    def corrupt_at_end_of_write(phase: str, done: int, total: int) -> None:
        if phase == "write" and done == total:
            with out.open("r+b") as f:
                f.seek(size // 2)
                f.write(b"\xff" * 512)

    with pytest.raises(MediaError, match=r"verification failed: the data read back from .* differs"):
        media.burn(isos["good"], str(out), confirm=yes, progress=corrupt_at_end_of_write)


# --- bad input -----------------------------------------------------------------------------


def test_missing_iso_exits_2(tmp_path):
    out = tmp_path / "out.img"
    proc = xenlive("burn", str(tmp_path / "none.iso"), str(out), "--yes")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {tmp_path / 'none.iso'}: no such file"
    assert not out.exists()


def test_file_that_is_not_an_iso_exits_2(tmp_path):
    junk = tmp_path / "junk.iso"
    junk.write_bytes(os.urandom(64 * 1024))
    out = tmp_path / "out.img"
    proc = xenlive("burn", str(junk), str(out), "--yes")
    assert proc.returncode == 2 and "is not an ISO 9660 image" in proc.stderr
    assert not out.exists()


def test_iso_whose_manifest_does_not_match_is_refused_before_writing(isos, tmp_path):
    out = tmp_path / "out.img"
    proc = xenlive("burn", str(isos["bad"]), str(out), "--yes")
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[0] == f"error: {isos['bad']} failed verification, nothing was written:"
    assert "/payload.bin: sha256 differs from the manifest" in proc.stderr
    assert not out.exists()
    with pytest.raises(IsoError):
        media.burn(isos["bad"], str(out), confirm=yes)


def test_target_device_that_does_not_exist_exits_2(isos):
    proc = xenlive("burn", str(isos["good"]), "/dev/xenlive-no-such-disk", "--yes")
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == "error: /dev/xenlive-no-such-disk: no such device"
    assert not Path("/dev/xenlive-no-such-disk").exists()


def test_target_in_missing_directory_or_a_directory_exits_2(isos, tmp_path):
    proc = xenlive("burn", str(isos["good"]), str(tmp_path / "nodir" / "x.img"), "--yes")
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    proc = xenlive("burn", str(isos["good"]), str(tmp_path), "--yes")
    assert proc.returncode == 2 and "neither a block device nor a regular file" in proc.stderr


def test_character_device_target_is_refused(isos):
    proc = xenlive("burn", str(isos["good"]), "/dev/null", "--yes")
    assert proc.returncode == 2 and "/dev/null (/dev/null) is neither a block device" in proc.stderr


def test_the_iso_itself_is_not_a_target(isos):
    before = isos["good"].read_bytes()
    proc = xenlive("burn", str(isos["good"]), str(isos["good"]), "--yes")
    assert proc.returncode == 1 and "is the image itself" in proc.stderr
    assert isos["good"].read_bytes() == before


@needs_root
def test_target_on_read_only_filesystem_is_refused(isos, tmp_path):
    with tmpfs(tmp_path / "ro", "4m", options="ro") as ro:
        proc = xenlive("burn", str(isos["good"]), str(ro / "x.img"), "--yes")
        assert proc.returncode == 1 and "read-only filesystem" in proc.stderr
        assert not (ro / "x.img").exists()


def test_non_interactive_stdin_without_yes_is_an_error(isos, tmp_path):
    out = tmp_path / "keep.img"
    out.write_bytes(b"precious")
    proc = xenlive("burn", str(isos["good"]), str(out))
    assert proc.returncode == 2
    assert "will not overwrite" in proc.stderr and "stdin is not a terminal" in proc.stderr
    assert "hint: pass --yes" in proc.stderr
    assert out.read_bytes() == b"precious"


def _burn_on_a_terminal(args: list[str], answer: bytes) -> tuple[int, str]:
    """Run burn with a pseudo-terminal as stdin and stderr, type `answer` at the prompt."""
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder", "burn", *args], stdin=slave, stderr=slave,
                            stdout=subprocess.PIPE)  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 30
    answered = False
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            seen += data
        if not answered and b"Type 'yes' to write" in seen:
            os.write(master, answer)
            answered = True
        if proc.poll() is not None and not ready:
            break
    proc.wait(timeout=30)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    proc.stdout.close()
    os.close(master)
    return proc.returncode, seen.decode(errors="replace") + out


def test_terminal_user_confirms_with_yes(isos, tmp_path):
    out = tmp_path / "asked.img"
    out.write_bytes(b"old")
    code, text = _burn_on_a_terminal([str(isos["good"]), str(out)], b"yes\n")
    assert code == 0, text
    assert "will be replaced" in text  # the summary, then a step for the write and one for the read-back
    assert f"writing {out}" in text and f"reading {out} back" in text
    assert out.read_bytes() == isos["good"].read_bytes()


def test_terminal_user_who_does_not_type_yes_gets_nothing_written(isos, tmp_path):
    out = tmp_path / "kept.img"
    out.write_bytes(b"old")
    code, text = _burn_on_a_terminal([str(isos["good"]), str(out)], b"y\n")
    assert code == 1 and "not confirmed; nothing was written" in text
    assert out.read_bytes() == b"old"


# --- full filesystems ----------------------------------------------------------------------


@needs_root
def test_file_target_on_a_too_small_filesystem_is_refused_up_front(isos, tmp_path):
    with tmpfs(tmp_path / "small", "4m") as small:
        proc = xenlive("burn", str(isos["good"]), str(small / "x.img"), "--yes")
        assert proc.returncode == 1 and "not enough space for" in proc.stderr
        assert not (small / "x.img").exists()


@needs_root
def test_filesystem_that_fills_up_during_the_write_fails_with_exit_1(isos, tmp_path):
    with tmpfs(tmp_path / "fs", "12m") as fs:
        out = fs / "x.img"

        def fill_the_disk(phase: str, done: int, total: int) -> None:
            if phase == "write" and done == media.CHUNK:  # another program takes the space
                subprocess.run(["fallocate", "-l", "6M", str(fs / "hog")], check=True)

        with pytest.raises(MediaError, match=r"filesystem holding .* is full: writing failed after"):
            media.burn(isos["good"], str(out), confirm=yes, progress=fill_the_disk)


@needs_root
def test_loop_device_whose_backing_filesystem_is_full_fails_at_flush(isos, tmp_path):
    """Writes to a block device land in the page cache; the error only shows at fsync. It must show."""
    with tmpfs(tmp_path / "fs", "2m") as fs, loop_device(fs / "backing.img", 64 * MiB) as dev:
        proc = xenlive("burn", str(isos["good"]), str(dev), "--yes", "--force")
        assert proc.returncode == 1, proc.stdout
        assert f"error: I/O error while flushing {dev}" in proc.stderr
        assert "done" not in proc.stdout
        assert "hint: the medium holds an incomplete image" in proc.stderr


# --- loop devices --------------------------------------------------------------------------


@needs_root
def test_burn_to_loop_device_with_force_writes_and_verifies(isos, tmp_path):
    size = isos["good"].stat().st_size
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        proc = xenlive("burn", str(isos["good"]), str(dev), "--yes", "--force", "--json")
        assert proc.returncode == 0, proc.stderr
        assert '"verified": true' in proc.stdout and '"kind": "disk"' in proc.stdout
        assert "model       loop device backed by" in proc.stderr and "NOT removable" in proc.stderr
        assert head(dev, size) == isos["good"].read_bytes()


@needs_root
def test_loop_device_is_not_removable_so_it_needs_force(isos, tmp_path):
    with loop_device(tmp_path / "fixed.img", 32 * MiB) as dev:
        proc = xenlive("burn", str(isos["good"]), str(dev), "--yes")
        assert proc.returncode == 1
        assert f"{dev} is not a removable disk (transport virtual, removable flag 0)" in proc.stderr
        assert untouched(dev)


@needs_root
def test_same_loop_device_declared_removable_is_accepted_without_force(isos, tmp_path):
    """The removable branch on a real device: a fake sysfs says this loop device is removable."""
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        rdev = os.stat(dev).st_rdev
        fake = FakeDisk(dev.name, (os.major(rdev), os.minor(rdev)), 32 * MiB, where=VIRTUAL_PATH, removable=True)
        host = fake_host(tmp_path / "fake", [fake])
        result = media.burn(isos["good"], str(dev), confirm=yes, host=host)
        assert result.verified and result.kind is media.TargetKind.DISK
        with pytest.raises(MediaError, match="not a removable disk"):
            media.burn(isos["good"], str(dev), confirm=yes, host=Host())


@needs_root
def test_loop_device_smaller_than_the_image_is_refused(isos, tmp_path):
    with loop_device(tmp_path / "tiny.img", 4 * MiB) as dev:
        proc = xenlive("burn", str(isos["good"]), str(dev), "--yes", "--force")
        assert proc.returncode == 1 and f"{dev} is too small: 4.0 MiB" in proc.stderr
        assert untouched(dev)


@needs_root
def test_loop_device_with_a_mounted_filesystem_is_refused_even_with_force(isos, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    backing = tmp_path / "ext4.img"
    with loop_device(backing, 32 * MiB) as dev:
        subprocess.run(["mkfs.ext4", "-q", str(dev)], check=True, capture_output=True)
        mnt = tmp_path / "mnt"
        mnt.mkdir()
        subprocess.run(["mount", str(dev), str(mnt)], check=True)
        try:
            proc = xenlive("burn", str(isos["good"]), str(dev), "--yes", "--force")
            assert proc.returncode == 1
            assert f"{dev} is mounted on {mnt}; unmount it first" in proc.stderr
            assert untouched(dev)
            # Past every check the kernel is asked too: O_EXCL fails while the filesystem is mounted.
            target = media.resolve_target(str(dev), Host())
            with pytest.raises(MediaError, match="is busy"):
                media._open_for_writing(target, media._Recheck(Host(), 0, force=True))
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_symlink_to_a_device_is_resolved_and_named(isos, tmp_path):
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        link = tmp_path / "usb-Vendor_Stick-0:0"
        link.symlink_to(dev)
        proc = xenlive("burn", str(isos["good"]), str(link), "--yes")  # no --force: still a loop device
        assert proc.returncode == 1
        assert f"{link} is a symlink to {dev}" in proc.stderr
        assert f"refusing to write {link}" in proc.stderr and f"{dev} is not a removable disk" in proc.stderr
        assert untouched(dev)
        proc = xenlive("burn", str(isos["good"]), str(link), "--yes", "--force")
        assert proc.returncode == 0 and f"to {dev} (" in proc.stdout


@needs_root
def test_device_that_goes_away_mid_write_fails_with_exit_1(isos, tmp_path):
    """A pulled stick: the loop device's backing file is emptied and its capacity re-read to 0."""
    backing = tmp_path / "yanked.img"
    with loop_device(backing, 32 * MiB) as dev:

        def pull_the_stick(phase: str, done: int, total: int) -> None:
            if phase == "write" and done == media.CHUNK:
                os.truncate(backing, 0)
                subprocess.run(["losetup", "-c", str(dev)], check=True)

        with pytest.raises(MediaError) as caught:
            media.burn(isos["good"], str(dev), confirm=yes, force=True, progress=pull_the_stick)
    message = caught.value.message
    assert message.startswith(f"{dev} went away while writing after 4.0 MiB of")
    assert "its size changed from 33554432 to 0 bytes" in message
    assert caught.value.exit_code == 1


# --- the device confirmed is the device written --------------------------------------------


@needs_root
@pytest.mark.parametrize(
    "what, new, expected",
    [
        ("diskseq", "8", "its disk sequence number changed from 7 to 8 (another disk or medium is in its place)"),
        ("size", str(64 * MiB // 512), f"its size changed from {32 * MiB} to {64 * MiB} bytes"),
        ("device/model", "Other Stick", "its model changed from 'Cruzer' to 'Other Stick'"),
    ],
)
def test_a_device_that_changes_during_the_prompt_is_not_written(isos, tmp_path, what, new, expected):
    """Another stick took the name while the person read the prompt; sysfs (a fake one) says so."""
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        rdev = os.stat(dev).st_rdev
        fake = FakeDisk(dev.name, (os.major(rdev), os.minor(rdev)), 32 * MiB, where=VIRTUAL_PATH, removable=True,
                        model="Cruzer", diskseq=7)  # fmt: skip
        host = fake_host(tmp_path / "fake", [fake])

        def swap_the_stick(_description: str) -> bool:
            (host.sysfs / "block" / dev.name / what).write_text(f"{new}\n")
            return True

        with pytest.raises(MediaError) as caught:
            media.burn(isos["good"], str(dev), confirm=swap_the_stick, host=host)
        assert caught.value.message.startswith(f"{dev} is not the device that was confirmed")
        assert f"  - {expected}" in caught.value.message.splitlines()
        assert untouched(dev)


@needs_root
def test_another_device_in_place_after_writing_is_not_verified(isos, tmp_path):
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        rdev = os.stat(dev).st_rdev
        fake = FakeDisk(dev.name, (os.major(rdev), os.minor(rdev)), 32 * MiB, where=VIRTUAL_PATH, removable=True,
                        diskseq=7)  # fmt: skip
        host = fake_host(tmp_path / "fake", [fake])

        def swap_after_writing(phase: str, done: int, total: int) -> None:
            if phase == "write" and done == total:
                (host.sysfs / "block" / dev.name / "diskseq").write_text("8\n")

        with pytest.raises(MediaError) as caught:
            media.burn(isos["good"], str(dev), confirm=yes, host=host, progress=swap_after_writing)
    assert caught.value.message == (
        f"verification failed: {dev} is no longer the device that was written: "
        "its disk sequence number changed from 7 to 8 (another disk or medium is in its place)"
    )


@needs_root
def test_a_loop_device_reattached_to_another_file_during_the_prompt_is_not_written(isos, tmp_path):
    """The real kernel: re-attaching gives the same /dev name and major:minor but a new diskseq."""
    other = tmp_path / "other.img"
    other.write_bytes(b"")
    os.truncate(other, 32 * MiB)
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        if not (Path("/sys/block") / dev.name / "diskseq").exists():
            pytest.skip("this kernel has no diskseq (Linux 5.15 and later)")
        reattached: list[bool] = []

        def swap_the_stick(_description: str) -> bool:
            subprocess.run(["losetup", "-d", str(dev)], check=True)
            reattached.append(subprocess.run(["losetup", "--", str(dev), str(other)]).returncode == 0)
            return True

        try:
            with pytest.raises(MediaError) as caught:
                media.burn(isos["good"], str(dev), confirm=swap_the_stick, force=True)
        finally:
            if loop_backing(dev) == str(other):
                subprocess.run(["losetup", "-d", str(dev)], check=True)
        if not reattached[0]:
            pytest.skip(f"another process took {dev} between detaching and attaching it")
    assert "its disk sequence number changed from" in caught.value.message
    assert "its model changed from 'loop device backed by" in caught.value.message
    assert untouched(other) and untouched(tmp_path / "stick.img")


def test_a_file_replaced_during_the_prompt_is_not_written(isos, tmp_path):
    """The name now leads to another file (here a hard link to one that matters): it is left alone."""
    out = tmp_path / "old.img"
    out.write_bytes(b"old")
    precious = tmp_path / "precious"
    precious.write_bytes(b"someone else's")

    def replace_it(_description: str) -> bool:
        os.link(precious, tmp_path / "swap")
        os.replace(tmp_path / "swap", out)
        return True

    with pytest.raises(MediaError, match="was replaced since it was inspected; nothing was written"):
        media.burn(isos["good"], str(out), confirm=replace_it)
    assert precious.read_bytes() == b"someone else's"


# --- what lies below a loop device ---------------------------------------------------------


@needs_root
def test_loop_device_over_a_mounted_loop_device_is_refused_even_with_force(isos, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with loop_device(tmp_path / "ext4.img", 32 * MiB) as inner:
        subprocess.run(["mkfs.ext4", "-q", str(inner)], check=True, capture_output=True)
        subprocess.run(["mount", str(inner), str(mnt)], check=True)
        try:
            with loop_device(inner) as outer:
                proc = xenlive("burn", str(isos["good"]), str(outer), "--yes", "--force")
                assert proc.returncode == 1
                assert f"{inner} (below {outer}) is mounted on {mnt}; unmount it first" in proc.stderr
                assert untouched(outer)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_loop_device_sharing_its_file_with_a_mounted_one_is_refused_even_with_force(isos, tmp_path):
    if shutil.which("mkfs.ext4") is None:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    backing = tmp_path / "shared.img"
    with loop_device(backing, 32 * MiB) as mounted_one:
        subprocess.run(["mkfs.ext4", "-q", str(mounted_one)], check=True, capture_output=True)
        subprocess.run(["mount", str(mounted_one), str(mnt)], check=True)
        try:
            with loop_device(backing) as other:
                proc = xenlive("burn", str(isos["good"]), str(other), "--yes", "--force")
                assert proc.returncode == 1
                assert (
                    f"{mounted_one}, another loop device over the storage of {other}, is mounted on {mnt}"
                ) in proc.stderr
                assert untouched(other)
        finally:
            subprocess.run(["umount", str(mnt)], check=True)


@needs_root
def test_loop_device_over_the_image_itself_is_refused(isos, tmp_path):
    iso = tmp_path / "copy.iso"
    shutil.copyfile(isos["good"], iso)
    before = iso.read_bytes()
    with loop_device(iso) as dev:
        proc = xenlive("burn", str(iso), str(dev), "--yes", "--force")
        assert proc.returncode == 1
        assert f"{dev} is a loop device over {iso}, which is the image itself" in proc.stderr
    assert iso.read_bytes() == before


def test_the_disk_holding_root_is_refused_even_with_force_and_yes(isos):
    roots = sorted(n for n in system_disks(Host()) if Path(f"/dev/{n}").exists() and "-" not in n)
    if not roots:
        pytest.skip("/ is not on a block device here (container overlay?)")
    disk = Path("/dev") / roots[-1]
    proc = xenlive("burn", str(isos["good"]), str(disk), "--yes", "--force")
    assert proc.returncode == 1
    assert f"{disk} holds the running system (/); xenlive never writes to it" in proc.stderr
    assert "done" not in proc.stdout


def test_devices_lists_nothing_that_burn_would_refuse():
    proc = xenlive("devices", "--json")
    assert proc.returncode == 0
    import json

    listed = json.loads(proc.stdout)
    system = system_disks(Host())
    assert all(Path(d["path"]).name not in system for d in listed)
    assert all(not d["path"].startswith("/dev/loop") for d in listed)


# --- the CD/DVD path, through xorriso's stdio: pseudo-drive ---------------------------------


@needs_xorriso
def test_cd_path_writes_verifies_a_stdio_pseudo_drive(isos, tmp_path):
    disc = tmp_path / "disc.img"
    proc = xenlive("burn", str(isos["good"]), f"stdio:{disc}", "--yes", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"kind": "optical"' in proc.stdout and '"verified": true' in proc.stdout
    assert "is blank" in proc.stderr  # xorriso's media report was read before writing
    size = isos["good"].stat().st_size
    assert head(disc, size) == isos["good"].read_bytes()
    # A second burn rewrites the "disc" from block 0, as a DVD+RW is rewritten.
    other = make_iso(tmp_path / "other", payload=os.urandom(MiB))
    result = media.burn(other, f"stdio:{disc}", confirm=yes)
    assert result.verified and head(disc, other.stat().st_size) == other.read_bytes()


@needs_root
@needs_xorriso
def test_cd_path_refuses_a_medium_too_small_for_the_image(isos, tmp_path):
    with tmpfs(tmp_path / "small", "4m") as small:
        proc = xenlive("burn", str(isos["good"]), f"stdio:{small / 'disc.img'}", "--yes")
        assert proc.returncode == 1
        assert f"the medium in stdio:{small / 'disc.img'} is too small: 4.0 MiB free" in proc.stderr
        assert "(status: is blank)" in proc.stderr
        assert not (small / "disc.img").exists()


@needs_xorriso
def test_cd_path_reads_the_medium_report_from_xorriso(tmp_path):
    target = media.resolve_target(f"stdio:{tmp_path / 'disc.img'}", Host())
    medium = media.read_optical_media(target.drive)
    assert medium.status == "is blank" and medium.current == "stdio file, overwriteable"
    fs = os.statvfs(tmp_path)  # free space moves while other programs write: bound by the size
    assert 0 < medium.capacity <= fs.f_blocks * fs.f_frsize
    assert not (tmp_path / "disc.img").exists()  # asking does not create the file


@needs_root
def test_stdio_target_must_be_a_file_not_a_device(isos, tmp_path):
    with loop_device(tmp_path / "stick.img", 32 * MiB) as dev:
        proc = xenlive("burn", str(isos["good"]), f"stdio:{dev}", "--yes", "--force")
        assert proc.returncode == 2 and "stdio: is for image files" in proc.stderr
        assert untouched(dev)


def test_resolve_target_tells_the_kinds_apart(tmp_path):
    assert media.resolve_target(str(tmp_path / "new.img"), Host()).kind is media.TargetKind.FILE
    target = media.resolve_target(f"stdio:{tmp_path / 'cd.img'}", Host())
    assert target.kind is media.TargetKind.OPTICAL and target.drive == f"stdio:{tmp_path / 'cd.img'}"
    with pytest.raises(UsageError, match="no such device"):
        media.resolve_target("/dev/sdzz9", Host())
