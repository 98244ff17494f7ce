from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ProfileError
from builder.profile import Firmware, GuestType, load_profile, parse_size_mib, to_data

from .conftest import REPO


def problems(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value.problems


def test_default_profile_loads_with_its_guest_and_overlay():
    profile = load_profile(None)
    assert profile.name == "default"
    assert profile.media.boot == (Firmware.BIOS, Firmware.UEFI)
    assert [g.name for g in profile.guests] == ["tiny"]
    guest = profile.guests[0]
    assert (guest.type, guest.memory, guest.kernel, guest.initrd) == (GuestType.PV, 128, "dom0", "busybox")
    assert profile.dom0.overlays == ((REPO / "overlays/welcome").resolve(),)


def test_builtin_name_resolves_to_profiles_dir():
    assert load_profile("default").source == REPO / "profiles/default.yaml"


def test_minimal_profile_gets_defaults(write_profile):
    profile = load_profile(write_profile("name: lab\n"))
    assert profile.dom0.suite == "bookworm"
    assert profile.xen.cmdline.startswith("dom0_mem=")
    assert profile.guests == ()


def test_missing_file_is_named():
    with pytest.raises(ProfileError, match="nope.yaml: profile not found") as info:
        load_profile("nope.yaml")
    assert info.value.exit_code == 2


def test_yaml_syntax_error_names_line_and_column(write_profile):
    path = write_profile("name: lab\nguests: [\n  - {name: a\n")
    (msg,) = problems(path)
    assert msg.startswith(f"{path}:") and "YAML syntax error" in msg


def test_unknown_key_suggests_the_close_one(write_profile):
    path = write_profile("name: lab\ndom0:\n  hostnme: x\n")
    assert problems(path) == [f"{path}:3:3: dom0.hostnme: unknown key; did you mean 'hostname'?"]


def test_wrong_types_are_all_reported_with_key_paths(write_profile):
    path = write_profile(
        "name: lab\n"
        "guests:\n"
        "  - name: a\n"
        "    memory: lots\n"
        "  - name: b\n"
        "    vcpus: -1\n"
        "    autostart: maybe\n"
    )
    assert problems(path) == [
        f'{path}:4:13: guests[0].memory: expected a size in MiB or like "256M", "1G", got \'lots\'',
        f"{path}:6:12: guests[1].vcpus: expected at least 1, got -1",
        f"{path}:7:16: guests[1].autostart: expected true or false, got 'maybe'",
    ]


def test_memory_zero_is_refused(write_profile):
    path = write_profile("name: lab\nguests:\n  - name: a\n    memory: 0\n")
    assert problems(path) == [f"{path}:4:13: guests[0].memory: expected at least 16 MiB, got 0 MiB"]


def test_duplicate_keys_are_detected(write_profile):
    path = write_profile("name: lab\nname: other\n")
    assert problems(path) == [f"{path}:2:1: name: duplicate key (first given on line 1)"]


def test_duplicate_guest_names(write_profile):
    path = write_profile("name: lab\nguests:\n  - name: a\n  - name: a\n")
    assert problems(path) == [f"{path}:4:11: guests[1].name: duplicate guest name 'a' (also guests[0])"]


@pytest.mark.parametrize("text", ["", "# only a comment\n"])
def test_empty_profile(write_profile, text):
    path = write_profile(text)
    assert problems(path) == [f"{path}: the profile is empty"]


def test_non_mapping_document(write_profile):
    path = write_profile("- a\n- b\n")
    assert problems(path) == [f"{path}:1:1: expected a mapping, got a list"]


def test_missing_required_key(write_profile):
    path = write_profile("description: x\n")
    assert problems(path) == [f"{path}:1:1: missing required key 'name'"]


def test_invalid_names(write_profile):
    path = write_profile("name: lab\ndom0:\n  hostname: Bad_Host\nguests:\n  - name: 'a b'\n")
    msgs = problems(path)
    assert len(msgs) == 2
    assert msgs[0].startswith(f"{path}:3:13: dom0.hostname: 'Bad_Host' is not valid")
    assert msgs[1].startswith(f"{path}:5:11: guests[0].name: 'a b' is not valid")


def test_missing_overlay_and_guest_file(write_profile):
    path = write_profile("name: lab\ndom0:\n  overlays: [nothere]\nguests:\n  - name: a\n    kernel: vmlinuz-x\n")
    msgs = problems(path)
    assert any("guests[0].kernel: file not found: vmlinuz-x" in m for m in msgs)
    assert any(m.startswith(f"{path}:3:14: dom0.overlays[0]: overlay directory not found") for m in msgs)


def test_alias_bomb_is_refused(write_profile):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    path = write_profile("\n".join(lines) + "\nname: lab\ndom0:\n  packages: *a8\n")
    (msg,) = problems(path)
    assert "alias bomb" in msg


def test_oversized_file_is_refused(write_profile):
    path = write_profile("name: lab\n" + "#" * (2 << 20))
    (msg,) = problems(path)
    assert "more than" in msg


@pytest.mark.parametrize(
    ("value", "mib"), [(256, 256), ("256M", 256), ("1G", 1024), ("2GiB", 2048), ("512k", 0), ("x", None)]
)
def test_parse_size(value, mib):
    assert parse_size_mib(value) == mib


def test_to_data_round_trips_through_yaml(write_profile, tmp_path):
    import yaml

    profile = load_profile(None)
    data = to_data(profile)
    again = load_profile(write_profile(yaml.safe_dump(data)))
    assert to_data(again) == data
