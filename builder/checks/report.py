"""Render a check Report: a summary table a reader can act on, the findings, and JSON for CI."""

from __future__ import annotations

from typing import Any

from builder.checks import Report, Result, Severity, Status

MARK = {Severity.ERROR: "ERROR", Severity.WARNING: "warn", Severity.INFO: "info"}


def verdict(results: list[Result]) -> str:
    """One word per target: fails (an error), warnings, unknown (could not decide), ok."""
    if any(r.blocking for r in results):
        return "FAIL"
    if any(r.status is Status.FAIL for r in results):
        return "ok, with warnings"
    if any(r.status is Status.UNKNOWN for r in results):
        return "ok so far (some unknown)"
    return "ok"


def render_table(report: Report, profile_name: str) -> str:
    """Summary table (one row per target), then every failed or unknown check with its remedy."""
    lines = [f"Hardware checks for profile {profile_name!r}", ""]
    width = max([len("TARGET"), *(len(t.name) for t in report.targets)])
    lines.append(f"{'TARGET':<{width}}  {'ERRORS':>6}  {'WARNINGS':>8}  {'UNKNOWN':>7}  VERDICT")
    for t in report.targets:
        rs = report.for_target(t.name)
        errors = sum(r.blocking for r in rs)
        warnings = sum(r.status is Status.FAIL and not r.blocking for r in rs)
        unknowns = sum(r.status is Status.UNKNOWN for r in rs)
        lines.append(f"{t.name:<{width}}  {errors:>6}  {warnings:>8}  {unknowns:>7}  {verdict(rs)}")
    for t in report.targets:
        shown = (Status.FAIL, Status.UNKNOWN, Status.SKIPPED)
        rs = [r for r in report.for_target(t.name) if r.status in shown or r.findings]
        if not rs:
            continue
        lines += ["", f"{t.name}: {t.description}"]
        order = [Status.FAIL, Status.UNKNOWN, Status.SKIPPED, Status.PASS, Status.PENDING]
        rs.sort(key=lambda r: (order.index(r.status), list(Severity).index(r.check.severity)))
        for r in rs:
            if r.status is Status.SKIPPED:
                lines.append(f"  skipped  {r.check.id}: skipped on request")
                continue
            tag = {Status.FAIL: MARK[r.check.severity], Status.PASS: "note"}.get(r.status, "unknown")
            for f in r.findings:
                lines.append(f"  {tag:<7}  {r.check.id}: {f.message}")
                if f.remedy:
                    lines.append(f"  {'':<7}  {'':<{len(r.check.id)}}  fix: {f.remedy}")
    return "\n".join(lines) + "\n"


def as_json(report: Report, profile_name: str) -> dict[str, Any]:
    return {
        "profile": profile_name,
        "ok": not report.errors,
        "targets": {
            t.name: {
                "description": t.description,
                "verdict": verdict(report.for_target(t.name)),
                "checks": [r.as_dict() for r in report.for_target(t.name)],
            }
            for t in report.targets
        },
    }
