"""The xenlive command line: parse arguments, call one function, map errors to exit codes.

Each command below calls exactly one function (in builder/commands.py, or the check command's own
module); what the options mean is declared here, once, and shell completion reads the same
declarations (`_XENLIVE_COMPLETE=bash_source xenlive`, see README.md).
"""

from __future__ import annotations

import errno
import functools
import os
import re
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from builder import __version__, commands
from builder.errors import XenliveError
from builder.log import setup_logging
from builder.terminal import detect

F = TypeVar("F", bound=Callable[..., Any])


# --- how much is said: -q, -v and --debug, accepted before or after the command's name ----------------


def _set_output(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    if value:
        if param.name == "debug":
            ctx.meta["xenlive.debug"] = True
        else:
            ctx.meta["xenlive.verbosity"] = -1 if param.name == "quiet" else 1
        setup_logging(verbosity=ctx.meta.get("xenlive.verbosity", 0), debug=ctx.meta.get("xenlive.debug", False))
    return value


def _output_options(f: F) -> F:
    options = [
        click.option("-q", "--quiet", is_flag=True, expose_value=False, callback=_set_output,
                     help="Only warnings and errors on stderr (results still go to stdout)."),
        click.option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_output,
                     help="Also the details of each step."),
        click.option("--debug", is_flag=True, expose_value=False, callback=_set_output, envvar="XENLIVE_DEBUG",
                     help="Log every command; show tracebacks."),
    ]  # fmt: skip
    for option in reversed(options):
        f = option(f)
    return f


# --- completion of profile and target names --------------------------------------------------------


def _complete_profile(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Built-in and ./profiles names, then files (the shell completes paths to profiles and ISOs)."""
    from click.shell_completion import CompletionItem

    from builder.profile import builtin_profiles_dir
    from builder.profile.loader import LOCAL_PROFILES

    names = {p.stem for d in (LOCAL_PROFILES, builtin_profiles_dir()) if d.is_dir() for p in d.glob("*.yaml")}
    found = [CompletionItem(n, help="profile") for n in sorted(names) if n.startswith(incomplete)]
    return [*found, CompletionItem(incomplete, type="file")]


def _complete_target(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    from click.shell_completion import CompletionItem

    from builder.hardware import target_files

    names = [CompletionItem(n) for n in ["all", *target_files()] if n.startswith(incomplete)]
    return [*names, CompletionItem(incomplete, type="file")]  # or a hardware file, a machine report


def _variables(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    from builder.yamlconv import VAR_NAME

    found: dict[str, str] = {}
    for value in values:
        key, eq, text = value.partition("=")
        if not eq or not VAR_NAME.fullmatch(key):
            raise click.BadParameter(f"expected KEY=VALUE with KEY like site_name, got {value!r}")
        found[key] = text
    return found


def _patterns(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[re.Pattern[str], ...]:
    compiled = []
    for value in values:
        try:
            compiled.append(re.compile(value))
        except re.error as e:
            raise click.BadParameter(f"{value!r} is not a regular expression: {e}") from e
    return tuple(compiled)


VAR_OPTION = click.option("--var", "variables", multiple=True, metavar="KEY=VALUE", callback=_variables,
                          help="Set the profile's vars.KEY to the text VALUE (repeatable).")  # fmt: skip
PROFILE_ARGUMENT = click.argument("profile", required=False, shell_complete=_complete_profile)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="xenlive")
@_output_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Build bootable Xen live ISOs from declarative YAML profiles."""
    setup_logging(verbosity=ctx.meta.get("xenlive.verbosity", 0), debug=ctx.meta.get("xenlive.debug", False))


@cli.command()
@PROFILE_ARGUMENT
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="ISO to write.")
@click.option(
    "--ignore-check",
    "ignore_checks",
    multiple=True,
    metavar="ID",
    help="Build even if check ID fails, where skipping it makes sense (repeatable).",
)
@VAR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary (ISO, sha256, stage times, cache hits).")
@_output_options
def build(profile: str | None, output: Path | None, ignore_checks: tuple[str, ...], variables: dict[str, str],
          as_json: bool) -> None:  # fmt: skip
    """Build PROFILE (a file or a name; default: the built-in default) into a bootable ISO."""
    commands.build_command(profile, output, ignore_checks, variables, as_json)


