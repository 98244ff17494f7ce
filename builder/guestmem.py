"""The smallest memory a guest starts with, from the kernel and initrd it boots.

Why compute it: a guest given too little memory passes every other check and then fails at boot,
in one of two ways. Below what Xen's domain builder needs to lay the guest out, `xl create` fails
with a cascade of libxl errors; above that but below what the kernel needs for itself, the guest
starts and dies a few seconds later (out of memory before its init runs). Neither says what to
change, and the limit depends on the files, not on the machine. So both limits are computed from
the files, and the larger is the guest's minimum.

- The domain builder's need (PV) is its own layout, replayed page by page: the kernel's ELF
  segments at their physical addresses, the start-of-day pages, the initial page tables (mapping
  up to a 4 MiB boundary past them, plus 512 KiB), the initrd as it copies it (a gzip one
  inflated), and the guest's p2m list. This is exact: libxenguest fails for one page less.
- The kernel's need is what it holds before its init runs: its loaded image, the initrd twice
  (the archive, and the files unpacked from it into the RAM root), the per-CPU areas and stacks of
  each vCPU, a struct page for every page of the guest (and, for PV, the page tables and p2m that
  map it), and a base the kernel allocates whatever the guest. The base and the per-vCPU cost
  beyond the per-CPU template are measured, not derived: builder/data/guest-memory.yaml holds them,
  with how they were measured (bench/guest_memory.py, bisecting in QEMU).

MARGIN_MIB is added on top: the check's minimum sits a little above the measured threshold, so
run-to-run noise in the kernel's own allocations cannot turn an accepted guest into a failed one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import yaml

from builder.initrd import InitrdFacts
from builder.introspect import BuiltFacts, KernelFacts
from builder.profile.model import MAX_GUEST_MEMORY_MIB, Guest, GuestKind

MIB = 1 << 20
PAGE = 4096
MARGIN_MIB = 2
# The PV domain builder (tools/libs/guest in Xen 4.17): what it adds around the kernel.
PV_MAGIC_PAGES = 3  # start info, xenstore ring, console ring
PV_BOOT_STACK_PAGES = 1
PV_PAD_BYTES = 512 << 10  # what the initial mapping must extend past the boot-time structures
PV_MAP_ALIGN = 4 << 20  # the initial mapping ends on a 4 MiB boundary
PV_P2M_ENTRY = 8  # bytes per guest page in the p2m list
STRUCT_PAGE = 64  # bytes the kernel keeps per 4 KiB page it manages (struct page, x86-64)
PTE = 8  # bytes of page table per 4 KiB page, for a kernel that maps its memory with 4 KiB pages


@dataclass(frozen=True)
class Calibration:
    """What the kernel needs beyond what its files say, per guest type (data/guest-memory.yaml)."""

    base_kib: int  # allocated whatever the guest (early slabs, workqueues, the first processes)
    vcpu_kib: int  # per vCPU beyond the per-CPU template: stacks, per-CPU threads and caches
    initrd_factor: float  # how many times the unpacked files are held at the peak, beside the archive
    inode_bytes: int  # per file unpacked into the RAM root (inode and dentry)
    builder_kib: int  # HVM/PVH: what the domain builder places beside the kernel and initrd


@functools.cache
def calibration() -> dict[str, Calibration]:
    data = yaml.safe_load(resources.files("builder").joinpath("data/guest-memory.yaml").read_text())
    return {kind: Calibration(**values) for kind, values in data["types"].items()}


@dataclass(frozen=True)
class GuestMemory:
    """A guest's minimum memory in MiB, with its two limits and their parts (for messages)."""

    minimum: int  # what the check requires: the larger limit plus MARGIN_MIB
    builder: int  # the domain builder's limit
    kernel: int  # the kernel's limit
    parts: tuple[tuple[str, int], ...]  # the kernel's need, by part, in KiB

    @property
    def binding(self) -> str:
        return "the domain builder" if self.builder >= self.kernel else "the kernel"

    def explain(self) -> str:
        """One line: which limit decides, and the kernel's need by part."""
        parts = ", ".join(f"{name} {kib / 1024:.1f}" for name, kib in self.parts if kib)
        return f"domain builder {self.builder} MiB, kernel {self.kernel} MiB ({parts} MiB)"

    def as_dict(self) -> dict[str, object]:
        return {"minimum": self.minimum, "builder": self.builder, "kernel": self.kernel, "parts": dict(self.parts)}


