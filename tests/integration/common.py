"""What the integration tests share: running xenlive as a user does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def xenlive(*args: str, check: bool = False, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    """`python -m builder ARGS`, with `env` added to the environment. xenlive never answers with a
    traceback; with `check`, a non-zero exit fails the test and shows both outputs."""
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **env})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    if check and proc.returncode != 0:
        pytest.fail(f"xenlive {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc
