from __future__ import annotations

import os
import re
import stat
from importlib import resources
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.errors import TemplateError, XenliveError
from builder.profile import load_profile
from builder.stages import customize as customize_module
from builder.stages.customize import apply_overlay, customize, dom0_path, locale_dir_name

from ..conftest import REPO

HASH = "$y$j9T$abcdefghijklmnop$ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijk12345"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7m0Y9Jq0kq2tX9t0yJ9QeV1bqk6aW2l2uTt0Vn0a1b me@laptop"


def fake_base(root: Path) -> Path:
    """The few files of a Debian base tree that customize reads (accounts, skel, units, locales)."""
    files = {
        "etc/passwd": "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
        "etc/shadow": "root:*:20783:0:99999:7:::\ndaemon:*:20783:0:99999:7:::\nnobody:*:20783:0:99999:7:::\n",
        "etc/group": "root:x:0:\nsudo:x:27:\nshadow:x:42:\nusers:x:100:\nnogroup:x:65534:\n",
        "etc/gshadow": "root:*::\nsudo:*::\nshadow:*::\nusers:*::\nnogroup:*::\n",
        "etc/skel/.bashrc": "# skel\n",
        "lib/systemd/system/systemd-networkd.service": "[Unit]\n[Install]\nWantedBy=multi-user.target\n"
        "Also=systemd-networkd.socket\nAlias=dbus-org.freedesktop.network1.service\n# comment\n"
        "Also=systemd-network-generator.service\n",
        "lib/systemd/system/systemd-network-generator.service": "[Install]\nWantedBy=sysinit.target\n",
        "lib/systemd/system/systemd-networkd.socket": "[Install]\nWantedBy=sockets.target\n",
        "lib/systemd/system/ssh.service": "[Install]\nWantedBy=multi-user.target\nAlias=sshd.service\n",
        "usr/share/i18n/SUPPORTED": "en_US.UTF-8 UTF-8\nja_JP.UTF-8 UTF-8\nja_JP EUC-JP\n",
    }
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    (root / "tmp").mkdir()
    return root


def make_ctx(tmp_path: Path, profile_spec: str | Path | None = None) -> BuildContext:
    ctx = BuildContext(
        profile=load_profile(profile_spec), output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path
    )
    ctx.rootfs = fake_base(tmp_path / "base")
    return ctx


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    return make_ctx(tmp_path)


