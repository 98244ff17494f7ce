"""What the stream a message goes to can show: a live, redrawn status line, and colour.

A live line needs a terminal that moves the cursor: not a pipe or a CI log (where `\\r` and escape
sequences end up as garbage in the file), and not TERM=dumb (Emacs shell buffers, some serial
consoles), which promises no cursor control at all. Colour also needs NO_COLOR unset or empty
(https://no-color.org), so one variable turns it off everywhere without losing the live line.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TextIO

# What a status line or a tool's output may carry that a log file must not: CSI sequences
# (colour, erase line), other escapes, carriage returns and the remaining C0 controls but tab.
CONTROL = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[@-Z\\-_]|[\x00-\x08\x0b-\x1f\x7f]")

COLORS = {"red": 31, "green": 32, "yellow": 33, "blue": 34, "bold": 1, "dim": 2}


@dataclass(frozen=True)
class Terminal:
    live: bool  # the line can be redrawn with \r and erased with ESC [ K
    color: bool
    width: int

    def style(self, text: str, *names: str) -> str:
        """`text` in the given colours when colour is on, else unchanged."""
        if not self.color or not names:
            return text
        codes = ";".join(str(COLORS[name]) for name in names)
        return f"\x1b[{codes}m{text}\x1b[0m"


def detect(stream: TextIO, env: Mapping[str, str] | None = None) -> Terminal:
    """The abilities of `stream` under the environment `env` (default: this process's)."""
    env = os.environ if env is None else env
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):  # a closed or fake stream
        tty = False
    live = tty and env.get("TERM", "") != "dumb"
    color = live and not env.get("NO_COLOR")
    width = shutil.get_terminal_size((80, 24)).columns if live else 80
    return Terminal(live=live, color=color, width=max(width, 20))


def plain(text: str) -> str:
    """`text` without control characters, for a log file or a pipe."""
    return CONTROL.sub("", text)


def human_size(size: float) -> str:
    """Binary units with one decimal, as lsblk prints them."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
