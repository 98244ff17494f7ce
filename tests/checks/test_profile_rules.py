"""Profile rules (builder/checks/profile_rules.py): each one refused with file:line:col: key, and passed."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.checks import Scope, all_checks
from builder.checks.profile_rules import overlay_escapes, require_built
from builder.errors import ProfileError
from builder.profile import load_profile


def load(tmp_path: Path, text: str, ignore: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    (tmp_path / "p.yaml").write_text(text)
    return load_profile(tmp_path / "p.yaml", ignore)


def problems(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(ProfileError) as info:
        load(tmp_path, text)
    return [p.replace(str(tmp_path) + "/", "") for p in info.value.problems]


def test_every_profile_rule_has_an_id_a_reason_and_cannot_be_skipped_unless_it_makes_sense() -> None:
    rules = all_checks(Scope.PROFILE)
    assert len(rules) >= 10
    for r in rules:
        assert r.why and r.title, r.id
    assert {r.id for r in rules if r.skippable} == {"image-fits-medium"}


def test_unknown_group_fails_before_anything_is_built(tmp_path: Path) -> None:
    assert problems(tmp_path, "name: lab\ndom0:\n  users:\n    - {name: ken, groups: [wheel]}\n") == [
        "p.yaml:4:28: dom0.users[0].groups[0]: group 'wheel' does not exist in dom0;"
        " add the package that creates it to dom0.packages, or fix the name"
    ]
    assert load(tmp_path, "name: lab\ndom0:\n  users:\n    - {name: ken, groups: [sudo]}\n").name == "lab"


def test_unknown_group_with_extra_packages_waits_for_the_built_tree(tmp_path: Path) -> None:
    profile = load(tmp_path, "name: lab\ndom0:\n  packages: [libvirt-daemon-system]\n  users:\n"
                   "    - {name: ken, groups: [libvirt]}\n")  # fmt: skip
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    (tree / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tree / "etc/group").write_text("root:x:0:\n")
    (tree / "usr/lib/systemd/system").mkdir(parents=True)
    (tree / "usr/lib/systemd/system/systemd-networkd.service").write_text("[Unit]\n")
    with pytest.raises(ProfileError, match=r"dom0.users\[0\].groups\[0\]: group 'libvirt' does not exist in dom0"):
        require_built(profile, tree)
    (tree / "etc/group").write_text("root:x:0:\nlibvirt:x:120:\n")
    require_built(profile, tree)


def test_system_account_name_and_unknown_service(tmp_path: Path) -> None:
    assert problems(tmp_path, "name: lab\ndom0:\n  users:\n    - {name: daemon}\n") == [
        "p.yaml:4:14: dom0.users[0].name: 'daemon' is a system account of dom0; pick another name"
    ]
    profile = load(tmp_path, "name: lab\ndom0:\n  services: [nothere.service]\n")
    tree = tmp_path / "tree"
    (tree / "etc").mkdir(parents=True)
    with pytest.raises(ProfileError, match=r"p.yaml:3:14: dom0.services\[0\]: unit 'nothere.service' is not in dom0"):
        require_built(profile, tree)


def test_unsupported_locale_fails_at_load(tmp_path: Path) -> None:
    assert problems(tmp_path, "name: lab\ndom0:\n  locale: xx_YY.UTF-8\n") == [
        "p.yaml:3:11: dom0.locale: 'xx_YY.UTF-8' is not a locale Debian supports (see /usr/share/i18n/SUPPORTED);"
        " use a name like ja_JP.UTF-8 or de_DE.UTF-8"
    ]
    assert load(tmp_path, "name: lab\ndom0:\n  locale: ja_JP.UTF-8\n").dom0.locale == "ja_JP.UTF-8"


def test_overlay_directory_where_xenlive_writes_a_file(tmp_path: Path) -> None:
    (tmp_path / "ov/etc/hostname").mkdir(parents=True)
    (tmp_path / "ov/etc/xenlive").mkdir(parents=True)
    (tmp_path / "ov2/etc").mkdir(parents=True)
    (tmp_path / "ov2/etc/xenlive").symlink_to("/tmp")
    found = problems(tmp_path, "name: lab\ndom0:\n  overlays: [ov, ov2]\n")
    assert found == [
        "p.yaml:3:14: dom0.overlays[0]: etc/hostname is a directory in the overlay, but xenlive writes a file there;"
        " rename or remove it in the overlay",
        "p.yaml:3:18: dom0.overlays[1]: etc/xenlive is a symlink in the overlay, but xenlive writes a directory"
        " there; rename or remove it in the overlay",
    ]


def test_overlay_escapes_are_found_without_following_links(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/evil").symlink_to("../../../../etc/passwd")
    (tmp_path / "etc/fine").symlink_to("../usr/share/x")
    (tmp_path / "etc/abs").symlink_to("/usr/share/zoneinfo/UTC")
    assert overlay_escapes(tmp_path) == ["symlink etc/evil -> ../../../../etc/passwd points outside the overlay"]


def test_template_include_stays_inside_the_overlay(tmp_path: Path) -> None:
    (tmp_path / "ov/etc").mkdir(parents=True)
    (tmp_path / "secret").write_text("host secret\n")
    (tmp_path / "ov/etc/inc").symlink_to(tmp_path / "secret")
    (tmp_path / "ov/etc/motd.j2").write_text("{% include 'etc/inc' %}\n")
    (found,) = problems(tmp_path, "name: lab\ndom0:\n  overlays: [ov]\n")
    assert found.startswith("p.yaml:3:14: dom0.overlays[0]: template error: ")
    assert "outside ov/" in found and "host secret" not in found


def test_templates_see_plain_data_only(tmp_path: Path) -> None:
    """Objects with methods that reach files (a Path's write_text) are not in the context."""
    (tmp_path / "ov/etc").mkdir(parents=True)
    (tmp_path / "ov/etc/motd.j2").write_text("{{ profile.dom0.overlays[0].write_text('pwned') }}\n")
    (found,) = problems(tmp_path, "name: lab\ndom0:\n  overlays: [ov]\n")
    assert "template error" in found
    assert not (tmp_path / "ov" / "pwned").exists() and (tmp_path / "ov").is_dir()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/usr/local", "/usr/local cannot persist: /usr is the installed system"),
        ("/run/live", "/run/live cannot persist: /run is runtime state"),
        ("/etc/xenlive", "/etc/xenlive cannot persist: /etc/xenlive is what this build tells"),
        ("/var/lib/dpkg/info", "/var/lib/dpkg/info cannot persist: /var/lib/dpkg is the package database"),
        ("/etc", "/etc cannot persist as a whole"),
    ],
)
def test_a_directory_dom0_makes_or_ships_cannot_persist(tmp_path: Path, path: str, message: str) -> None:
    found = problems(tmp_path, f"name: lab\ndom0:\n  persist: [/root, {path}]\n")
    assert len(found) == 1 and f"dom0.persist[1]: {message}" in found[0], found


