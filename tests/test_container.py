"""The container image's inputs (no container engine runs on these machines): its base, the package
list it shares with scripts/setup and .ci/run, its unprivileged user and that user's id ranges, and
the docker and podman command lines README.md gives for it."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest

from builder.context import cache_root
from builder.run import host_packages
from builder.userns import IDS_NEEDED, id_map, subordinate_ranges

from .conftest import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", "\n".join(line for line in DOCKERFILE.splitlines() if not line.startswith("#")))
    found = []
    for line in text.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def only(name: str) -> str:
    values = [rest for word, rest in instructions() if word == name]
    assert len(values) == 1, (name, values)
    return values[0]


def test_image_is_debian_trixie_and_installs_the_shared_package_list_with_the_setup_script():
    assert only("FROM") == "debian:trixie"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    assert "bash /usr/src/xenlive/scripts/setup --packages-only" in runs
    assert "/opt/xenlive/bin/pip install --no-cache-dir /usr/src/xenlive" in runs
    assert "scripts/setup" in (REPO / ".ci/run").read_text()


def test_setup_installs_exactly_the_listed_packages(tmp_path):
    """scripts/setup --packages-only with apt-get (and sudo) replaced by recorders."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("apt-get", "sudo"):
        script = bin_dir / tool
        script.write_text(f'#!/bin/sh\n[ "{tool}" = sudo ] && exec "$@"\necho "$*" >> {tmp_path}/apt.log\n')
        script.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(REPO / "scripts/setup"), "--packages-only"], capture_output=True, text=True,
                          env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    update, install = (tmp_path / "apt.log").read_text().splitlines()
    assert update == "update -q"
    words = install.split()
    assert words[:4] == ["install", "-y", "-q", "--no-install-recommends"]
    assert sorted(words[4:]) == sorted({*host_packages(), "python3", "python3-pip"})
    assert "uidmap" in words  # newuidmap and newgidmap, for building without root
    bad = subprocess.run(["bash", str(REPO / "scripts/setup"), "--what"], capture_output=True, text=True, env=env)
    assert bad.returncode == 2 and "usage: scripts/setup [--packages-only]" in bad.stderr


def test_image_runs_as_an_unprivileged_user_whose_ids_fit_a_rootless_engine():
    assert only("USER") == "xenlive"
    runs = " ".join(rest for word, rest in instructions() if word == "RUN")
    uid = int(re.search(r"useradd [^&]*--uid (\d+)[^&]* xenlive", runs)[1])  # type: ignore[index]
    assert uid != 0
    for name in ("subuid", "subgid"):
        lines = re.search(rf"printf '([^']*)' > /etc/{name}", runs)
        assert lines is not None, name
        text = lines[1].replace("\\n", "\n")
        extents = id_map(uid, subordinate_ranges(text, "xenlive", uid), name[3:], "xenlive")
        assert sum(e.count for e in extents) == IDS_NEEDED
        outside = {e.outside + i for e in extents for i in range(e.count)}
        assert max(outside) < 65536 and 0 not in outside  # what rootless podman gives; never the engine's root


def test_image_cache_volume_is_where_xenlive_keeps_its_cache():
    volume = only("VOLUME").strip('[]"')
    home = re.search(r"useradd [^&]*--create-home[^&]* (\w+)", DOCKERFILE.replace("\\\n", " "))
    assert home is not None
    env = {"HOME": f"/home/{home[1]}"}
    old = {k: os.environ.pop(k) for k in ("XDG_CACHE_HOME", "XENLIVE_CACHE_DIR", "HOME") if k in os.environ}
    try:
        os.environ.update(env)
        assert str(cache_root()) == volume
    finally:
        os.environ.pop("HOME")
        os.environ.update(old)
    assert only("ENTRYPOINT") == '["xenlive"]' and only("WORKDIR") == "/out"


def readme_container_commands() -> list[list[str]]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("\n## Containers\n", 1)[1].split("\n## ", 1)[0]
    commands = []
    for block in re.findall(r"```\n(.*?)```", section, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            if line.strip().startswith(("docker ", "podman ", "sudo podman ")):
                commands.append(shlex.split(line))
    return commands


def test_readme_gives_docker_and_podman_command_lines_that_match_the_image():
    commands = readme_container_commands()
    engines = {c[0] if c[0] != "sudo" else "sudo podman" for c in commands}
    assert {"docker", "podman"} <= engines
    volume = only("VOLUME").strip('[]"')
    runs = [c for c in commands if "run" in c]
    assert runs
    docker_runs = [c for c in runs if c[0] == "docker"]
    unprivileged = [c for c in docker_runs if "--privileged" not in c]
    assert unprivileged and all(
        {"seccomp=unconfined", "apparmor=unconfined"} <= {c[i + 1] for i, w in enumerate(c) if w == "--security-opt"}
        for c in unprivileged
    )
    assert any("--privileged" in c for c in docker_runs), "the fallback is documented"
    podman_runs = [c for c in runs if "podman" in c[:2]]
    assert any("--userns=keep-id:uid=1000,gid=1000" in c for c in podman_runs)
    for c in runs:
        mounts = [c[i + 1] for i, w in enumerate(c) if w == "-v"]
        assert any(m.endswith(f":{volume}") for m in mounts), c  # the cache is kept
        assert any(m.endswith(":/out") for m in mounts), c  # the ISO comes out
        image = c.index("xenlive")
        subcommand = c[image + 1]
        help_proc = subprocess.run([sys.executable, "-m", "builder", subcommand, "--help"], capture_output=True,
                                   text=True)  # fmt: skip
        assert help_proc.returncode == 0, (c, help_proc.stderr)


@pytest.mark.parametrize("ignored", [".venv/", ".git/", "*.iso", "xenlive-test/"])
def test_docker_context_leaves_out_local_state(ignored):
    assert ignored in (REPO / ".dockerignore").read_text().split()
