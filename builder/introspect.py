"""Facts read from what was built: Xen's build config, kernels' configs and Xen ELF notes, drivers,
the initrd's layout, and the versions dpkg installed.

Why read files instead of trusting package names: what decides whether an image runs is what is
inside the binaries. Debian's cloud kernel is a "linux-image" too, but has CONFIG_XEN_DOM0 unset;
Debian's Xen is a "xen-hypervisor" too, but is built without 32-bit PV (and, from 4.20 on, without
shadow paging). These facts are in /boot/xen-*.config, in the kernel's .config and in the Xen ELF
notes of the kernel image, and in the modules' own metadata (modules.alias, the .modinfo section's
firmware= entries). A suite changes how they are stored (trixie's kernel is zstd-compressed and its
modules are .ko.xz), never what they mean, so the code looks at magic numbers, not at the suite.

Everything is parsed in Python, so the same code works in unit tests on small synthetic files. The
one exception is zstd, which Python (before 3.14) cannot inflate: zstd payloads go through the
`zstd` command, with a cap on what it may write.
"""

from __future__ import annotations

import bz2
import fnmatch
import lzma
import re
import struct
import tempfile
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from builder.errors import CommandError, XenliveError
from builder.initrd import InitrdFacts
from builder.run import read_output

# Xen ELF note types (xen/include/public/elfnote.h).
NOTE_ENTRY = 1
NOTE_HYPERCALL_PAGE = 2
NOTE_VIRT_BASE = 3
NOTE_PADDR_OFFSET = 4
NOTE_XEN_VERSION = 5
NOTE_GUEST_OS = 6
NOTE_FEATURES = 10
NOTE_SUPPORTED_FEATURES = 17
NOTE_PHYS32_ENTRY = 18
XENFEAT_DOM0 = 11  # bit in SUPPORTED_FEATURES: the kernel can run as the control domain

PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7
PERCPU_SECTION = ".data..percpu"  # the per-CPU template the kernel copies for every CPU at boot
IKCONFIG_START, IKCONFIG_END = b"IKCFG_ST", b"IKCFG_ED"  # CONFIG_IKCONFIG=y: the config, gzipped, in the kernel
MAX_KERNEL_BYTES = 512 << 20  # refuse to inflate anything larger: a kernel is far smaller
MAX_MODULE_BYTES = 256 << 20  # the largest module (amdgpu) is some tens of MiB uncompressed

# How compressed data announces itself (the formats the kernel, kmod and initramfs-tools can use).
MAGIC = {
    "gzip": b"\x1f\x8b",
    "xz": b"\xfd7zXZ\x00",
    "zstd": b"\x28\xb5\x2f\xfd",
    "bzip2": b"BZh",
    "lzma": b"\x5d\x00\x00",
    "lz4": b"\x02\x21\x4c\x18",  # the legacy frame the kernel and initramfs-tools write
    "lzo": b"\x89LZO",
}
CPIO_MAGICS = (b"070701", b"070702")
MODULE_SUFFIXES = {"": "none", ".xz": "xz", ".zst": "zstd", ".gz": "gzip"}  # after ".ko"
# Xen build options worth recording: what decides which guests and machines this Xen can run.
# (PVH guests have no option of their own: they are HVM containers, so they need CONFIG_HVM.)
XEN_OPTIONS = ("PV", "PV32", "HVM", "SHADOW_PAGING", "XSM", "DEBUG")


class IntrospectError(XenliveError):
    """A file is not what it claims to be (not a kernel, corrupt payload); the message says which.

    A XenliveError, so a damaged file in the dom0 tree stops a build with this message (exit 1)
    rather than a traceback; callers that can go on without the fact catch it.
    """


def compression_of(data: bytes) -> str | None:
    """The compression format `data` starts with (a key of MAGIC), or None when it has no known magic."""
    return next((name for name, magic in MAGIC.items() if data.startswith(magic)), None)


