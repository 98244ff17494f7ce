"""What takes the room on the medium, for the image-fits-medium rule (builder/checks/profile_rules.py).

When an image does not fit, a number alone does not help; the error lists the biggest
contributors (splitting the dom0 base layer into its largest parts) and what could be dropped.
"""

from __future__ import annotations

from builder import medium
from builder.context import BuildContext
from builder.fsutil import tree_size

# Parts of the dom0 tree worth naming (glob patterns: the toolstack's directory is named by its
# version), with what a user could do about each.
BASE_PARTS = {
    "usr/lib/modules": "kernel modules (needed for real hardware; a smaller kernel flavour is not dom0-capable)",
    "usr/lib/firmware": "device firmware (drop firmware-* packages the targets do not need)",
    "usr/share/locale": "translations (dom0.remove_packages, or fewer packages)",
    "usr/share/i18n": "locale sources (only the profile's locale is compiled)",
    "usr/lib/x86_64-linux-gnu": "shared libraries of dom0's packages (fewer dom0.packages)",
    "usr/lib/xen-[0-9]*": "the Xen toolstack",
    "usr/share": "other shared data (fewer dom0.packages)",
    "usr/bin": "programs (fewer dom0.packages)",
}
OTHER_HINTS = {
    medium.BASE_LAYER: "the dom0 base layer",
    medium.PACKAGES_LAYER: "the package layer: dom0.packages (fewer, or dom0.remove_packages)",
    medium.TOP_LAYER: "the top layer: overlays, files, settings",
    medium.INITRD: "dom0's initramfs (all storage drivers, so it boots on any machine)",
    medium.KERNEL: "dom0's kernel",
    medium.XEN: "the Xen hypervisor",
}


def contributors(ctx: BuildContext) -> list[tuple[str, int, str]]:
    """(what, bytes on the medium, what could be done), biggest first."""
    rows: dict[str, tuple[int, str]] = {}
    for path in ctx.staging.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(ctx.staging).as_posix()
        if rel.startswith(f"{medium.GUESTS}/"):
            name = rel.split("/")[1]
            size, _ = rows.get(f"guest {name}", (0, ""))
            rows[f"guest {name}"] = (size + path.stat().st_size, f"drop guest {name} or build it smaller")
        elif rel in OTHER_HINTS:
            rows[rel] = (path.stat().st_size, OTHER_HINTS[rel])
        else:
            size, _ = rows.get("boot loaders and the rest", (0, ""))
            rows["boot loaders and the rest"] = (size + path.stat().st_size, "ISOLINUX, GRUB, manifest")
    base = ctx.staging / medium.BASE_LAYER
    tree = ctx.base_tree or ctx.rootfs  # the base layer's parts (the package layer has a row of its own)
    if base.is_file() and tree is not None and tree.is_dir():
        ratio = base.stat().st_size / max(1, tree_size(tree))  # squashfs compression, applied evenly
        sizes: dict[str, int] = {}  # each part's size, measured once; a part named earlier is not counted twice
        for pattern, hint in BASE_PARTS.items():
            for found in sorted(tree.glob(pattern)):
                part = found.relative_to(tree).as_posix()
                if part in sizes or not found.is_dir() or found.is_symlink():
                    continue
                sizes[part] = tree_size(found)
                share = sizes[part] - sum(size for c, size in sizes.items() if c.startswith(part + "/"))
                rows[f"  base: /{part} (estimated)"] = (int(share * ratio), hint)
    return sorted(((k, v[0], v[1]) for k, v in rows.items()), key=lambda r: -r[1])
