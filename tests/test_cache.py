from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

from builder import cache
from builder.cli import cli


def make_files(calls: list[int]) -> Callable[[Path], list[str]]:
    def make(tmp: Path) -> list[str]:
        calls.append(1)
        (tmp / "data").write_bytes(b"x" * 1000)
        (tmp / "other").write_text("unsealed")
        return ["data"]

    return make


def obtain(cache_dir: Path, key: str, make: Callable[[Path], list[str]]) -> tuple[Path, bool]:
    """Use an entry and let it go at once, as a build that ended would."""
    with cache.use(cache_dir, "rootfs", key, make) as (entry, cached):
        return entry, cached


def test_use_makes_once_then_reuses(tmp_path):
    calls: list[int] = []
    entry, cached = obtain(tmp_path, "k1", make_files(calls))
    assert not cached and (entry / "data").stat().st_size == 1000
    again, cached = obtain(tmp_path, "k1", make_files(calls))
    assert cached and again == entry and len(calls) == 1


def test_damaged_entry_is_detected_and_rebuilt(tmp_path, caplog):
    calls: list[int] = []
    entry, _ = obtain(tmp_path, "k1", make_files(calls))
    with (entry / "data").open("r+b") as f:
        f.seek(10)
        f.write(b"y")  # same size, other content
    _, cached = obtain(tmp_path, "k1", make_files(calls))
    assert not cached and len(calls) == 2
    assert "data changed since it was made" in caplog.text
    (entry / "data").write_bytes(b"short")
    _, cached = obtain(tmp_path, "k1", make_files(calls))
    assert not cached and len(calls) == 3


def test_failed_make_leaves_no_entry_and_no_temporary(tmp_path):
    def boom(tmp: Path) -> list[str]:
        (tmp / "half").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        obtain(tmp_path, "k1", boom)
    assert sorted(p.name for p in (tmp_path / "rootfs").iterdir()) == [".k1.lock", ".k1.use"]


def _slow_obtain(cache_dir: str, counter: str) -> None:
    def make(tmp: Path) -> list[str]:
        with open(counter, "a") as f:
            f.write("made\n")
        time.sleep(1.0)
        (tmp / "data").write_text("x")
        return ["data"]

    obtain(Path(cache_dir), "same", make)


