"""The guests stage: xl configs per kind (golden files), artifacts on the medium, the per-guest cache,
bad guest input at load, and the dom0 start script's failure reporting.

The edges faked here are `run` (mmdebstrap and mkfs.ext4) and, for the dom0 scripts, `xl`,
`losetup` and friends on PATH; everything above them runs for real.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from builder import cpio
from builder.context import BuildContext
from builder.errors import ProfileError, XenliveError
from builder.profile import load_profile
from builder.qemu import judge_ready
from builder.stages import guests as guests_module
from builder.stages.guests import build_guests, busybox_initrd, guest_dom0_packages, guest_list, xl_config

REPO = Path(__file__).resolve().parents[2]
GUESTS_SCRIPT = REPO / "builder/templates/dom0/usr/lib/xenlive/guests"
READY_SCRIPT = REPO / "builder/templates/dom0/usr/lib/xenlive/ready"
DISK = b"\x00" * 4096
ISO = b"CD001" * 100
KERNEL = b"vmlinuz of the image guest"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


KINDS_PROFILE = f"""\
name: kinds
guests:
  - name: tiny
    ready: "^XENLIVE-GUEST-READY tiny"
  - name: box-pvh
    type: pvh
    vcpus: 2
    order: 5
    overlay: box
  - name: deb
    kind: debian
    memory: 256M
    on_crash: preserve
    debian:
      hostname: deb-host
      packages: [openssh-server]
      users:
        - name: root
          password: "!"
        - name: alice
          password: "!"
          groups: [sudo]
    ready: "XENLIVE-GUEST-NET deb .*ping=ok"
  - name: img
    kind: image
    kernel: files/vmlinuz
    kernel_sha256: {sha(KERNEL)}
    initrd: files/initrd.img
    initrd_sha256: {sha(b"initrd")}
    disk: files/disk.img
    disk_sha256: {sha(DISK)}
    cmdline: root=/dev/xvda console=hvc0
    write_buffer: 32M
    autostart: false
  - name: win
    kind: image
    type: hvm
    memory: 512M
    cdrom: files/boot.iso
    cdrom_sha256: {sha(ISO)}
    disk: files/disk.img
    disk_sha256: {sha(DISK)}
    network: false
    on_reboot: destroy
"""


@pytest.fixture
def kinds(tmp_path: Path) -> BuildContext:
    files = tmp_path / "files"
    files.mkdir()
    (files / "vmlinuz").write_bytes(KERNEL)
    (files / "initrd.img").write_bytes(b"initrd")
    (files / "disk.img").write_bytes(DISK)
    (files / "boot.iso").write_bytes(ISO)
    (tmp_path / "box/etc").mkdir(parents=True)
    (tmp_path / "box/etc/rc.local").write_text("#!/bin/sh\necho box\n")
    (tmp_path / "box/etc/rc.local").chmod(0o755)
    (tmp_path / "kinds.yaml").write_text(KINDS_PROFILE)
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(b"kernel")
    (tree / "bin").mkdir()
    (tree / "bin/busybox").write_bytes(b"\x7fELF busybox")
    profile = load_profile(tmp_path / "kinds.yaml")
    c = BuildContext(profile=profile, output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path / "cache")
    c.rootfs = tree
    return c


class FakeDebootstrap:
    """Stands in for mmdebstrap (writes a tarball with a kernel and initrd) and mkfs.ext4."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, cmd: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        cmd = [os.fspath(c) for c in cmd]
        self.commands.append(cmd)
        if cmd[0] == "mmdebstrap":
            with tarfile.open(cmd[-2], "w") as tar:
                for name, data in (("./boot/vmlinuz-6.1.0-9-amd64", b"guest kernel"),
                                   ("./boot/initrd.img-6.1.0-9-amd64", b"guest initrd"),
                                   ("./etc/hostname", b"deb\n")):  # fmt: skip
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        elif cmd[0] == "mkfs.ext4":
            Path(cmd[-2]).write_bytes(b"ext4 of " + Path(cmd[cmd.index("-d") + 1]).name.encode())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    def made(self, tool: str) -> int:
        return sum(1 for c in self.commands if c[0] == tool)


