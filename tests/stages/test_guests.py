"""The guests stage: xl configs per kind (golden files), artifacts on the medium, the per-guest cache,
bad guest input at load, and the dom0 start script's failure reporting.

The edges faked here are `run` (mmdebstrap and mkfs.ext4) and, for the dom0 scripts, `xl`,
`losetup` and friends on PATH; everything above them runs for real.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import json
import lzma
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest

from builder import cpio, mmdebstrap
from builder.checks import ProfileFacts
from builder.checks.profile_rules import require_fits
from builder.checks.rules import memory_budget_mib
from builder.context import BuildContext
from builder.errors import CheckFailed, ProfileError, XenliveError
from builder.introspect import BuiltFacts
from builder.profile import Guest, Profile, load_profile
from builder.qemu import judge_ready
from builder.stages import guests as guests_module
from builder.stages.guests import build_guests, busybox_initrd, guest_dom0_packages, guest_table, xl_config

from ..checks.conftest import LINUX_LOADS, bzimage, elf_kernel, xen_kernel_notes
from ..dom0_services import FakeDom0

REPO = Path(__file__).resolve().parents[2]
DISK = b"\x00" * 4096
ISO = b"CD001" * 100
KERNEL = b"vmlinuz of the image guest"
DOM0_ELF = elf_kernel(xen_kernel_notes(), LINUX_LOADS)  # laid out as bookworm's kernel is
DOM0_KERNEL = bzimage(DOM0_ELF)
GUEST_ELF = elf_kernel(xen_kernel_notes(), LINUX_LOADS, ikconfig="CONFIG_XEN=y\n")  # the Debian guest's own


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def read_cpio(data: bytes) -> list[cpio.Entry]:
    """The entries of a newc archive (what builder/cpio.py writes), for reading an initramfs back."""
    entries, pos = [], 0
    while True:
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        name_end = pos + 110 + fields[11]
        name = data[pos + 110 : name_end - 1].decode()
        start = name_end + (-name_end % 4)
        if name == "TRAILER!!!":
            return entries
        entries.append(cpio.Entry(name, fields[1], data[start : start + fields[6]], (fields[9], fields[10])))
        pos = start + fields[6] + (-(start + fields[6]) % 4)


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
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(DOM0_KERNEL)
    (tree / "bin").mkdir()
    (tree / "bin/busybox").write_bytes(b"\x7fELF busybox")
    profile = load_profile(tmp_path / "kinds.yaml")
    c = BuildContext(profile=profile, output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path / "cache")
    c.rootfs = tree
    return c


GUEST_MODULES = "./lib/modules/6.1.0-9-amd64"
# A guest kernel's module database as a Debian kernel has it: ext4 needs crc16 and jbd2, and wants
# crc32c before it (an alias for two modules, one of which only loads on CPUs with SSE 4.2).
GUEST_MODULE_FILES = {
    "modules.dep": b"kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko kernel/fs/jbd2/jbd2.ko.xz\n"
                   b"kernel/lib/crc16.ko:\nkernel/fs/jbd2/jbd2.ko.xz:\nkernel/crypto/crc32c_generic.ko.xz:\n"
                   b"kernel/arch/x86/crypto/crc32c-intel.ko.xz:\nkernel/drivers/block/xen-blkfront.ko.xz:\n"
                   b"kernel/drivers/net/xen-netfront.ko.xz:\nkernel/sound/snd.ko.xz:\n",
    "modules.softdep": b"# Soft dependencies extracted from modules themselves.\nsoftdep ext4 pre: crypto-crc32c\n",
    "modules.alias": b"alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\n",
    "kernel/lib/crc16.ko": b"plain crc16",
    **{path: lzma.compress(f"ko of {path}".encode(), format=lzma.FORMAT_XZ)
       for path in ("kernel/fs/ext4/ext4.ko.xz", "kernel/fs/jbd2/jbd2.ko.xz", "kernel/crypto/crc32c_generic.ko.xz",
                    "kernel/arch/x86/crypto/crc32c-intel.ko.xz", "kernel/drivers/block/xen-blkfront.ko.xz",
                    "kernel/drivers/net/xen-netfront.ko.xz", "kernel/sound/snd.ko.xz")},
}  # fmt: skip


class FakeDebootstrap:
    """Stands in for mmdebstrap (writes a tarball with a kernel, an initrd and modules), tar and mkfs.ext4."""

    def __init__(self) -> None:
        self.commands: list[list[str]] = []

    def __call__(self, cmd: list[Any], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        cmd = [os.fspath(c) for c in cmd]
        self.commands.append(cmd)
        if cmd[0] == "mmdebstrap":
            with tarfile.open(cmd[-2], "w") as tar:
                files = {"./boot/vmlinuz-6.1.0-9-amd64": bzimage(GUEST_ELF),
                         "./boot/initrd.img-6.1.0-9-amd64": b"guest initrd", "./etc/hostname": b"deb\n",
                         "./boot/config-6.1.0-9-amd64": b'CONFIG_LSM_MMAP_MIN_ADDR=0\nCONFIG_LSM="yama,apparmor,bpf"\n',
                         **{f"{GUEST_MODULES}/{rel}": data for rel, data in GUEST_MODULE_FILES.items()}}  # fmt: skip
                for name, data in files.items():
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
        elif cmd[0] == "tar":
            with tarfile.open(cmd[cmd.index("-xpf") + 1]) as tar:
                tar.extractall(cmd[cmd.index("-C") + 1], filter="data")
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
    # pv guests get the ELF inside Debian's bzImage (inflated at build time, not at each xl create)
    assert (medium / "tiny/vmlinuz").read_bytes() == DOM0_ELF
    assert (medium / "box-pvh/vmlinuz").read_bytes() == DOM0_KERNEL  # other types keep the bzImage
    assert b"XENLIVE-GUEST-READY tiny" in gzip.decompress((medium / "tiny/initrd.img").read_bytes())
    assert b"echo box" in gzip.decompress((medium / "box-pvh/initrd.img").read_bytes())
    assert (medium / "deb/vmlinuz").read_bytes() == GUEST_ELF
    # the Debian guest's initramfs is xenlive's: busybox, its /init and the modules that reach its root
    deb = {e.path: e for e in read_cpio(gzip.decompress((medium / "deb/initrd.img").read_bytes()))}
    assert deb["bin/busybox"].data == b"\x7fELF busybox" and b"switch_root" in deb["init"].data
    assert deb["lib/modules/order"].data.decode().splitlines() == [
        "xen_blkfront required", "xen_netfront required", "crc32c_intel optional", "crc32c_generic optional",
        "crc16 required", "jbd2 required", "ext4 required"]  # fmt: skip
    assert deb["lib/modules/ext4.ko"].data == b"ko of kernel/fs/ext4/ext4.ko.xz"  # inflated at build time
    assert deb["lib/modules/crc16.ko"].data == b"plain crc16" and "lib/modules/snd.ko" not in deb
    assert (medium / "deb/disk.img").read_bytes() == b"ext4 of tree"
    assert (medium / "img/vmlinuz").read_bytes() == KERNEL and (medium / "img/disk.img").read_bytes() == DISK
    assert (medium / "win/cdrom.iso").read_bytes() == ISO and not (medium / "win/vmlinuz").exists()
    auto = sorted(p.name for p in (kinds.top / "etc/xen/auto").iterdir())
    assert auto == ["box-pvh.cfg", "deb.cfg", "tiny.cfg", "win.cfg"]  # img has autostart: false
    assert (kinds.top / "etc/xenlive/guests/deb.ready").read_text() == "600\nXENLIVE-GUEST-NET deb .*ping=ok\n"
    # the Debian guest's kernel starts its built-in LSMs but bpf; the profile's cmdline comes last
    assert (
        'extra = "root=/dev/xvda rw lsm=yama,apparmor console=hvc0"'
        in (kinds.top / "etc/xen/guests/deb.cfg").read_text()
    )
    assert not (kinds.top / "etc/xenlive/guests/img.ready").exists()


def test_guest_table_golden(kinds: BuildContext, fake_run: FakeDebootstrap, golden) -> None:
    """guests.tsv: start order, the write buffers of the guests with a disk, the need with each RAM
    disk as placed on the medium (the busybox initrds, the Debian guest's, the image guest's), the
    minimum of the busybox guests, which boot dom0's kernel (0 where the kernel is not a real one)."""
    build_guests(kinds)
    golden("guests/guests.tsv", (kinds.top / "etc/xenlive/guests.tsv").read_text())


