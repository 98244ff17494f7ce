from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.medium import EFI_IMAGE
from builder.profile import Firmware, Media, Profile, Xen, load_profile
from builder.stages.boot import (
    HOST_ISOLINUX_BIN,
    boot_model,
    install_bootloaders,
    install_isolinux,
    render_grub,
    render_isolinux,
)

TEST_HARDWARE = Path(__file__).resolve().parent.parent / "data/hardware"
# A test machine whose known issue carries efi=no-rs, a real one with the GM45 (the general list's
# iommu=no-igfx) and a real 32-bit UEFI one with a dom0 option (only Linux without Xen starts there).
TARGETS = ["quirky-uefi", "thinkpad-t400", "asus-t100ta", "qemu-uefi"]


@pytest.fixture
def target_profile(write_profile, monkeypatch):  # type: ignore[no-untyped-def]
    """A profile built for TARGETS, with the test hardware directory on XENLIVE_HARDWARE_PATH."""
    monkeypatch.setenv("XENLIVE_HARDWARE_PATH", str(TEST_HARDWARE))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(write_profile("", "unused").parent / "config"))

    def load(options: str = "menu") -> Profile:
        text = f"name: quirks\nchecks:\n  targets: [{', '.join(TARGETS)}]\n  target_options: {options}\n"
        return load_profile(write_profile(text))

    return load


def test_boot_model_has_xenoppix_entries():
    entries = boot_model(load_profile(None))
    assert [e.id for e in entries] == ["xen", "safe", "linux"]  # the QEMU targets need no options
    xen, safe, linux = entries
    assert xen.xen == "/boot/xen.gz" and "console=com1,vga com1=115200,8n1" in xen.xen_args
    assert "console=hvc0" in xen.kernel_args and "boot=live" in xen.kernel_args
    assert "xenlive.safe" in safe.kernel_args and "xenlive.safe" not in xen.kernel_args
    assert linux.xen is None and linux.kernel_args.endswith("console=ttyS0,115200")


def test_a_profile_that_persists_boots_persistent_and_offers_a_fresh_entry(write_profile):
    profile = load_profile(write_profile("name: keeper\ndom0:\n  persist: [/root]\n"))
    entries = boot_model(profile)
    assert [e.id for e in entries] == ["xen", "fresh", "safe", "linux"]
    xen, fresh = entries[:2]
    assert xen.title == "Xen with dom0 and guests (persistent)" and "xenlive.fresh" not in xen.kernel_args
    assert fresh.kernel_args == xen.kernel_args + " xenlive.fresh" and fresh.xen_args == xen.xen_args
    grub, isolinux = render_grub(profile), render_isolinux(profile)
    assert grub.count("xenlive.fresh") == 1 and isolinux.count("xenlive.fresh") == 1
    assert 'menuentry "keeper: Xen (fresh, ignore the stick\'s saved state)"' in grub
    assert "MENU LABEL Xen (fresh, ignore the stick's saved state)" in isolinux
    assert "persistent" not in render_grub(load_profile(None))  # the default keeps nothing


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


def test_safe_mode_carries_the_usual_trouble_savers():
    safe = boot_model(load_profile(None))[1]
    assert safe.id == "safe"
    for option in ("dom0_max_vcpus=1", "iommu=0", "efi=no-rs", "max_cstate=1"):
        assert option in safe.xen_args.split()
    assert {"xenlive.safe", "nomodeset"} <= set(safe.kernel_args.split())


def test_known_issue_options_get_a_boot_menu_entry_per_target(target_profile, golden):
    """The test machine's efi=no-rs, the T400's iommu=no-igfx (from the general list, by its GM45)
    and the Bay Trail tablet's dom0 option each reach their own entry; the QEMU machine needs none."""
    profile = target_profile("menu")
    entries = {e.id: e for e in boot_model(profile)}
    assert list(entries) == ["xen", "safe", "linux", "xen-quirky-uefi", "xen-thinkpad-t400", "linux-asus-t100ta"]
    assert "efi=no-rs" in entries["xen-quirky-uefi"].xen_args.split()
    assert entries["xen-quirky-uefi"].title == "Xen for quirky-uefi (Xen efi=no-rs)"
    assert "iommu=no-igfx" in entries["xen-thinkpad-t400"].xen_args.split()
    assert entries["linux-asus-t100ta"].xen is None  # 32-bit UEFI: Xen cannot start there
    assert "intel_idle.max_cstate=1" in entries["linux-asus-t100ta"].kernel_args.split()
    assert "efi=no-rs" not in entries["xen"].xen_args  # (safe mode has it anyway: one of its trouble-savers)
    assert not any("no-igfx" in e.xen_args or "max_cstate=1" in e.kernel_args for e in boot_model(load_profile(None)))
    grub, isolinux = render_grub(profile), render_isolinux(profile)
    assert "multiboot2 /boot/xen.gz console=com1,vga com1=115200,8n1 dom0_mem=1024M,max:1024M efi=no-rs\n" in grub
    assert "LABEL xen-quirky-uefi\n  MENU LABEL Xen for quirky-uefi (Xen efi=no-rs)\n" in isolinux
    golden("target-options/grub.cfg", grub)
    golden("target-options/isolinux.cfg", isolinux)