@pytest.fixture
def fake_run(monkeypatch: pytest.MonkeyPatch) -> FakeDebootstrap:
    fake = FakeDebootstrap()
    monkeypatch.setattr(guests_module, "run", fake)
    return fake


# --- xl configs, one golden file per kind and type -------------------------------------------------


def test_default_profile_xl_config_golden(golden) -> None:
    profile = load_profile(None)
    golden("default/tiny.cfg", xl_config(profile, profile.guests[0]))


@pytest.mark.parametrize("name", ["tiny", "box-pvh", "deb", "img", "win"])
def test_xl_config_golden_per_kind(kinds: BuildContext, golden, name: str) -> None:
    guest = next(g for g in kinds.profile.guests if g.name == name)
    golden(f"guests/{name}.cfg", xl_config(kinds.profile, guest))


def test_hvm_config_has_device_model_and_no_kernel(kinds: BuildContext) -> None:
    text = xl_config(kinds.profile, next(g for g in kinds.profile.guests if g.name == "win"))
    assert 'type = "hvm"' in text and 'device_model_version = "qemu-xen"' in text and 'boot = "d"' in text
    assert "kernel =" not in text and "vif = []" in text
    assert 'serial = "file:/var/log/xen/console/guest-win.log"' in text


def test_hvm_guest_brings_the_device_model_into_dom0(kinds: BuildContext) -> None:
    assert guest_dom0_packages(kinds.profile) == ("qemu-system-xen",)
    assert guest_dom0_packages(load_profile(None)) == ()


def test_mac_addresses_are_stable_and_distinct(kinds: BuildContext) -> None:
    macs = {guests_module.mac_address(kinds.profile, g) for g in kinds.profile.guests}
    assert len(macs) == len(kinds.profile.guests)
    assert all(m.startswith("00:16:3e:") for m in macs)


# --- artifacts on the medium and the cache ---------------------------------------------------------


def test_build_guests_places_every_kind(kinds: BuildContext, fake_run: FakeDebootstrap) -> None:
    build_guests(kinds)
    medium = kinds.staging / "guests"
    assert (medium / "tiny/vmlinuz").read_bytes() == b"kernel"
    assert b"XENLIVE-GUEST-READY tiny" in gzip.decompress((medium / "tiny/initrd.img").read_bytes())
    assert b"echo box" in gzip.decompress((medium / "box-pvh/initrd.img").read_bytes())
    assert (medium / "deb/vmlinuz").read_bytes() == b"guest kernel"
    assert (medium / "deb/initrd.img").read_bytes() == b"guest initrd"
    assert (medium / "deb/disk.img").read_bytes() == b"ext4 of tree"
    assert (medium / "img/vmlinuz").read_bytes() == KERNEL and (medium / "img/disk.img").read_bytes() == DISK
    assert (medium / "win/cdrom.iso").read_bytes() == ISO and not (medium / "win/vmlinuz").exists()
    auto = sorted(p.name for p in (kinds.top / "etc/xen/auto").iterdir())
    assert auto == ["box-pvh.cfg", "deb.cfg", "tiny.cfg", "win.cfg"]  # img has autostart: false
    assert (kinds.top / "etc/xenlive/guests/deb.ready").read_text() == "600\nXENLIVE-GUEST-NET deb .*ping=ok\n"
    assert not (kinds.top / "etc/xenlive/guests/img.ready").exists()


def test_guest_list_is_in_start_order_with_write_buffers(kinds: BuildContext) -> None:
    lines = guest_list(kinds.profile).splitlines()[1:]
    assert lines == ["box-pvh 0", "deb 64", "img 32", "tiny 0", "win 64"]


