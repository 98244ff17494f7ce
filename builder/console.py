"""The serial console of a booting image: lines read, lines waited for, commands run in dom0.

`xenlive test` reads QEMU's serial line (COM1, where Xen and dom0's hvc0 both write) and, with
--expect and --exec, keeps using it after XENLIVE-READY. dom0 logs root in on that console (the
serial-getty autologin drop-in), so a command can be typed there. The line is shared with kernel
and Xen messages, and input passes through Xen's small receive buffer, which drops what dom0 has
not read yet. So:

- every marker xenlive waits for is printed by printf from pieces (`printf 'XENLIVE-EXEC-%s-%s'
  ...`): the echo of a typed line can never look like one, and a marker must be a whole line;
- input is typed slowly, in short lines, each answered by a marker before the next is sent;
- a command travels as base64 into a file whose md5 dom0 checks before running it, so a lost
  character fails the command instead of running something else;
- the command runs under /bin/sh in /, as root, with stdin from /dev/null; its output (stdout and
  stderr together) is every line between its BEGIN and END markers, kernel messages included.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import select
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
TAIL_LINES = 50
TYPE_CHUNK = 16  # bytes typed at once, then a pause: Xen's receive ring holds 128
TYPE_PAUSE = 0.02
BASE64_CHUNK = 56  # base64 characters per typed line (the line stays under Xen's 128 bytes)
ANSWER_TIMEOUT = 30.0  # seconds for dom0 to answer one typed line (TCG is slow)
PROBE_INTERVAL = 5.0  # seconds between attempts to reach the shell


@dataclass(frozen=True)
class Session:
    """What to do on the console once XENLIVE-READY has passed."""

    expect: tuple[re.Pattern[str], ...] = ()  # each must fully match a console line (any time during the boot)
    commands: tuple[str, ...] = ()  # run in dom0 in order; the first non-zero exit ends the test

    @property
    def active(self) -> bool:
        return bool(self.expect or self.commands)


@dataclass
class CommandResult:
    command: str
    exit: int | None  # None: it did not run or did not finish
    output: list[str] = field(default_factory=list)
    seconds: float = 0.0
    reason: str = ""

    def as_dict(self) -> dict[str, object]:
        return {"command": self.command, "exit": self.exit, "output": self.output,
                "seconds": round(self.seconds, 1), "reason": self.reason}  # fmt: skip


def clean(raw: bytes) -> str:
    return ANSI.sub("", raw.decode("utf-8", errors="replace"))


class Console:
    """QEMU's serial line: complete lines in (cleaned, written to console.log, the last ones kept,
    passed to every listener), text out (typed slowly)."""

    def __init__(self, fd: int, stdin: IO[bytes] | None, log_file: IO[bytes] | None,
                 stop: threading.Event | None = None,
                 asides: tuple[Callable[[str], bool], ...] = ()) -> None:  # fmt: skip
        self.fd = fd
        # Readers of lines that are not the console's own (a guest's log that dom0 relays, a machine
        # report): the first that returns True for a line takes it, and the line is neither kept,
        # passed on nor returned.
        self.asides = asides
        self.stop = stop  # set when another boot of a matrix was interrupted: read no more
        self.stdin = stdin
        self.log_file = log_file
        self.buffer = b""
        self.tail: deque[str] = deque(maxlen=TAIL_LINES)
        self.listeners: list[Callable[[str], None]] = []
        self.closed = False
        self.unread: list[str] = []  # lines a reader handed back, returned again by the next read

    def give_back(self, lines: list[str]) -> None:
        """Lines a reader took but did not use (those after the one it waited for): the next read
        returns them first (they have been logged and passed to the listeners already)."""
        self.unread = lines + self.unread

    def read(self, timeout: float) -> list[str]:
        """The complete lines that arrive within `timeout` seconds (maybe none); sets `closed` at EOF."""
        if self.unread:
            lines, self.unread = self.unread, []
            return lines
        if self.stop is not None and self.stop.is_set():
            self.closed = True
        if self.closed:
            return []
        readable, _, _ = select.select([self.fd], [], [], max(timeout, 0.0))
        if not readable:
            return []
        chunk = os.read(self.fd, 65536)
        if not chunk:
            self.closed = True
            return []
        if self.log_file:
            self.log_file.write(chunk)
            self.log_file.flush()
        self.buffer += chunk
        *raw_lines, self.buffer = self.buffer.split(b"\n")
        lines = []
        for line in (clean(raw) for raw in raw_lines):
            if any(take(line) for take in self.asides):
                continue
            lines.append(line)
            self.tail.append(line)
            for listener in self.listeners:
                listener(line)
        return lines

    def pending(self) -> str:
        """The line still being written, cleaned (a boot menu's countdown ends no line)."""
        return clean(self.buffer)

    def type(self, text: str) -> None:
        """Send `text` to the serial line a few bytes at a time."""
        if self.stdin is None:
            raise OSError("the serial console of this machine takes no input")
        data = text.encode()
        for at in range(0, len(data), TYPE_CHUNK):
            try:
                self.stdin.write(data[at : at + TYPE_CHUNK])
                self.stdin.flush()
            except BrokenPipeError:  # QEMU has gone: what waits for an answer sees the line closed
                self.closed = True
                return
            time.sleep(TYPE_PAUSE)

    def wait_for(self, pattern: re.Pattern[str], deadline: float) -> re.Match[str] | None:
        """Read until a line fully matches `pattern` (its match), the deadline passes or the line closes."""
        while not self.closed and (remaining := deadline - time.monotonic()) > 0:
            for line in self.read(min(remaining, 0.5)):
                found = pattern.fullmatch(line)
                if found:
                    return found
        return None


class Expectations:
    """The --expect patterns not seen yet; fed every console line from the start of the boot."""

    def __init__(self, patterns: tuple[re.Pattern[str], ...], start: float) -> None:
        self.pending = list(patterns)
        self.seen: dict[str, float] = {}
        self.start = start

    def __call__(self, line: str) -> None:
        for pattern in list(self.pending):
            if pattern.fullmatch(line):
                self.seen[pattern.pattern] = round(time.monotonic() - self.start, 1)
                self.pending.remove(pattern)

    def as_dict(self) -> dict[str, float | None]:
        return {**self.seen, **{p.pattern: None for p in self.pending}}


class Dom0Shell:
    """The root shell on dom0's serial console, driven by typed lines and printf markers."""

    def __init__(self, console: Console, deadline: float) -> None:
        self.console = console
        self.deadline = deadline
        self.nonce = secrets.token_hex(4)
        self.workdir = f"/tmp/xenlive-exec-{self.nonce}"

    def say(self, name: str, extra: str = "", *, fresh_line: bool = False) -> str:
        """The shell text that prints marker `name` (then `extra`): the marker never appears in it.
        `fresh_line` starts it on a line of its own after output that did not end one."""
        layout = ("\\n" if fresh_line else "") + "XENLIVE-EXEC-%s-%s" + (" %s" if extra else "") + "\\n"
        return f"printf '{layout}' {name} {self.nonce}" + (f" {extra}" if extra else "")

    def marker(self, name: str, extra: str = "") -> re.Pattern[str]:
        return re.compile(f"XENLIVE-EXEC-{re.escape(name)}-{self.nonce}" + (f" {extra}" if extra else ""))

    def ask(self, line: str, name: str, timeout: float = ANSWER_TIMEOUT) -> bool:
        """Type `line; (marker name)` and wait for the marker."""
        self.console.type(f"{line};{self.say(name)}\n" if line else f"{self.say(name)}\n")
        return self.console.wait_for(self.marker(name), min(self.deadline, time.monotonic() + timeout)) is not None

    def reach(self) -> bool:
        """Wake the shell (the getty may still be logging root in) and set it up for commands."""
        attempt = 0
        while time.monotonic() < self.deadline and not self.console.closed:
            attempt += 1
            self.console.type("\n")
            if self.ask("", f"HELLO{attempt}", PROBE_INTERVAL):
                break
        else:
            return False
        return self.ask("stty -echo 2>/dev/null;dmesg -n 1 2>/dev/null", "QUIET") and self.ask(
            f"mkdir -p {self.workdir}&&cd {self.workdir}", "SETUP"
        )

    def run(self, index: int, command: str) -> CommandResult:
        start = time.monotonic()
        result = CommandResult(command, None)
        wrapper = "\n".join([
            self.say(f"BEGIN{index}"),
            "cd /",
            f"/bin/sh -c {shlex.quote(command)} </dev/null 2>&1",
            self.say(f"END{index}", '"$?"', fresh_line=True),
            "",
        ])  # fmt: skip
        encoded = base64.b64encode(wrapper.encode()).decode()
        for k, at in enumerate(range(0, len(encoded), BASE64_CHUNK)):
            redirect = ">" if k == 0 else ">>"
            if not self.ask(f"printf %s '{encoded[at : at + BASE64_CHUNK]}'{redirect}w{index}", f"A{index}.{k}"):
                result.reason = "dom0 did not answer while the command was typed"
                result.seconds = time.monotonic() - start
                return result
        digest = hashlib.md5(wrapper.encode()).hexdigest()
        self.console.type(f"base64 -d w{index}>r{index}&&md5sum r{index}|grep -q ^{digest}&&sh r{index}"
                          f"||{self.say(f'BAD{index}')}\n")  # fmt: skip
        begin, bad = self.marker(f"BEGIN{index}"), self.marker(f"BAD{index}")
        end = self.marker(f"END{index}", r"(\d+)")
        started = False
        while not self.console.closed and (remaining := self.deadline - time.monotonic()) > 0:
            for line in self.console.read(min(remaining, 0.5)):
                if not started:
                    if bad.fullmatch(line):
                        result.reason = "the command arrived damaged over the serial console"
                        result.seconds = time.monotonic() - start
                        return result
                    started = bool(begin.fullmatch(line))
                    continue
                found = end.fullmatch(line)
                if found:
                    if result.output and result.output[-1] == "":
                        result.output.pop()  # the newline printed before END, for output that lacks one
                    result.exit = int(found[1])
                    result.seconds = time.monotonic() - start
                    result.reason = "" if result.exit == 0 else f"exited with status {result.exit}"
                    return result
                result.output.append(line)
        result.seconds = time.monotonic() - start
        result.reason = "timed out" if started else "dom0 did not start the command"
        return result


def run_session(console: Console, session: Session, expectations: Expectations, deadline: float
                ) -> tuple[str | None, list[CommandResult]]:  # fmt: skip
    """After XENLIVE-READY: wait for the expected lines, then run the commands; (why it failed, results)."""
    while expectations.pending and not console.closed and (remaining := deadline - time.monotonic()) > 0:
        console.read(min(remaining, 0.5))
    if expectations.pending:
        missing = ", ".join(repr(p.pattern) for p in expectations.pending)
        return f"expected console lines not seen: {missing}", []
    if not session.commands:
        return None, []
    shell = Dom0Shell(console, deadline)
    if not shell.reach():
        return "no shell answered on dom0's serial console", []
    results: list[CommandResult] = []
    for index, command in enumerate(session.commands, 1):
        result = shell.run(index, command)
        results.append(result)
        if result.exit != 0:
            results += [CommandResult(c, None, reason="not run: an earlier command failed")
                        for c in session.commands[index:]]  # fmt: skip
            return f"--exec {command!r}: {result.reason}", results
    return None, results
