"""Property test: mutated valid profiles load or fail with a ProfileError, never anything else."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.errors import ProfileError
from builder.profile import load_profile

from ..conftest import REPO

SEEDS = [yaml.safe_load(p.read_text()) for p in sorted((REPO / "builder/profiles").glob("*.yaml"))]
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**40), max_value=2**40), st.floats(allow_nan=False),
    st.text(max_size=12), st.sampled_from(["", "0", "-1", "1G", "lots", "/etc", "..", "!", "cd-700", "dom0"]),
)  # fmt: skip
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)


def _paths(data: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    if isinstance(data, dict):
        for k, v in data.items():
            found += _paths(v, (*prefix, k))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            found += _paths(v, (*prefix, i))
    return found


@st.composite
def mutated(draw: st.DrawFn) -> Any:
    data = yaml.safe_load(yaml.safe_dump(draw(st.sampled_from(SEEDS))))  # a deep copy
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        paths = _paths(data)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if not path:
            data = draw(VALUES) if action == "replace" else data
            continue
        parent = data
        for key in path[:-1]:
            parent = parent[key]
        if action == "replace":
            parent[path[-1]] = draw(VALUES)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["hostnme", "name", "guests+", "extends", "x", "memory"]))] = draw(VALUES)
        else:
            parent.append(draw(VALUES))
        if not isinstance(data, (dict, list)):
            break
    return data


def _load_text(text: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "profiles").mkdir()
        (root / "profiles/overlays").symlink_to(REPO / "builder/profiles/overlays")
        path = root / "profiles/p.yaml"
        path.write_text(text)
        try:
            load_profile(path)
        except ProfileError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_profiles_never_raise_anything_but_profile_error(data):
    _load_text(yaml.safe_dump(data, allow_unicode=True))


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted((REPO / "builder/profiles").glob("*.yaml"))), st.data())
def test_mutated_text_never_raises_anything_but_profile_error(path, data):
    text = path.read_text()
    for _ in range(data.draw(st.integers(min_value=1, max_value=4))):
        at = data.draw(st.integers(min_value=0, max_value=len(text)))
        cut = data.draw(st.integers(min_value=0, max_value=5))
        insert = data.draw(
            st.sampled_from(["", ":", "-", " ", "\n", "\t", "[", "{", "&a", "*a", "+", "'", '"', "!!", "\x00"])
        )
        text = text[:at] + insert + text[at + cut :]
    _load_text(text)


# --- every string field, with hostile strings: refused, or rendered back to the intended structure -----

HOSTILE = st.one_of(
    st.text(max_size=40),
    st.lists(st.sampled_from(list("ab -=/\"'\\\n\r\t;${}#:,.*[]()!|&<>`~\x00\x1b") + ["---", "é", "日"]),
             max_size=20).map("".join),
    st.sampled_from(["--help", "-v", "--customize-hook=touch /x", "a\nb", 'x" y', "quiet --- evil", "a\\", "$x"]),
)  # fmt: skip


def _string_fields(cls: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every key path of a str field in the model (a list's first entry stands for every entry)."""
    import dataclasses
    import typing

    found = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal") or f.metadata.get("resolved") or f.metadata.get("mapping"):
            continue
        tp = hints[f.name]
        args = typing.get_args(tp)
        inner = args[0] if typing.get_origin(tp) is tuple else tp
        key = (*prefix, f.name, 0) if typing.get_origin(tp) is tuple else (*prefix, f.name)
        if dataclasses.is_dataclass(inner):
            found += _string_fields(inner, key)
        elif inner is str:
            found.append(key)
    return found


def _base() -> dict[str, Any]:
    return {"name": "p", "dom0": {"users": [{"name": "ken"}], "files": [{"path": "/etc/x", "content": "y"}]},
            "guests": [{"name": "g"}]}  # fmt: skip


def _put(data: dict[str, Any], path: tuple[Any, ...], value: str) -> None:
    node: Any = data
    for key, nxt in zip(path, path[1:], strict=False):
        if isinstance(key, int):
            while len(node) <= key:
                node.append({})
            node = node[key]
        else:
            node = node.setdefault(key, [] if isinstance(nxt, int) else {})
    if isinstance(path[-1], int):  # a list of strings
        node[:] = [value]
    else:
        node[path[-1]] = value


def _rendered(profile: Any) -> tuple[str, str, str, list[str]]:
    from builder.stages.boot import render_grub, render_isolinux
    from builder.stages.guests import xl_config

    passwd = [f"{u.name}:x:1000:1000:{u.comment}:/home/{u.name}:{u.shell}" for u in profile.dom0.users]
    return render_grub(profile), render_isolinux(profile), xl_config(profile, profile.guests[0]), passwd


def _xl_keys(text: str) -> dict[str, str]:
    keys = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip() or line.startswith(("    ", "]")):
            continue
        key, sep, value = line.partition(" = ")
        assert sep and key.isidentifier(), line
        keys[key] = value
    return keys


FIELDS = _string_fields(__import__("builder.profile.model", fromlist=["Profile"]).Profile)


def test_the_field_walker_sees_the_dangerous_fields() -> None:
    names = {".".join(str(k) for k in path) for path in FIELDS}
    assert {"xen.cmdline", "dom0.cmdline", "guests.0.cmdline", "dom0.users.0.name", "media.publisher",
            "dom0.suite", "dom0.mirror", "guests.0.debian.suite"} <= names  # fmt: skip


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELDS), HOSTILE)
def test_hostile_strings_are_refused_or_render_as_intended(path: tuple[Any, ...], value: str) -> None:
    import json

    baseline = _rendered(_load_data(_base()))
    data = _base()
    _put(data, path, value)
    profile = _load_data(data)
    if profile is None:
        return  # refused with a ProfileError: fine
    grub, isolinux, xl, passwd = _rendered(profile)
    # the same menus, the same xl keys, the same passwd shape: the value changed a value, not the structure
    assert grub.count("menuentry ") == baseline[0].count("menuentry ")
    assert len(grub.splitlines()) == len(baseline[0].splitlines())
    assert len(isolinux.splitlines()) == len(baseline[1].splitlines())
    assert [line.split()[0] for line in isolinux.splitlines() if line.strip()] == [
        line.split()[0] for line in baseline[1].splitlines() if line.strip()
    ]
    assert _xl_keys(xl).keys() == _xl_keys(baseline[2]).keys()
    assert json.loads(_xl_keys(xl)["name"]) == profile.guests[0].name
    assert all(len(line.split(":")) == 7 and "\n" not in line for line in passwd)
    for cmdline in (profile.xen.cmdline, profile.dom0.cmdline):
        assert "\n" not in cmdline and '"' not in cmdline and " --- " not in f" {cmdline} "


def _load_data(data: dict[str, Any]) -> Any:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "p.yaml"
        path.write_text(yaml.safe_dump(data, allow_unicode=True))
        try:
            return load_profile(path)
        except ProfileError as e:
            assert e.problems and all(isinstance(p, str) and p for p in e.problems)
            return None
