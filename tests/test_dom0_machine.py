"""dom0's machine report (usr/lib/xenlive/machine), for real under /bin/sh over a fake /proc and /sys,
with `xl` and `dmesg` faked: what it writes must load as a hardware file and say what the machine is."""

from __future__ import annotations

import hashlib
from pathlib import Path

from builder.hardware import load_target_file
from builder.machinereport import ReportReader, extract_reports
from builder.profile.model import Firmware

from .dom0_services import FakeDom0

BUILD = "5fcc3836e9e92afd12a50b42"
XL_INFO = """host                   : xenlive
nr_cpus                : 8
total_memory           : 16255
virt_caps              : pv hvm hvm_directio pv_directio hap shadow gnttab-v1 gnttab-v2
xen_caps               : xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64
"""
# dom0's view under Xen: two vCPUs, and no vmx (Xen hides it from a PV guest).
CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
flags\t\t: fpu pae nx lm hypervisor
processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz
flags\t\t: fpu pae nx lm hypervisor
"""


def machine(tmp_path: Path, *, xl: str | None = XL_INFO, vendor: str = "LENOVO", product: str = "20L5CTO1WW",
            efi: bool = False) -> FakeDom0:  # fmt: skip
    dom0 = FakeDom0(tmp_path)
    dom0.conf(PROFILE="default", BRIDGE="", DHCP="no")
    dom0.write(f"run/live/medium/xenlive/{BUILD}.id", "")
    dom0.write("proc/cpuinfo", CPUINFO)
    dom0.write("proc/meminfo", "MemTotal:        1918000 kB\n")
    dom0.write("sys/class/dmi/id/sys_vendor", vendor + "\n")
    dom0.write("sys/class/dmi/id/product_name", product + "\n")
    for slot, (vendor_id, device, cls) in {"0000:00:00.0": ("0x8086", "0x5914", "0x060000"),
                                           "0000:00:02.0": ("0x8086", "0x5917", "0x030000"),
                                           "0000:00:1f.6": ("0x8086", "0x15d7", "0x020000")}.items():  # fmt: skip
        for key, value in (("vendor", vendor_id), ("device", device), ("class", cls)):
            dom0.write(f"sys/bus/pci/devices/{slot}/{key}", value + "\n")
    dom0.path("sys/bus/pci/drivers/e1000e").mkdir(parents=True)  # as sysfs has it: the driver links its devices
    dom0.path("sys/bus/pci/drivers/e1000e/0000:00:1f.6").symlink_to(dom0.path("sys/bus/pci/devices/0000:00:1f.6"))
    dom0.write("sys/bus/pci/drivers/e1000e/bind", "")
    if efi:
        dom0.write("sys/firmware/efi/fw_platform_size", "64\n")
    dom0.command("xl", f"cat <<'EOF'\n{xl}EOF\n" if xl is not None else "exit 1\n")
    dom0.command("dmesg", "echo '[    0.000000] secureboot: Secure boot disabled'\n")
    return dom0


def run_report(dom0: FakeDom0, tmp_path: Path) -> tuple[str, Path]:
    proc = dom0.run("machine")
    assert proc.returncode == 0 and proc.stderr == ""
    assert dom0.path("run/xenlive/printed/machine").exists()  # xenlive-ready need not wait any longer
    report = dom0.read("run/xenlive/machine.yaml")
    path = tmp_path / "report.yaml"
    path.write_text(report)
    return proc.stdout, path


def test_under_xen_the_machine_is_what_xen_sees_not_dom0s_share(tmp_path):
    _, path = run_report(machine(tmp_path), tmp_path)
    target = load_target_file(path)
    assert target.description == "LENOVO 20L5CTO1WW (reported by xenlive)"
    assert target.dmi is not None and (target.dmi.vendor, target.dmi.product) == ("LENOVO", "20L5CTO1WW")
    assert target.cpu.model == "Intel(R) Core(TM) i7-8650U CPU @ 1.90GHz"
    assert target.cpu.threads == 8  # nr_cpus, not dom0's two vCPUs
    assert target.memory == 16256  # total_memory rounded up to 64 MiB
    assert set(target.cpu.flags) == {"lm", "pae", "nx", "vmx", "ept"}  # HVM and HAP from Xen, on Intel
    assert target.iommu is True
    assert (target.firmware.type, target.firmware.csm, target.firmware.secure_boot) == (Firmware.BIOS, False, False)
    assert [(d.id, d.class_code) for d in target.pci] == [
        ("8086:5914", "060000"), ("8086:5917", "030000"), ("8086:15d7", "020000")]  # fmt: skip
    assert target.pci[2].name == "0000:00:1f.6, driver e1000e"
    assert f"profile default, build {BUILD}" in path.read_text()


def test_an_amd_machine_without_iommu_or_nested_paging(tmp_path):
    xl = "nr_cpus : 2\ntotal_memory : 2047\nvirt_caps : pv hvm gnttab-v1\nxen_caps : xen-3.0-x86_64 hvm-3.0-x86_64\n"
    dom0 = machine(tmp_path, xl=xl)
    dom0.write("proc/cpuinfo", CPUINFO.replace("GenuineIntel", "AuthenticAMD"))
    target = load_target_file(run_report(dom0, tmp_path)[1])
    assert set(target.cpu.flags) == {"lm", "pae", "nx", "svm"}
    assert (target.memory, target.iommu, target.cpu.threads) == (2048, False, 2)


def test_without_xen_the_kernels_own_view(tmp_path):
    dom0 = machine(tmp_path, xl=None)
    dom0.write("proc/cpuinfo", CPUINFO.replace("lm hypervisor", "lm vmx ept"))
    dom0.write("sys/class/iommu/dmar0/x", "")
    target = load_target_file(run_report(dom0, tmp_path)[1])
    assert target.cpu.threads == 2 and target.memory == 1920  # 1873 MiB rounded up
    assert set(target.cpu.flags) == {"lm", "pae", "nx", "vmx", "ept"}
    assert target.iommu is True
    assert "Seen by Linux without Xen" in (tmp_path / "report.yaml").read_text()


def test_uefi_with_secure_boot_from_the_efi_variable_or_else_from_the_kernels_message(tmp_path):
    dom0 = machine(tmp_path, efi=True)
    var = "sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c"
    dom0.path(var).parent.mkdir(parents=True)
    dom0.path(var).write_bytes(b"\x06\x00\x00\x00\x01")
    target = load_target_file(run_report(dom0, tmp_path)[1])
    assert (target.firmware.type, target.firmware.csm, target.firmware.secure_boot) == (Firmware.UEFI, None, True)
    dom0.path(var).unlink()
    target = load_target_file(run_report(dom0, tmp_path)[1])
    assert target.firmware.secure_boot is False  # "Secure boot disabled" in dmesg
    dom0.command("dmesg", "true\n")
    dom0.write("sys/firmware/efi/fw_platform_size", "32\n")
    target = load_target_file(run_report(dom0, tmp_path)[1])
    assert (target.firmware.type, target.firmware.secure_boot) == (Firmware.UEFI_IA32, None)


def test_hostile_dmi_strings_stay_text_in_a_file_that_loads(tmp_path):
    vendor = 'Evil "Corp"\\ \x1b[31m: [x] #'
    dom0 = machine(tmp_path, vendor=vendor, product="pci:\n  - {id: nope}")
    stdout, path = run_report(dom0, tmp_path)
    target = load_target_file(path)
    assert target.dmi is not None
    assert target.dmi.vendor == 'Evil "Corp"\\ [31m: [x] #'  # the escape byte is gone, the rest is text
    assert target.dmi.product == "pci:"  # the first line only
    assert len(target.pci) == 3
    (report,) = extract_reports(stdout.splitlines())
    assert report.name == "evil-corp-31m-x-pci" and report.intact


def test_the_console_copy_carries_the_name_and_a_checksum_and_the_stick_keeps_one(tmp_path):
    dom0 = machine(tmp_path)
    dom0.write("run/xenlive/persistence.state", "on\nusing /dev/sdb3\n")
    stdout, path = run_report(dom0, tmp_path)
    text = path.read_text()
    lines = stdout.splitlines()
    begin = lines.index("XENLIVE-MACHINE-BEGIN lenovo-20l5cto1ww")
    end = f"XENLIVE-MACHINE-END lenovo-20l5cto1ww sha256={hashlib.sha256(text.encode()).hexdigest()}"
    assert "\n".join(lines[begin + 1 : lines.index(end)]) + "\n" == text
    assert dom0.read("dev/console").endswith(end + "\n")
    assert dom0.read("run/xenlive/persistence/xenlive-reports/lenovo-20l5cto1ww.yaml") == text
    assert "kept on the stick as xenlive-reports/lenovo-20l5cto1ww.yaml" in stdout


def test_without_persistence_the_report_stays_off_the_stick(tmp_path):
    dom0 = machine(tmp_path, vendor="", product="")
    dom0.write("run/xenlive/persistence.state", "ram\nno persistence partition\n")
    stdout, path = run_report(dom0, tmp_path)
    assert "XENLIVE-MACHINE-BEGIN unknown-machine" in stdout
    assert load_target_file(path).description == "unknown maker unknown model (reported by xenlive)"
    assert not dom0.path("run/xenlive/persistence/xenlive-reports").exists()


def _console_report(tmp_path: Path) -> tuple[list[str], str]:
    """The console lines of a real report (the fake Lenovo's), and its sha256."""
    stdout, path = run_report(machine(tmp_path), tmp_path)
    lines = stdout.splitlines()
    begin = next(i for i, line in enumerate(lines) if line.startswith("XENLIVE-MACHINE-BEGIN "))
    end = next(i for i, line in enumerate(lines) if line.startswith("XENLIVE-MACHINE-END "))
    return lines[begin : end + 1], path.read_text()


def test_a_kernel_message_that_cuts_the_end_line_or_comes_between_lines_loses_nothing(tmp_path):
    """As seen on a 32-bit UEFI boot: the NIC's link message came in the middle of the END line,
    and the rest of the line followed it. The report is still whole, and the lines after it
    (XENLIVE-READY) are the console's."""
    report, text = _console_report(tmp_path)
    end = report[-1]
    kernel = "[   19.148170] e1000e 0000:00:02.0 enp0s2: NIC Link is Up 1000 Mbps Full Duplex"
    console = [*report[:3], "[   19.100000] xenbr0: port 1(enp0s2) entered blocking state", *report[3:-1],
               end[:32] + kernel, end[32:], 'XENLIVE-READY {"profile": "default"}']  # fmt: skip
    reader = ReportReader()
    left = [line for line in console if not reader(line)]
    assert left == ["[   19.100000] xenbr0: port 1(enp0s2) entered blocking state", end[:32] + kernel,
                    'XENLIVE-READY {"profile": "default"}']  # the cut line stays the console's, as it came  # fmt: skip
    assert reader.last is not None and reader.last.intact and reader.last.text == text


def test_a_report_that_lost_its_end_does_not_swallow_the_console(tmp_path):
    report, _ = _console_report(tmp_path)
    reader = ReportReader()
    console = [*report[:-1], 'XENLIVE-READY {"profile": "default"}', "XENLIVE-GUEST-LOGS-DONE"]
    left = [line for line in console if not reader(line)]
    assert left == ['XENLIVE-READY {"profile": "default"}', "XENLIVE-GUEST-LOGS-DONE"]
    assert reader.last is None  # no complete report: the boot test says so