def inflate(data: bytes, limit: int, what: str) -> bytes:
    """Decompress `data` by its magic number, refusing to produce more than `limit` bytes.

    `what` names the data in errors ("kernel payload", a module's path). lz4 and lzo are refused:
    nothing Debian ships uses them.
    """
    kind = compression_of(data)
    try:
        if kind == "xz":
            return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_XZ), data, limit, what)
        if kind == "lzma":
            return _bounded(lzma.LZMADecompressor(format=lzma.FORMAT_ALONE), data, limit, what)
        if kind == "gzip":  # wbits=31: one gzip member; whatever follows it (padding) is ignored
            return _bounded(zlib.decompressobj(wbits=31), data, limit, what)
        if kind == "bzip2":
            return _bounded(bz2.BZ2Decompressor(), data, limit, what)
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as e:
        raise IntrospectError(f"corrupt {what} ({kind}): {e}") from None
    if kind == "zstd":
        return _unzstd(data, limit, what)
    raise IntrospectError(f"unsupported {what} compression (it starts {data[:4].hex()})")


class _Decompressor(Protocol):
    """What _bounded needs of lzma's, zlib's and bz2's decompressor objects."""

    @property
    def eof(self) -> bool: ...

    def decompress(self, data: bytes, max_length: int, /) -> bytes: ...


def _bounded(decompressor: _Decompressor, data: bytes, limit: int, what: str) -> bytes:
    out = decompressor.decompress(data, limit + 1)
    if len(out) > limit:
        raise IntrospectError(f"{what} inflates to more than {limit} bytes; refusing it")
    if not decompressor.eof:  # the decompressors return what they have of a cut-off stream
        raise IntrospectError(f"corrupt {what}: the compressed data ends early")
    return out


def _unzstd(data: bytes, limit: int, what: str) -> bytes:
    """zstd through the `zstd` command (Python has no zstd module before 3.14), capped at `limit`."""
    with tempfile.NamedTemporaryFile(prefix="xenlive-", suffix=".zst") as tmp:
        tmp.write(data)
        tmp.flush()
        try:
            return read_output(["zstd", "-d", "-c", "-q", "--", tmp.name], limit=limit)
        except CommandError as e:
            if e.returncode == 127:
                raise IntrospectError(f"{what} is zstd-compressed and the zstd command is missing",
                                      hint="install it with: apt-get install zstd") from None  # fmt: skip
            if e.returncode < 0:  # read_output stopped it at the limit
                raise IntrospectError(f"{what} inflates to more than {limit} bytes; refusing it") from None
            detail = e.message.splitlines()[-1].split(" : ", 1)[-1]  # without zstd's "TMPNAME : " prefix
            raise IntrospectError(f"corrupt {what} (zstd): {detail}") from None


@dataclass(frozen=True)
class XenNotes:
    """The Xen ELF notes of a kernel: what it tells Xen's domain builder about itself."""

    guest_os: str | None = None
    xen_version: str | None = None
    features: str | None = None
    supported_features: int | None = None
    entry: bool = False
    phys32_entry: bool = False
    virt_base: int | None = None  # where a PV kernel's image starts in its virtual address space
    paddr_offset: int | None = None  # what the PV domain builder subtracts from the ELF's physical addresses

    @property
    def pv(self) -> bool:
        """A PV kernel names its OS and an entry point for the PV domain builder."""
        return self.guest_os is not None and self.entry

    @property
    def dom0(self) -> bool:
        if self.supported_features is not None and self.supported_features >> XENFEAT_DOM0 & 1:
            return True
        return "dom0" in (self.features or "").split("|")

    @property
    def pvh(self) -> bool:
        return self.phys32_entry


@dataclass(frozen=True)
class KernelLayout:
    """Where the kernel's ELF segments (PT_LOAD) go in a guest's memory: what the domain builder
    loads before the kernel runs a single instruction, and what stays resident after."""

    start: int  # the lowest physical address of a segment
    end: int  # the highest physical address a segment reaches (p_paddr + p_memsz)
    percpu: int = 0  # bytes of the per-CPU template, copied for every (v)CPU the kernel brings up

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class KernelFacts:
    """What a kernel image is: its width, its Xen notes, its load layout, and its config when found
    next to it (config-VERSION) or inside it (CONFIG_IKCONFIG=y)."""

    path: Path
    bits: int
    notes: XenNotes
    config: Mapping[str, str] | None = None
    compression: str | None = None  # "none" (an ELF), "xz", "zstd", ...; None when not read
    layout: KernelLayout | None = None

    def option(self, name: str) -> str | None:
        """A CONFIG_ value ("y", "m", ...), "n" when the config says it is not set, None if unknown."""
        if self.config is None:
            return None
        return self.config.get(name, "n")

    @property
    def nr_cpus(self) -> int | None:
        """CONFIG_NR_CPUS: the most CPUs the kernel brings up; more vCPUs than this stay idle."""
        value = self.option("CONFIG_NR_CPUS")
        return int(value) if value is not None and value.isdecimal() else None


