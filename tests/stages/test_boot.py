from __future__ import annotations

import dataclasses

import pytest

from builder.context import BuildContext
from builder.profile import Xen, load_profile
from builder.stages.boot import HOST_ISOLINUX_BIN, boot_model, install_isolinux, render_grub, render_isolinux


def test_boot_model_has_xenoppix_entries():
    entries = boot_model(load_profile(None))
    assert [e.id for e in entries] == ["xen", "safe", "linux"]
    xen, safe, linux = entries
    assert xen.xen == "/boot/xen.gz" and "console=com1,vga com1=115200,8n1" in xen.xen_args
    assert "console=hvc0" in xen.kernel_args and "boot=live" in xen.kernel_args
    assert "xenlive.safe" in safe.kernel_args and "xenlive.safe" not in xen.kernel_args
    assert linux.xen is None and linux.kernel_args.endswith("console=ttyS0,115200")


def test_profile_command_lines_reach_every_menu():
    profile = load_profile(None)
    profile = dataclasses.replace(profile, xen=Xen(cmdline="dom0_mem=512M loglvl=all"))
    assert "com1=115200,8n1 dom0_mem=512M loglvl=all" in render_isolinux(profile)
    assert "multiboot2 /boot/xen.gz console=com1,vga com1=115200,8n1 dom0_mem=512M loglvl=all" in render_grub(profile)


def test_isolinux_cfg_golden(golden):
    golden("default/isolinux.cfg", render_isolinux(load_profile(None)))


def test_grub_cfg_golden(golden):
    golden("default/grub.cfg", render_grub(load_profile(None)))


@pytest.mark.skipif(not HOST_ISOLINUX_BIN.exists(), reason="isolinux is not installed")
def test_isolinux_bin_is_staged_with_its_boot_info_table_zeroed(tmp_path):
    """Mastering rewrites bytes 8..64; zeroed in staging, the manifest's digest is checkable on the medium."""
    ctx = BuildContext(profile=load_profile(None), output=tmp_path / "x.iso", workdir=tmp_path / "w",
                       cache_dir=tmp_path)  # fmt: skip
    install_isolinux(ctx)
    staged, host = (ctx.staging / "isolinux/isolinux.bin").read_bytes(), HOST_ISOLINUX_BIN.read_bytes()
    assert len(staged) == len(host) and staged[8:64] == bytes(56)
    assert staged[:8] == host[:8] and staged[64:] == host[64:]