class Recorder:
    """Stands in for builder.run.run (the edge): records commands and plays localedef's part."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, cmd: list[str], **kwargs: object) -> None:
        self.commands.append(cmd)
        if cmd[:2] == ["chroot", cmd[1]] and cmd[2] == "localedef":
            out = Path(cmd[1]) / cmd[-1].lstrip("/")
            out.mkdir(parents=True)
            (out / "LC_CTYPE").write_bytes(b"data")


def test_customize_writes_services_and_default_overlay(ctx):
    customize(ctx)
    top = ctx.top
    assert (top / "etc/hostname").read_text() == "xenlive\n"
    conf = (top / "etc/xenlive/xenlive.conf").read_text()
    assert 'PROFILE="default"\nBRIDGE="xenbr0"\nDHCP="yes"\n' in conf
    assert sorted(p.name for p in (top / "etc/xenlive").iterdir()) == ["owners", "xenlive.conf"]
    assert (top / "usr/lib/xenlive/lib.sh").is_file() and not (top / "usr/lib/xenlive/lib.sh").stat().st_mode & 0o111
    assert 'XENDOMAINS_SAVE=""' in (top / "etc/default/xendomains").read_text()
    ready = top / "usr/lib/xenlive/ready"
    assert ready.stat().st_mode & stat.S_IXUSR
    assert (top / "etc/systemd/system/multi-user.target.wants/xenlive-ready.service").exists()
    assert "Autostarted: tiny" in (top / "etc/motd").read_text()
    assert not list(top.rglob("*.j2"))
    # The default profile has no users: the base layer's account files stay in charge.
    assert not (top / "etc/passwd").exists()
    assert (top / "etc/default/locale").read_text() == "LANG=C.UTF-8\n"


def test_overlay_keeps_modes_links_and_renders_templates(tmp_path):
    src = tmp_path / "ov"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(src / "usr/bin/tool", 0o750)
    (src / "greeting.j2").write_text("hello {{ who }}\n")
    (src / "link").symlink_to("/etc/hostname")
    dest = tmp_path / "dest"
    apply_overlay(src, dest, {"who": "world"})
    assert stat.S_IMODE((dest / "usr/bin/tool").stat().st_mode) == 0o750
    assert (dest / "greeting").read_text() == "hello world\n"
    assert os.readlink(dest / "link") == "/etc/hostname"


def test_overlay_template_error_names_file_and_line(tmp_path):
    src = tmp_path / "ov"
    src.mkdir()
    (src / "bad.j2").write_text("line one\n{{ missing_variable }}\n")
    with pytest.raises(TemplateError, match=r"bad.j2:2: 'missing_variable' is undefined"):
        apply_overlay(src, tmp_path / "dest", {})


def test_overlay_never_writes_through_a_symlinked_directory(tmp_path):
    """An earlier layer's link to a host directory must not let a later overlay write into the host."""
    outside = tmp_path / "host"
    outside.mkdir()
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "opt").symlink_to(outside)
    src = tmp_path / "ov"
    (src / "opt").mkdir(parents=True)
    (src / "opt/file").write_text("x\n")
    apply_overlay(src, dest, {})
    assert not (outside / "file").exists()
    # the link means dom0's own /tmp/.../host, so that is where the file lands, inside dest
    assert (dest / outside.relative_to("/") / "file").read_text() == "x\n"


def test_writes_follow_base_links_beneath_the_root(tmp_path):
    """merged /usr: a write to /lib/x lands in usr/lib/x; `..` and absolute links stop at dom0's /."""
    base, top = tmp_path / "base", tmp_path / "top"
    (base / "usr/lib").mkdir(parents=True)
    (base / "lib").symlink_to("usr/lib")
    (base / "up").symlink_to("../../../..")
    (base / "abs").symlink_to("/etc")
    assert dom0_path(top, base, "lib/firmware/x.bin") == top / "usr/lib/firmware/x.bin"
    assert dom0_path(top, base, "up/etc/shadow") == top / "etc/shadow"
    assert dom0_path(top, base, "abs/motd") == top / "etc/motd"
    assert dom0_path(top, base, "lib") == top / "lib"  # the last component is replaced, not followed
    (base / "loop").symlink_to("loop")
    with pytest.raises(XenliveError, match="too many levels"):
        dom0_path(top, base, "loop/x")


def test_units_with_install_section_are_enabled(ctx):
    customize(ctx)
    link = ctx.top / "etc/systemd/system/multi-user.target.wants/xenlive-ready.service"
    assert link.is_symlink() and os.readlink(link) == "../xenlive-ready.service"


def test_network_bridge_carries_dhcp_and_networkd_is_enabled(ctx):
    customize(ctx)
    net = ctx.top / "etc/systemd/network"
    assert "Name=xenbr0\nKind=bridge" in (net / "10-xenlive-bridge.netdev").read_text()
    assert "Name=en* eth*\nType=ether\n\n[Network]\nBridge=xenbr0\n" in (net / "20-xenlive-uplink.network").read_text()
    assert "[Match]\nName=xenbr0\n\n[Network]\nDHCP=ipv4\n" in (net / "30-xenlive-bridge.network").read_text()
    units = ctx.top / "etc/systemd/system"
    assert os.readlink(units / "multi-user.target.wants/systemd-networkd.service") == (
        "/lib/systemd/system/systemd-networkd.service"
    )
    assert (
        os.readlink(units / "sockets.target.wants/systemd-networkd.socket")
        == "/lib/systemd/system/systemd-networkd.socket"
    )
    assert (units / "dbus-org.freedesktop.network1.service").is_symlink()
    # Both Also= lines count, as in systemd (configparser would keep only the last).
    assert (units / "sysinit.target.wants/systemd-network-generator.service").is_symlink()


