"""The checks themselves. Each docstring says why the rule exists; each finding says what to change.

Numbers that are estimates (Xen's own memory, per-guest overhead) are named constants with the
reasoning beside them, so a reader can judge them.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path

import yaml

from builder.bootfirmware import XEN_ON_IA32, Runs, best_way, firmware_name, medium_set, ways
from builder.checks import Finding, Severity, check, note, unknown
from builder.guestmem import guest_minimum
from builder.hardware import QEMU_TARGETS, DeviceKind, Target, machine_options, target_issues
from builder.introspect import BuiltFacts
from builder.profile.model import Firmware, Guest, GuestKind, GuestType, Profile, TargetOptions
from builder.stages.boot import target_entry

# Xen keeps a heap and a frame table (32 bytes per 4 KiB page, about 0.8 % of RAM) for itself.
XEN_BASE_MIB = 32
XEN_FRAME_TABLE_DIVISOR = 128
# Per guest: p2m, shadow/HAP pool (about 1 MiB per vCPU plus 1 % of its memory), device model-free PV.
GUEST_OVERHEAD_MIB = 4
DOM0_DEFAULT_MIB = 1024  # what dom0 is budgeted when dom0_mem= is not given (it balloons down to it)


def _virt_guests(profile: Profile) -> list[Guest]:
    return [g for g in profile.guests if g.type in (GuestType.HVM, GuestType.PVH)]


def _names(guests: list[Guest]) -> str:
    return ", ".join(f"{g.name} ({g.type})" for g in guests)


@check(id="cpu-64bit", severity=Severity.ERROR, title="64-bit CPU")
def cpu_64bit(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Xen runs on 64-bit x86 only; on a CPU without long mode (lm) nothing but the
    "Linux without Xen" entry can boot, and Debian's amd64 kernel cannot boot there either."""
    if not target.cpu.model and not target.cpu.flags:
        yield unknown("the CPU's architecture is not known")
    elif target.cpu.arch != "x86_64" or "lm" not in target.flags:
        yield Finding(
            f"{target.cpu.model} is a 32-bit CPU (no long mode); Xen and the amd64 dom0 need a 64-bit CPU",
            "use a machine with a 64-bit CPU (Core 2 or later, any Athlon 64 or later)",
        )


