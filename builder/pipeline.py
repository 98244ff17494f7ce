"""build(): the whole pipeline, one stage after another (docs/architecture.md, "Pipeline")."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
from pathlib import Path

from builder import cache, medium
from builder.budget import contributors
from builder.checks import ProfileFacts
from builder.checks.gate import gate
from builder.checks.profile_rules import require_fits
from builder.context import BuildContext, source_date_epoch
from builder.errors import UsageError
from builder.fsutil import sha256_file, tree_size
from builder.introspect import dom0_platform
from builder.log import step
from builder.profile import Firmware, Profile, to_data
from builder.run import require_tools
from builder.stages import boot, guests, pkglayer, rootfs
from builder.stages.boot import install_bootloaders
from builder.stages.customize import customize
from builder.stages.guests import build_guests
from builder.stages.iso import master_iso
from builder.stages.pkglayer import build_package_layer
from builder.stages.rootfs import build_rootfs
from builder.stages.squash import squash
from builder.stages.xen import install_xen, kernel_version, package_versions, xen_version

log = logging.getLogger(__name__)


def required_tools(profile: Profile) -> list[str]:
    tools = list(rootfs.REQUIRED_TOOLS)
    if pkglayer.extra_packages(with_guest_dom0_packages(profile)):
        tools += pkglayer.REQUIRED_TOOLS
    for firmware in profile.media.boot:
        tools += boot.REQUIRED_TOOLS[Firmware(firmware)]
    return tools + guests.required_tools(profile)


def build(profile: Profile, output: Path, cache_dir: Path, ignore_checks: tuple[str, ...] = ()) -> BuildContext:
    require_tools(required_tools(profile))
    check_output_path(output)
    profile = with_guest_dom0_packages(profile)
    epoch = source_date_epoch()
    output = output_path(output)
    holds = contextlib.ExitStack()  # the locked work directory, then the cache entries the stages use
    workdir = holds.enter_context(cache.workspace(cache_dir))
    ctx = BuildContext(profile=profile, output=output, workdir=workdir, cache_dir=cache_dir,
                       epoch=epoch, holds=holds)  # fmt: skip
    with holds:
        with step("hardware checks (static)", ctx.timings):
            require_fits(profile, ProfileFacts(), ignore_checks)
            gate(ctx, ignore_checks, built=False)
        with step("dom0 base system", ctx.timings):
            build_rootfs(ctx)
        if pkglayer.extra_packages(profile):
            with step("dom0 packages layer", ctx.timings):
                build_package_layer(ctx)
        with step("hardware checks (built files)", ctx.timings):
            gate(ctx, ignore_checks, built=True)
        ctx.build_id = build_id(ctx)
        with step("Xen and dom0 kernel", ctx.timings):
            install_xen(ctx)
        with step("customize dom0", ctx.timings):
            customize(ctx)
        with step("guests", ctx.timings):
            build_guests(ctx)
        with step("hardware checks (guest files)", ctx.timings):
            gate(ctx, ignore_checks, built=True, guests=True)
        with step("squashfs layers", ctx.timings):
            squash(ctx)
        with step("boot loaders", ctx.timings):
            install_bootloaders(ctx)
        with step("manifest", ctx.timings):
            write_manifest(ctx)
        check_medium(ctx, tree_size(ctx.staging), "the medium's files", ignore_checks)
        with step("master ISO", ctx.timings):
            master_iso(ctx, lambda iso: check_medium(ctx, iso.stat().st_size, "the ISO", ignore_checks))
        write_beside_iso(ctx)
    return ctx


def build_id(ctx: BuildContext) -> str:
    """Names the medium: the profile and the cached dom0 it was built from (the package layer's key
    only where there is one, so a profile without extra packages keeps its id)."""
    inputs = {"profile": to_data(ctx.profile), "rootfs": rootfs.rootfs_key(ctx)}
    if ctx.packages_key:
        inputs["packages"] = ctx.packages_key
    return cache.input_hash(inputs)


def check_medium(ctx: BuildContext, size: int, what: str, ignore: tuple[str, ...]) -> None:
    """The image-fits-medium rule on what has been staged or mastered, with the contributors table."""
    facts = ProfileFacts(medium_bytes=size, medium_what=what, medium_parts=lambda: contributors(ctx))
    require_fits(ctx.profile, facts, ignore)


def with_guest_dom0_packages(profile: Profile) -> Profile:
    """dom0's packages plus what its guests need (qemu-system-xen for hvm guests only); they go into
    the package layer (stages/pkglayer.py), so a profile without such guests has none."""
    extra = [p for p in guests.guest_dom0_packages(profile) if p not in profile.dom0.packages]
    if not extra:
        return profile
    dom0 = dataclasses.replace(profile.dom0, packages=(*profile.dom0.packages, *extra))
    return dataclasses.replace(profile, dom0=dom0)


def output_path(output: Path) -> Path:
    """Where the ISO is written: the directory resolved, the name not, so a symlink given as the output
    is replaced by the ISO and the file it pointed to is left alone (it may be anything of the host's)."""
    return output.parent.resolve() / output.name


def check_output_path(output: Path) -> None:
    """Refuse an output the ISO could not be written to, before any long step starts."""
    parent = output.parent.resolve()
    if not parent.is_dir():
        raise UsageError(f"{output}: directory {parent} does not exist", hint="create it, or choose another -o")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{output}: directory {parent} is not writable", hint="choose another -o")
    if output.is_dir():
        raise UsageError(f"{output} is a directory", hint="give the ISO's file name with -o")


def write_manifest(ctx: BuildContext) -> None:
    """/xenlive/manifest.json: what is on the medium, with every file's sha256."""
    tree = ctx.require_rootfs()
    versions = package_versions(tree)
    files = {}
    for path in sorted(p for p in ctx.staging.rglob("*") if p.is_file()):
        files[path.relative_to(ctx.staging).as_posix()] = sha256_file(path)
    ctx.platform = dom0_platform(tree)
    manifest = {
        "profile": to_data(ctx.profile),
        "dom0": ctx.platform,
        "build_id": ctx.build_id,
        "epoch": ctx.epoch,
        "xen": xen_version(versions),
        "kernel": kernel_version(tree),
        "dom0_packages": versions,
        "files": files,
    }
    target = ctx.staging / medium.MANIFEST
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def write_beside_iso(ctx: BuildContext) -> None:
    """OUT.iso.manifest.json (a copy of the medium's) and OUT.iso's line in SHA256SUMS."""
    shutil.copyfile(ctx.staging / medium.MANIFEST, ctx.output.with_name(ctx.output.name + ".manifest.json"))
    sums = ctx.output.with_name("SHA256SUMS")
    lines = sums.read_text().splitlines() if sums.exists() else []
    lines = [line for line in lines if line.split(maxsplit=1)[-1].lstrip("*") != ctx.output.name]
    ctx.output_sha256 = sha256_file(ctx.output)
    lines.append(f"{ctx.output_sha256}  {ctx.output.name}")
    tmp = sums.with_name(f".SHA256SUMS.tmp-{os.getpid()}")
    tmp.write_text("\n".join(sorted(lines, key=lambda line: line.split()[-1])) + "\n")
    os.replace(tmp, sums)
