"""The top layer over dom0's base: xenlive's own services, the profile's dom0 settings, overlays, files.

Kept apart from the base layer so that an overlay edit rebuilds only this small layer.

How settings are applied, and why:

- Accounts are written at build time as complete /etc/passwd, shadow, group and gshadow files,
  computed from the base tree's own files (ctx.rootfs) plus the profile's users. The base layer owns
  those files, so fragments cannot work; a first-boot `useradd` would also work, but it costs boot
  time under TCG, cannot be unit-tested, and a getty with autologin may race it. Computing the files
  is deterministic and the tests can compare them line by line.
- The top layer is squashed with -all-root, so ownership cannot travel in it. The owners that are
  not root (home directories, /etc/shadow's group, `files[].owner`) go into /etc/xenlive/owners and
  a small first-boot oneshot (xenlive-setup, POSIX sh: dom0 has no Python) applies them.
- Locale data is compiled at build time with the base tree's own localedef (in a chroot, as we build
  as root), so the live system needs no locale-gen run at every boot and glibc's data matches.
- Keyboard, locale, time zone and network are plain configuration files read by console-setup,
  systemd and systemd-networkd at boot.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path, PurePosixPath
from typing import Any

from builder.context import BuildContext
from builder.errors import XenliveError
from builder.log import VERBOSE
from builder.profile import BUILTIN_LOCALES, Profile, User, template_context
from builder.profile.model import persists
from builder.run import run
from builder.templating import render, render_file

log = logging.getLogger(__name__)

FIRST_UID = 1000
UNIT_DIRS = ("etc/systemd/system", "lib/systemd/system", "usr/lib/systemd/system")
PERSIST_UNIT = "xenlive-persist.service"  # uses the stick's persistence partition (usr/lib/xenlive/persist)
DOM0_TEMPLATES = Path(str(resources.files("builder").joinpath("templates/dom0")))


@dataclass
class Owners:
    """Ownership the -all-root top layer cannot carry: `chown` lines for xenlive-setup at first boot."""

    lines: list[str] = field(default_factory=list)

    def add(self, uid: int, gid: int, path: str, recursive: bool = False) -> None:
        self.lines.append(f"{'R' if recursive else 'F'} {uid}:{gid} {path}")


def customize(ctx: BuildContext) -> None:
    ctx.top.mkdir(parents=True, exist_ok=True)
    profile = ctx.profile
    context = template_context(profile)
    base = ctx.rootfs
    apply_overlay(DOM0_TEMPLATES, ctx.top, context, base)
    owners = Owners()
    write_accounts(profile, base, ctx.top, owners)
    write_locale(profile, ctx.top)
    write_network(profile, ctx.top)
    if base is not None:
        generate_locale(profile.dom0.locale, base, ctx.top)
    for overlay in profile.dom0.overlays:
        log.log(VERBOSE, "    overlay %s", overlay)
        apply_overlay(profile.base_dir / overlay, ctx.top, context, base)
    write_files(profile, ctx.top, base, context, owners, _accounts(ctx.top, base))
    (ctx.top / "etc/xenlive").mkdir(parents=True, exist_ok=True)
    (ctx.top / "etc/xenlive/owners").write_text("".join(f"{line}\n" for line in owners.lines))
    enable_units(ctx.top)
    if not persists(profile):
        # Nothing to keep: the unit would only say so, 4 s before xen.service under TCG; ready says it.
        disable_unit(ctx.top, PERSIST_UNIT)
    mask_units(ctx.top)
    for unit in profile.dom0.services:
        enable_service(unit, ctx.top, base)


def xenlive_paths(profile: Profile) -> dict[str, str]:
    """What xenlive itself writes into dom0's top layer (path -> file, directory or symlink), so an
    overlay that puts a directory where xenlive writes a file, or the reverse, is found at load."""
    found: dict[str, str] = {}

    def add(rel: str, kind: str) -> None:
        found[rel] = kind
        parent = PurePosixPath(rel).parent
        while str(parent) != ".":
            found[str(parent)] = "directory"
            parent = parent.parent

    for path in sorted(DOM0_TEMPLATES.rglob("*")):
        rel = path.relative_to(DOM0_TEMPLATES).as_posix()
        add(rel.removesuffix(".j2"), "directory" if path.is_dir() else "file")
    for rel in ("etc/default/locale", "etc/locale.conf", "etc/timezone", "etc/default/keyboard", "etc/xenlive/owners"):
        add(rel, "file")
    add("etc/localtime", "symlink")
    if profile.dom0.users:
        for rel in ("etc/passwd", "etc/group", "etc/shadow", "etc/gshadow"):
            add(rel, "file")
    add("etc/systemd/network", "directory")
    return found


def install_section(unit_file: Path) -> dict[str, list[str]]:
    """The [Install] section of a unit, each key's values from all its lines.

    systemd accumulates repeated keys (networkd's unit has three `Also=` lines); configparser would
    keep only the last one, so this reads the section by hand.
    """
    values: dict[str, list[str]] = {}
    section = ""
    for raw in unit_file.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif section == "Install" and "=" in line:
            key, _, value = line.partition("=")
            if value.strip():
                values.setdefault(key.strip(), []).extend(value.split())
            else:
                values[key.strip()] = []  # an empty assignment resets the list, as in systemd
    return values


def masked_units(where: str) -> list[str]:
    """The units and generators data/masked-units.txt masks in dom0 (where="dom0") or in Debian
    guests (where="guests"), as paths under /etc/systemd."""
    text = resources.files("builder").joinpath("data/masked-units.txt").read_text()
    names = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and where in fields[1:]:
            names.append(fields[0] if "/" in fields[0] else f"system/{fields[0]}")
    return names


def mask_units(root: Path) -> None:
    """Link dom0's masked units and generators to /dev/null, as `systemctl mask` would."""
    for name in masked_units("dom0"):
        link = root / "etc/systemd" / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")


def enable_units(root: Path) -> None:
    """Do what `systemctl enable` does for units in /etc/systemd/system: link them into WantedBy targets.

    systemctl cannot run here (no systemd in the build), and the units come from overlays too.
    """
    units = root / "etc/systemd/system"
    if not units.is_dir():
        return
    for unit in sorted(units.glob("*.service")) + sorted(units.glob("*.timer")):
        if unit.is_symlink():
            continue
        for target in install_section(unit).get("WantedBy", []):
            wants = units / f"{target}.wants"
            wants.mkdir(exist_ok=True)
            link = wants / unit.name
            if not link.is_symlink():
                link.symlink_to(f"../{unit.name}")


def disable_unit(root: Path, name: str) -> None:
    """Undo enable_units for one of the top layer's units: remove its links from the .wants directories."""
    for link in (root / "etc/systemd/system").glob(f"*.wants/{name}"):
        link.unlink()


def find_unit(name: str, top: Path | None, base: Path | None) -> tuple[Path, str] | None:
    """The unit file (and its path inside dom0) in the top layer first, then the base tree."""
    for tree in (top, base):
        if tree is None:
            continue
        for directory in UNIT_DIRS:
            candidate = tree / directory / name
            if candidate.is_file():
                return candidate, f"/{directory}/{name}"
    return None


def enable_service(name: str, top: Path, base: Path | None, _seen: set[str] | None = None) -> None:
    """`systemctl enable NAME` for a unit of the base tree or the top layer: WantedBy, RequiredBy, Alias, Also."""
    seen = _seen if _seen is not None else set()
    if name in seen:
        return
    seen.add(name)
    found = find_unit(name, top, base)
    if found is None:
        raise XenliveError(f"unit {name!r} is not in dom0 (named by dom0.services or an Also= of another unit)",
                           hint="is the package that ships it in dom0.packages?")  # fmt: skip
    unit_file, in_dom0 = found
    install = install_section(unit_file)
    units = top / "etc/systemd/system"
    for key, suffix in (("WantedBy", "wants"), ("RequiredBy", "requires")):
        for target in install.get(key, []):
            _link(units / f"{target}.{suffix}" / name, in_dom0)
    for alias in install.get("Alias", []):
        _link(units / alias, in_dom0)
    for also in install.get("Also", []):
        enable_service(also, top, base, seen)


def _link(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if not link.is_symlink() and not link.exists():
        link.symlink_to(target)


# --- accounts -------------------------------------------------------------------------------------


def _read_table(path: Path) -> list[list[str]]:
    return [line.split(":") for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def _write_table(path: Path, rows: list[list[str]], mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(":".join(row) + "\n" for row in rows))
    os.chmod(path, mode)


def write_accounts(profile: Profile, base: Path | None, top: Path, owners: Owners) -> None:
    """Complete account files from the base tree's plus the profile's users (see the module docstring)."""
    if not profile.dom0.users:
        return
    if base is None:
        raise XenliveError("dom0 users need the base tree's account files (the rootfs stage has not run)")
    passwd = _read_table(base / "etc/passwd")
    shadow = _read_table(base / "etc/shadow")
    group = _read_table(base / "etc/group")
    gshadow = _read_table(base / "etc/gshadow")
    lastchg = next((row[2] for row in shadow if row[0] == "root" and len(row) > 2), "0")
    used_uids = {int(row[2]) for row in passwd if len(row) > 2 and row[2].isdigit()}
    used_gids = {int(row[2]) for row in group if len(row) > 2 and row[2].isdigit()}
    used_uids |= {u.uid for u in profile.dom0.users if u.uid is not None}
    for i, user in enumerate(profile.dom0.users):
        where = f"dom0.users[{i}]"
        existing = next((row for row in passwd if row[0] == user.name), None)
        if user.name == "root":
            assert existing is not None
            existing[4], existing[6] = user.comment or existing[4], user.shell
            uid, gid, home = 0, 0, "/root"
        else:
            if existing is not None:
                raise XenliveError(f"{where}.name: {user.name!r} is a system account of dom0")  # rule dom0-accounts
            uid = user.uid if user.uid is not None else _next_free(used_uids)
            used_uids.add(uid)
            gid = uid if uid not in used_gids else _next_free(used_gids)
            used_gids.add(gid)
            home = f"/home/{user.name}"
            passwd.append([user.name, "x", str(uid), str(gid), user.comment, home, user.shell])
            shadow.append([user.name, "", lastchg, "0", "99999", "7", "", "", ""])
            group.append([user.name, "x", str(gid), ""])
            gshadow.append([user.name, "!", "", ""])
            _make_home(base, top / home.lstrip("/"))
            owners.add(uid, gid, home, recursive=True)
        for row in shadow:
            if row[0] == user.name:
                row[1] = user.password
        for name in user.groups:
            _add_member(group, gshadow, name, user.name, f"{where}.groups")
        if user.ssh_keys:
            ssh = top / home.lstrip("/") / ".ssh"
            ssh.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(ssh, 0o700)
            keys = ssh / "authorized_keys"
            keys.write_text("".join(f"{key}\n" for key in user.ssh_keys))
            os.chmod(keys, 0o600)
            owners.add(uid, gid, f"{home}/.ssh", recursive=True)
    shadow_gid = next((int(row[2]) for row in group if row[0] == "shadow"), 0)
    _write_table(top / "etc/passwd", passwd, 0o644)
    _write_table(top / "etc/group", group, 0o644)
    _write_table(top / "etc/shadow", shadow, 0o640)
    _write_table(top / "etc/gshadow", gshadow, 0o640)
    owners.add(0, shadow_gid, "/etc/shadow")
    owners.add(0, shadow_gid, "/etc/gshadow")


def _next_free(used: set[int]) -> int:
    candidate = FIRST_UID
    while candidate in used:
        candidate += 1
    return candidate


def _add_member(group: list[list[str]], gshadow: list[list[str]], name: str, member: str, where: str) -> None:
    for table, column in ((group, 3), (gshadow, 3)):
        row = next((r for r in table if r[0] == name), None)
        if row is None:
            if table is group:
                raise XenliveError(f"{where}: group {name!r} does not exist in dom0")  # rule dom0-accounts
            continue
        members = [m for m in row[column].split(",") if m]
        if member not in members:
            row[column] = ",".join([*members, member])


def _make_home(base: Path, home: Path) -> None:
    skel = base / "etc/skel"
    if skel.is_dir():
        shutil.copytree(skel, home, symlinks=True, dirs_exist_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o700)


def _accounts(top: Path, base: Path | None) -> dict[str, tuple[int, int]]:
    """Users to (uid, gid) and ":group" to (-1, gid), from the account files in effect in dom0."""

    def table(name: str) -> list[list[str]]:
        for tree in (top, base):
            if tree is not None and (tree / name).is_file():
                return _read_table(tree / name)
        return []

    users = {row[0]: (int(row[2]), int(row[3])) for row in table("etc/passwd") if len(row) > 3}
    groups = {row[0]: int(row[2]) for row in table("etc/group") if len(row) > 2}
    users.setdefault("root", (0, 0))
    return {**{f":{g}": (-1, gid) for g, gid in groups.items()}, **users}


# --- locale, time zone, keyboard, network ---------------------------------------------------------


def write_locale(profile: Profile, top: Path) -> None:
    dom0 = profile.dom0
    etc = top / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "default").mkdir(exist_ok=True)
    (etc / "default/locale").write_text(f"LANG={dom0.locale}\n")
    (etc / "locale.conf").write_text(f"LANG={dom0.locale}\n")
    (etc / "timezone").write_text(f"{dom0.timezone}\n")
    localtime = etc / "localtime"
    if localtime.is_symlink() or localtime.exists():
        localtime.unlink()
    localtime.symlink_to(f"/usr/share/zoneinfo/{dom0.timezone}")


def locale_dir_name(locale: str) -> str:
    """The directory glibc looks for: ja_JP.UTF-8 -> ja_JP.utf8 (codeset lowercased, without dashes)."""
    name, _, modifier = locale.partition("@")
    lang, _, codeset = name.partition(".")
    result = f"{lang}.{codeset.lower().replace('-', '')}" if codeset else lang
    return f"{result}@{modifier}" if modifier else result


def locale_charmap(locale: str, base: Path) -> str:
    """The charmap Debian pairs with a locale in /usr/share/i18n/SUPPORTED."""
    supported = base / "usr/share/i18n/SUPPORTED"
    if not supported.is_file():
        raise XenliveError(f"dom0 has no {supported.name} list; is the locales package installed?")
    for line in supported.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == locale:
            return parts[1]
    raise XenliveError(f"dom0.locale: {locale!r} is not in dom0's /usr/share/i18n/SUPPORTED")  # rule dom0-locale


def generate_locale(locale: str, base: Path, top: Path) -> None:
    """Compile the locale with dom0's own localedef into the top layer's /usr/lib/locale/NAME/.

    localedef writes a directory when its output names a path; it runs in a chroot of the base
    tree (whose glibc reads the data) and writes to a private temporary directory there, which is
    moved into the top layer and removed, leaving the cached base tree as it was.
    """
    if locale in BUILTIN_LOCALES:
        return
    charmap = locale_charmap(locale, base)
    source = locale.partition(".")[0].partition("@")[0]
    modifier = locale.partition("@")[2]
    source = f"{source}@{modifier}" if modifier else source
    target = top / "usr/lib/locale" / locale_dir_name(locale)
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="xenlive-locale-", dir=base / "tmp"))
    try:
        inside = f"/tmp/{scratch.name}/{locale_dir_name(locale)}"
        log.log(VERBOSE, "    localedef %s (%s)", locale, charmap)
        run(["chroot", os.fspath(base), "localedef", "--no-archive", "-i", source, "-f", charmap, inside])
        if target.exists():
            shutil.rmtree(target)
        shutil.move(scratch / locale_dir_name(locale), target)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def write_network(profile: Profile, top: Path) -> None:
    """systemd-networkd files: the uplink NIC(s) join the bridge, and the bridge carries dom0's address.

    With no interface named, every Ethernet NIC named en* or eth* is an uplink: on the usual one-NIC
    machine that is the first NIC, and xl's vif-bridge script adds guest vifs (vif*) to the bridge.
    Which files exist depends on the profile, so they are rendered here from
    templates/dom0-network/ (each named as the file it becomes) rather than copied with dom0's tree.
    """
    net = profile.dom0.network
    if not net.bridge and not net.dhcp:
        return
    directory = top / "etc/systemd/network"
    directory.mkdir(parents=True, exist_ok=True)
    names = ["20-xenlive-uplink.network"]
    if net.bridge:
        names = ["10-xenlive-bridge.netdev", *names, "30-xenlive-bridge.network"]
    context = {"bridge": net.bridge, "dhcp": net.dhcp, "uplink": net.interface or "en* eth*"}
    for name in names:
        (directory / name).write_text(render(f"dom0-network/{name}.j2", **context))


