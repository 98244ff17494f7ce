"""Guests below, between and at their minimum memory: refused at build time, failing at boot with
the reason, and running.

Three busybox PV guests boot dom0's kernel. "short" has less memory than Xen's domain builder needs
to lay it out; "dies" has just what the domain builder needs, less than its kernel needs; "fits" has
the minimum the guest-kernels check asks for. The build refuses the first two (exit 3, naming each
guest, its memory and its minimum, the same number builder/guestmem.py gives and within the margin
above what bench/guest_memory.py measured); with --ignore-check guest-kernels the image is built and
booted once: XENLIVE-READY says "short" failed with the domain builder's own message, "dies" failed
with its console's last lines (the report keeps its console log, up to 300 lines), and "fits" runs.
One TCG boot: about 5 to 10 minutes on a 2-core machine.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from builder.checks.facts import cached_tree, gather
from builder.context import cache_root
from builder.guestmem import GuestMemory, guest_minimum
from builder.profile import load_profile
from tests.integration.common import xenlive
from tests.test_guestmem import MAX_ABOVE, MEASURED

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]

GUEST = """\
  - name: {name}
    memory: {memory}M
    network: false
    ready: "^XENLIVE-GUEST-READY {name}"
    ready_timeout: 1200
"""
REFUSED = re.compile(r"\[guest-kernels\] guest (\w+) has (\d+) MiB but needs at least (\d+) MiB to start")


def write_profile(path: Path, memory: dict[str, int]) -> Path:
    guests = "".join(GUEST.format(name=name, memory=mib) for name, mib in memory.items())
    path.write_text(
        "name: memproof\ndescription: guests below, between and at their minimum memory\n"
        # The thresholds in tests/test_guestmem.py were measured with Debian 12's kernel.
        f"dom0:\n  suite: bookworm\nguests:\n{guests}"
    )
    return path


def test_too_little_memory_is_refused_then_fails_at_boot_with_the_reason(tmp_path: Path) -> None:
    iso = tmp_path / "memproof.iso"
    profile_path = write_profile(tmp_path / "memproof.yaml", {"short": 64, "dies": 64, "fits": 64})
    refused = xenlive("build", str(profile_path), "-o", str(iso))
    assert refused.returncode == 3 and not iso.exists(), refused.stderr
    minimums = {name: int(need) for name, have, need in REFUSED.findall(refused.stderr) if have == "64"}
    assert set(minimums) == {"short", "dies", "fits"}, refused.stderr
    assert "fix: set memory: " in refused.stderr and "--ignore-check guest-kernels" in refused.stderr

    # The right minimum: what guestmem computes from the built files, just above the measured threshold.
    profile = load_profile(profile_path)
    tree = cached_tree(profile, cache_root())
    assert tree is not None
    facts = gather(profile, tree)
    found = {g.name: guest_minimum(g, facts) for g in profile.guests}
    assert all(isinstance(f, GuestMemory) for f in found.values())
    assert {name: f.minimum for name, f in found.items() if isinstance(f, GuestMemory)} == minimums
    builder_threshold, boot_threshold = MEASURED[("pv", 1, 0)]
    assert all(boot_threshold <= m <= boot_threshold + MAX_ABOVE for m in minimums.values())

    # Built anyway: "short" below the domain builder's limit, "dies" at it, "fits" at its minimum.
    dies = found["dies"]
    assert isinstance(dies, GuestMemory) and dies.builder == builder_threshold < boot_threshold
    write_profile(profile_path, {"short": 64, "dies": dies.builder, "fits": minimums["fits"]})
    built = xenlive("build", str(profile_path), "-o", str(iso), "--ignore-check", "guest-kernels")
    assert built.returncode == 0, built.stderr
    report = tmp_path / "report"
    boot = xenlive("test", str(iso), "--json", "--report-dir", str(report), "--timeout", "1800")
    assert boot.returncode == 1, boot.stderr  # guests the profile starts did not run: the test says so
    result = json.loads(boot.stdout)
    guests = result["ready"]["guests"]
    assert list(guests) == ["dies", "fits", "short"]  # every guest on the medium, in start order

    short = guests["short"]
    assert short["state"] == "failed"
    assert short["reason"].startswith("xl create: xc: error: panic: ")  # the domain builder's own message
    assert f"it has 64 MiB, less than the {minimums['short']} MiB it needs to start" in short["reason"]
    assert short["xl"][0] == short["reason"].removeprefix("xl create: ").split(" (it has")[0]
    assert not any("Destruction of domain failed" in line for line in short["xl"])

    died = guests["dies"]
    assert died["state"] == "failed" and died["reason"].startswith("the domain ")
    assert f"it has {dies.builder} MiB, less than the {minimums['dies']} MiB" in died["reason"]
    assert re.search(r"Kernel panic|Out of memory|oom", died["reason"])  # the console's telling line
    # Its last lines: a real kernel's panic ends with its call trace, which fills them.
    assert died["console"]
    log = Path(result["guest_logs"]["dies"]).read_text(errors="replace")
    # Its console kept in the report: up to its last 300 lines (an OOM report can make it longer).
    assert "Linux version" in log or log.startswith("[xenlive: the first ")
    assert log.rstrip("\n").endswith(died["console"][-1]) and re.search(r"Kernel panic|Out of memory", log)

    assert guests["fits"] == {"state": "running", "ready": True}
    assert "Linux version" in Path(result["guest_logs"]["fits"]).read_text(errors="replace")
    assert "guest short failed: xl create: xc: error: panic:" in boot.stderr
    assert "guest dies failed: the domain " in boot.stderr and "its console ended with:" in boot.stderr
    assert "XENLIVE-HWCHECK warn guest-kernels: guest dies will fail to start" in (
        Path(result["report_dir"]) / "console.log"
    ).read_text(errors="replace")
