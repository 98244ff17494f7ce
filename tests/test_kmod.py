"""builder/kmod.py: the order busybox's insmod must follow, worked out from a kernel's module database."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import XenliveError
from builder.kmod import Load, load_order, module_name


def database(base: Path, dep: str, softdep: str = "", alias: str = "", builtin: str = "") -> Path:
    base.mkdir(parents=True)
    for name, text in (("modules.dep", dep), ("modules.softdep", softdep), ("modules.alias", alias),
                       ("modules.builtin", builtin)):  # fmt: skip
        if text:
            (base / name).write_text(text)
    return base


def test_module_names_are_the_kernels() -> None:
    assert module_name("kernel/drivers/block/xen-blkfront.ko.xz") == "xen_blkfront"
    assert module_name("crc32c-intel") == "crc32c_intel" and module_name("ext4.ko") == "ext4"


def test_dependencies_come_first_each_once(tmp_path: Path) -> None:
    base = database(tmp_path / "m", "kernel/a.ko: kernel/b.ko kernel/c.ko\nkernel/b.ko: kernel/c.ko\nkernel/c.ko:\n"
                                    "kernel/d-e.ko.zst: kernel/c.ko\nkernel/unused.ko:\n")  # fmt: skip
    assert load_order(base, ["a", "d-e"]) == [
        Load("c", "kernel/c.ko", True), Load("b", "kernel/b.ko", True), Load("a", "kernel/a.ko", True),
        Load("d_e", "kernel/d-e.ko.zst", True),
    ]  # fmt: skip


def test_soft_dependencies_through_aliases_are_loaded_first_and_never_required(tmp_path: Path) -> None:
    base = database(
        tmp_path / "m",
        "kernel/fs/ext4.ko: kernel/lib/crc16.ko\nkernel/lib/crc16.ko:\nkernel/crypto/crc32c_generic.ko:\n"
        "kernel/arch/crc32c-intel.ko:\nkernel/fs/jbd2.ko:\n",
        softdep="# comment\nsoftdep ext4 pre: crypto-crc32c jbd2 post: crc16\nsoftdep other pre: missing\n",
        alias="alias crypto-crc32c crc32c_intel\nalias crypto-crc32c crc32c_generic\nalias pci:v* crc16\n",
    )
    order = load_order(base, ("ext4",))
    assert [(m.name, m.required) for m in order] == [
        ("crc32c_intel", False), ("crc32c_generic", False), ("jbd2", False), ("crc16", True), ("ext4", True),
    ]  # fmt: skip


def test_a_module_both_soft_and_hard_is_required(tmp_path: Path) -> None:
    base = database(
        tmp_path / "m", "kernel/a.ko: kernel/c.ko\nkernel/b.ko:\nkernel/c.ko:\n", softdep="softdep b pre: c\n"
    )
    assert load_order(base, ["b", "a"]) == [
        Load("c", "kernel/c.ko", True), Load("b", "kernel/b.ko", True), Load("a", "kernel/a.ko", True),
    ]  # fmt: skip


def test_built_in_modules_need_no_loading(tmp_path: Path) -> None:
    base = database(tmp_path / "m", "kernel/a.ko: kernel/b.ko\nkernel/b.ko:\n", builtin="kernel/fs/ext4.ko\n")
    assert load_order(base, ["ext4", "a"]) == [Load("b", "kernel/b.ko", True), Load("a", "kernel/a.ko", True)]


def test_a_missing_required_module_or_database_is_a_clear_error(tmp_path: Path) -> None:
    base = database(tmp_path / "m", "kernel/a.ko: kernel/gone.ko\n")
    with pytest.raises(XenliveError, match=r"kernel module gone is neither in .*modules\.dep nor built in"):
        load_order(base, ["a"])
    with pytest.raises(XenliveError, match="modules.dep is missing"):
        load_order(tmp_path / "nothing", ["a"])


def test_a_hostile_database_reaches_no_file_outside_the_kernels_directory(tmp_path: Path) -> None:
    for bad in ("../../../etc/shadow.ko", "/etc/passwd.ko", "kernel/a.ko; rm -rf x", "kernel/../../b.ko"):
        base = database(tmp_path / str(abs(hash(bad))), f"kernel/a.ko: {bad}\nkernel/a.ko:\n")
        with pytest.raises(XenliveError, match="not a module's path under the kernel's"):
            load_order(base, ["a"])
    # a database that is a link (to a host file, or a device) is refused, not read
    host = tmp_path / "host-secret"
    host.write_text("kernel/a.ko:\n")
    base = tmp_path / "linked"
    base.mkdir()
    (base / "modules.dep").symlink_to(host)
    with pytest.raises(XenliveError, match="not a regular file"):
        load_order(base, ["a"])