def test_debian_guest_mmdebstrap_command(kinds: BuildContext, fake_run: FakeDebootstrap) -> None:
    build_guests(kinds)
    (cmd,) = [c for c in fake_run.commands if c[0] == "mmdebstrap"]
    assert "--variant=minbase" in cmd and "--format=tar" in cmd
    assert next(a for a in cmd if a.startswith("--include=")) == (
        "--include=linux-image-amd64,initramfs-tools,systemd-sysv,udev,iproute2,iputils-ping,openssh-server"
    )
    hooks = [a for a in cmd if a.startswith("--customize-hook=")]
    assert hooks[0].startswith("--customize-hook=sync-in ") and hooks[0].endswith(" /")
    assert "--customize-hook=chroot \"$1\" usermod -p '!' root" in hooks
    assert "--customize-hook=chroot \"$1\" useradd -m -s /bin/bash -p '!' -G sudo alice" in hooks
    assert any("MODULES=list" in a for a in cmd if a.startswith("--essential-hook="))
    (mkfs,) = [c for c in fake_run.commands if c[0] == "mkfs.ext4"]
    assert mkfs[mkfs.index("-L") + 1] == "deb" and mkfs[-1].endswith("M")


def test_debian_overlay_has_hostname_network_and_proof(kinds: BuildContext) -> None:
    deb = next(g for g in kinds.profile.guests if g.name == "deb")
    files = guests_module.debian_overlay(deb)
    assert files["etc/hostname"] == ("deb-host\n", 0o644)
    assert "DHCP=ipv4" in files["etc/systemd/network/10-xenlive.network"][0]
    script, mode = files["usr/local/sbin/xenlive-guest-net"]
    assert mode == 0o755 and 'name="deb"' in script and "XENLIVE-GUEST-NET" in script
    assert "xenlive.dom0=@DOM0_ADDRESS@" in xl_config(kinds.profile, deb)


def test_changing_one_guest_rebuilds_only_that_guest(kinds: BuildContext, fake_run: FakeDebootstrap,
                                                     tmp_path: Path) -> None:  # fmt: skip
    build_guests(kinds)
    assert fake_run.made("mmdebstrap") == 1
    again = BuildContext(profile=kinds.profile, output=kinds.output, workdir=tmp_path / "w2", cache_dir=kinds.cache_dir)
    again.rootfs = kinds.rootfs
    build_guests(again)
    assert fake_run.made("mmdebstrap") == 1
    assert again.cache_hits == {"guest:tiny": True, "guest:box-pvh": True, "guest:deb": True}
    changed = (tmp_path / "kinds.yaml").read_text().replace("hostname: deb-host", "hostname: other")
    (tmp_path / "kinds.yaml").write_text(changed)
    third = BuildContext(profile=load_profile(tmp_path / "kinds.yaml"), output=kinds.output, workdir=tmp_path / "w3",
                         cache_dir=kinds.cache_dir)  # fmt: skip
    third.rootfs = kinds.rootfs
    build_guests(third)
    assert fake_run.made("mmdebstrap") == 2
    assert third.cache_hits == {"guest:tiny": True, "guest:box-pvh": True, "guest:deb": False}


def test_busybox_initrd_has_console_and_init(kinds: BuildContext) -> None:
    entries = {e.path: e for e in busybox_initrd(kinds.require_rootfs(), kinds.profile.guests[0])}
    assert entries["dev/console"].rdev == (5, 1)
    assert entries["init"].mode & 0o111
    assert entries["init"].data.startswith(b"#!/bin/busybox sh")
    assert isinstance(entries["bin/sh"], cpio.Entry)


def test_missing_busybox_is_a_clear_error(kinds: BuildContext, fake_run: FakeDebootstrap) -> None:
    (kinds.require_rootfs() / "bin/busybox").unlink()
    with pytest.raises(XenliveError, match="no /bin/busybox for guest 'tiny'"):
        build_guests(kinds)


