"""Logging setup, the step() context manager that times each stage, and progress reports.

What a user sees depends on where stderr goes (builder/terminal.py):

- a terminal: one live status line for the running step, with its elapsed time and, when the step
  reports it, how far it is (packages, percent, bytes with rate and ETA); when the step ends the
  line is replaced by one that gives its time;
- anything else (a CI log, a pipe, TERM=dumb) or --debug: one plain line when each step starts,
  and no control characters.

Progress travels as ordinary log records with an extra field, so a stage reports it without
knowing where it goes, and -q (warnings and errors only) silences it along with the rest.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TextIO

from builder import terminal

log = logging.getLogger("builder")

VERBOSE = 15  # -v: the details of each step (what is built, what the cache answered)
logging.addLevelName(VERBOSE, "VERBOSE")
STEP = "xenlive_step"
PROGRESS = "xenlive_progress"


@dataclass(frozen=True)
class StepEvent:
    title: str
    end: bool = False
    seconds: float = 0.0
    failed: bool = False


@dataclass(frozen=True)
class Progress:
    what: str
    done: float
    total: float | None = None
    unit: str = ""  # "bytes": sizes, rate and ETA are shown; anything else names what is counted


def setup_logging(*, verbosity: int = 0, debug: bool = False, stream: TextIO | None = None) -> None:
    """verbosity -1 (-q): warnings and errors; 0: steps and messages; 1 (-v): details too; debug: commands."""
    stream = stream if stream is not None else sys.stderr
    level = logging.DEBUG if debug else logging.WARNING if verbosity < 0 else VERBOSE if verbosity > 0 else logging.INFO
    term = terminal.detect(stream)
    handler: logging.Handler
    if term.live and not debug:
        handler = LiveHandler(stream, term, verbose=level <= VERBOSE)
    else:
        handler = LineHandler(stream, term, verbose=level <= VERBOSE)
    root = logging.getLogger("builder")
    for old in root.handlers:
        old.close()
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@contextlib.contextmanager
def step(title: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Show a step while it runs and its duration when it ends; record it in `timings` if given."""
    log.info("==> %s", title, extra={STEP: StepEvent(title)})
    start = time.monotonic()
    try:
        yield
    except BaseException:
        elapsed = time.monotonic() - start
        log.info("    %s failed after %.1f s", title, elapsed, extra={STEP: StepEvent(title, True, elapsed, True)})
        raise
    elapsed = time.monotonic() - start
    if timings is not None:
        timings[title] = elapsed
    log.info("    %s: %.1f s", title, elapsed, extra={STEP: StepEvent(title, True, elapsed)})


def progress(what: str, done: float, total: float | None = None, unit: str = "") -> None:
    """Report how far the running step is (shown on a terminal only)."""
    log.info("%s", what, extra={PROGRESS: Progress(what, done, total, unit)})


class Meter:
    """Progress reports at most every INTERVAL seconds, and always the one that completes the work,
    so a caller that reports per block or per line does not drive a redraw for each."""

    INTERVAL = 0.1

    def __init__(self, what: str, total: float | None = None, unit: str = "") -> None:
        self.what = what
        self.total = total
        self.unit = unit
        self.last = 0.0

    def __call__(self, done: float, total: float | None = None, what: str | None = None) -> None:
        if total is not None:
            self.total = total
        if what is not None and what != self.what:
            self.what, self.last = what, 0.0
        now = time.monotonic()
        finished = self.total is not None and done >= self.total
        if now - self.last < self.INTERVAL and not finished:
            return
        self.last = now
        progress(self.what, done, self.total, self.unit)


def _level_style(record: logging.LogRecord) -> tuple[str, ...]:
    if record.levelno >= logging.ERROR:
        return ("red", "bold")
    if record.levelno >= logging.WARNING:
        return ("yellow",)
    return ()


class LineHandler(logging.Handler):
    """One plain line when each step starts and one per message; progress is not shown."""

    def __init__(self, stream: TextIO, term: terminal.Terminal, *, verbose: bool) -> None:
        super().__init__()
        self.stream = stream
        self.term = term
        self.verbose = verbose
        self.depth = 0

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, PROGRESS, None) is not None:
            return
        event: StepEvent | None = getattr(record, STEP, None)
        if event is None:
            text = self.term.style(record.getMessage(), *_level_style(record))
        elif not event.end:
            text = f"{'  ' * self.depth}{self.term.style('==>', 'blue', 'bold')} {event.title}"
            self.depth += 1
        else:
            self.depth = max(0, self.depth - 1)
            if not self.verbose or event.failed:
                return
            text = f"{'  ' * self.depth}    {event.title}: {event.seconds:.1f} s"
        lines = text if self.term.color else terminal.plain(text)
        try:
            self.stream.write(lines + "\n")
            self.stream.flush()
        except (OSError, ValueError):
            self.handleError(record)


