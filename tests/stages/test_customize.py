from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from builder.context import BuildContext
from builder.errors import TemplateError
from builder.profile import load_profile
from builder.stages.customize import apply_overlay, customize


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    return BuildContext(profile=load_profile(None), output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path)


def test_customize_writes_services_and_default_overlay(ctx):
    customize(ctx)
    top = ctx.top
    assert (top / "etc/hostname").read_text() == "xenlive\n"
    assert 'GUESTS="tiny"' in (top / "etc/xenlive/ready.conf").read_text()
    assert 'XENDOMAINS_SAVE=""' in (top / "etc/default/xendomains").read_text()
    ready = top / "usr/lib/xenlive/ready"
    assert ready.stat().st_mode & stat.S_IXUSR
    assert (top / "etc/systemd/system/multi-user.target.wants/xenlive-ready.service").exists()
    assert "Autostarted: tiny" in (top / "etc/motd").read_text()
    assert not list(top.rglob("*.j2"))


def test_overlay_keeps_modes_links_and_renders_templates(tmp_path):
    src = tmp_path / "ov"
    (src / "usr/bin").mkdir(parents=True)
    (src / "usr/bin/tool").write_text("#!/bin/sh\n")
    os.chmod(src / "usr/bin/tool", 0o750)
    (src / "greeting.j2").write_text("hello {{ who }}\n")
    (src / "link").symlink_to("/etc/hostname")
    dest = tmp_path / "dest"
    apply_overlay(src, dest, {"who": "world"})
    assert stat.S_IMODE((dest / "usr/bin/tool").stat().st_mode) == 0o750
    assert (dest / "greeting").read_text() == "hello world\n"
    assert os.readlink(dest / "link") == "/etc/hostname"


def test_overlay_template_error_names_file_and_line(tmp_path):
    src = tmp_path / "ov"
    src.mkdir()
    (src / "bad.j2").write_text("line one\n{{ missing_variable }}\n")
    with pytest.raises(TemplateError, match=r"bad.j2:2: 'missing_variable' is undefined"):
        apply_overlay(src, tmp_path / "dest", {})


def test_units_with_install_section_are_enabled(ctx):
    customize(ctx)
    link = ctx.top / "etc/systemd/system/multi-user.target.wants/xenlive-ready.service"
    assert link.is_symlink() and os.readlink(link) == "../xenlive-ready.service"
