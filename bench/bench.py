#!/usr/bin/env python3
"""xenlive benchmarks: run by hand (not in CI), print JSON with medians of several runs.

    python bench/bench.py build [--runs N] [--cold]   build times, rebuilds, mastering vs xorriso, memory
    python bench/bench.py boot  [--runs N] [--firmware F] [--media M] [--vs OTHER.iso] [ISO]
                                                     boot-to-READY per stage under QEMU
    python bench/bench.py packages [--runs N]         rebuild after adding a second dom0 package
    python bench/bench.py cold [--runs N] [--vs live-build]
                                                     cold builds of the default profile against the
                                                     hand pipeline (and live-build), in turns

The machine is shared and noisy: quote medians, and compare with xorriso in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import references  # noqa: E402  (bench/references.py, beside this file)

from builder import boottest, cache, qemu  # noqa: E402
from builder.context import BuildContext, cache_root  # noqa: E402
from builder.packages import dom0_packages  # noqa: E402
from builder.pipeline import build, write_manifest  # noqa: E402
from builder.profile import Firmware, load_profile  # noqa: E402
from builder.stages.boot import install_bootloaders  # noqa: E402
from builder.stages.customize import customize  # noqa: E402
from builder.stages.guests import build_guests  # noqa: E402
from builder.stages.iso import master_iso  # noqa: E402
from builder.stages.rootfs import build_rootfs, rootfs_key  # noqa: E402
from builder.stages.squash import squash  # noqa: E402
from builder.stages.xen import install_xen  # noqa: E402


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def timed(fn, *args, **kwargs) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn(*args, **kwargs)
    return time.perf_counter() - start


def bench_build(runs: int, cold: bool) -> dict[str, object]:
    profile = load_profile(None)
    out = Path(tempfile.mkdtemp(prefix="xenlive-bench-"))
    results: dict[str, object] = {"runs": runs}
    try:
        if cold:
            cold_cache = out / "cold-cache"
            results["cold_build_s"] = round(timed(build, profile, out / "cold.iso", cold_cache), 1)
            shutil.rmtree(cold_cache)
        cache_dir = cache_root()
        build(profile, out / "warm.iso", cache_dir)  # warm the cache
        results["rebuild_unchanged_s"] = median([timed(build, profile, out / "r.iso", cache_dir) for _ in range(runs)])
        results["rebuild_overlay_edit_s"] = median(
            [timed(_overlay_edit_build, profile, out, cache_dir, i) for i in range(runs)]
        )
        results.update(_mastering(profile, out, cache_dir, runs))
        results["peak_rss_mib_xenlive_process"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return results


def _overlay_edit_build(profile, out: Path, cache_dir: Path, i: int) -> None:  # type: ignore[no-untyped-def]
    """An overlay-only edit: a copy of the default overlay with one file changed."""
    import dataclasses

    overlay = out / f"overlay-{i}"
    shutil.copytree(profile.base_dir / profile.dom0.overlays[0], overlay, dirs_exist_ok=True)
    (overlay / "etc/bench-edit").write_text(f"edit {i} {time.time()}\n")
    edited = dataclasses.replace(profile, dom0=dataclasses.replace(profile.dom0, overlays=(overlay,)))
    build(edited, out / "edit.iso", cache_dir)


def _mastering(profile, out: Path, cache_dir: Path, runs: int) -> dict[str, object]:  # type: ignore[no-untyped-def]
    """Master the same staged tree with xenlive (pycdlib) and with xorriso -as mkisofs, alternately."""
    work = out / "work"
    ctx = BuildContext(profile=profile, output=out / "m.iso", workdir=work, cache_dir=cache_dir,
                       epoch=int(time.time()))  # fmt: skip
    work.mkdir()
    build_rootfs(ctx)
    ctx.build_id = cache.input_hash({"bench": rootfs_key(ctx)})
    for stage in (install_xen, customize, build_guests, squash, install_bootloaders, write_manifest):
        stage(ctx)
    xorriso_cmd = [
        "xorriso", "-as", "mkisofs", "-quiet", "-o", str(out / "x.iso"), "-V", profile.media.label, "-R", "-J",
        "-isohybrid-mbr", "/usr/lib/ISOLINUX/isohdpfx.bin",
        "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
        "-boot-info-table", "-eltorito-alt-boot", "-e", "boot/grub/efi.img", "-no-emul-boot",
        "-isohybrid-gpt-basdat", str(ctx.staging),
    ]  # fmt: skip
    ours, theirs = [], []
    for _ in range(runs):
        os.sync()
        ours.append(timed(master_iso, ctx))
        os.sync()
        theirs.append(timed(subprocess.run, xorriso_cmd, check=True))
    return {
        "staged_tree_mib": round(sum(p.stat().st_size for p in ctx.staging.rglob("*") if p.is_file()) / 2**20),
        "master_xenlive_s": median(ours),
        "master_xorriso_s": median(theirs),
    }


SECOND_PACKAGES = ("htop", "ncdu", "less", "file", "lsof")  # small, each a new layer over the same base


def bench_packages(runs: int) -> dict[str, object]:
    """The default profile with one extra package (tree), built once so its base and layer are cached;
    then rebuilt with a second package, a different one each run, so each run makes a new package
    layer over the same cached base. A layer left by an earlier bench run is removed first (only that
    entry), so every run really makes its layer; apt's shared downloads are kept, as between edits."""
    import dataclasses

    from builder.stages.pkglayer import extra_packages, layer_key

    if runs > len(SECOND_PACKAGES):
        raise SystemExit(f"at most {len(SECOND_PACKAGES)} runs: one second package each")
    default = load_profile(None)

    def with_packages(*names: str):  # type: ignore[no-untyped-def]
        return dataclasses.replace(default, dom0=dataclasses.replace(default.dom0, packages=names))

    cache_dir = cache_root()
    out = Path(tempfile.mkdtemp(prefix="xenlive-bench-"))
    totals, layers = [], []
    try:
        first = build(with_packages("tree"), out / "one.iso", cache_dir)
        base_key = rootfs_key(first)
        for second in SECOND_PACKAGES[:runs]:
            profile = with_packages("tree", second)
            key = layer_key(base_key, extra_packages(profile))
            for entry in cache.entries(cache_dir):
                if entry.kind == "packages" and entry.key == key:
                    cache.remove(cache_dir, entry)
            start = time.perf_counter()
            ctx = build(profile, out / "two.iso", cache_dir)
            totals.append(time.perf_counter() - start)
            layers.append(ctx.timings["dom0 packages layer"])
            assert ctx.cache_hits == {**ctx.cache_hits, "rootfs": True, "packages": False}, ctx.cache_hits
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"runs": runs, "first_package": "tree", "second_packages": list(SECOND_PACKAGES[:runs]),
            "rebuild_second_package_s": median(totals), "all_s": [round(t, 1) for t in totals],
            "package_layer_step_s": median(layers)}  # fmt: skip


