"""What each command does once its arguments are parsed: call the library, print the result.

builder/cli.py declares the commands and their options and calls exactly one function here for
each, so the declarations read as the command-line reference and this module as what the commands
print. Results meant for pipes go to stdout (`--json` prints one JSON document there); progress,
messages and summaries go to stderr through logging, so -q/-v govern them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import yaml

from builder import userns
from builder.context import cache_root
from builder.errors import BootTestFailed, UsageError, VerifyFailed, XenliveError
from builder.log import Meter, step
from builder.profile import Firmware, Profile, load_profile, to_data

if TYPE_CHECKING:
    from builder.qemu import BootOptions

log = logging.getLogger(__name__)


def _echo_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


# --- profiles ----------------------------------------------------------------------------------------


def build_command(profile_spec: str | None, output: Path | None, ignore_checks: tuple[str, ...],
                  variables: dict[str, str], as_json: bool) -> None:  # fmt: skip
    """`xenlive build`: the ISO, then a summary (stage times and cache use on stderr, the ISO on stdout)."""
    from builder.pipeline import build as run_build

    userns.ensure_root()
    model = load_profile(profile_spec, ignore_checks, variables)
    output = output or Path(f"{model.name}.iso")
    ctx = run_build(model, output, cache_root(), ignore_checks=ignore_checks)
    summary = {
        "iso": str(output),
        "bytes": output.stat().st_size,
        "sha256": ctx.output_sha256,
        "build_id": ctx.build_id,
        "seconds": {stage: round(seconds, 1) for stage, seconds in ctx.timings.items()},
        "cache_hits": ctx.cache_hits,
    }
    versions = built_versions(ctx.platform)
    summary["versions"] = versions
    if as_json:
        _echo_json(summary)
        return
    for stage, seconds in ctx.timings.items():
        log.info("%-30s %7.1f s", stage, seconds)
    cached = ", ".join(f"{name} {'hit' if hit else 'miss'}" for name, hit in ctx.cache_hits.items())
    log.info("%-30s %s", "cache", cached)
    log.info("built: %s", ", ".join(f"{k} {v}" for k, v in versions.items()))
    click.echo(f"{output} ({output.stat().st_size / 2**20:.0f} MiB, sha256 {ctx.output_sha256})")


def built_versions(platform: dict[str, Any]) -> dict[str, str]:
    """Xen, the kernel and live-boot as the build resolved them (from the manifest's dom0 facts)."""
    parts = {"xen": "xen", "linux": "kernel", "live-boot": "live_boot"}
    return {name: str((platform.get(key) or {}).get("package_version") or "?") for name, key in parts.items()}


def show_command(profile_spec: str, variables: dict[str, str], as_json: bool) -> None:
    """`xenlive show`: the resolved profile (extends merged, defaults filled in)."""
    data = to_data(load_profile(profile_spec, variables=variables))
    if as_json:
        _echo_json(data)
        return
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=1000), nl=False)


def schema_command() -> None:
    from builder.schema import schema_text

    click.echo(schema_text(), nl=False)


def init_command(directory: Path, name: str | None) -> None:
    from builder.scaffold import scaffold

    for created in scaffold(directory, name):
        click.echo(created)


def profiles_command(as_json: bool) -> None:
    """`xenlive profiles`: ./profiles first, then the built-in ones, each name once."""
    from builder.profile.loader import LOCAL_PROFILES
    from builder.scaffold import list_profiles

    entries = list_profiles(LOCAL_PROFILES)
    if as_json:
        _echo_json([entry.as_dict() for entry in entries])
        return
    for entry in entries:
        click.echo(f"{entry.name:<16} {entry.origin:<9} {entry.description}")


# --- booting -----------------------------------------------------------------------------------------


FIRMWARE_CHOICES = [f.value for f in Firmware]
MEDIA_CHOICES = ["cdrom", "usb", "stick"]  # qemu.MediaKind's values (qemu is imported when a boot needs it)