def test_concurrent_builds_of_one_key_make_it_once(tmp_path):
    counter = tmp_path / "counter"
    procs = [multiprocessing.Process(target=_slow_obtain, args=(str(tmp_path / "c"), str(counter))) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert all(p.exitcode == 0 for p in procs)
    assert counter.read_text() == "made\n"


def test_entries_and_remove(tmp_path):
    obtain(tmp_path, "k1", make_files([]))
    (found,) = cache.entries(tmp_path)
    assert (found.kind, found.key, found.complete) == ("rootfs", "k1", True)
    assert found.size >= 1000
    assert cache.remove(tmp_path, found)
    assert cache.entries(tmp_path) == []


# --- builds in progress: another process holds the locks --------------------------------------


def _use_until_released(cache_dir: str, key: str, held: object, release: object) -> None:
    """A build: uses an entry (making it if needed) until told to stop."""
    with cache.use(Path(cache_dir), "rootfs", key, make_files([])):
        held.set()  # type: ignore[attr-defined]
        release.wait(30)  # type: ignore[attr-defined]


@contextmanager
def build_using(cache_dir: Path, key: str) -> Iterator[Callable[[], None]]:
    """A running build in another process that uses entry `key`; call the yielded function to end it."""
    held, release = multiprocessing.Event(), multiprocessing.Event()
    proc = multiprocessing.Process(target=_use_until_released, args=(str(cache_dir), key, held, release))
    proc.start()
    try:
        assert held.wait(30), "the build did not start"
        yield release.set
    finally:
        release.set()
        proc.join(30)
    assert proc.exitcode == 0


def test_clear_and_prune_skip_an_entry_a_build_is_using(tmp_path, monkeypatch):
    monkeypatch.setenv("XENLIVE_CACHE_DIR", str(tmp_path))
    runner = CliRunner()
    obtain(tmp_path, "idle", make_files([]))
    with build_using(tmp_path, "busy") as end_build:
        os.utime(tmp_path / "rootfs" / "busy" / cache.SEAL, (0, 0))  # unused for decades, yet in use
        result = runner.invoke(cli, ["cache", "prune"])
        assert result.exit_code == 0
        assert "rootfs/busy: in use by a running build, kept" in result.output
        assert (tmp_path / "rootfs" / "busy" / "data").exists()
        result = runner.invoke(cli, ["cache", "clear"])
        assert result.exit_code == 0 and "rootfs/busy: in use by a running build, kept" in result.output
        assert [e.key for e in cache.entries(tmp_path)] == ["busy"]  # the idle one went
        end_build()
    assert runner.invoke(cli, ["cache", "clear"]).exit_code == 0
    assert cache.entries(tmp_path) == []


def test_a_damaged_entry_is_replaced_only_once_no_build_uses_it(tmp_path):
    entry, _ = obtain(tmp_path, "k1", make_files([]))
    seen: list[bytes] = []
    with build_using(tmp_path, "k1") as end_build:
        (entry / "data").write_bytes(b"damaged")

        def end_later() -> None:
            time.sleep(0.5)
            seen.append((entry / "data").read_bytes())  # what the running build still sees
            end_build()

        ender = threading.Thread(target=end_later)
        ender.start()
        _, cached = obtain(tmp_path, "k1", make_files([]))
        ender.join()
    assert seen == [b"damaged"]  # not replaced under the build that used it...
    assert not cached and (entry / "data").read_bytes() == b"x" * 1000  # ...but right after it ended


def _make_forever(cache_dir: str, started: object) -> None:
    def make(tmp: Path) -> list[str]:
        started.set()  # type: ignore[attr-defined]
        time.sleep(60)
        return []

    obtain(Path(cache_dir), "k2", make)


def test_temporaries_are_swept_under_the_entry_lock(tmp_path, monkeypatch):
    kind = tmp_path / "rootfs"
    kind.mkdir()
    (kind / ".k1.tmp-4242").mkdir()  # left by a build killed with SIGKILL, in whatever PID namespace
    (kind / ".k1.tmp-4242" / "big").write_bytes(b"x" * 1000)
    (kind / ".k3.tmp-1").mkdir()
    obtain(tmp_path, "k1", make_files([]))
    assert not (kind / ".k1.tmp-4242").exists()  # swept by the next build of its key
    assert (kind / ".k3.tmp-1").exists()  # another key's: only its own make lock may tell
    started = multiprocessing.Event()
    maker = multiprocessing.Process(target=_make_forever, args=(str(tmp_path), started))
    maker.start()
    try:
        assert started.wait(30)
        (live,) = kind.glob(".k2.tmp-*")
        monkeypatch.setenv("XENLIVE_CACHE_DIR", str(tmp_path))
        result = CliRunner().invoke(cli, ["cache", "prune"])
        assert f"rootfs/{live.name}: in use by a running build, kept" in result.output
        assert live.exists() and not (kind / ".k3.tmp-1").exists()
    finally:
        maker.kill()
        maker.join(30)
    assert live.exists()  # SIGKILL: nothing cleaned up, and the lock is free now
    assert CliRunner().invoke(cli, ["cache", "prune"]).exit_code == 0
    assert not live.exists()


# --- work directories ---------------------------------------------------------------------


def test_workspace_is_locked_while_in_use_and_removed_after(tmp_path):
    with cache.workspace(tmp_path) as work:
        (work / "file").write_text("x")
        fd = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        with cache.workspace(tmp_path) as second:  # a second build beside it sweeps nothing alive
            assert work.exists() and second != work
    assert not work.exists() and list((tmp_path / cache.WORK).iterdir()) == []


def test_stale_work_directories_are_told_by_their_lock_not_a_pid(tmp_path, monkeypatch):
    work = tmp_path / cache.WORK
    dead = work / "build-1-abc"  # PID 1 is alive, yet no build holds this directory
    dead.mkdir(parents=True)
    (dead / "junk").write_text("x")
    alive = work / "build-999999999-def"  # no such PID here, but its build runs (another PID namespace?)
    alive.mkdir()
    holder = lock_holder(["flock", "--close", "--", str(alive), "sleep", "60"])
    try:
        _wait_until_locked(alive)
        monkeypatch.setenv("XENLIVE_CACHE_DIR", str(tmp_path))
        listed = json.loads(CliRunner().invoke(cli, ["cache", "ls", "--json"]).output)
        assert {(e["kind"], e["key"]) for e in listed} == {("work", "build-1-abc"), ("work", "build-999999999-def")}
        result = CliRunner().invoke(cli, ["cache", "prune"])
        assert "work/build-999999999-def: in use by a running build, kept" in result.output
        assert not dead.exists() and alive.exists()
        dead.mkdir()
        with cache.workspace(tmp_path):
            assert not dead.exists() and alive.exists()
    finally:
        end(holder)
    with cache.workspace(tmp_path):
        assert not alive.exists()


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0, reason="needs unshare and root")
def test_a_build_in_another_pid_namespace_keeps_its_work_directory(tmp_path):
    alive = tmp_path / cache.WORK / "build-1-xyz"  # PID 1 of its own namespace
    alive.mkdir(parents=True)
    holder = lock_holder(["unshare", "--pid", "--fork", "--", "flock", "--close", "--", str(alive), "sleep", "60"])
    try:
        _wait_until_locked(alive)
        with cache.workspace(tmp_path):
            assert alive.exists()
    finally:
        end(holder)


