"""Introspection of the real dom0 a build left in the cache (builder/introspect.py on Debian's files)."""

from __future__ import annotations

import pytest

from builder.introspect import kernel_facts, xen_facts


@pytest.mark.integration
def test_real_debian_kernel_in_cache() -> None:
    """The cached dom0 tree's real kernel: dom0-capable, PVH entry, Xen config without PV32."""
    from builder.context import cache_root

    trees = sorted(cache_root().glob("rootfs/*/tree/boot"))
    if not trees:
        pytest.skip("no cached dom0 tree; run a build first")
    tree = trees[-1].parent
    kernel = sorted((tree / "boot").glob("vmlinuz-*"))[-1]
    k = kernel_facts(kernel)
    assert k.bits == 64 and k.notes.dom0 and k.notes.pvh and k.option("CONFIG_XEN_DOM0") == "y"
    x = xen_facts(tree)
    assert x is not None and not x.enabled("CONFIG_PV32")


@pytest.mark.integration
def test_recorded_guest_memory_facts_are_the_real_kernel_s() -> None:
    """tests/test_guestmem.py checks the minimum against thresholds measured with this kernel; the
    layout it records must be what load_layout reads from the kernel itself."""
    from builder.context import cache_root
    from tests.test_guestmem import BOOKWORM, BOOKWORM_NR_CPUS

    kernels = sorted(cache_root().glob("rootfs/*/tree/boot/vmlinuz-6.1.0-*-amd64"))
    if not kernels:
        pytest.skip("no cached bookworm dom0 tree; run a build first")
    k = kernel_facts(kernels[-1])
    assert k.layout == BOOKWORM and k.nr_cpus == BOOKWORM_NR_CPUS
    assert k.notes.paddr_offset == 0 and k.notes.virt_base == 0xFFFFFFFF80000000
