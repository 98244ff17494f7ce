"""`xenlive test`: one boot or a firmware x media matrix, with JSON and JUnit reports."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import xml.etree.ElementTree as ET
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from builder.console import Session
from builder.profile.model import Firmware
from builder.qemu import BootOptions, BootResult, MediaKind, boot_and_wait

log = logging.getLogger(__name__)

# What --matrix boots unless told otherwise: the ways every image is proven in CI. The others
# (uefi-ia32; stick, the partition tables alone) are asked for with --firmware and --media.
MATRIX_FIRMWARE = (Firmware.BIOS, Firmware.UEFI)
MATRIX_MEDIA = (MediaKind.CDROM, MediaKind.USB)
MATRIX = [(f, m) for f in MATRIX_FIRMWARE for m in MATRIX_MEDIA]
# Under TCG, a dom0 kernel on several virtual CPUs now and then dies with an int3 Oops, "Kernel
# panic - not syncing: Fatal exception in interrupt" (3 boots in about 17 on 2026-12-04, at 5.6,
# 6.1 and 31.6 s of the kernel's clock; the first two as it patched its static keys). QEMU's
# emulation of code one CPU rewrites while another runs it, not the image: such a boot is made once
# more, and the report says so. A kernel that really panics panics again and fails.
EMULATOR_FLAKE_STAGES = ("dom0 kernel", "dom0 userspace")  # before XENLIVE-READY, in dom0's Linux
EMULATOR_FLAKE = "Kernel panic - not syncing: Fatal exception in interrupt"
FIRST_CONSOLE = "console.first.log"  # the report directory keeps the first boot's console


def emulator_flake(result: BootResult) -> bool:
    return (not result.passed and result.accel == "tcg" and result.stage in EMULATOR_FLAKE_STAGES
            and EMULATOR_FLAKE in result.reason)  # fmt: skip


def boot(iso: Path, opts: BootOptions, timeout: float, report_dir: Path | None = None,
         session: Session | None = None) -> BootResult:  # fmt: skip
    """boot_and_wait, once more after an emulator flake (the result's `retried` names it)."""
    result = boot_and_wait(iso, opts, timeout, report_dir, session)
    if not emulator_flake(result):
        return result
    log.warning("boot %s/%s: %s under TCG, an emulator flake; booting once more", opts.firmware,
                opts.media, EMULATOR_FLAKE)  # fmt: skip
    if report_dir is not None and (report_dir / "console.log").exists():
        (report_dir / "console.log").replace(report_dir / FIRST_CONSOLE)
    again = boot_and_wait(iso, opts, timeout, report_dir, session)
    again.retried = result.reason
    return again


@dataclass
class Run:
    firmware: Firmware
    media: MediaKind
    result: BootResult
    report_dir: Path

    @property
    def name(self) -> str:
        return f"{self.firmware}-{self.media}"

    def as_dict(self) -> dict[str, object]:
        return {"firmware": str(self.firmware), "media": str(self.media), "report_dir": str(self.report_dir),
                **self.result.as_dict()}  # fmt: skip


def default_jobs(cpus_per_run: int) -> int:
    """As many boots at once as the cores allow: each QEMU runs one thread per virtual CPU under TCG."""
    return max(1, (os.cpu_count() or 1) // max(1, cpus_per_run))


def run_boots(iso: Path, combos: list[tuple[Firmware, MediaKind]], opts: BootOptions, timeout: float,
              report_root: Path, jobs: int, session: Session | None = None) -> list[Run]:  # fmt: skip
    """Boot each firmware/media combination (in parallel up to `jobs`), each with its own report dir,
    and in each the session's expected lines and commands."""

    def one(combo: tuple[Firmware, MediaKind]) -> Run:
        firmware, media = combo
        run_opts = dataclasses.replace(opts, firmware=firmware, media=media)
        report_dir = report_root / f"{firmware}-{media}"
        result = boot(iso, run_opts, timeout, report_dir, session)
        run = Run(firmware, media, result, report_dir)
        (report_dir / "result.json").write_text(json.dumps(run.as_dict(), indent=2) + "\n")
        return run

    if jobs <= 1 or len(combos) == 1:
        return [one(combo) for combo in combos]  # in this thread, so Ctrl-C lands inside the boot loop
    stop = threading.Event()
    opts = dataclasses.replace(opts, stop=stop)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        try:
            return list(pool.map(one, combos))
        except BaseException:
            stop.set()  # the other boots end their QEMU and return; then the pool can shut down
            raise


def summary_table(runs: list[Run]) -> str:
    rows = [("firmware/media", "verdict", "time", "accel", "runs", "stage", "reason")]
    for run in runs:
        r = run.result
        reason = f"{r.reason} (second boot: the first had {r.retried})" if r.retried else r.reason
        rows.append((f"{run.firmware}/{run.media}", "PASS" if r.passed else "FAIL", f"{r.seconds:.0f} s",
                     r.accel, "xen" if r.expect_xen else "linux", r.stage, reason))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(width) for cell, width in zip(row[:-1], widths, strict=False)) + "  " + row[-1]
        for row in rows
    )


def guest_failures(result: BootResult) -> list[str]:
    """For each guest that failed: its reason, xl's error lines, the last lines of its own console
    and where its whole console log was kept; what a user reads to know what to change."""
    lines: list[str] = []
    for name, info in result.failed_guests().items():
        lines.append(f"guest {name} failed: {info.get('reason', 'no reason given')}")
        for line in _strings(info.get("xl")):
            lines.append(f"  xl: {line}")
        console = _strings(info.get("console"))
        if console:
            lines.append("  its console ended with:")
            lines += [f"  | {line}" for line in console]
        if name in result.guest_logs:
            lines.append(f"  (its whole console log: {result.guest_logs[name]})")
    return lines


def _strings(value: object) -> list[str]:
    return [str(v) for v in value] if isinstance(value, list) else []


def write_junit(runs: list[Run], path: Path, iso: Path) -> None:
    """A JUnit XML file: one test case per boot, failures carrying the stage, reason and console tail."""
    failures = sum(not run.result.passed for run in runs)
    suite = ET.Element("testsuite", name=f"xenlive boot {iso.name}", tests=str(len(runs)), failures=str(failures),
                       errors="0", time=f"{sum(run.result.seconds for run in runs):.1f}")  # fmt: skip
    for run in runs:
        r = run.result
        case = ET.SubElement(suite, "testcase", classname="xenlive.boot", name=run.name, time=f"{r.seconds:.1f}")
        stages = "\n".join(f"{name}: {seconds:.1f} s" for name, seconds in r.stages.items())
        if not r.passed:
            failure = ET.SubElement(case, "failure", message=f"{r.stage}: {r.reason}")
            failure.text = "\n".join([f"expected next: {r.expected_next}", *guest_failures(r), *r.tail])
        out = [f"accel: {r.accel}", stages, f"report: {run.report_dir}"]
        out += [f"expect {pattern!r}: " + ("not seen" if at is None else f"seen at {at} s")
                for pattern, at in r.expected.items()]  # fmt: skip
        for done in r.commands:
            out += [f"$ {done.command}", *done.output, f"(exit {done.exit}{': ' + done.reason if done.reason else ''})"]
        ET.SubElement(case, "system-out").text = "\n".join(out) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suite).write(path, encoding="utf-8", xml_declaration=True)
