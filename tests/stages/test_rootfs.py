from __future__ import annotations

from builder.stages import rootfs


def test_squashfs_command_never_reads_pseudo_file_systems(tmp_path):
    cmd = rootfs.squashfs_command(tmp_path / "tree", tmp_path / "out", rootfs.SQUASHFS_EXCLUDES)
    assert cmd[cmd.index("-wildcards") + 1] == "-e"
    assert "proc/*" in cmd and "sys/*" in cmd
    assert cmd[:2] == ["mksquashfs", str(tmp_path / "tree")]
