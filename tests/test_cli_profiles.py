"""The profile commands: show, schema, init, profiles (run as a user would, in a subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from builder.schema import SCHEMA_FILE

from .conftest import REPO


def xenlive(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, cwd=cwd or REPO)


@pytest.mark.parametrize("name", ["default", "xenoppix", "lab"])
def test_show_resolves_every_shipped_profile(name):
    proc = xenlive("show", name)
    assert proc.returncode == 0, proc.stderr
    data = yaml.safe_load(proc.stdout)
    assert data["name"] == name and "extends" not in data
    assert str(REPO) not in proc.stdout  # paths stay relative: output does not depend on the checkout's place


def test_show_keeps_japanese_text_readable():
    assert "Xen を CD 一枚で" in xenlive("show", "xenoppix").stdout


def test_show_bad_profile_prints_nothing_on_stdout_and_exits_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ndom0:\n  users:\n    - {name: root, password: hunter2}\n")
    proc = xenlive("show", str(bad))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith(f"error: {bad}:4:30: dom0.users[0].password: a plain-text password is refused")
    assert "Traceback" not in proc.stderr


def test_schema_prints_the_shipped_file():
    proc = xenlive("schema")
    assert proc.returncode == 0
    assert proc.stdout == SCHEMA_FILE.read_text()
    assert json.loads(proc.stdout)["title"] == "xenlive profile"


def test_init_scaffolds_a_valid_profile_and_refuses_to_overwrite(tmp_path):
    target = tmp_path / "my appliance"
    proc = xenlive("init", str(target), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (target / "profile.yaml").is_file() and (target / "overlay/etc/motd.j2").is_file()
    assert (target / "overlay/usr/local/bin/appliance-info").stat().st_mode & 0o111
    shown = yaml.safe_load(xenlive("show", str(target / "profile.yaml"), cwd=tmp_path).stdout)
    assert shown["name"] == "my-appliance"
    assert [g["name"] for g in shown["guests"]] == ["tiny", "my-appliance-1"]
    before = (target / "profile.yaml").read_text()
    again = xenlive("init", str(target), cwd=tmp_path)
    assert again.returncode == 2 and "already exists" in again.stderr
    assert (target / "profile.yaml").read_text() == before


def test_init_refuses_a_bad_name(tmp_path):
    proc = xenlive("init", str(tmp_path / "x"), "--name", "bad name")
    assert proc.returncode == 2 and "is not valid" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_profiles_lists_local_and_builtin_with_descriptions(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/mine.yaml").write_text("name: mine\ndescription: my own\nextends: default\n")
    (tmp_path / "profiles/broken.yaml").write_text("name: [\n")
    proc = xenlive("profiles", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["broken", "local", "INVALID:", "profiles/broken.yaml:2:1:", "YAML", "syntax", "error:",
                                "expected", "the", "node", "content,", "but", "found", "'<stream", "end>'"]  # fmt: skip
    assert lines[1].split(maxsplit=2) == ["mine", "local", "my own"]
    builtin = {line.split()[0]: line.split()[1] for line in lines[2:]}
    assert builtin == {"bookworm": "built-in", "default": "built-in", "lab": "built-in", "xenoppix": "built-in"}


def test_a_local_profile_hides_the_built_in_one_of_its_name_and_is_listed_once(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/default.yaml").write_text("name: mydefault\ndescription: ours\nextends: default\n")
    proc = xenlive("profiles", "--json", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    entries = json.loads(proc.stdout)
    assert [(e["name"], e["origin"]) for e in entries] == [
        ("default", "local"), ("bookworm", "built-in"), ("lab", "built-in"), ("xenoppix", "built-in")
    ]  # fmt: skip
    assert entries[0] == {"name": "default", "origin": "local", "description": "ours",
                          "path": "profiles/default.yaml", "valid": True}  # fmt: skip
    # the name finds what the list shows; its `extends: default` still finds the built-in parent
    shown = yaml.safe_load(xenlive("show", "default", cwd=tmp_path).stdout)
    assert shown["name"] == "mydefault" and shown["guests"][0]["name"] == "tiny"


def test_show_json_is_the_same_data_as_the_yaml():
    as_yaml = yaml.safe_load(xenlive("show", "lab").stdout)
    proc = xenlive("show", "lab", "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == as_yaml


def test_var_sets_profile_vars_from_the_command_line():
    data = json.loads(xenlive("show", "default", "--json", "--var", "site=Tsukuba", "--var", "empty=").stdout)
    assert data["vars"]["site"] == "Tsukuba" and data["vars"]["empty"] == ""
    bad = xenlive("show", "default", "--var", "no-equals-sign")
    assert bad.returncode == 2 and "expected KEY=VALUE with KEY like site_name, got 'no-equals-sign'" in bad.stderr
    assert xenlive("build", "default", "--var", "9lives=x").returncode == 2


def test_var_reaches_the_templates(tmp_path):
    (tmp_path / "overlay/etc").mkdir(parents=True)
    (tmp_path / "overlay/etc/site.j2").write_text("{{ vars.site }}\n")
    (tmp_path / "p.yaml").write_text("name: p\nvars:\n  site: default\ndom0:\n  overlays: [overlay]\n")
    from builder.profile import load_profile, template_context
    from builder.templating import render_file

    profile = load_profile(tmp_path / "p.yaml", variables={"site": "Tsukuba"})
    assert render_file(tmp_path / "overlay/etc/site.j2", tmp_path / "overlay", **template_context(profile)) == (
        "Tsukuba\n"
    )


def test_check_list_json_names_every_check_and_target():
    proc = xenlive("check", "--list", "--json")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    ids = {c["id"] for c in data["checks"]}
    assert {"memory-budget", "image-fits-medium"} <= ids
    keys = {"id", "scope", "severity", "needs_build", "skippable", "title", "why"}
    assert all(set(c) == keys for c in data["checks"])
    assert {"qemu-bios", "thinkpad-t60-core-duo"} <= {t["name"] for t in data["targets"]}


def _complete(words: str, cwd: Path) -> list[str]:
    import os

    env = {**os.environ, "_XENLIVE_COMPLETE": "bash_complete", "COMP_WORDS": words,
           "COMP_CWORD": str(len(words.split(" ")) - 1)}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "builder"], capture_output=True, text=True, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.splitlines()


def test_shell_completion_offers_profile_and_target_names(tmp_path):
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/mine.yaml").write_text("name: mine\n")
    assert _complete("xenlive build ", tmp_path) == [
        "plain,bookworm", "plain,default", "plain,lab", "plain,mine", "plain,xenoppix", "file,"
    ]  # fmt: skip
    assert _complete("xenlive test x", tmp_path) == ["plain,xenoppix", "file,x"]
    targets = _complete("xenlive check default --target thinkpad-t", tmp_path)
    assert targets == ["plain,thinkpad-t400", "plain,thinkpad-t480", "plain,thinkpad-t60-core-duo", "file,thinkpad-t"]
    assert _complete("xenlive check --target reports/m", tmp_path) == ["file,reports/m"]  # a machine report
    assert "plain,all" in _complete("xenlive check --target ", tmp_path)


def test_completion_scripts_named_in_the_readme_are_printed():
    import os

    for shell in ("bash", "zsh", "fish"):
        assert f"_XENLIVE_COMPLETE={shell}_source xenlive" in (REPO / "README.md").read_text()
        env = {**os.environ, "_XENLIVE_COMPLETE": f"{shell}_source"}
        proc = subprocess.run([sys.executable, "-m", "builder"], capture_output=True, text=True, env=env)
        assert proc.returncode == 0 and "_XENLIVE_COMPLETE" in proc.stdout, (shell, proc.stderr)
