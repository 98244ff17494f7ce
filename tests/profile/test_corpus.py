"""The bad-profile corpus: every file in tests/data/bad-profiles/*.yaml must fail with the exact text of
its sibling .err file, and the shipped JSON Schema must agree with the loader on type errors.

To add a case: write NAME.yaml (prefix `type-` when it is a type error the schema must also reject),
then NAME.err with the expected problems, one per line, as the loader names them from that directory.
"""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from builder.errors import ProfileError
from builder.profile import load_profile
from builder.schema import SCHEMA_FILE, profile_schema, reference_markdown, schema_text

from ..conftest import REPO

CORPUS = REPO / "tests/data/bad-profiles"
CASES = sorted(p.name for p in CORPUS.glob("*.yaml"))
SHIPPED = sorted((REPO / "builder/profiles").glob("*.yaml"))


def test_corpus_is_large_enough():
    assert len(CASES) >= 40
    assert sum(name.startswith("type-") for name in CASES) >= 20


@pytest.mark.parametrize("name", CASES)
def test_bad_profile_gives_exactly_the_expected_errors(name, monkeypatch):
    monkeypatch.chdir(CORPUS)
    expected = (CORPUS / name).with_suffix(".err").read_text().splitlines()
    with pytest.raises(ProfileError) as info:
        load_profile(name)
    assert info.value.problems == expected
    assert info.value.exit_code == 2


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SCHEMA_FILE.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_shipped_schema_file_is_current():
    assert SCHEMA_FILE.read_text() == schema_text(), "run: python -m builder.schema --write"


def test_reference_docs_are_current():
    assert (REPO / "docs/profile-reference.md").read_text() == reference_markdown(), (
        "run: python -m builder.schema --write"
    )


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_schema_accepts_every_shipped_profile(path, validator):
    validator.validate(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize("name", [n for n in CASES if n.startswith("type-")])
def test_schema_rejects_the_corpus_type_errors(name, validator):
    data = yaml.safe_load((CORPUS / name).read_text())
    assert not validator.is_valid(data), f"the schema accepts {name}"


def test_every_model_field_is_in_the_schema():
    """The schema is walked from the dataclasses: spot-check that nested sections carry their keys."""
    defs = profile_schema()["$defs"]
    assert set(defs["Dom0"]["properties"]) >= {"hostname", "users", "network", "files", "packages+"}
    assert defs["User"]["required"] == ["name"]
