"""Reading an initramfs as the kernel and Xen's domain builder see it (builder/initrd.py).

The archives are made here with builder/cpio.py and the stdlib compressors, in the layouts real
initrds have: one gzip archive (xenlive's busybox guests), a plain early archive before a compressed
one (Debian's microcode + zstd), zero padding between archives, hard links.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import shutil
import stat
from pathlib import Path

import pytest

from builder import cpio, initrd
from builder.initrd import PAGE, InitrdError, read_initrd, read_initrd_bytes

BUSYBOX = b"\x7fELF" + b"\0" * 5000


def busybox_like(init: bytes = b"#!/bin/busybox sh\necho hi\n", init_mode: int = 0o755) -> list[cpio.Entry]:
    return [
        cpio.directory("bin"),
        cpio.regular("bin/busybox", BUSYBOX, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.directory("dev"),
        cpio.chardev("dev/console", 5, 1),
        cpio.regular("init", init, init_mode),
    ]


def test_gzip_archive_is_inflated_by_the_domain_builder_and_unpacked_by_the_kernel() -> None:
    archive = cpio.archive(busybox_like())
    data = gzip.compress(archive, mtime=0)
    facts = read_initrd_bytes(data, "t")
    assert facts.file_bytes == len(data)
    assert facts.loaded_bytes == len(archive) + 16  # libxenguest: the gzip trailer's size, plus 16
    assert facts.unpacked_bytes == 2 * PAGE + PAGE  # busybox in two pages, init in one
    assert facts.inodes == 6 and facts.compressions == ("gzip",) and facts.problem == ""
    assert facts.init_problem() is None


def test_plain_archive_is_loaded_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "initrd"
    path.write_bytes(cpio.archive(busybox_like()))
    facts = read_initrd(path)
    assert facts.loaded_bytes == path.stat().st_size and facts.compressions == ("none",)
    assert facts.unpacked_bytes == 3 * PAGE


@pytest.mark.parametrize(
    ("compress", "name"),
    [
        (lambda d: lzma.compress(d, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32), "xz"),
        (lambda d: lzma.compress(d, format=lzma.FORMAT_ALONE), "lzma"),
        (bz2.compress, "bzip2"),
    ],
)
def test_early_plain_archive_then_a_compressed_one(compress, name: str) -> None:  # type: ignore[no-untyped-def]
    """Debian's layout: an uncompressed early archive (microcode), then the compressed main one,
    whose /init replaces nothing but whose files add up; zero padding between them is skipped."""
    early = cpio.archive([cpio.directory("kernel"), cpio.regular("kernel/ucode.bin", b"u" * 9000)])
    main = compress(cpio.archive(busybox_like()))
    facts = read_initrd_bytes(early + b"\0" * 512 + main, "t")
    assert facts.compressions == ("none", name)
    assert facts.loaded_bytes == len(early) + 512 + len(main)  # not a gzip file: loaded as it is
    assert facts.unpacked_bytes == 3 * PAGE + 3 * PAGE
    assert "kernel/ucode.bin" in facts.members and facts.init_problem() is None


def test_a_later_entry_replaces_an_earlier_one() -> None:
    first = cpio.archive([cpio.regular("init", b"x" * 20000, 0o755)])
    second = gzip.compress(cpio.archive(busybox_like()), mtime=0)
    facts = read_initrd_bytes(first + second, "t")
    assert facts.members["init"].size < 100
    assert facts.unpacked_bytes == 3 * PAGE  # the replaced 20000 bytes are freed


def test_hard_links_share_one_copy_of_the_data() -> None:
    """newc writes a hard-linked file's data with one of its names only; all names have it, once."""
    entries = [(b"bin/sh", 0), (b"bin/busybox", len(BUSYBOX))]
    raw = bytearray()
    for ino_name, size in entries:
        name = ino_name + b"\0"
        fields = [7, stat.S_IFREG | 0o755, 0, 0, 2, 0, size, 0, 1, 0, 0, len(name), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        raw += header + name + b"\0" * (-(len(header) + len(name)) % 4)
        raw += (BUSYBOX if size else b"") + b"\0" * (-size % 4)
    raw += cpio.archive([cpio.regular("init", b"#!/bin/sh\n", 0o755)])
    facts = read_initrd_bytes(bytes(raw), "t")
    assert facts.members["bin/sh"].size == len(BUSYBOX) and facts.members["bin/sh"].head.startswith(b"\x7fELF")
    assert facts.unpacked_bytes == 2 * PAGE + PAGE
    assert facts.init_problem() is None  # #!/bin/sh reaches the busybox data through the link


@pytest.mark.skipif(shutil.which("zstd") is None, reason="needs the zstd program")
def test_zstd_part_is_read_with_the_host_tool(tmp_path: Path) -> None:
    import subprocess

    plain = tmp_path / "main.cpio"
    plain.write_bytes(cpio.archive(busybox_like()))
    subprocess.run(["zstd", "-q", "--no-progress", str(plain), "-o", str(tmp_path / "main.zst")], check=True)
    path = tmp_path / "initrd"
    path.write_bytes(cpio.archive([cpio.regular("early", b"e")]) + (tmp_path / "main.zst").read_bytes())
    facts = read_initrd(path)
    assert facts.compressions == ("none", "zstd") and facts.unpacked_bytes == 4 * PAGE


def test_zstd_without_the_tool_leaves_the_files_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initrd, "find_tool", lambda name: None)
    early = cpio.archive([cpio.regular("early", b"e")])
    facts = read_initrd_bytes(early + b"\x28\xb5\x2f\xfd" + b"\0" * 64, "t")
    assert facts.unpacked_bytes is None and facts.init_problem() is None  # unknown, not a problem
    assert facts.problem == f"the zstd part at byte {len(early)} needs zstd on the host"


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"\xffnot an initrd", "byte 0 starts neither a cpio archive nor a compression the kernel knows"),
        (cpio.archive(busybox_like())[:300], "the cpio archive ends in the middle of an entry"),
        (b"070701" + b"Z" * 104, "a cpio header has fields that are not hexadecimal"),
        (b"070701" + b"0" * 88 + b"00FFFFFF" + b"0" * 8 + b"x" * 64, "a cpio entry has a name of 16777215 bytes"),
        (gzip.compress(cpio.archive(busybox_like()))[:-20], "the gzip part ends early"),
    ],
)
def test_what_the_kernel_would_not_unpack_is_a_problem_not_a_crash(data: bytes, problem: str) -> None:
    facts = read_initrd_bytes(data, "guest x's initrd")
    assert facts.unpacked_bytes is None
    assert problem in facts.problem and "guest x's initrd" in facts.problem
    assert facts.loaded_bytes >= len(data)