# --- bad guest input: errors at load, with file:line:col and key path, exit 2 ----------------------


def _load_error(tmp_path: Path, text: str) -> str:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "bad.yaml")
    return str(info.value)


def test_unknown_kind(tmp_path: Path) -> None:
    message = _load_error(tmp_path, "name: p\nguests:\n  - name: a\n    kind: windows\n")
    assert "bad.yaml:4:11: guests[0].kind: expected one of busybox, debian, image, got 'windows'" in message


def test_missing_disk_file(tmp_path: Path) -> None:
    head = "name: p\nguests:\n  - name: a\n    kind: image\n    kernel: k\n"
    text = f"{head}    disk: nope.img\n    disk_sha256: {sha(DISK)}\n"
    (tmp_path / "k").write_bytes(KERNEL)
    message = _load_error(tmp_path, text)
    assert "bad.yaml:6:11: guests[0].disk: file not found: nope.img" in message


def test_disk_sha256_mismatch(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(KERNEL)
    (tmp_path / "d.img").write_bytes(DISK)
    head = "name: p\nguests:\n  - name: a\n    kind: image\n    kernel: k\n"
    text = f"{head}    disk: d.img\n    disk_sha256: '{'0' * 64}'\n"
    message = _load_error(tmp_path, text)
    assert f"bad.yaml:7:18: guests[0].disk_sha256: d.img: sha256 is {sha(DISK)}, the profile says {'0' * 64}" in message
    assert "guests[0].kernel: kernel_sha256 is required with kernel" in message


def test_disk_bigger_than_the_medium(tmp_path: Path) -> None:
    (tmp_path / "k").write_bytes(KERNEL)
    (tmp_path / "d.img").write_bytes(DISK)
    text = (f"name: p\nmedia:\n  size_limit: 2048\nguests:\n  - name: a\n    kind: image\n    kernel: k\n"
            f"    kernel_sha256: {sha(KERNEL)}\n    disk: d.img\n    disk_sha256: {sha(DISK)}\n")  # fmt: skip
    message = _load_error(tmp_path, text)
    assert "bad.yaml:9:11: guests[0].disk: the guests' files come to 4122 bytes" in message
    assert "more than media.size_limit (2048 bytes)" in message


def test_debian_guest_refuses_a_kernel_and_hvm(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path, "name: p\nguests:\n  - name: a\n    kind: debian\n    type: hvm\n    kernel: dom0x\n"
    )
    assert "guests[0].kernel: a debian guest boots the kernel" in message
    assert "guests[0].type: a debian guest boots its own kernel directly: type pv or pvh" in message


def test_bad_guest_is_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: p\nguests:\n  - name: a\n    kind: windows\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "show", str(tmp_path / "bad.yaml")],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.yaml:4:11: guests[0].kind: expected one of busybox, debian, image" in proc.stderr


def test_xenoppix_carries_three_kinds_with_ready_markers() -> None:
    profile = load_profile(REPO / "profiles/xenoppix.yaml")
    assert {g.kind.value for g in profile.guests} >= {"busybox", "debian"} and len(profile.guests) >= 3
    assert all(g.ready for g in profile.guests)


# --- boot-time failure reporting: the dom0 scripts with a fake xl -----------------------------------


