"""Facts read from what was built: Xen's build config, kernels' configs and Xen ELF notes, drivers.

Why read files instead of trusting package names: what decides whether an image runs is what is
inside the binaries. Debian's cloud kernel is a "linux-image" too, but has CONFIG_XEN_DOM0 unset;
Debian's Xen is a "xen-hypervisor" too, but is built without 32-bit PV. These facts are in
/boot/xen-*.config, in the kernel's .config and in the Xen ELF notes of the kernel image, and in
the modules' own metadata (modules.alias, the .modinfo section's firmware= entries).

Nothing here runs a program: a bzImage's payload is decompressed in Python and its ELF notes
are parsed directly, so the same code works in unit tests on small synthetic files.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import lzma
import re
import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from builder.initrd import InitrdFacts

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


class IntrospectError(Exception):
    """A file is not what it claims to be (not a kernel, corrupt payload); the message says which."""


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
    version: str
    config: Mapping[str, str]

    def enabled(self, name: str) -> bool:
        return self.config.get(name) == "y"


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
    """Xen's version and build config from the dom0 tree's /boot/xen-*.config."""
    configs = sorted((tree / "boot").glob("xen-*.config"))
    if not configs:
        return None
    config = read_kconfig(configs[-1])
    head = configs[-1].read_text(errors="replace")[:400]
    m = re.search(r"Xen/\S+ (\d+\.\d+(?:\.\d+)?) Configuration", head)
    version = m.group(1) if m else configs[-1].name.removeprefix("xen-").removesuffix(".config")
    return XenFacts(version=version, config=config)


def _decompress(payload: bytes) -> bytes:
    """Inflate a bzImage payload by its magic number; zstd and lz4 need libraries Python lacks."""
    try:
        if payload[:6] == b"\xfd7zXZ\x00":
            return lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(payload, MAX_KERNEL_BYTES)
        if payload[:2] == b"\x1f\x8b":  # a gzip member; the bzImage may pad after it
            return zlib.decompressobj(wbits=31).decompress(payload, MAX_KERNEL_BYTES)
        if payload[:3] == b"BZh":
            return bz2.BZ2Decompressor().decompress(payload, MAX_KERNEL_BYTES)
        if payload[:3] == b"\x5d\x00\x00":
            return lzma.LZMADecompressor(format=lzma.FORMAT_ALONE).decompress(payload, MAX_KERNEL_BYTES)
    except (lzma.LZMAError, zlib.error, OSError, EOFError) as e:
        raise IntrospectError(f"corrupt kernel payload: {e}") from None
    raise IntrospectError(f"unsupported kernel compression (payload starts {payload[:4].hex()})")


def vmlinux_of(image: bytes) -> bytes:
    """The ELF inside a kernel image: the image itself if it is ELF, else a bzImage's payload."""
    if image[:4] == b"\x7fELF":
        return image
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
    return _decompress(payload)


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
        raise IntrospectError(f"{path}: {e}") from None
    bits = 64 if elf[4] == 2 else 32
    if config is None and path.name.startswith("vmlinuz-"):
        candidate = path.with_name("config-" + path.name.removeprefix("vmlinuz-"))
        config = candidate if candidate.is_file() else None
    values = read_kconfig(config) if config else embedded_config(elf)
    return KernelFacts(path=path, bits=bits, notes=notes, config=values, layout=layout)


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

_PCI_ALIAS = re.compile(r"^pci:v(\S{8}|\*)d(\S{8}|\*)sv(\S{8}|\*)sd(\S{8}|\*)bc(\S{2}|\*)sc(\S{2}|\*)i(\S{2}|\*)\*?$")


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
                m = _PCI_ALIAS.match(parts[1])
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
                        m = _PCI_ALIAS.match(value)
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
        """The firmware files a module declares (what `modinfo -F firmware` prints)."""
        module = module.replace("-", "_")
        if module in self.builtin_modinfo:
            return self.builtin_modinfo[module].get("firmware", [])
        path = self._module_paths.get(module)
        if path is None or not path.is_file():
            return []
        return modinfo(path).get("firmware", [])

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
    """The key=value strings of a kernel module's .modinfo section (plain, .xz or .gz module)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        data = lzma.decompress(data)
    elif path.suffix == ".gz":
        data = gzip.decompress(data)
    if data[:4] != b"\x7fELF" or data[4] != 2:
        return {}
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
