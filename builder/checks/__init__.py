"""Every rule xenlive applies, in one registry: rules about the profile and checks against machines.

Why a registry of small functions: every rule has a stable id (used in output, in a profile's
`checks.skip` and in `xenlive build --ignore-check` where skipping it makes sense), a severity, a
docstring that says why the rule exists, and a remedy. Two scopes:

- profile (profile_rules.py): what the profile alone, or with dom0's built tree, must satisfy.
  A failure is a bad profile (exit 2), reported as `file:line:col: key: message`. The static ones
  run when a profile is loaded; the ones that need dom0's tree run right after it is built,
  before anything is written from the profile.
- target (rules.py): whether the image will run on a machine of the hardware database. A failure
  exits 3. A check is a pure function of (profile, target, built facts), so each one is tested
  with a machine that passes it and one that fails it, without building anything.

Every check is run and every finding collected before anything fails, so a user sees all the
problems of an image at once (kiwi stops at the first; that is less kind).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from builder.hardware import Target
from builder.introspect import BuiltFacts
from builder.profile.model import Profile


class Severity(enum.StrEnum):
    ERROR = "error"
    WARNING = "warning"
    INFO = "info"


class Scope(enum.StrEnum):
    PROFILE = "profile"  # the profile is wrong: exit 2, located at file:line:col
    TARGET = "target"  # the image will not run on a machine: exit 3


class Status(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    UNKNOWN = "unknown"  # the facts the check needs are missing (no build yet, no /proc entry)
    SKIPPED = "skipped"  # named in checks.skip or --ignore-check
    PENDING = "pending"  # needs built files; runs again once they exist


@dataclass(frozen=True)
class Finding:
    """One problem a check found: what is wrong, and what to change."""

    message: str
    remedy: str = ""
    key: str = ""  # the profile key it is about ("guests[1].memory"), for profile-scope rules
    unknown: bool = False
    note: bool = False  # not a problem: what the check found out, shown beside its pass


def unknown(why: str) -> Finding:
    """A finding saying the check could not decide, and why."""
    return Finding(message=why, unknown=True)


def note(what: str) -> Finding:
    """A finding that does not fail the check: how it passes (through the CSM; with a boot entry's
    options), which a user needs to know to make it so on the machine."""
    return Finding(message=what, note=True)


CheckFn = Callable[[Profile, Target, BuiltFacts], Iterable[Finding]]


@dataclass(frozen=True)
class ProfileFacts:
    """What profile rules may look at besides the profile: dom0's built tree, the medium's size."""

    rootfs: Path | None = None  # dom0's base tree, once built
    medium_bytes: int | None = None  # the medium's files, then the ISO, once they exist
    medium_what: str = ""  # which of the two medium_bytes measures
    medium_parts: Callable[[], list[tuple[str, int, str]]] | None = None  # biggest contributors, for the remedy


RuleFn = Callable[[Profile, ProfileFacts], Iterable[Finding]]


@dataclass(frozen=True)
class Check:
    id: str
    severity: Severity
    title: str
    needs_build: bool
    fn: Callable[..., Iterable[Finding]]
    scope: Scope = Scope.TARGET
    skippable: bool = True

    @property
    def why(self) -> str:
        return (self.fn.__doc__ or "").strip()


REGISTRY: dict[str, Check] = {}


def check(*, id: str, severity: Severity, title: str, needs_build: bool = False) -> Callable[[CheckFn], CheckFn]:
    """Register a check function under a stable id; its docstring is the reason it exists."""

    def register(fn: CheckFn) -> CheckFn:
        if id in REGISTRY:
            raise RuntimeError(f"check id {id!r} registered twice")
        REGISTRY[id] = Check(id=id, severity=severity, title=title, needs_build=needs_build, fn=fn)
        return fn

    return register


def rule(*, id: str, title: str, needs_build: bool = False, skippable: bool = False) -> Callable[[RuleFn], RuleFn]:
    """Register a profile rule: an error-level rule about the profile itself (exit 2)."""

    def register(fn: RuleFn) -> RuleFn:
        if id in REGISTRY:
            raise RuntimeError(f"check id {id!r} registered twice")
        REGISTRY[id] = Check(id=id, severity=Severity.ERROR, title=title, needs_build=needs_build, fn=fn,
                             scope=Scope.PROFILE, skippable=skippable)  # fmt: skip
        return fn

    return register


@dataclass(frozen=True)
class Result:
    check: Check
    target: str
    status: Status
    findings: tuple[Finding, ...] = ()

    @property
    def blocking(self) -> bool:
        return self.status is Status.FAIL and self.check.severity is Severity.ERROR

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.check.id,
            "severity": self.check.severity.value,
            "target": self.target,
            "status": self.status.value,
            "findings": [{"message": f.message, "remedy": f.remedy} for f in self.findings if not f.note],
            "notes": [f.message for f in self.findings if f.note],
        }


@dataclass
class Report:
    targets: list[Target]
    results: list[Result] = field(default_factory=list)

    @property
    def errors(self) -> list[Result]:
        return [r for r in self.results if r.blocking]

    def for_target(self, name: str) -> list[Result]:
        return [r for r in self.results if r.target == name]


def all_checks(scope: Scope | None = None) -> list[Check]:
    from builder.checks import profile_rules, rules  # noqa: F401  (registers the checks)

    return [c for c in REGISTRY.values() if scope is None or c.scope is scope]


def run_checks(
    profile: Profile,
    targets: list[Target],
    built: BuiltFacts,
    *,
    skip: Iterable[str] = (),
    static_only: bool = False,
) -> Report:
    """Run every check on every target; a check that raises is a bug and is not swallowed."""
    skipped = set(skip)
    report = Report(targets=targets)
    for target in targets:
        for c in all_checks(Scope.TARGET):
            if c.id in skipped:
                report.results.append(Result(c, target.name, Status.SKIPPED))
                continue
            if static_only and c.needs_build:
                report.results.append(Result(c, target.name, Status.PENDING))
                continue
            findings = tuple(c.fn(profile, target, built))
            if any(not f.unknown and not f.note for f in findings):
                status = Status.FAIL
                findings = tuple(f for f in findings if not f.unknown and not f.note)
            elif any(f.unknown for f in findings):
                status = Status.UNKNOWN
                findings = tuple(f for f in findings if f.unknown)
            else:
                status = Status.PASS  # with its notes, if any
            report.results.append(Result(c, target.name, status, findings))
    return report


def unknown_ids(ids: Iterable[str]) -> list[str]:
    """Ids that name no check that can be skipped (a typo in --ignore-check or checks.skip)."""
    known = {c.id for c in all_checks() if c.skippable}
    return [i for i in ids if i not in known]
