from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ProfileError
from builder.profile import Firmware, GuestType, load_profile, to_data
from builder.yamlconv import parse_size_mib

from ..conftest import REPO


def problems(path: Path) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load_profile(path)
    return info.value.problems


def test_default_profile_loads_with_its_guest_and_overlay():
    profile = load_profile(None)
    assert profile.name == "default"
    assert profile.media.boot == (Firmware.BIOS, Firmware.UEFI, Firmware.UEFI_IA32)
    assert [g.name for g in profile.guests] == ["tiny"]
    guest = profile.guests[0]
    assert (guest.type, guest.memory, guest.kernel, guest.initrd) == (GuestType.PV, 128, "dom0", "busybox")
    # Kept as written, relative to the profile: `show` and the build id must not depend on the checkout's place.
    assert profile.dom0.overlays == (Path("overlays/welcome"),)
    assert (profile.base_dir / profile.dom0.overlays[0]).resolve() == REPO / "builder/profiles/overlays/welcome"


def test_builtin_name_resolves_to_profiles_dir():
    assert load_profile("default").source == REPO / "builder/profiles/default.yaml"


def test_minimal_profile_gets_defaults(write_profile):
    profile = load_profile(write_profile("name: lab\n"))
    assert profile.dom0.suite == "trixie"
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
        "name: lab\nguests:\n  - name: a\n    memory: lots\n  - name: b\n    vcpus: -1\n    autostart: maybe\n"
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
    assert problems(path) == [f"{path}:4:11: guests[1].name: duplicate guest name 'a' (also guests[0]); rename one"]


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
    (tmp_path / "profiles").mkdir()
    (tmp_path / "profiles/overlays").symlink_to(REPO / "builder/profiles/overlays")
    again = load_profile(write_profile(yaml.safe_dump(data), "profiles/p.yaml"))
    assert to_data(again) == data


# --- extends, vars, files, settings ---------------------------------------------------------------


def test_extends_merges_maps_replaces_lists_and_appends_with_plus(write_profile, tmp_path):
    write_profile(
        "name: parent\ndescription: from the parent\ndom0:\n  hostname: parent\n  packages: [vim]\n"
        "  keyboard: {model: jp106, layout: jp}\nguests:\n  - name: a\n",
        "parent.yaml",
    )
    path = write_profile(
        "name: child\nextends: parent.yaml\ndom0:\n  keyboard: {layout: us}\n  packages+: [htop]\n"
        "guests:\n  - name: b\n"
    )
    profile = load_profile(path)
    assert profile.description == "from the parent"
    assert profile.dom0.hostname == "parent"
    assert (profile.dom0.keyboard.model, profile.dom0.keyboard.layout) == ("jp106", "us")
    assert profile.dom0.packages[:2] == ("vim", "htop")
    assert [g.name for g in profile.guests] == ["b"]


def test_several_parents_merge_in_order_and_builtin_names_work(write_profile):
    write_profile("name: one\ndom0: {hostname: one, locale: ja_JP.UTF-8}\n", "one.yaml")
    path = write_profile("name: child\nextends: [default, one.yaml]\n")
    profile = load_profile(path)
    assert profile.dom0.hostname == "one" and profile.dom0.locale == "ja_JP.UTF-8"
    assert [g.name for g in profile.guests] == ["tiny"]  # from the built-in default
    # The parent's relative overlay path is rebased onto the child's directory, still relative.
    assert not profile.dom0.overlays[0].is_absolute()
    assert (profile.base_dir / profile.dom0.overlays[0]).resolve() == REPO / "builder/profiles/overlays/welcome"


def test_error_in_a_parent_names_the_parents_file(write_profile, tmp_path):
    write_profile("name: parent\nguests:\n  - name: a\n    memory: lots\n", "parent.yaml")
    path = write_profile("name: child\nextends: parent.yaml\n")
    assert problems(path) == [f'{tmp_path / "parent.yaml"}:4:13: guests[0].memory: expected a size in MiB or like '
                              '"256M", "1G", got \'lots\'']  # fmt: skip


def test_extends_cycle_and_missing_parent_point_at_the_extends_line(write_profile, tmp_path):
    write_profile("name: b\nextends: p.yaml\n", "b.yaml")
    path = write_profile("name: a\nextends:\n  - b.yaml\n  - gone.yaml\n")
    msgs = problems(path)
    assert msgs[0].startswith(f"{tmp_path / 'b.yaml'}:2:10: extends: extends cycle: ")
    assert msgs[1] == f"{path}:4:5: extends: parent profile not found: gone.yaml"


