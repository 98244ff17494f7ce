"""Every check with a machine that passes it and one that fails it, asserting the message."""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from builder import cpio
from builder.checks import REGISTRY, Finding, Severity, Status, all_checks, run_checks
from builder.guestmem import GuestMemory, guest_minimum
from builder.hardware import Arch, KnownIssue, MachineFirmware, PciDevice
from builder.initrd import InitrdFacts, read_initrd_bytes
from builder.introspect import BuiltFacts, KernelFacts, KernelLayout, ModuleDb, XenNotes
from builder.profile import Firmware, Profile
from tests.checks.conftest import cpu, make_target, xen
from tests.test_initrd import busybox_like

all_checks()

OLD_VTX = cpu(("lm", "pae", "nx", "vmx"), model="Core 2 Duo")  # VT-x without EPT
NO_VIRT = cpu(("lm", "pae", "nx"), model="Pentium D")


def findings(check_id: str, profile: Profile, target, built: BuiltFacts | None = None) -> list[Finding]:  # type: ignore[no-untyped-def]
    return list(REGISTRY[check_id].fn(profile, target, built or BuiltFacts()))


def only(check_id: str, profile: Profile, target, built: BuiltFacts | None = None) -> str:  # type: ignore[no-untyped-def]
    found = findings(check_id, profile, target, built)
    assert len(found) == 1 and not found[0].unknown, found
    return found[0].message


LAYOUT = KernelLayout(start=16 << 20, end=74 << 20, percpu=212 << 10)  # the bookworm kernel's, rounded


def kernel(path: str = "vmlinuz-6.1", *, bits: int = 64, dom0: bool = True, pvh: bool = True, pv: bool = True,
           config: dict[str, str] | None = None, layout: KernelLayout | None = LAYOUT) -> KernelFacts:  # fmt: skip
    notes = XenNotes(guest_os="linux" if pv else None, entry=pv, phys32_entry=pvh,
                     supported_features=(1 << 11) if dom0 else 1, paddr_offset=0)  # fmt: skip
    return KernelFacts(path=Path(path), bits=bits, notes=notes, config=config, layout=layout)


def initrd(entries: list[cpio.Entry] | None = None) -> InitrdFacts:
    return read_initrd_bytes(gzip.compress(cpio.archive(entries or busybox_like()), mtime=0), "the initrd")


def guest_facts(*names: str, k: KernelFacts | None = None, i: InitrdFacts | None = None) -> BuiltFacts:
    return BuiltFacts(guest_kernels={n: k or kernel() for n in names}, guest_initrds={n: i or initrd() for n in names})


def test_every_check_is_documented_and_unique() -> None:
    checks = all_checks()
    assert len(checks) >= 15
    for c in checks:
        assert c.why, f"{c.id} has no docstring saying why"
        assert c.id == c.id.lower() and " " not in c.id


