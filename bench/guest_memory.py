#!/usr/bin/env python3
"""Measure the smallest memory a guest boots with, by bisecting in QEMU; run by hand, not in CI.

    python bench/guest_memory.py [--suite bookworm] [--config pv:1 --config pv:2:16 ...] [--out FILE]

Each --config is TYPE:VCPUS[:PAD], PAD being MiB of zeros added to a busybox guest's initramfs (to
see what a bigger initrd costs). One image carries a busybox guest per TYPE and PAD, none of them
autostarted, and a dom0 service (bench/guest-memory/xenlive-membench) that bisects each
configuration's thresholds inside one boot: the smallest memory xl's domain builder accepts, and the
smallest with which the guest reaches its ready marker and stays up. One QEMU boot runs the whole
plan, with nice -n 10, one guest at a time; under TCG on 2 busy cores a boot probe takes 1 to 3 minutes.

The JSON printed at the end (and written to --out) holds each threshold beside what
builder/guestmem.py predicts for it: the numbers tests/test_guestmem.py records come from here.
The measured thresholds depend only on the guest's kernel and initrd, so re-run this when the dom0
kernel of a suite changes, and for every newly supported suite.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder import qemu  # noqa: E402

HERE = Path(__file__).resolve().parent / "guest-memory"
DEFAULT_CONFIGS = ["pv:1", "pv:4", "pv:1:48", "pvh:1", "pvh:4", "pvh:1:48", "pv:8", "pv:2", "pv:1:16"]
STALL_SECONDS = 1200  # a probe prints within WAIT (300 s); this much silence means the machine hung
RESULT = re.compile(r"XENLIVE-MEMBENCH result (\S+) vcpus=(\d+) build=(\S+) boot=(\S+) repeat=(\S+)")


def guest_name(kind: str, pad: int) -> str:
    return f"{kind}{pad}" if pad else kind


def write_profile(work: Path, suite: str, configs: list[tuple[str, int, int]], lo: int, hi: int) -> Path:
    """The bench image: the default dom0, the bisecting service, a guest per type and pad."""
    overlay = work / "overlays/membench"
    (overlay / "usr/local/sbin").mkdir(parents=True)
    (overlay / "etc/systemd/system").mkdir(parents=True)
    (overlay / "etc/xenlive-membench").mkdir(parents=True)
    shutil.copy(HERE / "xenlive-membench", overlay / "usr/local/sbin/xenlive-membench")
    os.chmod(overlay / "usr/local/sbin/xenlive-membench", 0o755)
    shutil.copy(HERE / "xenlive-membench.service", overlay / "etc/systemd/system/xenlive-membench.service")
    guests = []
    for kind, pad in dict.fromkeys((k, p) for k, _, p in configs):
        lines = [f"  - name: {guest_name(kind, pad)}", f"    type: {kind}", f"    memory: {hi}M",
                 "    autostart: false", "    network: false"]  # fmt: skip
        if pad:
            pad_dir = work / f"overlays/pad{pad}"
            pad_dir.mkdir(parents=True, exist_ok=True)
            (pad_dir / "pad").write_bytes(bytes(pad << 20))
            lines.append(f"    overlay: overlays/pad{pad}")
        guests.append("\n".join(lines))
    profile = work / "membench.yaml"
    profile.write_text(
        "name: membench\n"
        "description: bisects the guests' minimum memory (bench/guest_memory.py)\n"
        "xen:\n  cmdline: dom0_mem=1024M,max:1024M\n"
        f"dom0:\n  suite: {suite}\n  overlays:\n    - overlays/membench\n"
        "guests:\n" + "\n".join(guests) + "\n"
    )
    guesses = predictions(profile, configs)
    plan = [f"{guest_name(kind, pad)} {vcpus} {lo} {hi} {' '.join(map(str, guesses[kind, vcpus, pad]))}"
            for kind, vcpus, pad in configs]  # fmt: skip
    (overlay / "etc/xenlive-membench/plan").write_text("\n".join(plan) + "\n")
    return profile


def predictions(profile_path: Path, configs: list[tuple[str, int, int]]) -> dict[tuple[str, int, int], tuple[int, int]]:
    """Where the search for each threshold starts: what builder/guestmem.py predicts from the files
    (without its margin), when dom0 is already in the cache; (0, 0), no guess, otherwise."""
    from builder.checks.facts import cached_tree, gather
    from builder.context import cache_root
    from builder.guestmem import MARGIN_MIB, guest_minimum
    from builder.profile import load_profile

    profile = load_profile(str(profile_path))
    tree = cached_tree(profile, cache_root())
    facts = gather(profile, tree) if tree is not None else None
    guesses: dict[tuple[str, int, int], tuple[int, int]] = {}
    for kind, vcpus, pad in configs:
        guest = next(g for g in profile.guests if g.name == guest_name(kind, pad))
        found = guest_minimum(guest, facts, vcpus=vcpus) if facts is not None else "no dom0 yet"
        guesses[kind, vcpus, pad] = (0, 0) if isinstance(found, str) else (found.builder, found.minimum - MARGIN_MIB)
    return guesses


def boot(iso: Path, log_path: Path, timeout: float) -> list[str]:
    """Boot the bench image under nice -n 10 and return its XENLIVE-MEMBENCH lines, echoing them."""
    accel = qemu.choose_accel("auto")
    cmd = ["nice", "-n", "10", *qemu.qemu_command(iso, qemu.BootOptions(memory_mib=2048), accel, None)]
    found: list[str] = []
    deadline = time.monotonic() + timeout
    with log_path.open("wb") as log, subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                                      stderr=subprocess.STDOUT) as proc:  # fmt: skip
        assert proc.stdout is not None
        buffer = b""
        try:
            last = time.monotonic()
            while time.monotonic() < deadline:
                readable, _, _ = select.select([proc.stdout], [], [], 5)
                if not readable:
                    if proc.poll() is not None:
                        break
                    if time.monotonic() - last > STALL_SECONDS:
                        raise SystemExit(f"no console output for {STALL_SECONDS} s: hung? console: {log_path}")
                    continue
                last = time.monotonic()
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    break
                log.write(chunk)
                log.flush()
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").replace("\r", "")
                    if "XENLIVE-MEMBENCH" in line:
                        line = line[line.index("XENLIVE-MEMBENCH") :]
                        print(line, file=sys.stderr, flush=True)
                        found.append(line)
                        if line == "XENLIVE-MEMBENCH done":
                            return found
            raise SystemExit(f"the bench did not finish within {timeout:.0f} s; console: {log_path}")
        finally:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="bookworm")
    parser.add_argument("--config", action="append", help="TYPE:VCPUS[:PAD_MIB] (repeatable)")
    parser.add_argument("--lo", type=int, default=48, help="MiB taken as too little (default 48)")
    parser.add_argument("--hi", type=int, default=256, help="MiB expected to be enough (default 256)")
    parser.add_argument("--timeout", type=float, default=4 * 3600, help="seconds for the whole boot")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    parser.add_argument("--keep", type=Path, help="keep the image and console log in this directory")
    parser.add_argument("--analyze", type=Path, nargs="+", metavar="DIR",
                        help="only read the console logs --keep runs left in these directories")  # fmt: skip
    args = parser.parse_args()
    configs = []
    for text in args.config or DEFAULT_CONFIGS:
        m = re.fullmatch(r"(pv|pvh|hvm):(\d+)(?::(\d+))?", text)
        if not m:
            parser.error(f"--config {text!r}: expected TYPE:VCPUS[:PAD_MIB], e.g. pv:2 or pv:1:16")
        configs.append((m.group(1), int(m.group(2)), int(m.group(3) or 0)))
    results: list[dict[str, object]] = []
    points: list[Point] = []
    if args.analyze:
        lines = []
        for work in args.analyze:  # several runs: their thresholds are fitted together
            found = re.findall(r"XENLIVE-MEMBENCH [^\r\n]*", (work / "console.log").read_text(errors="replace"))
            analyze(work, found, results, points)
            lines += found
        seconds = 0.0
    else:
        work = args.keep or Path(tempfile.mkdtemp(prefix="xenlive-membench-"))
        work.mkdir(parents=True, exist_ok=True)
        profile_path = write_profile(work, args.suite, configs, args.lo, args.hi)
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        subprocess.run(["nice", "-n", "10", sys.executable, "-m", "builder", "build", str(profile_path),
                        "-o", str(work / "membench.iso")], check=True, env=env)  # fmt: skip
        started = time.monotonic()
        lines = boot(work / "membench.iso", work / "console.log", args.timeout)
        seconds = time.monotonic() - started
        analyze(work, lines, results, points)
    report = {"suite": args.suite, "seconds": round(seconds), "results": results, "fit": fit(points),
              "probes": [line for line in lines if line.startswith("XENLIVE-MEMBENCH probe ")]}  # fmt: skip
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    if not args.keep and not args.analyze:
        shutil.rmtree(work, ignore_errors=True)


Point = tuple[Any, int, Any, dict[str, Any]]  # guest, vCPUs, the facts of its files, its result


def analyze(work: Path, lines: list[str], results: list[dict[str, object]], points: list[Point]) -> None:
    """Each measured threshold (added to results) beside the files' facts and what
    builder/guestmem.py predicts; with what fit needs (added to points)."""
    from builder.checks.facts import gather
    from builder.context import BuildContext, cache_root
    from builder.guestmem import guest_minimum
    from builder.profile import load_profile
    from builder.stages.rootfs import rootfs_key

    profile = load_profile(str(work / "membench.yaml"))
    probe = BuildContext(profile=profile, output=work / "membench.iso", workdir=work, cache_dir=cache_root())
    tree = cache_root() / "rootfs" / rootfs_key(probe) / "tree"
    facts = gather(profile, tree)
    for line in lines:
        m = RESULT.fullmatch(line)
        if not m:
            continue
        name, vcpus = m.group(1), int(m.group(2))
        guest = next(g for g in profile.guests if g.name == name)
        entry: dict[str, object] = {
            "guest": name, "type": str(guest.type), "vcpus": vcpus,
            "build_mib": None if m.group(3) == "none" else int(m.group(3)),
            "boot_mib": None if m.group(4) == "none" else int(m.group(4)),
            "repeat": m.group(5),
        }  # fmt: skip
        predicted = guest_minimum(guest, facts, vcpus=vcpus)
        entry["predicted"] = predicted if isinstance(predicted, str) else predicted.as_dict()
        initrd = facts.guest_initrds.get(name)
        kernel = facts.guest_kernels.get(name)
        entry["files"] = {
            "kernel_layout": None if kernel is None or kernel.layout is None else vars(kernel.layout),
            "initrd": None if initrd is None else {"loaded": initrd.loaded_bytes, "unpacked": initrd.unpacked_bytes,
                                                    "inodes": initrd.inodes},
        }  # fmt: skip
        results.append(entry)
        points.append((guest, vcpus, facts, entry))


def fit(points: list[Point]) -> dict[str, dict[str, object]]:
    """Constants for data/guest-memory.yaml that put the kernel's limit where it was measured: per
    type, the per-vCPU cost and initrd factor on a grid, and the base that makes the limit fall
    within a MiB below each boot threshold (so the minimum, MARGIN_MIB above it, lies just over it),
    keeping the combination whose worst miss is smallest."""
    import dataclasses

    from builder.guestmem import MARGIN_MIB, calibration, guest_memory, per_page_fraction

    suggestions: dict[str, dict[str, object]] = {}
    for kind in sorted({str(guest.type) for guest, _, _, _ in points}):
        rows = [(g, v, f, e) for g, v, f, e in points if str(g.type) == kind and e["boot_mib"]]
        if not rows:
            continue
        base_cal = calibration()[kind]
        best: tuple[float, Any] | None = None
        for vcpu_kib in range(0, 2049, 64):
            for factor in [x / 20 for x in range(0, 41)]:
                zero = dataclasses.replace(base_cal, base_kib=0, vcpu_kib=vcpu_kib, initrd_factor=factor)
                needs = []  # the base each measurement asks for: its threshold less what the files give
                for guest, vcpus, facts, entry in rows:
                    kernel, initrd = facts.guest_kernels[guest.name], facts.guest_initrds.get(guest.name)
                    found = guest_memory(kind, kernel, initrd, vcpus, zero)
                    assert found is not None
                    fixed_kib = sum(kib for name, kib in found.parts if name != "page management")
                    target = (int(entry["boot_mib"]) - 0.5) * 1024 * (1 - per_page_fraction(kind))
                    needs.append(target - fixed_kib)
                base = (max(needs) + min(needs)) / 2
                spread = (max(needs) - min(needs)) / 2
                if best is None or spread < best[0]:
                    best = (spread, dataclasses.replace(zero, base_kib=int(base)))
        assert best is not None
        spread, cal = best
        suggestions[kind] = {**dataclasses.asdict(cal), "worst_miss_kib": round(spread), "margin_mib": MARGIN_MIB}
    return suggestions


if __name__ == "__main__":
    main()