def _pages(size: int) -> int:
    return -(-size // PAGE)


def pv_builder_fits(memory_mib: int, kernel: KernelFacts, initrd: InitrdFacts | None) -> bool:
    """Whether the PV domain builder can lay this kernel and initrd out in memory_mib: its own
    allocation order, with its own checks (each segment must fit below the guest's last page)."""
    layout = kernel.layout
    assert layout is not None
    total = memory_mib * (MIB // PAGE)
    offset = kernel.notes.paddr_offset or 0
    end = _pages(layout.end - offset)  # the first page after the kernel
    end += PV_MAGIC_PAGES
    extra = PV_BOOT_STACK_PAGES + PV_PAD_BYTES // PAGE
    pages = extra
    while True:  # the initial page tables map up to a 4 MiB boundary past themselves and the padding
        map_end = ((end + pages) * PAGE // PV_MAP_ALIGN + 1) * PV_MAP_ALIGN  # libxenguest's round_up
        if map_end // PAGE - 1 >= total:
            return False  # "not enough memory for initial mapping"
        tables = 3 + map_end // (2 << 20)  # one L4, L3 and L2, an L1 per 2 MiB
        pages = tables + extra
        if end + pages <= map_end // PAGE:
            break
    end = map_end // PAGE
    if initrd is not None:
        end += _pages(initrd.loaded_bytes)  # unmapped: placed after the padding
    if end > total:
        return False
    p2m = _pages(total * PV_P2M_ENTRY)
    p2m_tables = 3 + (p2m * PAGE - 1) // (2 << 20)  # its own L3, L2 and L1s (the L4 is shared)
    if end + p2m - 1 >= total:
        return False
    return end + p2m + p2m_tables <= total


def builder_minimum(kind: str, kernel: KernelFacts, initrd: InitrdFacts | None, cal: Calibration) -> int:
    """The smallest memory (MiB) the domain builder accepts."""
    layout = kernel.layout
    assert layout is not None
    if kind == "pv":  # fits is monotonic in the memory: bisect between what cannot and what can
        low = max(1, (layout.end - (kernel.notes.paddr_offset or 0)) // MIB) - 1  # below its end: cannot
        high = low + 1
        while not pv_builder_fits(high, kernel, initrd) and high < MAX_GUEST_MEMORY_MIB:
            low, high = high, min(2 * high, MAX_GUEST_MEMORY_MIB)
        while high - low > 1:
            mid = (low + high) // 2
            low, high = (low, mid) if pv_builder_fits(mid, kernel, initrd) else (mid, high)
        return high
    # HVM/PVH: the kernel at its physical address, the initrd after it, start info and ACPI tables.
    need = layout.end + (initrd.loaded_bytes if initrd else 0) + cal.builder_kib * 1024
    return -(-need // MIB)


def kernel_parts(kind: str, kernel: KernelFacts, initrd: InitrdFacts | None, vcpus: int,
                 cal: Calibration) -> list[tuple[str, int]]:  # fmt: skip
    """What the kernel holds before its init runs, by part, in KiB (without the per-page costs)."""
    layout = kernel.layout
    assert layout is not None
    loaded = initrd.loaded_bytes if initrd else 0
    unpacked = (initrd.unpacked_bytes or 0) if initrd else 0
    inodes = initrd.inodes if initrd else 0
    return [
        ("kernel image", layout.size // 1024),
        ("initrd", loaded // 1024),
        ("initrd files", int(unpacked * cal.initrd_factor + inodes * cal.inode_bytes) // 1024),
        ("per vCPU", vcpus * (layout.percpu // 1024 + cal.vcpu_kib)),
        ("base", cal.base_kib),
    ]


def per_page_fraction(kind: str) -> float:
    """The share of its memory the kernel spends on managing it: struct pages, and for a PV guest
    the 4 KiB page tables of its direct map and its p2m list."""
    extra = PTE + PV_P2M_ENTRY if kind == "pv" else 0
    return (STRUCT_PAGE + extra) / PAGE


def guest_memory(kind: str, kernel: KernelFacts, initrd: InitrdFacts | None, vcpus: int,
                 cal: Calibration | None = None) -> GuestMemory | None:  # fmt: skip
    """The guest's minimum memory, or None when the kernel's layout or type is not one this knows.
    (cal: other constants than data/guest-memory.yaml's, for bench/guest_memory.py --fit.)"""
    cal = cal or calibration().get(kind)
    if cal is None or kernel.layout is None:
        return None
    builder = builder_minimum(kind, kernel, initrd, cal)
    parts = kernel_parts(kind, kernel, initrd, vcpus, cal)
    fixed = sum(kib for _, kib in parts) * 1024
    need = fixed / (1 - per_page_fraction(kind))
    kernel_mib = -(-int(need) // MIB)
    parts.append(("page management", int(need - fixed) // 1024))
    return GuestMemory(minimum=max(builder, kernel_mib) + MARGIN_MIB, builder=builder, kernel=kernel_mib,
                       parts=tuple(parts))  # fmt: skip


def guest_minimum(guest: Guest, facts: BuiltFacts, *, vcpus: int | None = None) -> GuestMemory | str:
    """A profile's guest's minimum from the facts gathered about its files, or why it is not known.

    The one entry point: the guest-kernels check, the guests stage (guests.tsv, which dom0's
    boot-time check reads) and bench/guest_memory.py all count with it.
    """
    kernel = facts.guest_kernels.get(guest.name)
    if kernel is None:
        return facts.problems.get(guest.name, f"guest {guest.name}'s kernel is not known yet")
    initrd = facts.guest_initrds.get(guest.name)
    if guest.kind != GuestKind.IMAGE or isinstance(guest.initrd, Path):  # it boots with an initrd
        if initrd is None:
            return facts.problems.get(f"{guest.name}:initrd", f"guest {guest.name}'s initrd is not known yet")
        if initrd.unpacked_bytes is None:
            return f"the files in guest {guest.name}'s initrd are not known ({initrd.problem})"
    count = vcpus or guest.vcpus
    if kernel.nr_cpus:
        count = min(count, kernel.nr_cpus)  # the kernel brings up no more
    found = guest_memory(guest.type, kernel, initrd, count)
    if found is None:
        if kernel.layout is None:
            return f"the load layout of {kernel.path.name} is not known"
        return f"the memory {guest.type} guests need is not measured (builder/data/guest-memory.yaml)"
    return found
