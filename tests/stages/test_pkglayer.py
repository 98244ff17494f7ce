from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from builder import cache, mmdebstrap
from builder.context import BuildContext
from builder.errors import CommandError, ProfileError
from builder.introspect import dpkg_status
from builder.packages import dom0_packages
from builder.pipeline import build_id, required_tools, with_guest_dom0_packages
from builder.profile import load_profile, template_context
from builder.stages import customize as customize_module
from builder.stages import pkglayer, rootfs
from builder.stages.rootfs import boot_file

from ..test_overlayfs import can_mount_overlay

SUITE = load_profile(None).dom0.suite  # the default profile's, which the test profiles extend
BASE_STATUS = "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n" + "".join(
    f"\nPackage: {p}\nStatus: install ok installed\nVersion: 1\n" for p in dom0_packages(SUITE))  # fmt: skip


def profile_with(write_profile, packages: list[str], remove: list[str] | None = None, extra: str = ""):
    text = f"name: p\nextends: default\ndom0:\n  packages: [{', '.join(packages)}]\n"
    if remove is not None:
        text += f"  remove_packages: [{', '.join(remove)}]\n"
    return load_profile(write_profile(text + extra))


def make_ctx(tmp_path: Path, profile) -> BuildContext:  # type: ignore[no-untyped-def]
    ctx = BuildContext(profile=with_guest_dom0_packages(profile), output=tmp_path / "o.iso",
                       workdir=tmp_path / "work", cache_dir=tmp_path / "cache", epoch=1700000000)  # fmt: skip
    ctx.workdir.mkdir(parents=True, exist_ok=True)
    return ctx


def test_base_key_ignores_the_profile_s_packages_so_every_profile_of_a_suite_shares_it(tmp_path, write_profile):
    default = make_ctx(tmp_path, load_profile(None))
    extended = make_ctx(tmp_path, profile_with(write_profile, ["tree", "htop"]))
    assert rootfs.rootfs_key(extended) == rootfs.rootfs_key(default)
    other = "bookworm" if SUITE != "bookworm" else "trixie"
    spec = write_profile(f"name: t\nextends: default\ndom0:\n  suite: {other}\n", "t.yaml")
    assert rootfs.rootfs_key(make_ctx(tmp_path, load_profile(spec))) != rootfs.rootfs_key(default)
    cmd = rootfs.mmdebstrap_command(extended, tmp_path / "t")
    assert cmd == rootfs.mmdebstrap_command(default, tmp_path / "t")
    include = next(a for a in cmd if a.startswith("--include=")).removeprefix("--include=").split(",")
    assert include == dom0_packages(SUITE) and "tree" not in include


def test_default_profile_keeps_its_base_key_and_build_id(tmp_path, monkeypatch):
    """The inputs of the base key are what they were before the layer (so the cached base and the
    medium's id of a profile without extra packages stay the same)."""
    ctx = make_ctx(tmp_path, load_profile(None))
    seen: list[object] = []
    real = cache.input_hash
    monkeypatch.setattr(cache, "input_hash", lambda inputs: seen.append(inputs) or real(inputs))
    rootfs.rootfs_key(ctx)
    dom0 = ctx.profile.dom0
    assert seen[-1]["packages"] == sorted(dom0_packages(dom0.suite, dom0.packages))  # type: ignore[index]
    assert set(seen[-1]) <= {"stage", "suite", "mirror", "packages", "excludes", "dpkg", "hooks", "mode"}  # type: ignore[arg-type]
    assert pkglayer.extra_packages(ctx.profile) == []
    from builder.profile import to_data

    assert build_id(ctx) == real({"profile": to_data(ctx.profile), "rootfs": rootfs.rootfs_key(ctx)})


def test_extra_packages_are_the_profile_s_minus_removed_and_xenlive_s_plus_guests_sorted(tmp_path, write_profile):
    hvm = "guests:\n  - name: win\n    type: hvm\n    memory: 512M\n    kernel: dom0\n    initrd: busybox\n"
    profile = profile_with(write_profile, ["tree", "live-boot", "htop", "vim"], remove=["vim"], extra=hvm)
    ctx = make_ctx(tmp_path, profile)
    assert pkglayer.extra_packages(ctx.profile) == ["htop", "qemu-system-xen", "tree"]
    assert "unshare" in required_tools(ctx.profile) and "unshare" not in required_tools(load_profile(None))