def test_nested_persist_directories_and_a_guest_without_a_disk_are_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: lab\ndom0:\n  persist: [/root, /root/.ssh]\n"
                               "guests:\n  - {name: tiny, persist: true}\n")  # fmt: skip
    assert any("dom0.persist[1]: /root/.ssh is inside /root, which persists already" in p for p in found), found
    assert any("guests[0].persist: guest tiny has no disk, so it has nothing to persist" in p for p in found), found


def test_persist_paths_must_be_absolute_plain_paths(tmp_path: Path) -> None:
    for bad in ("root", "/root/../etc", "'/root;reboot'", "'-o'"):
        found = problems(tmp_path, f"name: lab\ndom0:\n  persist: [{bad}]\n")
        assert found and "dom0.persist[0]" in found[0], (bad, found)


def test_a_profile_that_persists_what_it_may_loads(tmp_path: Path) -> None:
    profile = load(tmp_path, "name: lab\ndom0:\n  persist: [/root, /etc/ssh, /var/lib/xen]\n")
    assert profile.dom0.persist == ("/root", "/etc/ssh", "/var/lib/xen")


def test_an_unknown_check_target_is_refused_at_load(tmp_path: Path) -> None:
    found = problems(tmp_path, "name: lab\nchecks:\n  targets: [qemu-bios, '0']\n")
    assert len(found) == 1 and "checks.targets[1]: unknown target '0'" in found[0], found
    assert load(tmp_path, "name: lab\nchecks:\n  targets: [qemu-bios, all]\n").checks.targets == ("qemu-bios", "all")
