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
