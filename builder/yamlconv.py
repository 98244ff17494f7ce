"""Reading YAML files that strangers wrote into frozen dataclasses, with file:line:column in every error.

Profiles and hardware descriptions are both read this way: compose_file() turns a file into YAML
nodes (which keep their marks), and Converter walks a dataclass's fields and the nodes side by side.
Each field's `metadata` says what the value may be (a full-match `pattern`, `min`/`max`, a `size`),
so the dataclasses stay the one registry of keys, types and limits.

Both readers treat the file as hostile: only regular files, read with a size cap; aliases counted as
if expanded (billion laughs); nesting bounded; every value PyYAML cannot construct (a bad date, an
integer with thousands of digits) reported as a problem of that key, never a traceback.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import os
import re
import stat
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from builder.errors import ProfileError

MAX_NODES = 20_000  # YAML nodes once aliases are expanded
MAX_DEPTH = 64  # nesting of maps and lists; real profiles need about 6
MAX_ITEMS = 1024  # entries of a list; far above any real file, low enough that nothing blows up
MAX_INT = 2**53  # beyond this no field of ours means anything; each field has its own tighter max
SIZE = re.compile(r"(\d{1,12})\s*([KMGT]i?B?|[kmgt])?")

_UNREADABLE = object()  # what Converter.construct returns after reporting an unreadable value


def format_problem(node: yaml.Node, path: str, message: str) -> str:
    """`file:line:column: key.path: message`, the shape of every problem xenlive reports in a file."""
    mark = node.start_mark
    where = f"{mark.name}:{mark.line + 1}:{mark.column + 1}"
    return f"{where}: {path}: {message}" if path else f"{where}: {message}"


def describe(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    return repr(node.value)


def child(node: yaml.Node | None, key: str) -> yaml.Node | None:
    """The value node of `key` in a mapping node, or None."""
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            if getattr(k, "value", None) == key:
                return v  # type: ignore[no-any-return]
    return None


def node_at(root: yaml.Node, keys: tuple[str | int, ...]) -> yaml.Node:
    """The node at a key path, or the deepest existing one (errors then point near the cause)."""
    node = root
    for key in keys:
        if isinstance(key, int):
            ok = isinstance(node, yaml.SequenceNode) and 0 <= key < len(node.value)
            nxt = node.value[key] if ok else None
        else:
            nxt = child(node, key)
        if nxt is None:
            return node
        node = nxt
    return node


def key_path(keys: tuple[str | int, ...]) -> str:
    """("guests", 1, "memory") -> "guests[1].memory"."""
    out = ""
    for key in keys:
        out += f"[{key}]" if isinstance(key, int) else (f".{key}" if out else key)
    return out


def walk(root: yaml.Node) -> Iterator[tuple[yaml.Node, int]]:
    """Every node with its depth, aliases visited each time they are used (as an expansion would)."""
    stack = [(root, 0)]
    while stack:
        node, depth = stack.pop()
        yield node, depth
        if isinstance(node, yaml.SequenceNode):
            stack.extend((n, depth + 1) for n in node.value)
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.extend(((key, depth + 1), (value, depth + 1)))


def read_regular_file(path: Path, name: str, what: str, max_bytes: int, hint: str | None = None) -> bytes:
    """The bytes of a regular file, at most `max_bytes`: a FIFO, a device or /dev/zero is refused
    before a byte is read (reading would hang or never end)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise ProfileError([f"{name}: {what} not found"], hint=hint) from None
    except OSError as e:
        raise ProfileError([f"{name}: cannot read {what}: {e.strerror}"]) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise ProfileError([f"{name}: is a directory, not a {what}"])
        if not stat.S_ISREG(info.st_mode):
            raise ProfileError([f"{name}: is not a regular file (a device, FIFO or socket), not a {what}"])
        if info.st_size > max_bytes:
            raise ProfileError([f"{name}: {what} is {info.st_size} bytes, more than the {max_bytes} allowed"])
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    except OSError as e:
        raise ProfileError([f"{name}: cannot read {what}: {e.strerror}"]) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise ProfileError([f"{name}: {what} is more than the {max_bytes} bytes allowed"])
    return data


