"""`xenlive check`: run every check of a profile against machines, without building.

Built-file checks use the dom0 tree a previous build left in the cache when there is one;
otherwise they answer "unknown" and say that a build would tell.
"""

from __future__ import annotations

import json

import click

from builder.checks import all_checks, run_checks
from builder.checks.facts import cached_dom0, gather
from builder.checks.gate import build_targets, skipped
from builder.checks.host import host_target
from builder.checks.report import as_json as report_json
from builder.checks.report import render_table
from builder.context import cache_root
from builder.errors import CheckFailed
from builder.hardware import Target, load_targets, target_files
from builder.profile import load_profile


def run_check_command(profile_spec: str | None, names: tuple[str, ...], *, host: bool, as_json: bool,
                      list_all: bool) -> None:  # fmt: skip
    if list_all:
        list_checks(as_json)
        return
    profile = load_profile(profile_spec)
    targets: list[Target] = load_targets(names) if names else []
    if host:
        targets.append(host_target())
    if not targets:
        targets = build_targets(profile)
    with cached_dom0(profile, cache_root()) as found:  # facts read files lazily: check while it is there
        facts = gather(profile, found, cache_dir=cache_root())
        report = run_checks(profile, targets, facts, skip=skipped(profile, ()))
    if as_json:
        click.echo(json.dumps(report_json(report, profile.name), indent=2))
    else:
        click.echo(render_table(report, profile.name), nl=False)
        if not found:
            click.echo("\n(dom0 has not been built for this profile: checks of built files say unknown;"
                       " run `xenlive build` once to answer them)")  # fmt: skip
    if report.errors:
        failing = sorted({r.target for r in report.errors})
        raise CheckFailed(
            f"error-level checks failed on {len(failing)} of {len(targets)} targets: {', '.join(failing)}"
        )


def list_checks(as_json: bool) -> None:
    """`check --list`: every check with its scope, severity and phase, and the known targets."""
    if as_json:
        checks = [{"id": c.id, "scope": str(c.scope), "severity": str(c.severity), "needs_build": c.needs_build,
                   "skippable": c.skippable, "title": c.title, "why": c.why} for c in all_checks()]  # fmt: skip
        targets = [{"name": name, "file": str(path)} for name, path in target_files().items()]
        click.echo(json.dumps({"checks": checks, "targets": targets}, indent=2))
        return
    for c in all_checks():
        when = "after dom0 is built" if c.needs_build else "static"
        skip = "" if c.skippable else " (cannot be skipped)"
        click.echo(f"{c.id:<24} {c.scope:<8} {c.severity:<8} {when:<20} {c.title}{skip}")
    click.echo("\nknown targets: " + ", ".join(target_files()))
