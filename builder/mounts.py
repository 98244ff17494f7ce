"""The kernel's mount table, read as bytes so that every path in it survives decoding.

/proc/self/mountinfo (and /proc/swaps) hold paths as the raw bytes the file system stores,
UTF-8 or not, with exactly four characters written as octal escapes: space (\\040), tab
(\\011), newline (\\012) and backslash (\\134). Decoding more than that, or decoding text before
undoing the escapes, turns a path such as `josé/` into something that names no file; a mount
below it then goes unseen by the code that must never delete through it. So the escapes are
undone on bytes, in one pass (`\\134040` is a backslash followed by "040"), and the result is
turned into a str the way the os module does (os.fsdecode), which round-trips any byte.

builder.fsutil (deleting trees) and builder.devices (burn's view of disks) both read mounts
here, so the two can never disagree about what is mounted where.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
_ESCAPE = re.compile(rb"\\(040|011|012|134)")
_DEVNUM = re.compile(rb"(\d+):(\d+)")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: what is mounted where."""

    devnum: tuple[int, int]
    source: str
    mountpoint: str
    fstype: str


def unescape(raw: bytes) -> str:
    """A path field of mountinfo or /proc/swaps as the str os functions take for it."""
    return os.fsdecode(_ESCAPE.sub(lambda m: bytes([int(m[1], 8)]), raw))


def parse(data: bytes) -> list[Mount]:
    """Every well-formed line of a mountinfo file, in order; malformed lines are skipped.

    A line is `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`;
    the optional fields end at a lone "-", which no escaped field can be.
    """
    found = []
    for line in data.split(b"\n"):
        fields = line.split(b" ")
        try:
            dash = fields.index(b"-", 6)
        except ValueError:
            continue
        number = _DEVNUM.fullmatch(fields[2])
        if number is None or len(fields) < dash + 3:
            continue
        found.append(
            Mount(
                devnum=(int(number[1]), int(number[2])),
                source=unescape(fields[dash + 2]),
                mountpoint=unescape(fields[4]),
                fstype=unescape(fields[dash + 1]),
            )
        )
    return found


def read(path: Path = MOUNTINFO) -> list[Mount]:
    """The mounts listed in `path`; OSError when it cannot be read (callers decide what that means)."""
    return parse(path.read_bytes())
