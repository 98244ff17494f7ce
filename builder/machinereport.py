"""Machine reports: the description of a machine that dom0 writes at boot (usr/lib/xenlive/machine),
in the hardware database's format, read back from a console and kept.

On the console a report is every line between `XENLIVE-MACHINE-BEGIN NAME` and
`XENLIVE-MACHINE-END NAME sha256=HEX`. The line is shared with the kernel's messages, so the
checksum says whether what arrived is what dom0 wrote. A report comes from the machine being booted
(and so from whoever made the image): it is bounded in size, it is only ever written to a file
named by xenlive, and it is validated as a hardware file before anyone relies on it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ProfileError
from builder.hardware import MAX_FILE_BYTES, load_target_file

BEGIN = re.compile(r"XENLIVE-MACHINE-BEGIN ([a-z0-9][a-z0-9._-]{0,62})")
END = re.compile(r"XENLIVE-MACHINE-END ([a-z0-9][a-z0-9._-]{0,62}) sha256=([0-9a-f]{64})")
END_START = "XENLIVE-MACHINE-END "
KERNEL_LINE = re.compile(r"\[ *\d+\.\d+\] .*")  # a kernel message; no line of a report looks like one
XENLIVE_LINE = "XENLIVE-"  # the start of every line dom0's services print; no line of a report starts so
REPORT_FILE = "machine.yaml"  # in a boot test's report directory


@dataclass
class MachineReport:
    """One report as it arrived: its name, its lines, and the checksum dom0 gave."""

    name: str
    lines: list[str] = field(default_factory=list)
    sha256: str = ""  # empty until the END line has come
    size: int = 0

    @property
    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)

    @property
    def complete(self) -> bool:
        return bool(self.sha256)

    @property
    def intact(self) -> bool:
        """Complete, and the lines are exactly what dom0 wrote."""
        return self.complete and hashlib.sha256(self.text.encode()).hexdigest() == self.sha256


class ReportReader:
    """Takes a console's report lines as they come (a Console's aside): True for each line it keeps."""

    def __init__(self) -> None:
        self.reports: list[MachineReport] = []
        self.open: MachineReport | None = None
        self.end_part = ""  # an END line a kernel message cut, until its rest comes

    def __call__(self, line: str) -> bool:
        if self.open is not None:
            if self.end_part:
                line, self.end_part = self.end_part + line, ""
            elif line.startswith(END_START) and not END.fullmatch(line):
                cut = KERNEL_LINE.search(line)
                if cut is not None:  # the kernel's message came in the middle: the rest is the next line
                    self.end_part = line[: cut.start()]
                    return False  # the console keeps the line as it came, the kernel's message in it
            end = END.fullmatch(line)
            if end and end[1] == self.open.name:
                self.open.sha256 = end[2]
                self.open = None
                return True
            if KERNEL_LINE.fullmatch(line):
                return False  # a kernel message between the report's lines is the console's
            if BEGIN.fullmatch(line):  # a new report: the one before it lost its end
                self.open = None
            elif line.startswith(XENLIVE_LINE):  # the report lost its end: this line is the console's
                self.open = None
                return False
            else:
                self.open.size += len(line) + 1
                if self.open.size > MAX_FILE_BYTES:
                    self.open.lines = []
                    self.open = None  # too big to be a report: what follows is the console's own again
                    return False
                self.open.lines.append(line)
                return True
        begin = BEGIN.fullmatch(line)
        if begin is None:
            return False
        if len(self.reports) < 16:
            self.open = MachineReport(begin[1])
            self.reports.append(self.open)
        return True

    @property
    def last(self) -> MachineReport | None:
        """The last complete report (a boot that printed more than one, a reboot, keeps the latest)."""
        return next((r for r in reversed(self.reports) if r.complete), None)


def extract_reports(lines: Iterable[str]) -> list[MachineReport]:
    """Every complete report in a console log's lines."""
    reader = ReportReader()
    for line in lines:
        reader(line.rstrip("\r"))
    return [r for r in reader.reports if r.complete]


def save_report(report: MachineReport | None, directory: Path) -> dict[str, object]:
    """Keep a report as DIRECTORY/machine.yaml when it arrived whole; what a boot test says about it."""
    if report is None:
        return {"file": None, "name": None, "problems": ["no machine report on the console"]}
    if not report.intact:
        return {"file": None, "name": report.name,
                "problems": ["the machine report arrived damaged (its sha256 does not match)"]}  # fmt: skip
    path = directory / REPORT_FILE
    path.write_text(report.text)
    try:
        load_target_file(path)
    except ProfileError as e:
        return {"file": str(path), "name": report.name, "problems": e.problems}
    return {"file": str(path), "name": report.name, "problems": []}
