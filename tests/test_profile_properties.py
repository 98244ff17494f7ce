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

from .conftest import REPO

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
