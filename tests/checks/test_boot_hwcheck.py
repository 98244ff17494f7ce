"""The boot-time check script (dom0's /usr/lib/xenlive/hwcheck), run with a fake `xl` on PATH.

`xl` and the dom0 tree are the edges faked here (tests/dom0_services.py): the script's logic (parse
`xl info`, read guests.tsv as the guests stage writes it, drop autostart links of guests that
cannot run, write their reasons, report) runs for real under /bin/sh.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.checks.rules import guest_need_mib
from builder.profile import Guest, GuestKind, GuestType, Profile

from ..dom0_services import FakeDom0

XL_INFO = """\
host                   : xenlive
release                : 6.1.0-50-amd64
nr_cpus                : 2
total_memory           : 2047
free_memory            : 900
virt_caps              : {caps}
xen_version            : 4.17.5
"""
CAPS = "pv hvm hvm_directio pv_directio shadow gnttab-v1"


def guest(name: str, type: str = "pv", memory: int = 128, vcpus: int = 1, **kw: object) -> Guest:
    return Guest(name=name, type=GuestType(type), memory=memory, vcpus=vcpus, **kw)  # type: ignore[arg-type]


def run(tmp_path: Path, guests: list[Guest], caps: str = CAPS, cmdline: str = "boot=live",
        ramdisks: dict[str, int] | None = None, minimums: dict[str, int] | None = None,
        ) -> tuple[list[str], FakeDom0]:  # fmt: skip
    dom0 = FakeDom0(tmp_path)
    dom0.command("xl", f"[ \"$1\" = info ] && cat <<'EOF'\n{XL_INFO.format(caps=caps)}EOF\n")
    nic = "sys/bus/pci/devices/0000:00:03.0"
    dom0.write(f"{nic}/class", "0x020000\n")
    dom0.write(f"{nic}/vendor", "0x8086\n")
    dom0.write(f"{nic}/device", "0x100e\n")
    dom0.write("proc/cmdline", cmdline + "\n")
    dom0.guests(Profile(name="p", guests=tuple(guests)), ramdisks, minimums)
    proc = dom0.run("hwcheck")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    return proc.stdout.splitlines(), dom0


def autostarted(dom0: FakeDom0) -> list[str]:
    return sorted(p.name for p in dom0.path("etc/xen/auto").iterdir())


def test_guest_too_big_for_free_memory_is_skipped(tmp_path: Path) -> None:
    lines, dom0 = run(tmp_path, [guest("tiny"), guest("big", memory=1536)])
    assert lines[0] == ("XENLIVE-HWCHECK host: Xen 4.17.5, 2 CPUs, 2047 MiB (900 MiB free for guests),"
                        " virt_caps: pv hvm hvm_directio pv_directio shadow gnttab-v1")  # fmt: skip
    assert "XENLIVE-HWCHECK ok   guest tiny (pv, 128 MiB, 1 vCPU)" in lines
    assert ("XENLIVE-HWCHECK SKIP guest big (pv, 1536 MiB, 1 vCPU): [memory-budget] needs 1555 MiB,"
            " only 900 MiB of 2047 MiB are free") in lines  # fmt: skip
    assert lines[-1] == "XENLIVE-HWCHECK done: 1 guests will start, 1 skipped"
    assert autostarted(dom0) == ["tiny.cfg"]
    assert dom0.read("run/xenlive/hwcheck/big") == (
        "skipped\nhardware check [memory-budget] needs 1555 MiB, only 900 MiB of 2047 MiB are free\nmemory-budget\n"
    )
    console = [line for line in dom0.read("dev/console").splitlines() if line]
    assert console == lines


def test_the_need_is_the_build_time_budget_s_in_start_order(tmp_path: Path) -> None:
    """Ramdisk and disk writes count as at build time, and the guests that start first get the memory."""
    deb = guest("deb", kind=GuestKind.DEBIAN, memory=512, order=10, write_buffer=128)
    small = guest("small", memory=256, order=20)
    late = guest("late", memory=128, order=30)
    ramdisks = {"deb": 6 << 20, "small": (1 << 20) + 1}
    assert guest_need_mib(deb, 6 << 20) == 512 + 4 + 5 + 6 + 128
    assert guest_need_mib(small, (1 << 20) + 1) == 256 + 4 + 2 + 2
    lines, dom0 = run(tmp_path, [late, small, deb], ramdisks=ramdisks)
    body = [line.removeprefix("XENLIVE-HWCHECK ") for line in lines[2:]]  # after the host and the NIC lines
    assert body == [
        "ok   guest deb (pv, 512 MiB, 1 vCPU)",  # 655 of 900
        "SKIP guest small (pv, 256 MiB, 1 vCPU): [memory-budget] needs 264 MiB, only 245 MiB of 2047 MiB are free",
        "ok   guest late (pv, 128 MiB, 1 vCPU)",  # 133 of the 245 left
        "done: 2 guests will start, 1 skipped",
    ]
    assert autostarted(dom0) == ["deb.cfg", "late.cfg"]


def test_a_guest_below_its_minimum_still_starts_and_the_warning_says_what_to_change(tmp_path: Path) -> None:
    """The minimum comes from guests.tsv (the build's guest-kernels check computed it); a guest
    below it is on the medium only because that check was ignored, so it is started, with a warning."""
    lines, dom0 = run(tmp_path, [guest("small", memory=64), guest("fine", memory=128)],
                      minimums={"small": 81, "fine": 81})  # fmt: skip
    assert ("XENLIVE-HWCHECK warn guest-kernels: guest small will fail to start: it has 64 MiB, less than"
            " the 81 MiB it needs to start (set memory: 81M)") in lines  # fmt: skip
    assert not any("warn guest-kernels: guest fine" in line for line in lines)
    assert "XENLIVE-HWCHECK ok   guest small (pv, 64 MiB, 1 vCPU)" in lines
    assert autostarted(dom0) == ["fine.cfg", "small.cfg"]


def test_an_unknown_minimum_warns_of_nothing(tmp_path: Path) -> None:
    lines, _ = run(tmp_path, [guest("small", memory=16)], minimums={"small": 0})
    assert not any("guest-kernels" in line for line in lines)


def test_guests_that_do_not_autostart_are_not_checked(tmp_path: Path) -> None:
    lines, dom0 = run(tmp_path, [guest("off", memory=4096, autostart=False), guest("on")])
    assert not any("off" in line for line in lines)
    assert lines[-1] == "XENLIVE-HWCHECK done: 1 guests will start, 0 skipped"
    assert not dom0.path("run/xenlive/hwcheck/off").exists()


def test_unbound_device_is_reported(tmp_path: Path) -> None:
    lines, _ = run(tmp_path, [])
    assert "XENLIVE-HWCHECK warn device-drivers: 0000:00:03.0 (8086:100e, class 020000) has no driver in dom0" in lines


@pytest.mark.parametrize(
    ("caps", "expected"),
    [
        ("pv hvm hap shadow", "XENLIVE-HWCHECK ok   guest h (hvm, 128 MiB, 1 vCPU)"),
        ("pv", "XENLIVE-HWCHECK SKIP guest h (hvm, 128 MiB, 1 vCPU): [hvm-needs-vtx] type hvm needs VT-x or AMD-V,"
               " which this machine lacks or its firmware disables"),
        ("pv hvm", "XENLIVE-HWCHECK SKIP guest h (hvm, 128 MiB, 1 vCPU): [hvm-needs-hap] type hvm needs EPT/NPT:"
                   " the CPU has none and Xen has no shadow paging"),
        ("pv hvm shadow", "XENLIVE-HWCHECK warn hvm-shadow-paging: guest h runs on shadow paging (no EPT/NPT):"
                          " expect it to be slow"),
    ],
)  # fmt: skip
def test_hvm_guest_against_virt_caps(tmp_path: Path, caps: str, expected: str) -> None:
    lines, _ = run(tmp_path, [guest("h", type="hvm")], caps=caps)
    assert expected in lines


def test_vcpus_warning_and_safe_mode(tmp_path: Path) -> None:
    lines, dom0 = run(tmp_path / "a", [guest("wide", vcpus=4)])
    assert "XENLIVE-HWCHECK warn vcpus: guest wide has 4 vCPUs, the machine 2 CPUs" in lines
    assert autostarted(dom0) == ["wide.cfg"]
    lines, dom0 = run(tmp_path / "b", [guest("big", memory=4096)], cmdline="boot=live xenlive.safe")
    assert lines[-1] == "XENLIVE-HWCHECK safe mode: guests are not started, nothing to check"
    assert autostarted(dom0) == ["big.cfg"]


def test_without_xen_nothing_is_touched(tmp_path: Path) -> None:
    dom0 = FakeDom0(tmp_path)
    dom0.command("xl", "exit 1\n")
    dom0.guests(Profile(name="p", guests=(guest("big", memory=4096),)))
    proc = dom0.run("hwcheck")
    assert proc.returncode == 0
    assert proc.stdout == "XENLIVE-HWCHECK not running under Xen (xl info failed): no guest is checked\n"
    assert autostarted(dom0) == ["big.cfg"]