@dataclass(frozen=True)
class XenFacts:
    """Xen's version (as its build config states it) and that config, from /boot/xen-*.config."""

    version: str
    config: Mapping[str, str]
    unset: frozenset[str] = frozenset()  # options the config names as "is not set"

    def enabled(self, name: str) -> bool:
        return self.config.get(name) == "y"

    @property
    def options(self) -> dict[str, bool | None]:
        """XEN_OPTIONS as {"PV32": False, ...}, the build facts the manifest records.

        None for an option this Xen's config does not mention at all: it is not a choice in that
        version, so neither "on" nor "off" would be true.
        """
        result: dict[str, bool | None] = {}
        for name in XEN_OPTIONS:
            key = f"CONFIG_{name}"
            result[name] = True if self.enabled(key) else False if key in self.config or key in self.unset else None
        return result


def read_kconfig(path: Path) -> dict[str, str]:
    """A Kconfig .config file as {CONFIG_NAME: value}; unset options are left out."""
    return parse_kconfig(path.read_text(errors="replace"))


def parse_kconfig(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in text.splitlines():
        m = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if m:
            values[m.group(1)] = m.group(2).strip('"')
    return values


def embedded_config(elf: bytes) -> dict[str, str] | None:
    """The config a CONFIG_IKCONFIG=y kernel carries (gzipped between IKCFG_ST and IKCFG_ED), or None."""
    start = elf.find(IKCONFIG_START)
    if start < 0:
        return None
    end = elf.find(IKCONFIG_END, start)
    if end < 0:
        return None
    try:
        text = zlib.decompressobj(wbits=31).decompress(elf[start + len(IKCONFIG_START) : end], 16 << 20)
    except zlib.error:
        return None
    return parse_kconfig(text.decode("utf-8", "replace"))


def xen_facts(tree: Path) -> XenFacts | None:
    """Xen's version and build config from the dom0 tree's /boot/xen-*.config.

    The version is the one in the config's header ("# Xen/x86 4.20.5-pre Configuration"), which
    is what the running Xen reports; Debian's package version may name the last release before it
    (4.20.4+63-g...). Without a header line, the file name's version (4.20) is used.
    """
    configs = sorted((tree / "boot").glob("xen-*.config"))
    if not configs:
        return None
    config = read_kconfig(configs[-1])
    text = configs[-1].read_text(errors="replace")
    unset = frozenset(re.findall(r"^# (CONFIG_\w+) is not set$", text, flags=re.M))
    version = configs[-1].name.removeprefix("xen-").removesuffix(".config").removesuffix("-amd64")
    for line in text.splitlines()[:10]:
        m = re.fullmatch(r"# Xen/\S+ (\d+\.\d+(?:\.\d+)?(?:-\w+)?) Configuration", line.strip())
        if m:
            version = m.group(1)
    return XenFacts(version=version, config=config, unset=unset)


def _payload(image: bytes) -> bytes:
    """A bzImage's compressed payload, as the setup header locates it (boot protocol 2.08+)."""
    if len(image) < 0x250 or image[0x202:0x206] != b"HdrS":
        raise IntrospectError("neither an ELF kernel nor a bzImage (no HdrS header)")
    version = struct.unpack_from("<H", image, 0x206)[0]
    if version < 0x208:
        raise IntrospectError(f"bzImage boot protocol {version >> 8}.{version & 0xFF} has no payload fields")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = image[start : start + length]
    if len(payload) != length:
        raise IntrospectError("bzImage payload runs past the end of the file")
    return payload


def kernel_compression(image: bytes) -> str:
    """How a kernel image is compressed: "none" for an ELF, else its bzImage payload's format."""
    if image[:4] == b"\x7fELF":
        return "none"
    payload = _payload(image)
    return compression_of(payload) or f"unknown ({payload[:4].hex()})"


def vmlinux_of(image: bytes) -> bytes:
    """The ELF inside a kernel image: the image itself if it is ELF, else a bzImage's payload."""
    if image[:4] == b"\x7fELF":
        return image
    payload = _payload(image)
    if compression_of(payload) == "zstd":
        # The build appends the inflated size (le32) to every payload; the other formats stop at
        # their own end, but the zstd tool takes those 4 bytes for a second frame and fails.
        payload = payload[:-4]
    return inflate(payload, MAX_KERNEL_BYTES, "kernel payload")


def _notes_in(elf: bytes) -> Iterator[tuple[str, int, bytes]]:
    """(name, type, descriptor) of every ELF note, from PT_NOTE segments or SHT_NOTE sections."""
    if elf[:4] != b"\x7fELF" or elf[4] not in (1, 2):
        raise IntrospectError("not an ELF file")
    is64 = elf[4] == 2
    endian = "<" if elf[5] == 1 else ">"
    try:
        if is64:
            phoff, shoff = struct.unpack_from(endian + "QQ", elf, 0x20)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", elf, 0x36)
        else:
            phoff, shoff = struct.unpack_from(endian + "II", elf, 0x1C)
            phentsize, phnum, shentsize, shnum = struct.unpack_from(endian + "HHHH", elf, 0x2A)
        regions: list[tuple[int, int]] = []
        for i in range(phnum):
            at = phoff + i * phentsize
            p_type = struct.unpack_from(endian + "I", elf, at)[0]
            if p_type == PT_NOTE:
                if is64:
                    off, size = (
                        struct.unpack_from(endian + "Q", elf, at + 8)[0],
                        struct.unpack_from(endian + "Q", elf, at + 32)[0],
                    )
                else:
                    off, size = (
                        struct.unpack_from(endian + "I", elf, at + 4)[0],
                        struct.unpack_from(endian + "I", elf, at + 16)[0],
                    )
                regions.append((off, size))
        if not regions:
            for i in range(shnum):
                at = shoff + i * shentsize
                sh_type = struct.unpack_from(endian + "I", elf, at + 4)[0]
                if sh_type == SHT_NOTE:
                    if is64:
                        off, size = struct.unpack_from(endian + "QQ", elf, at + 24)
                    else:
                        off, size = struct.unpack_from(endian + "II", elf, at + 16)
                    regions.append((off, size))
    except struct.error:
        raise IntrospectError("truncated ELF header") from None
    for off, size in regions:
        pos, end = off, min(off + size, len(elf))
        while pos + 12 <= end:
            namesz, descsz, ntype = struct.unpack_from(endian + "III", elf, pos)
            pos += 12
            name = elf[pos : pos + namesz].rstrip(b"\0").decode("ascii", "replace")
            pos += (namesz + 3) & ~3
            desc = elf[pos : pos + descsz]
            pos += (descsz + 3) & ~3
            yield name, ntype, desc


def xen_notes(elf: bytes) -> XenNotes:
    values: dict[int, bytes] = {t: d for name, t, d in _notes_in(elf) if name == "Xen"}

    def text(t: int) -> str | None:
        return values[t].rstrip(b"\0").decode("ascii", "replace") if t in values else None

    def number(t: int) -> int | None:
        data = values.get(t, b"")
        return int.from_bytes(data[:8], "little") if len(data) in (4, 8) else None

    supported = None
    if NOTE_SUPPORTED_FEATURES in values and len(values[NOTE_SUPPORTED_FEATURES]) >= 4:
        supported = struct.unpack_from("<I", values[NOTE_SUPPORTED_FEATURES])[0]
    return XenNotes(
        guest_os=text(NOTE_GUEST_OS),
        xen_version=text(NOTE_XEN_VERSION),
        features=text(NOTE_FEATURES),
        supported_features=supported,
        entry=NOTE_ENTRY in values,
        phys32_entry=NOTE_PHYS32_ENTRY in values,
        virt_base=number(NOTE_VIRT_BASE),
        paddr_offset=number(NOTE_PADDR_OFFSET),
    )


def kernel_facts(path: Path, config: Path | None = None) -> KernelFacts:
    """Read a kernel (bzImage or ELF) and, if given or found as config-VERSION beside it, its config."""
    try:
        image = path.read_bytes()
    except OSError as e:
        raise IntrospectError(f"{path}: cannot read: {e.strerror}") from None
    try:
        elf = vmlinux_of(image)
        notes = xen_notes(elf)
        layout = load_layout(elf)
    except IntrospectError as e:
        raise IntrospectError(f"{path}: {e.message}", hint=e.hint) from None
    bits = 64 if elf[4] == 2 else 32
    if config is None and path.name.startswith("vmlinuz-"):
        candidate = path.with_name("config-" + path.name.removeprefix("vmlinuz-"))
        config = candidate if candidate.is_file() else None
    values = read_kconfig(config) if config else embedded_config(elf)
    return KernelFacts(path=path, bits=bits, notes=notes, config=values, layout=layout,
                       compression=kernel_compression(image))  # fmt: skip


def load_layout(elf: bytes) -> KernelLayout | None:
    """The physical span of the ELF's PT_LOAD segments and the size of its per-CPU template
    (the .data..percpu section, or on x86-64 the PT_LOAD segment linked at address 0)."""
    is64 = elf[4] == 2
    endian = "<" if elf[5] == 1 else ">"
    try:
        if is64:
            phoff, shoff = struct.unpack_from(endian + "QQ", elf, 0x20)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHHHH", elf, 0x36)
        else:
            phoff, shoff = struct.unpack_from(endian + "II", elf, 0x1C)
            phentsize, phnum, shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHHHH", elf, 0x2A)
        loads: list[tuple[int, int, int]] = []  # vaddr, paddr, memsz
        for i in range(phnum):
            at = phoff + i * phentsize
            if struct.unpack_from(endian + "I", elf, at)[0] != PT_LOAD:
                continue
            if is64:
                vaddr, paddr = struct.unpack_from(endian + "QQ", elf, at + 16)
                memsz = struct.unpack_from(endian + "Q", elf, at + 40)[0]
            else:
                vaddr, paddr = struct.unpack_from(endian + "II", elf, at + 8)
                memsz = struct.unpack_from(endian + "I", elf, at + 20)[0]
            if memsz:
                loads.append((vaddr, paddr, memsz))
        percpu = _section_size(elf, endian, is64, shoff, shentsize, shnum, shstrndx, PERCPU_SECTION)
    except struct.error:
        raise IntrospectError("truncated ELF headers") from None
    if not loads:
        return None
    if percpu is None:
        percpu = next((memsz for vaddr, _, memsz in loads if vaddr == 0 and is64), 0)
    return KernelLayout(start=min(p for _, p, _ in loads), end=max(p + m for _, p, m in loads), percpu=percpu)


def _section_size(elf: bytes, endian: str, is64: bool, shoff: int, shentsize: int, shnum: int, shstrndx: int,
                  wanted: str) -> int | None:  # fmt: skip
    if not shoff or not shnum or shstrndx >= shnum:
        return None
    fmt, size_at, off_at = (endian + "Q", 32, 24) if is64 else (endian + "I", 20, 16)
    names = struct.unpack_from(fmt, elf, shoff + shstrndx * shentsize + off_at)[0]
    for i in range(shnum):
        at = shoff + i * shentsize
        name_off = struct.unpack_from(endian + "I", elf, at)[0]
        end = elf.find(b"\0", names + name_off, names + name_off + 64)
        if end > 0 and elf[names + name_off : end] == wanted.encode():
            return int(struct.unpack_from(fmt, elf, at + size_at)[0])
    return None


# ---- drivers and firmware -------------------------------------------------------------------

_PCI_ALIAS = re.compile(r"pci:v(\S{8}|\*)d(\S{8}|\*)sv(\S{8}|\*)sd(\S{8}|\*)bc(\S{2}|\*)sc(\S{2}|\*)i(\S{2}|\*)\*?")


def _match(pattern: str, value: str | None) -> bool:
    """fnmatch on one alias field; an unknown value (subsystem, prog-if) matches anything.

    Being optimistic here means a driver bound to particular subsystems is taken as a match: the
    database rarely knows subsystem ids, and a false "no driver" would cry wolf on every laptop.
    """
    if value is None or pattern == "*" or pattern == "*" * len(pattern):
        return True
    return fnmatch.fnmatchcase(value.upper(), pattern.upper())


@dataclass
class ModuleDb:
    """The dom0 kernel's drivers: modules.alias, modules.builtin.modinfo, .modinfo of each .ko."""

    root: Path  # the dom0 tree
    kernel: str  # version, the directory under /lib/modules
    aliases: list[tuple[tuple[str, ...], str]] = field(default_factory=list)
    builtin_modinfo: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, kernel: str) -> ModuleDb:
        db = cls(root=root, kernel=kernel)
        base = root / "lib/modules" / kernel
        for line in _lines(base / "modules.alias"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "alias":
                m = _PCI_ALIAS.fullmatch(parts[1])
                if m:
                    db.aliases.append((m.groups(), parts[2]))
        builtin = base / "modules.builtin.modinfo"
        if builtin.is_file():
            for entry in builtin.read_bytes().split(b"\0"):
                text = entry.decode("utf-8", "replace")
                module, _, rest = text.partition(".")
                key, _, value = rest.partition("=")
                if module and key:
                    db.builtin_modinfo.setdefault(module, {}).setdefault(key, []).append(value)
                    if key == "alias":
                        m = _PCI_ALIAS.fullmatch(value)
                        if m:
                            db.aliases.append((m.groups(), module))
        return db

    def drivers_for(self, pci_id: str, class_code: str) -> list[str]:
        """Modules whose PCI aliases match vendor:device and class (subsystem ids are not known)."""
        vendor, device = (f"0000{x.upper()}" for x in pci_id.split(":"))
        bc, sc = class_code[:2], class_code[2:4]
        prog_if = class_code[4:6] or None
        found: list[str] = []
        for (v, d, sv, sd, fbc, fsc, fi), module in self.aliases:
            if (_match(v, vendor) and _match(d, device) and _match(fbc, bc) and _match(fsc, sc)
                    and _match(fi, prog_if) and _match(sv, None) and _match(sd, None)):  # fmt: skip
                if module not in found:
                    found.append(module)
        return found

    @cached_property
    def _module_paths(self) -> dict[str, Path]:
        paths: dict[str, Path] = {}
        for line in _lines(self.root / "lib/modules" / self.kernel / "modules.dep"):
            rel = line.split(":", 1)[0]
            name = Path(rel).name.split(".ko")[0].replace("-", "_")
            paths[name] = self.root / "lib/modules" / self.kernel / rel
        return paths

    def firmware_for(self, module: str) -> list[str]:
        """The firmware files a module declares (what `modinfo -F firmware` prints).

        Raises IntrospectError when the module's file exists but cannot be read.
        """
        module = module.replace("-", "_")
        if module in self.builtin_modinfo:
            return self.builtin_modinfo[module].get("firmware", [])
        path = self._module_paths.get(module)
        if path is None or not path.is_file():
            return []
        return modinfo(path).get("firmware", [])

    @property
    def compression(self) -> tuple[str, ...]:
        """How the modules are stored, from modules.dep's file names: ("xz",) on trixie, ("none",) on bookworm."""
        kinds = {MODULE_SUFFIXES.get(path.name.rpartition(".ko")[2], "unknown") for path in self._module_paths.values()}
        return tuple(sorted(kinds))

    def has_firmware(self, name: str) -> bool:
        for base in ("lib/firmware", "usr/lib/firmware"):
            for suffix in ("", ".xz", ".zst"):
                if (self.root / base / (name + suffix)).exists():
                    return True
        return False


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def modinfo(path: Path) -> dict[str, list[str]]:
    """The key=value strings of a kernel module's .modinfo section (what `modinfo` prints).

    The module may be plain or compressed (.ko.xz on trixie, .ko.zst or .ko.gz elsewhere); the
    format is told by its magic number. A module that cannot be read raises IntrospectError: an
    empty answer would read as "needs no firmware", which is exactly the wrong fallback.
    """
    try:
        data = path.read_bytes()
    except OSError as e:
        raise IntrospectError(f"{path}: cannot read: {e.strerror}") from None
    if compression_of(data) is not None:
        data = inflate(data, MAX_MODULE_BYTES, str(path))
    try:
        return _modinfo_of_elf(data)
    except (struct.error, ValueError, IndexError):
        raise IntrospectError(f"{path}: not a 64-bit ELF kernel module") from None


def _modinfo_of_elf(data: bytes) -> dict[str, list[str]]:
    if data[:4] != b"\x7fELF" or data[4] != 2:
        raise ValueError("not ELF64")
    endian = "<" if data[5] == 1 else ">"
    shoff = struct.unpack_from(endian + "Q", data, 0x28)[0]
    shentsize, shnum, shstrndx = struct.unpack_from(endian + "HHH", data, 0x3A)
    sections = []
    for i in range(shnum):
        at = shoff + i * shentsize
        name_off = struct.unpack_from(endian + "I", data, at)[0]
        off, size = struct.unpack_from(endian + "QQ", data, at + 24)
        sections.append((name_off, off, size))
    str_off = sections[shstrndx][1]
    info: dict[str, list[str]] = {}
    for name_off, off, size in sections:
        end = data.index(b"\0", str_off + name_off)
        if data[str_off + name_off : end] == b".modinfo":
            for entry in data[off : off + size].split(b"\0"):
                key, sep, value = entry.decode("utf-8", "replace").partition("=")
                if sep:
                    info.setdefault(key, []).append(value)
    return info


# ---- the initrd --------------------------------------------------------------------------------


@dataclass(frozen=True)
class InitrdLayout:
    """How an initrd is laid out: uncompressed cpio archives first, then (usually) one compressed one.

    initramfs-tools puts early microcode, and on trixie the already-compressed modules, in plain
    cpio archives ahead of the compressed main archive; COMPRESS= decides the main archive's
    format, but mkinitramfs falls back to gzip when the chosen compressor is not installed.
    """

    path: Path
    segments: tuple[tuple[str, int], ...]  # ("cpio", bytes) for a plain archive, else (format, bytes)

    @property
    def compression(self) -> str:
        """The main (last) archive's format; "none" when every archive is plain cpio."""
        last = self.segments[-1][0] if self.segments else "cpio"
        return "none" if last == "cpio" else last

    @property
    def uncompressed_bytes(self) -> int:
        """Bytes in plain cpio archives: the kernel copies them as they are."""
        return sum(size for kind, size in self.segments if kind == "cpio")


def initrd_layout(path: Path) -> InitrdLayout:
    """Walk an initrd's concatenated archives by their headers, without unpacking any file."""
    segments: list[tuple[str, int]] = []
    try:
        with path.open("rb") as f:
            total = f.seek(0, 2)
            pos = 0
            while pos < total:
                f.seek(pos)
                head = f.read(8)
                if head[:6] in CPIO_MAGICS:
                    end = _skip_zeros(f, _cpio_end(f, pos, total, path), total)
                    segments.append(("cpio", end - pos))  # with the padding after it: segments add up
                    pos = end
                else:
                    kind = compression_of(head)
                    if kind is None:
                        raise IntrospectError(f"{path}: neither cpio nor a known compression at byte {pos}"
                                              f" (it starts {head[:4].hex()})")  # fmt: skip
                    segments.append((kind, total - pos))
                    break
    except OSError as e:
        raise IntrospectError(f"{path}: cannot read: {e.strerror}") from None
    return InitrdLayout(path=path, segments=tuple(segments))


def _cpio_end(f: Any, pos: int, total: int, path: Path) -> int:
    """The offset just past a newc cpio archive's TRAILER!!! entry that starts at `pos`."""
    while True:
        f.seek(pos)
        header = f.read(110)
        if len(header) < 110 or header[:6] not in CPIO_MAGICS:
            raise IntrospectError(f"{path}: broken cpio header at byte {pos}")
        try:
            filesize, namesize = int(header[54:62], 16), int(header[94:102], 16)
        except ValueError:
            raise IntrospectError(f"{path}: broken cpio header at byte {pos}") from None
        name = f.read(namesize)[:-1]
        pos += (110 + namesize + 3) & ~3
        pos += (filesize + 3) & ~3
        if pos > total:
            raise IntrospectError(f"{path}: cpio entry runs past the end of the file")
        if name == b"TRAILER!!!":
            return pos


def _skip_zeros(f: Any, pos: int, total: int) -> int:
    """Past the zero padding that aligns the next archive (initramfs-tools pads to 512 bytes)."""
    while pos < total:
        f.seek(pos)
        block = f.read(4096)
        stripped = block.lstrip(b"\0")
        if stripped:
            return pos + len(block) - len(stripped)
        pos += len(block)
    return pos


# ---- what dpkg installed ------------------------------------------------------------------------


def dpkg_status(tree: Path) -> dict[str, str]:
    """Installed packages and their versions, from the tree's /var/lib/dpkg/status."""
    versions: dict[str, str] = {}
    status = tree / "var/lib/dpkg/status"
    for block in status.read_text(errors="replace").split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", block, flags=re.M))
        if "Package" in fields and "install ok installed" in fields.get("Status", ""):
            versions[fields["Package"]] = fields.get("Version", "")
    return versions


def package_owning(tree: Path, path: str) -> str | None:
    """The installed package whose file list holds `path` (an absolute path in dom0), as `dpkg -S` says.

    This names the package a boot file came from without knowing its name pattern: Xen's package
    is xen-hypervisor-4.17-amd64 on bookworm and xen-hypervisor-4.20-amd64 on trixie.
    """
    wanted = path.encode()
    for listing in sorted((tree / "var/lib/dpkg/info").glob("*.list")):
        if wanted in listing.read_bytes().splitlines():
            return listing.name.removesuffix(".list").partition(":")[0]
    return None


def upstream_version(version: str) -> str:
    """A Debian version's upstream part, up to its first "+" or "~": 1:4.20.4+63-g7a-0+deb13u1 -> 4.20.4."""
    m = re.fullmatch(r"(?:\d+:)?(.+?)(?:-[^-]+)?", version)
    upstream = m.group(1) if m else version
    return re.split(r"[+~]", upstream)[0]


@dataclass(frozen=True)
class Installed:
    """One package as dpkg recorded it; `file` is the boot file it was looked up by, if any."""

    package: str
    version: str
    file: str | None = None

    @property
    def upstream(self) -> str:
        return upstream_version(self.version)


@dataclass(frozen=True)
class Dom0Versions:
    """What the suite resolved to: the packages that gave Xen, the dom0 kernel and live-boot."""

    xen: Installed | None
    kernel: Installed | None
    live_boot: Installed | None


def dom0_versions(tree: Path) -> Dom0Versions:
    """The installed Xen, kernel and live-boot, found by the /boot files they own (no names assumed)."""
    status = dpkg_status(tree)

    def owner(pattern: str) -> Installed | None:
        found = sorted((tree / "boot").glob(pattern))
        if not found:
            return None
        path = f"/boot/{found[-1].name}"
        package = package_owning(tree, path)
        if package is None or package not in status:
            return None
        return Installed(package, status[package], path)

    live_boot = Installed("live-boot", status["live-boot"]) if "live-boot" in status else None
    return Dom0Versions(xen=owner("xen-*.gz"), kernel=owner("vmlinuz-*"), live_boot=live_boot)


def dom0_platform(tree: Path) -> dict[str, Any]:
    """The facts of a built dom0 tree as JSON-able data, for the manifest and the build summary.

    Each part names the package it came from and its Debian version ("package_version") next to
    the version the part itself states ("version": Xen's from its config, the kernel's release).
    Raises IntrospectError when the kernel or initrd cannot be read.
    """
    versions = dom0_versions(tree)
    xen = xen_facts(tree)
    kernels = sorted((tree / "boot").glob("vmlinuz-*"))
    initrds = sorted((tree / "boot").glob("initrd.img-*"))
    release = kernels[-1].name.removeprefix("vmlinuz-") if kernels else None
    modules = ModuleDb.load(tree, release) if release else None

    def package(p: Installed | None) -> dict[str, str | None]:
        return {"package": p.package if p else None, "package_version": p.version if p else None}

    xen_version = xen.version if xen else (versions.xen.upstream if versions.xen else None)
    return {
        "xen": {**package(versions.xen), "version": xen_version, "options": xen.options if xen else None},
        "kernel": {
            **package(versions.kernel),
            "release": release,
            "compression": kernel_compression(kernels[-1].read_bytes()) if kernels else None,
            "modules_compression": list(modules.compression) if modules else None,
        },
        "initrd": _initrd_summary(initrds[-1]) if initrds else None,
        "live_boot": {
            **package(versions.live_boot),
            "version": versions.live_boot.upstream if versions.live_boot else None,
        },
    }


def _initrd_summary(path: Path) -> dict[str, Any]:
    facts = initrd_layout(path)
    return {"compression": facts.compression, "uncompressed_bytes": facts.uncompressed_bytes,
            "segments": [list(s) for s in facts.segments]}  # fmt: skip


# ---- everything the checks need, gathered once ------------------------------------------------


@dataclass
class BuiltFacts:
    """What the checks may know about the image; None where it is not known (not built yet).

    Gathered once per build (or per `xenlive check`), so the checks stay pure functions of data.
    """

    xen: XenFacts | None = None
    dom0_kernel: KernelFacts | None = None
    guest_kernels: dict[str, KernelFacts] = field(default_factory=dict)
    modules: ModuleDb | None = None
    guest_initrds: dict[str, InitrdFacts] = field(default_factory=dict)
    ramdisk_bytes: dict[str, int] = field(default_factory=dict)
    problems: dict[str, str] = field(default_factory=dict)  # what could not be read: "dom0", NAME, NAME:initrd

    @property
    def built(self) -> bool:
        return self.dom0_kernel is not None