# --- overlays and files ---------------------------------------------------------------------------


MAX_LINK_HOPS = 40  # as the kernel's limit on symlinks followed in one lookup


def dom0_path(top: Path, base: Path | None, rel: str, *, follow_last: bool = False) -> Path:
    """Where in the top layer a write to dom0's `/rel` lands, resolved beneath dom0's root.

    Parent components that are symlinks, in the top layer or in the base tree below it, are
    followed as dom0 will follow them at run time (an absolute target means dom0's /, and `..`
    stops at dom0's /), so the result is always inside `top`: a link to /lib in dom0 never reaches
    the host's /lib, and a write to /lib/x lands in usr/lib/x where merged-/usr dom0 keeps it. The
    last component is followed only for a directory to write into (`follow_last`); a link where
    a file is written is replaced, never written through.
    """
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == "..":
            if done:
                done.pop()
            continue
        link = _link_target(top, base, "/".join([*done, part])) if parts or follow_last else None
        if link is None:
            done.append(part)
            continue
        hops += 1
        if hops > MAX_LINK_HOPS:
            raise XenliveError(f"/{rel}: too many levels of symbolic links in dom0")
        parts = [p for p in link.split("/") if p not in ("", ".")] + parts
        if link.startswith("/"):
            done = []
    return top.joinpath(*done)


