"""Building without root: the id maps xenlive asks for, and what happens without the setup for them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from builder import userns
from builder.errors import UsageError
from builder.userns import Extent, id_map, in_initial_namespace, subordinate_ranges

from .conftest import REPO

SUBUID = """\
# comment lines and other users are ignored
alice:100000:65536
xenlive:1:999
1000:500000:10
xenlive:1001:64535
broken:line
xenlive:x:5
"""


def test_subordinate_ranges_by_name_or_id_in_file_order():
    assert subordinate_ranges(SUBUID, "xenlive", 1000) == [(1, 999), (500000, 10), (1001, 64535)]
    assert subordinate_ranges(SUBUID, "alice", 1001) == [(100000, 65536)]
    assert subordinate_ranges("", "bob", 1002) == []


def test_the_usual_single_range_maps_the_user_to_root_and_the_rest_above():
    assert id_map(1000, [(100000, 65536)], "uid", "alice") == [Extent(0, 1000, 1), Extent(1, 100000, 65534)]


def test_a_container_image_maps_the_ids_around_its_users_own():
    """The image's layout: 65536 ids are all a rootless engine gives, and the user's own is among them."""
    extents = id_map(1000, [(1, 999), (1001, 64535)], "uid", "xenlive")
    assert extents == [Extent(0, 1000, 1), Extent(1, 1, 999), Extent(1000, 1001, 64535)]
    assert sum(e.count for e in extents) == userns.IDS_NEEDED


def test_the_users_own_id_inside_a_range_is_not_mapped_twice():
    extents = id_map(1000, [(0, 70000)], "gid", "x")
    assert extents == [Extent(0, 1000, 1), Extent(1, 0, 1000), Extent(1001, 1001, 64534)]
    outside = [e.outside + i for e in extents for i in range(e.count)]
    assert len(outside) == len(set(outside)) == userns.IDS_NEEDED


def test_too_few_subordinate_ids_is_a_setup_error_with_the_fix():
    with pytest.raises(UsageError) as info:
        id_map(1000, [(100000, 1000)], "uid", "carol")
    assert info.value.message == "building as carol needs 65534 subordinate uid ids, found 1000 in /etc/subuid"
    assert info.value.hint is not None and "usermod --add-subuids 100000-165535" in info.value.hint
    assert info.value.exit_code == 2


def test_initial_namespace_is_told_from_the_uid_map(tmp_path):
    full = tmp_path / "full"
    full.write_text("         0          0 4294967295\n")
    mapped = tmp_path / "mapped"
    mapped.write_text("         0       1000          1\n         1     100000      65534\n")
    assert in_initial_namespace(full) and not in_initial_namespace(mapped)
    assert not in_initial_namespace(tmp_path / "missing")


MODE = "from builder.mmdebstrap import mode; print(mode())"


@pytest.mark.skipif(os.geteuid() != 0 or not in_initial_namespace(), reason="needs root on the machine itself")
def test_mmdebstrap_uses_root_mode_on_the_machine_and_unshare_mode_in_a_user_namespace():
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    here = subprocess.run([sys.executable, "-c", MODE], capture_output=True, text=True, env=env, check=True)
    assert here.stdout == "root\n"
    inside = subprocess.run(["unshare", "--user", "--map-root-user", "--", sys.executable, "-c", MODE],
                            capture_output=True, text=True, env=env, check=True)  # fmt: skip
    assert inside.stdout == "unshare\n"  # root there, but not over the machine's ids


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("setpriv") is None, reason="needs root to become nobody")
def test_a_user_without_subordinate_ids_is_told_how_to_build(tmp_path):
    """nobody has no /etc/subuid line: the build stops at once, with the fix, before anything is made."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "XENLIVE_CACHE_DIR": str(tmp_path / "c")}
    os.chmod(tmp_path, 0o777)
    proc = subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                           sys.executable, "-m", "builder", "build", "-o", str(tmp_path / "x.iso")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    if shutil.which("newuidmap"):
        assert "error: building as nobody needs 65534 subordinate uid ids, found 0 in /etc/subuid" in proc.stderr
        assert "hint: as root, give the user subordinate ids: usermod --add-subuids" in proc.stderr
    else:
        assert "error: building as nobody (not root): missing host tools: newuidmap, newgidmap" in proc.stderr
        assert "apt-get install uidmap" in proc.stderr
    assert not (tmp_path / "c").exists()


KEY = """
from pathlib import Path
from builder.context import BuildContext
from builder.profile import load_profile
from builder.stages.rootfs import rootfs_key
print(rootfs_key(BuildContext(profile=load_profile("default"), output=Path("x.iso"), workdir=Path("w"),
                              cache_dir=Path("c"))))
"""


@pytest.mark.skipif(os.geteuid() != 0 or not in_initial_namespace(), reason="needs root on the machine itself")
def test_a_dom0_made_in_unshare_mode_is_cached_apart_from_one_made_as_root():
    """Unshare mode leaves /dev without device nodes: the same inputs must not share a cache entry."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    here = subprocess.run([sys.executable, "-c", KEY], capture_output=True, text=True, env=env, check=True).stdout
    inside = subprocess.run(["unshare", "--user", "--map-root-user", "--", sys.executable, "-c", KEY],
                            capture_output=True, text=True, env=env, check=True).stdout  # fmt: skip
    assert here.strip() and inside.strip() and here != inside