def xenoppix_like(write_profile, tmp_path: Path) -> Path:
    (tmp_path / "motd.j2").write_text("{{ vars.site }} on {{ profile.dom0.hostname }}\n")
    return write_profile(
        "name: jp\n"
        "vars: {site: Tsukuba}\n"
        "dom0:\n"
        "  hostname: jp\n"
        "  locale: ja_JP.UTF-8\n"
        "  timezone: Asia/Tokyo\n"
        "  keyboard: {model: jp106, layout: jp}\n"
        "  services: [ssh.service]\n"
        "  users:\n"
        f"    - {{name: root, password: '{HASH}', ssh_keys: ['{KEY}']}}\n"
        "    - {name: ken, comment: Ken, groups: [sudo, users]}\n"
        "  files:\n"
        "    - {path: /etc/motd, template: motd.j2, mode: '0640', owner: 'ken:users'}\n"
        "    - {path: /usr/local/bin/hi, content: \"#!/bin/sh\\necho hi\\n\", mode: '0755'}\n"
    )


def test_settings_users_files_and_locale(write_profile, tmp_path, monkeypatch):
    recorder = Recorder()
    monkeypatch.setattr(customize_module, "run", recorder)
    ctx = make_ctx(tmp_path, xenoppix_like(write_profile, tmp_path))
    customize(ctx)
    top = ctx.top
    assert (top / "etc/passwd").read_text().splitlines()[-1] == "ken:x:1000:1000:Ken:/home/ken:/bin/bash"
    shadow = (top / "etc/shadow").read_text().splitlines()
    assert shadow[0] == f"root:{HASH}:20783:0:99999:7:::"
    assert shadow[-1] == "ken:!:20783:0:99999:7:::"
    assert stat.S_IMODE((top / "etc/shadow").stat().st_mode) == 0o640
    group = (top / "etc/group").read_text().splitlines()
    assert "sudo:x:27:ken" in group and "users:x:100:ken" in group and group[-1] == "ken:x:1000:"
    assert (top / "root/.ssh/authorized_keys").read_text() == KEY + "\n"
    assert (top / "home/ken/.bashrc").read_text() == "# skel\n"
    assert (top / "etc/xenlive/owners").read_text() == (
        "R 0:0 /root/.ssh\nR 1000:1000 /home/ken\nF 0:42 /etc/shadow\nF 0:42 /etc/gshadow\nF 1000:100 /etc/motd\n"
    )
    assert (top / "etc/motd").read_text() == "Tsukuba on jp\n"
    assert stat.S_IMODE((top / "usr/local/bin/hi").stat().st_mode) == 0o755
    assert (top / "etc/default/locale").read_text() == "LANG=ja_JP.UTF-8\n"
    assert os.readlink(top / "etc/localtime") == "/usr/share/zoneinfo/Asia/Tokyo"
    assert 'XKBMODEL="jp106"\nXKBLAYOUT="jp"\n' in (top / "etc/default/keyboard").read_text()
    (cmd,) = recorder.commands
    assert cmd[:7] == ["chroot", str(ctx.rootfs), "localedef", "--no-archive", "-i", "ja_JP", "-f"]
    assert cmd[7] == "UTF-8" and cmd[8].endswith("/ja_JP.utf8")
    assert (top / "usr/lib/locale/ja_JP.utf8/LC_CTYPE").exists()
    assert list((ctx.rootfs / "tmp").iterdir()) == []  # the cached base tree is left as it was
    assert (top / "etc/systemd/system/sshd.service").is_symlink()
    assert "openssh-server" in ctx.profile.dom0.packages


