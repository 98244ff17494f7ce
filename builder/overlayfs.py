"""overlayfs as xenlive uses it for dom0's package layer: mount options, a merged view of layers, and an
upper directory turned into a layer that means the same wherever it is stacked.

An upper directory records how it differs from the layers below in two ways: a whiteout (a
character device 0/0) hides a lower file or directory, and an opaque directory (an xattr,
`trusted.overlay.opaque`, or `user.overlay.opaque` when mounted with `userxattr` in a user
namespace) hides everything the lower layers have below it. live-boot stacks the medium's squashfs
layers with an overlayfs of its own, as root: it honours whiteouts in every layer, but would not
read `user.overlay.*`, and overlayfs's other xattrs (`origin`, `impure`) mean nothing in a squashed
layer. So `standalone()` turns each opaque directory into whiteouts of what it hid and removes every
overlay xattr: the layer then says everything with whiteouts, which every overlayfs reads alike.

Paths are joined into one mount option, in which `,` and `:` separate things and `\\` escapes:
a path holding one is refused, naming it, rather than mounted as something else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import stat
from collections.abc import Iterator, Sequence
from pathlib import Path

from builder.errors import CommandError, UsageError, XenliveError
from builder.run import run
from builder.userns import in_initial_namespace

log = logging.getLogger(__name__)

OVERLAY_XATTRS = ("trusted.overlay.", "user.overlay.")
OPAQUE = ("trusted.overlay.opaque", "user.overlay.opaque")
UNSAFE = frozenset(",:\\")
# Features that would record a change in xattrs only overlayfs itself reads: off, so a renamed
# directory is copied (tools fall back to that) and a layer holds whole files. Redirects are neither
# written nor followed (`nofollow`, which `userxattr` requires; `off` would still follow them).
FIXED_OPTIONS = ("redirect_dir=nofollow", "index=off", "metacopy=off")
HINT_MOUNT = (
    "dom0.packages are installed into a layer of their own over an overlayfs mount: build as root, or "
    "without root on Linux 5.11 or later (user namespaces may mount overlayfs there), on a file system "
    "overlayfs accepts as its upper directory (ext4, xfs, btrfs, tmpfs)"
)


def checked(path: Path) -> str:
    """The path as a mount option's value; a UsageError when it holds a character the option syntax uses."""
    text = os.fspath(path)
    bad = sorted(UNSAFE & set(text))
    if bad:
        raise UsageError(
            f"{text}: overlayfs cannot name a path holding {' or '.join(map(repr, bad))}",
            hint="set XENLIVE_CACHE_DIR (or XDG_CACHE_HOME) to a directory without those characters",
        )
    return text


def userxattr() -> bool:
    """Whether a mount here needs `userxattr`: in a user namespace (a build without root, a
    container), overlayfs may not write trusted.* xattrs and must keep its own in user.*."""
    return not in_initial_namespace()


def options(lower: Sequence[Path], upper: Path | None = None, work: Path | None = None, *,
            user_xattr: bool = False) -> str:  # fmt: skip
    """The -o argument of an overlay mount: `lower` top first; without upper it is read-only."""
    if not lower:
        raise ValueError("an overlay needs at least one lower directory")
    opts = ["lowerdir=" + ":".join(checked(p) for p in lower)]
    if upper is not None:
        if work is None:
            raise ValueError("an upper directory needs a work directory")
        opts += [f"upperdir={checked(upper)}", f"workdir={checked(work)}"]
    else:
        opts.insert(0, "ro")
    opts += FIXED_OPTIONS
    if user_xattr:
        opts.append("userxattr")
    return ",".join(opts)


def mount_command(opts: str, target: Path) -> list[str]:
    return ["mount", "-t", "overlay", "-o", opts, "--", "overlay", os.fspath(target)]


@contextlib.contextmanager
def merged_view(lower: Sequence[Path], scratch: Path, what: str) -> Iterator[Path]:
    """`lower` (top first) mounted as one tree at SCRATCH/merged while the with-block runs.

    It is writable, but what is written lands in SCRATCH/upper, never in the lower trees (which are
    cache entries): customize compiles a locale in a chroot of it, as it does in the base tree.
    """
    upper, work, merged = scratch / "upper", scratch / "work", scratch / "merged"
    for directory in (upper, work, merged):
        directory.mkdir(parents=True, exist_ok=True)
    try:
        run(mount_command(options(lower, upper, work, user_xattr=userxattr()), merged))
    except CommandError as e:
        raise XenliveError(f"cannot mount {what} at {merged}: {e.stderr_tail.strip()}", hint=HINT_MOUNT) from e
    try:
        yield merged
    finally:
        if run(["umount", "--", os.fspath(merged)], check=False).returncode != 0:
            log.warning("    %s is busy; unmounting it lazily", merged)
            run(["umount", "--lazy", "--", os.fspath(merged)], check=False)


def is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def whiteout(path: Path) -> None:
    os.mknod(path, stat.S_IFCHR, os.makedev(0, 0))


def _xattrs(path: str) -> list[str]:
    try:
        return os.listxattr(path, follow_symlinks=False)
    except OSError:  # a file system or file kind without xattrs
        return []


def standalone(upper: Path, lower: Path) -> list[str]:
    """Rewrite `upper`, captured over `lower`, to say with whiteouts alone what it says (see the
    module docstring); returns the directories that were opaque, relative to `upper`."""
    opaque: list[str] = []
    for dirpath, dirnames, filenames in os.walk(upper):
        here = Path(dirpath)
        names = _xattrs(dirpath)
        if any(_opaque(dirpath, name) for name in names if name in OPAQUE):
            rel = here.relative_to(upper)
            opaque.append(rel.as_posix())
            below = lower / rel
            if below.is_dir() and not below.is_symlink():
                present = set(dirnames) | set(filenames)
                for hidden in sorted(set(os.listdir(below)) - present):
                    whiteout(here / hidden)
        for name in names:
            if name.startswith(OVERLAY_XATTRS):
                os.removexattr(dirpath, name, follow_symlinks=False)
        for entry in filenames + [d for d in dirnames if (here / d).is_symlink()]:
            full = os.path.join(dirpath, entry)
            for name in _xattrs(full):
                if name.startswith(OVERLAY_XATTRS):
                    os.removexattr(full, name, follow_symlinks=False)
    return opaque


def _opaque(path: str, name: str) -> bool:
    try:
        return os.getxattr(path, name, follow_symlinks=False) == b"y"
    except OSError:
        return False
