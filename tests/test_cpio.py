from __future__ import annotations

import gzip
import shutil
import subprocess

import pytest

from builder import cpio


def test_archive_lists_with_cpio_tool(tmp_path):
    if shutil.which("cpio") is None:
        pytest.skip("cpio(1) not installed")
    entries = [
        cpio.directory("bin"),
        cpio.regular("bin/hello", b"#!/bin/sh\necho hi\n", 0o755),
        cpio.symlink("bin/sh", "hello"),
        cpio.chardev("console", 5, 1),
    ]
    path = tmp_path / "initrd.img"
    cpio.write_gzip(entries, path)
    listing = subprocess.run(
        ["cpio", "-itv"], input=gzip.decompress(path.read_bytes()), capture_output=True, check=True
    ).stdout.decode()
    lines = listing.splitlines()
    assert lines[0].startswith("drwxr-xr-x") and lines[0].endswith("bin")
    assert lines[1].startswith("-rwxr-xr-x") and "bin/hello" in lines[1]
    assert lines[2].startswith("lrwxrwxrwx") and lines[2].endswith("bin/sh -> hello")
    assert lines[3].startswith("crw-------") and "5,   1" in lines[3]


def test_archive_is_reproducible_and_aligned():
    entries = [cpio.regular("a", b"123"), cpio.regular("bb", b"")]
    data = cpio.archive(entries)
    assert data == cpio.archive(entries)
    assert len(data) % 4 == 0
    assert data.startswith(b"070701") and b"TRAILER!!!\0" in data
