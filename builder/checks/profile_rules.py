"""Profile rules: what a profile must satisfy beyond the types and patterns of its model.

Each rule has an id, a docstring saying why, and findings that name the key they are about, so the
message reads `file:line:col: key: message` and says what to change. They run when a profile is
loaded (so `show`, `check` and `build` refuse the same profiles before anything is built); the
few that need dom0's built tree (its accounts, groups and units come from its packages) run again
right after dom0's base is built, before anything is written into it. builder/stages/customize.py
only writes files: every way the profile could make it fail is a rule here.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Iterator
from importlib import resources
from pathlib import Path, PurePosixPath

from builder.checks import Finding, ProfileFacts, Scope, all_checks, rule, unknown
from builder.errors import CheckFailed, ProfileError, TemplateError
from builder.fsutil import sha256_file
from builder.profile.finalize import profile_templates, template_context
from builder.profile.model import BUILTIN_LOCALES, GuestKind, GuestType, Profile

MEDIUM_RULE = "image-fits-medium"


def _data_lines(name: str) -> list[str]:
    text = resources.files("builder").joinpath(f"data/{name}").read_text()
    return [p for p in (line.split("#")[0].strip() for line in text.splitlines()) if p]


@functools.cache
def known_accounts() -> tuple[frozenset[str], frozenset[str]]:
    """(users, groups) every dom0 has: base-passwd's and those of xenlive's own packages
    (builder/data/dom0-accounts.txt); an integration test compares the list with a built tree."""
    users: set[str] = set()
    groups: set[str] = set()
    for line in _data_lines("dom0-accounts.txt"):
        kind, _, name = line.partition(" ")
        (users if kind == "user" else groups).add(name.strip())
    return frozenset(users), frozenset(groups)


def tree_accounts(tree: Path) -> tuple[frozenset[str], frozenset[str]]:
    """(users, groups) of a built dom0 tree."""

    def names(rel: str) -> frozenset[str]:
        path = tree / rel
        lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
        return frozenset(line.split(":", 1)[0] for line in lines if ":" in line)

    return names("etc/passwd"), names("etc/group")


@functools.cache
def supported_locales() -> frozenset[str]:
    """Locales Debian's glibc can compile (its /usr/share/i18n/SUPPORTED, builder/data/locales.txt)."""
    return frozenset(line.split()[0] for line in _data_lines("locales.txt"))


def _accounts(facts: ProfileFacts) -> tuple[frozenset[str], frozenset[str]]:
    return tree_accounts(facts.rootfs) if facts.rootfs is not None else known_accounts()