def test_vars_and_files_render(write_profile, tmp_path):
    (tmp_path / "t.j2").write_text("{{ vars.site }}/{{ profile.name }}\n")
    path = write_profile(
        "name: lab\nvars: {site: tsukuba, n: 3}\ndom0:\n  files:\n"
        "    - {path: /etc/site, template: t.j2, mode: '0600', owner: root}\n"
        "    - {path: /etc/plain, content: hi, mode: 0755}\n"
    )
    profile = load_profile(path)
    assert profile.vars == {"site": "tsukuba", "n": 3}
    assert profile.dom0.files[0].template == Path("t.j2") and profile.dom0.files[0].mode == "0600"
    assert profile.dom0.files[1].mode == "0755"  # YAML 1.1 octal read from the text, not as 493


def test_template_error_is_caught_at_load_with_the_templates_line(write_profile, tmp_path):
    (tmp_path / "t.j2").write_text("ok\n{{ vars.nothere }}\n")
    path = write_profile("name: lab\ndom0:\n  files:\n    - {path: /etc/x, template: t.j2}\n")
    (msg,) = problems(path)
    assert msg.startswith(f"{path}:4:32: dom0.files[0].template: template error: ")
    assert msg.endswith("t.j2:2: 'dict object' has no attribute 'nothere'; fix the template")


def test_plain_text_password_is_refused_but_hash_and_lock_are_fine(write_profile):
    path = write_profile("name: lab\ndom0:\n  users:\n    - {name: root, password: secret}\n")
    (msg,) = problems(path)
    assert "dom0.users[0].password: a plain-text password is refused" in msg
    ok = write_profile("name: lab\ndom0:\n  users:\n    - {name: root, password: '!'}\n"
                       "    - {name: ops, password: '$6$saltsalt$abcdefghijklmnopqrstuv'}\n", "ok.yaml")  # fmt: skip
    assert [u.name for u in load_profile(ok).dom0.users] == ["root", "ops"]


def test_finalize_adds_what_the_settings_need(write_profile):
    path = write_profile(
        "name: lab\ndom0:\n  locale: ja_JP.UTF-8\n  keyboard: {model: jp106, layout: jp}\n"
        "  packages: [vim, openssh-server]\n  remove_packages: [vim]\n"
    )
    dom0 = load_profile(path).dom0
    assert dom0.packages == ("openssh-server", "locales", "keyboard-configuration", "console-setup")
    assert dom0.services == ("systemd-networkd.service",)


def test_media_size_limit_by_name_or_bytes(write_profile):
    assert load_profile(write_profile("name: a\nmedia: {size_limit: dvd-9}\n")).media.size_limit == 8_543_666_176
    assert load_profile(write_profile("name: a\nmedia: {size_limit: 1000}\n", "b.yaml")).media.size_limit == 1000


@pytest.mark.parametrize("name", ["default", "xenoppix", "lab"])
def test_shipped_profiles_load(name):
    profile = load_profile(name)
    assert profile.name == name and profile.description


def test_xenoppix_is_japanese_with_several_guests():
    profile = load_profile("xenoppix")
    assert profile.dom0.locale == "ja_JP.UTF-8" and profile.dom0.keyboard.model == "jp106"
    assert len(profile.guests) >= 3 and profile.dom0.network.bridge == "xenbr0"


def test_lab_extends_default_and_appends_a_guest():
    profile = load_profile("lab")
    assert [g.name for g in profile.guests] == ["tiny", "worker"]
    assert "ssh.service" in profile.dom0.services and "openssh-server" in profile.dom0.packages


def test_unknown_yaml_tag_is_a_profile_error(write_profile):
    path = write_profile("name: lab\ndom0:\n  hostname: !!weird xenlive\n")
    (msg,) = problems(path)
    assert msg.startswith(f"{path}:3:13: dom0.hostname: cannot read this value: could not determine a constructor")


def test_debian_guests_default_to_dom0s_suite(write_profile):
    path = write_profile(
        "name: lab\ndom0: {suite: bookworm}\nguests:\n  - {name: a, kind: debian}\n"
        "  - {name: b, kind: debian, debian: {suite: trixie}}\n"
    )
    a, b = load_profile(path).guests
    assert (a.debian.suite, b.debian.suite) == ("bookworm", "trixie")


def test_shipped_profiles_are_debian_13_but_bookworm():
    suites = {name: load_profile(name).dom0.suite for name in ("default", "lab", "xenoppix", "bookworm")}
    assert suites == {"default": "trixie", "lab": "trixie", "xenoppix": "trixie", "bookworm": "bookworm"}
    assert [g.name for g in load_profile("bookworm").guests] == [g.name for g in load_profile("default").guests]
