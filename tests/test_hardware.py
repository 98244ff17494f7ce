"""The hardware database: shipped files load, bad files get file:line: key errors, names resolve."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ProfileError, UsageError
from builder.hardware import (
    QEMU_TARGETS,
    Arch,
    DeviceKind,
    KnownIssue,
    MachineOptions,
    PciDevice,
    load_known_issues,
    load_target,
    load_target_file,
    load_targets,
    machine_options,
    target_files,
    target_issues,
)
from builder.profile import Firmware

MINIMAL = """\
description: test box
cpu:
  model: Test CPU
  arch: x86_64
  threads: 4
  flags: [lm, vmx, ept]
memory: 4G
firmware:
  type: bios
"""


@pytest.fixture(autouse=True)
def no_user_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep the developer's own ~/.config/xenlive/hardware out of these tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XENLIVE_HARDWARE_PATH", raising=False)


def test_shipped_database_loads_and_spans_2006_to_now() -> None:
    files = target_files()
    targets = load_targets(list(files))
    real = [t for t in targets if t.name not in QEMU_TARGETS]
    assert len(real) >= 10
    assert set(QEMU_TARGETS) <= set(files)
    years = sorted(t.year for t in real if t.year)
    assert years[0] == 2006 and years[-1] >= 2021
    core_duo = [t for t in real if t.cpu.arch is Arch.I686 and any(d.id == "8086:27a2" for d in t.pci)]
    assert core_duo, "the 2006 32-bit Core Duo laptop with 945GM graphics must be in the database"
    assert any(t.firmware.secure_boot for t in real)
    assert any(t.has_virt and not t.has_hap for t in real) and any(not t.has_virt for t in real)


def test_qemu_targets_match_what_xenlive_test_boots() -> None:
    bios, uefi = load_target("qemu-bios"), load_target("qemu-uefi")
    for t in (bios, uefi):
        assert t.memory == 2048 and t.cpu.threads == 2
        assert "svm" in t.flags and "npt" not in t.flags  # -cpu qemu64,+svm
    assert bios.firmware.type is Firmware.BIOS and uefi.firmware.type is Firmware.UEFI
    ia32 = load_target("qemu-uefi-ia32")  # --firmware uefi-ia32: the same machine with 32-bit OVMF
    assert ia32.firmware.type is Firmware.UEFI_IA32 and not ia32.firmware.csm
    assert (ia32.memory, ia32.cpu.threads, ia32.flags) == (uefi.memory, uefi.cpu.threads, uefi.flags)
    assert "qemu-uefi-ia32" not in QEMU_TARGETS  # Xen cannot start there: no image would pass its check


def test_database_has_32_bit_uefi_machines_of_both_kinds() -> None:
    """A Bay Trail machine (64-bit CPU, 32-bit UEFI, no CSM) and an early Intel Mac (32-bit EFI
    with Boot Camp's BIOS emulation, the only way Xen starts there)."""
    baytrail, mac = load_target("asus-t100ta"), load_target("apple-macbookpro2-2")
    for t in (baytrail, mac):
        assert t.firmware.type is Firmware.UEFI_IA32 and t.cpu.arch is Arch.X86_64 and "lm" in t.flags
    assert baytrail.firmware.csm is False and mac.firmware.csm is True
    assert "Bay Trail" in baytrail.description and mac.year == 2006


def test_known_issues_list_loads() -> None:
    ids = [i.id for i in load_known_issues()]
    assert "gm45-vtd-igfx" in ids and len(ids) == len(set(ids))


def test_device_kind_from_class_code() -> None:
    assert PciDevice(id="8086:4222", class_code="0280").kind is DeviceKind.NETWORK
    assert PciDevice(id="144d:a808", class_code="010802").kind is DeviceKind.STORAGE
    assert PciDevice(id="1234:1111", class_code="0300").kind is DeviceKind.DISPLAY
    assert PciDevice(id="1b36:000d", class_code="0c0330").kind is DeviceKind.SERIAL_BUS


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            MINIMAL.replace("memory: 4G", "memory: lots"),
            '{f}:7:9: memory: expected a size in MiB or like "256M", "1G", got \'lots\'',
        ),
        (
            MINIMAL.replace("arch: x86_64", "arch: arm64"),
            "{f}:4:9: cpu.arch: expected one of x86_64, i686, got 'arm64'",
        ),
        (MINIMAL.replace("threads: 4", "threads: 0"), "{f}:5:12: cpu.threads: expected at least 1, got 0"),
        (
            MINIMAL.replace("memroy", "x").replace("memory:", "memroy:"),
            "{f}:7:1: memroy: unknown key; did you mean 'memory'?",
        ),
        (
            MINIMAL + "pci:\n  - {id: 8086-27a2, class_code: '0300'}\n",
            "{f}:11:10: pci[0].id: '8086-27a2' is not valid: vendor:device in lower-case hex, like \"8086:27a2\"",
        ),
        (MINIMAL + "firmware2: x\n", "{f}:10:1: firmware2: unknown key; did you mean 'firmware'?"),
        (
            MINIMAL.replace("type: bios", "type: efi"),
            "{f}:9:9: firmware.type: expected one of bios, uefi, uefi-ia32, got 'efi'",
        ),
        (
            MINIMAL.replace("type: bios", "modes: [bios, uefi]"),
            "{f}:9:3: firmware.modes: firmware.modes is now firmware.type (one of bios, uefi, uefi-ia32) and, for a"
            " UEFI machine that can also boot legacy BIOS media, csm: true",
        ),
        (MINIMAL + "  csm: true\n", "{f}:10:8: firmware.csm: a BIOS machine has no CSM: that is a UEFI part"),
        ("description: x\n", "{f}:1:1: missing required key 'cpu'"),
        ("cpu: [\n", "{f}:2:1: YAML syntax error"),
        ("", "{f}: the hardware file is empty"),
        ("- a\n", "{f}:1:1: expected a mapping, got a list"),
    ],
)
def test_malformed_file_names_file_line_and_key(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "bad-box.yaml"
    path.write_text(text)
    with pytest.raises(ProfileError) as e:
        load_target_file(path)
    assert e.value.exit_code == 2
    assert e.value.problems[0].startswith(error.format(f=path))


def test_all_problems_reported_together(tmp_path: Path) -> None:
    path = tmp_path / "box.yaml"
    path.write_text(MINIMAL.replace("threads: 4", "threads: many").replace("memory: 4G", "memory: -1"))
    with pytest.raises(ProfileError) as e:
        load_target_file(path)
    assert len(e.value.problems) == 2


def test_unknown_target_lists_known_ones() -> None:
    with pytest.raises(UsageError) as e:
        load_target("thinkpad-t9000")
    assert e.value.exit_code == 2
    assert "unknown target 'thinkpad-t9000'; known targets: " in e.value.message
    assert "qemu-bios" in e.value.message and "thinkpad-t60-core-duo" in e.value.message


def test_user_directory_adds_and_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "my-box.yaml").write_text(MINIMAL)
    (mine / "qemu-bios.yaml").write_text(MINIMAL.replace("test box", "my own qemu"))
    monkeypatch.setenv("XENLIVE_HARDWARE_PATH", str(mine))
    assert load_target("my-box").memory == 4096
    assert load_target("qemu-bios").description == "my own qemu"
    assert "my-box" in [t.name for t in load_targets(["all"])]


