"""The xenlive command line: parse arguments, call one function, map errors to exit codes."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import yaml

from builder import __version__
from builder.context import cache_root
from builder.errors import BootTestFailed, UsageError, VerifyFailed, XenliveError
from builder.log import setup_logging
from builder.profile import Firmware, load_profile, to_data

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xenlive")
@click.option("--debug", is_flag=True, envvar="XENLIVE_DEBUG", help="Log commands; show tracebacks.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Build bootable Xen live ISOs from declarative YAML profiles."""
    ctx.obj = {"debug": debug}
    setup_logging(debug=debug)


@cli.command()
@click.argument("profile", required=False)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="ISO to write.")
@click.option("--ignore-check", "ignore_checks", multiple=True, metavar="ID",
              help="Build even if check ID fails, where skipping it makes sense (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (ISO, sha256, stage times, cache hits).")
def build(profile: str | None, output: Path | None, ignore_checks: tuple[str, ...], as_json: bool) -> None:
    """Build PROFILE (default: profiles/default.yaml) into a bootable ISO."""
    from builder.pipeline import build as run_build

    model = load_profile(profile, ignore_checks)
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
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    for stage, seconds in ctx.timings.items():
        click.echo(f"{stage:<30} {seconds:7.1f} s", err=True)
    cached = ", ".join(f"{name} {'hit' if hit else 'miss'}" for name, hit in ctx.cache_hits.items())
    click.echo(f"{'cache':<30} {cached}", err=True)
    click.echo(f"{output} ({output.stat().st_size / 2**20:.0f} MiB, sha256 {ctx.output_sha256})")


@cli.command()
@click.argument("profile", required=False)
@click.option("--target", "targets", multiple=True, metavar="NAME",
              help="A machine from the hardware database (repeatable; 'all' for every one).")
@click.option("--host", is_flag=True, help="Check against this machine (from /proc and /sys).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--list", "list_all", is_flag=True, help="List the checks and the known targets, then exit.")
def check(profile: str | None, targets: tuple[str, ...], host: bool, as_json: bool, list_all: bool) -> None:
    """Check whether PROFILE's image will run on the given machines (exit 3 on an error)."""
    from builder.checks.command import run_check_command

    run_check_command(profile, targets, host=host, as_json=as_json, list_all=list_all)


@cli.command()
@click.argument("profile")
def show(profile: str) -> None:
    """Print the resolved PROFILE (extends merged, defaults filled in) as YAML."""
    text = yaml.safe_dump(to_data(load_profile(profile)), sort_keys=False, allow_unicode=True, width=1000)
    click.echo(text, nl=False)