@cli.command()
@PROFILE_ARGUMENT
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="NAME|FILE",
    shell_complete=_complete_target,
    help="A machine from the hardware database, or a hardware file such as a machine report (repeatable;"
    " 'all' for every known one).",
)
@click.option("--host", is_flag=True, help="Check against this machine (from /proc and /sys).")
@click.option("--json", "as_json", is_flag=True, help="Print the report (or with --list, the list) as JSON.")
@click.option("--list", "list_all", is_flag=True, help="List the checks and the known targets, then exit.")
@_output_options
def check(profile: str | None, targets: tuple[str, ...], host: bool, as_json: bool, list_all: bool) -> None:
    """Check whether PROFILE's image will run on the given machines (exit 3 on an error)."""
    from builder.checks.command import run_check_command

    run_check_command(profile, targets, host=host, as_json=as_json, list_all=list_all)


@cli.command()
@click.argument("profile", shell_complete=_complete_profile)
@VAR_OPTION
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of YAML.")
@_output_options
def show(profile: str, variables: dict[str, str], as_json: bool) -> None:
    """Print the resolved PROFILE (extends merged, defaults filled in) as YAML."""
    commands.show_command(profile, variables, as_json)


@cli.command()
@_output_options
def schema() -> None:
    """Print the JSON Schema of profiles (for editors; shipped as builder/data/xenlive-profile.schema.json)."""
    commands.schema_command()


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", help="Profile name (default: the directory's name).")
@_output_options
def init(directory: Path, name: str | None) -> None:
    """Scaffold a new profile in DIRECTORY: profile.yaml and an overlay/ tree."""
    commands.init_command(directory, name)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@_output_options
def profiles(as_json: bool) -> None:
    """List the profiles in ./profiles and the built-in ones, each name once, with their descriptions."""
    commands.profiles_command(as_json)


FIRMWARE_CHOICES = commands.FIRMWARE_CHOICES
MEDIA_CHOICES = commands.MEDIA_CHOICES


def _boot_options(f: F) -> F:
    """Options shared by `test` and `boot` (each has its own --firmware and --media), handed to the
    command as one `machine` (qemu.BootOptions); test's several firmwares and media stay its own."""
    options = [
        click.option("--memory", type=click.IntRange(min=256), default=2048, show_default=True, help="MiB."),
        click.option("--cpus", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--cpu", help="QEMU CPU model (default: host under KVM, qemu64,+svm under TCG)."),
        click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default="auto", show_default=True),
        click.option("--disk", "disks", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="Extra raw disk (repeatable; writes are discarded)."),
        click.option("--writable", is_flag=True,
                     help="With --media usb: keep the machine's writes in the image (a stick burned with "
                          "--persistence remembers them); without it they are thrown away."),
    ]  # fmt: skip

    @functools.wraps(f)
    def collect(*args: Any, memory: int, cpus: int, cpu: str | None, accel: str, disks: tuple[Path, ...],
                writable: bool, **kwargs: Any) -> Any:  # fmt: skip
        firmware, media = kwargs.pop("firmware", "bios"), kwargs.pop("media", "cdrom")
        display = kwargs.pop("display", False)
        machine = commands.boot_options(firmware, media, memory, cpus, cpu, accel, disks, display, writable)
        return f(*args, machine=machine, **kwargs)

    for option in reversed(options):
        collect = option(collect)
    return collect  # type: ignore[return-value]


MEDIA_HELP = ("cdrom; usb (the ISO as a USB disk); stick (a USB disk with El Torito hidden, so the firmware boots it"
              " through the MBR or GPT only, as real machines boot a stick)")  # fmt: skip


@cli.command()
@click.argument("target", shell_complete=_complete_profile)
@click.option(
    "--firmware",
    "firmwares",
    multiple=True,
    type=click.Choice([*FIRMWARE_CHOICES, "all"]),
    help="bios, uefi or uefi-ia32 (32-bit OVMF, 64-bit CPU); repeatable, or all. Default: bios.",
)
@click.option(
    "--media",
    "medias",
    multiple=True,
    type=click.Choice([*MEDIA_CHOICES, "all"]),
    help=MEDIA_HELP + "; repeatable, or all. Default: cdrom.",
)
@_boot_options
@click.option(
    "--matrix",
    is_flag=True,
    help="Boot every --firmware x --media combination (default bios, uefi x cdrom, usb) and summarise.",
)
@click.option(
    "--timeout",
    type=click.IntRange(min=1),
    default=900,
    show_default=True,
    help="Seconds per boot, the --expect lines and --exec commands included.",
)
@click.option("--jobs", type=click.IntRange(min=1), help="Boots at once with --matrix (default: cores / cpus).")
@click.option(
    "--report-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Console logs, screenshots, result.json (default: ./xenlive-test/NAME).",
)
@click.option("--junit", type=click.Path(dir_okay=False, path_type=Path), help="Write a JUnit XML report.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option(
    "--expect",
    multiple=True,
    metavar="REGEX",
    callback=_patterns,
    help="Also wait for a console line that REGEX matches as a whole (repeatable).",
)
@click.option(
    "--exec",
    "commands_",
    multiple=True,
    metavar="CMD",
    help="After XENLIVE-READY, run CMD with /bin/sh in dom0 as root over the serial console; "
    "its output goes in the report and a non-zero exit fails the test (repeatable, in order).",
)
@VAR_OPTION
@_output_options
def test(target: str, firmwares: tuple[str, ...], medias: tuple[str, ...], machine: Any, matrix: bool, timeout: int,
         jobs: int | None, report_dir: Path | None, junit: Path | None, as_json: bool,
         expect: tuple[re.Pattern[str], ...], commands_: tuple[str, ...],
         variables: dict[str, str]) -> None:  # fmt: skip
    """Boot TARGET (an ISO, or a profile to build first) headless until every autostart guest runs.

    Where the firmware cannot start Xen (uefi-ia32), it passes when "Linux without Xen" is up.
    Several --firmware or --media values boot every combination of them, as --matrix does.
    """
    commands.test_command(target, machine, firmwares=firmwares, medias=medias, matrix=matrix, timeout=timeout,
                          jobs=jobs, report_dir=report_dir, junit=junit, as_json=as_json, expect=expect,
                          commands=commands_, variables=variables)  # fmt: skip


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.option("--firmware", type=click.Choice(FIRMWARE_CHOICES), default="bios", show_default=True)
@click.option("--media", type=click.Choice(MEDIA_CHOICES), default="cdrom", show_default=True, help=MEDIA_HELP)
@_boot_options
@click.option("--display", is_flag=True, help="Show the screen in a window as well.")
@_output_options
def boot(iso: Path, machine: Any) -> None:
    """Boot ISO interactively: its serial console (menus included) on this terminal; Ctrl-A X quits."""
    commands.boot_command(iso, machine)


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.option("--sha256", metavar="HEX", help="ISO's sha256 from a source you trust; default: SHA256SUMS beside it.")
@click.option("--json", "as_json", is_flag=True, help="Print the verdict as JSON.")
@_output_options
def verify(iso: Path, sha256: str | None, as_json: bool) -> None:
    """Read ISO back and check its boot records, layout and every file against what xenlive writes."""
    commands.verify_command(iso, sha256, as_json)


@cli.command()
@click.argument("iso", type=click.Path(path_type=Path))
@click.argument("target")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation (needed when stdin is not a terminal).")
@click.option("--no-verify", is_flag=True, help="Skip reading the medium back and comparing sha256.")
@click.option("--force", is_flag=True, help="Allow a disk that is not removable (never the system disk).")
@click.option(
    "--persistence",
    metavar="SIZE|rest",
    help="Add a persistence partition after the image (ext4, label persistence): SIZE such as 4G, "
    "or rest for the rest of the stick. dom0 keeps the profile's persist paths and guests there.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@_output_options
def burn(iso: Path, target: str, yes: bool, no_verify: bool, force: bool, persistence: str | None,
         as_json: bool) -> None:  # fmt: skip
    """Write ISO to TARGET: a USB stick or SD card (/dev/sdX), a CD/DVD drive (/dev/srN),
    an image file, or stdio:FILE (an image file written through the CD/DVD path)."""
    commands.burn_command(iso, target, yes=yes, no_verify=no_verify, force=force, persistence=persistence,
                          as_json=as_json)  # fmt: skip


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print the devices as JSON.")
@_output_options
def devices(as_json: bool) -> None:
    """List the removable disks and optical drives that burn would write to."""
    commands.devices_command(as_json)


@cli.group("hardware")
def hardware_group() -> None:
    """The hardware database: the machines images are checked against, and the user's own."""


@hardware_group.command("import")
@click.argument("source", type=click.Path(path_type=Path))
@click.option("--name", metavar="NAME", help="Import under this target name (default: from the DMI maker and model).")
@click.option("--force", is_flag=True, help="Replace a machine of the same name that says something else.")
@click.option("--json", "as_json", is_flag=True, help="Print what was imported as JSON.")
@_output_options
def hardware_import(source: Path, name: str | None, force: bool, as_json: bool) -> None:
    """Add machine reports (a FILE, or a directory such as a stick's xenlive-reports/ or a test
    report) to your hardware directory, after validating every one."""
    commands.hardware_import_command(source, name, force=force, as_json=as_json)


@hardware_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the machines as JSON.")
@_output_options
def hardware_list(as_json: bool) -> None:
    """List every known machine and the file that describes it (yours override the built-in ones)."""
    commands.hardware_list_command(as_json)


@cli.group("cache")
def cache_group() -> None:
    """Inspect and clean the build cache (under $XDG_CACHE_HOME/xenlive)."""


@cache_group.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print the entries as JSON.")
@_output_options
def cache_ls(as_json: bool) -> None:
    """List cache entries with their size and last use."""
    commands.cache_ls_command(as_json)


@cache_group.command("prune")
@click.option(
    "--older-than",
    "days",
    type=click.FloatRange(min=0),
    default=30,
    show_default=True,
    help="Remove entries not used for this many days (and leftovers of interrupted builds).",
)
@_output_options
def cache_prune(days: float) -> None:
    """Remove entries not used recently."""
    commands.cache_prune_command(days)


@cache_group.command("clear")
@_output_options
def cache_clear() -> None:
    """Remove every cache entry not in use by a running build."""
    commands.cache_clear_command()


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
        _say("error:", e.message, "red", "bold")
        if e.hint:
            _say("hint:", e.hint, "bold")
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
        _say("error:", f"{e.strerror}{where}", "red", "bold")
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            _say("hint:", "free some space (`xenlive cache prune` removes old cache entries)", "bold")
        sys.exit(1)
    except Exception:
        _bug()


def _say(label: str, text: str, *style: str) -> None:
    """`label text` on stderr, the label in colour where the terminal takes it (not NO_COLOR, TERM=dumb)."""
    click.echo(f"{detect(sys.stderr).style(label, *style)} {text}", err=True, color=True)


def _bug() -> None:
    traceback.print_exc()
    click.echo("error: this is a bug in xenlive; please report it with the traceback above", err=True)
    sys.exit(1)
