from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from builder import cpio
from builder.context import BuildContext
from builder.errors import XenliveError
from builder.profile import load_profile
from builder.stages.guests import build_guests, busybox_initrd, xl_config


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (tree / "bin").mkdir()
    (tree / "bin/busybox").write_bytes(b"\x7fELF busybox")
    c = BuildContext(profile=load_profile(None), output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path)
    c.rootfs = tree
    return c


def test_xl_config_golden(ctx, golden):
    golden("default/tiny.cfg", xl_config(ctx, ctx.profile.guests[0]))


def test_build_guests_puts_files_on_medium_and_autostarts(ctx):
    build_guests(ctx)
    medium = ctx.staging / "guests/tiny"
    assert (medium / "vmlinuz").read_bytes() == b"kernel"
    archive = gzip.decompress((medium / "initrd.img").read_bytes())
    assert b"\x7fELF busybox" in archive and b"XENLIVE-GUEST-READY tiny" in archive
    assert (ctx.top / "etc/xen/guests/tiny.cfg").is_file()
    assert os.readlink(ctx.top / "etc/xen/auto/tiny.cfg") == "../guests/tiny.cfg"


def test_busybox_initrd_has_console_and_init(ctx):
    entries = {e.path: e for e in busybox_initrd(ctx.require_rootfs(), ctx.profile.guests[0])}
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["init"].mode & 0o111
    assert entries["init"].data.startswith(b"#!/bin/busybox sh")
    assert isinstance(entries["bin/sh"], cpio.Entry)


def test_missing_busybox_is_a_clear_error(ctx):
    (ctx.require_rootfs() / "bin/busybox").unlink()
    with pytest.raises(XenliveError, match="no /bin/busybox for guest 'tiny'"):
        build_guests(ctx)