def lock_holder(cmd: list[str]) -> subprocess.Popen[bytes]:
    """Another program holding a lock, in a process group of its own so that it can be ended whole."""
    return subprocess.Popen(cmd, start_new_session=True)


def end(proc: subprocess.Popen[bytes]) -> None:
    os.killpg(proc.pid, 9)
    proc.wait()


def _wait_until_locked(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(300):
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            fcntl.flock(fd, fcntl.LOCK_UN)
            time.sleep(0.05)
    finally:
        os.close(fd)
    raise AssertionError(f"nobody locked {directory}")


def test_cache_cli_ls_prune_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("XENLIVE_CACHE_DIR", str(tmp_path))
    obtain(tmp_path, "k1", make_files([]))
    (tmp_path / "rootfs" / ".k2.tmp-1").mkdir()  # left by an interrupted build
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["cache", "ls", "--json"]).output)
    assert {(e["key"], e["complete"]) for e in listed} == {("k1", True), (".k2.tmp-1", False)}
    result = runner.invoke(cli, ["cache", "prune"])
    assert result.exit_code == 0
    assert [e.key for e in cache.entries(tmp_path)] == ["k1"]
    assert runner.invoke(cli, ["cache", "clear"]).exit_code == 0
    assert cache.entries(tmp_path) == []


def test_shared_dir_is_a_sealed_entry_written_by_one_build_at_a_time(tmp_path):
    with cache.shared_dir(tmp_path, "apt", "k1") as entry:
        (entry / "lists").mkdir()
        (entry / "lists/Packages").write_text("kept\n")
        write_lock = os.open(tmp_path / "apt/.k1.write", os.O_RDWR)
        try:
            assert not cache._try(write_lock, fcntl.LOCK_EX)  # another writer would wait
        finally:
            os.close(write_lock)
        assert not cache.remove(tmp_path, next(e for e in cache.entries(tmp_path) if e.kind == "apt"))  # in use
    with cache.shared_dir(tmp_path, "apt", "k1") as again:
        assert again == entry and (again / "lists/Packages").read_text() == "kept\n"  # not made anew
    (found,) = [e for e in cache.entries(tmp_path) if e.kind == "apt"]
    assert found.complete
    assert cache.remove(tmp_path, found) and not entry.exists()  # clear and prune may take it when unused
