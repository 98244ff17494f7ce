"""Run dom0's services (builder/templates/dom0/usr/lib/xenlive/*) for real under /bin/sh.

The edges faked are the ones the services cannot have here: the dom0 tree, moved under a temporary
XENLIVE_ROOT (lib.sh hangs every path off it), and the commands that need Xen or root (xl, ip,
losetup, ...), as small scripts on PATH. Everything in between is the shipped shell code.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from builder.profile import Profile
from builder.stages.guests import guest_table, xl_config

from .conftest import REPO

SERVICES = REPO / "builder/templates/dom0/usr/lib/xenlive"


class FakeDom0:
    """A dom0 tree under tmp_path/root (or `root`, a tree the builder wrote) and fake commands in tmp_path/bin."""

    def __init__(self, tmp_path: Path, root: Path | None = None) -> None:
        self.root = root or tmp_path / "root"
        self.bin = tmp_path / "bin"
        self.root.mkdir(parents=True, exist_ok=True)
        self.bin.mkdir()
        # ready waits for report's and machine's lines before it ends the guests' logs: not here.
        self.env = dict(os.environ, PATH=f"{self.bin}:{os.environ['PATH']}", XENLIVE_ROOT=str(self.root),
                        XENLIVE_PRINTED_WAIT="0")  # fmt: skip
        self.write("proc/cmdline", "boot=live\n")
        self.write("dev/console", "")
        # systemctl only records what it was asked (ready starts the machine report); tests may replace it
        self.systemctl_log = tmp_path / "systemctl.log"
        self.command("systemctl", f'echo "$*" >> "{self.systemctl_log}"\n')

    def path(self, rel: str) -> Path:
        return self.root / rel

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def read(self, rel: str) -> str:
        return (self.root / rel).read_text()

    def command(self, name: str, script: str) -> None:
        """A fake command: `script` is the body of a /bin/sh script."""
        path = self.bin / name
        path.write_text(f"#!/bin/sh\n{script}")
        path.chmod(0o755)

    def conf(self, **values: str) -> None:
        """/etc/xenlive/xenlive.conf with these variables (the shipped template's are not needed)."""
        self.write("etc/xenlive/xenlive.conf", "".join(f'{k}="{v}"\n' for k, v in values.items()))

    def guests(self, profile: Profile, ramdisk_bytes: dict[str, int] | None = None,
               minimums: dict[str, int] | None = None) -> None:  # fmt: skip
        """/etc/xenlive/guests.tsv and the autostart configs, as the guests stage writes them."""
        self.write("etc/xenlive/guests.tsv", guest_table(profile, ramdisk_bytes or {}, minimums))
        for guest in profile.guests:
            if guest.autostart:
                self.write(f"etc/xen/auto/{guest.name}.cfg", xl_config(profile, guest))

    def run(self, service: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["/bin/sh", str(SERVICES / service), *args], capture_output=True, text=True,
                              env={**self.env, **env})  # fmt: skip

    def shell(self, script: str) -> subprocess.CompletedProcess[str]:
        """`script` after sourcing lib.sh, as a service would (with TAG=TEST)."""
        program = f'TAG=TEST\n. "{SERVICES}/lib.sh"\n{script}'
        return subprocess.run(["/bin/sh", "-c", program], capture_output=True, text=True, env=self.env)