@pytest.mark.parametrize(
    ("locale", "name"), [("ja_JP.UTF-8", "ja_JP.utf8"), ("ja_JP", "ja_JP"), ("de_DE.UTF-8@euro", "de_DE.utf8@euro")]
)
def test_locale_dir_name(locale, name):
    assert locale_dir_name(locale) == name


def test_shipped_profiles_customize(tmp_path, monkeypatch):
    monkeypatch.setattr(customize_module, "run", Recorder())
    for name in ("default", "xenoppix", "lab"):
        ctx = make_ctx(tmp_path / name, REPO / "builder/profiles" / f"{name}.yaml")
        customize(ctx)
        assert (ctx.top / "etc/hostname").read_text() == f"{ctx.profile.dom0.hostname}\n"


def test_every_masked_unit_line_names_a_unit_and_where_it_is_masked():
    """data/masked-units.txt: a unit or system-generators/NAME, then dom0 and/or guests; a comment
    line that lost its # (it would become a unit named by its first word) is caught here."""
    text = resources.files("builder").joinpath("data/masked-units.txt").read_text()
    unit = re.compile(r"(system-generators/[a-z0-9-]+|[A-Za-z0-9@_.-]+\.(service|mount|automount|timer|socket))")
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        assert unit.fullmatch(fields[0]), f"line {number}: {line!r}"
        assert fields[1:] and set(fields[1:]) <= {"dom0", "guests"}, f"line {number}: {line!r}"
    assert "system-generators/systemd-hibernate-resume-generator" in customize_module.masked_units("dom0")


def test_units_that_delay_a_live_boot_are_masked(ctx):
    customize(ctx)
    for unit in (
        "systemd-networkd-wait-online.service",
        "e2scrub_reap.service",
        "ldconfig.service",
        "systemd-journal-catalog-update.service",
        "systemd-update-done.service",
        "systemd-binfmt.service",
        "modprobe@fuse.service",
        "../system-generators/systemd-gpt-auto-generator",
    ):
        link = ctx.top / "etc/systemd/system" / unit
        assert link.is_symlink() and os.readlink(link) == "/dev/null"
    # What dom0 needs stays: /dev/net/tun's static node, /etc/fstab and the SysV scripts (xendomains).
    for kept in ("system/kmod-static-nodes.service", "system-generators/systemd-fstab-generator",
                 "system-generators/systemd-sysv-generator", "system/systemd-udevd.service"):  # fmt: skip
        assert not (ctx.top / "etc/systemd" / kept).is_symlink(), kept


def test_xen_daemons_start_early_with_debians_stop(ctx):
    """xenlive's xen.service replaces Debian's (a unit of the same name in /etc wins over trixie's
    in /usr and over the one bookworm's sysv generator makes), and is enabled."""
    customize(ctx)
    units = ctx.top / "etc/systemd/system"
    unit = (units / "xen.service").read_text()
    assert "ExecStart=/usr/lib/xenlive/xen-daemons\n" in unit
    assert "ExecStop=/etc/init.d/xen stop\n" in unit
    assert "DefaultDependencies=no\n" in unit and "After=local-fs.target " in unit
    assert "KillMode=process\n" in unit
    assert (units / "multi-user.target.wants/xen.service").is_symlink()


def test_consoles_do_not_slow_or_lose_a_slow_boot(ctx):
    customize(ctx)
    units = ctx.top / "etc/systemd/system"
    assert "JobRunningTimeoutSec=infinity" in (units / "dev-hvc0.device.d/xenlive.conf").read_text()
    assert "After=xenlive-ready.service" in (units / "getty-static.service.d/xenlive.conf").read_text()