def test_inflating_stops_at_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(initrd, "MAX_UNPACKED_BYTES", 1 << 20)
    bomb = gzip.compress(cpio.archive([cpio.regular("zeros", bytes(4 << 20))]))
    facts = read_initrd_bytes(bomb, "t")
    assert facts.unpacked_bytes is None and "more than 1 MiB of archive" in facts.problem


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InitrdError, match="cannot read"):
        read_initrd(tmp_path / "missing")


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (busybox_like(), None),
        (busybox_like(init_mode=0o644), "/init is not executable (mode 0644)"),
        (busybox_like(init=b"echo no shebang\n"), "/init is neither an ELF program nor a #! script"),
        (busybox_like(init=b"#!/bin/bash\n"), "/init starts with #!/bin/bash, which is not an executable file"),
        (busybox_like(init=b"#!\n"), "/init has an empty #! line"),
        (busybox_like(init=b"\x7fELF\2\1\1"), None),
        (busybox_like()[:-1], "there is no /init"),
        ([*busybox_like()[:-1], cpio.directory("init")], "/init is a directory"),
        ([*busybox_like()[:-1], cpio.symlink("init", "sbin/init")], "/init is a symlink to sbin/init, which is not"),
        ([*busybox_like()[:-1], cpio.symlink("init", "bin/sh")], None),
        (
            [*busybox_like()[:-1], cpio.regular("etc/init", b"x", 0o755), cpio.symlink("init", "etc/init")],
            "/init (-> /etc/init) is neither",
        ),
        ([*busybox_like()[:-1], cpio.chardev("init", 1, 3)], "/init is not a regular file"),
    ],
)
def test_init_the_kernel_can_or_cannot_execute(entries: list[cpio.Entry], problem: str | None) -> None:
    found = read_initrd_bytes(cpio.archive(entries), "t").init_problem()
    if problem is None:
        assert found is None
    else:
        assert found is not None and found.startswith(problem)


def test_symlinks_are_followed_through_directories() -> None:
    """A merged /usr: /bin is a symlink to usr/bin, and #!/bin/sh must reach usr/bin/sh."""
    entries = [
        cpio.directory("usr"),
        cpio.directory("usr/bin"),
        cpio.regular("usr/bin/dash", b"\x7fELF", 0o755),
        cpio.symlink("usr/bin/sh", "dash"),
        cpio.symlink("bin", "usr/bin"),
        cpio.regular("init", b"#!/bin/sh -e\n", 0o755),
    ]
    facts = read_initrd_bytes(cpio.archive(entries), "t")
    assert facts.resolve("/bin/sh") == ("usr/bin/dash", facts.members["usr/bin/dash"])
    assert facts.resolve("usr/bin/../../bin/sh") is not None and facts.resolve("bin/missing") is None
    assert facts.resolve("bin/../usr/bin/sh") is None  # .. of usr/bin (where bin leads) is usr: no usr/usr
    assert facts.init_problem() is None
    loop = read_initrd_bytes(cpio.archive([cpio.symlink("a", "b"), cpio.symlink("b", "a")]), "t")
    assert loop.resolve("a") is None
