"""Logging setup and the step() context manager that times each pipeline stage."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

log = logging.getLogger("builder")


def setup_logging(*, debug: bool = False, quiet: bool = False) -> None:
    level = logging.DEBUG if debug else logging.WARNING if quiet else logging.INFO
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("builder")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


@contextlib.contextmanager
def step(title: str, timings: dict[str, float] | None = None) -> Iterator[None]:
    """Log the start and duration of a stage; record the duration in `timings` if given."""
    log.info("==> %s", title)
    start = time.monotonic()
    yield
    elapsed = time.monotonic() - start
    if timings is not None:
        timings[title] = elapsed
    log.info("    %s: %.1f s", title, elapsed)
