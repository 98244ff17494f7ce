"""builder.devices against fake sysfs trees: which disks burn accepts, refuses, or needs --force for."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from builder.devices import (
    Host,
    acceptable_devices,
    find_block_device,
    identity_changes,
    list_block_devices,
    read_mounts,
    refusals,
    system_disks,
)
from tests.test_media_support import (
    MMC_PATH,
    SATA_PATH,
    SR_PATH,
    USB_PATH,
    VIRTUAL_PATH,
    FakeDisk,
    FakePartition,
    fake_host,
)

GiB = 2**30
IMAGE = 300 * 2**20


def laptop(tmp_path: Path) -> Host:
    """A laptop: system on sda2 (SATA), a USB stick sdb, an SD card, a DVD drive and a loop device."""
    disks = [
        FakeDisk("sda", (8, 0), 500 * GiB, where=SATA_PATH, model="Samsung SSD 870",
                 partitions=[FakePartition("sda1", (8, 1), GiB), FakePartition("sda2", (8, 2), 499 * GiB)]),
        FakeDisk("sdb", (8, 16), 16 * GiB, where=USB_PATH, removable=True, vendor="SanDisk", model="Cruzer Blade",
                 partitions=[FakePartition("sdb1", (8, 17), 16 * GiB)]),
        FakeDisk("mmcblk0", (179, 0), 32 * GiB, where=MMC_PATH),
        FakeDisk("sr0", (11, 0), 0, where=SR_PATH, removable=True, scsi_type="5", model="DVD-RW DRW-24D5MT"),
        FakeDisk("loop0", (7, 0), GiB, where=VIRTUAL_PATH),
    ]  # fmt: skip
    mounts = [((8, 2), "/", "/dev/sda2"), ((8, 1), "/boot/efi", "/dev/sda1")]
    return fake_host(tmp_path, disks, mounts)


def test_usb_stick_is_read_from_sysfs(tmp_path):
    stick = find_block_device((8, 16), laptop(tmp_path))
    assert stick is not None
    assert (stick.name, stick.size, stick.removable, stick.transport) == ("sdb", 16 * GiB, True, "usb")
    assert stick.model == "SanDisk Cruzer Blade"
    assert [p.name for p in stick.partitions] == ["sdb1"]
    assert not stick.system and not stick.mountpoints
    assert "model       SanDisk Cruzer Blade" in stick.describe()
    assert refusals(stick, IMAGE).blocking(force=False) == []


def test_devices_lists_only_removable_disks_and_optical_drives(tmp_path):
    listed = {d.name: problems for d, problems in acceptable_devices(laptop(tmp_path))}
    assert set(listed) == {"sdb", "mmcblk0", "sr0"}  # not the SATA system disk, not the loop device
    assert listed == {"sdb": [], "mmcblk0": [], "sr0": []}


def test_sd_card_without_removable_flag_counts_as_hotplug(tmp_path):
    card = find_block_device((179, 0), laptop(tmp_path))
    assert card is not None and not card.removable and card.transport == "mmc" and card.hotplug


def test_usb_disk_that_reports_removable_0_is_still_accepted(tmp_path):
    host = fake_host(tmp_path, [FakeDisk("sdc", (8, 32), 64 * GiB, where=USB_PATH, model="USB SSD")])
    ssd = find_block_device((8, 32), host)
    assert ssd is not None and not ssd.removable and ssd.hotplug
    assert refusals(ssd, IMAGE).blocking(force=False) == []


def test_system_disk_is_refused_even_with_force(tmp_path):
    host = laptop(tmp_path)
    assert system_disks(host) == {"sda2", "sda"}
    sda = find_block_device((8, 0), host)
    assert sda is not None and sda.system
    blocking = refusals(sda, IMAGE).blocking(force=True)
    assert "/dev/sda holds the running system (/); xenlive never writes to it" in blocking
    assert "/dev/sda1 is mounted on /boot/efi; unmount it first" in blocking


def test_partition_of_system_disk_is_refused(tmp_path):
    sda2 = find_block_device((8, 2), laptop(tmp_path))
    assert sda2 is not None and sda2.parent == "sda" and sda2.system
    blocking = refusals(sda2, IMAGE).blocking(force=True)
    assert any("is a partition of /dev/sda" in r for r in blocking)
    assert any("holds the running system" in r for r in blocking)


def test_disks_under_lvm_root_are_system_disks(tmp_path):
    disks = [
        FakeDisk("sda", (8, 0), 100 * GiB, where=SATA_PATH, partitions=[FakePartition("sda1", (8, 1), 100 * GiB,
                 holders=("dm-0",))]),
        FakeDisk("nvme0n1", (259, 0), 100 * GiB, where="devices/pci0000:00/0000:00:1d.0/nvme/nvme0"),
        FakeDisk("dm-0", (254, 0), 200 * GiB, where=VIRTUAL_PATH, slaves=("sda1", "nvme0n1")),
    ]  # fmt: skip
    host = fake_host(tmp_path, disks, [((254, 0), "/", "/dev/mapper/vg-root")])
    assert system_disks(host) == {"dm-0", "sda1", "sda", "nvme0n1"}
    nvme = find_block_device((259, 0), host)
    assert nvme is not None and nvme.system and nvme.transport == "nvme"
    sda = find_block_device((8, 0), host)
    assert sda is not None
    assert any("in use by dm-0" in r for r in refusals(sda, IMAGE).absolute)


def test_mounted_usb_stick_is_refused_even_with_force(tmp_path):
    disks = [FakeDisk("sdb", (8, 16), 8 * GiB, removable=True, partitions=[FakePartition("sdb1", (8, 17), 8 * GiB)])]
    host = fake_host(tmp_path, disks, [((8, 17), "/media/me/MY STICK", "/dev/sdb1")])
    assert read_mounts(host)[0].mountpoint == "/media/me/MY STICK"  # the \040 escape is undone
    stick = find_block_device((8, 16), host)
    assert stick is not None
    expected = ["/dev/sdb1 is mounted on /media/me/MY STICK; unmount it first"]
    assert refusals(stick, IMAGE).blocking(force=True) == expected


def test_swap_partition_is_refused(tmp_path):
    # /proc/swaps names device nodes, which builder.devices stats for their numbers. A fake
    # partition cannot have a node of its own, so it borrows the numbers of /dev/null (1:3).
    disks = [FakeDisk("sdb", (8, 16), 8 * GiB, removable=True, partitions=[FakePartition("sdb2", (1, 3), GiB)])]
    stick = find_block_device((8, 16), fake_host(tmp_path, disks, swaps=["/dev/null"]))
    assert stick is not None
    assert refusals(stick, IMAGE).absolute == ["/dev/sdb2 is in use as swap; swapoff it first"]


def test_fixed_disk_needs_force(tmp_path):
    disks = [FakeDisk("sdc", (8, 32), 2000 * GiB, where=SATA_PATH, model="WDC WD20EZRZ")]
    disk = find_block_device((8, 32), fake_host(tmp_path, disks))
    assert disk is not None and not disk.hotplug
    found = refusals(disk, IMAGE)
    assert found.absolute == []
    assert found.blocking(force=False) == [
        "/dev/sdc is not a removable disk (transport sata, removable flag 0); "
        "pass --force if you really mean to overwrite it"
    ]
    assert found.blocking(force=True) == []


def test_too_small_empty_and_write_protected_are_refused(tmp_path):
    disks = [
        FakeDisk("sdb", (8, 16), 256 * 2**20, removable=True),
        FakeDisk("sdc", (8, 32), 0, removable=True),
        FakeDisk("sdd", (8, 48), 8 * GiB, removable=True, readonly=True),
    ]
    host = fake_host(tmp_path, disks)
    small, empty, locked = (find_block_device(n, host) for n in ((8, 16), (8, 32), (8, 48)))
    assert small and empty and locked
    assert refusals(small, IMAGE).absolute == [
        "/dev/sdb is too small: 256.0 MiB (268435456 bytes) for an image of 300.0 MiB (314572800 bytes)"
    ]
    assert refusals(empty, IMAGE).absolute == ["/dev/sdc has no medium (size 0); insert the card or stick"]
    assert any("read-only" in r for r in refusals(locked, IMAGE).absolute)


def test_optical_drive_is_recognised_by_its_major_number(tmp_path):
    drive = find_block_device((11, 0), laptop(tmp_path))
    assert drive is not None and drive.optical
    assert refusals(drive, IMAGE).blocking(force=False) == []  # capacity is xorriso's to report


def test_list_block_devices_skips_partitions(tmp_path):
    assert [d.name for d in list_block_devices(laptop(tmp_path))] == ["loop0", "mmcblk0", "sda", "sdb", "sr0"]


def test_missing_device_is_none(tmp_path):
    assert find_block_device((8, 99), laptop(tmp_path)) is None


# --- what lies below: dm/md slaves and loop backing files ------------------------------------


Mounts = Sequence[tuple[tuple[int, int], str, str]]


def server(tmp_path: Path, *, extra: list[FakeDisk], mounts: Mounts = (), swaps: Sequence[str] = ()) -> Host:
    """A machine whose / is on sda2; sda3 and two USB sticks are free for stacking."""
    disks = [
        FakeDisk("sda", (8, 0), 100 * GiB, where=SATA_PATH, partitions=[
            FakePartition("sda2", (8, 2), 50 * GiB), FakePartition("sda3", (8, 3), 50 * GiB, holders=("dm-1",))]),
        FakeDisk("sdb", (8, 16), 16 * GiB, removable=True, model="Stick B", partitions=[
            FakePartition("sdb1", (8, 17), 8 * GiB, holders=("md0",)), FakePartition("sdb2", (8, 18), 8 * GiB)]),
        FakeDisk("sdc", (8, 32), 16 * GiB, removable=True, model="Stick C", holders=("md0", "dm-5")),
        *extra,
    ]  # fmt: skip
    return fake_host(tmp_path, disks, [((8, 2), "/", "/dev/sda2"), *mounts], swaps)


def test_dm_device_on_a_partition_of_the_system_disk_is_refused_even_with_force(tmp_path):
    host = server(tmp_path, extra=[FakeDisk("dm-1", (254, 1), 50 * GiB, where=VIRTUAL_PATH, slaves=("sda3",))])
    dm = find_block_device((254, 1), host)
    assert dm is not None and not dm.system and [d.name for d in dm.below] == ["sda3"]
    blocking = refusals(dm, IMAGE).blocking(force=True)
    assert blocking == ["/dev/sda3 (below /dev/dm-1) holds the running system (/); xenlive never writes to it"]
    assert "writes to   /dev/sda3: (unknown model), 50.0 GiB" in dm.describe()


def test_md_device_is_refused_for_what_its_members_are_used_for(tmp_path):
    md = FakeDisk("md0", (9, 0), 8 * GiB, where=VIRTUAL_PATH, slaves=("sdb1", "sdc"))
    host = server(tmp_path, extra=[md], mounts=[((8, 18), "/media/stick", "/dev/sdb2")])
    raid = find_block_device((9, 0), host)
    assert raid is not None
    # md0 itself holds sdb1 and sdc: that is the way down, not another user. dm-5 also holds sdc.
    # sdb2 is mounted, but it is a partition beside sdb1, not below md0: writing md0 leaves it alone.
    assert refusals(raid, IMAGE).absolute == [
        "/dev/sdc (below /dev/md0) is in use by dm-5 (LVM, RAID or dm-crypt); stop that first"
    ]


def test_dm_device_on_a_whole_stick_with_a_mounted_partition_is_refused(tmp_path):
    dm = FakeDisk("dm-2", (254, 2), 16 * GiB, where=VIRTUAL_PATH, slaves=("sdb",))
    host = server(tmp_path, extra=[dm], mounts=[((8, 18), "/media/stick", "/dev/sdb2")], swaps=())
    found = find_block_device((254, 2), host)
    assert found is not None
    assert refusals(found, IMAGE).absolute == [
        "/dev/sdb2 (below /dev/dm-2) is mounted on /media/stick; unmount it first",
        "/dev/sdb1 (below /dev/dm-2) is in use by md0 (LVM, RAID or dm-crypt); stop that first",
    ]


def test_loop_device_over_a_plain_file_on_the_system_disk_needs_only_force(tmp_path):
    """What burn writes is the file, as `burn ISO FILE` would; the file system holding it is not hurt."""
    image = tmp_path / "stick.img"
    image.write_bytes(b"\0" * 4096)
    loop = FakeDisk("loop0", (7, 0), GiB, where=VIRTUAL_PATH, backing_file=str(image))
    device = find_block_device((7, 0), server(tmp_path, extra=[loop]))
    assert device is not None and device.backing is not None and device.backing_files() == [str(image)]
    found = refusals(device, IMAGE)
    assert found.absolute == []
    assert found.blocking(force=False) == [
        "/dev/loop0 is not a removable disk (transport virtual, removable flag 0); "
        "pass --force if you really mean to overwrite it"
    ]


def test_loop_device_over_a_swap_file_or_a_vanished_file_is_refused(tmp_path):
    swapfile = tmp_path / "swapfile"
    swapfile.write_bytes(b"\0" * 4096)
    loops = [
        FakeDisk("loop0", (7, 0), GiB, where=VIRTUAL_PATH, backing_file=str(swapfile)),
        FakeDisk("loop1", (7, 1), GiB, where=VIRTUAL_PATH, backing_file=f"{tmp_path}/gone.img (deleted)"),
        FakeDisk("loop2", (7, 2), GiB, where=VIRTUAL_PATH, backing_file="/srv/in another namespace.img"),
    ]
    host = server(tmp_path, extra=loops, swaps=[str(swapfile)])
    swap, deleted, elsewhere = (find_block_device((7, n), host) for n in range(3))
    assert swap and deleted and elsewhere
    assert refusals(swap, IMAGE).absolute == [f"/dev/loop0 is a loop device over {swapfile}, a swap file in use"]
    assert refusals(deleted, IMAGE).absolute == [
        f"/dev/loop1 is a loop device over {tmp_path}/gone.img (deleted), which was deleted; "
        "detach it (losetup -d) and attach the file again"
    ]
    (why,) = refusals(elsewhere, IMAGE).absolute
    assert why.startswith("/dev/loop2 is a loop device over /srv/in another namespace.img, which cannot be found")


def test_loop_device_sharing_its_file_with_a_mounted_loop_device_is_refused(tmp_path):
    image = tmp_path / "shared.img"
    image.write_bytes(b"\0" * 4096)
    loops = [
        FakeDisk("loop0", (7, 0), GiB, where=VIRTUAL_PATH, backing_file=str(image)),
        FakeDisk("loop1", (7, 1), GiB, where=VIRTUAL_PATH, backing_file=str(tmp_path / "." / "shared.img")),
    ]
    host = server(tmp_path, extra=loops, mounts=[((7, 1), "/mnt/shared", "/dev/loop1")])
    device = find_block_device((7, 0), host)
    assert device is not None and [d.name for d in device.loops_over] == ["loop1"]
    assert refusals(device, IMAGE).absolute == [
        "/dev/loop1, another loop device over the storage of /dev/loop0, is mounted on /mnt/shared; unmount it first"
    ]


def test_stick_that_a_mounted_loop_device_reads_from_is_refused(tmp_path):
    """A loop device over /dev/sdb2 is no holder of it (loop takes no claim), but it still uses it."""
    node = tmp_path / "sdb2-node"
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(8, 18))
    except PermissionError:
        pytest.skip("making a block device node needs root")
    loop = FakeDisk("loop3", (7, 3), 8 * GiB, where=VIRTUAL_PATH, backing_file=str(node))
    host = server(tmp_path, extra=[loop], mounts=[((7, 3), "/mnt/inner", "/dev/loop3")])
    stick = find_block_device((8, 16), host)
    assert stick is not None
    assert refusals(stick, IMAGE).absolute == [
        "/dev/sdb1 is in use by md0 (LVM, RAID or dm-crypt); stop that first",
        "/dev/loop3, another loop device over the storage of /dev/sdb, is mounted on /mnt/inner; unmount it first",
    ]
    # And the other way round: written, the loop device writes the partition below it.
    disks = [
        FakeDisk("sdb", (8, 16), 100 * GiB, where=SATA_PATH, partitions=[FakePartition("sdb2", (8, 18), GiB)]),
        FakeDisk("loop3", (7, 3), GiB, where=VIRTUAL_PATH, backing_file=str(node)),
    ]
    over = find_block_device((7, 3), fake_host(tmp_path / "b", disks, [((8, 18), "/", "/dev/sdb2")]))
    assert over is not None and [d.name for d in over.below] == ["sdb2"]
    assert "/dev/sdb2 (below /dev/loop3) holds the running system (/); xenlive never writes to it" in (
        refusals(over, IMAGE).absolute
    )


def test_identity_changes_name_what_differs(tmp_path):
    stick = FakeDisk("sdb", (8, 16), 16 * GiB, removable=True, model="Cruzer Blade", vendor="SanDisk", diskseq=12)
    host = fake_host(tmp_path, [stick])
    before = find_block_device((8, 16), host)
    assert before is not None and before.diskseq == 12
    assert identity_changes(before, find_block_device((8, 16), host)) == []
    sysdir = host.sysfs / "block" / "sdb"
    (sysdir / "diskseq").write_text("13\n")
    (sysdir / "size").write_text(f"{8 * GiB // 512}\n")
    (sysdir / "device" / "model").write_text("Ultra Fit\n")
    assert identity_changes(before, find_block_device((8, 16), host)) == [
        "its disk sequence number changed from 12 to 13 (another disk or medium is in its place)",
        f"its size changed from {16 * GiB} to {8 * GiB} bytes",
        "its model changed from 'SanDisk Cruzer Blade' to 'SanDisk Ultra Fit'",
    ]
    assert identity_changes(before, None) == ["/dev/sdb is no longer there"]
