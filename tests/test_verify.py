"""`xenlive verify` against a tampering corpus: small real hybrid ISOs made by xenlive's own mastering.

Each ISO is mastered from a staged tree the way `build` stages one (boot loaders from the host, a
manifest listing every file), without mmdebstrap: about a second each. The pristine ISO must pass;
every mutation must be caught and named.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pycdlib
import pytest

from builder.context import BuildContext
from builder.errors import UsageError
from builder.fsutil import sha256_file
from builder.profile import Firmware, load_profile, to_data
from builder.stages.boot import install_bootloaders
from builder.stages.iso import master_iso
from builder.verify import Verdict, verify_iso

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("grub-mkimage", "mkfs.vfat", "mcopy"))
    or not Path("/usr/lib/ISOLINUX/isolinux.bin").exists(),
    reason="host tools not installed (scripts/setup installs them)",
)

BUILD_ID = "0123abcd"
BOTH = ("bios", "uefi")
ALL = ("bios", "uefi", "uefi-ia32")
SECTOR, BLOCK = 512, 2048


def squashfs(size: int) -> bytes:
    """Enough of a squashfs image for verify's header check: the magic and bytes_used."""
    data = bytearray(size)
    data[:4] = b"hsqs"
    struct.pack_into("<Q", data, 40, size)
    return bytes(data)


GUEST_KERNEL = b"the kernel two guests share" * 200  # mastered once, under both names
PAYLOAD = {"boot/xen.gz": b"xen", "live/vmlinuz": b"kernel", "live/10-base.squashfs": squashfs(5000),
           "guests/a/vmlinuz": GUEST_KERNEL, "guests/b/vmlinuz": GUEST_KERNEL}  # fmt: skip


def _profile(boot: tuple[str, ...]) -> Any:
    profile = load_profile(None)
    media = dataclasses.replace(profile.media, boot=tuple(Firmware(b) for b in boot))
    return dataclasses.replace(profile, media=media)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Callable[[tuple[str, ...]], Path]:
    """A staged medium per firmware set (boot loaders installed once: grub-mkimage is the slow part)."""
    trees: dict[tuple[str, ...], Path] = {}

    def get(boot: tuple[str, ...]) -> Path:
        if boot not in trees:
            base = tmp_path_factory.mktemp("staged")
            ctx = BuildContext(profile=_profile(boot), output=base / "unused.iso", workdir=base / "w",
                               cache_dir=base, build_id=BUILD_ID)  # fmt: skip
            for rel, data in PAYLOAD.items():
                (ctx.staging / rel).parent.mkdir(parents=True, exist_ok=True)
                (ctx.staging / rel).write_bytes(data)
            install_bootloaders(ctx)
            trees[boot] = ctx.staging
        return trees[boot]

    return get


def manifest_for(staging: Path, boot: tuple[str, ...]) -> dict[str, Any]:
    """What pipeline.write_manifest records (less the package lists, which verify does not read)."""
    files = {p.relative_to(staging).as_posix(): sha256_file(p) for p in sorted(staging.rglob("*")) if p.is_file()}
    return {"profile": to_data(_profile(boot)), "build_id": BUILD_ID, "epoch": 0, "files": files}


@pytest.fixture
def master(staged, tmp_path: Path):
    """master(boot=..., edit=..., raw=..., extra=...) -> a freshly mastered ISO in its own directory."""
    count = iter(range(100))

    def make(boot: tuple[str, ...] = BOTH, *, edit: Callable[[dict[str, Any]], None] | None = None,
             raw: bytes | None = None, extra: dict[str, bytes] | None = None) -> Path:  # fmt: skip
        base = tmp_path / f"iso{next(count)}"
        ctx = BuildContext(profile=_profile(boot), output=base / "x.iso", workdir=base / "w", cache_dir=base,
                           build_id=BUILD_ID)  # fmt: skip
        shutil.copytree(staged(boot), ctx.staging)
        for rel, data in (extra or {}).items():
            (ctx.staging / rel).parent.mkdir(parents=True, exist_ok=True)
            (ctx.staging / rel).write_bytes(data)
        manifest = manifest_for(ctx.staging, boot)
        if edit is not None:
            edit(manifest)
        (ctx.staging / "xenlive/manifest.json").write_bytes(raw if raw is not None else json.dumps(manifest).encode())
        master_iso(ctx)
        return ctx.output

    return make


