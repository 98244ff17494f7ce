"""The checks as a build gate: static ones before the long steps, the rest once dom0 exists.

Why two phases: most mistakes (a guest too big for the machine, an HVM guest for a CPU without
VT-x, a UEFI-only medium for a BIOS machine) are known from the profile alone and should stop a
build before minutes of mmdebstrap; the rest need the built kernel, Xen config and modules.
The checks of guests' own files (GUEST_CHECKS) run once more after the guests stage, on what it put
on the medium: a Debian guest's kernel and initrd exist only from then on.

Which machines: the profile's `checks.targets`, else the QEMU machines `xenlive test` boots
(qemu-bios, qemu-uefi), so a build that passes its gate can pass its own boot test.
"""

from __future__ import annotations

import logging

from builder.checks import Report, Scope, Status, all_checks, run_checks, unknown_ids
from builder.checks.facts import gather
from builder.checks.profile_rules import require_built
from builder.context import BuildContext
from builder.errors import CheckFailed, UsageError
from builder.hardware import QEMU_TARGETS, Target, load_targets
from builder.log import VERBOSE
from builder.profile.model import Profile

log = logging.getLogger(__name__)

GUEST_CHECKS = ("guest-kernels",)  # the checks that read the guests' kernels and initrds


def build_targets(profile: Profile) -> list[Target]:
    return load_targets(profile.checks.targets or QEMU_TARGETS)


def skipped(profile: Profile, ignore: tuple[str, ...]) -> list[str]:
    """Check ids not to run: the profile's checks.skip and --ignore-check; a typo is a usage error."""
    ids = [*profile.checks.skip, *ignore]
    bad = unknown_ids(ids)
    if bad:
        raise UsageError(f"unknown check id {', '.join(map(repr, bad))}", hint="`xenlive check --list` lists them")
    for i in dict.fromkeys(ids):
        log.warning("    check %s is skipped on request", i)
    return ids


def gate(ctx: BuildContext, ignore: tuple[str, ...] = (), *, built: bool, guests: bool = False) -> Report:
    """Run the checks for this phase; log warnings, raise CheckFailed (exit 3) on any error.

    Once dom0 is built, the profile rules that need its tree run first (a bad profile exits 2).
    With guests, only GUEST_CHECKS run, on the guests' files as the guests stage staged them.
    """
    profile = ctx.profile
    targets = build_targets(profile)
    skip = skipped(profile, ignore) if not built else [*profile.checks.skip, *ignore]
    if guests:
        facts = gather(profile, ctx.rootfs, staging=ctx.staging, cache_dir=ctx.cache_dir)
        skip += [c.id for c in all_checks(Scope.TARGET) if c.id not in GUEST_CHECKS]
    else:
        if built:
            require_built(profile, ctx.require_rootfs(), ignore)
        facts = gather(profile, ctx.rootfs if built else None, cache_dir=ctx.cache_dir)
    report = run_checks(profile, targets, facts, skip=skip, static_only=not built)
    for r in report.results:
        if r.status is Status.FAIL and not r.blocking:
            for f in r.findings:
                log.warning("    %s [%s] %s: %s", r.target, r.check.id, f.message, f.remedy)
        elif r.status is Status.PASS:
            for f in r.findings:
                log.info("    %s [%s] %s", r.target, r.check.id, f.message)
    if report.errors:
        lines = [
            f"{r.target}: [{r.check.id}] {f.message}\n  fix: {f.remedy}" for r in report.errors for f in r.findings
        ]
        ids = sorted({r.check.id for r in report.errors})
        raise CheckFailed(
            "hardware check failed:\n" + "\n".join(lines),
            hint="fix the profile, or build anyway with " + " ".join(f"--ignore-check {i}" for i in ids),
        )
    phase = "guest-file" if guests else "built-file" if built else "static"
    log.log(VERBOSE, "    %s checks passed on %s", phase, ", ".join(t.name for t in targets))
    return report
