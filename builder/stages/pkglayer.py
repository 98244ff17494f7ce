"""The package layer: the profile's extra dom0 packages, installed over the cached base, as a layer
of their own (`live/15-packages.squashfs`), and the merged view of base and layer the later stages read.

Why: the base (mmdebstrap of xenlive's own package list, stages/rootfs.py) takes minutes and is the
same for every profile of a suite and mirror; installing a few packages over it takes seconds. So
the base is keyed without the profile's packages, and adding or removing one in `dom0.packages`
makes only this layer again. A profile without extra packages has no layer at all, and its medium
is what it was before the layer existed.

How: an overlayfs mount with the base tree as its lower directory and an empty upper directory, in
a mount and PID namespace of its own (templates/pkglayer/install.sh), where `apt-get install` runs
in a chroot, with apt's lists and downloads bind-mounted from a cache entry shared by every build
of the suite and mirror (`apt/KEY`), so they stay out of the layer and are fetched once. dpkg
keeps the base's path excludes (DPKG_OPTIONS; the base's own dpkg.cfg.d says the same). The upper
directory, made to stand alone (overlayfs.standalone: whiteouts only), is the layer: its tree is
cached beside its squashfs, keyed by the base's key and the sorted package list.

/boot: a package may regenerate the initramfs (a hook of initramfs-tools) or bring another
kernel. The new files are in the layer's /boot, and everything after this stage reads dom0 through
the merged view, so Xen, the kernel and the initrd that go on the medium, and the checks of built
files, are those of the final system. Like the base's, the layer's /boot files stay out of its
squashfs (rootfs.MEDIUM_FILES).

The console keymap: with console-setup in the layer, the profile's /etc/default/keyboard (the same
file the top layer gets) is put in place and `setupcon --save-only` compiles it into
/etc/console-setup's caches here, once. dom0 loads them at boot (keyboard-setup.service) instead
of compiling the keymap with ckbcomp at every boot, which took 35 s of a CPU under TCG.

A build without root works where it enters its user namespace (builder/userns.py): it may mount
overlayfs there from Linux 5.11 (with `userxattr`); elsewhere the mount fails with a message
that says so (overlayfs.HINT_MOUNT).
"""

from __future__ import annotations

import logging
import os
from importlib import resources
from pathlib import Path

from builder import cache, mmdebstrap, overlayfs
from builder.context import BuildContext
from builder.errors import ProfileError
from builder.fsutil import remove_tree, unmount_below
from builder.introspect import dpkg_status
from builder.log import VERBOSE
from builder.packages import dom0_packages
from builder.profile import Profile, template_context
from builder.run import run
from builder.stages.customize import DOM0_TEMPLATES
from builder.stages.rootfs import DPKG_OPTIONS, SQUASHFS_EXCLUDES, rootfs_key, squashfs_command, squashfs_progress
from builder.templating import render_file

log = logging.getLogger(__name__)

REQUIRED_TOOLS = ["unshare", "mount", "chroot"]
STAGE_VERSION = 1  # bump when the way the layer is made changes
INSTALL_SCRIPT = "templates/pkglayer/install.sh"
# apt inside the chroot: what mmdebstrap's own apt configuration says while it builds the base (no
# recommends, no translations), no binary caches written into the layer, and the base's dpkg excludes.
APT_OPTIONS = (
    "-oApt::Install-Recommends=false",
    "-oAcquire::Languages=none",
    "-oDir::Cache::pkgcache=",
    "-oDir::Cache::srcpkgcache=",
    *(f"-oDPkg::Options::=--{option}" for option in DPKG_OPTIONS),
)
# Files apt and dpkg write that differ from run to run; mmdebstrap removes the same from the base
# (its cleanup/reproducible step), so the layer goes back to the base's version of each.
UNREPRODUCIBLE = (
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/apt/history.log",
    "var/log/apt/term.log",
    "var/log/apt/eipp.log.xz",
    "var/cache/ldconfig/aux-cache",
)
# apt's binary caches: apt 3 (Debian 13) writes them on install even with Dir::Cache::pkgcache empty,
# 88 MB that would double the layer's time; the base has none (mmdebstrap removes them), and apt
# makes them again in dom0 when it needs them.
APT_CACHES = ("var/cache/apt/pkgcache.bin", "var/cache/apt/srcpkgcache.bin")
SQUASHFS = "packages.squashfs"
KEYBOARD = "etc/default/keyboard"


def extra_packages(profile: Profile) -> list[str]:
    """The packages of the layer, sorted: dom0.packages (already without remove_packages, and with what
    the guests need, pipeline.with_guest_dom0_packages) that xenlive's own list does not name."""
    dom0 = profile.dom0
    own = set(dom0_packages(dom0.suite))
    return sorted({p for p in dom0.packages if p not in own})


def keyboard_file(profile: Profile, packages: list[str]) -> str | None:
    """The profile's /etc/default/keyboard as the top layer has it, when the layer installs console-setup."""
    if "console-setup" not in packages:
        return None
    return render_file(DOM0_TEMPLATES / f"{KEYBOARD}.j2", DOM0_TEMPLATES, **template_context(profile))


def layer_key(base_key: str, packages: list[str], keyboard: str | None = None) -> str:
    return cache.input_hash(
        {
            "stage": STAGE_VERSION,
            "base": base_key,
            "packages": sorted(packages),
            "keyboard": keyboard,
            "apt": list(APT_OPTIONS),
            "excludes": SQUASHFS_EXCLUDES,
            "reproducible": list(UNREPRODUCIBLE),
            "left_out": list(APT_CACHES),
        }
    )


