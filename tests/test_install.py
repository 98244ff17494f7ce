"""xenlive installed the way users install it: a wheel built from this tree, installed with its
dependencies into a fresh virtual environment, run from a directory far from the source.

Needs pip to reach its package index (or its cache) for setuptools and the dependencies.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from .conftest import REPO

CLEAN_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the installed copy, not this tree
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "__pycache__", ".*_cache", "*.iso",
                                    "xenlive-test")  # fmt: skip


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the venv's xenlive, the wheel): built from a copy of the tree (a build writes into the tree it
    builds) and installed once for this module."""
    tmp = tmp_path_factory.mktemp("install")
    source = tmp / "source"
    shutil.copytree(REPO, source, ignore=NOT_SOURCE, symlinks=True)
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp / "dist"),
                            str(source)], capture_output=True, text=True, cwd=tmp, env=CLEAN_ENV)  # fmt: skip
    assert build.returncode == 0, build.stdout + build.stderr
    assert "eprecat" not in build.stdout + build.stderr, build.stdout + build.stderr
    (wheel,) = (tmp / "dist").glob("xenlive-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp / "venv")], check=True, env=CLEAN_ENV)
    pip = subprocess.run([str(tmp / "venv/bin/python"), "-m", "pip", "install", "-q", str(wheel)],
                         capture_output=True, text=True, cwd=tmp, env=CLEAN_ENV)  # fmt: skip
    assert pip.returncode == 0, pip.stdout + pip.stderr
    assert (tmp / "venv/bin/xenlive").is_file(), pip.stdout + pip.stderr
    return tmp / "venv/bin/xenlive", wheel


def xenlive(exe: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(exe), *args], capture_output=True, text=True, cwd=cwd, env=CLEAN_ENV)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_the_wheel_carries_profiles_overlays_schema_and_data_with_their_modes(installed):
    _exe, wheel = installed
    with zipfile.ZipFile(wheel) as z:
        modes = {info.filename: (info.external_attr >> 16) & 0o777 for info in z.infolist()}
        metadata = z.read(next(n for n in modes if n.endswith(".dist-info/METADATA"))).decode()
    for name in ("default", "lab", "xenoppix"):
        assert f"builder/profiles/{name}.yaml" in modes
    assert "builder/data/xenlive-profile.schema.json" in modes and "builder/data/host-tools.txt" in modes
    assert modes["builder/profiles/overlays/xenoppix-fuji/etc/rc.local"] & 0o111  # copied into dom0 as it is
    assert modes["builder/templates/dom0/usr/lib/xenlive/ready"] & 0o111
    assert "License-Expression: GPL-3.0-or-later" in metadata
    assert "Requires-Dist: pycdlib<2,>=1.22" in metadata


def test_installed_xenlive_works_from_any_directory(installed, tmp_path):
    exe, _wheel = installed
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shown = xenlive(exe, "show", "default", cwd=elsewhere)
    assert shown.returncode == 0, shown.stderr
    assert yaml.safe_load(shown.stdout)["name"] == "default"
    checked = xenlive(exe, "check", "xenoppix", "--json", cwd=elsewhere)
    assert checked.returncode == 0, checked.stderr
    assert json.loads(checked.stdout)["ok"] is True
    schema = xenlive(exe, "schema", cwd=elsewhere)
    assert schema.returncode == 0 and schema.stdout == (REPO / "builder/data/xenlive-profile.schema.json").read_text()
    listed = xenlive(exe, "profiles", "--json", cwd=elsewhere)
    assert [(e["name"], e["origin"], e["valid"]) for e in json.loads(listed.stdout)] == [
        ("bookworm", "built-in", True), ("default", "built-in", True), ("lab", "built-in", True),
        ("xenoppix", "built-in", True),
    ]  # fmt: skip
    made = xenlive(exe, "init", "appliance", cwd=elsewhere)
    assert made.returncode == 0, made.stderr
    again = xenlive(exe, "show", "appliance/profile.yaml", "--json", cwd=elsewhere)
    assert again.returncode == 0, again.stderr
    data = json.loads(again.stdout)
    assert data["name"] == "appliance" and [g["name"] for g in data["guests"]] == ["tiny", "appliance-1"]