def boot_options(firmware: str, media: str, memory: int, cpus: int, cpu: str | None, accel: str,
                 disks: tuple[Path, ...], display: bool = False, writable: bool = False) -> BootOptions:  # fmt: skip
    from builder import qemu

    return qemu.BootOptions(firmware=Firmware(firmware), media=qemu.MediaKind(media), memory_mib=memory,
                            cpus=cpus, cpu=cpu, accel=accel, disks=disks, display=display,
                            writable=writable)  # fmt: skip


def test_command(target: str, opts: BootOptions, *, firmwares: tuple[str, ...], medias: tuple[str, ...],
                 matrix: bool, timeout: int, jobs: int | None, report_dir: Path | None, junit: Path | None,
                 as_json: bool, expect: tuple[re.Pattern[str], ...], commands: tuple[str, ...],
                 variables: dict[str, str]) -> None:  # fmt: skip
    """`xenlive test`: boot (each combination with --matrix), then judge, report and exit 1 on a failure."""
    from builder import boottest, console
    from builder.qemu import MediaKind, judge_ready

    iso = Path(target)
    if iso.suffix.lower() in (".yaml", ".yml") or (not iso.exists() and target.replace("-", "_").isidentifier()):
        if opts.writable:
            raise UsageError(
                "--writable keeps writes in the image: give an image file, not a profile",
                hint="burn the ISO to a file first: xenlive burn IMAGE.iso stick.img --persistence 512M",
            )
        iso = _build_for_test(target, variables)  # a profile file or a profile's name
    elif not iso.is_file():
        raise UsageError(f"{iso}: no such ISO file")
    elif variables:
        raise UsageError("--var sets a profile's vars: give a profile to build, not an ISO")
    fws = _expand(firmwares, FIRMWARE_CHOICES, [str(f) for f in boottest.MATRIX_FIRMWARE] if matrix else ["bios"])
    mds = _expand(medias, MEDIA_CHOICES, [str(m) for m in boottest.MATRIX_MEDIA] if matrix else ["cdrom"])
    combos = [(Firmware(f), MediaKind(m)) for f in fws for m in mds]
    _check_writable(opts, combos)
    report_root = report_dir or Path("xenlive-test") / iso.stem
    session = console.Session(expect=expect, commands=commands)
    runs = boottest.run_boots(iso, combos, opts, timeout, report_root, jobs or boottest.default_jobs(opts.cpus),
                              session)  # fmt: skip
    if junit:
        boottest.write_junit(runs, junit, iso)
    if as_json:
        report = [run.as_dict() for run in runs]
        _echo_json(report if matrix or len(runs) > 1 else report[0])
    for line in boottest.summary_table(runs).splitlines():
        log.info("%s", line)
    failed = [run for run in runs if not run.result.passed]
    for run in failed:
        r = run.result
        if (
            r.ready is not None and judge_ready(r.ready, r.expect_xen) is None
        ):  # the boot passed; --expect or --exec did not
            click.echo(f"\n{run.firmware}/{run.media}: after XENLIVE-READY: {r.reason}", err=True)
        else:
            click.echo(f"\n{run.firmware}/{run.media}: reached {r.stage}; expected next: {r.expected_next}", err=True)
        for done in r.commands:
            if done.exit != 0 and done.output:
                click.echo(f"--exec {done.command!r}: {done.reason}; its output:", err=True)
                for line in done.output:
                    click.echo(f"  | {line}", err=True)
        click.echo(f"last console lines (full log: {run.report_dir / 'console.log'}):", err=True)
        for line in r.tail:
            click.echo(f"  | {line}", err=True)
        for line in boottest.guest_failures(r):
            click.echo(line, err=True)
    if failed:
        names = ", ".join(f"{run.firmware}/{run.media}" for run in failed)
        raise BootTestFailed(f"{iso} did not pass the boot test ({names})")


