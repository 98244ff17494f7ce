from __future__ import annotations

import pytest

from builder import run as run_mod
from builder.errors import CommandError, MissingToolError
from builder.run import host_packages, host_tools, require_tools, run

from .conftest import REPO


def test_host_tool_table_names_packages():
    tools = {t.name: t.package for t in host_tools()}
    assert tools["mksquashfs"] == "squashfs-tools"
    assert tools["mmdebstrap"] == "mmdebstrap"
    assert "python3-venv" in host_packages()


def test_host_tool_table_names_each_tool_once():
    names = [t.name for t in host_tools()]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []


def test_missing_tool_names_tool_and_package(monkeypatch):
    monkeypatch.setattr(run_mod.shutil, "which", lambda name: None)
    with pytest.raises(MissingToolError) as info:
        require_tools(["mksquashfs", "mmdebstrap"])
    assert info.value.message == "missing host tools: mksquashfs, mmdebstrap"
    assert info.value.hint == "install them with: apt-get install mmdebstrap squashfs-tools"
    assert info.value.exit_code == 2


def test_run_failure_carries_stderr_tail():
    with pytest.raises(CommandError) as info:
        run(["sh", "-c", "echo bad thing >&2; exit 3"])
    assert "exited with status 3" in info.value.message and "bad thing" in info.value.message


def test_run_missing_program():
    with pytest.raises(CommandError, match="not found"):
        run(["no-such-program-xenlive"])


def test_setup_ci_and_dockerfile_share_the_host_package_list():
    setup = (REPO / "scripts/setup").read_text()
    assert "builder/data/host-tools.txt" in setup
    assert "scripts/setup" in (REPO / "Dockerfile").read_text()
    ci = (REPO / ".ci/run").read_text()
    assert "scripts/setup" in ci and "scripts/test" in ci
    readme = (REPO / "README.md").read_text()
    assert "bash scripts/test" in readme and "bash scripts/setup" in readme


def test_docker_context_leaves_out_the_local_venv_and_images():
    ignored = (REPO / ".dockerignore").read_text().split()
    assert ".venv/" in ignored and "*.iso" in ignored


def test_read_output_returns_bytes_and_refuses_too_many():
    from builder.run import read_output

    assert read_output(["printf", "\\000\\377ok"], limit=4) == b"\0\xffok"
    with pytest.raises(CommandError, match="more than 1000 bytes of output; stopped"):
        read_output(["head", "-c", "5000000", "/dev/zero"], limit=1000)
    with pytest.raises(CommandError) as info:
        read_output(["sh", "-c", "echo half; echo why >&2; exit 4"], limit=100)
    assert "exited with status 4" in info.value.message and "why" in info.value.message
    with pytest.raises(CommandError, match="not found"):
        read_output(["no-such-program-xenlive"], limit=10)
