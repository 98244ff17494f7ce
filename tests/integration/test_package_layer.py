"""dom0's extra packages as a layer of their own (builder/stages/pkglayer.py), built and booted for real.

A profile extending `default` with one package builds over the cached base; a second package makes
only a new layer (the base entry is reused, not rebuilt); the image with the layer boots once, in
QEMU, to XENLIVE-READY, and dpkg in the live dom0 knows the package. One boot: the integration run
has a time budget.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from .test_default_iso import EPOCH, xenlive

BOOT_TIMEOUT = 1500  # the default dom0 is Debian 13's, which boots slower under TCG (README, "Debian 13")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(os.geteuid() != 0, reason="building dom0 with mmdebstrap needs root here"),
]


def profile(tmp_path: Path, name: str, packages: list[str]) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(f"name: {name}\nextends: default\ndom0:\n  packages: [{', '.join(packages)}]\n")
    return path


def build(tmp_path: Path, spec: Path) -> tuple[Path, dict[str, object], str]:
    iso = tmp_path / f"{spec.stem}.iso"
    proc = xenlive("-v", "build", str(spec), "-o", str(iso), "--json", SOURCE_DATE_EPOCH=EPOCH)
    return iso, json.loads(proc.stdout), proc.stderr


def test_extra_packages_build_a_layer_over_the_cached_base_and_boot(tmp_path: Path) -> None:
    one, first, _ = build(tmp_path, profile(tmp_path, "onepkg", ["tree"]))
    manifest = json.loads(one.with_name(one.name + ".manifest.json").read_text())
    assert "tree" in manifest["dom0_packages"], sorted(manifest["dom0_packages"])
    assert {"live/10-base.squashfs", "live/15-packages.squashfs", "live/20-custom.squashfs"} <= set(manifest["files"])
    base_hits = first["cache_hits"]
    assert isinstance(base_hits, dict) and "rootfs" in base_hits and "packages" in base_hits

    two, second, log = build(tmp_path, profile(tmp_path, "twopkg", ["tree", "htop"]))
    hits = second["cache_hits"]
    assert isinstance(hits, dict) and hits["rootfs"] is True, hits  # the same base entry, reused
    assert "reusing cached dom0 base" in log
    manifest = json.loads(two.with_name(two.name + ".manifest.json").read_text())
    assert {"tree", "htop"} <= set(manifest["dom0_packages"])

    commands = ["--exec", "dpkg -s htop", "--exec", "command -v tree"]
    boot = xenlive("test", str(two), "--timeout", str(BOOT_TIMEOUT), "--json", "--report-dir",
                   str(tmp_path / "report"), *commands, check=False)  # fmt: skip
    result = json.loads(boot.stdout)
    assert boot.returncode == 0 and result["passed"], boot.stderr
    assert result["ready"]["guests"]["tiny"]["state"] == "running", result
    dpkg, tree = result["commands"]
    assert dpkg["exit"] == 0 and any(line == "Status: install ok installed" for line in dpkg["output"]), dpkg
    assert tree["exit"] == 0 and tree["output"][-1].endswith("/tree"), tree
    print(f"two-package layer, bios/cdrom: READY after {result['seconds']} s")
