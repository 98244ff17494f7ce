from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from builder.budget import contributors
from builder.context import BuildContext
from builder.errors import CheckFailed
from builder.pipeline import check_medium as check_budget
from builder.profile import Checks, Media, load_profile


@pytest.fixture
def ctx(tmp_path: Path) -> BuildContext:
    profile = load_profile(None)
    profile = dataclasses.replace(profile, media=dataclasses.replace(profile.media, size_limit=3 << 20))
    c = BuildContext(profile=profile, output=tmp_path / "o.iso", workdir=tmp_path / "w", cache_dir=tmp_path)
    files = {"live/10-base.squashfs": 2 << 20, "live/initrd.img": 1 << 20, "guests/tiny/initrd.img": 512 << 10,
             "isolinux/isolinux.bin": 40 << 10}  # fmt: skip
    for rel, size in files.items():
        (c.staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (c.staging / rel).write_bytes(b"\0" * size)
    tree = tmp_path / "tree"
    (tree / "usr/lib/modules").mkdir(parents=True)
    (tree / "usr/lib/modules/big.ko").write_bytes(b"\0" * (6 << 20))
    (tree / "etc").mkdir()
    (tree / "etc/small").write_bytes(b"\0" * (2 << 20))
    c.rootfs = tree
    return c


def test_contributors_biggest_first_with_base_breakdown(ctx):
    rows = contributors(ctx)
    names = [name for name, _, _ in rows]
    assert names[0] == "live/10-base.squashfs"
    assert "guest tiny" in names and "boot loaders and the rest" in names
    modules = next(r for r in rows if "usr/lib/modules" in r[0])
    assert modules[1] == int((6 << 20) * (2 << 20) / (8 << 20))  # its share of the compressed layer
    assert [r[1] for r in rows] == sorted((r[1] for r in rows), reverse=True)


def test_over_budget_names_contributors_and_the_way_out(ctx):
    with pytest.raises(CheckFailed) as info:
        check_budget(ctx, 4 << 20, "the ISO", ())
    message = info.value.message
    assert "media.size_limit: the ISO: 4194304 bytes, more than media.size_limit (3145728 bytes)" in message
    assert "guest tiny: drop guest tiny" in message
    assert "--ignore-check image-fits-medium" in (info.value.hint or "")
    assert info.value.exit_code == 3


def test_within_budget_or_ignored_passes(ctx):
    check_budget(ctx, 3 << 20, "the ISO", ())
    check_budget(ctx, 4 << 20, "the ISO", ("image-fits-medium",))
    skipped = dataclasses.replace(ctx.profile, checks=Checks(skip=("image-fits-medium",)))
    check_budget(dataclasses.replace(ctx, profile=skipped), 4 << 20, "the ISO", ())
    unlimited = dataclasses.replace(ctx.profile, media=Media())
    check_budget(dataclasses.replace(ctx, profile=unlimited), 1 << 40, "the ISO", ())


def test_xen_toolstack_found_whatever_its_version(ctx):
    tree = ctx.rootfs
    (tree / "usr/lib/xen-4.20/bin").mkdir(parents=True)
    (tree / "usr/lib/xen-4.20/bin/xl").write_bytes(b"\0" * (1 << 20))
    (tree / "usr/lib/xen-common").mkdir()
    rows = {name: hint for name, _, hint in contributors(ctx)}
    assert rows["  base: /usr/lib/xen-4.20 (estimated)"] == "the Xen toolstack"
    assert not any("xen-common" in name for name in rows)


def test_hvm_guests_bring_their_device_model_into_dom0(tmp_path: Path) -> None:
    from builder.pipeline import with_guest_dom0_packages

    plain = load_profile(None)
    assert with_guest_dom0_packages(plain) is plain  # the cached dom0 stays the same
    (tmp_path / "d.iso").write_bytes(b"x")
    import hashlib

    digest = hashlib.sha256(b"x").hexdigest()
    (tmp_path / "p.yaml").write_text(
        "name: p\nguests:\n  - {name: w, kind: image, type: hvm, cdrom: d.iso, cdrom_sha256: " + digest + "}\n"
    )
    packages = with_guest_dom0_packages(load_profile(tmp_path / "p.yaml")).dom0.packages
    assert "qemu-system-xen" in packages


def test_output_paths_that_cannot_be_written_are_refused_first(tmp_path: Path) -> None:
    from builder.errors import UsageError
    from builder.pipeline import check_output_path

    with pytest.raises(UsageError, match="does not exist"):
        check_output_path(tmp_path / "missing/out.iso")
    (tmp_path / "dir.iso").mkdir()
    with pytest.raises(UsageError, match="is a directory"):
        check_output_path(tmp_path / "dir.iso")
    check_output_path(tmp_path / "fine.iso")


def test_beside_the_iso_its_manifest_and_one_sha256sums_line_per_iso(ctx: BuildContext) -> None:
    import hashlib

    from builder.pipeline import write_beside_iso

    out = ctx.output
    (ctx.staging / "xenlive").mkdir(parents=True)
    (ctx.staging / "xenlive/manifest.json").write_text('{"files": {}}\n')
    out.write_bytes(b"new iso")
    (out.parent / "SHA256SUMS").write_text(f"{'0' * 64}  {out.name}\n{'1' * 64}  a.iso\n{'2' * 64}  z.iso\n")
    write_beside_iso(ctx)
    lines = (out.parent / "SHA256SUMS").read_text().splitlines()
    assert lines == [
        f"{'1' * 64}  a.iso",
        f"{hashlib.sha256(b'new iso').hexdigest()}  {out.name}",
        f"{'2' * 64}  z.iso",
    ]
    assert (out.parent / f"{out.name}.manifest.json").read_text() == '{"files": {}}\n'
    assert ctx.output_sha256 == hashlib.sha256(b"new iso").hexdigest()
