"""What an initramfs puts in a guest's memory, read from the file itself.

Why read it: a guest's initrd costs its memory twice at boot. Xen's domain builder (libxenguest)
inflates a gzip initrd as it copies it into the guest; the kernel then unpacks the cpio archive into
its RAM root, file by file, before it frees the archive. A busybox guest keeps its root in RAM for
good. So the file's size on the medium says little: what counts is the archive's inflated size and
the files in it, which only the archive tells. The same reading answers what /init is, the one
file the kernel must be able to execute.

The archive is hostile input: it is parsed as a stream (never held whole in memory), at most
MAX_UNPACKED_BYTES are inflated, and anything malformed raises InitrdError naming the file and
the byte. Parts compressed with what Python lacks (zstd, lz4; Debian's initramfs-tools writes zstd)
are inflated by the host's zstd or lz4 when installed; without it the files' size stays unknown.
"""

from __future__ import annotations

import bz2
import io
import lzma
import os
import posixpath
import stat
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from builder.errors import CommandError
from builder.run import find_tool, stream

PAGE = 4096
MAX_UNPACKED_BYTES = 4 << 30  # inflate no more: no initrd a guest could boot from is that big
CHUNK = 1 << 20
# libxenguest inflates a file that starts with the gzip magic, sizing it by the gzip trailer
# (ISIZE, the last 4 bytes) plus 16, unless that claims more than XC_DOM_DECOMPRESS_MAX.
GZIP_SLACK = 16
XC_DOM_DECOMPRESS_MAX = 1 << 30
HEADER = 110  # a newc header: the magic and 13 fields of 8 hex digits
NEWC = (b"070701", b"070702")
TRAILER = "TRAILER!!!"
MAX_NAME = 4096
HEAD_BYTES = 256  # kept of each regular file: enough to see a #! line or an ELF header
MAX_LINK = 4096
MAX_HOPS = 40  # symlinks followed in one lookup, as the kernel's limit

GZIP, BZIP2, XZ, LZMA, ZSTD, LZ4, LZO, PLAIN = "gzip", "bzip2", "xz", "lzma", "zstd", "lz4", "lzo", "none"
# The compressions the kernel's initramfs unpacker knows, by magic (init/initramfs.c, lib/decompress.c).
MAGICS = (
    (b"\x1f\x8b", GZIP),
    (b"BZh", BZIP2),
    (b"\xfd7zXZ\x00", XZ),
    (b"\x5d\x00\x00", LZMA),
    (b"\x28\xb5\x2f\xfd", ZSTD),
    (b"\x02\x21\x4c\x18", LZ4),  # the legacy lz4 format, the one the kernel reads
    (b"\x89LZO", LZO),
)
TOOLS = {ZSTD: ("zstd", "-dcq"), LZ4: ("lz4", "-dcq")}  # host tools for what Python cannot inflate


class InitrdError(Exception):
    """The initrd cannot be read, or is not an archive the kernel would unpack; the message says where."""


@dataclass(frozen=True)
class Member:
    """One entry of the archive, as the kernel leaves it in the guest's RAM root."""

    mode: int
    size: int
    head: bytes = b""  # the first bytes of a regular file (its #! line or ELF header)
    target: str = ""  # a symlink's target
    link: tuple[int, int, int] | None = None  # a hard link's inode (major, minor, ino): one data for all

    @property
    def executable(self) -> bool:
        return stat.S_ISREG(self.mode) and bool(self.mode & 0o111)