REFERENCES = {"hand": references.hand_pipeline, "live-build": references.live_build}


def bench_cold(runs: int, versus: Sequence[str]) -> dict[str, object]:
    """Cold builds of the default profile's dom0 by xenlive and by each reference (bench/references.py),
    in turns that rotate who goes first, each in an empty directory with nothing cached, all from
    the profile's suite and mirror. Each ISO's size is kept, to show the outputs are alike."""
    profile = load_profile(None)
    suite, mirror = profile.dom0.suite, profile.dom0.mirror
    packages = dom0_packages(suite)
    tools = ["xenlive", "hand", *versus]
    seconds: dict[str, list[float]] = {tool: [] for tool in tools}
    sizes: dict[str, int] = {}
    for i in range(runs):
        for tool in tools[i % len(tools) :] + tools[: i % len(tools)]:
            work = Path(tempfile.mkdtemp(prefix=f"xenlive-bench-{tool}-"))
            try:
                start = time.perf_counter()
                if tool == "xenlive":
                    iso = work / "xenlive.iso"
                    build(profile, iso, work / "cache")
                else:
                    iso = REFERENCES[tool](work / tool, suite, mirror, packages)
                seconds[tool].append(time.perf_counter() - start)
                print(f"run {i + 1}: {tool} {seconds[tool][-1]:.1f} s", file=sys.stderr, flush=True)
                sizes[tool] = iso.stat().st_size
            finally:
                shutil.rmtree(work, ignore_errors=True)
    medians = {tool: median(values) for tool, values in seconds.items()}
    return {"runs": runs, "suite": suite, "mirror": mirror,
            "cold_build_median_s": medians, "all_s": {t: [round(v, 1) for v in vs] for t, vs in seconds.items()},
            "iso_mib": {t: round(size / 2**20) for t, size in sizes.items()},
            "xenlive_vs": {t: round(medians["xenlive"] / medians[t], 2) for t in tools[1:]}}  # fmt: skip