def test_layer_key_is_the_base_s_and_the_sorted_packages(tmp_path):
    key = pkglayer.layer_key("base1", ["tree", "htop"])
    assert key == pkglayer.layer_key("base1", ["htop", "tree"])
    assert key != pkglayer.layer_key("base2", ["htop", "tree"])
    assert key != pkglayer.layer_key("base1", ["htop"])


def test_the_install_script_is_valid_posix_sh():
    """What the fake apt of these tests stands in for still has to parse (dom0's sh is dash)."""
    script = Path(str(resources.files("builder").joinpath(pkglayer.INSTALL_SCRIPT)))
    proc = subprocess.run(["sh", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_a_layer_with_console_setup_compiles_the_profiles_keyboard_and_is_keyed_by_it(tmp_path):
    """xenoppix's layer gets the same /etc/default/keyboard as its top layer, to compile at build time."""
    profile = load_profile("xenoppix")
    packages = pkglayer.extra_packages(profile)
    keyboard = pkglayer.keyboard_file(profile, packages)
    assert keyboard is not None and 'XKBMODEL="jp106"' in keyboard and 'XKBLAYOUT="jp"' in keyboard
    top = tmp_path / "top"  # what the customize stage writes from dom0's templates
    customize_module.apply_overlay(customize_module.DOM0_TEMPLATES, top, template_context(profile), None)
    assert (top / "etc/default/keyboard").read_text() == keyboard
    assert pkglayer.keyboard_file(profile, ["htop"]) is None
    base = "base1"
    assert pkglayer.layer_key(base, packages, keyboard) != pkglayer.layer_key(base, packages, keyboard + "#\n")
    cmd = pkglayer.install_command(base=tmp_path / "b", upper=tmp_path / "u", work=tmp_path / "w",
                                   merged=tmp_path / "m", apt_dir=tmp_path / "a", packages=packages, update=False,
                                   keyboard=tmp_path / "keyboard")  # fmt: skip
    assert cmd[14] == f"{tmp_path}/keyboard" and cmd[15] == "--"


def test_install_command_keeps_every_profile_value_after_the_option_ends(tmp_path, monkeypatch):
    monkeypatch.setattr(pkglayer.overlayfs, "userxattr", lambda: False)
    cmd = pkglayer.install_command(base=tmp_path / "base", upper=tmp_path / "up", work=tmp_path / "wk",
                                   merged=tmp_path / "m", apt_dir=tmp_path / "apt", packages=["htop", "tree"],
                                   update=True)  # fmt: skip
    assert cmd[:7] == ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--"]
    assert cmd[7] == "sh" and cmd[8].endswith("templates/pkglayer/install.sh") and Path(cmd[8]).is_file()
    opts, merged, lists, archives, update, keyboard = cmd[9:15]
    assert opts.startswith(f"lowerdir={tmp_path}/base,upperdir={tmp_path}/up,workdir={tmp_path}/wk")
    assert (merged, lists, archives, update) == (f"{tmp_path}/m", f"{tmp_path}/apt/lists", f"{tmp_path}/apt/archives",
                                                 "yes")  # fmt: skip
    assert keyboard == ""  # no console-setup among the packages: no keymap to compile
    first = cmd.index("--", 14)
    second = cmd.index("--", first + 1)
    assert cmd[second + 1 :] == ["htop", "tree"]
    apt = cmd[first + 1 : second]
    assert "-oApt::Install-Recommends=false" in apt and "-oDir::Cache::pkgcache=" in apt
    assert [a.split("--", 1)[1] for a in apt if a.startswith("-oDPkg::Options::=")] == rootfs.DPKG_OPTIONS


def test_no_extra_packages_no_layer(tmp_path):
    ctx = make_ctx(tmp_path, load_profile(None))
    ctx.base_tree = ctx.rootfs = tmp_path / "base"
    pkglayer.build_package_layer(ctx)
    assert ctx.rootfs == tmp_path / "base" and ctx.packages_squashfs is None and ctx.packages_key == ""
    assert not (ctx.cache_dir / "packages").exists()


def fake_base(root: Path) -> Path:
    for rel, text in {"var/lib/dpkg/status": BASE_STATUS, "etc/conf.d/old": "base\n", "etc/conf.d/kept": "base\n",
                      "boot/vmlinuz-6.1.0-1-amd64": "kernel", "boot/initrd.img-6.1.0-1-amd64": "base initrd",
                      "var/log/dpkg.log": "base log\n"}.items():  # fmt: skip
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


class FakeApt:
    """Stands in for the one command a unit test cannot run (apt-get install in a chroot, from the
    mirror): writes into the upper directory what an install writes there. Everything else runs."""

    def __init__(self, real) -> None:  # type: ignore[no-untyped-def]
        self.real = real
        self.installs: list[list[str]] = []

    def __call__(self, cmd, **kwargs):  # type: ignore[no-untyped-def]
        if cmd[0] != "unshare":
            return self.real(cmd, **kwargs)
        self.installs.append(cmd)
        opts = dict(o.split("=", 1) for o in cmd[9].split(",") if "=" in o)
        upper = Path(opts["upperdir"])
        packages = cmd[cmd.index("--", cmd.index("--", 14) + 1) + 1 :]
        if cmd[13] == "yes":  # apt-get update, into the shared lists
            (Path(cmd[11]) / f"deb.debian.org_debian_dists_{SUITE}_main_binary-amd64_Packages").write_text("")
        files = {
            "usr/bin/tree": "#!/bin/sh\n",
            "var/lib/dpkg/status": BASE_STATUS + "".join(
                f"\nPackage: {p}\nStatus: install ok installed\nVersion: 1.0\n" for p in packages),
            "boot/initrd.img-6.1.0-1-amd64": "initrd with the package's hook",  # update-initramfs ran
            "var/log/dpkg.log": "this run's log\n",
            "var/cache/apt/pkgcache.bin": "apt 3 writes it anyway",
            "etc/conf.d/kept": "layer\n",
        }  # fmt: skip
        for rel, text in files.items():
            (upper / rel).parent.mkdir(parents=True, exist_ok=True)
            (upper / rel).write_text(text)
        os.setxattr(upper / "etc/conf.d", "trusted.overlay.opaque", b"y")  # the directory was replaced
        from subprocess import CompletedProcess

        return CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def layered(tmp_path, write_profile, monkeypatch):
    if not can_mount_overlay(tmp_path) or shutil.which("mksquashfs") is None:
        pytest.skip("needs root, overlayfs mounts and mksquashfs")
    ctx = make_ctx(tmp_path, profile_with(write_profile, ["tree"]))
    ctx.base_tree = ctx.rootfs = fake_base(tmp_path / "base")
    fake = FakeApt(pkglayer.run)
    monkeypatch.setattr(pkglayer, "run", fake)  # mksquashfs passes through to the real one
    monkeypatch.setattr(mmdebstrap, "run", fake)  # apt over the base, through mmdebstrap.run_for_dom0
    yield ctx, fake
    ctx.holds.close()


def test_layer_is_made_cached_and_read_through_the_merged_view(layered, tmp_path):
    ctx, fake = layered
    with ctx.holds:
        pkglayer.build_package_layer(ctx)
        assert len(fake.installs) == 1 and fake.installs[0][13] == "yes"  # no lists yet: apt-get update first
        assert ctx.packages_squashfs is not None and ctx.packages_squashfs.read_bytes()[:4] == b"hsqs"
        view = ctx.rootfs
        assert view is not None and view != ctx.base_tree
        versions = dpkg_status(view)  # the manifest's dom0_packages
        assert versions["libc6"] == "2.36-9" and versions["tree"] == "1.0" and versions["live-boot"] == "1"
        assert boot_file(view, "initrd").read_text() == "initrd with the package's hook"  # what goes on the medium
        assert boot_file(view, "kernel").read_text() == "kernel"
        assert (view / "etc/conf.d/kept").read_text() == "layer\n"
        assert not (view / "etc/conf.d/old").exists()  # the opaque directory hides it, as a whiteout now
        assert (view / "var/log/dpkg.log").read_text() == "base log\n"  # not the run's
        assert not (view / "var/cache/apt/pkgcache.bin").exists()  # nor apt's binary cache
        entry = ctx.packages_squashfs.parent
        assert (entry / "tree/etc/conf.d/old").is_char_device()
        assert ctx.cache_hits["packages"] is False and ctx.packages_key == entry.name
        (apt_entry,) = [e for e in cache.entries(ctx.cache_dir) if e.kind == "apt"]  # the shared lists
        assert apt_entry.complete and (apt_entry.path / "lists").is_dir()
        first_id = build_id(ctx)
    assert not os.path.ismount(view)

    again = make_ctx(tmp_path / "again", ctx.profile)
    again.cache_dir = ctx.cache_dir
    again.base_tree = again.rootfs = ctx.base_tree
    with again.holds:
        pkglayer.build_package_layer(again)
        assert again.cache_hits["packages"] is True and len(fake.installs) == 1
        assert dpkg_status(again.rootfs)["tree"] == "1.0"
        assert build_id(again) == first_id
    assert first_id != build_id(make_ctx(tmp_path / "x", load_profile(None)))

    with_htop = make_ctx(tmp_path / "htop", dataclasses.replace(
        ctx.profile, dom0=dataclasses.replace(ctx.profile.dom0, packages=("tree", "htop"))))  # fmt: skip
    with_htop.cache_dir = ctx.cache_dir
    with_htop.base_tree = with_htop.rootfs = ctx.base_tree
    with with_htop.holds:
        pkglayer.build_package_layer(with_htop)  # a second package: a new layer over the same base
        assert len(fake.installs) == 2 and fake.installs[1][13] == "no"  # the shared lists are reused
        assert with_htop.cache_hits["packages"] is False and with_htop.packages_key != ctx.packages_key
        assert dpkg_status(with_htop.rootfs)["htop"] == "1.0"


def test_a_package_the_suite_lacks_is_a_profile_error_naming_it(tmp_path, write_profile, monkeypatch):
    ctx = make_ctx(tmp_path, profile_with(write_profile, ["no-such-package"]))
    ctx.base_tree = ctx.rootfs = fake_base(tmp_path / "base")

    def apt_fails(cmd, **kwargs):  # type: ignore[no-untyped-def]
        raise CommandError(cmd, 100, "E: Unable to locate package no-such-package")

    monkeypatch.setattr(mmdebstrap, "run", apt_fails)
    with ctx.holds, pytest.raises(ProfileError) as info:
        pkglayer.build_package_layer(ctx)
    message = str(info.value)
    assert "dom0.packages" in message and "no-such-package" in message and "p.yaml:" in message
    assert not any(p.name.startswith(".") and "tmp" in p.name for p in (ctx.cache_dir / "packages").iterdir())


def test_check_reads_the_cached_base_or_the_merged_view_of_base_and_layer(layered, tmp_path):
    """`xenlive check` answers built-file checks from the cache: a profile with extra packages from
    the base and its layer together, and from nothing when only the base is cached."""
    from builder.checks.facts import cached_dom0

    ctx, _fake = layered
    entry = ctx.cache_dir / "rootfs" / rootfs.rootfs_key(ctx)
    shutil.copytree(ctx.base_tree, entry / "tree", symlinks=True)
    (entry / cache.SEAL).write_text("{}")
    with cached_dom0(load_profile(None), ctx.cache_dir) as tree:
        assert tree == entry / "tree"
    with cached_dom0(ctx.profile, ctx.cache_dir) as tree:
        assert tree is None  # the layer is not cached yet
    ctx.base_tree = ctx.rootfs = entry / "tree"
    with ctx.holds:
        pkglayer.build_package_layer(ctx)
    with cached_dom0(ctx.profile, ctx.cache_dir) as tree:
        assert tree is not None and dpkg_status(tree)["tree"] == "1.0"
        mounted = tree
    assert not os.path.ismount(mounted)


def test_a_package_that_takes_one_of_xenlive_s_away_is_refused_naming_it(tmp_path, write_profile):
    profile = profile_with(write_profile, ["sysvinit-core"])
    upper = tmp_path / "upper"
    own = dom0_packages(profile.dom0.suite)
    (upper / "var/lib/dpkg").mkdir(parents=True)
    blocks = [f"Package: {p}\nStatus: install ok installed\nVersion: 1\n" for p in own if p != "systemd-sysv"]
    (upper / "var/lib/dpkg/status").write_text("\n".join(blocks))
    with pytest.raises(ProfileError) as info:
        pkglayer.refuse_removals(profile, upper)
    assert "removes xenlive's own systemd-sysv" in str(info.value) and "dom0.packages" in str(info.value)
    (upper / "var/lib/dpkg/status").write_text("\n".join(f"Package: {p}\nStatus: install ok installed\n" for p in own))
    pkglayer.refuse_removals(profile, upper)
