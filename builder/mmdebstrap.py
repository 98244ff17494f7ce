"""The one way xenlive runs mmdebstrap, for dom0 and for Debian guests alike.

Suite and mirror come from profiles, which come from strangers: the model allows only a plain suite
name and a plain http(s) URL (builder/profile/model.py), and `--` ends the options here anyway, so
no value can become an option (mmdebstrap's hooks run commands as root on the host).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from builder.errors import CommandError, ProfileError

# What apt says, in mmdebstrap's first second or so, when the suite or a package is not there.
NO_SUITE = re.compile(r"does not have a Release file|The repository .* is not signed")
NO_PACKAGE = re.compile(r"Unable to locate package (\S+)|Package '?([^' ]+)'? has no installation candidate")


def mode() -> str:
    """root when we are root (fastest, no user namespace needed), else unshare."""
    return "root" if os.geteuid() == 0 else "unshare"


def mmdebstrap_command(*, suite: str, mirror: str, target: Path, packages: Sequence[str],
                       dpkg_options: Sequence[str], options: Sequence[str] = ()) -> list[str]:  # fmt: skip
    return [
        "mmdebstrap",
        "--variant=minbase",
        f"--mode={mode()}",
        *options,
        "--include=" + ",".join(packages),
        *[f"--dpkgopt={opt}" for opt in dpkg_options],
        "--",
        suite,
        os.fspath(target),
        mirror,
    ]


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
