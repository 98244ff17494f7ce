"""JSON Schema and the Markdown key reference, both generated from the profile dataclasses.

Nothing here lists a key by hand: both walk dataclasses.fields() of builder.profile.Profile, so
the schema an editor checks against, the docs a user reads and the loader cannot drift apart.
Run `python -m builder.schema --write` to refresh the shipped copies (tests compare them).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import re
import sys
import types
import typing
from pathlib import Path
from typing import Any

from builder.profile.loader import PACKAGE_DIR
from builder.profile.model import MEDIA_SIZES, Profile
from builder.yamlconv import SIZE, VAR_NAME

SCHEMA_ID = "https://xenlive.invalid/schema/xenlive-profile.schema.json"
SCHEMA_FILE = PACKAGE_DIR / "data/xenlive-profile.schema.json"  # package data: installed with xenlive
SOURCE_ROOT = PACKAGE_DIR.parent  # a source checkout, when pyproject.toml is there
REFERENCE_FILE = SOURCE_ROOT / "docs/profile-reference.md"


def anchored(pattern: re.Pattern[str]) -> str:
    """The model's full-match pattern as a JSON Schema pattern (which matches anywhere unless anchored)."""
    return f"^(?:{pattern.pattern})$"


def _unwrap(tp: Any) -> tuple[Any, bool]:
    """(the type without `| None`, whether None was allowed)."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _field_schema(tp: Any, meta: typing.Mapping[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    tp, optional = _unwrap(tp)
    schema: dict[str, Any]
    if dataclasses.is_dataclass(tp):
        schema = {"$ref": f"#/$defs/{_class_schema(tp, defs)}"}
    elif meta.get("mapping"):
        schema = {"type": "object", "propertyNames": {"pattern": anchored(VAR_NAME)}}
    elif typing.get_origin(tp) is tuple:
        item = _field_schema(typing.get_args(tp)[0], meta, defs)
        schema = {"type": "array", "items": item}
        if meta.get("nonempty"):
            schema["minItems"] = 1
        if meta.get("scalar_ok"):
            schema = {"anyOf": [item, schema]}
    elif meta.get("builtins") is not None:
        schema = {"anyOf": [{"enum": list(meta["builtins"])}, {"type": "string"}]}
    elif meta.get("size"):
        schema = {"anyOf": [{"type": "integer", "minimum": meta.get("min", 0)},
                            {"type": "string", "pattern": anchored(SIZE)}]}  # fmt: skip
        if "max" in meta:
            schema["anyOf"][0]["maximum"] = meta["max"]
    elif meta.get("media_size"):
        schema = {"anyOf": [{"type": "integer", "minimum": 1}, {"enum": list(meta["media_size"])}]}
    elif meta.get("file_mode"):
        schema = {"type": "string", "pattern": anchored(meta["file_mode"])}
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        schema = {"enum": [e.value for e in tp]}
    elif tp is bool:
        schema = {"type": "boolean"}
    elif tp is int:
        schema = {"type": "integer"}
        if "min" in meta:
            schema["minimum"] = meta["min"]
        if "max" in meta:
            schema["maximum"] = meta["max"]
    elif tp in (str, Path):
        schema = {"type": "string"}
        if meta.get("pattern") is not None:
            schema["pattern"] = anchored(meta["pattern"])
    else:
        raise TypeError(f"no schema for {tp!r}")
    if optional:
        schema = {"anyOf": [schema, {"type": "null"}]}
    return schema


def _class_schema(cls: Any, defs: dict[str, Any]) -> str:
    name: str = cls.__name__
    if name in defs:
        return name
    defs[name] = {}  # reserve: a class may refer to itself one day
    hints = typing.get_type_hints(cls)
    properties: dict[str, Any] = {}
    required = []
    for f in dataclasses.fields(cls):
        if f.metadata.get("internal"):
            continue
        prop = _field_schema(hints[f.name], f.metadata, defs)
        prop = {"description": f.metadata.get("help", ""), **prop}
        default = _default(f)
        if default is not dataclasses.MISSING and not dataclasses.is_dataclass(default):
            prop["default"] = default
        properties[f.name] = prop
        base, _ = _unwrap(hints[f.name])
        if typing.get_origin(base) is tuple and not f.metadata.get("resolved"):
            # `KEY+: [...]` appends to the list inherited through extends.
            properties[f"{f.name}+"] = {"description": f"appended to the inherited {f.name}", **prop}
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            required.append(f.name)
    schema: dict[str, Any] = {
        "type": "object",
        "description": (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else name,
        "properties": properties,
        "additionalProperties": False,
    }
    if required:
        schema["required"] = required
    defs[name] = schema
    return name


def _default(f: dataclasses.Field[Any]) -> Any:
    from builder.profile import to_data

    if f.default is not dataclasses.MISSING:
        return to_data(f.default)
    if f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
        return value if dataclasses.is_dataclass(value) else to_data(value)
    return dataclasses.MISSING


def profile_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a profile file, as written (before extends is merged)."""
    defs: dict[str, Any] = {}
    root = _class_schema(Profile, defs)
    top = defs.pop(root)
    top["required"] = []  # a child profile may inherit its name from a parent
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "xenlive profile",
        **top,
        "$defs": dict(sorted(defs.items())),
    }