def _fake_bin(bin_dir: Path) -> None:
    bin_dir.mkdir()
    scripts = {
        # `xl create` fails for the guest named "broken"; the log records what ran.
        "xl": '#!/bin/sh\necho "xl $*" >> "$FAKE_LOG"\ncase "$1" in\n'
        '  create) grep -q \'name = "broken"\' "$2" && { echo "Parsing config from $2"; '
        'echo "libxl: error: kernel not found" >&2; exit 3; }; exit 0 ;;\n'
        '  domid) grep -qx "$2" "$FAKE_RUNNING" ;;\n'
        '  list) grep -qx "$2" "$FAKE_RUNNING"'
        ' && printf "Name ID Mem VCPUs State Time\\n%s 1 96 1 -b---- 1.0\\n" "$2" ;;\n'
        '  info) printf "xen_version : 4.17.7\\n" ;;\nesac\n',
        "ip": '#!/bin/sh\n[ "$1 $2" = "-4 -o" ]'
        ' && echo "5: xenbr0 inet 10.0.2.15/24 brd 10.0.2.255 scope global xenbr0"\nexit 0\n',
        "losetup": '#!/bin/sh\necho "losetup $*" >> "$FAKE_LOG"\necho /dev/loop$$\n',
        "mountpoint": "#!/bin/sh\nexit 1\n",
        "mount": '#!/bin/sh\necho "mount $*" >> "$FAKE_LOG"\n',
        "truncate": "#!/bin/sh\nexit 0\n",
        "blockdev": "#!/bin/sh\necho 8192\n",
        "dmsetup": '#!/bin/sh\necho "dmsetup $*" >> "$FAKE_LOG"\n',
    }
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)