class LiveHandler(logging.Handler):
    """A status line for the running step, redrawn in place; messages are printed above it."""

    REDRAW = 0.25
    SPINNER = "|/-\\"

    def __init__(self, stream: TextIO, term: terminal.Terminal, *, verbose: bool) -> None:
        super().__init__()
        self.stream = stream
        self.term = term
        self.verbose = verbose
        self.steps: list[tuple[str, float]] = []  # the running steps, outermost first: (title, start)
        self.current: Progress | None = None
        self.rate_base: tuple[str, float, float] | None = None  # (what, when, done) of the first report
        self.shown = False
        self.tick = 0
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def emit(self, record: logging.LogRecord) -> None:  # called with self.lock held
        try:
            report: Progress | None = getattr(record, PROGRESS, None)
            event: StepEvent | None = getattr(record, STEP, None)
            if report is not None:
                if self.rate_base is None or self.rate_base[0] != report.what:
                    self.rate_base = (report.what, time.monotonic(), report.done)
                self.current = report
                self.draw()
            elif event is not None and not event.end:
                self.clear()
                self.steps.append((event.title, time.monotonic()))
                self.current = self.rate_base = None
                self.start_thread()
                self.draw()
            elif event is not None:
                self.clear()
                if self.steps:
                    self.steps.pop()
                self.current = self.rate_base = None
                indent = "  " * len(self.steps)
                if event.failed:
                    mark = self.term.style(f"{event.title} failed after {event.seconds:.1f} s", "red")
                    self.stream.write(f"{indent}{self.term.style('==>', 'red', 'bold')} {mark}\n")
                else:
                    took = self.term.style(f"{event.seconds:.1f} s", "dim")
                    self.stream.write(f"{indent}{self.term.style('==>', 'green', 'bold')} {event.title}  {took}\n")
                self.draw()
            else:
                self.clear()
                self.stream.write(self.term.style(record.getMessage(), *_level_style(record)) + "\n")
                self.draw()
            self.stream.flush()
        except (OSError, ValueError):
            self.handleError(record)

    def start_thread(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._redraw_loop, name="xenlive-status", daemon=True)
            self.thread.start()

    def _redraw_loop(self) -> None:
        while not self.stop.wait(self.REDRAW):
            self.acquire()
            try:
                self.tick += 1
                self.draw()
                self.stream.flush()
            except (OSError, ValueError):
                return
            finally:
                self.release()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.shown = False

    def draw(self) -> None:
        if not self.steps:
            return
        text = self.status_text(time.monotonic())
        self.stream.write("\r" + text[: self.term.width - 1] + "\x1b[K")
        self.shown = True

    def status_text(self, now: float) -> str:
        title, start = self.steps[-1]
        text = f"{self.SPINNER[self.tick % len(self.SPINNER)]} {title}  {now - start:.0f} s"
        if self.current is not None:
            text += "  " + describe(self.current, self.rate(now))
        return text

    def rate(self, now: float) -> float | None:
        """Units per second since the first report of the current piece of work."""
        if self.current is None or self.rate_base is None:
            return None
        _, since, done0 = self.rate_base
        if now - since < 1.0 or self.current.done <= done0:
            return None
        return (self.current.done - done0) / (now - since)

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None and self.thread is not threading.current_thread():
            self.thread.join(timeout=1.0)
        self.acquire()
        try:
            self.clear()
            self.stream.flush()
        except (OSError, ValueError):
            pass
        finally:
            self.release()
        super().close()


def describe(p: Progress, rate: float | None) -> str:
    """`what [#####.....] 45% 12.0 MiB of 26.0 MiB, 3.1 MiB/s, ETA 5 s` or `what 12/30 packages`."""
    if p.total is None or p.total <= 0:
        if not p.unit:
            return p.what
        amount = terminal.human_size(p.done) if p.unit == "bytes" else f"{p.done:.0f} {p.unit}"
        return f"{p.what} {amount}"
    fraction = min(max(p.done / p.total, 0.0), 1.0)
    bar = "#" * int(fraction * 20)
    text = f"{p.what} [{bar:.<20}] {fraction:4.0%}"
    if p.unit == "bytes":
        text += f" {terminal.human_size(p.done)} of {terminal.human_size(p.total)}"
        if rate:
            text += f", {terminal.human_size(rate)}/s, ETA {max(p.total - p.done, 0) / rate:.0f} s"
    elif p.unit:
        text += f" {p.done:.0f}/{p.total:.0f} {p.unit}"
    return text