def test_xendomains_starts_after_ready(ctx):
    """It has nothing to start on a live medium; its start only competes with the guests for the CPU."""
    customize(ctx)
    conf = (ctx.top / "etc/systemd/system/xendomains.service.d/xenlive.conf").read_text()
    unit = [line.strip() for line in conf.splitlines() if line.strip() and not line.startswith("#")]
    assert unit == ["[Unit]", "After=xenlive-ready.service"]


# --- the settings files, byte for byte: the shipped profiles and each network shape ---------------

SHIPPED = sorted(p.stem for p in (REPO / "builder/profiles").glob("*.yaml"))
NETWORK_SHAPES = {
    "bridge-static": "  network: {dhcp: false}\n",
    "bridge-uplink-named": "  network: {interface: enp1s0, bridge: br-lab}\n",
    "no-bridge-dhcp": "  network: {bridge: ''}\n",
    "no-bridge-no-dhcp": "  network: {bridge: '', dhcp: false}\n",
    "keyboard-variant": "  keyboard: {model: pc105, layout: de, variant: nodeadkeys, options: 'ctrl:nocaps'}\n",
}


SETTINGS_FILES = ("etc/default/keyboard", "etc/default/locale", "etc/locale.conf", "etc/timezone",
                  "etc/systemd/network")  # fmt: skip


def settings_files(tmp_path: Path, profile_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The profile's settings files as customize writes them, each under a "==> path <==" line: one
    golden text per profile, so a file that appears or goes away shows in the diff too."""
    monkeypatch.setattr(customize_module, "run", Recorder())
    ctx = make_ctx(tmp_path, profile_path)
    customize(ctx)
    files = sorted(p for rel in SETTINGS_FILES for p in [ctx.top / rel, *(ctx.top / rel).rglob("*")] if p.is_file())
    return "".join(f"==> {p.relative_to(ctx.top).as_posix()} <==\n{p.read_text()}" for p in files)


@pytest.mark.parametrize("name", SHIPPED)
def test_settings_files_of_shipped_profiles_golden(tmp_path, monkeypatch, golden, name):
    path = REPO / "builder/profiles" / f"{name}.yaml"
    golden(f"{name}/dom0-settings.txt", settings_files(tmp_path, path, monkeypatch))


@pytest.mark.parametrize("shape", sorted(NETWORK_SHAPES))
def test_settings_files_per_network_shape_golden(tmp_path, monkeypatch, write_profile, golden, shape):
    path = write_profile(f"name: shape\ndom0:\n{NETWORK_SHAPES[shape]}")
    golden(f"dom0-settings/{shape}.txt", settings_files(tmp_path, path, monkeypatch))


def test_persistence_unit_runs_only_for_a_profile_that_keeps_something(tmp_path, write_profile):
    """Without anything to keep it would only say so, ahead of xen.service; ready says it instead."""
    plain = make_ctx(tmp_path / "plain")
    customize(plain)
    units = plain.top / "etc/systemd/system"
    assert (units / "xenlive-persist.service").is_file()
    assert not list(units.glob("*.wants/xenlive-persist.service"))
    keeper = make_ctx(tmp_path / "keeper", write_profile("name: keeper\ndom0:\n  persist: [/root]\n"))
    customize(keeper)
    assert (keeper.top / "etc/systemd/system/sysinit.target.wants/xenlive-persist.service").is_symlink()


def test_keymap_loads_beside_the_file_systems_and_before_logins(ctx):
    """console-setup's own unit holds local-fs-pre.target (and so Xen and the guests) for loadkeys."""
    customize(ctx)
    units = ctx.top / "etc/systemd/system"
    unit = [line for line in (units / "keyboard-setup.service").read_text().splitlines() if not line.startswith("#")]
    assert "ExecStart=/lib/console-setup/keyboard-setup.sh" in unit
    assert not any("local-fs" in line for line in unit)
    assert "Before=systemd-user-sessions.service getty-pre.target shutdown.target" in unit
    assert (units / "sysinit.target.wants/keyboard-setup.service").is_symlink()