@dataclass(frozen=True)
class InitrdFacts:
    """An initrd's cost in guest memory, and its files."""

    file_bytes: int  # the file on the medium
    loaded_bytes: int  # what the domain builder copies into the guest (a gzip file inflated)
    unpacked_bytes: int | None  # the files' data in the kernel's RAM root, in whole pages; None: unknown
    inodes: int = 0  # entries the unpacked root holds
    compressions: tuple[str, ...] = ()  # of each part of the file, in order ("none": a plain cpio part)
    members: dict[str, Member] = field(default_factory=dict, repr=False)
    problem: str = ""  # why unpacked_bytes is unknown

    def resolve(self, path: str) -> tuple[str, Member] | None:
        """The entry a path leads to, following symlinks anywhere in it (a merged-/usr /bin -> usr/bin
        too) inside the archive, as the kernel would in the unpacked root; None if it leads nowhere."""
        todo = [p for p in path.split("/") if p not in ("", ".")]
        done: list[str] = []
        hops = 0
        while todo:
            part = todo.pop(0)
            if part == "..":
                done = done[:-1]
                continue
            here = "/".join([*done, part])
            member = self.members.get(here)
            if member is not None and stat.S_ISLNK(member.mode):
                hops += 1
                if hops > MAX_HOPS:
                    return None
                if member.target.startswith("/"):
                    done = []
                todo = [p for p in member.target.split("/") if p not in ("", ".")] + todo
                continue
            if member is None and not todo:
                return None
            done.append(part)
        found = "/".join(done)
        return (found, self.members[found]) if found in self.members else None

    def init_problem(self, init: str = "init") -> str | None:
        """Why the kernel cannot execute /init, or None (it can, or the files are not known).

        When /init fails, the kernel tries /sbin/init, /etc/init, /bin/init and /bin/sh instead:
        the guest may come up, but its own start-up (and its ready marker) never runs.
        """
        if self.unpacked_bytes is None:
            return None
        found = self.resolve(init)
        if found is None:
            member = self.members.get(init)
            if member is None:
                return "there is no /init"
            return f"/init is a symlink to {member.target}, which is not in the initrd"
        path, member = found
        where = "/init" if path == init else f"/init (-> /{path})"
        if stat.S_ISDIR(member.mode):
            return f"{where} is a directory"
        if not stat.S_ISREG(member.mode):
            return f"{where} is not a regular file"
        if not member.mode & 0o111:
            return f"{where} is not executable (mode {stat.S_IMODE(member.mode):04o})"
        if member.head.startswith(b"\x7fELF"):
            return None
        if not member.head.startswith(b"#!"):
            return f"{where} is neither an ELF program nor a #! script"
        words = member.head[2:].split(b"\n", 1)[0].decode("utf-8", "replace").split()
        if not words:
            return f"{where} has an empty #! line"
        target = self.resolve(words[0])
        if target is None or not target[1].executable:
            return f"{where} starts with #!{words[0]}, which is not an executable file in the initrd"
        return None