def apt_key(profile: Profile) -> str:
    """apt's shared lists and downloads: one entry per suite, mirror and build mode (in a build without
    root their owners are the namespace's ids)."""
    dom0 = profile.dom0
    return cache.input_hash({"kind": "apt", "suite": dom0.suite, "mirror": dom0.mirror, "mode": mmdebstrap.mode()})


def install_command(*, base: Path, upper: Path, work: Path, merged: Path, apt_dir: Path, packages: list[str],
                    update: bool, keyboard: Path | None = None) -> list[str]:  # fmt: skip
    script = Path(str(resources.files("builder").joinpath(INSTALL_SCRIPT)))
    opts = overlayfs.options([base], upper, work, user_xattr=overlayfs.userxattr())
    return [
        "unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--",
        "sh", os.fspath(script), opts, os.fspath(merged),
        os.fspath(apt_dir / "lists"), os.fspath(apt_dir / "archives"), "yes" if update else "no",
        os.fspath(keyboard) if keyboard else "",
        "--", *APT_OPTIONS, "--", *packages,
    ]  # fmt: skip


def has_lists(apt_dir: Path) -> bool:
    return any((apt_dir / "lists").glob("*_Packages*"))


def refuse_removals(profile: Profile, upper: Path) -> None:
    """apt removes what an extra package conflicts with (sysvinit-core takes systemd-sysv away): a
    dom0 without one of xenlive's own packages does not boot, so that is a profile error."""
    status = upper / "var/lib/dpkg/status"
    if not status.is_file():
        return  # nothing was installed: the base's status stands
    installed = dpkg_status(upper)
    gone = [p for p in dom0_packages(profile.dom0.suite) if p not in installed]
    if gone:
        raise ProfileError(
            [f"{profile.where('dom0.packages')}: dom0.packages: installing them removes xenlive's own "
             f"{', '.join(gone)} from dom0"],
            hint="drop the package that conflicts with it (apt-get install -s in a Debian system says which)",
        )  # fmt: skip


def build_package_layer(ctx: BuildContext) -> None:
    """The layer for the profile's extra packages, and ctx.rootfs set to the merged view; nothing at
    all when the profile has none (ctx.rootfs stays the base tree)."""
    packages = extra_packages(ctx.profile)
    base = ctx.base_tree
    if not packages or base is None:
        return
    keyboard = keyboard_file(ctx.profile, packages)
    key = layer_key(rootfs_key(ctx), packages, keyboard)

    def make(tmp: Path) -> list[str]:
        upper, work, merged = tmp / "tree", tmp / "work", tmp / "merged"
        for directory in (upper, work, merged):
            directory.mkdir()
        keyboard_path = None
        if keyboard is not None:
            keyboard_path = tmp / "keyboard"
            keyboard_path.write_text(keyboard)
        with cache.shared_dir(ctx.cache_dir, "apt", apt_key(ctx.profile)) as apt_dir:
            for sub in ("lists/partial", "archives/partial"):
                (apt_dir / sub).mkdir(parents=True, exist_ok=True)
            log.log(VERBOSE, "    apt-get install %s", " ".join(packages))
            command = install_command(base=base, upper=upper, work=work, merged=merged, apt_dir=apt_dir,
                                      packages=packages, update=not has_lists(apt_dir),
                                      keyboard=keyboard_path)  # fmt: skip
            try:
                mmdebstrap.run_for_dom0(command, profile=ctx.profile, key="dom0.packages", epoch=ctx.epoch,
                                        label="dom0 packages")  # fmt: skip
            finally:
                unmount_below(merged)  # the namespace took its mounts with it; this only makes sure
        remove_tree(work)
        remove_tree(merged)
        if keyboard_path is not None:
            keyboard_path.unlink()
        refuse_removals(ctx.profile, upper)
        for rel in (*UNREPRODUCIBLE, *APT_CACHES):
            path = upper / rel
            if path.is_file() and not path.is_symlink():
                path.unlink()
        opaque = overlayfs.standalone(upper, base)
        if opaque:
            log.log(VERBOSE, "    %d opaque directories of the layer written as whiteouts", len(opaque))
        log.log(VERBOSE, "    mksquashfs (zstd) of the package layer")
        run(squashfs_command(upper, tmp / SQUASHFS, SQUASHFS_EXCLUDES), env={"SOURCE_DATE_EPOCH": str(ctx.epoch)},
            output=squashfs_progress("package layer (mksquashfs)"))  # fmt: skip
        sealed = [SQUASHFS] + [f"tree/{rel}" for rel in ("var/lib/dpkg/status",) if (upper / rel).is_file()]
        boot = upper / "boot"
        if boot.is_dir():
            sealed += [f"tree/boot/{p.name}" for p in sorted(boot.iterdir()) if p.is_file() and not p.is_symlink()]
        return sealed

    entry, cached = ctx.holds.enter_context(cache.use(ctx.cache_dir, "packages", key, make))
    ctx.cache_hits["packages"] = cached
    if cached:
        log.log(VERBOSE, "    reusing cached package layer %s", key)
    ctx.packages_squashfs = entry / SQUASHFS
    ctx.packages_key = key
    ctx.rootfs = ctx.holds.enter_context(
        overlayfs.merged_view([entry / "tree", base], ctx.workdir / "dom0", "dom0's base and package layer")
    )