def _check_writable(opts: BootOptions, combos: list[tuple[Firmware, Any]]) -> None:
    """--writable lets one machine write the image: a USB disk, one boot at a time, a file it may write."""
    from builder.qemu import MediaKind

    if not opts.writable:
        return
    if len(combos) != 1:
        raise UsageError("--writable boots one machine at a time: give one --firmware and --media usb")
    if combos[0][1] is not MediaKind.USB:
        raise UsageError(f"--writable needs --media usb (not {combos[0][1]}): a CD is read-only, and a stick "
                         "test hides El Torito in a throw-away snapshot")  # fmt: skip


def _expand(given: tuple[str, ...], every: list[str], default: list[str]) -> list[str]:
    """Repeated choices in the order given, "all" for every one; none given: the default."""
    if not given:
        return default
    return list(dict.fromkeys(v for g in given for v in (every if g == "all" else [g])))


def _build_for_test(target: str, variables: dict[str, str]) -> Path:
    """`xenlive test PROFILE`: build it first (the cache makes an unchanged rebuild quick)."""
    from builder.pipeline import build as run_build

    userns.ensure_root()
    model: Profile = load_profile(target, variables=variables)
    output = Path(f"{model.name}.iso")
    run_build(model, output, cache_root())
    return output


def boot_command(iso: Path, opts: BootOptions) -> None:
    from builder import qemu

    _check_writable(opts, [(opts.firmware, opts.media)])
    status = qemu.boot_interactive(iso, opts)
    if status not in (0, 1):  # QEMU exits 0 on quit, 1 on a guest-initiated power-off with -no-reboot
        raise XenliveError(f"QEMU exited with status {status}")


# --- images and media ----------------------------------------------------------------------------------


def verify_command(iso: Path, sha256: str | None, as_json: bool) -> None:
    """`xenlive verify`: the verdict (as JSON with --json); exit 1 when a problem was found."""
    from builder.verify import verify_iso

    verdict = verify_iso(iso, sha256=sha256)
    if as_json:
        _echo_json({"iso": str(iso), "ok": not verdict.problems, "problems": verdict.problems,
                    "warnings": verdict.warnings, "sha256_from": verdict.digest_source})  # fmt: skip
    else:
        for line in [*(f"warning: {w}" for w in verdict.warnings), *verdict.problems]:
            click.echo(line, err=True)
    if verdict.problems:
        raise VerifyFailed(f"{iso}: {len(verdict.problems)} problem(s) found")
    if not as_json:
        click.echo(f"{iso}: OK" + (f" (sha256 matches {verdict.digest_source})" if verdict.digest_source else ""))


BURN_PHASES = {"write": "writing {target}", "verify": "reading {target} back"}


def burn_command(iso: Path, target: str, *, yes: bool, no_verify: bool, force: bool, as_json: bool,
                 persistence: str | None = None) -> None:  # fmt: skip
    """`xenlive burn`: confirm, write and read back, with a step (and on a terminal, a progress bar)
    for the write and for the read-back."""
    from builder import media

    def confirm(description: str) -> bool:
        click.echo(description, err=True)
        if yes:
            return True
        if not sys.stdin.isatty():
            raise UsageError(
                f"will not overwrite {target} without confirmation: stdin is not a terminal",
                hint="pass --yes to confirm non-interactively",
            )
        answer: str = click.prompt("Type 'yes' to write", default="", show_default=False, err=True)
        return answer.strip().lower() == "yes"

    with _phases(target) as progress:
        result = media.burn(iso, target, confirm=confirm, force=force, verify=not no_verify, progress=progress,
                            persist=persistence)  # fmt: skip
    if as_json:
        _echo_json(result.as_dict())
    else:
        check = "verified" if result.verified else "NOT verified (--no-verify)"
        click.echo(f"done: wrote {iso} to {result.target} ({result.size} bytes, {check}, sha256 {result.sha256})")


