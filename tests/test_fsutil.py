from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from builder import fsutil, mounts

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounts need root")


@contextmanager
def mounted(*args: str | Path) -> Iterator[None]:
    """mount ARGS...; unmounted (lazily, so a failed test cannot leave it behind) whatever happens."""
    subprocess.run(["mount", *map(str, args)], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["umount", "--lazy", "--", str(args[-1])], capture_output=True)


def still_mounted(point: Path) -> bool:
    return any(Path(m.mountpoint) == point for m in mounts.read())


def no_umount(cmd: list[object], **_kwargs: object) -> subprocess.CompletedProcess[str]:
    """Stands in for the umount command when it fails (busy, or not permitted)."""
    assert cmd[:3] == ["umount", "--lazy", "--"], cmd
    return subprocess.CompletedProcess([str(c) for c in cmd], 32, "", "umount: target is busy")


def test_mountinfo_escapes_are_undone_on_bytes_and_nothing_else():
    line = (
        rb"90 80 0:50 / /srv/a\040b\011c\012d\134e ro - proc proc ro" + b"\n"
        + "91 80 0:51 / /home/josé/tree/proc rw - tmpfs t rw\n".encode()
        + b"92 80 0:52 / /raw/\xe9t\xe9 rw - tmpfs t rw\n"
        + rb"93 80 0:53 / /lit/\134040\101 rw shared:1 - ext4 /dev/my\040disk rw" + b"\n"
        + b"garbage line\n94 80 x:y / /bad rw - ext4 /dev/sda rw\n"
    )  # fmt: skip
    found = mounts.parse(line)
    assert [m.mountpoint for m in found] == [
        "/srv/a b\tc\nd\\e",
        "/home/josé/tree/proc",
        os.fsdecode(b"/raw/\xe9t\xe9"),  # not UTF-8: kept byte for byte
        "/lit/\\040\\101",  # \134040 is a backslash then "040"; \101 is no escape the kernel writes
    ]
    assert os.fsencode(found[2].mountpoint) == b"/raw/\xe9t\xe9"
    assert (found[3].devnum, found[3].fstype, found[3].source) == ((0, 53), "ext4", "/dev/my disk")


def test_mounts_below_reads_mountinfo(tmp_path):
    info = tmp_path / "mountinfo"
    root = tmp_path / "josé"
    info.write_bytes(
        (
            "22 1 0:21 / /proc rw - proc proc rw\n"
            f"90 80 0:50 / {root}/tree/proc ro - proc proc ro\n"
            f"91 80 0:51 / {root}/tree/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
            f"92 80 0:52 / {root}/treehouse rw - tmpfs t rw\n"
            f"93 80 0:53 / {root}/tree/my\\040dir rw - tmpfs t rw\n"
        ).encode()
    )
    points = fsutil.mounts_below(root / "tree", info)
    assert points == [root / "tree/proc/sys/fs/binfmt_misc", root / "tree/proc", root / "tree/my dir"]


@needs_root
def test_remove_tree_unmounts_a_bind_mount_below_a_non_ascii_directory(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    top = tmp_path / "josé"
    tree = top / "tree with space"
    (tree / "proc").mkdir(parents=True)
    (tree / "file").write_text("x")
    with mounted("--bind", precious, tree / "proc"):
        fsutil.remove_tree(top)
        assert not still_mounted(tree / "proc")
    assert not top.exists()
    assert (precious / "data").read_text() == "keep me"


@needs_root
def test_a_bind_mount_that_cannot_be_unmounted_is_kept_and_the_rest_deleted(tmp_path, monkeypatch, caplog):
    """Same file system, so the same st_dev: only the mount table tells the bind mount apart."""
    monkeypatch.setattr(fsutil, "run", no_umount)
    precious = tmp_path / "precious"
    (precious / "sub").mkdir(parents=True)
    (precious / "sub" / "data").write_text("keep me")
    top = tmp_path / "josé"
    tree = top / "tree"
    (tree / "proc").mkdir(parents=True)
    (tree / "other" / "deep").mkdir(parents=True)
    (tree / "file").write_text("x")
    with mounted("--bind", precious, tree / "proc"):
        assert os.stat(tree / "proc").st_dev == os.stat(top).st_dev
        fsutil.remove_tree(top)
        assert (tree / "proc" / "sub" / "data").read_text() == "keep me"
        left = sorted(p.relative_to(top).as_posix() for p in top.rglob("*") if tree / "proc" not in p.parents)
        assert left == ["tree", "tree/proc"]
    assert (precious / "sub" / "data").read_text() == "keep me"
    assert f"left in place what is still mounted or could not be deleted: {tree / 'proc'}" in caplog.text
    fsutil.remove_tree(top)  # unmounted now: the leftovers go
    assert not top.exists()


@needs_root
def test_a_mount_the_table_does_not_show_is_kept_by_st_dev(tmp_path, monkeypatch):
    monkeypatch.setattr(fsutil, "run", no_umount)
    empty = tmp_path / "mountinfo"
    empty.write_bytes(b"")
    tree = tmp_path / "josé" / "tree"
    (tree / "mnt").mkdir(parents=True)
    (tree / "a").write_text("x")
    with mounted("-t", "tmpfs", "-o", "size=1m", "tmpfs", tree / "mnt"):
        (tree / "mnt" / "data").write_text("keep me")
        fsutil.remove_tree(tree, mountinfo=empty)
        assert (tree / "mnt" / "data").read_text() == "keep me"
        assert not (tree / "a").exists()


def test_remove_tree_handles_deep_trees_symlinks_and_files(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data").write_text("keep me")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "link").symlink_to(outside)  # a symlink is removed, never followed
    fd = os.open(tree, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):  # deeper than Python's recursion limit
        os.mkdir("d", dir_fd=fd)
        below = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = below
    os.close(fd)
    fsutil.remove_tree(tree)
    assert not tree.exists() and (outside / "data").read_text() == "keep me"
    (tmp_path / "file").write_text("x")
    fsutil.remove_tree(tmp_path / "file")
    fsutil.remove_tree(tmp_path / "missing")
    assert not (tmp_path / "file").exists()


def test_tree_size_and_sha256(tmp_path):
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b").write_bytes(b"123")
    (tmp_path / "link").symlink_to("a")
    assert fsutil.tree_size(tmp_path) == 8
    assert fsutil.sha256_file(tmp_path / "a") == "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
