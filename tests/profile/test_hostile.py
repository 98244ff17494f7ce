"""Profiles from strangers (issue 11): each hostile input is refused with exit 2 and file:line:col: key,
or is harmless by design. None ends in a traceback or touches the host."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from builder.errors import ProfileError
from builder.profile import load_profile

from ..conftest import REPO


def refused(tmp_path: Path, text: str) -> str:
    (tmp_path / "p.yaml").write_text(text)
    with pytest.raises(ProfileError) as info:
        load_profile(tmp_path / "p.yaml")
    return "\n".join(info.value.problems).replace(str(tmp_path) + "/", "")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dom0:\n  suite: --customize-hook=touch /pwned\n", "p.yaml:3:10: dom0.suite: '--customize-hook"),
        ("dom0:\n  mirror: deb [trusted=yes] http://evil/ bookworm main\n", "p.yaml:3:11: dom0.mirror: 'deb [trusted"),
        ("dom0:\n  mirror: --setup-hook=id\n", "p.yaml:3:11: dom0.mirror:"),
        ("guests:\n  - name: g\n    kind: debian\n    debian: {suite: -v}\n", "guests[0].debian.suite: '-v'"),
        ('xen:\n  cmdline: "a\\n}\\nmenuentry evil {"\n', "p.yaml:3:12: xen.cmdline:"),
        ('dom0:\n  cmdline: "quiet --- /boot/evil.gz"\n', "p.yaml:3:12: dom0.cmdline:"),
        ("guests:\n  - name: g\n    cmdline: 'x\" kernel = \"/etc/shadow'\n", "guests[0].cmdline:"),
        ("media:\n  publisher: Ünïcödé\n", "p.yaml:3:14: media.publisher:"),
        (f"media:\n  publisher: {'x' * 200}\n", "media.publisher:"),
        ('dom0:\n  users:\n    - name: "bob\\n"\n', "dom0.users[0].name: 'bob\\n' is not valid"),
        ('dom0:\n  hostname: "host\\n"\n', "dom0.hostname: 'host\\n' is not valid"),
        (
            "guests:\n  - name: g\n    kind: image\n    kernel: /boot/vmlinuz\n",
            "guests[0].kernel: expected a path relative",
        ),
        (
            "guests:\n  - name: g\n    kind: image\n    kernel: ../../../../../../etc/shadow\n",
            "climbs out of the profile",
        ),
        ("dom0:\n  overlays: [../../../../../etc]\n", "dom0.overlays[0]: '../../../../../etc' climbs out"),
        ("vars:\n  when: 2024-13-45\n", "p.yaml:3:9: vars.when: cannot read this value"),
        (f"guests:\n  - name: g\n    vcpus: {'9' * 5000}\n", "guests[0].vcpus: cannot read this value"),
        ("guests:\n  - name: g\n    memory: 100000000000000000000000000\n", "guests[0].memory: expected at most"),
        ("guests:\n  - name: g\n    memory: 99999999999999T\n", "guests[0].memory: expected a size"),
        ("guests:\n  - name: g\n    ready: 'up\\d+'\n", "guests[0].ready: 'up\\\\d+' is not valid"),
        ("guests:\n  - name: g\n    ready: '(?=x)'\n", "guests[0].ready:"),
        ("vars:\n  deep: " + "[" * 5000 + "]" * 5000 + "\n", "p.yaml"),
    ],
)
def test_hostile_values_are_refused_with_their_place(tmp_path: Path, text: str, expected: str) -> None:
    assert expected in refused(tmp_path, "name: p\n" + text)


def test_fifo_and_devices_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "p.yaml"
    os.mkfifo(fifo)
    done: list[str] = []

    def load() -> None:
        with pytest.raises(ProfileError) as info:
            load_profile(fifo)
        done.append(info.value.problems[0])

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(5)
    assert done and "is not a regular file" in done[0]
    with pytest.raises(ProfileError, match="is not a regular file"):
        load_profile("/dev/zero")


def test_each_parent_is_read_once(tmp_path: Path) -> None:
    """16 files, each extending the one before twice: 2**16 reads before, 16 now."""
    (tmp_path / "p0.yaml").write_text("name: p0\n")
    for i in range(1, 16):
        (tmp_path / f"p{i}.yaml").write_text(f"name: p{i}\nextends: [p{i - 1}.yaml, p{i - 1}.yaml]\n")
    start = time.monotonic()
    assert load_profile(tmp_path / "p15.yaml").name == "p15"
    assert time.monotonic() - start < 5


def test_inherited_guest_files_are_rebased(tmp_path: Path) -> None:
    (tmp_path / "base/k").mkdir(parents=True)
    (tmp_path / "base/k/vmlinuz").write_bytes(b"kernel")
    (tmp_path / "base/parent.yaml").write_text("name: parent\nguests:\n  - name: g\n    kernel: k/vmlinuz\n")
    (tmp_path / "child.yaml").write_text("name: child\nextends: base/parent.yaml\n")
    profile = load_profile(tmp_path / "child.yaml")
    assert profile.guests[0].kernel == Path("base/k/vmlinuz")


def test_show_never_prints_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "p.yaml").write_text("name: p\nvars:\n  x: " + "[" * 3000 + "]" * 3000 + "\n")
    proc = subprocess.run([sys.executable, "-m", "builder", "show", str(tmp_path / "p.yaml")],
                          capture_output=True, text=True, cwd=REPO)  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