def test_known_issue_options_on_every_entry_or_nowhere(target_profile):
    on_all = boot_model(target_profile("cmdline"))
    assert [e.id for e in on_all] == ["xen", "safe", "linux"]
    for entry in on_all:
        if entry.xen:
            assert {"efi=no-rs", "iommu=no-igfx"} <= set(entry.xen_args.split())
        assert "intel_idle.max_cstate=1" in entry.kernel_args.split()
    nowhere = boot_model(target_profile("none"))
    assert [e.id for e in nowhere] == ["xen", "safe", "linux"]
    assert not any("efi=no-rs" in e.xen_args for e in nowhere if e.id != "safe")


def _xen_lines_guarded(grub: str) -> bool:
    """Every multiboot2 line lies inside an `if [ "$grub_cpu" = x86_64 ]` block."""
    inside = False
    for line in grub.splitlines():
        if line.strip() == 'if [ "$grub_cpu" = x86_64 ]; then':
            inside = True
        elif line.strip() == "fi":
            inside = False
        elif "multiboot2" in line and not inside:
            return False
    return True


def test_grub_cfg_offers_only_linux_on_32_bit_uefi(target_profile, tmp_path):
    """GRUB i386-efi reads the same grub.cfg: Xen entries are skipped there ($grub_cpu is i386),
    so the first entry, the default, is Linux without Xen."""
    grub = render_grub(target_profile("menu"))
    assert _xen_lines_guarded(grub)
    guarded = re.findall(r'if \[ "\$grub_cpu" = x86_64 \]; then\nmenuentry "([^"]+)"', grub)
    assert guarded == [
        "quirks: Xen with dom0 and guests",
        "quirks: Xen safe mode (no guests, conservative options)",
        "quirks: Xen for quirky-uefi (Xen efi=no-rs)",
        "quirks: Xen for thinkpad-t400 (Xen iommu=no-igfx)",
    ]
    assert 'echo "32-bit UEFI: Xen cannot start from it' in grub
    check = shutil.which("grub-script-check")
    if check is not None:
        path = tmp_path / "grub.cfg"
        path.write_text(grub)
        subprocess.run([check, "--", str(path)], check=True)


def test_grub_cfg_without_ia32_has_no_ia32_message():
    profile = load_profile(None)
    media = dataclasses.replace(profile.media, boot=(Firmware.BIOS, Firmware.UEFI))
    grub = render_grub(dataclasses.replace(profile, media=media))
    assert "32-bit UEFI" not in grub.split("\n", 3)[-1] and _xen_lines_guarded(grub)


def _pe_machine(data: bytes) -> int:
    pe = int.from_bytes(data[0x3C:0x40], "little")
    assert data[pe : pe + 4] == b"PE\0\0"
    return int.from_bytes(data[pe + 4 : pe + 6], "little")


@pytest.mark.skipif(
    not all(shutil.which(t) for t in ("grub-mkimage", "mkfs.vfat", "mcopy", "mdir"))
    or not Path("/usr/lib/grub/i386-efi/linux.mod").exists(),
    reason="grub-efi-ia32-bin or mtools not installed (scripts/setup installs them)",
)
def test_efi_image_holds_bootx64_and_bootia32(tmp_path):
    """The ESP (and El Torito UEFI image) carries GRUB for both UEFI platforms, x86-64 and IA-32 PE files."""
    ctx = BuildContext(profile=load_profile(None), output=tmp_path / "x.iso", workdir=tmp_path / "w",
                       cache_dir=tmp_path, build_id="0123abcd")  # fmt: skip
    ctx.workdir.mkdir()
    install_bootloaders(ctx)
    efi = ctx.staging / "EFI/BOOT"
    assert _pe_machine((efi / "BOOTX64.EFI").read_bytes()) == 0x8664
    assert _pe_machine((efi / "BOOTIA32.EFI").read_bytes()) == 0x14C
    listing = subprocess.run(["mdir", "-b", "-i", str(ctx.staging / EFI_IMAGE), "::/EFI/BOOT"], capture_output=True,
                             text=True, check=True, env={"MTOOLS_SKIP_CHECK": "1"}).stdout  # fmt: skip
    assert sorted(line.rsplit("/", 1)[-1] for line in listing.split()) == ["BOOTIA32.EFI", "BOOTX64.EFI"]
    without = dataclasses.replace(ctx.profile, media=Media(boot=(Firmware.BIOS, Firmware.UEFI)))
    ctx2 = dataclasses.replace(ctx, profile=without, workdir=tmp_path / "w2")
    ctx2.workdir.mkdir()
    install_bootloaders(ctx2)
    assert not (ctx2.staging / "EFI/BOOT/BOOTIA32.EFI").exists()
