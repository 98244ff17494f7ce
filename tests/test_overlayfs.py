from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from builder import overlayfs
from builder.errors import UsageError, XenliveError
from builder.introspect import dpkg_status
from builder.stages.customize import dom0_path


def can_mount_overlay(tmp: Path) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    top, lower, target = tmp / "probe-top", tmp / "probe-lower", tmp / "probe-target"
    for directory in (top, lower, target):
        directory.mkdir()
    proc = subprocess.run(overlayfs.mount_command(overlayfs.options([top, lower]), target), capture_output=True)
    if proc.returncode != 0:
        return False
    subprocess.run(["umount", str(target)], check=True)
    return True


@pytest.fixture
def mountable(tmp_path: Path) -> Path:
    if not can_mount_overlay(tmp_path):
        pytest.skip("needs root and overlayfs mounts")
    return tmp_path


def test_options_name_lowers_top_first_and_are_read_only_without_upper(tmp_path):
    opts = overlayfs.options([tmp_path / "layer", tmp_path / "base"])
    assert opts.split(",")[:2] == ["ro", f"lowerdir={tmp_path}/layer:{tmp_path}/base"]
    assert {"redirect_dir=nofollow", "index=off", "metacopy=off"} <= set(opts.split(","))
    assert "userxattr" not in opts
    rw = overlayfs.options([tmp_path / "base"], tmp_path / "u", tmp_path / "w", user_xattr=True)
    parts = rw.split(",")
    assert "ro" not in parts and f"upperdir={tmp_path}/u" in parts and f"workdir={tmp_path}/w" in parts
    assert parts[-1] == "userxattr"


@pytest.mark.parametrize("bad", ["a,b", "a:b", "a\\b"])
def test_a_path_the_option_syntax_would_split_is_refused_naming_it(tmp_path, bad):
    with pytest.raises(UsageError) as info:
        overlayfs.options([tmp_path / bad])
    assert str(tmp_path / bad) in info.value.message and "XENLIVE_CACHE_DIR" in (info.value.hint or "")


def test_mount_command_ends_options_before_the_paths(tmp_path):
    cmd = overlayfs.mount_command("ro,lowerdir=/x", tmp_path / "-t")
    assert cmd[cmd.index("--") + 1 :] == ["overlay", str(tmp_path / "-t")]


def test_userxattr_in_a_user_namespace_only(monkeypatch):
    monkeypatch.setattr(overlayfs, "in_initial_namespace", lambda: True)
    assert not overlayfs.userxattr()
    monkeypatch.setattr(overlayfs, "in_initial_namespace", lambda: False)
    assert overlayfs.userxattr()


@pytest.mark.skipif(os.geteuid() != 0, reason="whiteouts are device nodes: mknod needs root")
def test_standalone_turns_an_opaque_directory_into_whiteouts_and_drops_overlay_xattrs(tmp_path):
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    (lower / "etc/conf.d").mkdir(parents=True)
    for name in ("old", "kept-in-upper", "also-old"):
        (lower / "etc/conf.d" / name).write_text("lower\n")
    (upper / "etc/conf.d").mkdir(parents=True)
    (upper / "etc/conf.d/kept-in-upper").write_text("upper\n")
    (upper / "etc/conf.d/new").write_text("upper\n")
    os.setxattr(upper / "etc/conf.d", "user.overlay.opaque", b"y")
    os.setxattr(upper / "etc/conf.d/new", "user.overlay.origin", b"\x00")
    os.setxattr(upper / "etc/conf.d/new", "user.keep", b"mine")
    (upper / "etc/plain").mkdir()

    assert overlayfs.standalone(upper, lower) == ["etc/conf.d"]

    entries = {p.name: os.lstat(p) for p in (upper / "etc/conf.d").iterdir()}
    assert {n for n, st in entries.items() if overlayfs.is_whiteout(st)} == {"old", "also-old"}
    assert stat.S_ISREG(entries["kept-in-upper"].st_mode) and stat.S_ISREG(entries["new"].st_mode)
    assert os.listxattr(upper / "etc/conf.d") == []
    assert os.listxattr(upper / "etc/conf.d/new") == ["user.keep"]  # only overlayfs's own go
    assert list((upper / "etc/plain").iterdir()) == []  # not opaque: nothing added


def test_merged_view_resolves_through_both_layers_and_never_writes_them(mountable):
    """What the later stages read: the layer over the base, whiteouts honoured, writes kept apart."""
    base, layer = mountable / "base", mountable / "layer"
    (base / "usr/lib").mkdir(parents=True)
    (base / "etc").mkdir()
    (base / "lib").symlink_to("usr/lib")
    (base / "etc/gone").write_text("base\n")
    (base / "etc/shared").write_text("base\n")
    (base / "var/lib/dpkg").mkdir(parents=True)
    (base / "var/lib/dpkg/status").write_text("Package: libc6\nStatus: install ok installed\nVersion: 2.36\n")
    (layer / "etc").mkdir(parents=True)
    (layer / "etc/shared").write_text("layer\n")
    overlayfs.whiteout(layer / "etc/gone")
    (layer / "opt").mkdir()
    (layer / "opt/tool").symlink_to("/usr/lib/tool")  # a link only the layer has
    (layer / "var/lib/dpkg").mkdir(parents=True)
    tree = "\nPackage: tree\nStatus: install ok installed\nVersion: 2.1\n"
    status = (base / "var/lib/dpkg/status").read_text() + tree
    (layer / "var/lib/dpkg/status").write_text(status)
    before = sorted(str(p) for p in [*base.rglob("*"), *layer.rglob("*")])

    with overlayfs.merged_view([layer, base], mountable / "scratch", "a test view") as view:
        assert (view / "etc/shared").read_text() == "layer\n"
        assert not (view / "etc/gone").exists()
        assert dpkg_status(view) == {"libc6": "2.36", "tree": "2.1"}
        top = mountable / "top"
        assert dom0_path(top, view, "opt/tool/conf", follow_last=False) == top / "usr/lib/tool/conf"
        assert dom0_path(top, view, "lib/x") == top / "usr/lib/x"
        (view / "tmp").mkdir()
        (view / "tmp/scratch").write_text("written in the view\n")
    assert not (mountable / "scratch/merged/etc").exists()  # unmounted
    assert (mountable / "scratch/upper/tmp/scratch").is_file()
    assert sorted(str(p) for p in [*base.rglob("*"), *layer.rglob("*")]) == before


def test_a_failed_mount_is_an_error_that_says_what_and_why(tmp_path, monkeypatch):
    from builder.errors import CommandError

    def refuse(cmd, **kwargs):
        raise CommandError(cmd, 32, "mount: wrong fs type, bad option")

    monkeypatch.setattr(overlayfs, "run", refuse)
    with pytest.raises(XenliveError) as info:
        with overlayfs.merged_view([tmp_path / "base"], tmp_path / "s", "dom0's base and package layer"):
            pass
    assert "cannot mount dom0's base and package layer at" in info.value.message
    assert "wrong fs type" in info.value.message and "overlayfs" in (info.value.hint or "")
