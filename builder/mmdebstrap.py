"""The one way xenlive runs mmdebstrap, for dom0 and for Debian guests alike.

Suite and mirror come from profiles, which come from strangers: the model allows only a plain suite
name and a plain http(s) URL (builder/profile/model.py), and `--` ends the options here anyway, so
no value can become an option (mmdebstrap's hooks run commands as root on the host).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


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
