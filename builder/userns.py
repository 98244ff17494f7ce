"""Building without root: xenlive enters a user namespace in which it is root.

A build must own the files it makes as their owners in dom0 (mmdebstrap installs packages as
root, localedef runs in a chroot, mksquashfs records every owner), and the cache holds them. An
unprivileged user gets that inside a user namespace mapping the user to root and the user's
subordinate ids (/etc/subuid and /etc/subgid, through the setuid helpers newuidmap and newgidmap) to
ids 1 and up: the map rootless podman uses. xenlive enters one at the start of the commands that
build or touch the cache, while it still has one thread; everything after runs as that root, and
mmdebstrap uses its unshare mode there (builder/mmdebstrap.py). Outside, the files are the user's,
except those dom0 gives to other owners, which belong to subordinate ids: `xenlive cache clear`
(which enters the same namespace) removes them.

Several ranges are taken in the order the files list them, so an image can give its user the ids
around its own (`xenlive:1:999` and `xenlive:1001:64535`), which fit the 65536 ids a rootless
container engine has to give.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import pwd
import threading
from dataclasses import dataclass
from pathlib import Path

from builder.errors import MissingToolError, UsageError
from builder.run import require_tools, run

log = logging.getLogger(__name__)

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
IDS_NEEDED = 65535  # ids 0..65534 inside: Debian gives files to system users up to nobody (65534)
SUBUID = Path("/etc/subuid")
SUBGID = Path("/etc/subgid")
UID_MAP = Path("/proc/self/uid_map")
ROOT_PATH = ("/usr/local/sbin", "/usr/sbin", "/sbin")
FULL_MAP = [0, 0, 4294967295]  # the initial user namespace maps every id to itself
HINT_SUBIDS = (
    "as root, give the user subordinate ids: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 {user}"
)
HINT_CONTAINER = (
    "in a container, let it create user namespaces (docker: --security-opt seccomp=unconfined "
    "--security-opt apparmor=unconfined; see README.md, Containers), or build as root"
)


@dataclass(frozen=True)
class Extent:
    """One line of a uid_map or gid_map: `count` ids from `outside` appear as `inside` and up."""

    inside: int
    outside: int
    count: int


def in_initial_namespace(uid_map: Path = UID_MAP) -> bool:
    """Whether ids here are the machine's own (not a container's or xenlive's user namespace)."""
    try:
        return [int(f) for f in uid_map.read_text().split()] == FULL_MAP
    except (OSError, ValueError):
        return False


def subordinate_ranges(text: str, user: str, uid: int) -> list[tuple[int, int]]:
    """(first id, count) of each line of /etc/subuid or /etc/subgid that names `user` or its id."""
    ranges = []
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) != 3 or fields[0] not in (user, str(uid)):
            continue
        try:
            start, count = int(fields[1]), int(fields[2])
        except ValueError:
            continue
        if start >= 0 and count > 0:
            ranges.append((start, count))
    return ranges


def id_map(own: int, ranges: list[tuple[int, int]], what: str, user: str) -> list[Extent]:
    """`own` as 0, then the ranges from 1 up until IDS_NEEDED ids are mapped; the user's own id is
    skipped where a range holds it (newuidmap refuses to map an id twice)."""
    extents = [Extent(0, own, 1)]
    inside = 1
    for start, count in ranges:
        for first, n in _without(start, count, own):
            n = min(n, IDS_NEEDED - inside)
            if n > 0:
                extents.append(Extent(inside, first, n))
                inside += n
    if inside < IDS_NEEDED:
        raise UsageError(
            f"building as {user} needs {IDS_NEEDED - 1} subordinate {what} ids, found {inside - 1} in /etc/sub{what}",
            hint=HINT_SUBIDS.format(user=user),
        )
    return extents


def _without(start: int, count: int, own: int) -> list[tuple[int, int]]:
    if not start <= own < start + count:
        return [(start, count)]
    return [(a, n) for a, n in ((start, own - start), (own + 1, start + count - own - 1)) if n > 0]


def ensure_root() -> None:
    """Return as root over this process's files: at once when root already, else by entering a
    user namespace as described above. Call before any thread starts."""
    if os.geteuid() == 0:
        return
    if threading.active_count() != 1:
        raise RuntimeError("a user namespace can only be entered while xenlive has a single thread")
    user = pwd.getpwuid(os.getuid()).pw_name
    try:
        require_tools(["newuidmap", "newgidmap"])
    except MissingToolError as e:
        raise MissingToolError(f"building as {user} (not root): {e.message}", hint=e.hint) from e
    uid_map = id_map(os.getuid(), subordinate_ranges(_read(SUBUID), user, os.getuid()), "uid", user)
    gid_map = id_map(os.getgid(), subordinate_ranges(_read(SUBGID), user, os.getuid()), "gid", user)
    _enter(uid_map, gid_map)
    log.debug("entered a user namespace: uid map %s, gid map %s", uid_map, gid_map)
    # Root's tools (mkfs.vfat, mkfs.ext4, chroot) live in the sbin directories a user's PATH may lack.
    path = os.environ.get("PATH", "").split(os.pathsep)
    os.environ["PATH"] = os.pathsep.join([*path, *(d for d in ROOT_PATH if d not in path)]).strip(os.pathsep)


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except FileNotFoundError:
        return ""


def _enter(uid_map: list[Extent], gid_map: list[Extent]) -> None:
    """unshare(2) a user and a mount namespace; a child, still outside, writes the maps with the
    setuid helpers (a process cannot map ids for itself past its own)."""
    parent = os.getpid()
    ready_r, ready_w = os.pipe()
    report_r, report_w = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child, which reports through the pipe
        os.close(ready_w)
        os.close(report_r)
        os.read(ready_r, 1)  # EOF: the parent has unshared (or given up)
        message = b""
        for tool, extents in (("newuidmap", uid_map), ("newgidmap", gid_map)):
            numbers = [str(n) for e in extents for n in (e.inside, e.outside, e.count)]
            proc = run([tool, str(parent), *numbers], check=False)
            if proc.returncode != 0:
                message = f"{tool} failed: {proc.stderr.strip() or f'status {proc.returncode}'}".encode()
                break
        os.write(report_w, message)
        os._exit(0)
    os.close(ready_r)
    os.close(report_w)
    try:
        _unshare(CLONE_NEWUSER | CLONE_NEWNS)
    except OSError as e:
        os.close(ready_w)
        os.waitpid(child, 0)
        os.close(report_r)
        raise UsageError(f"cannot create a user namespace to build without root: {e.strerror}",
                           hint=HINT_CONTAINER) from e  # fmt: skip
    os.close(ready_w)
    os.waitpid(child, 0)
    with os.fdopen(report_r, "rb") as report:
        failure = report.read().decode(errors="replace")
    if failure:
        raise UsageError(f"cannot map ids into the user namespace: {failure}", hint=HINT_SUBIDS.format(
            user=pwd.getpwuid(uid_map[0].outside).pw_name))  # fmt: skip
    if os.geteuid() != 0:
        raise UsageError("the user namespace did not make xenlive root", hint=HINT_CONTAINER)


def _unshare(flags: int) -> None:
    unshare = getattr(os, "unshare", None)  # Python 3.12 and later
    if unshare is not None:
        unshare(flags)
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code) if code else errno.errorcode.get(code, "unknown error"))