def _link_target(top: Path, base: Path | None, rel: str) -> str | None:
    """The symlink target at `rel` in dom0 (the top layer hides the base tree), or None."""
    for tree in (top, base):
        if tree is None:
            continue
        path = tree / rel
        if path.is_symlink():
            return os.readlink(path)
        if path.exists():
            return None
    return None


def apply_overlay(root: Path, dest: Path, context: dict[str, Any], base: Path | None = None) -> None:
    """Copy an overlay tree over `dest`, rendering *.j2 files and keeping modes.

    Symlinks are copied as links (they point into dom0's file system, not the host's); every write
    lands beneath dom0's root (dom0_path). The overlays rule (builder/checks/profile_rules.py)
    has refused links that climb out of the overlay and directories where xenlive writes files.
    """
    root = root.resolve()
    dest.mkdir(parents=True, exist_ok=True)
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel = here.relative_to(root)
        if rel != Path("."):
            _make_dir(dom0_path(dest, base, rel.as_posix(), follow_last=True))
        for name in sorted(filenames) + [d for d in dirnames if (here / d).is_symlink()]:
            src = here / name
            target = dom0_path(dest, base, (rel / name).as_posix())
            if src.is_symlink():
                _replace(target)
                target.symlink_to(os.readlink(src))
            elif name.endswith(".j2"):
                target = target.with_suffix("")
                _replace(target)
                target.write_text(render_file(src, root, **context))
                shutil.copymode(src, target)
            else:
                _replace(target)
                shutil.copy2(src, target)