def test_cpu_64bit(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("")
    assert findings("cpu-64bit", p, make_target()) == []
    core_duo = make_target(cpu=cpu(("pae", "nx", "vmx"), arch=Arch.I686, model="Core Duo T2500"))
    assert only("cpu-64bit", p, core_duo) == (
        "Core Duo T2500 is a 32-bit CPU (no long mode); Xen and the amd64 dom0 need a 64-bit CPU"
    )


def test_hvm_needs_vtx(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: win\n    type: hvm\n  - name: lin\n    type: pv\n")
    assert findings("hvm-needs-vtx", p, make_target()) == []
    assert findings("hvm-needs-vtx", profile("guests:\n  - name: lin\n"), make_target(cpu=NO_VIRT)) == []
    msg = only("hvm-needs-vtx", p, make_target(cpu=NO_VIRT))
    assert msg == "guests win (hvm) need VT-x or AMD-V, which Pentium D lacks (or the firmware hides)"


def test_hvm_needs_hap_when_xen_has_no_shadow_paging(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: g\n    type: pvh\n")
    assert findings("hvm-needs-hap", p, make_target(), BuiltFacts(xen=xen(shadow=False))) == []
    assert findings("hvm-needs-hap", p, make_target(cpu=OLD_VTX), BuiltFacts(xen=xen(shadow=True))) == []
    msg = only("hvm-needs-hap", p, make_target(cpu=OLD_VTX), BuiltFacts(xen=xen(shadow=False)))
    assert msg == "guests g (pvh) need EPT or NPT: this Xen 4.17.5 has no shadow paging, and Core 2 Duo has neither"
    unknown = findings("hvm-needs-hap", p, make_target(cpu=OLD_VTX))
    assert unknown[0].unknown and "not known yet" in unknown[0].message


def test_hvm_shadow_paging_warns(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: g\n    type: hvm\n")
    assert findings("hvm-shadow-paging", p, make_target(), BuiltFacts(xen=xen())) == []
    msg = only("hvm-shadow-paging", p, make_target(cpu=OLD_VTX), BuiltFacts(xen=xen()))
    assert msg == "guests g (hvm) will run on shadow paging: Core 2 Duo has no EPT/NPT"


def test_memory_budget(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("xen:\n  cmdline: dom0_mem=1024M,max:1024M\nguests:\n  - name: a\n    memory: 512M\n"
                "  - name: b\n    memory: 1G\n    autostart: false\n")  # fmt: skip
    built = BuiltFacts(ramdisk_bytes={"a": 3 << 20})
    assert findings("memory-budget", p, make_target(memory=2048), built) == []
    msg = only("memory-budget", p, make_target(memory=1536), built)
    assert msg == "needs 1592 MiB (Xen 44 + dom0 1024 + a 524) but the machine has 1536 MiB"
    assert findings("memory-budget", p, make_target(memory=None))[0].unknown


def test_dom0_mem_parsing() -> None:
    from builder.checks.rules import dom0_mem_mib

    assert dom0_mem_mib("dom0_mem=1024M,max:1024M") == 1024
    assert dom0_mem_mib("loglvl=all dom0_mem=2G") == 2048
    assert dom0_mem_mib("dom0_mem=min:512M,max:4G") == 4096
    assert dom0_mem_mib("console=com1") is None


def test_vcpus(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: wide\n    vcpus: 8\n")
    assert findings("vcpus", p, make_target(cpu=cpu(("lm", "vmx"), threads=8))) == []
    assert only("vcpus", p, make_target(cpu=cpu(("lm", "vmx"), threads=2))) == (
        "guest wide has 8 vCPUs but the machine has 2 hardware threads"
    )


def firmware(kind: str, csm: bool | None = False, secure_boot: bool | None = False) -> MachineFirmware:
    return MachineFirmware(type=Firmware(kind), csm=csm, secure_boot=secure_boot)


MACHINES = {
    "bios": firmware("bios"),
    "uefi": firmware("uefi"),
    "uefi+csm": firmware("uefi", csm=True),
    "uefi-ia32": firmware("uefi-ia32"),
    "uefi-ia32+csm": firmware("uefi-ia32", csm=True),
}
# The verdict for every medium (what media.boot carries) on every kind of machine, written out by
# hand: xen (passes), csm (passes, with a note: Xen through the CSM), linux (fails: only Linux
# without Xen starts), none (fails: nothing starts).
FIRMWARE_VERDICTS = {
    #                      bios    uefi    uefi+csm  uefi-ia32  uefi-ia32+csm
    "bios":               ("xen",  "none", "csm",    "none",    "csm"),
    "uefi":               ("none", "xen",  "xen",    "none",    "none"),
    "uefi-ia32":          ("none", "none", "none",   "linux",   "linux"),
    "bios,uefi":          ("xen",  "xen",  "xen",    "none",    "csm"),
    "bios,uefi-ia32":     ("xen",  "none", "csm",    "linux",   "csm"),
    "uefi,uefi-ia32":     ("none", "xen",  "xen",    "linux",   "linux"),
    "bios,uefi,uefi-ia32": ("xen", "xen",  "xen",    "linux",   "csm"),
}  # fmt: skip


def _verdict(found: list[Finding]) -> str:
    if not found:
        return "xen"
    (f,) = found
    if f.note:
        assert "through the CSM" in f.message
        return "csm"
    if 'starts only "Linux without Xen"' in f.message:
        return "linux"
    assert f.message.startswith("the medium does not start on this machine's"), f.message
    return "none"


@pytest.mark.parametrize("medium", list(FIRMWARE_VERDICTS))
def test_firmware_modes_every_medium_on_every_firmware(profile, medium: str) -> None:  # type: ignore[no-untyped-def]
    p = profile(f"media:\n  boot: [{medium}]\n")
    for (name, machine), expected in zip(MACHINES.items(), FIRMWARE_VERDICTS[medium], strict=True):
        found = findings("firmware-modes", p, make_target(firmware=machine))
        assert _verdict(found) == expected, (medium, name, found)
        assert all(f.remedy for f in found if not f.note), (medium, name, found)


def test_firmware_modes_messages_and_remedies(profile) -> None:  # type: ignore[no-untyped-def]
    bios_only = profile("media:\n  boot: [bios]\n")
    nuc = findings("firmware-modes", bios_only, make_target(firmware=MACHINES["uefi"]))
    assert [(f.message, f.remedy) for f in nuc] == [
        ("the medium does not start on this machine's 64-bit UEFI without a CSM: it has boot loaders for bios",
         "add uefi to media.boot"),
    ]  # fmt: skip
    default = profile("")
    (baytrail,) = findings("firmware-modes", default, make_target(firmware=MACHINES["uefi-ia32"]))
    assert baytrail.message.startswith(
        'on this machine\'s 32-bit UEFI without a CSM the medium starts only "Linux without Xen", without the guests:'
        ' Xen cannot start from 32-bit UEFI: its multiboot2 entry stops with "ERR: EFI IA-32 platforms'
    )
    assert baytrail.remedy.startswith("use a machine with 64-bit UEFI or BIOS")
    (mac,) = findings("firmware-modes", default, make_target(firmware=MACHINES["uefi-ia32+csm"]))
    assert mac.note and mac.message == (
        "starts Xen through the CSM (legacy BIOS boot), from a CD or a USB stick (its 32-bit UEFI would start only"
        " Linux without Xen): choose legacy/CSM boot in the firmware's boot menu or setup"
    )
    (mac_no_bios,) = findings("firmware-modes", profile("media:\n  boot: [uefi, uefi-ia32]\n"),
                              make_target(firmware=MACHINES["uefi-ia32+csm"]))  # fmt: skip
    assert mac_no_bios.remedy.startswith("add bios to media.boot and boot the medium through the CSM")


def test_firmware_modes_unknowns(profile) -> None:  # type: ignore[no-untyped-def]
    bios_only = profile("media:\n  boot: [bios]\n")
    unknown_csm = make_target(firmware=firmware("uefi", csm=None))
    (found,) = findings("firmware-modes", bios_only, unknown_csm)
    assert found.unknown and "whether the firmware has one is not known" in found.message
    # When a CSM would change nothing, not knowing about it does not matter.
    assert findings("firmware-modes", profile(""), unknown_csm) == []
    (no_type,) = findings("firmware-modes", bios_only, make_target(firmware=MachineFirmware(type=None)))
    assert no_type.unknown


def test_usb_stick_boot(profile) -> None:  # type: ignore[no-untyped-def]
    assert findings("usb-stick-boot", profile(""), make_target(firmware=MACHINES["uefi"])) == []
    uefi_only = profile("media:\n  boot: [uefi]\n")
    (found,) = findings("usb-stick-boot", uefi_only, make_target(firmware=MACHINES["uefi"]))
    assert "without bios in media.boot the image has no partition table" in found.message
    assert found.remedy.startswith("add bios to media.boot")
    assert findings("usb-stick-boot", uefi_only, make_target(firmware=MACHINES["bios"])) == []  # firmware-modes' job


def test_secure_boot(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("media:\n  boot: [uefi]\n")
    assert findings("secure-boot", p, make_target()) == []
    locked = make_target(firmware=firmware("uefi", secure_boot=True))
    assert only("secure-boot", p, locked) == (
        "Secure Boot is on: the firmware will refuse the medium's unsigned GRUB and Xen"
    )
    with_csm = make_target(firmware=firmware("uefi", csm=True, secure_boot=True))
    assert findings("secure-boot", profile("media:\n  boot: [bios, uefi]\n"), with_csm) == []
    assert findings("secure-boot", p, with_csm) != []  # no bios on the medium: the CSM cannot help
    assert findings("secure-boot", p, make_target(firmware=firmware("bios"))) == []
    (unknown,) = findings("secure-boot", p, make_target(firmware=firmware("uefi-ia32", secure_boot=None)))
    assert unknown.unknown


def test_dom0_kernel(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("")
    good = BuiltFacts(dom0_kernel=kernel(config={"CONFIG_XEN_DOM0": "y"}))
    assert findings("dom0-kernel", p, make_target(), good) == []
    cloud = BuiltFacts(dom0_kernel=kernel("vmlinuz-6.1.0-9-cloud-amd64", dom0=False, config={}))
    assert only("dom0-kernel", p, make_target(), cloud) == (
        "the dom0 kernel vmlinuz-6.1.0-9-cloud-amd64 cannot run as dom0: CONFIG_XEN_DOM0 is not set"
    )
    no_note = BuiltFacts(dom0_kernel=kernel("vmlinuz-x", dom0=False))
    assert only("dom0-kernel", p, make_target(), no_note).endswith("its Xen notes lack the dom0 feature")


def test_guest_kernels(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: a\n    type: pvh\n  - name: b\n")
    good = guest_facts("a", "b")
    assert findings("guest-kernels", p, make_target(), good) == []
    bad = BuiltFacts(guest_kernels={"a": kernel("bzImage-nopvh", pvh=False), "b": kernel("bzImage-nopv", pv=False)},
                     guest_initrds=good.guest_initrds)  # fmt: skip
    assert [f.message for f in findings("guest-kernels", p, make_target(), bad)] == [
        "guest a: kernel bzImage-nopvh has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), so xl cannot start it as PVH",
        "guest b: kernel bzImage-nopv has no Xen PV notes (GUEST_OS/ENTRY)",
    ]


def test_guest_below_its_minimum_memory_names_guest_memory_and_minimum(profile) -> None:  # type: ignore[no-untyped-def]
    facts = guest_facts("g")
    minimum = guest_minimum(profile("guests:\n  - name: g\n").guests[0], facts)
    assert isinstance(minimum, GuestMemory)
    at = profile(f"guests:\n  - name: g\n    memory: {minimum.minimum}M\n")
    assert findings("guest-kernels", at, make_target(), facts) == []
    below = profile(f"guests:\n  - name: g\n    memory: {minimum.minimum - 1}M\n")
    (found,) = findings("guest-kernels", below, make_target(), facts)
    assert found.message.startswith(
        f"guest g has {minimum.minimum - 1} MiB but needs at least {minimum.minimum} MiB to start ("
    )
    assert found.remedy == f"set memory: {minimum.minimum}M (or more) for g"
    assert REGISTRY["guest-kernels"].severity is Severity.ERROR  # exit 3


def test_more_vcpus_need_more_memory_and_no_more_than_nr_cpus(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: g\n    vcpus: 8\n")
    eight = guest_minimum(p.guests[0], guest_facts("g"))
    one = guest_minimum(profile("guests:\n  - name: g\n").guests[0], guest_facts("g"))
    assert isinstance(eight, GuestMemory) and isinstance(one, GuestMemory)
    assert eight.kernel > one.kernel  # per-CPU areas and stacks
    capped = guest_facts("g", k=kernel(config={"CONFIG_NR_CPUS": "4"}))
    (found,) = findings("guest-kernels", p, make_target(), capped)
    assert found.message == "guest g has 8 vCPUs but its kernel vmlinuz-6.1 brings up at most 4 (CONFIG_NR_CPUS)"
    assert found.remedy.startswith("set vcpus: 4 or fewer for g")
    four = guest_minimum(p.guests[0], capped)
    assert isinstance(four, GuestMemory) and four.kernel < eight.kernel  # counted for the 4 it brings up


def test_overlay_init_that_cannot_run(profile, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "ov").mkdir()
    p = profile("guests:\n  - name: g\n    overlay: ov\n")
    facts = guest_facts("g", i=initrd(busybox_like(init_mode=0o644)))
    (found,) = findings("guest-kernels", p, make_target(), facts)
    assert found.message == (
        "guest g: /init is not executable (mode 0644) in its overlay ov: the kernel cannot run it,"
        " so the guest's start-up never runs"
    )
    assert "chmod +x" in found.remedy


def test_guest_files_not_known_yet_are_unknown_not_failures(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: g\n")
    no_initrd = BuiltFacts(guest_kernels={"g": kernel()})
    (found,) = findings("guest-kernels", p, make_target(), no_initrd)
    assert found.unknown and "initrd is not known yet" in found.message
    no_layout = guest_facts("g", k=kernel(layout=None))
    (found,) = findings("guest-kernels", p, make_target(), no_layout)
    assert found.unknown and "load layout of vmlinuz-6.1 is not known" in found.message
    hvm = profile("guests:\n  - name: g\n    type: hvm\n    memory: 16M\n")
    assert findings("guest-kernels", hvm, make_target(), guest_facts("g")) == []  # not measured for hvm


def test_pv32_guests(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: old\n")
    k32 = kernel("vmlinuz-2.6.16-xen", bits=32)
    assert findings("pv32-guests", p, make_target(), BuiltFacts(xen=xen(pv32=True), guest_kernels={"old": k32})) == []
    assert findings("pv32-guests", p, make_target(), BuiltFacts(xen=xen(), guest_kernels={"old": kernel()})) == []
    msg = only("pv32-guests", p, make_target(), BuiltFacts(xen=xen(), guest_kernels={"old": k32}))
    assert msg == "guest old: vmlinuz-2.6.16-xen is a 32-bit PV kernel, and Xen 4.17.5 has no 32-bit PV"


def test_device_drivers(dom0_tree: Path, profile) -> None:  # type: ignore[no-untyped-def]
    built = BuiltFacts(modules=ModuleDb.load(dom0_tree, "6.1.0-9-amd64"))
    p = profile("")
    assert findings("device-drivers", p, make_target(), built) == []
    odd = make_target(pci=(PciDevice(id="dead:beef", class_code="0200", name="Mystery NIC"),
                           PciDevice(id="dead:0001", class_code="0c03", name="USB, not checked")))  # fmt: skip
    assert only("device-drivers", p, odd, built) == (
        "no driver in dom0 kernel 6.1.0-9-amd64 for network device dead:beef (Mystery NIC)"
    )


def test_device_firmware(dom0_tree: Path, profile) -> None:  # type: ignore[no-untyped-def]
    built = BuiltFacts(modules=ModuleDb.load(dom0_tree, "6.1.0-9-amd64"))
    p = profile("")
    assert findings("device-firmware", p, make_target(), built) == []  # i915's firmware is optional
    server = make_target(pci=(PciDevice(id="14e4:164c", class_code="0200", name="BCM5708"),))
    found = findings("device-firmware", p, server, built)
    assert [f.message for f in found] == [
        "14e4:164c (BCM5708): driver bnx2 needs firmware (bnx2/bnx2-mips-09-6.2.1b.fw or 1 others)"
        " that dom0 does not carry"
    ]
    assert found[0].remedy == "add firmware-bnx2 (Debian non-free-firmware) to dom0.packages"
    (dom0_tree / "usr/lib/firmware/bnx2").mkdir()
    (dom0_tree / "usr/lib/firmware/bnx2/bnx2-mips-09-6.2.1b.fw").write_bytes(b"fw")
    assert findings("device-firmware", p, server, built) == []


GM45 = PciDevice(id="8086:2a42", class_code="0300", name="GM45")


def test_known_problem_devices(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("")
    assert findings("known-problem-devices", p, make_target()) == []
    e810 = make_target(pci=(PciDevice(id="8086:1593", class_code="0200", name="E810"),))
    (found,) = findings("known-problem-devices", p, e810)
    assert found.message.startswith("e810-ddp-package (8086:1593): without its DDP package")
    own = make_target(known_issues=(KnownIssue(id="bios-bug", summary="S3 resume hangs", workaround="do not suspend"),))
    assert [(f.message, f.remedy) for f in findings("known-problem-devices", p, own)] == [
        ("bios-bug: S3 resume hangs", "do not suspend")
    ]
    # An issue an option works around is machine-options' to report, not this check's.
    assert findings("known-problem-devices", p, make_target(pci=(GM45,))) == []


NO_RS = KnownIssue(id="rs-crash", summary="runtime services crash", workaround="efi=no-rs", xen_cmdline="efi=no-rs")


def test_machine_options_name_what_a_target_needs_and_where_the_image_has_it(profile, tmp_path,  # type: ignore[no-untyped-def]
                                                                           monkeypatch) -> None:  # fmt: skip
    hardware = tmp_path / "hardware"
    hardware.mkdir()
    for name in ("t400", "box"):  # named in checks.targets, which the profile rule check-targets looks up
        (hardware / f"{name}.yaml").write_text("")
    monkeypatch.setenv("XENLIVE_HARDWARE_PATH", str(hardware))
    t400 = make_target("t400", pci=(GM45,), firmware=firmware("bios"))
    both = make_target("box", pci=(GM45,), known_issues=(NO_RS,))
    assert findings("machine-options", profile(""), make_target()) == []
    (missing,) = findings("machine-options", profile(""), t400)
    assert not missing.note and missing.message == (
        "needs Xen iommu=no-igfx (known issue gm45-vtd-igfx), which no boot menu entry carries"
    )
    assert missing.remedy.startswith("add t400 to checks.targets (its own boot menu entry then carries them)")
    (menu,) = findings("machine-options", profile("checks:\n  targets: [t400]\n"), t400)
    assert menu.note and menu.message == (
        'needs Xen iommu=no-igfx (known issue gm45-vtd-igfx): boot the menu entry "Xen for t400 (Xen iommu=no-igfx)"'
    )
    (cmdline,) = findings("machine-options", profile("checks:\n  targets: [box]\n  target_options: cmdline\n"), both)
    assert cmdline.note and cmdline.message == (
        "needs Xen iommu=no-igfx efi=no-rs (known issue gm45-vtd-igfx, rs-crash): every boot menu entry carries them"
        " (checks.target_options: cmdline)"
    )
    (none,) = findings("machine-options", profile("checks:\n  targets: [box]\n  target_options: none\n"), both)
    assert not none.note and none.remedy.startswith("set checks.target_options to menu or cmdline")
    (typed,) = findings("machine-options", profile("xen:\n  cmdline: dom0_mem=1G iommu=no-igfx\n"), t400)
    assert typed.note and typed.message.endswith("the profile's xen.cmdline and dom0.cmdline carry them")


def test_run_checks_statuses_skip_and_pending(profile) -> None:  # type: ignore[no-untyped-def]
    p = profile("guests:\n  - name: g\n    type: hvm\n")
    report = run_checks(p, [make_target("old", cpu=NO_VIRT)], BuiltFacts(), skip=["vcpus"], static_only=True)
    status = {r.check.id: r.status for r in report.results}
    assert status["hvm-needs-vtx"] is Status.FAIL and status["vcpus"] is Status.SKIPPED
    assert status["dom0-kernel"] is Status.PENDING and status["cpu-64bit"] is Status.PASS
    assert [r.check.id for r in report.errors] == ["hvm-needs-vtx"]
    full = run_checks(p, [make_target("new")], BuiltFacts())
    assert {r.check.id: r.status for r in full.results}["dom0-kernel"] is Status.UNKNOWN
    assert not full.errors


def test_both_severities_are_used() -> None:
    assert {c.severity for c in all_checks()} >= {Severity.ERROR, Severity.WARNING}