@rule(id="unique-names", title="guests, users, uids and files are named once")
def unique_names(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """Two guests of one name overwrite each other's files on the medium; two users of one name or
    uid, or two files of one path, leave only the last one, silently."""
    seen: dict[object, str] = {}
    for i, guest in enumerate(profile.guests):
        other = seen.setdefault(("guest", guest.name), f"guests[{i}]")
        if other != f"guests[{i}]":
            yield Finding(f"duplicate guest name {guest.name!r} (also {other})", "rename one", f"guests[{i}].name")
    for i, user in enumerate(profile.dom0.users):
        where = f"dom0.users[{i}]"
        other = seen.setdefault(("user", user.name), where)
        if other != where:
            yield Finding(f"duplicate user name {user.name!r} (also {other})", "merge the two", f"{where}.name")
        if user.uid is not None:
            other = seen.setdefault(("uid", user.uid), where)
            if other != where:
                yield Finding(f"uid {user.uid} is also {other}'s", "give another uid", f"{where}.uid")
            if user.name == "root":
                yield Finding("root's uid is always 0", "remove uid", f"{where}.uid")
    for i, entry in enumerate(profile.dom0.files):
        where = f"dom0.files[{i}]"
        other = seen.setdefault(("file", entry.path), where)
        if other != where:
            yield Finding(f"{entry.path} is also written by {other}", "keep one entry", f"{where}.path")


@rule(id="dom0-packages", title="xenlive's own dom0 packages stay")
def dom0_packages(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """dom0 without Xen's tools, live-boot or systemd does not boot; removing one is a mistake."""
    from builder.packages import dom0_packages

    base = set(dom0_packages(profile.dom0.suite))
    for i, package in enumerate(profile.dom0.remove_packages):
        if package in base:
            yield Finding(f"{package!r} is part of xenlive's own dom0 and cannot be removed",
                          "remove it from dom0.remove_packages", f"dom0.remove_packages[{i}]")  # fmt: skip


@rule(id="dom0-locale", title="dom0's locale is one Debian supports")
def dom0_locale(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """localedef fails on a locale glibc does not know, after minutes of building dom0."""
    locale = profile.dom0.locale
    if locale not in BUILTIN_LOCALES and locale not in supported_locales():
        yield Finding(f"{locale!r} is not a locale Debian supports (see /usr/share/i18n/SUPPORTED)",
                      "use a name like ja_JP.UTF-8 or de_DE.UTF-8", "dom0.locale")  # fmt: skip


@functools.cache
def refused_persist_paths() -> dict[str, str]:
    """The directories dom0.persist may not name, with why (builder/data/dom0-persist-refused.txt)."""
    pairs = (line.split(None, 1) for line in _data_lines("dom0-persist-refused.txt"))
    return {path: why for path, why in pairs}


@rule(id="dom0-persist", title="what persists is a directory dom0 can keep, and guests that persist have a disk")
def dom0_persist(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """dom0.persist's directories are bound from the persistence partition over dom0's own early at
    boot: the root, a directory the system makes at every boot or a directory of the installed
    system would be hidden behind a copy from another boot or build. One directory inside another
    would be bound twice, in an order that decides which copy wins. A guest keeps its disk's
    writes there, so one without a disk has nothing to keep."""
    refused = refused_persist_paths()
    for i, path in enumerate(profile.dom0.persist):
        at = f"dom0.persist[{i}]"
        pure = PurePosixPath(path)
        hit = next((r for r in refused if pure == PurePosixPath(r) or PurePosixPath(r) in pure.parents), None)
        if hit is not None:
            yield Finding(f"{path} cannot persist: {hit} is {refused[hit]}", "persist a directory of your own "
                          "data instead, such as /root, /home or /etc/ssh", at)  # fmt: skip
        elif path in ("/etc", "/var"):  # "/" itself never passes the model's path pattern
            yield Finding(f"{path} cannot persist as a whole", "name the directories below it to keep", at)
        outer = next((o for o in profile.dom0.persist if PurePosixPath(o) in pure.parents), None)
        if outer is not None:
            yield Finding(f"{path} is inside {outer}, which persists already", "remove one of them", at)
    for i, g in enumerate(profile.guests):
        if g.persist and not g.has_disk:
            yield Finding(f"guest {g.name} has no disk, so it has nothing to persist",
                          "remove persist, or give it a disk (kind debian or image)",
                          f"guests[{i}].persist")  # fmt: skip


@rule(id="check-targets", title="the machines checks.targets names are in the hardware database")
def check_targets(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """The targets decide the build's checks and the boot menu's per-machine entries: an unknown
    name would stop the build later, or check nothing."""
    from builder.hardware import target_files

    known = target_files()
    for i, name in enumerate(profile.checks.targets):
        if name != "all" and name not in known:
            yield Finding(f"unknown target {name!r}",
                          "use a name that xenlive check --list shows, or all, or describe the machine in "
                          "~/.config/xenlive/hardware/NAME.yaml", f"checks.targets[{i}]")  # fmt: skip


@rule(id="dom0-accounts", title="users, groups and owners exist in dom0", needs_build=True)
def dom0_accounts(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """A profile user named like a system account would replace it; a group or file owner that dom0
    does not have cannot be written into /etc/group or chowned at boot. Before dom0 is built, the
    accounts every dom0 has are known; those an extra package creates are known once it is built."""
    users, groups = _accounts(facts)
    provisional = facts.rootfs is None and bool(profile.dom0.packages)
    own = {u.name for u in profile.dom0.users}
    for i, user in enumerate(profile.dom0.users):
        where = f"dom0.users[{i}]"
        if user.name != "root" and user.name in users:
            yield Finding(f"{user.name!r} is a system account of dom0", "pick another name", f"{where}.name")
        for j, group in enumerate(user.groups):
            if group not in groups and group not in own:
                yield _missing(f"group {group!r} does not exist in dom0", provisional, f"{where}.groups[{j}]")
    for i, entry in enumerate(profile.dom0.files):
        owner, _, group = entry.owner.partition(":")
        where = f"dom0.files[{i}].owner"
        if owner not in users and owner not in own:
            message = f"owner {owner!r} is neither root, a system account nor one of dom0.users"
            yield _missing(message, provisional, where)
        if group and group not in groups and group not in own:
            yield _missing(f"group {group!r} does not exist in dom0", provisional, where)


def _missing(message: str, provisional: bool, key: str) -> Finding:
    """Not among the accounts every dom0 has: an error, or undecided while an extra package may add it."""
    if provisional:
        return unknown(f"{message} yet (an extra package may create it; checked once dom0 is built)")
    return Finding(message, "add the package that creates it to dom0.packages, or fix the name", key)


@rule(id="dom0-services", title="the services to enable are in dom0", needs_build=True)
def dom0_services(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """`systemctl enable` of a unit no package ships does nothing at boot; say so at build time."""
    from builder.stages.customize import find_unit

    if facts.rootfs is None:
        return
    for i, unit in enumerate(profile.dom0.services):
        if find_unit(unit, None, facts.rootfs) is None and not _xenlive_unit(unit):
            yield Finding(f"unit {unit!r} is not in dom0", "is the package that ships it in dom0.packages?",
                          f"dom0.services[{i}]")  # fmt: skip


def _xenlive_unit(unit: str) -> bool:
    return resources.files("builder").joinpath(f"templates/dom0/etc/systemd/system/{unit}").is_file()


@rule(id="dom0-files", title="each file has one source")
def dom0_files(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """A files[] entry with both content and a template (or neither) is ambiguous."""
    for i, entry in enumerate(profile.dom0.files):
        where = f"dom0.files[{i}]"
        if (entry.content is None) == (entry.template is None):
            yield Finding("give exactly one of content and template", "remove one", where)
        if entry.template is not None and not (profile.base_dir / entry.template).is_file():
            yield Finding(f"template not found: {entry.template}", "fix the path", f"{where}.template")


@rule(id="overlays", title="overlays hold only files, directories and links that stay inside")
def overlays(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """An overlay is copied into dom0 by root: a device node, or a link that climbs out of the
    overlay, has no place there; a directory where xenlive writes a file (or the reverse) would
    put xenlive's file in the wrong place or fail the build."""
    from builder.stages.customize import xenlive_paths

    own = xenlive_paths(profile)
    for i, overlay in enumerate(profile.dom0.overlays):
        where = f"dom0.overlays[{i}]"
        directory = profile.base_dir / overlay
        if not directory.is_dir() or directory.is_symlink():
            yield Finding(f"overlay directory not found: {overlay}", "fix the path", where)
            continue
        for problem in overlay_escapes(directory):
            yield Finding(problem, "remove it from the overlay", where)
        for rel, kind in overlay_entries(directory).items():
            theirs = own.get(rel)
            if theirs is not None and theirs != kind:
                yield Finding(f"{rel} is a {kind} in the overlay, but xenlive writes a {theirs} there",
                              "rename or remove it in the overlay", where)  # fmt: skip
    for i, entry in enumerate(profile.dom0.files):
        rel = entry.path.lstrip("/")
        if own.get(rel) == "directory":
            yield Finding(f"{entry.path} is a directory in dom0", "write a file below it", f"dom0.files[{i}].path")


def overlay_entries(root: Path) -> dict[str, str]:
    """Each path in an overlay (rendered name for *.j2) and whether it is a file, directory or symlink."""
    found: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in dirnames + filenames:
            item = here / name
            rel = item.relative_to(root).as_posix()
            kind = "symlink" if item.is_symlink() else "directory" if item.is_dir() else "file"
            found[rel.removesuffix(".j2") if kind == "file" else rel] = kind
    return found


def overlay_escapes(root: Path) -> list[str]:
    """What in an overlay tree could reach outside it.

    Symlinks are copied as links and resolved later inside dom0, so an absolute target names a dom0
    path and is fine; a relative target that climbs above the overlay's root is an escape. Device
    nodes, fifos and sockets have no place in an overlay.
    """
    problems = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        for name in sorted(filenames + dirnames):
            item = here / name
            rel = item.relative_to(root).as_posix()
            if item.is_symlink():
                target = os.readlink(item)
                if not target.startswith("/") and not _inside(rel, target):
                    problems.append(f"symlink {rel} -> {target} points outside the overlay")
            elif not (item.is_file() or item.is_dir()):
                problems.append(f"{rel}: overlays may hold only files, directories and symlinks")
    return problems


def _inside(rel: str, target: str) -> bool:
    """Whether a relative link at `rel` stays inside its tree, checked without touching the disk."""
    depth = len(PurePosixPath(rel).parts) - 1
    for part in PurePosixPath(target).parts:
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part != ".":
            depth += 1
    return True


@rule(id="templates-render", title="every template renders")
def templates_render(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """Render every template now, so a typo fails in a second instead of after the dom0 build."""
    from builder.profile.loader import display
    from builder.templating import render_file

    context = template_context(profile)
    for template in profile_templates(profile):
        if not template.path.is_file():
            continue  # dom0-files says so
        try:
            render_file(template.path, template.root, **context)
        except TemplateError as e:
            head, sep, rest = e.message.partition(":")
            message = f"{display(Path(head))}{sep}{rest}" if sep and os.path.isabs(head) else e.message
            yield Finding(f"template error: {message}", "fix the template", template.key)


@rule(id="guest-kinds", title="each guest has the keys of its kind")
def guest_kinds(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """Each kind of guest is built from different inputs; a key another kind uses is a mistake that
    would otherwise be ignored silently."""
    for i, g in enumerate(profile.guests):
        at = f"guests[{i}]"
        given = [k for k in ("kernel", "initrd") if isinstance(getattr(g, k), Path)]
        if g.kind == GuestKind.BUSYBOX:
            for key in ("disk", "cdrom"):
                if getattr(g, key) is not None:
                    yield Finding(f"a busybox guest has no {key}", "use kind: image", f"{at}.{key}")
            if g.overlay is not None and not (profile.base_dir / g.overlay).is_dir():
                yield Finding(f"overlay directory not found: {g.overlay}", "fix the path", f"{at}.overlay")
        elif g.kind == GuestKind.DEBIAN:
            for key in given + [k for k in ("disk", "cdrom", "overlay") if getattr(g, k) is not None]:
                yield Finding("a debian guest boots the kernel, initrd and disk built from its own tree",
                              "remove this key", f"{at}.{key}")  # fmt: skip
            if g.type == GuestType.HVM:
                yield Finding("a debian guest boots its own kernel directly", "use type pv or pvh", f"{at}.type")
            if g.debian.address and g.debian.dhcp:
                yield Finding("give either dhcp: true or a static address", "set dhcp: false",
                              f"{at}.debian.address")  # fmt: skip
        elif g.kind == GuestKind.IMAGE:
            if g.type == GuestType.HVM:
                if g.disk is None and g.cdrom is None:
                    yield Finding("an hvm image guest needs a disk or a cdrom to boot from", "add disk or cdrom", at)
            else:
                if "kernel" not in given:
                    yield Finding("an image guest of type pv or pvh needs kernel: a path to its kernel",
                                  "add kernel", f"{at}.kernel")  # fmt: skip
                if g.cdrom is not None:
                    yield Finding("cdrom is for type hvm guests", "remove it", f"{at}.cdrom")
            if g.overlay is not None:
                yield Finding("overlay is for busybox guests", "remove it", f"{at}.overlay")
        if g.ready:
            try:
                re.compile(g.ready)
            except re.error as e:
                yield Finding(f"not a regular expression: {e}", "fix the pattern", f"{at}.ready")


def guest_files(profile: Profile) -> Iterator[tuple[int, str, Path, str]]:
    """(guest index, key, file, expected sha256) of every file a guest takes from the profile."""
    for i, g in enumerate(profile.guests):
        for key in ("kernel", "initrd", "disk", "cdrom"):
            value = getattr(g, key)
            if isinstance(value, Path):
                yield i, key, profile.base_dir / value, getattr(g, f"{key}_sha256")


@rule(id="guest-files", title="guest files exist and match their sha256")
def guest_files_match(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """A disk image copied from the wrong place otherwise boots, or fails, only on the target."""
    for i, key, path, expected in guest_files(profile):
        at = f"guests[{i}]"
        if not path.is_file():
            yield Finding(f"file not found: {_written(profile, path)}", "fix the path", f"{at}.{key}")
        elif not expected:
            if profile.guests[i].kind == GuestKind.IMAGE:
                yield Finding(f"{key}_sha256 is required with {key}", "sha256sum prints it", f"{at}.{key}")
        else:
            actual = sha256_file(path)
            if actual != expected:
                yield Finding(f"{_written(profile, path)}: sha256 is {actual}, the profile says {expected}",
                              "check the file, then update the sha256", f"{at}.{key}_sha256")  # fmt: skip


def _written(profile: Profile, path: Path) -> str:
    return os.path.relpath(path, profile.base_dir)


@rule(id=MEDIUM_RULE, title="the image fits the chosen medium", skippable=True)
def image_fits_medium(profile: Profile, facts: ProfileFacts) -> Iterator[Finding]:
    """A CD image that comes out 20 MiB too big is found when the burner refuses it. Before dom0 is
    built the guests' own files are counted; then the medium's files; then the ISO itself."""
    limit = profile.media.size_limit
    if limit is None:
        return
    if facts.medium_bytes is None:
        size = sum(path.stat().st_size for _, _, path, _ in guest_files(profile) if path.is_file())
        size += sum(g.debian.disk_size << 20 for g in profile.guests if g.kind == GuestKind.DEBIAN)
        what = "the guests' files"
    else:
        size, what = facts.medium_bytes, facts.medium_what
    if size <= limit:
        return
    remedy = "raise media.size_limit, or drop dom0 packages or guests"
    if facts.medium_parts is not None:
        rows = [f"  {n / 2**20:8.1f} MiB  {name}: {hint}" for name, n, hint in facts.medium_parts()[:12]]
        remedy = "the biggest contributors:\n" + "\n".join(rows) + "\n" + remedy
    yield Finding(f"{what}: {_size(size)}, more than media.size_limit ({_size(limit)})",
                  remedy, "media.size_limit")  # fmt: skip


def _size(n: int) -> str:
    return f"{n} bytes" if n < 10 << 20 else f"{n / 2**20:.0f} MiB"


def _problems(profile: Profile, facts: ProfileFacts, ignore: tuple[str, ...], built: bool) -> list[Finding]:
    skip = {*profile.checks.skip, *ignore}
    found = []
    for c in all_checks(Scope.PROFILE):
        if (c.skippable and c.id in skip) or (built and not c.needs_build) or c.id == MEDIUM_RULE:
            continue  # the medium's size is measured at each step of a build, by require_fits
        found += [f for f in c.fn(profile, facts) if not f.unknown]
    return found


def format_findings(profile: Profile, findings: list[Finding]) -> list[str]:
    """`file:line:col: key: message; remedy` for each finding."""
    lines = []
    for f in findings:
        text = f"{f.message}; {f.remedy}" if f.remedy else f.message
        lines.append(f"{profile.where(f.key)}: {f.key}: {text}" if f.key else f"{profile.where('')}: {text}")
    return lines


def static_problems(profile: Profile, ignore: tuple[str, ...] = ()) -> list[str]:
    """Every profile rule that can be decided from the profile and its files, as messages."""
    return format_findings(profile, _problems(profile, ProfileFacts(), ignore, built=False))


def require_built(profile: Profile, rootfs: Path, ignore: tuple[str, ...] = ()) -> None:
    """The rules that need dom0's tree, once it is built; ProfileError (exit 2) on any failure."""
    problems = format_findings(profile, _problems(profile, ProfileFacts(rootfs=rootfs), ignore, built=True))
    if problems:
        raise ProfileError(problems)


def require_fits(profile: Profile, facts: ProfileFacts, ignore: tuple[str, ...]) -> None:
    """The medium's size against media.size_limit (CheckFailed, exit 3, with the contributors table)."""
    if MEDIUM_RULE in ignore or MEDIUM_RULE in profile.checks.skip:
        return
    for line in format_findings(profile, list(image_fits_medium(profile, facts))):
        raise CheckFailed(line, hint=f"or build anyway with --ignore-check {MEDIUM_RULE}")
