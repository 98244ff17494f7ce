from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

import pytest

from builder import cache


def make_files(calls: list[int]):
    def make(tmp: Path) -> list[str]:
        calls.append(1)
        (tmp / "data").write_bytes(b"x" * 1000)
        (tmp / "other").write_text("unsealed")
        return ["data"]

    return make


def test_obtain_makes_once_then_reuses(tmp_path):
    calls: list[int] = []
    entry, cached = cache.obtain(tmp_path, "rootfs", "k1", make_files(calls))
    assert not cached and (entry / "data").stat().st_size == 1000
    again, cached = cache.obtain(tmp_path, "rootfs", "k1", make_files(calls))
    assert cached and again == entry and len(calls) == 1


def test_damaged_entry_is_detected_and_rebuilt(tmp_path, caplog):
    calls: list[int] = []
    entry, _ = cache.obtain(tmp_path, "rootfs", "k1", make_files(calls))
    with (entry / "data").open("r+b") as f:
        f.seek(10)
        f.write(b"y")  # same size, other content
    _, cached = cache.obtain(tmp_path, "rootfs", "k1", make_files(calls))
    assert not cached and len(calls) == 2
    assert "data changed since it was made" in caplog.text
    (entry / "data").write_bytes(b"short")
    _, cached = cache.obtain(tmp_path, "rootfs", "k1", make_files(calls))
    assert not cached and len(calls) == 3


def test_failed_make_leaves_no_entry_and_no_temporary(tmp_path):
    def boom(tmp: Path) -> list[str]:
        (tmp / "half").write_text("partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        cache.obtain(tmp_path, "rootfs", "k1", boom)
    assert [p.name for p in (tmp_path / "rootfs").iterdir()] == [".k1.lock"]


def _slow_obtain(cache_dir: str, counter: str) -> None:
    def make(tmp: Path) -> list[str]:
        with open(counter, "a") as f:
            f.write("made\n")
        time.sleep(1.0)
        (tmp / "data").write_text("x")
        return ["data"]

    cache.obtain(Path(cache_dir), "rootfs", "same", make)


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
    cache.obtain(tmp_path, "rootfs", "k1", make_files([]))
    (found,) = cache.entries(tmp_path)
    assert (found.kind, found.key, found.complete) == ("rootfs", "k1", True)
    assert found.size >= 1000
    assert cache.remove(tmp_path, found)
    assert cache.entries(tmp_path) == []


def test_stale_work_directories_are_cleaned(tmp_path):
    dead = tmp_path / "work" / "build-999999999-abc"
    alive = tmp_path / "work" / f"build-{os.getpid()}-def"
    dead.mkdir(parents=True)
    alive.mkdir()
    cache.clean_stale_workdirs(tmp_path)
    assert not dead.exists() and alive.exists()


def test_cache_cli_ls_prune_clear(tmp_path, monkeypatch):
    import json

    from click.testing import CliRunner

    from builder.cli import cli

    monkeypatch.setenv("XENLIVE_CACHE_DIR", str(tmp_path))
    cache.obtain(tmp_path, "rootfs", "k1", make_files([]))
    (tmp_path / "rootfs" / ".k2.tmp-1").mkdir()  # left by an interrupted build
    runner = CliRunner()
    listed = json.loads(runner.invoke(cli, ["cache", "ls", "--json"]).output)
    assert {(e["key"], e["complete"]) for e in listed} == {("k1", True), (".k2.tmp-1", False)}
    result = runner.invoke(cli, ["cache", "prune"])
    assert result.exit_code == 0
    assert [e.key for e in cache.entries(tmp_path)] == ["k1"]
    assert runner.invoke(cli, ["cache", "clear"]).exit_code == 0
    assert cache.entries(tmp_path) == []
