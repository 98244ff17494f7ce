"""The medium's size budget: the staged files (and then the ISO) against media.size_limit.

When an image does not fit, a number alone does not help; the error lists the biggest
contributors (splitting the dom0 base layer into its largest parts) and what could be dropped.
"""

from __future__ import annotations

from builder.context import BuildContext
from builder.errors import CheckFailed
from builder.fsutil import tree_size

CHECK_ID = "image-fits-medium"  # the same check the hardware gate estimates earlier
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
    "live/10-base.squashfs": "the dom0 base layer",
    "live/20-custom.squashfs": "the top layer: overlays, files, settings",
    "live/initrd.img": "dom0's initramfs (all storage drivers, so it boots on any machine)",
    "live/vmlinuz": "dom0's kernel",
    "boot/xen.gz": "the Xen hypervisor",
}


def contributors(ctx: BuildContext) -> list[tuple[str, int, str]]:
    """(what, bytes on the medium, what could be done), biggest first."""
    rows: dict[str, tuple[int, str]] = {}
    for path in ctx.staging.rglob("*"):
        if not path.is_file():
            continue
        rel = path.relative_to(ctx.staging).as_posix()
        if rel.startswith("guests/"):
            name = rel.split("/")[1]
            size, _ = rows.get(f"guest {name}", (0, ""))
            rows[f"guest {name}"] = (size + path.stat().st_size, f"drop guest {name} or build it smaller")
        elif rel in OTHER_HINTS:
            rows[rel] = (path.stat().st_size, OTHER_HINTS[rel])
        else:
            size, _ = rows.get("boot loaders and the rest", (0, ""))
            rows["boot loaders and the rest"] = (size + path.stat().st_size, "ISOLINUX, GRUB, manifest")
    base = ctx.staging / "live/10-base.squashfs"
    tree = ctx.rootfs
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


def check_budget(ctx: BuildContext, size: int, what: str, ignore: tuple[str, ...]) -> None:
    """Raise CheckFailed with the contributors table when `size` exceeds media.size_limit."""
    limit = ctx.profile.media.size_limit
    if limit is None or size <= limit or CHECK_ID in ignore or CHECK_ID in ctx.profile.checks.skip:
        return
    lines = [f"{what} needs {size / 2**20:.0f} MiB, more than media.size_limit ({limit / 2**20:.0f} MiB);"
             " the biggest contributors:"]  # fmt: skip
    for name, nbytes, hint in contributors(ctx)[:12]:
        lines.append(f"  {nbytes / 2**20:8.1f} MiB  {name}: {hint}")
    raise CheckFailed("\n".join(lines), hint=f"raise media.size_limit, drop what the table names, "
                                             f"or build anyway with --ignore-check {CHECK_ID}")  # fmt: skip
