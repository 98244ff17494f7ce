"""The code style the project keeps (STYLE.md section 8): ruff's rule sets and mypy in strict mode."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from .conftest import REPO


@pytest.mark.skipif(shutil.which("ruff") is None and not (REPO / ".venv/bin/ruff").exists(), reason="ruff missing")
def test_ruff_finds_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "builder", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_strict_finds_nothing():
    pytest.importorskip("mypy")
    proc = subprocess.run([sys.executable, "-m", "mypy", "builder"], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("ruff") is None and not (REPO / ".venv/bin/ruff").exists(), reason="ruff missing")
def test_ruff_format_changes_nothing():
    proc = subprocess.run([sys.executable, "-m", "ruff", "format", "--check", "builder", "tests", "bench"], cwd=REPO,
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
