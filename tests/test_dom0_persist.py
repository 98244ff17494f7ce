"""dom0's persistence service (usr/lib/xenlive/persist) and the guests' saved writes, for real under
/bin/sh: the tree is a fake under XENLIVE_ROOT, and the commands that need a stick or root (blkid,
e2fsck, mount, umount, df, dmsetup, losetup, ...) are small scripts on PATH that log their arguments."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.profile import load_profile

from .dom0_services import FakeDom0

BUILD = "5fcc3836e9e92afd12a50b42"


def stick(tmp_path: Path, *, label: str = "persistence", fsck: int = 0, persist: str = "/root /etc/ssh",
          guests: str = "name: keeper\n") -> FakeDom0:  # fmt: skip
    """dom0 booted from /dev/sdb, whose third partition carries `label`; e2fsck exits `fsck`."""
    (tmp_path / "p.yaml").write_text(guests)
    dom0 = FakeDom0(tmp_path)
    dom0.conf(PROFILE="keeper", BRIDGE="", DHCP="no", PERSIST_PATHS=persist)
    dom0.guests(load_profile(tmp_path / "p.yaml"))
    dom0.write("proc/mounts", "/dev/sdb /run/live/medium iso9660 ro 0 0\n")
    for n in (1, 2, 3):
        dom0.write(f"sys/block/sdb/sdb{n}/partition", f"{n}\n")
    dom0.write("sys/block/sdb/sdb3/start", "454656\n")
    dom0.write("sys/block/sdb/sdb3/size", "524288\n")
    dom0.write(f"run/live/medium/xenlive/{BUILD}.id", "")
    dom0.write("root/.profile", "# from the image\n")
    log = tmp_path / "calls"
    dom0.command("blkid", f'for arg; do last=$arg; done\n[ "$last" = /dev/sdb3 ] && echo {label}\nexit 0\n')
    dom0.command("e2fsck", f'echo "e2fsck $*" >> {log}\necho "e2fsck said something"\nexit {fsck}\n')
    # mount: a bind copies nothing here; it is logged, and the partition "mounts" as the directory it is.
    dom0.command("mount", f'echo "mount $*" >> {log}\n')
    dom0.command("losetup", f'echo "losetup $*" >> {log}\necho /dev/loop7\n')
    dom0.command("umount", f'echo "umount $*" >> {log}\n')
    dom0.command(
        "df", 'printf "Filesystem 1M-blocks Used Available Capacity Mounted\\n/dev/sdb3 256 10 246 4%% /x\\n"\n'
    )
    return dom0


def calls(tmp_path: Path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def state(dom0: FakeDom0) -> list[str]:
    return dom0.read("run/xenlive/persistence.state").splitlines()


def test_first_use_checks_mounts_claims_the_partition_and_binds_each_directory(tmp_path):
    dom0 = stick(tmp_path)
    proc = dom0.run("persist")
    assert proc.returncode == 0 and proc.stderr == ""
    assert state(dom0) == ["on", "using /dev/sdb3 (246 MiB free)"]
    assert "persistence partition /dev/sdb3 (sectors 454656 to 978943 of sdb) as /dev/loop7" in proc.stdout
    assert dom0.read("run/xenlive/persistence/xenlive/owner") == f"keeper {BUILD}\n"
    root = dom0.root
    assert dom0.read("run/xenlive/persistence/dom0/root/.profile") == "# from the image\n"  # copied once
    assert (root / "run/xenlive/persistence/dom0/etc/ssh").is_dir()
    assert calls(tmp_path) == [
        "losetup -f --show -o 232783872 --sizelimit 268435456 -- /dev/sdb",
        "e2fsck -p -- /dev/loop7",
        f"mount -t ext4 -o rw,noatime,errors=remount-ro -- /dev/loop7 {root}/run/xenlive/persistence",
        f"mount --bind -- {root}/run/xenlive/persistence/dom0/root {root}/root",
        f"mount --bind -- {root}/run/xenlive/persistence/dom0/etc/ssh {root}/etc/ssh",
    ]


def test_a_later_boot_keeps_what_the_partition_has_and_does_not_copy_again(tmp_path):
    dom0 = stick(tmp_path)
    dom0.write("run/xenlive/persistence/xenlive/owner", "keeper 0123\n")
    dom0.write("run/xenlive/persistence/dom0/root/.profile", "# changed on the stick\n")
    proc = dom0.run("persist")
    assert "last used by build 0123" in proc.stdout
    assert dom0.read("run/xenlive/persistence/dom0/root/.profile") == "# changed on the stick\n"
    assert dom0.read("run/xenlive/persistence/xenlive/owner") == f"keeper {BUILD}\n"
    assert state(dom0)[0] == "on"


def test_another_profiles_partition_is_left_alone_and_dom0_runs_from_ram(tmp_path):
    dom0 = stick(tmp_path)
    dom0.write("run/xenlive/persistence/xenlive/owner", "xenoppix 0123\n")
    dom0.run("persist")
    assert state(dom0) == ["ram", "the stick's saved state is another profile's (xenoppix); boot that profile's "
                           "image, or burn the stick again"]  # fmt: skip
    assert dom0.read("run/xenlive/persistence/xenlive/owner") == "xenoppix 0123\n"
    assert not any("--bind" in c for c in calls(tmp_path)) and calls(tmp_path)[-1].startswith("umount")
    assert "belongs to profile xenoppix" in dom0.read("run/xenlive/persistence.warnings")


@pytest.mark.parametrize(("status", "expected"), [(1, "on"), (4, "ram"), (8, "ram")])
def test_a_damaged_file_system_means_ram_and_a_warning(tmp_path, status, expected):
    dom0 = stick(tmp_path, fsck=status)
    dom0.run("persist")
    assert state(dom0)[0] == expected
    warnings = dom0.read("run/xenlive/persistence.warnings")
    if status == 1:
        assert "e2fsck repaired the persistence partition /dev/sdb3" in warnings
    else:
        assert f"could not repair (exit {status}): e2fsck said something" in warnings
        assert "is damaged" in state(dom0)[1] and not any(c.startswith("mount") for c in calls(tmp_path))


def test_a_journal_replayed_after_an_unclean_shutdown_is_not_a_warning(tmp_path):
    dom0 = stick(tmp_path)
    dom0.command(
        "e2fsck", "echo 'persistence: recovering journal'\necho 'persistence: clean, 12/65536 files'\nexit 1\n"
    )
    proc = dom0.run("persist")
    assert state(dom0)[0] == "on" and dom0.read("run/xenlive/persistence.warnings") == ""
    assert "e2fsck replayed the journal of /dev/sdb3" in proc.stdout
    dom0.command("e2fsck", "echo 'recovering journal'\necho 'Inode 12 ref count is 2, should be 1.  FIXED.'\nexit 1\n")
    dom0.run("persist")
    assert "e2fsck repaired the persistence partition /dev/sdb3" in dom0.read("run/xenlive/persistence.warnings")


def test_an_e2fsck_that_hangs_is_cut_off(tmp_path):
    dom0 = stick(tmp_path)
    dom0.command("e2fsck", "sleep 30\n")
    proc = dom0.run("persist", XENLIVE_FSCK_TIMEOUT="1")
    assert proc.returncode == 0 and state(dom0) == [
        "ram",
        "the persistence partition /dev/sdb3 could not be checked in time",
    ]


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (
            {"label": "data"},
            "no partition labelled persistence on the boot medium (sdb); make one with xenlive burn --persistence",
        ),
        ({"persist": "", "guests": "name: keeper\n"}, "the profile keeps nothing on a stick"),
    ],
)
def test_without_a_partition_or_anything_to_keep_it_is_ram(tmp_path, setup, reason):
    dom0 = stick(tmp_path, **setup)
    dom0.run("persist")
    assert state(dom0) == ["ram", reason] and calls(tmp_path) == []


def test_a_cd_is_not_a_disk_with_partitions(tmp_path):
    dom0 = stick(tmp_path)
    dom0.write("proc/mounts", "/dev/sr0 /run/live/medium iso9660 ro 0 0\n")
    dom0.run("persist")
    assert state(dom0) == ["ram", "the boot medium is not a disk with partitions"]


def test_fresh_from_the_menu_ignores_the_stick(tmp_path):
    dom0 = stick(tmp_path)
    dom0.write("proc/cmdline", "boot=live console=hvc0 xenlive.fresh\n")
    dom0.run("persist")
    assert state(dom0)[0] == "fresh" and calls(tmp_path) == []


# --- a guest's saved writes ---------------------------------------------------------------------------

GUEST = "name: keeper\nguests:\n  - {name: keep, kind: debian, persist: true, write_buffer: 64M}\n"


def guest_dom0(tmp_path: Path, persistence: str) -> FakeDom0:
    dom0 = stick(tmp_path, guests=GUEST)
    dom0.write("run/xenlive/persistence.state", f"{persistence}\nwhy\n")
    dom0.write("run/live/medium/guests/keep/disk.img", "image")
    dom0.write("etc/xenlive/guests/keep.disk", "abc\n")
    log = tmp_path / "calls"
    for name in ("losetup", "dmsetup", "mountpoint", "truncate"):
        dom0.command(name, f'echo "{name} $*" >> {log}\n[ "$1" = -f ] || [ "$2" = -f ] && echo /dev/loop9\nexit 0\n')
    dom0.command("fallocate", f'echo "fallocate $*" >> {log}\n: > "$4"\n')
    dom0.command("blockdev", "echo 2048\n")
    dom0.command("xl", f'echo "xl $*" >> {log}\n')
    return dom0


def test_a_persistent_guest_keeps_its_writes_on_the_stick(tmp_path):
    dom0 = guest_dom0(tmp_path, "on")
    proc = dom0.run("guests")
    assert "started guest keep" in proc.stdout, proc.stdout + proc.stderr
    cow = dom0.root / "run/xenlive/persistence/guests/keep.cow"
    assert cow.exists() and dom0.read("run/xenlive/persistence/guests/keep.disk") == "abc\n"
    assert f"fallocate -l 64M -- {cow}.new" in calls(tmp_path)
    assert any(c.endswith("snapshot /dev/loop9 /dev/loop9 P 16") for c in calls(tmp_path)), calls(tmp_path)
    assert dom0.read("run/xenlive/guests/keep.writes") == "stick\n"


def test_writes_saved_for_another_disk_image_are_set_aside(tmp_path):
    dom0 = guest_dom0(tmp_path, "on")
    dom0.write("run/xenlive/persistence/guests/keep.cow", "old writes")
    dom0.write("run/xenlive/persistence/guests/keep.disk", "older-image\n")
    dom0.run("guests")
    assert dom0.read("run/xenlive/persistence/guests/keep.cow.old") == "old writes"
    assert dom0.read("run/xenlive/persistence/guests/keep.disk") == "abc\n"
    assert "disk image changed" in dom0.read("run/xenlive/persistence.warnings")


def test_without_persistence_or_room_the_writes_stay_in_ram(tmp_path):
    dom0 = guest_dom0(tmp_path, "ram")
    dom0.run("guests")
    assert any(c.endswith("N 16") for c in calls(tmp_path)) and dom0.read("run/xenlive/guests/keep.writes") == "ram\n"
    (tmp_path / "full").mkdir()
    dom0 = guest_dom0(tmp_path / "full", "on")
    dom0.command("fallocate", "exit 1\n")
    dom0.run("guests")
    assert dom0.read("run/xenlive/guests/keep.writes") == "ram\n"
    assert "no room for guest keep's 64 MiB" in dom0.read("run/xenlive/persistence.warnings")


def test_ready_reports_persistence_and_warns_of_a_full_partition_and_full_saved_writes(tmp_path):
    dom0 = guest_dom0(tmp_path, "on")
    dom0.run("guests")
    dom0.command("df", 'printf "F 1M-blocks Used Available Capacity M\\n/dev/sdb3 256 250 6 98%% /x\\n"\n')
    dom0.command("dmsetup", 'echo "0 2048 snapshot 120000/131072 64"\n')
    dom0.command(
        "xl", 'case "$1" in info) echo "xen_version : 4.20.1" ;; list) printf "N\\nkeep 1 2 3 -b---- 1\\n" ;; esac\n'
    )
    proc = dom0.run("ready", XENLIVE_READY_WAIT="1", XENLIVE_LOG_PACE="0")
    ready = json.loads(proc.stdout.splitlines()[-1].removeprefix("XENLIVE-READY "))
    assert ready["guests"]["keep"]["writes"] == "stick"
    persistence = ready["persistence"]
    assert persistence["state"] == "on"
    assert any("nearly full (6 of 256 MiB free)" in w for w in persistence["warnings"]), persistence
    assert any("guest keep has used 91 % of its saved disk writes" in w for w in persistence["warnings"]), persistence


def test_ready_says_when_persistence_was_wanted_and_its_unit_did_not_run(tmp_path):
    dom0 = stick(tmp_path)
    dom0.command("xl", 'case "$1" in info) echo "xen_version : 4.20.1" ;; esac\n')
    proc = dom0.run("ready", XENLIVE_READY_WAIT="1", XENLIVE_LOG_PACE="0")
    persistence = json.loads(proc.stdout.splitlines()[-1].removeprefix("XENLIVE-READY "))["persistence"]
    assert persistence == {"state": "ram", "reason": "xenlive-persist did not run", "warnings": []}
