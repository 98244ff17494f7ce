from __future__ import annotations

from pathlib import Path

from builder.stages import rootfs


def test_mounts_below_reads_mountinfo(monkeypatch, tmp_path):
    info = tmp_path / "mountinfo"
    info.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        f"90 80 0:50 / {tmp_path}/tree/proc ro - proc proc ro\n"
        f"91 80 0:51 / {tmp_path}/tree/proc/sys/fs/binfmt_misc rw - binfmt_misc b rw\n"
        f"92 80 0:52 / {tmp_path}/treehouse rw - tmpfs t rw\n"
    )
    real_path = Path

    def fake_path(arg, *rest):  # type: ignore[no-untyped-def]
        return info if arg == "/proc/self/mountinfo" else real_path(arg, *rest)

    monkeypatch.setattr(rootfs, "Path", fake_path)
    points = rootfs.mounts_below(tmp_path / "tree")
    assert points == [tmp_path / "tree/proc/sys/fs/binfmt_misc", tmp_path / "tree/proc"]


def test_squashfs_command_never_reads_pseudo_file_systems(tmp_path):
    cmd = rootfs.squashfs_command(tmp_path / "tree", tmp_path / "out", rootfs.SQUASHFS_EXCLUDES)
    assert cmd[cmd.index("-wildcards") + 1] == "-e"
    assert "proc/*" in cmd and "sys/*" in cmd
    assert cmd[:2] == ["mksquashfs", str(tmp_path / "tree")]