def compose_file(path: Path, name: str, what: str, max_bytes: int, hint: str | None = None) -> yaml.Node:
    """Read and compose one YAML file for the converter; every node's mark names the file."""
    data = read_regular_file(path, name, what, max_bytes, hint)
    try:
        root = yaml.compose(data.decode("utf-8"), Loader=yaml.SafeLoader)
    except UnicodeDecodeError as e:
        raise ProfileError([f"{name}: not UTF-8 text ({e.reason} at byte {e.start})"]) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark
        where = f"{name}:{mark.line + 1}:{mark.column + 1}" if mark else name
        raise ProfileError([f"{where}: YAML syntax error: {e.problem}"]) from None
    except yaml.YAMLError as e:
        raise ProfileError([f"{name}: YAML error: {e}"]) from None
    except RecursionError:
        raise ProfileError([f"{name}: nested more than the YAML reader can follow"]) from None
    if root is None:
        raise ProfileError([f"{name}: the {what} is empty"])
    count = 0
    for node, depth in walk(root):
        count += 1
        if count > MAX_NODES:
            raise ProfileError([f"{name}: more than {MAX_NODES} YAML nodes once aliases are expanded (an alias bomb?)"])
        if depth > MAX_DEPTH:
            raise ProfileError([format_problem(node, "", f"nested more than {MAX_DEPTH} levels deep")])
        node.start_mark.name = name
    return root


