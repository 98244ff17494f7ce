"""What modprobe would load for a few kernel modules, and in which order, read from a kernel's
modules.dep, modules.softdep, modules.alias and modules.builtin.

Why: a guest initramfs of xenlive's own (stages/guests.py) has no modprobe and no module database,
only busybox's insmod, which loads one file and resolves nothing. So the build works out the order
on the host: each module's hard dependencies (modules.dep) first, then the module. Its soft
pre-dependencies (modules.softdep, "pre:") come before those; they name aliases as often as
modules (ext4's "crypto-crc32c"), and an alias may stand for several modules of which only one
works on a given CPU (crc32c_generic, crc32c_intel), so they are loaded when they can be and never
required. A required module that is neither in modules.dep nor built in stops the build.

The database comes from a guest's tree, that is from packages of a mirror the profile names: only
regular files are read (a link to a host file or device is refused), and a module's path must be a
plain relative one under the kernel's directory.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass
from pathlib import Path

from builder.errors import XenliveError


@dataclass(frozen=True)
class Load:
    name: str  # as the kernel knows it: dashes become underscores
    path: str  # relative to lib/modules/VERSION
    required: bool  # False: a soft dependency, loaded when it can be


def module_name(path_or_name: str) -> str:
    """The kernel's name of a module: "kernel/drivers/block/xen-blkfront.ko.xz" -> "xen_blkfront"."""
    return path_or_name.rsplit("/", 1)[-1].split(".ko")[0].replace("-", "_")


MODULE_PATH = re.compile(r"(?:[A-Za-z0-9_+-][A-Za-z0-9_.+-]*/)*[A-Za-z0-9_+-][A-Za-z0-9_.+-]*\.ko(?:\.xz|\.gz|\.zst)?")
MAX_DATABASE_BYTES = 16 << 20  # modules.alias of a whole Debian kernel is about 1.5 MB


def read_regular(path: Path, limit: int) -> bytes | None:
    """A regular file's bytes, not through a link; None when it does not exist."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return None
    if not stat.S_ISREG(st.st_mode):
        raise XenliveError(f"{path} is not a regular file (a link or a device in the guest's tree)")
    if st.st_size > limit:
        raise XenliveError(f"{path} has {st.st_size} bytes, more than the {limit} a kernel's is likely to have")
    return path.read_bytes()


def _lines(path: Path) -> list[str]:
    data = read_regular(path, MAX_DATABASE_BYTES)
    return [] if data is None else data.decode(errors="replace").splitlines()


def load_order(base: Path, names: tuple[str, ...] | list[str]) -> list[Load]:
    """The modules to insmod, in order, so that `names` (and what they need) are loaded.

    `base` is a kernel's lib/modules/VERSION directory. Built-in modules need no loading.
    """
    dep = read_regular(base / "modules.dep", MAX_DATABASE_BYTES)
    if dep is None:
        raise XenliveError(f"{base}/modules.dep is missing", hint="is the kernel's package complete?")
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in dep.decode(errors="replace").splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            for one in (path, *rest.split()):
                if not MODULE_PATH.fullmatch(one) or ".." in one.split("/"):
                    raise XenliveError(f"{base}/modules.dep names {one!r}, not a module's path under the kernel's")
            deps[module_name(path)] = (path, [module_name(d) for d in rest.split()])
    soft: dict[str, list[str]] = {}
    for line in _lines(base / "modules.softdep"):
        words = line.split()
        if len(words) >= 3 and words[0] == "softdep":
            pre = soft.setdefault(module_name(words[1]), [])
            section = ""
            for word in words[2:]:
                if word.endswith(":"):
                    section = word
                elif section == "pre:":
                    pre.append(word)
    aliases: dict[str, list[str]] = {}
    for line in _lines(base / "modules.alias"):
        words = line.split()
        if len(words) == 3 and words[0] == "alias":
            aliases.setdefault(words[1], []).append(module_name(words[2]))
    builtin = {module_name(line) for line in _lines(base / "modules.builtin") if line.strip()}

    # What `names` need for certain: their hard dependencies, all the way down.
    needed: set[str] = set()
    todo = [module_name(n) for n in names]
    while todo:
        name = todo.pop()
        if name in needed or name in builtin:
            continue
        if name not in deps:
            raise XenliveError(f"kernel module {name} is neither in {base}/modules.dep nor built in")
        needed.add(name)
        todo += deps[name][1]

    order: list[Load] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen or name in builtin or name not in deps:
            return  # a soft dependency the kernel lacks: nothing to load
        seen.add(name)
        path, hard = deps[name]
        for alias in soft.get(name, []):
            for target in [module_name(alias)] if module_name(alias) in deps else aliases.get(alias, []):
                visit(target)
        for dep in hard:
            visit(dep)
        order.append(Load(name, path, name in needed))

    for name in names:
        visit(module_name(name))
    return order
