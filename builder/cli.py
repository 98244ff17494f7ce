"""The xenlive command line: parse arguments, call one function, map errors to exit codes."""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
from pathlib import Path
from typing import Any

import click
import yaml

from builder import __version__
from builder.context import cache_root
from builder.errors import BootTestFailed, VerifyFailed, XenliveError
from builder.log import setup_logging
from builder.profile import load_profile, to_data

log = logging.getLogger(__name__)


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
def build(profile: str | None, output: Path | None) -> None:
    """Build PROFILE (default: profiles/default.yaml) into a bootable ISO."""
    from builder.pipeline import build as run_build

    model = load_profile(profile)
    output = output or Path(f"{model.name}.iso")
    if output.is_dir():
        raise click.BadParameter(f"{output} is a directory", param_hint="-o/--output")
    ctx = run_build(model, output, cache_root())
    for stage, seconds in ctx.timings.items():
        log.info("%-22s %7.1f s", stage, seconds)
    click.echo(f"{output} ({output.stat().st_size / 2**20:.0f} MiB)")


@cli.command()
@click.argument("profile")
def show(profile: str) -> None:
    """Print the resolved PROFILE (defaults filled in) as YAML."""
    click.echo(yaml.safe_dump(to_data(load_profile(profile)), sort_keys=False), nl=False)


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.option("--firmware", type=click.Choice(["bios", "uefi"]), default="bios", show_default=True)
@click.option("--media", type=click.Choice(["cdrom", "usb"]), default="cdrom", show_default=True)
@click.option("--timeout", type=click.IntRange(min=1), default=900, show_default=True, help="Seconds.")
@click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True)
@click.option("--log", "console_log", type=click.Path(dir_okay=False, path_type=Path), help="Save the console.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def test(iso: Path, firmware: str, media: str, timeout: int, accel: str, console_log: Path | None,
         as_json: bool) -> None:  # fmt: skip
    """Boot ISO headless in QEMU and wait until every autostart guest runs."""
    from builder import qemu

    opts = qemu.BootOptions(firmware=qemu.FirmwareKind(firmware), media=qemu.MediaKind(media), accel=accel)
    result = qemu.boot_and_wait(iso, opts, timeout, console_log)
    if as_json:
        click.echo(json.dumps({"iso": str(iso), "firmware": firmware, "media": media, **result.as_dict()}, indent=2))
    verdict = "PASS" if result.passed else "FAIL"
    click.echo(f"{verdict} {firmware}/{media} ({result.accel}, {result.seconds:.0f} s): {result.reason}", err=True)
    if not result.passed:
        click.echo(f"stage reached: {result.stage}; last console lines:", err=True)
        for line in result.tail:
            click.echo(f"  | {line}", err=True)
        raise BootTestFailed(f"{iso} did not pass the boot test ({firmware}/{media})")


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
def verify(iso: Path) -> None:
    """Read ISO back and check its boot records, layout and every file against its manifest."""
    from builder.verify import verify_iso

    problems = verify_iso(iso)
    for problem in problems:
        click.echo(problem, err=True)
    if problems:
        raise VerifyFailed(f"{iso}: {len(problems)} problem(s) found")
    click.echo(f"{iso}: OK")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI and turn errors into messages and exit codes."""
    debug = os.environ.get("XENLIVE_DEBUG") == "1" or "--debug" in (argv if argv is not None else sys.argv)
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
    except Exception:
        traceback.print_exc()
        click.echo("error: this is a bug in xenlive; please report it with the traceback above", err=True)
        sys.exit(1)
