from __future__ import annotations

import os
import subprocess
import sys

import pytest

from builder.cli import main


def xenlive(*args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, cwd=cwd)


def test_show_default_prints_resolved_yaml():
    proc = xenlive("show", "default")
    assert proc.returncode == 0
    assert proc.stdout.startswith("name: default\n") and "memory: 128" in proc.stdout


def test_bad_profile_exits_2_with_location_and_no_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nguests:\n  - name: a\n    memry: 1\n")
    out = tmp_path / "out.iso"
    proc = xenlive("build", str(bad), "-o", str(out))
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0] == f"error: {bad}:4:5: guests[0].memry: unknown key; did you mean 'memory'?"
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_missing_profile_exits_2(tmp_path):
    proc = xenlive("build", str(tmp_path / "none.yaml"))
    assert proc.returncode == 2 and "profile not found" in proc.stderr


def test_missing_host_tool_exits_2_before_work(tmp_path, monkeypatch):
    env_path = tmp_path / "bin"
    env_path.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "builder", "build", "default", "-o", str(tmp_path / "x.iso")],
        capture_output=True, text=True, env={"PATH": str(env_path), "HOME": str(tmp_path)},
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: missing host tools: mmdebstrap, mksquashfs" in proc.stderr
    assert "apt-get install" in proc.stderr
    assert not (tmp_path / "x.iso").exists()


def test_test_command_missing_iso_exits_2(tmp_path):
    proc = xenlive("test", str(tmp_path / "none.iso"), "--accel", "tcg")
    assert proc.returncode == 2 and "no such ISO file" in proc.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--media", "cdrom"], "--writable needs --media usb (not cdrom)"),
        (["--media", "stick"], "--writable needs --media usb (not stick)"),
        (["--media", "usb", "--firmware", "all"], "one machine at a time"),
        (["--media", "usb", "--matrix"], "one machine at a time"),
    ],
)
def test_writable_boots_one_usb_disk(tmp_path, args, message):
    image = tmp_path / "stick.img"
    image.write_bytes(bytes(4096))
    proc = xenlive("test", str(image), "--writable", *args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr
    assert image.read_bytes() == bytes(4096)


def test_writable_refuses_a_profile_it_would_build(tmp_path):
    proc = xenlive("test", "default", "--writable", "--media", "usb")
    assert proc.returncode == 2 and "give an image file" in proc.stderr


def test_usage_error_exits_2():
    with pytest.raises(SystemExit) as info:
        main(["test"])
    assert info.value.code == 2


def test_output_in_missing_directory_exits_2_before_work(tmp_path):
    proc = xenlive("build", "default", "-o", str(tmp_path / "nowhere" / "x.iso"))
    assert proc.returncode == 2
    assert f"directory {tmp_path / 'nowhere'} does not exist" in proc.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="a read-only mount needs root")
def test_output_on_read_only_file_system_exits_2(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], check=True)
    try:
        proc = xenlive("build", "default", "-o", str(ro / "x.iso"))
    finally:
        subprocess.run(["umount", str(ro)], check=True)
    assert proc.returncode == 2 and "is not writable" in proc.stderr


def test_disk_full_is_a_clear_error_not_a_bug(monkeypatch, capsys):
    import errno

    from builder import commands

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", "/out/x.iso")

    monkeypatch.setattr(commands, "load_profile", full)
    with pytest.raises(SystemExit) as info:
        main(["build"])
    err = capsys.readouterr().err
    assert info.value.code == 1
    assert err.startswith("error: No space left on device: /out/x.iso\nhint: free some space")
    assert "Traceback" not in err and "bug" not in err


def test_test_command_takes_a_disk_image_that_is_not_named_iso(tmp_path):
    image = tmp_path / "stick.img"
    image.write_bytes(b"\0" * 1024)
    proc = xenlive("test", str(image), "--accel", "tcg", "--cpu", "no-such-cpu-model", "--timeout", "20",
                   "--report-dir", str(tmp_path / "r"))  # fmt: skip
    assert "profile not found" not in proc.stderr
    assert proc.returncode == 1  # QEMU refuses the CPU model: a failed boot, not a missing profile


def test_output_that_is_a_directory_exits_2(tmp_path):
    proc = xenlive("build", "default", "-o", str(tmp_path))
    assert proc.returncode == 2 and "is a directory" in proc.stderr and "Traceback" not in proc.stderr