def bench_boot(runs: int, iso: Path | None, firmware: str = "bios", media: str = "cdrom",
               vs: Path | None = None) -> dict[str, object]:  # fmt: skip
    """Boot `iso` `runs` times; with `vs`, boot that ISO in turns with it (new, old, new, old...),
    so that both see the same moments of a noisy machine, and report both."""
    if iso is None:
        iso = Path(tempfile.mkdtemp(prefix="xenlive-bench-")) / "default.iso"
        build(load_profile(None), iso, cache_root())
    opts = qemu.BootOptions(firmware=Firmware(firmware), media=qemu.MediaKind(media))
    isos = [iso] if vs is None else [iso, vs]
    per_stage: dict[Path, dict[str, list[float]]] = {i: {} for i in isos}
    retried: dict[Path, list[str]] = {i: [] for i in isos}
    for _ in range(runs):
        for each in isos:
            result = boottest.boot(each, opts, 900)  # an emulator flake's boot is made again, not counted
            if not result.passed:
                return {"error": result.reason, "stage": result.stage, "iso": str(each)}
            if result.retried:
                retried[each].append(result.retried)
            for stage, seconds in result.stages.items():
                per_stage[each].setdefault(stage, []).append(seconds)

    def figures(each: Path) -> dict[str, object]:
        stages = per_stage[each]
        return {"median_s_per_stage": {k: median(v) for k, v in stages.items()},
                "all_ready_s": stages.get("ready"), "boots_made_again": retried[each]}  # fmt: skip

    out: dict[str, object] = {"runs": runs, "firmware": firmware, "media": media, "accel": result.accel}
    if vs is None:
        return {**out, **figures(iso)}
    return {**out, "iso": {"path": str(iso), **figures(iso)}, "vs": {"path": str(vs), **figures(vs)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    b = sub.add_parser("build")
    b.add_argument("--runs", type=int, default=5)
    b.add_argument("--cold", action="store_true", help="also time a build with an empty cache (downloads)")
    t = sub.add_parser("boot")
    t.add_argument("--runs", type=int, default=3)
    t.add_argument("--firmware", choices=[f.value for f in Firmware], default="bios")
    t.add_argument("--media", choices=[m.value for m in qemu.MediaKind], default="cdrom")
    t.add_argument("--vs", type=Path, help="another ISO, booted in turns with ISO (to compare two builds)")
    t.add_argument("iso", nargs="?", type=Path)
    p = sub.add_parser("packages")
    p.add_argument("--runs", type=int, default=3)
    c = sub.add_parser("cold")
    c.add_argument("--runs", type=int, default=3)
    c.add_argument(
        "--vs",
        action="append",
        choices=["live-build"],
        default=[],
        help="also time this reference tool (the hand pipeline is always timed)",
    )
    args = parser.parse_args()
    import logging

    logging.basicConfig(level=logging.WARNING)
    if args.what == "build":
        result = bench_build(args.runs, args.cold)
    elif args.what == "packages":
        result = bench_packages(args.runs)
    elif args.what == "cold":
        result = bench_cold(args.runs, args.vs)
    else:
        result = bench_boot(args.runs, args.iso, args.firmware, args.media, args.vs)
    print(json.dumps({"benchmark": args.what, **result}, indent=2))


if __name__ == "__main__":
    main()
