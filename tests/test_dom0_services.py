"""dom0's shared shell library (usr/lib/xenlive/lib.sh) and the services without a test file of their
own (report, setup), run under /bin/sh against a fake dom0 tree (tests/dom0_services.py).

hwcheck is tested in tests/checks/test_boot_hwcheck.py, guests and ready in tests/stages/test_guests.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.profile import load_profile, template_context
from builder.stages.customize import apply_overlay
from builder.stages.guests import build_guests

from .checks.conftest import LINUX_LOADS, bzimage, elf_kernel, xen_kernel_notes
from .dom0_services import SERVICES, FakeDom0

SERVICE_NAMES = ("guests", "hwcheck", "ready", "report", "setup", "vif-bridge", "xen-daemons")
TRICKY = [
    "",
    "plain words",
    'say "hi"',
    "back\\slash and \\n not a newline",
    "two\nlines\n",
    "tab\there, cr\rthere",
    "".join(chr(c) for c in range(1, 32)),
    "del \x7f stays",
    "日本語 曜日",
    "100% %s %d",
    "\\",
    '"',
]


@pytest.fixture
def dom0(tmp_path: Path) -> FakeDom0:
    return FakeDom0(tmp_path)


# --- json_string ----------------------------------------------------------------------------------


@pytest.mark.parametrize("text", TRICKY)
def test_json_string_round_trips(dom0: FakeDom0, text: str) -> None:
    dom0.env["VALUE"] = text
    proc = dom0.shell('json_string "$VALUE"')
    assert proc.returncode == 0 and proc.stderr == ""
    assert "\n" not in proc.stdout  # one line on the console, whatever the text
    assert json.loads(proc.stdout) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('a "quoted" word', r'"a \"quoted\" word"'),
        ("C:\\path\\", r'"C:\\path\\"'),
        ("line\nnext\tcol\r", r'"line\nnext\tcol\r"'),
        ("bell\x07 esc\x1b", r'"bell\u0007 esc\u001b"'),
        ("ja_JP 月曜日", '"ja_JP 月曜日"'),
    ],
)
def test_json_string_escapes(dom0: FakeDom0, text: str, expected: str) -> None:
    dom0.env["VALUE"] = text
    assert dom0.shell('json_string "$VALUE"').stdout == expected


# --- say, say_line --------------------------------------------------------------------------------


def test_say_writes_the_journal_and_the_console_verbatim(dom0: FakeDom0) -> None:
    proc = dom0.shell(r"say 'a\nb' '%s'; say second")
    assert proc.stdout == "TEST a\\nb %s\nTEST second\n"
    assert dom0.read("dev/console") == proc.stdout  # appended, never truncated


def test_say_line_starts_a_console_line_of_its_own(dom0: FakeDom0) -> None:
    dom0.write("dev/console", "kernel: half a line")
    proc = dom0.shell('say_line "{\\"k\\": 1}"')
    assert proc.stdout == 'TEST {"k": 1}\n'
    assert dom0.read("dev/console") == 'kernel: half a line\nTEST {"k": 1}\n'


def test_say_without_a_console_still_prints(dom0: FakeDom0) -> None:
    dom0.path("dev/console").unlink()
    dom0.path("dev").rmdir()
    proc = dom0.shell("say hello")
    assert proc.returncode == 0 and proc.stdout == "TEST hello\n" and proc.stderr == ""


# --- safe mode, the bridge, the guest table -------------------------------------------------------


@pytest.mark.parametrize(
    ("cmdline", "safe"),
    [
        ("boot=live console=hvc0 xenlive.safe nomodeset", True),
        ("xenlive.safe", True),
        ("boot=live", False),
        ("boot=live xenlive.safer", False),
        ("boot=live xenlivexsafe", False),
        (None, False),
    ],
)
def test_safe_mode(dom0: FakeDom0, cmdline: str | None, safe: bool) -> None:
    if cmdline is None:
        dom0.path("proc/cmdline").unlink()
    else:
        dom0.write("proc/cmdline", cmdline + "\n")
    proc = dom0.shell("safe_mode && echo safe || echo normal")
    assert proc.stdout == ("safe\n" if safe else "normal\n") and proc.stderr == ""


def _bridge(dom0: FakeDom0, tmp_path: Path, answer_after: int) -> None:
    """A fake `ip` that has an address on the bridge from its call number answer_after on; `sleep` counts."""
    calls = tmp_path / "ip-calls"
    dom0.command(
        "ip",
        f'echo x >> "{calls}"\n[ "$(wc -l < "{calls}")" -ge {answer_after} ] && [ "$6" = xenbr0 ]'
        ' && echo "5: xenbr0 inet 10.0.2.15/24 brd 10.0.2.255 scope global xenbr0"\nexit 0\n',
    )
    dom0.command("sleep", f'echo "$1" >> "{tmp_path / "sleeps"}"\n')


@pytest.mark.parametrize(
    ("dhcp", "answer_after", "lease", "address", "sleeps"),
    [
        ("yes", 1, False, "10.0.2.15/24", 0),  # already there
        ("yes", 3, False, "10.0.2.15/24", 8),  # DHCP answers while it waits; `ip` every 2 s
        ("yes", 3, True, "10.0.2.15/24", 2),  # with networkd's lease on file, `ip` at every look
        ("yes", 99, False, "", 8),  # nobody answers: it gives up after ADDRESS_WAIT seconds
        ("no", 99, False, "", 0),  # without DHCP nobody would answer: no wait at all
    ],
)
def test_wait_bridge_address(dom0: FakeDom0, tmp_path: Path, dhcp: str, answer_after: int, lease: bool,
                             address: str, sleeps: int) -> None:  # fmt: skip
    _bridge(dom0, tmp_path, answer_after)
    dom0.write("sys/class/net/xenbr0/ifindex", "5\n")
    if lease:
        dom0.write("run/systemd/netif/leases/5", "ADDRESS=10.0.2.15\n")
    dom0.conf(BRIDGE="xenbr0", DHCP=dhcp)
    proc = dom0.shell("wait_bridge_address 4")
    assert proc.stdout == f"{address}\n"
    slept = (tmp_path / "sleeps").read_text().split() if (tmp_path / "sleeps").exists() else []
    assert slept == ["0.5"] * sleeps


def test_wait_bridge_address_finds_a_bridge_made_while_it_waits(dom0: FakeDom0, tmp_path: Path) -> None:
    """The bridge and networkd's lease appear after the wait began (the fake `sleep` makes them on
    its second call): the wait then watches the lease, and `ip` answers at the next look, not 2 s on."""
    _bridge(dom0, tmp_path, 2)
    sleeps = tmp_path / "sleeps"
    root = dom0.root
    dom0.command("sleep", f'echo "$1" >> "{sleeps}"\n[ "$(wc -l < "{sleeps}")" -eq 2 ] && '
                          f'mkdir -p "{root}/sys/class/net/xenbr0" "{root}/run/systemd/netif/leases" && '
                          f'echo 5 > "{root}/sys/class/net/xenbr0/ifindex" && : > "{root}/run/systemd/netif/leases/5"\n'
                          'exit 0\n')  # fmt: skip
    dom0.conf(BRIDGE="xenbr0", DHCP="yes")
    proc = dom0.shell("wait_bridge_address 4")
    assert proc.stdout == "10.0.2.15/24\n"
    assert sleeps.read_text().split() == ["0.5"] * 2  # found at the look right after the lease appeared


def test_read_guest_reads_the_table_the_builder_writes(dom0: FakeDom0, tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text(
        "name: p\nguests:\n"
        "  - {name: web.1, memory: 256M, vcpus: 2, type: pvh, order: 7}\n"
        "  - {name: deb, kind: debian, write_buffer: 96M, autostart: false}\n"
        "  - {name: a_b-c, order: 7}\n"
    )
    dom0.guests(load_profile(tmp_path / "p.yaml"), {"web.1": 3 << 20})
    proc = dom0.shell(
        'while read_guest; do echo "$name|$type|$memory|$vcpus|$autostart|$order|$write_buffer|$need"; done'
        ' < "$GUESTS_TSV"; autostart_guests'
    )
    assert proc.stderr == ""
    assert proc.stdout.splitlines() == [
        "a_b-c|pv|128|1|yes|7|0|133",
        "web.1|pvh|256|2|yes|7|0|265",
        "deb|pv|128|1|no|50|96|229",
        "a_b-c",
        "web.1",
    ]


# --- the guests' network interfaces: the hotplug script libxl runs -------------------------------


@pytest.fixture
def hotplug(dom0: FakeDom0) -> FakeDom0:
    """A dom0 with bridge xenbr0 (MTU 1500) and fake ip and xenstore tools that log what they are told."""
    dom0.write("sys/class/net/xenbr0/mtu", "1500\n")
    dom0.path("sys/class/net/xenbr0/bridge").mkdir()
    log = dom0.path("calls.log")
    dom0.command("ip", f'echo "ip $*" >> {log}\n')
    dom0.command("xenstore-write", f'echo "xenstore-write $*" >> {log}\n')
    dom0.command("xenstore-read", 'case "$1" in */bridge) echo "${BRIDGE_NAME-xenbr0}" ;; *) exit 1 ;; esac\n')
    return dom0


def vif(dom0: FakeDom0, *args: str, **env: str) -> tuple[int, list[str]]:
    proc = dom0.run("vif-bridge", *args, vif="vif3.0", XENBUS_PATH="backend/vif/3/0", **env)
    calls = dom0.read("calls.log").splitlines() if dom0.path("calls.log").exists() else []
    return proc.returncode, calls


def test_vif_online_joins_the_bridge_with_its_mtu_and_tells_netback(hotplug: FakeDom0) -> None:
    assert vif(hotplug, "online", "type_if=vif") == (0, [
        "ip link set dev vif3.0 down address fe:ff:ff:ff:ff:ff mtu 1500",
        "ip link set dev vif3.0 master xenbr0 up",
        "xenstore-write /local/domain/3/device/vif/0/mtu 1500",
        "xenstore-write backend/vif/3/0/hotplug-status connected",  # netback connects the guest now
    ])  # fmt: skip


def test_vif_to_a_missing_bridge_fails_where_libxl_reads_it(hotplug: FakeDom0) -> None:
    code, calls = vif(hotplug, "online", "type_if=vif", BRIDGE_NAME="br-gone")
    assert code == 1
    assert calls == ["xenstore-write backend/vif/3/0/hotplug-error vif3.0: bridge br-gone does not exist in dom0"
                     " backend/vif/3/0/hotplug-status error"]  # fmt: skip


def test_the_tap_of_an_hvm_guest_joins_the_bridge_and_netback_is_not_told(hotplug: FakeDom0) -> None:
    code, calls = vif(hotplug, "add", "type_if=tap", INTERFACE="vif3.0-emu")
    assert code == 0
    assert calls == ["ip link set dev vif3.0-emu down address fe:ff:ff:ff:ff:ff mtu 1500",
                     "ip link set dev vif3.0-emu master xenbr0 up"]  # fmt: skip


def test_vif_offline_leaves_the_bridge(hotplug: FakeDom0) -> None:
    assert vif(hotplug, "offline", "type_if=vif") == (
        0,
        ["ip link set dev vif3.0 down", "ip link set dev vif3.0 nomaster"],
    )


def test_vif_refuses_what_libxl_never_asks(hotplug: FakeDom0) -> None:
    assert vif(hotplug, "frobnicate")[0] == 1
    assert hotplug.run("vif-bridge", "online").returncode == 1  # no $vif, no $XENBUS_PATH


def block(
    dom0: FakeDom0, action: str, device: str = "/dev/mapper/xenlive-deb", numbers: str = "fd:3"
) -> tuple[int, list[str]]:
    """The disk hotplug script with fake xenstore tools and stat (what it reads of the device)."""
    log = dom0.path("calls.log")
    dom0.command("xenstore-write", f'echo "xenstore-write $*" >> {log}\n')
    dom0.command("xenstore-read", f'case "$1" in */params) echo "{device}" ;; *) exit 1 ;; esac\n')
    dom0.command("stat", f'[ -n "{numbers}" ] || exit 1; echo "{numbers}"\n')
    proc = dom0.run("block", action, XENBUS_PATH="backend/vbd/3/51712")
    calls = dom0.read("calls.log").splitlines() if log.exists() else []
    return proc.returncode, calls


def test_block_add_gives_blkback_the_snapshots_numbers_and_says_connected(dom0: FakeDom0) -> None:
    assert block(dom0, "add") == (0, [
        "xenstore-write backend/vbd/3/51712/physical-device fd:3 backend/vbd/3/51712/physical-device-path"
        " /dev/mapper/xenlive-deb backend/vbd/3/51712/hotplug-status connected",
    ])  # fmt: skip


@pytest.mark.parametrize(("numbers", "why"), [("", "does not exist in dom0"), ("0:0", "is not a block device")])
def test_block_add_of_what_is_no_block_device_fails_where_libxl_reads_it(dom0: FakeDom0, numbers: str,
                                                                         why: str) -> None:  # fmt: skip
    code, calls = block(dom0, "add", numbers=numbers)
    assert code == 1
    assert calls == [f"xenstore-write backend/vbd/3/51712/hotplug-error /dev/mapper/xenlive-deb {why}"
                     " backend/vbd/3/51712/hotplug-status error"]  # fmt: skip


def test_block_remove_leaves_the_snapshot_and_unknown_actions_fail(dom0: FakeDom0) -> None:
    assert block(dom0, "remove") == (0, [])
    assert block(dom0, "frobnicate")[0] == 1
    assert dom0.run("block", "add").returncode == 1  # no $XENBUS_PATH


# --- every service: one library, every path under XENLIVE_ROOT ------------------------------------


@pytest.mark.parametrize("service", SERVICE_NAMES)
def test_every_service_sources_the_library_and_states_no_path_of_its_own(service: str) -> None:
    """What lib.sh defines is not defined again, and no service names a dom0 path itself (only
    /dev/null), so XENLIVE_ROOT moves everything a service touches."""
    lines = (SERVICES / service).read_text().splitlines()
    code = [line for line in lines if not line.lstrip().startswith("#")]
    assert '. "$(dirname -- "$0")/lib.sh"' in code
    for name in ("say", "say_line", "json_string", "safe_mode", "bridge_address", "wait_bridge_address"):
        assert not any(re.fullmatch(rf"\s*{name}\s*\(\)\s*\{{?.*", line) for line in code), name
    for line in code:
        assert "xenlive.safe" not in line
        assert not re.search(r"(?<![\w$}])/(etc|run|proc|sys|dev|var|usr|tmp)/", line.replace("/dev/null", "")), line


def test_the_services_read_the_files_the_builder_writes(tmp_path: Path) -> None:
    """dom0's tree as customize and the guests stage write it for the default profile: the names and
    formats lib.sh expects are the ones the builder uses."""
    tree = tmp_path / "tree"
    (tree / "boot").mkdir(parents=True)
    (tree / "boot/vmlinuz-6.1.0-1-amd64").write_bytes(bzimage(elf_kernel(xen_kernel_notes(), LINUX_LOADS)))
    (tree / "bin").mkdir()
    (tree / "bin/busybox").write_bytes(b"\x7fELF busybox")
    ctx = BuildContext(profile=load_profile(None), output=tmp_path / "o.iso", workdir=tmp_path / "w",
                       cache_dir=tmp_path / "cache")  # fmt: skip
    ctx.rootfs = tree
    apply_overlay(SERVICES.parents[2], ctx.top, template_context(ctx.profile))
    build_guests(ctx)
    dom0 = FakeDom0(tmp_path, root=ctx.top)
    dom0.command(
        "xl",
        'case "$1" in\n'
        '  info) printf "nr_cpus : 2\\ntotal_memory : 2047\\nfree_memory : 900\\nvirt_caps : pv\\n'
        'xen_version : 4.17.5\\n" ;;\n'
        "  domid) exit 0 ;;\n"
        '  list) printf "Name ID Mem VCPUs State Time\\n%s 1 128 1 -b---- 1.0\\n" "$2" ;;\n'
        "esac\n",
    )
    # The default profile keeps nothing: the build leaves xenlive-persist disabled and ready says why.
    hwcheck = dom0.run("hwcheck")
    assert hwcheck.stderr == ""
    assert "XENLIVE-HWCHECK ok   guest tiny (pv, 128 MiB, 1 vCPU)" in hwcheck.stdout.splitlines()
    dom0.write("var/log/xen/console/guest-tiny.log", "[    0.0] Linux version 6.12\r\nwelcome\r\n")
    ready = dom0.run("ready", XENLIVE_READY_WAIT="1", XENLIVE_LOG_PACE="0")
    assert ready.stderr == ""
    # On the console: READY first, then the guests' logs, then the line that ends them.
    console = dom0.read("dev/console").split("\nXENLIVE-READY ", 1)[1].splitlines()
    assert console[0].startswith("{") and console[1:] == [
        "XENLIVE-GUEST-LOG tiny [    0.0] Linux version 6.12", "XENLIVE-GUEST-LOG tiny welcome",
        "XENLIVE-GUEST-LOGS-DONE"]  # fmt: skip
    assert json.loads(ready.stdout.removeprefix("XENLIVE-READY ")) == {
        "profile": "default",
        "xen": "4.17.5",
        "guests": {"tiny": {"state": "running"}},
        "persistence": {"state": "ram", "reason": "the profile keeps nothing on a stick", "warnings": []},
    }


# --- report ---------------------------------------------------------------------------------------


def test_report_prints_the_settings_as_one_json_line(dom0: FakeDom0, tmp_path: Path) -> None:
    _bridge(dom0, tmp_path, 1)
    for command, output in {
        "hostname": "xenoppix",
        "locale": "UTF-8",
        "date": "月曜日",
        "systemctl": "active",
        "dumpkeys": 'keycode  89 = backslash  bar\nkeycode  90 = "quoted"',
    }.items():
        dom0.command(command, f"cat <<'EOF'\n{output}\nEOF\n")
    dom0.conf(BRIDGE="xenbr0", DHCP="yes", ADDRESS_WAIT="1")
    dom0.write("etc/default/locale", "LANG=ja_JP.UTF-8\n")
    dom0.write("etc/default/keyboard", 'XKBMODEL="jp106"\nXKBLAYOUT="jp"\n')
    dom0.write("sys/class/net/xenbr0/brif/enp0s2", "")
    dom0.write("sys/class/net/xenbr0/brif/vif1.0", "")
    proc = dom0.run("report")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    (line,) = proc.stdout.splitlines()
    assert line.startswith("XENLIVE-SETTINGS {")
    assert json.loads(line.removeprefix("XENLIVE-SETTINGS ")) == {
        "hostname": "xenoppix",
        "lang": "ja_JP.UTF-8",
        "charmap": "UTF-8",
        "weekday": "月曜日",
        "timezone": "月曜日",  # the fake `date` answers every format alike
        "keyboard": "jp106/jp",
        "keyboard_setup": "active",
        "keycode_89": "keycode 89 = backslash bar",
        "bridge": "xenbr0",
        "address": "10.0.2.15/24",
        "ports": "enp0s2 vif1.0",
    }
    assert dom0.read("dev/console") == f"\n{line}\n"
    assert dom0.read("run/xenlive/printed/settings") == ""  # for ready


@pytest.mark.parametrize("end", ["exit 3", "kill -TERM $$; sleep 5", "true"])
def test_printed_on_exit_marks_however_the_script_ends(dom0: FakeDom0, end: str) -> None:
    """report and machine leave their mark however they end (an error, systemd's SIGTERM at their
    timeout, or done), so that ready does not hold back XENLIVE-GUEST-LOGS-DONE waiting for them."""
    proc = dom0.shell(f"printed_on_exit settings; {end}")
    assert dom0.path("run/xenlive/printed/settings").read_text() == ""
    assert proc.returncode == {"exit 3": 3, "true": 0}.get(end, 143)


@pytest.mark.parametrize("settings_printed", [True, False])
def test_ready_ends_the_logs_once_the_settings_are_out(dom0: FakeDom0, tmp_path: Path, settings_printed: bool) -> None:
    """READY waits for neither XENLIVE-SETTINGS (it may wait for DHCP) nor the machine report; the
    line that ends what a boot test reads waits for both, at most XENLIVE_PRINTED_WAIT seconds."""
    dom0.command("xl", "exit 1\n")
    dom0.command("sleep", f'echo "sleep $*" >> {tmp_path}/sleeps\n')
    dom0.write("etc/xenlive/guests.tsv", "")
    dom0.write("run/xenlive/printed/machine", "")
    if settings_printed:
        dom0.write("run/xenlive/printed/settings", "{}\n")
    proc = dom0.run("ready", XENLIVE_PRINTED_WAIT="2", XENLIVE_LOG_PACE="0")
    assert proc.returncode == 0 and proc.stdout.startswith("XENLIVE-READY {")
    assert dom0.read("dev/console").endswith("XENLIVE-GUEST-LOGS-DONE\n")
    sleeps = (tmp_path / "sleeps").read_text().splitlines() if (tmp_path / "sleeps").exists() else []
    assert sleeps == ([] if settings_printed else ["sleep 0.5"] * 4)


# --- setup ----------------------------------------------------------------------------------------


def test_setup_applies_the_owners_under_the_root(dom0: FakeDom0, tmp_path: Path) -> None:
    log = tmp_path / "chown.log"
    dom0.command("chown", f'echo "$*" >> "{log}"\ncase "$*" in *missing*) exit 1 ;; esac\n')
    dom0.write("etc/xenlive/owners", "R 1000:1000 /home/ken\nF 0:42 /etc/shadow\n")
    proc = dom0.run("setup")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == f"-R -h -- 1000:1000 {dom0.root}/home/ken\n-h -- 0:42 {dom0.root}/etc/shadow\n"
    dom0.write("etc/xenlive/owners", "F 1000:1000 /missing\nF 0:0 /etc/motd\n")
    proc = dom0.run("setup")
    assert proc.returncode == 1  # one failed, the rest still applied
    assert log.read_text().splitlines()[-1] == f"-h -- 0:0 {dom0.root}/etc/motd"


def test_every_program_a_xenlive_unit_starts_is_shipped_executable() -> None:
    """systemd refuses an ExecStart= file without its execute bits: the service fails at every boot."""
    units = sorted((SERVICES.parents[2] / "etc/systemd/system").glob("xen*.service"))
    assert len(units) >= 7
    for unit in units:
        programs = re.findall(r"^ExecStart=-?(/\S+)", unit.read_text(), re.M)
        assert programs, unit.name
        for program in programs:
            shipped = SERVICES.parents[2] / program.lstrip("/")
            assert shipped.is_file() and shipped.stat().st_mode & 0o111 == 0o111, f"{unit.name}: {program}"
