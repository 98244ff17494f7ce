"""Loading a profile: read the file and what it `extends`, merge, convert, check the rules, finalize.

`extends:` is resolved on the composed node trees, before conversion: a parent's nodes keep the
marks of the parent's file, so an error in an inherited key still points at the line that wrote it,
and a relative path written in a parent is rebased onto the child's directory (builder/yamlconv.py).
Each parent file is read once per load however often the chain names it, so a diamond of extends
costs one read per file, not one per path through it.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Mapping
from pathlib import Path

import yaml

from builder.errors import ProfileError
from builder.profile.finalize import finalize
from builder.profile.model import Profile
from builder.yamlconv import Converter, child, compose_file, describe, format_problem, locations

MAX_PROFILE_BYTES = 1 << 20
MAX_PARENTS = 16  # depth of an extends chain; deeper is surely a mistake
BUILTIN_NAME = re.compile(r"[A-Za-z0-9_-]+")


PACKAGE_DIR = Path(__file__).resolve().parent.parent
LOCAL_PROFILES = Path("profiles")  # a project's own profiles, found by name from where xenlive runs


def builtin_profiles_dir() -> Path:
    """The profiles that ship with xenlive (`xenlive build default`): package data, so an installed
    xenlive finds them wherever it runs, not only next to a source checkout."""
    return PACKAGE_DIR / "profiles"


def load_profile(spec: str | Path | None, ignore: tuple[str, ...] = (), variables: Mapping[str, str] | None = None
                 ) -> Profile:  # fmt: skip
    """Read, validate and finalize a profile; raise ProfileError listing every problem.

    The profile rules of builder/checks/ run here (all but those that need dom0's built tree), so
    `show`, `check` and `build` refuse the same profiles before anything is built. `ignore` names
    rules to skip, as `--ignore-check` does, where skipping one makes sense. `variables` (from
    `--var KEY=VALUE`) replace or add entries of `vars:` before anything uses them.
    """
    from builder.checks.profile_rules import static_problems

    path = resolve_profile_path(spec)
    name = str(path) if spec is not None else display(path)
    loader = _Loader()
    root = loader.load(path, name, [path.resolve()])
    if not isinstance(root, yaml.MappingNode):
        raise ProfileError([*loader.problems, format_problem(root, "", f"expected a mapping, got {describe(root)}")])
    conv = Converter(path.resolve().parent, loader.file_dirs)
    profile = conv.convert(root, Profile, "", {})
    problems = loader.problems + conv.problems
    if problems or profile is None:
        raise ProfileError(problems)
    profile = dataclasses.replace(profile, source=path.resolve(), locations=locations(root))
    if variables:
        profile = dataclasses.replace(profile, vars={**profile.vars, **variables})
    profile = finalize(profile)
    problems = static_problems(profile, ignore)
    if problems:
        raise ProfileError(problems)
    return profile


def resolve_profile_path(spec: str | Path | None, base: Path | None = None) -> Path:
    """A path as given (relative to `base` when set), else a profile's name: on the command line
    ./profiles/NAME.yaml, then the built-in NAME (the order `xenlive profiles` lists them in); in
    `extends:` (with `base`), a built-in name only, so a local `default.yaml` can extend the built-in."""
    if spec is None:
        return builtin_profiles_dir() / "default.yaml"
    path = Path(base, spec) if base is not None else Path(spec)
    if path.exists() or not BUILTIN_NAME.fullmatch(str(spec)):
        return path
    search = [builtin_profiles_dir()] if base is not None else [LOCAL_PROFILES, builtin_profiles_dir()]
    for directory in search:
        candidate = directory / f"{spec}.yaml"
        if candidate.is_file():
            return candidate
    return path


def display(path: Path) -> str:
    """How a file is named in messages: as given when relative, else relative to cwd when inside it."""
    if not path.is_absolute():
        return os.path.normpath(path)
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def _empty_like(node: yaml.MappingNode) -> yaml.MappingNode:
    return yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)


class _Loader:
    """Reads a profile and its parents into one merged node tree, collecting problems."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.file_dirs: dict[str, Path] = {}
        self.loaded: dict[Path, yaml.Node | ProfileError] = {}  # each parent once, however often named

    def read(self, path: Path, name: str) -> yaml.Node:
        """Compose one file; a problem here stops that file (there is no tree to look at)."""
        root = compose_file(path, name, "profile", MAX_PROFILE_BYTES, hint="give a profile file or a built-in name")
        self.file_dirs[name] = path.resolve().parent
        return root

    def load(self, path: Path, name: str, chain: list[Path]) -> yaml.Node:
        """The file's tree with its parents merged under it (cycle-checked via `chain`)."""
        root = self.read(path, name)
        if not isinstance(root, yaml.MappingNode):
            return root
        self.check_duplicates(root, "")
        merged: yaml.MappingNode | None = None
        for spec_node in self.extends_entries(child(root, "extends")):
            tree = self.load_parent(spec_node, path, chain)
            if tree is not None:
                merged = tree if merged is None else self.merge(merged, tree)
        own = yaml.MappingNode(root.tag, [(k, v) for k, v in root.value if getattr(k, "value", None) != "extends"],
                               root.start_mark, root.end_mark)  # fmt: skip
        return self.merge(merged if merged is not None else _empty_like(root), own)

    def load_parent(self, spec_node: yaml.ScalarNode, path: Path, chain: list[Path]) -> yaml.MappingNode | None:
        spec = str(spec_node.value)
        parent = resolve_profile_path(spec, path.parent)
        resolved = parent.resolve()
        if resolved in chain:
            cycle = " -> ".join(display(p) for p in [*chain[chain.index(resolved) :], resolved])
            self.problems.append(format_problem(spec_node, "extends", f"extends cycle: {cycle}"))
            return None
        if not parent.is_file():
            self.problems.append(format_problem(spec_node, "extends", f"parent profile not found: {spec}"))
            return None
        if len(chain) >= MAX_PARENTS:
            self.problems.append(format_problem(spec_node, "extends", f"more than {MAX_PARENTS} levels of extends"))
            return None
        if resolved not in self.loaded:
            try:
                self.loaded[resolved] = self.load(parent, display(parent), [*chain, resolved])
            except ProfileError as e:
                self.loaded[resolved] = e
                self.problems.extend(e.problems)
        tree = self.loaded[resolved]
        if isinstance(tree, ProfileError):
            return None
        if not isinstance(tree, yaml.MappingNode):
            self.problems.append(format_problem(spec_node, "extends", f"parent profile {spec} is not a mapping"))
            return None
        return tree

    def check_duplicates(self, node: yaml.Node, path: str) -> None:
        """The YAML parser keeps the last of two equal keys silently; a profile is refused instead."""
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, yaml.Node] = {}
            for key_node, value_node in node.value:
                key = getattr(key_node, "value", None)
                sub = f"{path}.{key}" if path else str(key)
                if isinstance(key, str):
                    if key in seen:
                        line = seen[key].start_mark.line + 1
                        self.problems.append(
                            format_problem(key_node, sub, f"duplicate key (first given on line {line})")
                        )
                    seen.setdefault(key, key_node)
                self.check_duplicates(value_node, sub)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self.check_duplicates(item, f"{path}[{i}]")

    def extends_entries(self, node: yaml.Node | None) -> list[yaml.ScalarNode]:
        if node is None:
            return []
        if isinstance(node, yaml.ScalarNode):
            items = [node]
        elif isinstance(node, yaml.SequenceNode):
            items = node.value
        else:
            self.problems.append(
                format_problem(node, "extends", "expected a profile name or a list of them, got a mapping")
            )
            return []
        good = []
        for i, item in enumerate(items):
            if isinstance(item, yaml.ScalarNode) and isinstance(item.value, str) and item.value:
                good.append(item)
            else:
                self.problems.append(
                    format_problem(item, f"extends[{i}]", f"expected a profile name, got {describe(item)}")
                )
        return good

    def merge(self, base: yaml.MappingNode, over: yaml.MappingNode, path: str = "") -> yaml.MappingNode:
        """`over` on top of `base`: maps merge key by key, anything else replaces; `KEY+: [...]` appends.

        Duplicate keys were reported before; the first of each wins here, as in the report. Neither
        input is changed, so a parent read once can be merged under several children.
        """
        entries: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        others: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in base.value:
            key = getattr(key_node, "value", None)
            if isinstance(key, str):
                entries.setdefault(key, (key_node, value_node))
            else:
                others.append((key_node, value_node))
        seen: set[str] = set()
        for key_node, value_node in over.value:
            key = getattr(key_node, "value", None)
            if not isinstance(key, str):
                others.append((key_node, value_node))
                continue
            if key in seen:
                continue
            seen.add(key)
            sub = f"{path}.{key}" if path else key
            if key.endswith("+") and len(key) > 1:
                self.append(entries, key_node, value_node, sub)
                continue
            old = entries.get(key)
            if old and isinstance(old[1], yaml.MappingNode) and isinstance(value_node, yaml.MappingNode):
                entries[key] = (key_node, self.merge(old[1], value_node, sub))
            elif isinstance(value_node, yaml.MappingNode):
                entries[key] = (key_node, self.merge(_empty_like(value_node), value_node, sub))
            else:
                entries[key] = (key_node, value_node)
        return yaml.MappingNode(over.tag, [*entries.values(), *others], over.start_mark, over.end_mark)

    def append(self, entries: dict[str, tuple[yaml.Node, yaml.Node]], key_node: yaml.Node, value_node: yaml.Node,
               sub: str) -> None:  # fmt: skip
        """`KEY+: [...]`: the inherited list with these entries after it."""
        name = str(key_node.value)[:-1]
        if not isinstance(value_node, yaml.SequenceNode):
            self.problems.append(format_problem(value_node, sub, f"{name}+ appends a list, got {describe(value_node)}"))
            return
        old = entries.get(name)
        old_items = old[1].value if old and isinstance(old[1], yaml.SequenceNode) else []
        plain_key = yaml.ScalarNode("tag:yaml.org,2002:str", name, key_node.start_mark, key_node.end_mark)
        joined = yaml.SequenceNode(value_node.tag, [*old_items, *value_node.value],
                                   value_node.start_mark, value_node.end_mark)  # fmt: skip
        entries[name] = (old[0] if old else plain_key, joined)