@check(id="hvm-needs-vtx", severity=Severity.ERROR, title="HVM/PVH guests need VT-x or AMD-V")
def hvm_needs_vtx(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """HVM and PVH guests run in hardware virtualisation mode; without VT-x (vmx) or AMD-V (svm)
    xl refuses to create them, long after the medium was burned. PV guests need neither."""
    guests = _virt_guests(profile)
    if not guests:
        return
    if not target.cpu.flags and not target.cpu.model:
        yield unknown("the CPU's flags are not known")
    elif not target.has_virt:
        yield Finding(
            f"guests {_names(guests)} need VT-x or AMD-V, which {target.cpu.model or 'this CPU'} lacks"
            " (or the firmware hides)",
            "enable virtualisation in the firmware setup if it exists, or make these guests type: pv",
        )


@check(id="hvm-needs-hap", severity=Severity.ERROR, title="HVM/PVH need EPT/NPT when Xen has no shadow paging",
       needs_build=True)  # fmt: skip
def hvm_needs_hap(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Without EPT/NPT, Xen runs HVM and PVH guests on shadow page tables; a Xen built without
    CONFIG_SHADOW_PAGING cannot, and such a guest fails to start on pre-2008 CPUs."""
    guests = _virt_guests(profile)
    if not guests or not target.has_virt or target.has_hap:
        return
    if built.xen is None:
        yield unknown("Xen's build config is not known yet (build once, then check again)")
    elif not built.xen.enabled("CONFIG_SHADOW_PAGING"):
        yield Finding(
            f"guests {_names(guests)} need EPT or NPT: this Xen {built.xen.version} has no shadow paging,"
            f" and {target.cpu.model} has neither",
            "make these guests type: pv, or use a CPU with EPT (Nehalem, 2008, or later) or NPT (Barcelona or later)",
        )


@check(id="hvm-shadow-paging", severity=Severity.WARNING, title="HVM/PVH on shadow paging is slow",
       needs_build=True)  # fmt: skip
def hvm_shadow_paging(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Shadow paging works but makes page-table-heavy guests several times slower; users should
    know before choosing HVM/PVH over PV for an older machine."""
    guests = _virt_guests(profile)
    if not guests or not target.has_virt or target.has_hap:
        return
    if built.xen is None:
        yield unknown("Xen's build config is not known yet")
    elif built.xen.enabled("CONFIG_SHADOW_PAGING"):
        yield Finding(
            f"guests {_names(guests)} will run on shadow paging: {target.cpu.model} has no EPT/NPT",
            "expect slow guests; type: pv avoids the cost",
        )


def dom0_mem_mib(cmdline: str) -> int | None:
    """The memory dom0 gets from Xen's dom0_mem= option (its first plain or max: amount)."""
    m = re.search(r"(?:^|\s)dom0_mem=(\S+)", cmdline)
    if not m:
        return None
    amounts = m.group(1).split(",")
    plain = [a for a in amounts if ":" not in a] or [a.split(":", 1)[1] for a in amounts if a.startswith("max:")]
    if not plain:
        return None
    v = re.fullmatch(r"(\d+)([KMGT]?)", plain[0].upper())
    if not v:
        return None
    factor = {"": 1 / 1024, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1 << 20}[v.group(2)]
    return int(int(v.group(1)) * factor)


def guest_need_mib(guest: Guest, ramdisk_bytes: int) -> int:
    """What starting one guest takes from the machine: its memory, Xen's overhead for it, its RAM disk
    and its disk's writes (held in dom0's RAM). The one formula: the build-time budget below and
    dom0's boot-time check (guests.tsv, written by the guests stage) both count with it."""
    ramdisk = -(-ramdisk_bytes // (1 << 20))
    writes = guest.write_buffer if guest.has_disk else 0
    return guest.memory + GUEST_OVERHEAD_MIB + guest.memory // 100 + ramdisk + writes


def memory_budget_mib(profile: Profile, target_mib: int, built: BuiltFacts) -> tuple[int, list[str]]:
    """The memory the image needs at boot on a machine with target_mib, and its parts (for the message)."""
    xen = XEN_BASE_MIB + target_mib // XEN_FRAME_TABLE_DIVISOR
    dom0 = dom0_mem_mib(profile.xen.cmdline) or DOM0_DEFAULT_MIB
    parts = [f"Xen {xen}", f"dom0 {dom0}"]
    total = xen + dom0
    for g in profile.guests:
        if g.autostart:
            need = guest_need_mib(g, built.ramdisk_bytes.get(g.name, 0))
            parts.append(f"{g.name} {need}")
            total += need
    return total, parts


@check(id="memory-budget", severity=Severity.ERROR, title="Xen + dom0 + autostart guests fit in RAM")
def memory_budget(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Xen creates guests only from free memory; one that does not fit fails to start at boot.
    Counted: Xen's own share, dom0_mem, each autostart guest with overhead and its RAM disk."""
    if target.memory is None:
        yield unknown("the machine's memory is not known")
        return
    total, parts = memory_budget_mib(profile, target.memory, built)
    if total > target.memory:
        yield Finding(
            f"needs {total} MiB ({' + '.join(parts)}) but the machine has {target.memory} MiB",
            "lower dom0_mem= in xen.cmdline or guests' memory, set autostart: false on some guests, or add RAM",
        )


@check(id="vcpus", severity=Severity.WARNING, title="guest vCPUs within the machine's threads")
def vcpus(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Xen lets vCPUs outnumber physical threads, but such a guest only time-slices and spinlock-heavy
    guests crawl; usually the profile was written for a bigger machine."""
    if target.cpu.threads is None:
        yield unknown("the number of hardware threads is not known")
        return
    for g in profile.guests:
        if g.vcpus > target.cpu.threads:
            yield Finding(
                f"guest {g.name} has {g.vcpus} vCPUs but the machine has {target.cpu.threads} hardware threads",
                f"set vcpus: {target.cpu.threads} or fewer for {g.name}",
            )


@check(id="firmware-modes", severity=Severity.ERROR, title="the medium starts Xen on the machine's firmware")
def firmware_modes(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """A machine's firmware runs only the boot loader made for it: BIOS (or a UEFI machine's CSM)
    runs ISOLINUX, 64-bit UEFI BOOTX64.EFI, 32-bit UEFI BOOTIA32.EFI. And Xen cannot start from
    32-bit UEFI at all, so on such a machine (Bay Trail tablets, the first Intel Macs) only "Linux
    without Xen" runs unless the firmware also has a CSM. The verdict comes from builder/bootfirmware.py,
    which the boot menu and the boot test share."""
    fw = target.firmware
    if fw.type is None:
        yield unknown("the machine's boot firmware is not known")
        return
    medium = medium_set(profile.media.boot)
    carried = ", ".join(sorted(medium))
    if fw.csm is None and fw.type.is_uefi:
        without, with_csm = best_way(medium, fw.type, False), best_way(medium, fw.type, True)
        if without != with_csm and (without is None or without.runs is not Runs.XEN):
            yield unknown(
                f"on this {firmware_name(fw.type)} machine the medium starts Xen only through a CSM, and whether"
                " the firmware has one is not known"
            )
            return
    way = best_way(medium, fw.type, fw.csm)
    name = firmware_name(fw.type, fw.csm)
    if way is None:
        yield Finding(f"the medium does not start on this machine's {name}: it has boot loaders for {carried}",
                      _firmware_remedy(fw.type, fw.csm, medium))  # fmt: skip
        return
    if way.runs is not Runs.XEN:
        yield Finding(
            f'on this machine\'s {name} the medium starts only "Linux without Xen", without the guests: {XEN_ON_IA32}',
            _firmware_remedy(fw.type, fw.csm, medium),
        )
        return
    if way.via_csm:
        lost = " (its 32-bit UEFI would start only Linux without Xen)" if fw.type is Firmware.UEFI_IA32 else ""
        yield note(f"starts {way.describe()}{lost}: choose legacy/CSM boot in the firmware's boot menu or setup")


def _firmware_remedy(firmware: Firmware, csm: bool | None, medium: frozenset[Firmware]) -> str:
    """What would make the medium start Xen on a machine with this firmware, or that nothing can."""
    if firmware is Firmware.BIOS:
        return "add bios to media.boot"
    if firmware is Firmware.UEFI:
        return "add uefi to media.boot" + (" (or bios, to boot through the CSM)" if csm else "")
    if csm:
        return "add bios to media.boot and boot the medium through the CSM (legacy boot): Xen runs that way"
    if Firmware.UEFI_IA32 not in medium:
        return (
            'no medium starts Xen on this machine; add uefi-ia32 to media.boot for "Linux without Xen",'
            " or use a machine with 64-bit UEFI or BIOS"
        )
    return "use a machine with 64-bit UEFI or BIOS (or a CSM) for Xen; here the medium is a live Linux only"


@check(id="usb-stick-boot", severity=Severity.WARNING, title="a USB stick written with the image boots")
def usb_stick_boot(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Firmware boots a USB stick through its partition tables (the MBR, or the GPT's ESP), not its
    El Torito catalogue; only a medium with bios in media.boot gets them (the isohybrid MBR and GPT
    need ISOLINUX), so a UEFI-only image boots from a CD but a stick written with it does not."""
    fw = target.firmware
    if fw.type is None:
        return
    way = best_way(profile.media.boot, fw.type, fw.csm)
    if way is not None and not way.stick:
        yield Finding(
            "a USB stick written with this image does not boot: without bios in media.boot the image has no"
            " partition table (MBR or GPT), which firmware boots a stick through; only a CD/DVD boots",
            "add bios to media.boot (that adds ISOLINUX and the MBR and GPT), or burn a CD/DVD",
        )


@check(id="secure-boot", severity=Severity.ERROR, title="Secure Boot is off")
def secure_boot(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """xenlive's GRUB and Xen are not signed for Secure Boot; with it on, the firmware refuses the
    medium's UEFI loader (BIOS/CSM boot, if the machine has it, is unaffected)."""
    fw = target.firmware
    if fw.type is None or not fw.type.is_uefi:
        return
    if fw.secure_boot is None:
        yield unknown("whether Secure Boot is on is not known")
        return
    through_csm = any(w.via_csm for w in ways(profile.media.boot, fw.type, fw.csm))
    if fw.secure_boot and not through_csm:
        yield Finding(
            "Secure Boot is on: the firmware will refuse the medium's unsigned GRUB and Xen",
            "turn Secure Boot off in the firmware setup (it is unsupported by xenlive)",
        )


@check(id="dom0-kernel", severity=Severity.ERROR, title="the dom0 kernel can run as dom0", needs_build=True)
def dom0_kernel(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """A kernel without CONFIG_XEN_DOM0 (Debian's -cloud kernel) boots as a guest but panics as
    dom0 with "Kernel does not support Dom0 operation"; it is read from the kernel itself."""
    k = built.dom0_kernel
    if k is None:
        yield unknown(built.problems.get("dom0", "the dom0 kernel is not built yet"))
        return
    if k.option("CONFIG_XEN_DOM0") == "n" or not k.notes.dom0:
        why = (
            "CONFIG_XEN_DOM0 is not set"
            if k.option("CONFIG_XEN_DOM0") == "n"
            else "its Xen notes lack the dom0 feature"
        )
        yield Finding(
            f"the dom0 kernel {k.path.name} cannot run as dom0: {why}",
            "use linux-image-amd64 (not the -cloud kernel) in dom0's packages",
        )


@check(id="guest-kernels", severity=Severity.ERROR, title="each guest's kernel and initrd can start it",
       needs_build=True)  # fmt: skip
def guest_kernels(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """A guest whose kernel or initrd cannot start it fails at boot with a message that does not say
    what to change (or none at all), so what the files tell is checked here: a PV kernel must carry
    Xen's PV notes (GUEST_OS, ENTRY) and a PVH kernel the PHYS32_ENTRY note, or xl refuses it; more
    vCPUs than the kernel's CONFIG_NR_CPUS stay idle; an /init the kernel cannot execute means the
    guest's own start-up never runs; and below its minimum memory (builder/guestmem.py: the domain
    builder's layout and the kernel's early needs, from the kernel's ELF segments and the initrd's
    unpacked size) xl create fails or the kernel dies before its init."""
    for g in profile.guests:
        k = built.guest_kernels.get(g.name)
        if k is None:
            if g.kind != GuestKind.IMAGE or isinstance(g.kernel, Path):  # an image guest may boot its disk
                yield unknown(built.problems.get(g.name, f"guest {g.name}'s kernel is not built yet"))
            continue
        if g.type == GuestType.PV and not k.notes.pv:
            yield Finding(f"guest {g.name}: kernel {k.path.name} has no Xen PV notes (GUEST_OS/ENTRY)",
                          f"give {g.name} a kernel built with CONFIG_XEN_PV, or make it type: hvm")  # fmt: skip
            continue
        if g.type == GuestType.PVH and not k.notes.pvh:
            yield Finding(f"guest {g.name}: kernel {k.path.name} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY),"
                          " so xl cannot start it as PVH",
                          f"give {g.name} a kernel built with CONFIG_XEN_PVH, or make it type: pv")  # fmt: skip
            continue
        if k.nr_cpus is not None and g.vcpus > k.nr_cpus:
            yield Finding(
                f"guest {g.name} has {g.vcpus} vCPUs but its kernel {k.path.name} brings up at most {k.nr_cpus}"
                " (CONFIG_NR_CPUS)",
                f"set vcpus: {k.nr_cpus} or fewer for {g.name}, or give it a kernel with a larger CONFIG_NR_CPUS",
            )
        initrd = built.guest_initrds.get(g.name)
        problem = initrd.init_problem() if initrd is not None else None
        if problem is not None:
            where = f"its overlay {g.overlay}" if g.overlay is not None else "its initrd"
            yield Finding(
                f"guest {g.name}: {problem} in {where}: the kernel cannot run it, so the guest's start-up never runs",
                f"make /init in {where} an executable file (chmod +x; a script's #! must name a program in the initrd)",
            )
        yield from _memory_finding(g, built)


def _memory_finding(g: Guest, built: BuiltFacts) -> Iterator[Finding]:
    if g.type == GuestType.HVM:
        return  # firmware, device model and video memory: not measured (builder/data/guest-memory.yaml)
    need = guest_minimum(g, built)
    if isinstance(need, str):
        yield unknown(f"guest {g.name}'s minimum memory: {need}")
    elif g.memory < need.minimum:
        yield Finding(
            f"guest {g.name} has {g.memory} MiB but needs at least {need.minimum} MiB to start"
            f" ({need.binding} decides: {need.explain()})",
            f"set memory: {need.minimum}M (or more) for {g.name}",
        )


@check(id="pv32-guests", severity=Severity.ERROR, title="no 32-bit PV guests on a Xen without PV32",
       needs_build=True)  # fmt: skip
def pv32_guests(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Debian builds Xen without CONFIG_PV32 (read from /boot/xen-*.config): a 32-bit PV kernel (Xenoppix's era) cannot
    start; it must be 64-bit, or run as PVH/HVM."""
    for g in profile.guests:
        k = built.guest_kernels.get(g.name)
        if g.type != GuestType.PV or k is None or k.bits != 32:
            continue
        if built.xen is None:
            yield unknown("Xen's build config is not known yet")
        elif not built.xen.enabled("CONFIG_PV32"):
            yield Finding(
                f"guest {g.name}: {k.path.name} is a 32-bit PV kernel, and Xen {built.xen.version} has no 32-bit PV",
                f"give {g.name} a 64-bit kernel, or make it type: pvh or hvm",
            )


DRIVER_KINDS = (DeviceKind.NETWORK, DeviceKind.STORAGE, DeviceKind.DISPLAY)


@check(id="device-drivers", severity=Severity.WARNING, title="dom0 has drivers for storage, network, graphics",
       needs_build=True)  # fmt: skip
def device_drivers(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """dom0 owns the real devices: without a driver its disks, network or screen are missing,
    and guests that use them through dom0 have none either. Found via modules.alias."""
    if built.modules is None:
        yield unknown("dom0's modules are not built yet")
        return
    for dev in target.pci:
        if dev.kind in DRIVER_KINDS and not built.modules.drivers_for(dev.id, dev.class_code):
            yield Finding(
                f"no driver in dom0 kernel {built.modules.kernel} for {dev.kind} device {dev.label}",
                "add a package with a driver to dom0.packages, or use another device",
            )


@functools.cache
def firmware_data() -> tuple[dict[str, str], frozenset[str]]:
    """Firmware packages by path prefix, and drivers whose firmware is optional (data/firmware.yaml)."""
    data = yaml.safe_load(resources.files("builder").joinpath("data/firmware.yaml").read_text())
    return dict(data["packages"]), frozenset(data["optional"])


@check(id="device-firmware", severity=Severity.WARNING, title="dom0 carries the firmware its drivers need",
       needs_build=True)  # fmt: skip
def device_firmware(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Many NICs and GPUs load firmware at probe time; Debian keeps it in non-free-firmware
    packages that are not in dom0 unless asked for, and without it the device stays dead."""
    if built.modules is None:
        yield unknown("dom0's modules are not built yet")
        return
    for dev in target.pci:
        if dev.kind not in DRIVER_KINDS:
            continue
        packages, optional = firmware_data()
        for module in built.modules.drivers_for(dev.id, dev.class_code):
            if module in optional:
                continue
            wanted = built.modules.firmware_for(module)
            if wanted and not any(built.modules.has_firmware(f) for f in wanted):
                package = next((p for prefix, p in packages.items() if wanted[0].startswith(prefix)),
                               "firmware-misc-nonfree")  # fmt: skip
                yield Finding(
                    f"{dev.label}: driver {module} needs firmware ({wanted[0]}"
                    f"{f' or {len(wanted) - 1} others' if len(wanted) > 1 else ''}) that dom0 does not carry",
                    f"add {package} (Debian non-free-firmware) to dom0.packages",
                )


@check(id="known-problem-devices", severity=Severity.WARNING, title="no devices with known problems")
def known_problem_devices(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Some devices work only with a known option or package; saying so at build time saves a
    user from finding out on the machine (data: builder/data/known-issues.yaml and the target's file).
    Issues a Xen or dom0 option works around are the machine-options check's."""
    ids = {d.id for d in target.pci}
    for issue in target_issues(target):
        if issue.has_options:
            continue
        devices = ", ".join(sorted(ids & set(issue.devices)))
        where = f" ({devices})" if devices else ""
        yield Finding(f"{issue.id}{where}: {issue.summary}", issue.workaround)


@check(id="machine-options", severity=Severity.WARNING, title="the machine's Xen/dom0 options are in the image")
def machine_options_applied(profile: Profile, target: Target, built: BuiltFacts) -> Iterator[Finding]:
    """Some machines run Xen or dom0 only with an option: efi=no-rs where the firmware's runtime
    services crash, iommu=no-igfx where the IOMMU breaks the integrated graphics. The hardware
    database carries them with the known issue, so the image can carry them too: a boot menu entry
    for the target (checks.target_options: menu) or every entry (cmdline); this says which, or that
    the user would have to type them at the boot prompt."""
    options = machine_options(target)
    if not options:
        return
    needs = f"{options.describe()} (known issue {', '.join(options.issues)})"
    xen_missing = [o for o in options.xen if o not in profile.xen.cmdline.split()]
    dom0_missing = [o for o in options.dom0 if o not in profile.dom0.cmdline.split()]
    mine = target.name in (profile.checks.targets or QEMU_TARGETS)
    entry = target_entry(profile, target)
    if not xen_missing and not dom0_missing:
        yield note(f"needs {needs}: the profile's xen.cmdline and dom0.cmdline carry them")
    elif mine and profile.checks.target_options is TargetOptions.CMDLINE:
        yield note(f"needs {needs}: every boot menu entry carries them (checks.target_options: cmdline)")
    elif mine and profile.checks.target_options is TargetOptions.MENU and entry is not None:
        yield note(f'needs {needs}: boot the menu entry "{entry.title}"')
    elif mine and profile.checks.target_options is TargetOptions.MENU:
        return  # nothing of the medium starts on the machine; firmware-modes says so
    else:
        how = (
            f"add {target.name} to checks.targets (its own boot menu entry then carries them)"
            if not mine
            else "set checks.target_options to menu or cmdline"
        )
        yield Finding(f"needs {needs}, which no boot menu entry carries",
                      f"{how}, or add them to xen.cmdline / dom0.cmdline")  # fmt: skip
