"""docs/ci.md's GitHub Actions workflow: it parses, its matrix names real profiles, it carries the
cache and publishes the JUnit files it writes, and every xenlive command in it is one that
`xenlive ... --help` knows, with options the command has."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from functools import cache
from typing import Any

import yaml

from .conftest import REPO

DOC = REPO / "docs/ci.md"


def workflow() -> dict[str, Any]:
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) == 1, "docs/ci.md holds one workflow"
    data = yaml.safe_load(blocks[0])
    assert isinstance(data, dict)
    return data


def steps(job: str) -> list[dict[str, Any]]:
    return list(workflow()["jobs"][job]["steps"])


def run_lines(job: str, profile: str) -> list[list[str]]:
    """Each shell command of the job's `run:` steps, with the matrix expression filled in."""
    commands = []
    for step in steps(job):
        script = step.get("run", "")
        script = script.replace("${{ matrix.profile }}", profile).replace("${{ github.run_id }}", "12345")
        assert "${{" not in script, script
        for line in script.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            if words:
                commands.append(words[: words.index(">")] if ">" in words else words)
    return commands


@cache
def help_text(*command: str) -> str:
    proc = subprocess.run([sys.executable, "-m", "builder", *command, "--help"], capture_output=True, text=True)
    assert proc.returncode == 0, (command, proc.stderr)
    return proc.stdout


def subcommand(words: list[str]) -> tuple[str, ...]:
    """`cache prune` is a command of a group; the rest are one word."""
    return tuple(words[1:3]) if words[1] == "cache" else (words[1],)


def test_the_matrix_builds_several_real_profiles():
    matrix = workflow()["jobs"]["image"]["strategy"]["matrix"]["profile"]
    assert len(matrix) >= 2
    listed = subprocess.run([sys.executable, "-m", "builder", "profiles", "--json"], capture_output=True,
                            text=True, cwd=REPO)  # fmt: skip
    names = {entry["name"] for entry in json.loads(listed.stdout)}
    assert set(matrix) <= names


def test_every_xenlive_command_and_option_is_known_to_xenlive():
    seen = set()
    for profile in workflow()["jobs"]["image"]["strategy"]["matrix"]["profile"]:
        for words in run_lines("image", profile):
            if words[0] != "xenlive":
                continue
            command = subcommand(words)
            seen.add(command)
            text = help_text(*command)
            for word in words[1 + len(command) :]:
                if word.startswith("-"):
                    option = word.split("=", 1)[0]
                    assert re.search(rf"(^|[\s,]){re.escape(option)}([\s,=]|$)", text, re.M), (command, option)
    assert {("check",), ("build",), ("verify",), ("test",), ("cache", "prune")} <= seen


def test_the_cache_step_keeps_the_directory_xenlive_uses():
    job = workflow()["jobs"]["image"]
    cached = [s for s in job["steps"] if str(s.get("uses", "")).startswith("actions/cache@")]
    assert len(cached) == 1
    assert cached[0]["with"]["path"] == job["env"]["XENLIVE_CACHE_DIR"]
    assert "matrix.profile" in cached[0]["with"]["key"] and cached[0]["with"]["restore-keys"]
    order = [s.get("name", s.get("uses")) for s in job["steps"]]
    assert order.index("Restore xenlive's cache") < order.index("Build")


def test_the_junit_files_the_boot_test_writes_are_published():
    tests = [w for w in run_lines("image", "default") if w[:2] == ["xenlive", "test"]]
    assert len(tests) == 1
    junit = tests[0][tests[0].index("--junit") + 1]
    uploaded = next(s for s in steps("image") if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert junit.split("/")[0] + "/" in uploaded["with"]["path"].split()
    assert uploaded.get("if") == "always()"  # a failed boot is the report most worth having
    publish = next(s for s in steps("junit") if "publish-unit-test-result-action" in str(s.get("uses", "")))
    pattern = publish["with"]["files"]
    assert re.fullmatch(pattern.replace("**/", "(.*/)?").replace("*", "[^/]*"), f"reports/report-default/{junit}")
    assert workflow()["jobs"]["junit"]["if"] == "always()"


def test_the_setup_commands_exist():
    lines = run_lines("image", "default")
    assert ["bash", "scripts/setup", "--packages-only"] in lines
    assert (REPO / "scripts/setup").is_file() and "--packages-only" in (REPO / "scripts/setup").read_text()