class _Cpio:
    """A newc cpio parser fed in pieces, keeping the kernel's order: a later entry replaces an earlier."""

    def __init__(self, where: str, members: dict[str, Member]) -> None:
        self.where = where
        self.members = members
        self.buffer = bytearray()
        self.between = True  # at the start, or after a trailer: zero padding may come
        self.entry: tuple[str, int, int] | None = None  # name, mode, size of the entry being read
        self.link: tuple[int, int, int] | None = None  # its inode when it is one of several hard links
        self.left = 0  # its data still to come
        self.pad = 0  # padding to drop after it
        self.head = bytearray()
        self.fed = 0

    def feed(self, data: bytes, *, stop_at_trailer: bool = False) -> bytes | None:
        """Parse data. With stop_at_trailer: once the archive's trailer is read, the bytes after it."""
        self.fed += len(data)
        if self.fed > MAX_UNPACKED_BYTES:
            raise InitrdError(f"{self.where}: more than {MAX_UNPACKED_BYTES >> 20} MiB of archive; not read further")
        self.buffer += data
        buf = self.buffer
        pos = 0
        while True:
            if self.entry is not None:
                name, mode, size = self.entry
                n = min(self.left, len(buf) - pos)
                keep = MAX_LINK if stat.S_ISLNK(mode) else HEAD_BYTES
                if len(self.head) < keep:
                    self.head += buf[pos : pos + min(n, keep - len(self.head))]
                pos += n
                self.left -= n
                if self.left:
                    break
                self._store(name, mode, size)
            if self.pad:
                n = min(self.pad, len(buf) - pos)
                pos += n
                self.pad -= n
                if self.pad:
                    break
            if self.between:
                while pos < len(buf) and buf[pos] == 0:
                    pos += 1
            if len(buf) - pos < HEADER:
                break
            header = bytes(buf[pos : pos + HEADER])
            if header[:6] not in NEWC:
                raise InitrdError(f"{self.where}: expected a newc cpio header, found {header[:6]!r}")
            try:
                fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
            except ValueError:
                raise InitrdError(f"{self.where}: a cpio header has fields that are not hexadecimal") from None
            mode, nlink, size, namesize = fields[1], fields[4], fields[6], fields[11]
            if not 0 < namesize <= MAX_NAME:
                raise InitrdError(f"{self.where}: a cpio entry has a name of {namesize} bytes")
            end = HEADER + namesize + (-(HEADER + namesize) % 4)
            if len(buf) - pos < end:
                break
            name = bytes(buf[pos + HEADER : pos + HEADER + namesize]).rstrip(b"\0").decode("utf-8", "replace")
            pos += end
            if name == TRAILER:
                self.between = True
                if stop_at_trailer:
                    rest = bytes(buf[pos:])
                    buf.clear()
                    return rest
                continue
            self.between = False
            self.entry = (posixpath.normpath("/" + name).lstrip("/") or ".", mode, size)
            self.link = (fields[7], fields[8], fields[0]) if stat.S_ISREG(mode) and nlink > 1 else None
            self.left = size
            self.pad = -size % 4
            self.head = bytearray()
        del buf[:pos]
        return None

    def _store(self, name: str, mode: int, size: int) -> None:
        if stat.S_ISLNK(mode):
            member = Member(mode=mode, size=size, target=bytes(self.head).decode("utf-8", "replace"))
        else:
            member = Member(mode=mode, size=size, head=bytes(self.head), link=self.link)
        self.members.pop(name, None)  # the kernel removes what was there first
        self.members[name] = member
        if self.link is not None and size:
            # newc stores a hard-linked file's data once, with one of its names: all of them have it.
            for other, m in self.members.items():
                if m.link == self.link and not m.size:
                    self.members[other] = Member(mode=m.mode, size=size, head=member.head, link=m.link)
        self.entry = None

    def finish(self) -> None:
        if self.entry is not None or (self.buffer and any(self.buffer)):
            raise InitrdError(f"{self.where}: the cpio archive ends in the middle of an entry")


def _inflate(f: BinaryIO, kind: str, cpio: _Cpio, where: str) -> int:
    """Inflate one compressed stream from f's position into the parser; the bytes of f it used."""
    used = 0
    if kind == GZIP:
        z = zlib.decompressobj(wbits=31)
        try:
            while not z.eof:
                data = f.read(CHUNK)
                if not data:
                    raise InitrdError(f"{where}: the gzip part ends early")
                used += len(data)
                out = z.decompress(data, CHUNK)
                cpio.feed(out)
                while z.unconsumed_tail and not z.eof:
                    cpio.feed(z.decompress(z.unconsumed_tail, CHUNK))
        except zlib.error as e:
            raise InitrdError(f"{where}: corrupt gzip part: {e}") from None
        return used - len(z.unused_data)
    d: bz2.BZ2Decompressor | lzma.LZMADecompressor
    if kind == BZIP2:
        d = bz2.BZ2Decompressor()
    else:
        d = lzma.LZMADecompressor(format=lzma.FORMAT_XZ if kind == XZ else lzma.FORMAT_ALONE)
    try:
        while not d.eof:
            if d.needs_input:
                data = f.read(CHUNK)
                if not data:
                    raise InitrdError(f"{where}: the {kind} part ends early")
                used += len(data)
            else:
                data = b""
            cpio.feed(d.decompress(data, CHUNK))
    except (OSError, EOFError, lzma.LZMAError) as e:
        raise InitrdError(f"{where}: corrupt {kind} part: {e}") from None
    return used - len(d.unused_data)


def _plain(f: BinaryIO, cpio: _Cpio, where: str) -> int:
    """Parse a plain cpio archive from f's position up to its trailer; the bytes it took."""
    used = 0
    while True:
        data = f.read(CHUNK)
        if not data:
            cpio.finish()
            raise InitrdError(f"{where}: a plain cpio part has no trailer")
        used += len(data)
        rest = cpio.feed(data, stop_at_trailer=True)
        if rest is not None:
            return used - len(rest)


