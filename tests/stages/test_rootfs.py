from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder import mmdebstrap
from builder.context import BuildContext
from builder.profile import load_profile
from builder.stages import rootfs


def test_squashfs_command_never_reads_pseudo_file_systems(tmp_path):
    cmd = rootfs.squashfs_command(tmp_path / "tree", tmp_path / "out", rootfs.SQUASHFS_EXCLUDES)
    assert cmd[cmd.index("-wildcards") + 1] == "-e"
    assert "proc/*" in cmd and "sys/*" in cmd
    assert cmd[:2] == ["mksquashfs", str(tmp_path / "tree")]


# --- dom0's initramfs, made once from the finished tree (templates/mmdebstrap/initramfs-*.j2) -------

FAKE_CHROOT = """#!/bin/sh
# chroot ROOT COMMAND...: records the command; the fake dpkg-divert moves the file as dpkg would.
root=$1; shift
echo "$*" >> "$root/chroot.log"
real=$root/usr/sbin/update-initramfs
case "$1 $*" in
    "dpkg-divert "*" --add "*) [ -e "$real" ] && mv "$real" "$real.xenlive" ;;
    "dpkg-divert "*" --remove "*) mv "$real.xenlive" "$real" ;;
esac
exit 0
"""


def hook_body(option: str, kind: str) -> str:
    prefix = f"--{kind}-hook="
    assert option.startswith(prefix), option
    return option.removeprefix(prefix)


def run_hook(body: str, tree: Path, bin_dir: Path) -> subprocess.CompletedProcess[str]:
    """As mmdebstrap runs a hook: `sh -c BODY exec ROOT`, with the fake chroot first on PATH."""
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    return subprocess.run(["sh", "-c", body, "exec", str(tree)], capture_output=True, text=True, env=env)


@pytest.fixture
def fake_tree(tmp_path: Path) -> tuple[Path, Path]:
    tree, bin_dir = tmp_path / "tree", tmp_path / "bin"
    (tree / "usr/sbin").mkdir(parents=True)
    bin_dir.mkdir()
    (bin_dir / "chroot").write_text(FAKE_CHROOT)
    (bin_dir / "chroot").chmod(0o755)
    return tree, bin_dir


def test_dom0_initramfs_is_made_once_from_the_final_tree(fake_tree, tmp_path):
    tree, bin_dir = fake_tree
    options = rootfs.mmdebstrap_command(ctx_for(tmp_path), tree)
    essential = [hook_body(o, "essential") for o in options if o.startswith("--essential-hook=")]
    customize = [hook_body(o, "customize") for o in options if o.startswith("--customize-hook=")]
    assert len(essential) == len(customize) == 1

    # Before the packages: update-initramfs is diverted, and a stub that does nothing takes its place.
    assert run_hook(essential[0], tree, bin_dir).returncode == 0
    stub = tree / "usr/sbin/update-initramfs"
    assert os.access(stub, os.X_OK)
    ran = subprocess.run([stub, "--version"], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == ""  # the kernel's hook sees no initramfs-tools: skips
    # What dpkg then installs goes to the diverted name.
    (tree / "usr/sbin/update-initramfs.xenlive").write_text("#!/bin/sh\necho initramfs-tools\n")

    done = run_hook(customize[0], tree, bin_dir)
    assert done.returncode == 0, done.stderr
    assert (tree / "usr/sbin/update-initramfs").read_text().endswith("echo initramfs-tools\n")  # the real one
    assert (tree / "chroot.log").read_text().splitlines() == [
        "dpkg-divert --quiet --local --rename --divert /usr/sbin/update-initramfs.xenlive"
        " --add /usr/sbin/update-initramfs",
        "dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs",
        "update-initramfs -c -k all",  # then the one initramfs
    ]


def test_a_failing_step_of_the_final_hook_fails_the_hook(fake_tree, tmp_path):
    tree, bin_dir = fake_tree
    (bin_dir / "chroot").write_text('#!/bin/sh\n[ "$2" = update-initramfs ] && exit 1\nexit 0\n')
    options = rootfs.mmdebstrap_command(ctx_for(tmp_path), tree)
    customize = next(hook_body(o, "customize") for o in options if o.startswith("--customize-hook="))
    (tree / "usr/sbin/update-initramfs.xenlive").write_text("")
    assert run_hook(customize, tree, bin_dir).returncode != 0  # mmdebstrap then stops the build


def ctx_for(tmp_path: Path) -> BuildContext:
    return BuildContext(profile=load_profile(None), output=tmp_path / "x.iso", workdir=tmp_path / "w",
                        cache_dir=tmp_path / "cache")  # fmt: skip


def test_the_dom0_cache_key_follows_its_hook_templates(tmp_path, monkeypatch):
    """Editing what a dom0 hook runs must rebuild the tree, not reuse the cached one."""
    ctx = ctx_for(tmp_path)
    before = rootfs.rootfs_key(ctx)
    assert rootfs.rootfs_key(ctx) == before
    real = mmdebstrap.render
    monkeypatch.setattr(
        mmdebstrap, "render", lambda name, **c: real(name, **c) + ("# edited\n" if "final" in name else "")
    )
    assert rootfs.rootfs_key(ctx) != before