def test_a_guest_that_fails_to_start_is_reported_and_the_others_start(tmp_path: Path) -> None:
    _fake_bin(tmp_path / "bin")
    auto, out, run_dir, medium, ready_dir, consoles = (
        tmp_path / d for d in ("auto", "out", "run", "medium", "rd", "con")
    )
    for d in (auto, medium / "guests/deb", ready_dir, consoles):
        d.mkdir(parents=True)
    (medium / "guests/deb/disk.img").write_bytes(DISK)
    for name in ("tiny", "broken", "deb"):
        extra = "xenlive.dom0=@DOM0_ADDRESS@" if name == "deb" else "console=hvc0"
        (auto / f"{name}.cfg").write_text(f'name = "{name}"\nextra = "{extra}"\n')
    (tmp_path / "guests.list").write_text("# order\nbroken 0\ndeb 64\ntiny 0\nskipped 0\n")
    (tmp_path / "guests.conf").write_text('BRIDGE="xenbr0"\nADDRESS_WAIT=1\n')
    (tmp_path / "cmdline").write_text("boot=live\n")
    (tmp_path / "running").write_text("tiny\ndeb\n")
    env = dict(os.environ, PATH=f"{tmp_path / 'bin'}:{os.environ['PATH']}", FAKE_LOG=str(tmp_path / "log"),
               FAKE_RUNNING=str(tmp_path / "running"), XENLIVE_GUESTS_CONF=str(tmp_path / "guests.conf"),
               XENLIVE_GUESTS_LIST=str(tmp_path / "guests.list"), XENLIVE_AUTO_DIR=str(auto),
               XENLIVE_GUESTS_DIR=str(out), XENLIVE_RUN_DIR=str(run_dir), XENLIVE_MEDIUM=str(medium),
               XENLIVE_CONSOLE=str(tmp_path / "console"), XENLIVE_CMDLINE=str(tmp_path / "cmdline"))  # fmt: skip
    proc = subprocess.run(["/bin/sh", str(GUESTS_SCRIPT)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    # broken needs no address and fails at once; deb waits for dom0's bridge address first
    assert lines[0] == "XENLIVE-GUESTS FAIL guest broken: xl create: libxl: error: kernel not found"
    assert lines[1] == "XENLIVE-GUESTS bridge xenbr0: dom0 has 10.0.2.15/24 from the network's DHCP"
    assert lines[-1] == "XENLIVE-GUESTS done: 2 guests started, 1 failed"
    assert (out / "broken").read_text() == "failed\nxl create: libxl: error: kernel not found\n"
    log = (tmp_path / "log").read_text()
    assert log.index("xl create") < log.index("dmsetup create xenlive-deb")  # in order: broken, deb, tiny
    assert "snapshot /dev/loop" in log and " N 16" in log and "size=64m" in log
    assert 'extra = "xenlive.dom0=10.0.2.15"' in (run_dir / "cfg/deb.cfg").read_text()

    # XENLIVE-READY then reports the failure, the running guests, and the ready markers.
    (ready_dir / "deb.ready").write_text("5\nXENLIVE-GUEST-NET deb .*ping=ok\n")
    (ready_dir / "tiny.ready").write_text("1\n^XENLIVE-GUEST-READY tiny\n")
    (consoles / "guest-tiny.log").write_text("Linux\nXENLIVE-GUEST-READY tiny\n")
    (consoles / "guest-deb.log").write_text(
        "XENLIVE-GUEST-NET deb iface=enX0 addr=10.0.2.16/24 dom0=10.0.2.15 ping=no\n"
    )
    (tmp_path / "ready.conf").write_text('PROFILE="p"\nGUESTS="tiny broken deb"\n')
    env.update(XENLIVE_READY_CONF=str(tmp_path / "ready.conf"), XENLIVE_READY_DIR=str(ready_dir),
               XENLIVE_CONSOLE_DIR=str(consoles), XENLIVE_READY_WAIT="1")  # fmt: skip
    proc = subprocess.run(["/bin/sh", str(READY_SCRIPT)], capture_output=True, text=True, env=env)
    line = proc.stdout.splitlines()[0]
    assert line.startswith("XENLIVE-READY ")
    ready = json.loads(line.removeprefix("XENLIVE-READY "))
    assert ready["guests"] == {
        "tiny": {"state": "running", "ready": True},
        "broken": {"state": "failed", "reason": "xl create: libxl: error: kernel not found"},
        "deb": {"state": "running", "ready": False, "reason": "ready marker not seen on the console within 5s"},
    }
    verdict = judge_ready(ready)
    assert verdict is not None and "broken: failed" in verdict and "deb: ready marker not seen" in verdict


def test_judge_ready_requires_declared_markers() -> None:
    ok = {"xen": "4.17.7", "guests": {"a": {"state": "running", "ready": True}, "b": {"state": "running"}}}
    assert judge_ready(ok) is None
    late = {"xen": "4.17.7", "guests": {"a": {"state": "running", "ready": False, "reason": "not seen"}}}
    assert judge_ready(late) == "guests not ready: a: ready marker not seen (not seen)"


@pytest.mark.parametrize("suffix", [".ko", ".ko.xz"])  # bookworm's modules, trixie's
def test_debian_guest_module_trim_keeps_netfront(kinds: BuildContext, tmp_path: Path, suffix: str) -> None:
    """The trim hook, run by sh on a fake guest tree (chroot faked on PATH): the PV network driver
    survives whether modules are plain or compressed, and the drivers a PV guest lacks go."""
    deb = next(g for g in kinds.profile.guests if g.name == "deb")
    (trim,) = [h.removeprefix("--customize-hook=") for h in guests_module.debian_hooks(deb, tmp_path / "o")
               if h.startswith("--customize-hook=for m in")]  # fmt: skip
    root = tmp_path / "root"
    mods = root / "usr/lib/modules/6.12.117+deb13-amd64/kernel"
    for rel in ("drivers/net/xen-netfront", "drivers/net/e1000e", "drivers/xen/xen-evtchn", "drivers/gpu/drm",
                "sound/core/snd"):  # fmt: skip
        (mods / (rel + suffix)).parent.mkdir(parents=True, exist_ok=True)
        (mods / (rel + suffix)).write_bytes(b"module")
    (root / "lib").symlink_to("usr/lib")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chroot").write_text('#!/bin/sh\necho "$@" >> "${0%/*}/chroot.log"\n')
    (bin_dir / "chroot").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", trim, "sh", str(root)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    left = sorted(p.relative_to(mods).as_posix() for p in mods.rglob("*") if p.is_file())
    assert left == [f"drivers/net/xen-netfront{suffix}", f"drivers/xen/xen-evtchn{suffix}"]
    assert (bin_dir / "chroot.log").read_text() == f"{root} depmod 6.12.117+deb13-amd64\n"