def _zeros(f: BinaryIO) -> int:
    skipped = 0
    while True:
        data = f.read(PAGE)
        stripped = data.lstrip(b"\0")
        skipped += len(data) - len(stripped)
        if stripped or not data:
            return skipped


def _parts(f: BinaryIO, size: int, cpio: _Cpio, where: str) -> Iterator[str]:
    """Walk the file as the kernel does (plain archives, zero padding, compressed streams): each
    part's compression, or, for one the host cannot inflate, a "!" and why."""
    pos = 0
    while pos < size:
        f.seek(pos)
        peek = f.read(8)
        if not peek:
            return
        f.seek(pos)
        if peek[0] == 0:
            pos += _zeros(f)
            continue
        if peek[:1] == b"0":
            yield PLAIN
            pos += _plain(f, cpio, f"{where} (plain cpio at byte {pos})")
            continue
        kind = next((k for magic, k in MAGICS if peek.startswith(magic)), None)
        if kind is None:
            raise InitrdError(f"{where}: byte {pos} starts neither a cpio archive nor a compression the kernel knows")
        yield kind
        if kind in (GZIP, BZIP2, XZ, LZMA):
            pos += _inflate(f, kind, cpio, f"{where} ({kind} part at byte {pos})")
            continue
        tool = TOOLS.get(kind)
        path = find_tool(tool[0]) if tool else None
        if tool is None or path is None:
            yield f"!the {kind} part at byte {pos} needs " + (f"{tool[0]} on the host" if tool else "a lzo reader")
            return
        try:
            os.lseek(f.fileno(), pos, os.SEEK_SET)  # the tool reads the file itself, from here
        except (OSError, io.UnsupportedOperation):
            yield f"!the {kind} part at byte {pos} is not in a file {tool[0]} can read"
            return
        try:
            for chunk in stream([path, *tool[1:]], stdin=f):
                cpio.feed(chunk)
        except CommandError as e:
            raise InitrdError(f"{where}: {tool[0]} could not inflate the part at byte {pos}: {e}") from None
        return  # the tool reads to the end of the file, as the kernel's own decompressor does


def _data_bytes(members: dict[str, Member]) -> int:
    """The pages the regular files take in the RAM root, hard links counted once."""
    sizes: dict[object, int] = {}
    for name, m in members.items():
        if stat.S_ISREG(m.mode):
            key = m.link or name
            sizes[key] = max(sizes.get(key, 0), -(-m.size // PAGE) * PAGE)
    return sum(sizes.values())


def read_initrd(path: Path) -> InitrdFacts:
    """An initrd's memory cost and files. One the kernel would not unpack as an initramfs has
    unpacked_bytes None and says why in `problem`; InitrdError only when it cannot be read."""
    try:
        with path.open("rb") as f:
            return _read(f, path.stat().st_size, str(path))
    except OSError as e:
        raise InitrdError(f"{path}: cannot read: {e.strerror}") from None


def read_initrd_bytes(data: bytes, where: str) -> InitrdFacts:
    """As read_initrd, for an initrd not written yet (the busybox guests', made from dom0's busybox)."""
    return _read(io.BytesIO(data), len(data), where)


def _read(f: BinaryIO, size: int, where: str) -> InitrdFacts:
    members: dict[str, Member] = {}
    cpio = _Cpio(where, members)
    loaded = size
    if f.read(2) == b"\x1f\x8b" and size >= 6:
        f.seek(size - 4)
        isize = int.from_bytes(f.read(4), "little")
        if isize <= XC_DOM_DECOMPRESS_MAX:
            loaded = max(size, isize + GZIP_SLACK)
    parts: list[str] = []
    try:
        for part in _parts(f, size, cpio, where):
            parts.append(part)
        problem = next((p[1:] for p in parts if p.startswith("!")), "")
        if not problem:
            cpio.finish()
    except InitrdError as e:
        # Not an archive the kernel unpacks (an old-style initrd image, or damage): what the domain
        # builder loads is still known, the files are not.
        problem = str(e)
    unpacked = None if problem else _data_bytes(members)
    return InitrdFacts(file_bytes=size, loaded_bytes=loaded, unpacked_bytes=unpacked, inodes=len(members),
                       compressions=tuple(p for p in parts if not p.startswith("!")), members=members,
                       problem=problem)  # fmt: skip