def schema_text() -> str:
    return json.dumps(profile_schema(), indent=2, ensure_ascii=False) + "\n"


def _type_label(tp: Any, meta: typing.Mapping[str, Any]) -> str:
    tp, optional = _unwrap(tp)
    if dataclasses.is_dataclass(tp):
        label = f"[{tp.__name__}](#{tp.__name__.lower()})"  # type: ignore[union-attr]
    elif meta.get("mapping"):
        label = "map"
    elif typing.get_origin(tp) is tuple:
        label = f"list of {_type_label(typing.get_args(tp)[0], {})}"
    elif meta.get("size"):
        label = "size (MiB or 256M, 1G)"
    elif meta.get("media_size"):
        label = f"{', '.join(MEDIA_SIZES)} or bytes"
    elif isinstance(tp, type) and issubclass(tp, enum.Enum):
        label = " | ".join(e.value for e in tp)
    else:
        label = {str: "string", int: "integer", bool: "boolean", Path: "path"}.get(tp, str(tp))
    return f"{label} or null" if optional else label


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def reference_markdown() -> str:
    """docs/profile-reference.md: one table per section, in model order."""
    classes: list[Any] = []

    def collect(cls: Any) -> None:
        if cls in classes:
            return
        classes.append(cls)
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            tp, _ = _unwrap(hints[f.name])
            if typing.get_origin(tp) is tuple:
                tp = typing.get_args(tp)[0]
            if dataclasses.is_dataclass(tp):
                collect(tp)

    collect(Profile)
    lines = [
        "# Profile reference",
        "",
        "<!-- Generated from builder/profile/model.py by `python -m builder.schema --write`; do not edit. -->",
        "",
        "Every key a profile may hold, with its type, default and meaning. A list key `KEY` may also be",
        "written `KEY+` in a profile that `extends` another: its entries are appended to the inherited list",
        "instead of replacing it. The JSON Schema printed by `xenlive schema` (shipped with xenlive as",
        "`builder/data/xenlive-profile.schema.json`) carries the same information for editors.",
        "",
    ]
    for cls in classes:
        lines += [f"## {cls.__name__}", ""]
        if cls is not Profile:
            lines += [f"Used by: {', '.join(_users_of(cls, classes))}.", ""]
        lines += ["| Key | Type | Default | Meaning |", "|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("internal"):
                continue
            default = _default(f)
            if default is dataclasses.MISSING:
                shown = "required"
            elif dataclasses.is_dataclass(default):
                shown = "see below"
            else:
                shown = f"`{json.dumps(default, ensure_ascii=False)}`"
            help_text = f.metadata.get("help", "")
            if f.metadata.get("pattern") is not None:
                help_text += f" (pattern `{f.metadata['pattern'].pattern}`)"
            if "min" in f.metadata or "max" in f.metadata:
                bounds = [f"min {f.metadata['min']}" if "min" in f.metadata else "",
                          f"max {f.metadata['max']}" if "max" in f.metadata else ""]  # fmt: skip
                help_text += f" ({', '.join(b for b in bounds if b)})"
            lines.append(f"| `{f.name}` | {_cell(_type_label(hints[f.name], f.metadata))} | {_cell(shown)} "
                         f"| {_cell(help_text)} |")  # fmt: skip
        lines.append("")
    lines += [
        "## Media sizes",
        "",
        "| Name | Bytes |",
        "|---|---|",
        *[f"| `{name}` | {size} |" for name, size in MEDIA_SIZES.items()],
        "",
    ]
    return "\n".join(lines)


def _users_of(cls: Any, classes: list[Any]) -> list[str]:
    found = []
    for owner in classes:
        for f in dataclasses.fields(owner):
            text = str(typing.get_type_hints(owner)[f.name])
            if re.search(rf"\b{cls.__name__}\b", text):
                found.append(f"`{owner.__name__.lower()}.{f.name}`" if owner is not Profile else f"`{f.name}`")
    return found


def main(argv: list[str]) -> int:
    """`python -m builder.schema --write` refreshes the shipped schema and reference (in a checkout:
    an installed xenlive has no docs/ to write to, and its schema is regenerated by `xenlive schema`)."""
    if argv != ["--write"]:
        print("usage: python -m builder.schema --write", file=sys.stderr)
        return 2
    if not (SOURCE_ROOT / "pyproject.toml").is_file():
        print(f"{SOURCE_ROOT} is not a source checkout of xenlive; nothing written", file=sys.stderr)
        return 2
    SCHEMA_FILE.write_text(schema_text())
    REFERENCE_FILE.parent.mkdir(parents=True, exist_ok=True)
    REFERENCE_FILE.write_text(reference_markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