def test_guest_table_need_is_what_the_memory_budget_counts(kinds: BuildContext) -> None:
    ramdisks = {"tiny": 3 << 20, "deb": (6 << 20) + 1, "img": 1}
    rows = [line.split("\t") for line in guest_table(kinds.profile, ramdisks).splitlines() if line[0] != "#"]
    _, parts = memory_budget_mib(kinds.profile, 4096, BuiltFacts(ramdisk_bytes=ramdisks))
    table = {row[0]: int(row[7]) for row in rows if row[4] == "yes"}
    budget = {part.split()[0]: int(part.split()[1]) for part in parts[2:]}  # after Xen's and dom0's shares
    assert table == budget
    assert table["deb"] == 256 + 4 + 2 + 7 + 64  # memory, overhead, 1 %, the RAM disk rounded up, the writes


def test_debian_guest_mmdebstrap_command(kinds: BuildContext, fake_run: FakeDebootstrap) -> None:
    build_guests(kinds)
    (cmd,) = [c for c in fake_run.commands if c[0] == "mmdebstrap"]
    assert "--variant=minbase" in cmd and "--format=tar" in cmd
    assert next(a for a in cmd if a.startswith("--include=")) == (
        "--include=linux-image-amd64,initramfs-tools,systemd-sysv,udev,iproute2,iputils-ping,xenstore-utils,"
        "openssh-server"
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
    # dom0's address reaches the guest through xenstore, so its config needs none and it starts at once
    assert (
        "xenstore-read xenlive/dom0" in script
        and "@DOM0_ADDRESS@" not in xl_config(kinds.profile, deb).split("\n", 2)[2]
    )


@pytest.mark.parametrize(("persist", "storage"), [(False, ["Storage=volatile"]), (True, [])])
def test_debian_guest_journal_stays_in_ram_unless_its_writes_persist(
    kinds: BuildContext, persist: bool, storage: list[str]
) -> None:
    deb = dataclasses.replace(next(g for g in kinds.profile.guests if g.name == "deb"), persist=persist)
    text, _ = guests_module.debian_overlay(deb)["etc/systemd/journald.conf.d/xenlive.conf"]
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings == ["[Journal]", *storage]


def fake_guest_commands(bin_dir: Path, calls: Path) -> None:
    """ip, xenstore-read, ping and sleep for the guest's network proof: each logs its call; ip has
    the address only once the fake wait-online has run (or after one sleep, when polling)."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    scripts = {
        "ip": 'echo "ip $*" >> "$CALLS"; [ -e "$CALLS.up" ] && echo "2: enX0    inet 10.0.2.16/24 brd 10.0.2.255"',
        "xenstore-read": 'echo "xenstore-read $*" >> "$CALLS"; echo 10.0.2.15',
        "ping": 'echo "ping $*" >> "$CALLS"',
        "sleep": 'echo "sleep $*" >> "$CALLS"; touch "$CALLS.up"',
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize("waiter", [True, False])
def test_debian_guest_network_proof_waits_on_networkd_not_by_polling(
    kinds: BuildContext, tmp_path: Path, waiter: bool
) -> None:
    deb = next(g for g in kinds.profile.guests if g.name == "deb")
    script, _ = guests_module.debian_overlay(deb)["usr/local/sbin/xenlive-guest-net"]
    root, calls = tmp_path / "root", tmp_path / "calls"
    (root / "dev").mkdir(parents=True)
    fake_guest_commands(tmp_path / "bin", calls)
    if waiter:
        wait_online = root / "usr/lib/systemd/systemd-networkd-wait-online"
        wait_online.parent.mkdir(parents=True)
        wait_online.write_text('#!/bin/sh\necho "wait-online $*" >> "$CALLS"; touch "$CALLS.up"\n')
        wait_online.chmod(0o755)
    (tmp_path / "script").write_text(script)
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "XENLIVE_ROOT": str(root), "CALLS": str(calls)}
    out = subprocess.run(["sh", str(tmp_path / "script")], env=env, capture_output=True, text=True, check=True)
    line = "XENLIVE-GUEST-NET deb iface=enX0 addr=10.0.2.16/24 dom0=10.0.2.15 ping=ok boots=1"
    assert out.stdout == line + "\n" and (root / "dev/console").read_text() == f"\n{line}\n"
    logged = calls.read_text().splitlines()
    if waiter:  # one waiter that networkd wakes, then the address at the first look
        assert logged[0] == "wait-online --any --ipv4 --timeout=110" and not any(c.startswith("sleep") for c in logged)
    else:  # no waiter in the image: the proof polls once a second
        assert logged.count("sleep 1") == 1 and len([c for c in logged if c.startswith("ip ")]) == 2
    assert (root / "var/lib/xenlive/boots").read_text() == "1\n"


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
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(CheckFailed) as info:
        require_fits(load_profile(tmp_path / "p.yaml"), ProfileFacts(), ())
    assert info.value.message.endswith("p.yaml:3:15: media.size_limit: the guests' files: 4122 bytes, more than"
                                       " media.size_limit (2048 bytes); raise media.size_limit, or drop dom0 packages"
                                       " or guests")  # fmt: skip
    assert info.value.exit_code == 3
    require_fits(load_profile(tmp_path / "p.yaml"), ProfileFacts(), ("image-fits-medium",))


def test_debian_guest_refuses_a_kernel_and_hvm(tmp_path: Path) -> None:
    message = _load_error(
        tmp_path, "name: p\nguests:\n  - name: a\n    kind: debian\n    type: hvm\n    kernel: dom0x\n"
    )
    assert "guests[0].kernel: a debian guest boots the kernel" in message
    assert "guests[0].type: a debian guest boots its own kernel directly; use type pv or pvh" in message


def test_bad_guest_is_exit_2_without_traceback(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("name: p\nguests:\n  - name: a\n    kind: windows\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "show", str(tmp_path / "bad.yaml")],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.yaml:4:11: guests[0].kind: expected one of busybox, debian, image" in proc.stderr


def test_xenoppix_carries_three_kinds_with_ready_markers() -> None:
    profile = load_profile(REPO / "builder/profiles/xenoppix.yaml")
    assert {g.kind.value for g in profile.guests} >= {"busybox", "debian"} and len(profile.guests) >= 3
    assert all(g.ready for g in profile.guests)


# --- boot-time failure reporting: the dom0 scripts with a fake xl -----------------------------------

FAKE_COMMANDS = {
    # `xl create` fails for the guest named "broken"; the log records what ran.
    "xl": 'echo "xl $*" >> "$FAKE_LOG"\ncase "$1" in\n'
    '  create) grep -q \'name = "broken"\' "$2" && { echo "Parsing config from $2"; '
    'echo "libxl: error: kernel not found" >&2; exit 3; }; exit 0 ;;\n'
    '  domid) grep -nx "$2" "$FAKE_RUNNING" | cut -d: -f1 | grep . ;;\n'
    '  list) grep -qx "$2" "$FAKE_RUNNING"'
    ' && printf "Name ID Mem VCPUs State Time\\n%s 1 96 1 -b---- 1.0\\n" "$2" ;;\n'
    '  info) printf "xen_version : 4.17.7\\n" ;;\nesac\n',
    "ip": '[ "$1 $2" = "-4 -o" ] && echo "5: xenbr0 inet 10.0.2.15/24 brd 10.0.2.255 scope global xenbr0"\nexit 0\n',
    "losetup": 'echo "losetup $*" >> "$FAKE_LOG"\necho /dev/loop$$\n',
    "xenstore-write": 'echo "xenstore-write $*" >> "$FAKE_LOG"\n',
    "mountpoint": "exit 1\n",
    "mount": 'echo "mount $*" >> "$FAKE_LOG"\n',
    "truncate": "exit 0\n",
    "blockdev": "echo 8192\n",
    "dmsetup": 'echo "dmsetup $*" >> "$FAKE_LOG"\n',
}
START_PROFILE = """\
name: p
guests:
  - {name: tiny, order: 30, ready: "^XENLIVE-GUEST-READY tiny", ready_timeout: 1}
  - {name: broken, order: 10}
  - {name: deb, kind: debian, order: 20, ready: "XENLIVE-GUEST-NET deb .*ping=ok", ready_timeout: 5}
  - {name: skipped, order: 40}
  - {name: spare, autostart: false}
"""


def test_a_guest_that_fails_to_start_is_reported_and_the_others_start(tmp_path: Path) -> None:
    dom0 = FakeDom0(tmp_path)
    for name, script in FAKE_COMMANDS.items():
        dom0.command(name, script)
    (tmp_path / "p.yaml").write_text(START_PROFILE)
    profile = load_profile(tmp_path / "p.yaml")
    dom0.guests(profile)
    dom0.write("etc/xen/auto/deb.cfg", 'name = "deb"\nextra = "xenlive.dom0=@DOM0_ADDRESS@"\n')
    for guest in profile.guests:
        if guest.ready:
            dom0.write(f"etc/xenlive/guests/{guest.name}.ready", guests_module.render("guest.ready.j2", guest=guest))
    # The hardware check took "skipped" out before xenlive-guests ran.
    dom0.path("etc/xen/auto/skipped.cfg").unlink()
    dom0.write("run/xenlive/hwcheck/skipped", "skipped\nhardware check [memory-budget] needs 133 MiB\nmemory-budget\n")
    dom0.write("run/live/medium/guests/deb/disk.img", "disk")
    dom0.conf(BRIDGE="xenbr0", DHCP="yes", ADDRESS_WAIT="1", PROFILE="p")
    (tmp_path / "running").write_text("tiny\ndeb\n")
    dom0.env.update(FAKE_LOG=str(tmp_path / "log"), FAKE_RUNNING=str(tmp_path / "running"))
    proc = dom0.run("guests")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    lines = proc.stdout.splitlines()
    # broken needs no address and fails at once; deb waits for dom0's bridge address first
    assert lines == [
        "XENLIVE-GUESTS FAIL guest broken: xl create: libxl: error: kernel not found",
        "XENLIVE-GUESTS bridge xenbr0: dom0 has 10.0.2.15/24 from the network's DHCP",
        "XENLIVE-GUESTS started guest deb",
        "XENLIVE-GUESTS started guest tiny",
        "XENLIVE-GUESTS done: 2 guests started, 1 failed",
    ]
    assert dom0.read("run/xenlive/guests/broken") == "failed\nxl create: libxl: error: kernel not found\n"
    log = (tmp_path / "log").read_text()
    assert log.index("xl create") < log.index("dmsetup create xenlive-deb")  # in order: broken, deb, tiny
    assert "snapshot /dev/loop" in log and " N 16" in log and "size=64m" in log
    assert f"losetup -r -f --show {dom0.root}/run/live/medium/guests/deb/disk.img" in log
    assert 'extra = "xenlive.dom0=10.0.2.15"' in dom0.read("run/xenlive/cfg/deb.cfg")
    assert "skipped" not in log and "spare" not in log
    # then every guest that started learns dom0's address in its own xenstore directory (ids: FAKE_RUNNING's lines)
    assert [line for line in log.splitlines() if line.startswith("xenstore-write")] == [
        "xenstore-write /local/domain/2/xenlive/dom0 10.0.2.15",
        "xenstore-write /local/domain/1/xenlive/dom0 10.0.2.15",
    ]

    # XENLIVE-READY then reports the failure, the running guests, the skipped one and the ready markers.
    dom0.write("var/log/xen/console/guest-tiny.log", "Linux\nXENLIVE-GUEST-READY tiny\n")
    dom0.write("var/log/xen/console/guest-deb.log",
               "XENLIVE-GUEST-NET deb iface=enX0 addr=10.0.2.16/24 dom0=10.0.2.15 ping=no\n")  # fmt: skip
    proc = dom0.run("ready", XENLIVE_READY_WAIT="1", XENLIVE_LOG_PACE="0")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (line,) = proc.stdout.splitlines()
    assert dom0.systemctl_log.read_text() == "--no-block start xenlive-machine.service\n"  # only once READY is out
    assert line.startswith("XENLIVE-READY ")
    ready = json.loads(line.removeprefix("XENLIVE-READY "))
    assert ready["profile"] == "p" and ready["xen"] == "4.17.7"
    assert list(ready["guests"]) == ["broken", "deb", "tiny", "skipped", "spare"]  # every guest, in start order
    assert ready["guests"] == {
        "tiny": {"state": "running", "ready": True},
        "broken": {"state": "failed", "reason": "xl create: libxl: error: kernel not found",
                   "xl": ["libxl: error: kernel not found"], "console": []},
        "deb": {"state": "running", "ready": False, "reason": "ready marker not seen on the console within 5s"},
        "skipped": {"state": "skipped", "reason": "hardware check [memory-budget] needs 133 MiB",
                    "check": "memory-budget"},
        "spare": {"state": "not-autostarted"},
    }  # fmt: skip
    console = dom0.read("dev/console").splitlines()
    assert "XENLIVE-GUEST-MARKER tiny: XENLIVE-GUEST-READY tiny" in console
    # every guest's console log, line by line, after the readiness line, then the line that ends them
    at = console.index(line)
    assert console[at - 1] == "" and console[-1] == "XENLIVE-GUEST-LOGS-DONE"  # the marker starts a line
    assert [c for c in console[at:] if c.startswith("XENLIVE-GUEST-LOG ")] == [
        "XENLIVE-GUEST-LOG deb XENLIVE-GUEST-NET deb iface=enX0 addr=10.0.2.16/24 dom0=10.0.2.15 ping=no",
        "XENLIVE-GUEST-LOG tiny Linux",
        "XENLIVE-GUEST-LOG tiny XENLIVE-GUEST-READY tiny",
    ]
    verdict = judge_ready(ready)
    assert verdict is not None and "broken: failed" in verdict and "deb: ready marker not seen" in verdict


def test_safe_mode_starts_no_guest_and_ready_says_so(tmp_path: Path) -> None:
    dom0 = FakeDom0(tmp_path)
    for name, script in FAKE_COMMANDS.items():
        dom0.command(name, script)
    (tmp_path / "p.yaml").write_text(START_PROFILE)
    dom0.guests(load_profile(tmp_path / "p.yaml"))
    dom0.write("proc/cmdline", "boot=live xenlive.safe nomodeset\n")
    dom0.conf(BRIDGE="xenbr0", DHCP="yes", ADDRESS_WAIT="1", PROFILE="p")
    dom0.env.update(FAKE_LOG=str(tmp_path / "log"), FAKE_RUNNING=str(tmp_path / "running"))
    proc = dom0.run("guests")
    assert proc.stdout == "XENLIVE-GUESTS safe mode: no guest is started\n"
    assert not (tmp_path / "log").exists()  # not one xl command
    ready = json.loads(dom0.run("ready").stdout.removeprefix("XENLIVE-READY "))
    safe = {"state": "skipped", "reason": "safe mode: guests are not started"}
    assert ready["guests"] == {"tiny": safe, "broken": safe, "deb": safe, "skipped": safe,
                               "spare": {"state": "not-autostarted"}}  # fmt: skip
    assert judge_ready(ready) is not None  # guests the profile starts did not run


XL_SHORT_OF_MEMORY = """\
Parsing config from /run/xenlive/cfg/small.cfg
xc: error: panic: xg_dom_core.c:536: xc_dom_chk_alloc_pages: segment kernel too large (0x3a00 > 0x4200 - \
0x1000 pages): Out of memory
libxl: error: libxl_dom.c:594:libxl__build_dom: xc_dom_build_image failed: No such file or directory
libxl: error: libxl_create.c:1640:domcreate_rebuild_done: Domain 4:cannot (re-)build domain: -3
libxl: error: libxl_domain.c:1183:libxl__destroy_domid: Domain 4:Non-existant domain
libxl: error: libxl_domain.c:1137:domain_destroy_callback: Domain 4:Unable to destroy guest
libxl: error: libxl_domain.c:1064:domain_destroy_cb: Domain 4:Destruction of domain failed
"""  # what xl create printed for a PV busybox guest given 66 MiB (bench/guest_memory.py)
OOM_CONSOLE = """\
[    0.000000] Linux version 6.1.0-50-amd64
[    1.904000] Freeing unused kernel image (initmem) memory: 2804K\r
[    2.101000] Run /init as init process
[    2.300000] Out of memory and no killable processes...
[    2.300001] Kernel panic - not syncing: System is deadlocked on memory
[    2.300002] CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-50-amd64 #1  Debian 6.1.153-1
"""
XL_LOG_CRASH = """\
Waiting for domain crashy (domid 5) to die [pid 901]
Domain 5 has shut down, reason code 3 0x3
Action for shutdown reason code 3 is destroy
Domain 5 needs to be cleaned up: destroying the domain
Done. Exiting now
"""


def test_failed_guests_say_why_and_what_to_change(tmp_path: Path) -> None:
    """One guest the domain builder refuses (too little memory for its layout), one that starts and
    dies (out of memory before its init ran): XENLIVE-READY carries the builder's own message, how
    the domain ended, the console's telling line and its last lines, and the memory it needs."""
    dom0 = FakeDom0(tmp_path)
    for name, script in FAKE_COMMANDS.items():
        dom0.command(name, script)
    dom0.command(
        "xl",
        FAKE_COMMANDS["xl"].replace(
            "  create) ", '  create) grep -q \'name = "small"\' "$2" && { cat "$FAKE_XL_OUT" >&2; exit 3; }\n   '
        ),
    )
    (tmp_path / "xl-out").write_text(XL_SHORT_OF_MEMORY)
    profile = Profile(
        name="p", guests=(Guest(name="small", memory=66, order=1), Guest(name="crashy", memory=80, order=2))
    )
    dom0.guests(profile, minimums={"small": 93, "crashy": 93})
    dom0.conf(PROFILE="p")
    (tmp_path / "running").write_text("")
    dom0.env.update(FAKE_LOG=str(tmp_path / "log"), FAKE_RUNNING=str(tmp_path / "running"),
                    FAKE_XL_OUT=str(tmp_path / "xl-out"))  # fmt: skip
    assert dom0.run("guests").stdout.splitlines() == [
        "XENLIVE-GUESTS FAIL guest small: xl create: xc: error: panic: xc_dom_chk_alloc_pages: segment kernel too"
        " large (0x3a00 > 0x4200 - 0x1000 pages): Out of memory",
        "XENLIVE-GUESTS started guest crashy",
        "XENLIVE-GUESTS done: 1 guests started, 1 failed",
    ]
    assert dom0.read("run/xenlive/guests/crashy") == "started\n"
    assert dom0.read("run/xenlive/guests/small.xl") == XL_SHORT_OF_MEMORY
    # crashy died a moment after it started: its console and xl's log of it tell how.
    dom0.write("var/log/xen/console/guest-crashy.log", OOM_CONSOLE)
    dom0.write("var/log/xen/xl-crashy.log", XL_LOG_CRASH)
    started = time.monotonic()
    proc = dom0.run("ready", XENLIVE_READY_WAIT="30", XENLIVE_LOG_PACE="0", XENLIVE_CONSOLE_TAIL="3")
    assert time.monotonic() - started < 20  # a guest xenlive-guests started is not waited for
    assert proc.stderr == ""
    ready = json.loads(proc.stdout.removeprefix("XENLIVE-READY "))
    hint = "it has {} MiB, less than the 93 MiB it needs to start (set memory: 93M)"
    assert ready["guests"] == {
        "small": {
            "state": "failed",
            "reason": "xl create: xc: error: panic: xc_dom_chk_alloc_pages: segment kernel too large"
            f" (0x3a00 > 0x4200 - 0x1000 pages): Out of memory ({hint.format(66)})",
            "xl": ["xc: error: panic: xc_dom_chk_alloc_pages: segment kernel too large (0x3a00 > 0x4200 - 0x1000"
                   " pages): Out of memory"],
            "console": [],
        },
        "crashy": {
            "state": "failed",
            "reason": "the domain crashed while starting: Out of memory and no killable processes..."
            f" ({hint.format(80)})",
            "xl": ["Domain 5 has shut down, reason code 3 0x3", "Action for shutdown reason code 3 is destroy"],
            "console": ["Out of memory and no killable processes...",
                        "Kernel panic - not syncing: System is deadlocked on memory",
                        "CPU: 0 PID: 1 Comm: init Not tainted 6.1.0-50-amd64 #1  Debian 6.1.153-1"],
        },
    }  # fmt: skip
    console = dom0.read("dev/console").splitlines()
    logged = [line.removeprefix("XENLIVE-GUEST-LOG crashy ") for line in console if "XENLIVE-GUEST-LOG " in line]
    assert logged == [line.replace("\r", "") for line in OOM_CONSOLE.splitlines()]  # the whole log, as it was
    assert "small: failed (xl create: xc: error: panic:" in (judge_ready(ready) or "")


def test_judge_ready_requires_declared_markers() -> None:
    ok = {"xen": "4.17.7", "guests": {"a": {"state": "running", "ready": True}, "b": {"state": "running"},
                                      "c": {"state": "not-autostarted"}}}  # fmt: skip
    assert judge_ready(ok) is None
    late = {"xen": "4.17.7", "guests": {"a": {"state": "running", "ready": False, "reason": "not seen"}}}
    assert judge_ready(late) == "guests not ready: a: ready marker not seen (not seen)"


# --- the files and hooks of the guests stage, byte for byte ----------------------------------------

SHIPPED = sorted(p.stem for p in (REPO / "builder/profiles").glob("*.yaml"))
HOOK_USERS_PROFILE = """\
name: hooks
guests:
  - name: deb
    kind: debian
    debian:
      users:
        - {name: root, password: "!"}
        - {name: alice, groups: [sudo, users]}
        - {name: bob, uid: 1500, comment: "Bob O'Neil", shell: /bin/sh, password: "*"}
"""


def guest_stage_files(ctx: BuildContext) -> str:
    """The guests' ready files in dom0 and the mmdebstrap hooks of each Debian guest, each under a
    "==> what <==" line. (The xl configs and the guest table have golden files of their own.)"""
    build_guests(ctx)
    conf = ctx.top / "etc/xenlive/guests"
    files = sorted(p for p in conf.rglob("*") if p.is_file())
    text = "".join(f"==> {p.relative_to(ctx.top).as_posix()} <==\n{p.read_text()}" for p in files)
    for guest in ctx.profile.guests:
        if guest.kind == "debian":
            hooks = guests_module.debian_hooks(guest, Path("/OVERLAY"))
            text += f"==> mmdebstrap hooks of {guest.name} <==\n" + "".join(f"{h}\n" for h in hooks)
    return text


def shipped_ctx(tmp_path: Path, spec: Path) -> BuildContext:
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(DOM0_KERNEL)
    (tree / "bin").mkdir()
    (tree / "bin/busybox").write_bytes(b"\x7fELF busybox")
    c = BuildContext(profile=load_profile(spec), output=tmp_path / "o.iso", workdir=tmp_path / "w",
                     cache_dir=tmp_path / "cache")  # fmt: skip
    c.rootfs = tree
    return c


@pytest.mark.parametrize("name", SHIPPED)
def test_guest_stage_files_of_shipped_profiles_golden(tmp_path: Path, fake_run: FakeDebootstrap, golden,
                                                      name: str) -> None:  # fmt: skip
    golden(f"{name}/guest-stage.txt", guest_stage_files(shipped_ctx(tmp_path, REPO / f"builder/profiles/{name}.yaml")))


def test_guest_stage_files_golden(kinds: BuildContext, fake_run: FakeDebootstrap, golden) -> None:
    golden("guests/guest-stage.txt", guest_stage_files(kinds))


def test_mmdebstrap_hooks_for_every_kind_of_account_golden(tmp_path: Path, golden) -> None:
    (tmp_path / "hooks.yaml").write_text(HOOK_USERS_PROFILE)
    (deb,) = load_profile(tmp_path / "hooks.yaml").guests
    golden("guests/deb-account-hooks.txt", "".join(f"{h}\n" for h in guests_module.debian_hooks(deb, Path("/O"))))


def run_hook(hook: str, root: Path, tmp_path: Path) -> str:
    """Run one mmdebstrap hook's shell on the tree `root` as mmdebstrap would, with chroot faked on
    PATH; return what chroot was asked to run."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "chroot").write_text('#!/bin/sh\necho "$@" >> "${0%/*}/chroot.log"\n')
    (bin_dir / "chroot").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["sh", "-c", hook, "sh", str(root)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return (bin_dir / "chroot.log").read_text()


def guest_tree(root: Path) -> Path:
    """A merged-/usr guest tree whose /lib is an absolute link, as a hostile package could make it."""
    modules = root / "usr/lib/modules/6.1.0-9-amd64"
    for rel, data in GUEST_MODULE_FILES.items():
        (modules / rel).parent.mkdir(parents=True, exist_ok=True)
        (modules / rel).write_bytes(data)
    (root / "lib").symlink_to("/usr/lib")  # followed inside the tree, as the guest follows it
    return root


def test_debian_initrd_modules_follow_the_trees_links_inside_it_only(tmp_path: Path) -> None:
    tree = guest_tree(tmp_path / "tree")
    sealed = guests_module.initrd_modules(tree, tmp_path / "entry")
    assert sealed[0] == "entry/order" and "entry/ext4.ko" in sealed
    assert (tmp_path / "entry/ext4.ko").read_bytes() == b"ko of kernel/fs/ext4/ext4.ko.xz"
    # a module that is a link to a host file is refused, and nothing of that file is read
    secret = tmp_path / "host-secret.ko"
    secret.write_bytes(b"host data")
    ext4 = tree / "usr/lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko.xz"
    ext4.unlink()
    ext4.symlink_to(secret)
    with pytest.raises(XenliveError, match="ext4.ko.xz is not a regular file"):
        guests_module.initrd_modules(tree, tmp_path / "again")
    # a directory of the path that links outside resolves inside the tree, where the module is missing
    ext4.unlink()
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/ext4.ko.xz").write_bytes(b"host data")
    shutil.rmtree(ext4.parent)
    ext4.parent.symlink_to(tmp_path / "outside")
    with pytest.raises(XenliveError, match="has no /usr/lib/modules/6.1.0-9-amd64/kernel/fs/ext4/ext4.ko.xz"):
        guests_module.initrd_modules(tree, tmp_path / "third")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (b'CONFIG_LSM="landlock,lockdown,yama,apparmor,bpf,ipe"\n', "lsm=landlock,lockdown,yama,apparmor,ipe"),
        (b'CONFIG_LSM="landlock,yama,apparmor"\n', ""),  # no bpf: the kernel's own choice stays
        (b"# CONFIG_BPF_LSM is not set\n", ""),  # no list
        (b'CONFIG_LSM="yama,bpf --init=/bin/sh"\n', ""),  # not a list: nothing of it reaches the command line
        (b'CONFIG_LSM="yama,bpf" console=ttyS0\n', ""),
        (None, ""),  # no config file
    ],
)
def test_debian_guest_kernel_options_drop_the_bpf_lsm(tmp_path: Path, config: bytes | None, expected: str) -> None:
    tree = guest_tree(tmp_path / "tree")
    if config is not None:
        (tree / "boot").mkdir()
        (tree / "boot/config-6.1.0-9-amd64").write_bytes(config)
    assert guests_module.kernel_options(tree) == expected


def test_debian_guest_kernel_options_read_no_host_file(tmp_path: Path) -> None:
    tree = guest_tree(tmp_path / "tree")
    host = tmp_path / "host-config"
    host.write_bytes(b'CONFIG_LSM="yama,bpf"\n')
    (tree / "boot").mkdir()
    (tree / "boot/config-6.1.0-9-amd64").symlink_to(host)
    with pytest.raises(XenliveError, match="is not a regular file"):
        guests_module.kernel_options(tree)
    (tree / "boot/config-6.1.0-9-amd64").unlink()
    (tree / "boot").rmdir()
    (tree / "boot").symlink_to(tmp_path)  # a directory link resolves inside the tree, where there is no config
    assert guests_module.kernel_options(tree) == ""


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
    chroot_log = run_hook(trim, root, tmp_path)
    left = sorted(p.relative_to(mods).as_posix() for p in mods.rglob("*") if p.is_file())
    assert left == [f"drivers/net/xen-netfront{suffix}", f"drivers/xen/xen-evtchn{suffix}"]
    assert chroot_log == f"{root} depmod 6.12.117+deb13-amd64\n"


def test_debian_guest_masks_what_slows_a_live_boot_as_dom0_does(kinds: BuildContext, tmp_path: Path) -> None:
    """The services hook, run by sh on a fake guest tree (chroot faked on PATH): every unit and
    generator masked-units.txt marks `guests` is linked to /dev/null, and only those."""
    deb = next(g for g in kinds.profile.guests if g.name == "deb")
    (services,) = [h.removeprefix("--customize-hook=") for h in guests_module.debian_hooks(deb, tmp_path / "o")
                   if "systemctl enable" in h]  # fmt: skip
    root = tmp_path / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    chroot_log = run_hook(services, root, tmp_path)
    links = sorted(p.relative_to(root / "etc/systemd").as_posix() for p in (root / "etc/systemd").rglob("*")
                   if p.is_symlink() and os.readlink(p) == "/dev/null")  # fmt: skip
    assert links == sorted(guests_module.GUEST_MASKED)
    assert {"system/ldconfig.service", "system/systemd-hwdb-update.service",
            "system-generators/systemd-gpt-auto-generator"} <= set(links)  # fmt: skip
    # A guest's command line may carry ip= (guests[].cmdline): what reads it stays.
    assert "system/systemd-network-generator.service" not in links
    enabled = "systemctl enable systemd-networkd.service xenlive-guest-net.service"
    assert chroot_log == f"{root} {enabled}\n"


def test_a_debian_guests_cache_key_follows_its_hook_templates(monkeypatch) -> None:
    """Editing what a hook runs (its template) must rebuild the guest, not reuse the cached one."""
    guest = next(g for g in load_profile("xenoppix").guests if g.debian is not None)
    before = guests_module.debian_key(guest)
    assert guests_module.debian_key(guest) == before  # stable for the same inputs
    real = mmdebstrap.render

    def edited(name: str, **context: Any) -> str:
        text = real(name, **context)
        return text + "# edited\n" if name == "mmdebstrap/services.j2" else text

    monkeypatch.setattr(mmdebstrap, "render", edited)
    assert guests_module.debian_key(guest) != before
