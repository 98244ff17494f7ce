"""The one way xenlive runs mmdebstrap, for dom0 and for Debian guests alike.

Suite and mirror come from profiles, which come from strangers: the model allows only a plain suite
name and a plain http(s) URL (builder/profile/model.py), and `--` ends the options here anyway, so
no value can become an option (mmdebstrap's hooks run commands as root on the host).

It runs with --verbose: mmdebstrap draws its own progress bars only on a terminal, but apt's and
dpkg's lines say which package is fetched, unpacked and set up, which AptProgress turns into
counts out of each round's total.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from builder.errors import CommandError, ProfileError
from builder.log import Meter, progress
from builder.run import run
from builder.templating import render
from builder.userns import in_initial_namespace

if TYPE_CHECKING:
    from builder.profile import Profile

# What apt says, in mmdebstrap's first second or so, when the suite or a package is not there.
NO_SUITE = re.compile(r"does not have a Release file|The repository .* is not signed")
NO_PACKAGE = re.compile(r"Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate")


def mode() -> str:
    """root when we are root on the machine itself (fastest, no namespaces); in a user namespace
    (the one xenlive enters to build without root, builder/userns.py, or a container's) unshare,
    which as that namespace's root needs no subordinate ids of its own and mounts what the chroot
    needs inside namespaces of its own."""
    return "root" if os.geteuid() == 0 and in_initial_namespace() else "unshare"


def mmdebstrap_command(*, suite: str, mirror: str, target: Path, packages: Sequence[str],
                       dpkg_options: Sequence[str], options: Sequence[str] = ()) -> list[str]:  # fmt: skip
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--mode={mode()}",
        "--verbose",
        *options,
        "--include=" + ",".join(packages),
        *[f"--dpkgopt={opt}" for opt in dpkg_options],
        "--",
        suite,
        os.fspath(target),
        mirror,
    ]


def hook(template: str, **context: object) -> str:
    """One mmdebstrap hook option from builder/templates/mmdebstrap/TEMPLATE.j2, which renders one
    argument. Values from a profile must be shell-quoted before they reach the template."""
    return render(f"mmdebstrap/{template}.j2", **context).removesuffix("\n")


def run_for_dom0(command: list[str], *, profile: Profile, key: str, epoch: int, label: str) -> None:
    """Run mmdebstrap, or apt over dom0's tree, with apt's progress shown as LABEL. A failure that the
    profile's suite or packages caused is raised as a profile error naming KEY (explain())."""
    dom0 = profile.dom0
    try:
        run(command, env={"SOURCE_DATE_EPOCH": str(epoch)}, output=AptProgress(label))
    except CommandError as e:
        bad = explain(e, suite=dom0.suite, mirror=dom0.mirror, where=profile.where(key), key=key)
        if bad is None:
            raise
        raise bad from e


def explain(error: CommandError, *, suite: str, mirror: str, where: str, key: str) -> ProfileError | None:
    """A failed mmdebstrap that failed because of the profile's suite or packages, as a profile error.

    apt finds out in the first seconds, before anything is downloaded or installed, so an unknown
    suite, or one without Xen or live-boot, stops the build there with exit 2, naming the suite and
    the mirror; any other failure stays a failure of the work (exit 1).
    """
    tail = error.stderr_tail
    if NO_SUITE.search(tail):
        return ProfileError([f"{where}: {key}: suite {suite!r} is not on the mirror {mirror}"],
                            hint="use a Debian suite the mirror has, such as trixie or bookworm")  # fmt: skip
    missing = sorted({a or b for a, b in NO_PACKAGE.findall(tail)})
    if missing:
        return ProfileError(
            [f"{where}: {key}: suite {suite!r} on {mirror} has no package {', '.join(missing)}"],
            hint="xenlive needs Xen and live-boot from the suite; check the suite and dom0.packages",
        )
    return None


ROUNDS = {  # mmdebstrap's info lines that start a round of apt, and what the round installs
    "downloading packages with apt": "essential packages",
    "installing remaining packages inside the chroot": "remaining packages",
}
SAME_ROUND = {"extracting archives", "installing essential packages"}  # the essential packages, unpacked and set up
INFO = re.compile(r"I: (.+?)\.*")
NEWLY_INSTALLED = re.compile(r"\d+ upgraded, (\d+) newly installed, .*")
# A package download: Get:N URL SUITE/COMPONENT ARCH PACKAGE ARCH VERSION [SIZE] (not a package list's)
FETCHED = re.compile(r"Get:\d+ \S+ \S+ \S+ \S+ \S+ \S+ \[.*\]")
UNPACKED = re.compile(r"Unpacking (\S+) .*")
SET_UP = re.compile(r"Setting up (\S+) .*")


class AptProgress:
    """Reads mmdebstrap --verbose line by line and reports `LABEL: ROUND [bar] N/TOTAL packages VERB`.

    Each apt round (the essential packages, then the rest inside the chroot) announces its total
    ("N newly installed"); its fetches, unpacks and set-ups are counted against that total. Lines
    between rounds (updating the package lists, extracting, writing the tree) are shown as they are.
    """

    def __init__(self, label: str) -> None:
        self.label = label
        self.meter = Meter(label, unit="packages")
        self.round = ""
        self.total = 0
        self.counts = {"fetched": 0, "unpacked": 0, "set up": 0}

    def __call__(self, line: str) -> None:
        line = line.strip()
        info = INFO.fullmatch(line)
        if info:
            what = info[1]
            if what in ROUNDS:
                self.round, self.total = ROUNDS[what], 0
                self.counts = dict.fromkeys(self.counts, 0)
            elif what not in SAME_ROUND:
                self.round, self.total = "", 0
            progress(f"{self.label}: {ROUNDS.get(what, what)}", 0)
            return
        newly = NEWLY_INSTALLED.fullmatch(line)
        if newly and self.round:
            self.total = int(newly[1])
            return
        if not self.total:
            return
        for verb, pattern in (("fetched", FETCHED), ("unpacked", UNPACKED), ("set up", SET_UP)):
            if pattern.fullmatch(line):
                self.counts[verb] += 1
                self.meter.unit = f"packages {verb}"
                self.meter(min(self.counts[verb], self.total), self.total, f"{self.label}: {self.round}")
                return
