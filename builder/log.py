"""Logging setup and the step() context manager that times each pipeline stage."""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from collections.abc import Iterator

log = logging.getLogger("builder")


def setup_logging(*, debug: bool = False) -> None:
    level = logging.DEBUG if debug else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("builder")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _ticker(title: str, start: float, done: threading.Event) -> None:
    """On a terminal, show that a long stage is alive: its elapsed time, once a second."""
    while not done.wait(1.0):
        sys.stderr.write(f"\r    {title}: {time.monotonic() - start:.0f} s ")
        sys.stderr.flush()
    sys.stderr.write("\r\033[K")


@contextlib.contextmanager
def step(title: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Log the start and duration of a stage; record the duration in `timings` if given.

    On an interactive terminal at normal verbosity, a ticker shows the elapsed time of the stage;
    without a terminal (CI, pipes) or under --debug, nothing but the log lines is written.
    """
    log.info("==> %s", title)
    start = time.monotonic()
    done = threading.Event()
    ticker = None
    if sys.stderr.isatty() and log.getEffectiveLevel() == logging.INFO:
        ticker = threading.Thread(target=_ticker, args=(title, start, done), daemon=True)
        ticker.start()
    try:
        yield
    finally:
        done.set()
        if ticker is not None:
            ticker.join()
    elapsed = time.monotonic() - start
    if timings is not None:
        timings[title] = elapsed
    log.info("    %s: %.1f s", title, elapsed)
