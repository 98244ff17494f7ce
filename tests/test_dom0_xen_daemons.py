"""dom0's start of Xen's daemons (usr/lib/xenlive/xen-daemons, xen.service's ExecStart), run under
/bin/sh against a fake dom0 tree: the fakes are the kernel's files (sysfs, xenfs) and the daemons."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from .conftest import REPO
from .dom0_services import FakeDom0

TOOLS = "usr/lib/xen-4.20/bin"


@pytest.fixture
def xen(tmp_path: Path) -> FakeDom0:
    """dom0 on Xen 4.20 with both xenstoreds. Every fake logs its call to calls.log; xenstore-read
    answers on its third try, as a xenstored does once it has come up."""
    dom0 = FakeDom0(tmp_path)
    log = dom0.path("calls.log")
    dom0.write("sys/hypervisor/type", "xen\n")
    dom0.write("sys/hypervisor/version/major", "4\n")
    dom0.write("sys/hypervisor/version/minor", "20\n")
    dom0.write("proc/self/oom_score_adj", "0\n")
    defaults = (REPO / "builder/templates/dom0/etc/default/xen").read_text()
    dom0.write("etc/default/xen", defaults)
    dom0.path("proc/xen").mkdir(parents=True)
    dom0.command("modprobe", f'echo "modprobe $*" >> {log}\n')
    dom0.command("mount", f'echo "mount $*" >> {log}\necho "control_d" > "$4/capabilities"\n')
    dom0.command("xenstore-read", f'echo "xenstore-read $*" >> {log}\n'
                 f'n=$(grep -c xenstore-read {log}); [ "$n" -ge 3 ]\n')  # fmt: skip
    for daemon in ("oxenstored", "xenstored", "xenconsoled"):
        # A daemon writes its pid file (the test's own pid: a process that is alive).
        seen = f" root=$XENSTORED_ROOTDIR oom=$(cat {dom0.root}/proc/self/oom_score_adj)" if "store" in daemon else ""
        daemon_script = (
            f'#!/bin/sh\necho "{daemon} $*{seen}" >> {log}\n'
            f'while [ $# -gt 0 ]; do [ "$1" = --pid-file ] && echo {os.getpid()} > "$2"; shift; done\n'
        )
        path = dom0.write(f"{TOOLS}/{daemon}", daemon_script)
        path.chmod(0o755)
    init = dom0.write(f"{TOOLS}/xen-init-dom0", f'#!/bin/sh\necho "xen-init-dom0" >> {log}\n')
    init.chmod(0o755)
    return dom0


def calls(dom0: FakeDom0) -> list[str]:
    log = dom0.path("calls.log")
    return log.read_text().splitlines() if log.exists() else []


def test_starts_xenstored_waits_for_it_then_dom0_and_xenconsoled(xen: FakeDom0) -> None:
    proc = xen.run("xen-daemons")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # no pid file yet is not an error
    root = xen.root
    assert calls(xen) == [
        "modprobe -q -a xenfs xen-evtchn xen-gntdev xen-acpi-processor",
        f"mount -t xenfs xenfs {root}/proc/xen",
        f"oxenstored --pid-file {root}/run/xenstore.pid root={root}/run/xenstored oom=-1000",
        "xenstore-read -s /",
        "xenstore-read -s /",
        "xenstore-read -s /",  # it answers: only now is dom0 written into the store
        "xen-init-dom0",
        f"xenconsoled --log=guest --log-dir=/var/log/xen/console --pid-file {root}/run/xenconsoled.pid",
    ]
    assert proc.stdout == "Xen 4.20, started: oxenstored xenconsoled\n"
    assert (root / "run/xen").stat().st_mode & 0o777 == 0o700
    assert (root / "var/log/xen/console").is_dir()  # before systemd-tmpfiles: xenconsoled logs there
    assert xen.read("dev/console") == ""  # a good start is quiet on the console


def test_a_second_start_leaves_the_running_daemons_alone(xen: FakeDom0) -> None:
    assert xen.run("xen-daemons").returncode == 0
    xen.path("calls.log").unlink()
    proc = xen.run("xen-daemons")
    assert proc.returncode == 0
    assert not any(call.startswith(("oxenstored", "xenconsoled")) for call in calls(xen))
    assert proc.stdout == "Xen 4.20, started: nothing (already running)\n"


def test_the_xenstored_etc_default_xen_names_is_used(xen: FakeDom0) -> None:
    xen.write("etc/default/xen", f'XENSTORED={xen.root}/{TOOLS}/xenstored\nXENSTORED_ARGS="--trace-file x"\n')
    assert xen.run("xen-daemons").returncode == 0
    started = [call for call in calls(xen) if "xenstored" in call.split()[0]]
    assert started == [f"xenstored --trace-file x --pid-file {xen.root}/run/xenstore.pid "
                       f"root={xen.root}/run/xenstored oom=-1000"]  # fmt: skip


def test_without_oxenstored_the_c_xenstored_starts(xen: FakeDom0) -> None:
    xen.path(f"{TOOLS}/oxenstored").unlink()
    assert xen.run("xen-daemons").returncode == 0
    assert any(call.startswith("xenstored --pid-file") for call in calls(xen))


@pytest.mark.parametrize("case", ["not on Xen", "a guest, not dom0"])
def test_nothing_starts_where_there_is_no_dom0(xen: FakeDom0, case: str) -> None:
    if case == "not on Xen":
        xen.path("sys/hypervisor/type").unlink()
    else:
        xen.command("mount", 'echo "" > "$4/capabilities"\n')
    proc = xen.run("xen-daemons")
    assert proc.returncode == 0
    assert not any("xenstored" in call or "xenconsoled" in call for call in calls(xen))


def test_xenstored_that_never_answers_fails_the_unit_and_says_so(xen: FakeDom0) -> None:
    xen.command("xenstore-read", "exit 1\n")
    proc = xen.run("xen-daemons", XENLIVE_XENSTORED_WAIT="1")
    assert proc.returncode == 1
    assert "XENLIVE-XEN error: xenstored did not answer within 1 s" in xen.read("dev/console")
    assert "xen-init-dom0" not in calls(xen)


def test_tools_of_another_xen_version_fail_with_the_version(xen: FakeDom0) -> None:
    xen.write("sys/hypervisor/version/minor", "17\n")
    proc = xen.run("xen-daemons")
    assert proc.returncode == 1
    assert f"no Xen tools for Xen 4.17 in dom0 ({xen.root}/usr/lib/xen-4.17/bin)" in xen.read("dev/console")
    assert calls(xen) == []