def _make_dir(path: Path) -> None:
    if path.is_symlink() or (path.exists() and not path.is_dir()):
        raise XenliveError(f"{path}: a directory is needed here, but something else is in the way")
    path.mkdir(parents=True, exist_ok=True)


def _replace(target: Path) -> None:
    """Make room for a file or link: a link or file there is replaced, never written through (it
    may point at the host); a directory there is a conflict the overlays rule should have found."""
    if target.is_symlink() or target.is_file():
        target.unlink()
    elif target.exists():
        raise XenliveError(f"{target}: a file is to be written where a directory is")
    target.parent.mkdir(parents=True, exist_ok=True)


def write_files(profile: Profile, top: Path, base: Path | None, context: dict[str, Any], owners: Owners,
                accounts: dict[str, tuple[int, int]]) -> None:  # fmt: skip
    """The profile's inline `files:` entries, after the overlays so they win."""
    for i, entry in enumerate(profile.dom0.files):
        rel = PurePosixPath(entry.path).relative_to("/").as_posix()
        target = dom0_path(top, base, rel)
        _replace(target)
        if entry.template is not None:
            path = profile.base_dir / entry.template
            text = render_file(path, path.parent, **context)
        else:
            text = entry.content or ""
        target.write_text(text)
        os.chmod(target, int(entry.mode, 8))
        user, _, group = entry.owner.partition(":")
        if (user, group) in (("root", ""), ("root", "root")):
            continue
        uid, gid = _owner_ids(user, group, accounts, profile.dom0.users, f"dom0.files[{i}].owner")
        owners.add(uid, gid, entry.path)


def _owner_ids(user: str, group: str, accounts: dict[str, tuple[int, int]], users: tuple[User, ...],
               where: str) -> tuple[int, int]:  # fmt: skip
    if user not in accounts:
        raise XenliveError(f"{where}: user {user!r} does not exist in dom0")  # rule dom0-accounts
    uid, gid = accounts[user]
    if group:
        if f":{group}" not in accounts:
            raise XenliveError(f"{where}: group {group!r} does not exist in dom0")  # rule dom0-accounts
        gid = accounts[f":{group}"][1]
    return uid, gid