@pytest.fixture(scope="module")
def pristine(staged, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The untouched BIOS+UEFI (x64 and IA32) ISO that every tampering case starts from (mastered once)."""
    base = tmp_path_factory.mktemp("pristine")
    ctx = BuildContext(profile=_profile(ALL), output=base / "x.iso", workdir=base / "w", cache_dir=base,
                       build_id=BUILD_ID)  # fmt: skip
    shutil.copytree(staged(ALL), ctx.staging)
    (ctx.staging / "xenlive/manifest.json").write_text(json.dumps(manifest_for(ctx.staging, ALL)))
    master_iso(ctx)
    return ctx.output


@dataclasses.dataclass
class Layout:
    """Where things are in the pristine ISO, read with pycdlib, so mutations can aim at them."""

    extents: dict[str, tuple[int, int]]  # Rock Ridge path -> (byte offset, length)
    catalog: int  # byte offset of the boot catalogue
    volume: int  # bytes in the ISO 9660 volume
    joliet_dirs: dict[str, int]  # Joliet directory path -> byte offset of its records
    size: int  # bytes in the image


def layout_of(iso: Path) -> Layout:
    fs = pycdlib.PyCdlib()
    fs.open(str(iso))
    try:
        extents, joliet_dirs = {}, {}
        for dirpath, _dirs, files in fs.walk(rr_path="/"):
            for name in files:
                path = f"{dirpath.rstrip('/')}/{name}"
                record = fs.get_record(rr_path=path)
                extents[path] = (record.extent_location() * BLOCK, record.get_data_length())
        for dirpath, _dirs, _files in fs.walk(joliet_path="/"):
            joliet_dirs[dirpath] = fs.get_record(joliet_path=dirpath).extent_location() * BLOCK
        volume = fs.pvd.space_size * BLOCK
    finally:
        fs.close()
    data = iso.read_bytes()
    (catalog_lba,) = struct.unpack_from("<I", data, 17 * BLOCK + 71)
    return Layout(extents, catalog_lba * BLOCK, volume, joliet_dirs, len(data))


def tampered(iso: Path, mutate: Callable[[bytearray, Layout], bytearray | None], where: Path) -> Path:
    data = bytearray(iso.read_bytes())
    changed = mutate(data, layout_of(iso))
    out = where / "tampered.iso"
    out.write_bytes(changed if changed is not None else data)
    return out


def flip(offset: int | Callable[[Layout], int]) -> Callable[[bytearray, Layout], None]:
    def mutate(data: bytearray, layout: Layout) -> None:
        data[offset(layout) if callable(offset) else offset] ^= 0x01

    return mutate


def flip_in(path: str, at: int) -> Callable[[bytearray, Layout], None]:
    def mutate(data: bytearray, layout: Layout) -> None:
        data[layout.extents[path][0] + at] ^= 0x01

    return mutate


def put(offset: int | Callable[[Layout], int], value: bytes) -> Callable[[bytearray, Layout], None]:
    def mutate(data: bytearray, layout: Layout) -> None:
        at = offset(layout) if callable(offset) else offset
        data[at : at + len(value)] = value

    return mutate


def gpt_field(offset: int, value: bytes) -> Callable[[bytearray, Layout], None]:
    """Set a primary GPT header field and fix the header CRC, as a careful forger would."""

    def mutate(data: bytearray, _layout: Layout) -> None:
        header = SECTOR + offset
        data[header : header + len(value)] = value
        data[SECTOR + 16 : SECTOR + 20] = bytes(4)
        struct.pack_into("<I", data, SECTOR + 16, zlib.crc32(bytes(data[SECTOR : SECTOR + 92])))

    return mutate


def joliet_points_elsewhere(data: bytearray, layout: Layout) -> None:
    """Point the Joliet record of /boot/grub/grub.cfg into BOOTX64.EFI (the Rock Ridge record stays)."""
    offset, _length = layout.extents["/boot/grub/grub.cfg"]
    other = layout.extents["/EFI/BOOT/BOOTX64.EFI"][0] // BLOCK + 10
    both_endian = struct.pack("<I", offset // BLOCK) + struct.pack(">I", offset // BLOCK)
    directory = layout.joliet_dirs["/boot/grub"]
    at = data.index(both_endian, directory, directory + BLOCK)
    data[at : at + 8] = struct.pack("<I", other) + struct.pack(">I", other)


def catalog_at(entry_offset: int) -> Callable[[Layout], int]:
    return lambda layout: layout.catalog + entry_offset


TAMPERING = {
    "a changed file": (flip_in("/boot/grub/grub.cfg", 10), "/boot/grub/grub.cfg: sha256 differs from the manifest"),
    "a changed squashfs": (flip_in("/live/10-base.squashfs", 1000), "/live/10-base.squashfs: sha256 differs"),
    "isolinux.bin code": (flip_in("/isolinux/isolinux.bin", 200),
                          "/isolinux/isolinux.bin: sha256 (boot-info table masked) differs from the manifest"),
    "isolinux.bin boot-info table": (flip_in("/isolinux/isolinux.bin", 12),
                                     "/isolinux/isolinux.bin boot-info table file LBA is "),
    "isolinux.bin table's reserved bytes": (flip_in("/isolinux/isolinux.bin", 40),
                                            "/isolinux/isolinux.bin boot-info table reserved area differs"),
    "the EFI image": (flip_in("/boot/grub/efi.img", 70000), "/boot/grub/efi.img: sha256 differs from the manifest"),
    "BOOTX64.EFI": (flip_in("/EFI/BOOT/BOOTX64.EFI", 5000), "/EFI/BOOT/BOOTX64.EFI: sha256 differs"),
    "BOOTIA32.EFI": (flip_in("/EFI/BOOT/BOOTIA32.EFI", 5000), "/EFI/BOOT/BOOTIA32.EFI: sha256 differs"),
    "MBR boot code": (flip(100), "MBR boot code differs from what xenlive writes"),
    "MBR's isolinux.bin address": (flip(432), "MBR boot code's address of isolinux.bin (512-byte LBA) is "),
    "MBR disk signature": (flip(441), "MBR disk signature is "),
    "MBR partition entry": (flip(462 + 8), "MBR partition entry 2 differs from what xenlive writes"),
    "a fifth partition in the MBR's spare bytes": (flip(437), "MBR reserved area differs"),
    "MBR boot signature": (flip(510), "MBR boot signature differs"),
    "boot record's catalogue pointer": (flip(17 * BLOCK + 71), "El Torito boot record's boot catalogue LBA is "),
    "catalogue validation entry": (put(catalog_at(1), b"\xef"), "boot catalogue validation entry differs"),
    "catalogue entry 1 load RBA": (put(catalog_at(32 + 8), struct.pack("<I", 20)),
                                   "boot catalogue entry 1 load RBA is 20, expected "),
    "catalogue entry 1 load size": (put(catalog_at(32 + 6), struct.pack("<H", 8)),
                                    "boot catalogue entry 1 load size (512-byte sectors) is 8, expected 4"),
    "catalogue entry 2 load size": (put(catalog_at(96 + 6), struct.pack("<H", 4)),
                                    "boot catalogue entry 2 load size (512-byte sectors) is 4, expected 4096"),
    "catalogue entry 2 not bootable": (put(catalog_at(96), b"\x00"), "boot catalogue entry 2 boot indicator is 0"),
    "catalogue with an extra entry": (put(catalog_at(128), b"\x88"), "boot catalogue after its last entry differs"),
    "primary GPT partition entry": (flip(2 * SECTOR + 40), "primary GPT partition entry 1 differs"),
    "primary GPT header CRC": (flip(SECTOR + 16), "primary GPT header CRC is "),
    "GPT with a huge entry count": (gpt_field(80, struct.pack("<I", 0xFFFFFFFF)),
                                    "primary GPT header number of partition entries is 4294967295, expected 128"),
    "GPT entry array past the end": (gpt_field(72, struct.pack("<Q", 1 << 60)),
                                     "primary GPT header partition array LBA is "),
    "GPT backup header past the end": (gpt_field(32, struct.pack("<Q", 1 << 62)),
                                       "primary GPT header other header's LBA is "),
    "GPT with huge entries": (gpt_field(84, struct.pack("<I", 1 << 31)), "primary GPT header partition entry size is "),
    "system area after the GPT": (flip(20000), "system area after the GPT differs"),
    "backup GPT header": (flip(lambda lay: lay.size - SECTOR + 60), "backup GPT header disk GUID differs"),
    "backup GPT partition entry": (flip(lambda lay: lay.size - 33 * SECTOR + 130),
                                   "backup GPT partition entry 2 differs"),
    "padding after the volume": (flip(lambda lay: lay.volume + 100), "padding after the ISO 9660 volume differs"),
    "appended bytes": (lambda d, _l: d + b"hidden" * 100, "600 appended bytes after the backup GPT"),
    "a truncated image": (lambda d, _l: d[:-SECTOR], "bytes, 512 short of the"),
    "Joliet name pointing elsewhere": (joliet_points_elsewhere,
                                       "Joliet name /boot/grub/grub.cfg: points at data no checked file has"),
}  # fmt: skip


def test_pristine_iso_passes_with_a_warning_that_the_manifest_vouches_for_itself(pristine):
    verdict = verify_iso(pristine)
    assert verdict.problems == []
    assert verdict.warnings == [
        f"{pristine}: no out-of-band sha256 (--sha256, or a line for x.iso in SHA256SUMS beside it): "
        "the manifest on the medium was only checked against itself"
    ]


@pytest.mark.parametrize("boot", [("bios",), ("uefi",), BOTH, ("uefi-ia32",), ("bios", "uefi-ia32"), ALL],
                         ids="+".join)  # fmt: skip
def test_each_firmware_set_passes_untouched(master, boot):
    iso = master(boot)
    assert verify_iso(iso, sha256=sha256_file(iso)).problems == []


@pytest.mark.parametrize("case", TAMPERING, ids=str)
def test_tampering_is_caught_and_named(pristine, tmp_path, case):
    mutate, expected = TAMPERING[case]
    verdict = verify_iso(tampered(pristine, mutate, tmp_path))
    assert verdict.problems, f"{case}: not detected"
    assert any(expected in p for p in verdict.problems), verdict.problems


def test_a_change_to_data_two_names_share_is_caught_under_both(pristine, tmp_path):
    layout = layout_of(pristine)
    assert layout.extents["/guests/a/vmlinuz"] == layout.extents["/guests/b/vmlinuz"]  # one copy of the bytes
    problems = verify_iso(tampered(pristine, flip_in("/guests/b/vmlinuz", 100), tmp_path)).problems
    assert problems == [f"/guests/{g}/vmlinuz: sha256 differs from the manifest" for g in "ab"]


def test_bytes_missing_or_added_at_the_end_are_one_problem_each(pristine, tmp_path):
    size = pristine.stat().st_size
    short = verify_iso(tampered(pristine, lambda d, _l: d[:-SECTOR], tmp_path)).problems
    assert short == [f"image is {size - SECTOR} bytes, 512 short of the {size} xenlive writes: truncated"]
    assert verify_iso(tampered(pristine, lambda d, _l: d + bytes(1), tmp_path)).problems == [
        "1 appended bytes after the backup GPT"
    ]


def test_each_case_also_fails_the_out_of_band_digest(pristine, tmp_path):
    """Structure aside, any changed byte fails --sha256 of the pristine image."""
    digest = sha256_file(pristine)
    for case, (mutate, _expected) in TAMPERING.items():
        verdict = verify_iso(tampered(pristine, mutate, tmp_path), sha256=digest)
        assert any(f"differs from {digest} given by --sha256" in p for p in verdict.problems), case


def rewrite_file_and_manifest(data: bytearray, layout: Layout) -> None:
    """Change grub.cfg and put its new digest into the manifest: the structure stays flawless."""
    offset, length = layout.extents["/boot/grub/grub.cfg"]
    old_cfg = bytes(data[offset : offset + length])
    data[offset : offset + length] = old_cfg.replace(b"Xen", b"Evl")
    m_offset, m_length = layout.extents["/xenlive/manifest.json"]
    manifest = bytes(data[m_offset : m_offset + m_length])
    old, new = hashlib.sha256(old_cfg).hexdigest(), hashlib.sha256(data[offset : offset + length]).hexdigest()
    assert manifest.count(old.encode()) == 1
    data[m_offset : m_offset + m_length] = manifest.replace(old.encode(), new.encode())


def test_manifest_rewritten_to_match_is_caught_only_by_the_out_of_band_digest(pristine, tmp_path):
    digest = sha256_file(pristine)
    forged = tampered(pristine, rewrite_file_and_manifest, tmp_path)
    alone = verify_iso(forged)
    assert alone.problems == [] and "only checked against itself" in alone.warnings[0]
    given = verify_iso(forged, sha256=digest)
    assert given.problems == [f"{forged}: sha256 {sha256_file(forged)} differs from {digest} given by --sha256"]
    (tmp_path / "SHA256SUMS").write_text(f"{digest}  {forged.name}\n")
    beside = verify_iso(forged)
    assert beside.problems == [f"{forged}: sha256 {sha256_file(forged)} differs from {digest} given by "
                               f"{tmp_path / 'SHA256SUMS'}"]  # fmt: skip


# --- the out-of-band digest ------------------------------------------------------------------------


def copy_of(iso: Path, where: Path) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    out = where / iso.name
    shutil.copyfile(iso, out)
    return out


def test_sha256sums_beside_the_iso_is_used(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    sums = tmp_path / "out/SHA256SUMS"
    sums.write_text(f"{'0' * 64}  other.iso\n{sha256_file(iso)} *x.iso\n")
    verdict = verify_iso(iso)
    assert verdict == Verdict([], [], str(sums))


def test_sha256sums_without_a_line_for_the_iso_is_said(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    (tmp_path / "out/SHA256SUMS").write_text(f"{sha256_file(iso)}  x.iso.bak\nnot a line\n")
    verdict = verify_iso(iso)
    assert verdict.problems == []
    assert verdict.warnings[0] == f"{tmp_path / 'out/SHA256SUMS'} has no line for x.iso"
    assert "only checked against itself" in verdict.warnings[1]


def test_sha256sums_with_two_digests_for_the_iso_fails(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    (tmp_path / "out/SHA256SUMS").write_text(f"{sha256_file(iso)}  x.iso\n{'a' * 64}  x.iso\n")
    verdict = verify_iso(iso)
    assert len(verdict.problems) == 1 and "lists x.iso with different digests" in verdict.problems[0]


def test_a_fifo_named_sha256sums_is_not_read(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    os.mkfifo(tmp_path / "out/SHA256SUMS")
    verdict = run_with_timeout(lambda: verify_iso(iso))
    assert verdict.problems == []
    assert verdict.warnings[0] == f"{tmp_path / 'out/SHA256SUMS'}: not a regular file; not used"


def test_sha256_option_accepts_upper_case_and_refuses_garbage(pristine):
    assert verify_iso(pristine, sha256=sha256_file(pristine).upper()).digest_source == "--sha256"
    for bad in ("", "abc", "g" * 64, "a" * 65, "-a"):
        with pytest.raises(UsageError, match="--sha256: expected 64 hexadecimal digits"):
            verify_iso(pristine, sha256=bad)


# --- the manifest ----------------------------------------------------------------------------------


def drop(*path: str) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def setting(value: Any, *path: str) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        node = manifest
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


MANIFESTS = {
    "lists nothing": ({"edit": setting({}, "files")}, "files: lists no files, so it vouches for nothing"),
    "no files key": ({"edit": drop("files")}, "files: expected an object mapping paths to sha256 digests, got nothing"),
    "files as a list": ({"edit": setting(["boot/xen.gz"], "files")}, "got list"),
    "a digest that is a number": ({"edit": setting(5, "files", "boot/xen.gz")},
                                  "files: boot/xen.gz: expected a sha256 as 64 lowercase hex digits, got 5"),
    "a path that climbs": ({"edit": setting("0" * 64, "files", "../etc/passwd")},
                           "files: '../etc/passwd' is not a relative path on the medium"),
    "no build_id": ({"edit": drop("build_id")}, "build_id: expected 8 to 64 lowercase hex digits, got nothing"),
    "a build_id that is a list": ({"edit": setting([1], "build_id")}, "build_id: expected 8 to 64 lowercase hex"),
    "no profile": ({"edit": drop("profile")}, "profile.media: expected an object, got nothing"),
    "boot as a string": ({"edit": setting("bios", "profile", "media", "boot")},
                         "profile.media.boot: expected a list of distinct 'bios', 'uefi', 'uefi-ia32', got \"bios\""),
    "boot twice": ({"edit": setting(["bios", "bios"], "profile", "media", "boot")}, "profile.media.boot: expected"),
    "an unknown firmware": ({"edit": setting(["bios", "coreboot"], "profile", "media", "boot")},
                            "profile.media.boot: expected"),
    "a size limit that is true": ({"edit": setting(True, "profile", "media", "size_limit")},
                                  "profile.media.size_limit: expected a positive number of bytes, got true"),
    "a size limit that is text": ({"edit": setting("cd-700", "profile", "media", "size_limit")},
                                  "profile.media.size_limit: expected a positive number of bytes"),
    "not JSON": ({"raw": b"{'files': }"}, "not valid JSON (JSONDecodeError"),
    "not UTF-8": ({"raw": b"\xff{}"}, "not valid JSON (UnicodeDecodeError"),
    "deeply nested": ({"raw": b"[" * 100_000 + b"]" * 100_000}, "not valid JSON (RecursionError"),
    "a list": ({"raw": b"[]"}, "expected a JSON object, got list"),
}  # fmt: skip


@pytest.mark.parametrize("case", MANIFESTS, ids=str)
def test_manifest_of_the_wrong_shape_is_refused_and_named(master, case):
    kwargs, expected = MANIFESTS[case]
    verdict = verify_iso(master(**kwargs))
    assert verdict.problems, case
    assert all(p.startswith("/xenlive/manifest.json: ") for p in verdict.problems), verdict.problems
    assert any(expected in p for p in verdict.problems), verdict.problems


def test_a_manifest_full_of_bad_entries_is_summed_up(master):
    problems = verify_iso(master(edit=setting({f"f{i}": i for i in range(5000)}, "files"))).problems
    assert len(problems) == 11 and problems[-1] == "/xenlive/manifest.json: files: 4990 more entries like these"


def test_files_and_manifest_disagreeing_are_named(master):
    def edit(manifest: dict[str, Any]) -> None:
        manifest["files"]["live/initrd.img"] = "0" * 64
        del manifest["files"]["boot/xen.gz"]

    problems = verify_iso(master(edit=edit)).problems
    assert problems == [
        "/boot/xen.gz: on the medium but not in the manifest",
        "/live/initrd.img: in the manifest but missing from the medium",
    ]


def test_a_file_that_is_not_squashfs_is_named(master):
    problems = verify_iso(master(extra={"live/20-top.squashfs": b"not a squashfs" * 10})).problems
    assert problems == ["/live/20-top.squashfs: not a squashfs image"]


def test_manifest_claiming_no_boot_on_a_booting_medium_fails(master):
    problems = verify_iso(master(edit=setting([], "profile", "media", "boot"))).problems
    assert "El Torito boot record present, but the manifest says the medium boots with nothing" in problems
    assert "system area (an MBR, or anything in the first 32 KiB) differs from what xenlive writes" in problems


def test_manifest_claiming_bios_on_a_uefi_medium_fails(master):
    problems = verify_iso(master(("uefi",), edit=setting(["bios", "uefi"], "profile", "media", "boot"))).problems
    assert "/isolinux/isolinux.bin: missing, but the manifest says the medium boots with BIOS" in problems


def test_medium_larger_than_its_size_limit_fails(master):
    iso = master(edit=setting(1 << 20, "profile", "media", "size_limit"))
    assert verify_iso(iso).problems == [f"{iso}: {iso.stat().st_size} bytes, more than the medium's {1 << 20}"]


# --- what is not an ISO ----------------------------------------------------------------------------


def run_with_timeout(call: Callable[[], Verdict], seconds: float = 20) -> Verdict:
    result: list[Verdict] = []
    worker = threading.Thread(target=lambda: result.append(call()), daemon=True)
    worker.start()
    worker.join(seconds)
    assert result, f"still running after {seconds} s"
    return result[0]


def test_what_is_not_an_iso_is_named(tmp_path):
    (tmp_path / "random.iso").write_bytes(os.urandom(100_000))
    (tmp_path / "empty.iso").write_bytes(b"")
    os.mkfifo(tmp_path / "fifo.iso")
    (tmp_path / "dir.iso").mkdir()
    assert verify_iso(tmp_path / "none.iso").problems == [f"{tmp_path / 'none.iso'}: no such file"]
    for name in ("random.iso", "empty.iso"):
        problems = verify_iso(tmp_path / name).problems
        assert len(problems) == 1 and problems[0].startswith(f"{tmp_path / name}: not a readable ISO 9660 image (")
    for name in ("fifo.iso", "dir.iso"):
        problems = run_with_timeout(lambda n=name: verify_iso(tmp_path / n)).problems  # type: ignore[misc]
        assert problems == [f"{tmp_path / name}: not a regular file; verify reads an ISO image file"]


def test_garbage_in_every_header_field_never_raises(pristine, tmp_path):
    """Crafted values across the MBR, GPT header, boot record and catalogue: named problems, no exception."""
    data = pristine.read_bytes()
    layout = layout_of(pristine)
    offsets = [*range(446, 510, 8), *range(SECTOR + 24, SECTOR + 92, 8), 17 * BLOCK + 71,
               *(layout.catalog + e + f for e in (32, 96) for f in (0, 6, 8)), layout.catalog + 64]  # fmt: skip
    out = tmp_path / "x.iso"
    for offset in offsets:
        for value in (b"\xff\xff\xff\xff", b"\x00\x00\x00\x80"):
            out.write_bytes(data[:offset] + value + data[offset + 4 :])
            verdict = verify_iso(out)
            assert verdict.problems or data[offset : offset + 4] == value, offset


# --- the command line ------------------------------------------------------------------------------


def xenlive(*args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def test_cli_verify_exit_codes_and_lines(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    proc = xenlive("verify", str(iso))
    assert proc.returncode == 0 and proc.stdout == f"{iso}: OK\n"
    assert proc.stderr.startswith(f"warning: {iso}: no out-of-band sha256")
    proc = xenlive("verify", "--sha256", sha256_file(iso), str(iso))
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"{iso}: OK (sha256 matches --sha256)\n", "")
    (tmp_path / "out/SHA256SUMS").write_text(f"{sha256_file(iso)}  x.iso\n")
    proc = xenlive("verify", str(iso))
    assert proc.stdout == f"{iso}: OK (sha256 matches {tmp_path / 'out/SHA256SUMS'})\n" and proc.stderr == ""
    bad = tampered(iso, flip(100), tmp_path)
    proc = xenlive("verify", "--sha256", sha256_file(iso), str(bad))
    assert proc.returncode == 1
    assert "MBR boot code differs from what xenlive writes" in proc.stderr
    assert proc.stderr.endswith(f"error: {bad}: 2 problem(s) found\n")
    proc = xenlive("verify", "--sha256", "nothex", str(iso))
    assert proc.returncode == 2 and "--sha256: expected 64 hexadecimal digits, got 'nothex'" in proc.stderr


def test_cli_verify_json(pristine, tmp_path):
    iso = copy_of(pristine, tmp_path / "out")
    proc = xenlive("verify", "--json", "--sha256", sha256_file(iso), str(iso))
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == {"iso": str(iso), "ok": True, "problems": [], "warnings": [],
                                       "sha256_from": "--sha256"}  # fmt: skip
    bad = tampered(iso, flip(100), tmp_path)
    proc = xenlive("verify", "--json", "--sha256", sha256_file(iso), str(bad))
    assert proc.returncode == 1 and proc.stderr == f"error: {bad}: 2 problem(s) found\n"
    found = json.loads(proc.stdout)
    assert found["ok"] is False and len(found["problems"]) == 2 and "MBR boot code" in " ".join(found["problems"])


def ending_short_of_a_mib(master, room: int) -> tuple[Path, dict[str, bytes]]:
    """An ISO whose ISO 9660 volume ends `room` bytes before a 1 MiB boundary (a filler file sized to
    get there), and the extra file it holds."""
    filler = 100_000
    volume = layout_of(master(extra={"zz/filler.bin": bytes(filler)})).volume
    filler += (-room - volume) % 2**20
    extra = {"zz/filler.bin": bytes(range(256)) * (filler // 256) + bytes(filler % 256)}
    iso = master(extra=extra)
    assert -layout_of(iso).volume % 2**20 == room
    return iso, extra


@pytest.mark.skipif(not shutil.which("sgdisk"), reason="sgdisk (gdisk) not installed")
@pytest.mark.parametrize("room", [0, 4 * BLOCK, 8 * BLOCK, 9 * BLOCK, 100 * BLOCK])
def test_the_backup_gpt_never_lands_on_the_volume(master, staged, room):
    """pycdlib pads to a whole MiB and puts the 33-sector backup GPT at the very end, also when the
    padding is shorter than that: mastering then adds a MiB, so the volume's last file stays whole."""
    iso, extra = ending_short_of_a_mib(master, room)
    layout = layout_of(iso)
    assert layout.size == layout.volume + (room if room >= 33 * SECTOR else room + 2**20)
    data = iso.read_bytes()
    last = max(layout.extents, key=lambda path: sum(layout.extents[path]))
    start, length = layout.extents[last]
    rel = last.lstrip("/")
    assert data[start : start + length] == (extra[rel] if rel in extra else (staged(BOTH) / rel).read_bytes()), last
    assert data[-SECTOR:].startswith(b"EFI PART") and data[layout.volume : -33 * SECTOR] == bytes(
        layout.size - 33 * SECTOR - layout.volume
    )
    assert verify_iso(iso).problems == []
    sgdisk = subprocess.run(["sgdisk", "-v", "--", str(iso)], capture_output=True, text=True, check=False)
    assert "No problems found" in sgdisk.stdout, sgdisk.stdout
    assert master(extra=extra).read_bytes() == data  # the same build mastered again: the same bytes


def test_backup_gpt_over_the_end_of_the_volume_is_named(master, tmp_path):
    """A crafted image with the backup GPT over the volume's last 8704 bytes, as pycdlib's own padding
    left it when the volume ended within 16,896 bytes of a MiB boundary: the extra MiB cut off and the
    GPT moved to the new end."""
    iso, _extra = ending_short_of_a_mib(master, 4 * BLOCK)
    data = bytearray(iso.read_bytes())
    crafted = data[: -(2**20)]
    crafted[-33 * SECTOR :] = data[-33 * SECTOR :]
    out = tmp_path / "crafted.iso"
    out.write_bytes(bytes(crafted))
    problems = verify_iso(out).problems
    assert problems[0] == (
        "the backup GPT at the image's end overlaps the last 8704 bytes of the ISO 9660 volume "
        "(only 8192 bytes follow the volume, the GPT takes 16896)"
    ), problems
    assert "/EFI/BOOT/BOOTX64.EFI: sha256 differs from the manifest" in problems  # the volume's last file