@cli.command()
def schema() -> None:
    """Print the JSON Schema of profiles (also shipped as schema/xenlive-profile.schema.json)."""
    from builder.schema import schema_text

    click.echo(schema_text(), nl=False)


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Profile name (default: the directory's name).")
def init(directory: Path, name: str | None) -> None:
    """Scaffold a new profile in DIRECTORY: profile.yaml and an overlay/ tree."""
    from builder.scaffold import scaffold

    for created in scaffold(directory, name):
        click.echo(created)


@cli.command()
def profiles() -> None:
    """List the profiles in ./profiles and the built-in ones, with their descriptions."""
    from builder.scaffold import list_profiles

    for entry in list_profiles(Path("profiles")):
        click.echo(f"{entry.name:<16} {entry.origin:<9} {entry.description}")


def _boot_options(f: F) -> F:
    """Options shared by `test` and `boot`."""
    options = [
        click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True),
        click.option("--media", type=click.Choice(["cdrom", "usb"]), default="cdrom", show_default=True),
        click.option("--memory", type=click.IntRange(min=256), default=2048, show_default=True, help="MiB."),
        click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--cpu", help="QEMU CPU model (default: host under KVM, qemu64,+svm under TCG)."),
        click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True),
        click.option("--disk", "disks", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Extra raw disk (repeatable; writes are discarded)."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


def _options(firmware: str, media: str, memory: int, cpus: int, cpu: str | None, accel: str,
             disks: tuple[Path, ...], display: bool = False) -> Any:  # fmt: skip
    from builder import qemu

    return qemu.BootOptions(firmware=Firmware(firmware), media=qemu.MediaKind(media), memory_mib=memory,
                            cpus=cpus, cpu=cpu, accel=accel, disks=disks, display=display)  # fmt: skip


@cli.command()
@click.argument("target")
@_boot_options
@click.option("--matrix", is_flag=True, help="Boot bios/uefi x cdrom/usb and summarise.")
@click.option("--timeout", type=click.IntRange(min=1), default=900, show_default=True, help="Seconds per boot.")
@click.option("--jobs", type=click.IntRange(min=1), help="Boots at once with --matrix (default: cores / cpus).")
@click.option("--report-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Console logs, screenshots, result.json (default: ./xenlive-test/NAME).")
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write a JUnit XML report.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def test(target: str, firmware: str, media: str, memory: int, cpus: int, cpu: str | None, accel: str,
         disks: tuple[Path, ...], matrix: bool, timeout: int, jobs: int | None, report_dir: Path | None,
         junit: Path | None, as_json: bool) -> None:  # fmt: skip
    """Boot TARGET (an ISO, or a profile to build first) headless until every autostart guest runs."""
    from builder import boottest, qemu

    iso = Path(target)
    if iso.suffix.lower() in (".yaml", ".yml") or (not iso.exists() and target.replace("-", "_").isidentifier()):
        iso = _build_for_test(target)  # a profile file or a built-in profile's name
    elif not iso.is_file():
        raise UsageError(f"{iso}: no such ISO file")
    opts = _options(firmware, media, memory, cpus, cpu, accel, disks)
    combos = boottest.MATRIX if matrix else [(Firmware(firmware), qemu.MediaKind(media))]
    report_root = report_dir or Path("xenlive-test") / iso.stem
    runs = boottest.run_boots(iso, combos, opts, timeout, report_root, jobs or boottest.default_jobs(cpus))
    if junit:
        boottest.write_junit(runs, junit, iso)
    if as_json:
        report = [run.as_dict() for run in runs]
        click.echo(json.dumps(report if matrix else report[0], indent=2))
    click.echo(boottest.summary_table(runs), err=True)
    failed = [run for run in runs if not run.result.passed]
    for run in failed:
        r = run.result
        click.echo(f"\n{run.firmware}/{run.media}: reached {r.stage}; expected next: {r.expected_next}", err=True)
        click.echo(f"last console lines (full log: {run.report_dir / 'console.log'}):", err=True)
        for line in r.tail:
            click.echo(f"  | {line}", err=True)
        for line in boottest.guest_failures(r):
            click.echo(line, err=True)
    if failed:
        names = ", ".join(f"{run.firmware}/{run.media}" for run in failed)
        raise BootTestFailed(f"{iso} did not pass the boot test ({names})")


def _build_for_test(target: str) -> Path:
    """`xenlive test PROFILE`: build it first (the cache makes an unchanged rebuild quick)."""
    from builder.pipeline import build as run_build

    model = load_profile(target)
    output = Path(f"{model.name}.iso")
    run_build(model, output, cache_root())
    return output


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@_boot_options
@click.option("--display", is_flag=True, help="Show the screen in a window as well.")
def boot(iso: Path, firmware: str, media: str, memory: int, cpus: int, cpu: str | None, accel: str,
         disks: tuple[Path, ...], display: bool) -> None:  # fmt: skip
    """Boot ISO interactively: its serial console (menus included) on this terminal; Ctrl-A X quits."""
    from builder import qemu

    status = qemu.boot_interactive(iso, _options(firmware, media, memory, cpus, cpu, accel, disks, display))
    if status not in (0, 1):  # QEMU exits 0 on quit, 1 on a guest-initiated power-off with -no-reboot
        raise XenliveError(f"QEMU exited with status {status}")


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.option("--sha256", metavar="HEX", help="ISO's sha256 from a source you trust; default: SHA256SUMS beside it.")
def verify(iso: Path, sha256: str | None) -> None:
    """Read ISO back and check its boot records, layout and every file against what xenlive writes."""
    from builder.verify import verify_iso

    verdict = verify_iso(iso, sha256=sha256)
    for line in [*(f"warning: {w}" for w in verdict.warnings), *verdict.problems]:
        click.echo(line, err=True)
    if verdict.problems:
        raise VerifyFailed(f"{iso}: {len(verdict.problems)} problem(s) found")
    click.echo(f"{iso}: OK" + (f" (sha256 matches {verdict.digest_source})" if verdict.digest_source else ""))


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.argument("target")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.option("--no-verify", is_flag=True, help="Skip reading the medium back and comparing sha256.")
@click.option("--force", is_flag=True, help="Allow a disk that is not removable (never the system disk).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def burn(iso: Path, target: str, yes: bool, no_verify: bool, force: bool, as_json: bool) -> None:
    """Write ISO to TARGET: a USB stick or SD card (/dev/sdX), a CD/DVD drive (/dev/srN),
    an image file, or stdio:FILE (an image file written through the CD/DVD path)."""
    from builder import media
    from builder.errors import UsageError

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

    bar = media.TerminalProgress(sys.stderr, target) if sys.stderr.isatty() else None
    try:
        result = media.burn(iso, target, confirm=confirm, force=force, verify=not no_verify, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if as_json:
        click.echo(json.dumps(result.as_dict(), indent=2))
    else:
        check = "verified" if result.verified else "NOT verified (--no-verify)"
        click.echo(f"done: wrote {iso} to {result.target} ({result.size} bytes, {check}, sha256 {result.sha256})")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
def devices(as_json: bool) -> None:
    """List the removable disks and optical drives that burn would write to."""
    from builder.devices import Host, acceptable_devices, human_size

    accepted = []
    for device, problems in acceptable_devices(Host()):
        if problems:
            log.info("skipping %s (%s): %s", device.path, device.model or "unknown model", "; ".join(problems))
        else:
            accepted.append(device)
    if as_json:
        click.echo(json.dumps([d.as_dict() for d in accepted], indent=2))
        return
    if not accepted:
        log.info("no removable disk or optical drive is ready to be written")
    for d in accepted:
        kind = "optical" if d.optical else d.transport or "disk"
        click.echo(f"{d.path}\t{human_size(d.size)}\t{kind}\t{d.model or '(unknown model)'}")

@cli.group("cache")
def cache_group() -> None:
    """Inspect and clean the build cache (under $XDG_CACHE_HOME/xenlive)."""


@cache_group.command("ls")
@click.option("--json", "as_json", is_flag=True)
def cache_ls(as_json: bool) -> None:
    """List cache entries with their size and last use."""
    from builder import cache

    found = cache.entries(cache_root())
    if as_json:
        rows = [{"kind": e.kind, "key": e.key, "size": e.size, "last_used": int(e.last_used),
                 "complete": e.complete, "path": str(e.path)} for e in found]  # fmt: skip
        click.echo(json.dumps(rows, indent=2))
        return
    for e in found:
        state = "" if e.complete else "  (incomplete)"
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(e.last_used))
        click.echo(f"{e.kind:<8} {e.key:<26} {e.size / 2**20:8.0f} MiB  {used}{state}")
    click.echo(f"{len(found)} entries, {sum(e.size for e in found) / 2**20:.0f} MiB in {cache_root()}", err=True)


@cache_group.command("prune")
@click.option("--older-than", "days", type=click.FloatRange(min=0), default=30, show_default=True,
              help="Remove entries not used for this many days (and leftovers of interrupted builds).")
def cache_prune(days: float) -> None:
    """Remove entries not used recently."""
    from builder import cache

    _remove_entries([e for e in cache.entries(cache_root())
                     if not e.complete or time.time() - e.last_used > days * 86400])  # fmt: skip


@cache_group.command("clear")
def cache_clear() -> None:
    """Remove every cache entry not in use by a running build."""
    from builder import cache

    _remove_entries(cache.entries(cache_root()))


def _remove_entries(found: list[Any]) -> None:
    from builder import cache

    freed = 0
    for e in found:
        if cache.remove(cache_root(), e):
            freed += e.size
        else:
            click.echo(f"{e.kind}/{e.key}: in use by a running build, kept", err=True)
    click.echo(f"freed {freed / 2**20:.0f} MiB")


# Failures of the machine, not of xenlive: a full disk, a read-only or vanished file system.
USER_OS_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT}


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI and turn errors into messages and exit codes."""
    debug = os.environ.get("XENLIVE_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv)
    # SIGTERM and SIGHUP unwind like Ctrl-C, so cleanup (QEMU, temporary files) runs in `finally`.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    try:
        return cli.main(args=argv, prog_name="xenlive", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except XenliveError as e:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {e.message}", err=True)
        if e.hint:
            click.echo(f"hint: {e.hint}", err=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except OSError as e:
        if e.errno not in USER_OS_ERRORS:
            _bug()
        if debug:
            traceback.print_exc()
        where = f": {e.filename}" if e.filename else ""
        click.echo(f"error: {e.strerror}{where}", err=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            click.echo("hint: free some space (`xenlive cache prune` removes old cache entries)", err=True)
        sys.exit(1)
    except Exception:
        _bug()


def _bug() -> None:
    traceback.print_exc()
    click.echo("error: this is a bug in xenlive; please report it with the traceback above", err=True)
    sys.exit(1)
