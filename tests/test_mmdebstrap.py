"""builder/mmdebstrap.py: one command line for dom0 and guests, and apt's early failures as profile errors."""

from __future__ import annotations

from pathlib import Path

from builder.errors import CommandError
from builder.mmdebstrap import explain, mmdebstrap_command


def test_positional_arguments_come_after_a_double_dash() -> None:
    cmd = mmdebstrap_command(
        suite="trixie", mirror="http://deb.debian.org/debian", target=Path("/t"), packages=["a", "b"],
        dpkg_options=["path-exclude=/x"], options=["--format=tar"],
    )  # fmt: skip
    assert cmd[:2] == ["mmdebstrap", "--variant=minbase"]
    assert "--include=a,b" in cmd and "--dpkgopt=path-exclude=/x" in cmd and "--format=tar" in cmd
    assert cmd[-4:] == ["--", "trixie", "/t", "http://deb.debian.org/debian"]


def fail(tail: str) -> CommandError:
    return CommandError(["mmdebstrap"], 25, tail)


def test_unknown_suite_and_missing_packages_are_profile_errors() -> None:
    apt_no_suite = "E: The repository 'http://m/debian nosuch Release' does not have a Release file.\n"
    e = explain(fail(apt_no_suite), suite="nosuch", mirror="http://m/debian", where="p.yaml:3:10", key="dom0.suite")
    assert e is not None and e.exit_code == 2
    assert e.problems == ["p.yaml:3:10: dom0.suite: suite 'nosuch' is not on the mirror http://m/debian"]
    no_xen = "E: Unable to locate package xen-system-amd64\nE: Unable to locate package live-boot\n"
    e = explain(fail(no_xen), suite="buster", mirror="http://m/debian", where="p.yaml:3:10", key="dom0.suite")
    assert e is not None
    assert e.problems == ["p.yaml:3:10: dom0.suite: suite 'buster' on http://m/debian has no package live-boot,"
                          " xen-system-amd64"]  # fmt: skip


def test_other_failures_stay_failures_of_the_work() -> None:
    assert explain(fail("E: dpkg was interrupted\n"), suite="trixie", mirror="m", where="w", key="k") is None