def parse_size_mib(value: Any) -> int | None:
    """An int is MiB; a string like "512M", "1G", "2GiB" is converted to MiB."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if not isinstance(value, str):
        return None
    m = SIZE.fullmatch(value.strip())
    if not m:
        return None
    unit = (m.group(2) or "M")[0].upper()
    factor = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}[unit]
    return int(int(m.group(1)) * factor)


def non_json(value: Any) -> str | None:
    """What in a value would not survive JSON (the build id hashes the profile as JSON), if anything."""
    if value is None or isinstance(value, str | bool | int | float):
        return None
    if isinstance(value, list):
        return next((odd for odd in map(non_json, value) if odd), None)
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            return "a map with keys that are not text"
        return next((odd for odd in map(non_json, value.values()) if odd), None)
    return f"a {type(value).__name__} ({value!r})"


def _type_name(tp: Any, meta: Mapping[str, Any]) -> str:
    if meta.get("size"):
        return "a size"
    return {str: "a string", int: "an integer", bool: "true or false", Path: "a path"}.get(tp, "a value")


class Converter:
    """Turns composed YAML nodes into dataclasses, collecting every problem it finds.

    Paths are rebased onto the directory of the file being loaded (`root_dir`), kept relative as
    written, so `xenlive show` and the build id do not depend on where the checkout lives; a path
    written in a parent file (`file_dirs` maps each file's name to its directory) is rebased the same
    way, so a valid parent stays valid in its child.
    """

    def __init__(self, root_dir: Path, file_dirs: Mapping[str, Path] | None = None) -> None:
        self.root_dir = root_dir
        self.file_dirs = dict(file_dirs or {})
        self.problems: list[str] = []
        self.constructor = yaml.SafeLoader("")

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(format_problem(node, path, message))

    def convert(self, node: yaml.Node, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
        origin = typing.get_origin(tp)
        if origin in (typing.Union, types.UnionType):
            if _is_null(node):
                return None
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            if meta.get("builtins") is not None and isinstance(node, yaml.ScalarNode):
                return self.convert_source(node, args[0], path, meta)
            tp = args[0]
            origin = typing.get_origin(tp)
        if dataclasses.is_dataclass(tp):
            return self.convert_dataclass(node, tp, path)
        if meta.get("mapping"):
            return self.convert_vars(node, path)
        if origin is tuple:
            if meta.get("scalar_ok") and isinstance(node, yaml.ScalarNode):
                node = yaml.SequenceNode("tag:yaml.org,2002:seq", [node], node.start_mark, node.end_mark)
            if not isinstance(node, yaml.SequenceNode):
                self.error(node, path, f"expected a list, got {describe(node)}")
                return None
            if len(node.value) > meta.get("max_items", MAX_ITEMS):
                self.error(
                    node, path, f"expected at most {meta.get('max_items', MAX_ITEMS)} entries, got {len(node.value)}"
                )
                return None
            item_tp = typing.get_args(tp)[0]
            items = [self.convert(n, item_tp, f"{path}[{i}]", meta) for i, n in enumerate(node.value)]
            if meta.get("nonempty") and not items:
                self.error(node, path, "expected at least one entry")
            return tuple(items)
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, path, f"expected {_type_name(tp, meta)}, got {describe(node)}")
            return None
        if meta.get("file_mode"):
            return self.convert_mode(node, path, meta)
        value = self.construct(node, path)
        if value is _UNREADABLE:
            return None
        return self.convert_scalar(node, value, tp, path, meta)

    def convert_source(self, node: yaml.ScalarNode, builtin: Any, path: str, meta: Mapping[str, Any]) -> Any:
        """A file that is either one of xenlive's own (`builtins`, an enum's values) or a path."""
        value = self.construct(node, path)
        if value is _UNREADABLE:
            return None
        allowed = tuple(meta["builtins"])
        if isinstance(value, str) and value in allowed:
            return builtin(value)
        if isinstance(value, str) and value in {e.value for e in builtin}:
            self.error(node, path, f"{value!r} cannot be used here; expected {' or '.join(map(repr, allowed))}"
                       " or a path")  # fmt: skip
            return None
        return self.convert_scalar(node, value, Path, path, meta)

    def construct(self, node: yaml.Node, path: str, deep: bool = False) -> Any:
        """The node's Python value; an unknown tag, a bad date or a huge number is the user's error."""
        try:
            return self.constructor.construct_object(node, deep=deep)
        except yaml.YAMLError as e:
            self.error(node, path, f"cannot read this value: {getattr(e, 'problem', None) or e}")
        except (ValueError, OverflowError) as e:
            self.error(node, path, f"cannot read this value: {str(e).splitlines()[0][:120]}")
        except RecursionError:
            self.error(node, path, "cannot read this value: nested too deeply")
        return _UNREADABLE

    def convert_vars(self, node: yaml.Node, path: str) -> dict[str, Any] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {describe(node)}")
            return None
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str) or not VAR_NAME.fullmatch(key):
                self.error(key_node, path, f"variable names are identifiers like site_name, got {describe(key_node)}")
                continue
            value = self.construct(value_node, f"{path}.{key}", deep=True)
            if value is _UNREADABLE:
                continue
            odd = non_json(value)
            if odd is not None:
                self.error(value_node, f"{path}.{key}", f"expected text, numbers, true/false, lists and maps, got {odd}"
                           " (quote it to make it text)")  # fmt: skip
                continue
            result[key] = value
        return result

    def convert_mode(self, node: yaml.ScalarNode, path: str, meta: Mapping[str, Any]) -> str | None:
        """Read the mode from the raw text: YAML 1.1 turns 0644 into 420 and 644 into 644, a trap."""
        text = str(node.value)
        if not meta["file_mode"].fullmatch(text):
            self.error(node, path, f'expected an octal mode like "0644", got {text!r}')
            return None
        return text.rjust(4, "0")

    def convert_scalar(self, node: yaml.Node, value: Any, tp: Any, path: str, meta: Mapping[str, Any]) -> Any:
        if meta.get("size"):
            size = parse_size_mib(value)
            if size is None:
                self.error(node, path, f'expected a size in MiB or like "256M", "1G", got {value!r}')
            elif size < meta.get("min", 0):
                self.error(node, path, f"expected at least {meta['min']} MiB, got {size} MiB")
            elif size > meta.get("max", MAX_INT):
                self.error(node, path, f"expected at most {meta.get('max', MAX_INT)} MiB, got {size} MiB")
            return size
        if meta.get("media_size"):
            return self.convert_media_size(node, value, path, meta["media_size"])
        if isinstance(tp, type) and issubclass(tp, enum.Enum):
            choices = [e.value for e in tp]
            if value not in choices:
                self.error(node, path, f"expected one of {', '.join(choices)}, got {value!r}")
                return None
            return tp(value)
        if tp is bool:
            if not isinstance(value, bool):
                self.error(node, path, f"expected true or false, got {value!r}")
                return None
            return value
        if tp is int:
            if not isinstance(value, int) or isinstance(value, bool):
                self.error(node, path, f"expected an integer, got {value!r}")
                return None
            if "min" in meta and value < meta["min"]:
                self.error(node, path, f"expected at least {meta['min']}, got {value}")
            if value > meta.get("max", MAX_INT):
                self.error(node, path, f"expected at most {meta.get('max', MAX_INT)}, got {value}")
            return value
        if tp in (str, Path):
            if not isinstance(value, str):
                self.error(node, path, f"expected a string, got {value!r}")
                return None
            if "max_length" in meta and len(value) > meta["max_length"]:
                self.error(node, path, f"expected at most {meta['max_length']} characters, got {len(value)}")
                return None
            pattern = meta.get("pattern")
            if pattern is not None and not pattern.fullmatch(value):
                self.error(node, path, meta.get("invalid") or f"{value!r} is not valid: {meta['help']}")
                return value
            if tp is Path:
                return self.rebase(node, path, value)
            return value
        raise TypeError(f"unsupported field type {tp!r}")  # a bug in the model, not the user's fault

    def convert_media_size(self, node: yaml.Node, value: Any, path: str, sizes: Mapping[str, int]) -> int | None:
        """A disc name from `sizes` or a positive number of bytes."""
        if isinstance(value, str) and value in sizes:
            return sizes[value]
        if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_INT:
            return value
        self.error(node, path, f"expected {', '.join(sizes)} or a number of bytes, got {value!r}")
        return None

    def rebase(self, node: yaml.Node, path: str, value: str) -> Path | None:
        """A path written in some file of the extends chain, made relative to the loaded file.

        Absolute paths are refused, and so is a path that climbs above the directory of the file that
        wrote it (`../../etc`): a profile names its own files, not the host's.
        """
        parts = value.split("/")
        if not value or os.path.isabs(value) or "\0" in value:
            self.error(node, path, f"expected a path relative to the profile, got {value!r}")
            return None
        depth = 0
        for part in parts:
            depth += -1 if part == ".." else 0 if part in ("", ".") else 1
            if depth < 0:
                self.error(node, path, f"{value!r} climbs out of the profile's directory; keep files beside it")
                return None
        here = self.file_dirs.get(node.start_mark.name, self.root_dir)
        return Path(os.path.normpath(os.path.relpath(here / value, self.root_dir)))

    def convert_dataclass(self, node: yaml.Node, cls: Any, path: str) -> Any:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping, got {describe(node)}")
            return None
        hints = typing.get_type_hints(cls)
        fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
        kwargs: dict[str, Any] = {}
        nulls: set[str] = set()
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            sub = f"{path}.{key}" if path else str(key)
            if not isinstance(key, str):
                self.error(key_node, path, "keys must be strings")
                continue
            if key not in fields:
                # A key of an older format: say what replaced it, which a spelling suggestion cannot.
                replaced = next((r[key] for f in fields.values() if key in (r := f.metadata.get("replaces", {}))), "")
                if replaced:
                    self.error(key_node, sub, replaced)
                    continue
                close = difflib.get_close_matches(key, list(fields), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {', '.join(fields)}"
                self.error(key_node, sub, f"unknown key{hint}")
                continue
            if fields[key].metadata.get("resolved"):
                continue
            if _is_null(value_node) and type(None) in typing.get_args(hints[key]):
                nulls.add(key)  # an optional field written as null: none, or not known
            kwargs[key] = self.convert(value_node, hints[key], sub, fields[key].metadata)
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                self.error(node, path, f"missing required key {name!r}")
        if self.problems:
            return None
        # None is also what a conversion that failed returns: only a written null stays None.
        return cls(**{k: v for k, v in kwargs.items() if v is not None or k in nulls})


def _is_null(node: yaml.Node) -> bool:
    return isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null"


VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def locations(root: yaml.Node) -> dict[str, str]:
    """`file:line:column` of every key path in a (merged) tree, for messages about a built model."""
    found: dict[str, str] = {}
    stack: list[tuple[yaml.Node, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        mark = node.start_mark
        found.setdefault(path, f"{mark.name}:{mark.line + 1}:{mark.column + 1}")
        if isinstance(node, yaml.SequenceNode):
            stack.extend((n, f"{path}[{i}]") for i, n in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(getattr(key, "value", None), str):
                    stack.append((value, f"{path}.{key.value}" if path else key.value))
    return found
