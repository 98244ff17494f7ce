from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import fsutil


def test_mounts_below_reads_mountinfo(monkeypatch, tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        f"90 80 0:50 / {tmp_path}/tree/proc ro - proc proc ro\n"
        f"91 80 0:51 / {tmp_path}/tree/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
        f"92 80 0:52 / {tmp_path}/treehouse rw - tmpfs t rw\n"
    )
    real_path = Path

    def fake_path(arg, *rest):  # type: ignore[no-untyped-def]
        return info if arg == "/proc/self/mountinfo" else real_path(arg, *rest)

    monkeypatch.setattr(fsutil, "Path", fake_path)
    points = fsutil.mounts_below(tmp_path / "tree")
    assert points == [tmp_path / "tree/proc/sys/fs/binfmt_misc", tmp_path / "tree/proc"]


@pytest.mark.skipif(os.geteuid() != 0, reason="bind mounts need root")
def test_remove_tree_never_deletes_through_a_mount(tmp_path):
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "data").write_text("keep me")
    tree = tmp_path / "tree"
    (tree / "proc").mkdir(parents=True)
    (tree / "file").write_text("x")
    subprocess.run(["mount", "--bind", str(precious), str(tree / "proc")], check=True)
    try:
        fsutil.remove_tree(tree)
    finally:
        subprocess.run(["umount", str(tree / "proc")], capture_output=True)
    assert not tree.exists()
    assert (precious / "data").read_text() == "keep me"


def test_tree_size_and_sha256(tmp_path):
    (tmp_path / "a").write_bytes(b"12345")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub/b").write_bytes(b"123")
    (tmp_path / "link").symlink_to("a")
    assert fsutil.tree_size(tmp_path) == 8
    assert fsutil.sha256_file(tmp_path / "a") == "5994471abb01112afcc18159f6cc74b4f511b99806da59b3caf5a9c173cacfc5"