@contextlib.contextmanager
def _phases(target: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress callback for burn that makes each phase a step of its own, begun only when the
    phase reports first (after the confirmation prompt, which a status line must not cover)."""
    with contextlib.ExitStack() as steps:
        current: dict[str, Meter] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in current:
                steps.close()
                current.clear()
                title = BURN_PHASES.get(phase, phase).format(target=target)
                steps.enter_context(step(title))
                current[phase] = Meter(title, total, "bytes")
            current[phase](done, total)

        yield report


def devices_command(as_json: bool) -> None:
    """`xenlive devices`: what burn would accept; the rest, with the reason, at -v."""
    from builder.devices import Host, acceptable_devices
    from builder.log import VERBOSE
    from builder.terminal import human_size

    accepted = []
    for device, problems in acceptable_devices(Host()):
        if problems:
            log.log(VERBOSE, "skipping %s (%s): %s", device.path, device.model or "unknown model", "; ".join(problems))
        else:
            accepted.append(device)
    if as_json:
        _echo_json([d.as_dict() for d in accepted])
        return
    if not accepted:
        log.info("no removable disk or optical drive is ready to be written")
    for d in accepted:
        kind = "optical" if d.optical else d.transport or "disk"
        click.echo(f"{d.path}\t{human_size(d.size)}\t{kind}\t{d.model or '(unknown model)'}")


# --- the cache -----------------------------------------------------------------------------------------


def hardware_import_command(source: Path, name: str | None, *, force: bool, as_json: bool) -> None:
    from builder.hwimport import import_reports

    done = import_reports(source, name, force=force)
    if as_json:
        _echo_json([{"name": d.name, "file": str(d.path), "from": str(d.source), "state": d.state} for d in done])
        return
    for d in done:
        click.echo(f"{d.state:<9} {d.name:<40} {d.path}  (from {d.source})")
    log.info("check an image against them with: xenlive check PROFILE --target NAME")


def hardware_list_command(as_json: bool) -> None:
    from builder.hardware import load_target_file, target_files

    rows = []
    for name, path in target_files().items():
        try:
            description = load_target_file(path).description
        except XenliveError as e:
            description = f"(invalid: {e.message.splitlines()[0]})"
        rows.append({"name": name, "description": description, "file": str(path)})
    if as_json:
        _echo_json(rows)
        return
    width = max((len(r["name"]) for r in rows), default=4)
    for r in rows:
        click.echo(f"{r['name']:<{width}}  {r['description']}  [{r['file']}]")


def cache_ls_command(as_json: bool) -> None:
    from builder import cache

    found = cache.entries(cache_root())
    if as_json:
        rows = [{"kind": e.kind, "key": e.key, "size": e.size, "last_used": int(e.last_used),
                 "complete": e.complete, "path": str(e.path)} for e in found]  # fmt: skip
        _echo_json(rows)
        return
    for e in found:
        state = "" if e.complete else "  (incomplete)"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        click.echo(f"{e.kind:<8} {e.key:<26} {e.size / 2**20:8.0f} MiB  {used}{state}")
    log.info("%d entries, %.0f MiB in %s", len(found), sum(e.size for e in found) / 2**20, cache_root())


def cache_prune_command(days: float) -> None:
    from builder import cache

    userns.ensure_root()  # entries hold files owned by the namespace's ids

    _remove_entries([e for e in cache.entries(cache_root())
                     if not e.complete or time.time() - e.last_used > days * 86400])  # fmt: skip


def cache_clear_command() -> None:
    from builder import cache

    userns.ensure_root()  # entries hold files owned by the namespace's ids

    _remove_entries(cache.entries(cache_root()))


def _remove_entries(found: list[Any]) -> None:
    from builder import cache

    freed = 0
    for e in found:
        if cache.remove(cache_root(), e):
            freed += e.size
        else:
            log.warning("%s/%s: in use by a running build, kept", e.kind, e.key)
    click.echo(f"freed {freed / 2**20:.0f} MiB")