def test_invalid_file_name(tmp_path: Path) -> None:
    path = tmp_path / "Bad Name.yaml"
    path.write_text(MINIMAL)
    with pytest.raises(ProfileError, match="not a valid target name"):
        load_target_file(path)


def test_machine_options_from_general_and_own_known_issues(tmp_path: Path) -> None:
    """General issues apply by PCI id, a machine's own ones always (unless they name devices it
    lacks), its own replacing a general one of the same id; options are collected once each."""
    general = (
        KnownIssue(id="igfx", summary="s", workaround="w", devices=("8086:2a42",), xen_cmdline="iommu=no-igfx"),
        KnownIssue(id="nic", summary="s", workaround="w", devices=("14e4:164c",), dom0_cmdline="bnx2.disable_msi=1"),
    )
    path = tmp_path / "box.yaml"
    path.write_text(
        MINIMAL
        + """pci:
  - {id: "8086:2a42", class_code: "0300"}
known_issues:
  - {id: rs, summary: s, workaround: w, xen_cmdline: efi=no-rs iommu=no-igfx, dom0_cmdline: nomodeset}
  - {id: absent, summary: s, workaround: w, devices: ["1234:5678"], xen_cmdline: x2apic=0}
"""
    )
    box = load_target_file(path)
    assert [i.id for i in target_issues(box, general)] == ["igfx", "rs"]
    expected = MachineOptions(xen=("iommu=no-igfx", "efi=no-rs"), dom0=("nomodeset",), issues=("igfx", "rs"))
    assert machine_options(box, general) == expected
    assert machine_options(box, general).describe() == "Xen iommu=no-igfx efi=no-rs; dom0 nomodeset"
    assert not machine_options(load_target("qemu-uefi"))
    assert machine_options(load_target("thinkpad-t400")).xen == ("iommu=no-igfx",)  # its GM45, from the general list


def test_option_in_a_known_issue_is_limited_like_a_command_line(tmp_path: Path) -> None:
    """A hardware file is read like a profile: an option that would break out of a boot menu is refused."""
    path = tmp_path / "box.yaml"
    path.write_text(MINIMAL + 'known_issues:\n  - {id: quirk, summary: s, workaround: w, xen_cmdline: "a\\" b"}\n')
    with pytest.raises(ProfileError) as e:
        load_target_file(path)
    assert e.value.problems == [
        f"{path}:11:57: known_issues[0].xen_cmdline: 'a\" b' is not valid: Xen options that work around the issue,"
        " e.g. efi=no-rs or iommu=no-igfx; a profile applies them with checks.target_options"
    ]


def test_null_says_not_known_even_where_a_field_has_a_default_or_none(tmp_path: Path) -> None:
    path = tmp_path / "vague-box.yaml"
    text = MINIMAL.replace("threads: 4", "threads: null").replace("memory: 4G", "memory: null")
    path.write_text(text.replace("type: bios", "type: null\n  csm: null\n  secure_boot: null") + "iommu: null\n")
    target = load_target_file(path)
    assert (target.cpu.threads, target.memory, target.iommu) == (None, None, None)
    assert (target.firmware.type, target.firmware.csm, target.firmware.secure_boot) == (None, None, None)
    path.write_text(MINIMAL)
    target = load_target_file(path)
    assert (target.iommu, target.firmware.csm, target.firmware.secure_boot) == (False, False, False)  # defaults


def test_dmi_maker_and_model(tmp_path: Path) -> None:
    path = tmp_path / "box.yaml"
    path.write_text(MINIMAL + 'dmi: {vendor: "LENOVO", product: "20L5CTO1WW"}\n')
    dmi = load_target_file(path).dmi
    assert dmi is not None and (dmi.vendor, dmi.product) == ("LENOVO", "20L5CTO1WW")
    for bad in ('"\\e]0;owned\\a"', '"two\\nlines"', "x" * 501):
        path.write_text(MINIMAL + f"dmi: {{vendor: {bad}}}\n")
        with pytest.raises(ProfileError, match="dmi.vendor: expected one line of text without control characters"):
            load_target_file(path)
