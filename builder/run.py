"""The one place that starts external programs, and the table of host tools.

Every subprocess goes through run(), which logs the exact command at debug level and turns a
failure into CommandError with the tail of stderr. Host tools and the Debian packages that
provide them are read from data/host-tools.txt, the same list setup, CI and the Dockerfile use.
"""

from __future__ import annotations

import logging
import os
import selectors
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import IO

from builder.errors import CommandError, MissingToolError

log = logging.getLogger(__name__)

StrPath = str | os.PathLike[str]


@dataclass(frozen=True)
class HostTool:
    package: str
    kind: str  # "cmd" or "file"
    name: str


def host_tools() -> list[HostTool]:
    """Parse data/host-tools.txt: `package kind name` per line, `#` comments."""
    text = resources.files("builder").joinpath("data/host-tools.txt").read_text()
    tools = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].strip().split(None, 2)
        if len(fields) == 3 and fields[1] in ("cmd", "file"):
            tools.append(HostTool(*fields))
    return tools


def host_packages() -> list[str]:
    """Every Debian package the list names (including setup-only ones), in file order."""
    text = resources.files("builder").joinpath("data/host-tools.txt").read_text()
    packages: list[str] = []
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if fields and fields[0] not in packages:
            packages.append(fields[0])
    return packages


def _tool(name: str) -> HostTool:
    for tool in host_tools():
        if tool.name == name:
            return tool
    raise KeyError(f"{name} is not listed in data/host-tools.txt")


def find_tool(name: str) -> Path | None:
    """The path of a host program or file from the table, or None when it is missing."""
    tool = _tool(name)
    if tool.kind == "file":
        return Path(name) if Path(name).exists() else None
    found = shutil.which(name)
    return Path(found) if found else None


def missing_tools(names: Iterable[str]) -> list[HostTool]:
    return [_tool(n) for n in names if find_tool(n) is None]


def require_tools(names: Iterable[str]) -> None:
    """Raise MissingToolError naming every missing tool and the packages to install."""
    missing = missing_tools(names)
    if missing:
        what = ", ".join(t.name for t in missing)
        packages = " ".join(sorted({t.package for t in missing}))
        raise MissingToolError(
            f"missing host tools: {what}",
            hint=f"install them with: apt-get install {packages}",
        )


def run(
    cmd: Sequence[StrPath],
    *,
    cwd: StrPath | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    check: bool = True,
    stdin: int | None = subprocess.DEVNULL,
    output: Callable[[str], None] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; stderr is kept for the error message, stdout returned when `capture`.

    With `output`, each line the command writes (on stdout or stderr, split at newlines and at the
    carriage returns progress bars redraw with) is passed to it while the command runs, so a
    caller can follow a long tool's progress; stdout is then not returned.
    """
    args = [os.fspath(c) for c in cmd]
    log.debug("+ %s", shlex.join(args))
    full_env = {**os.environ, **env} if env is not None else None
    try:
        if output is not None:
            proc = _stream(args, cwd, full_env, stdin, output)
        else:
            proc = subprocess.run(
                args,
                cwd=cwd,
                env=full_env,
                stdin=stdin,
                stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
                errors="replace",
            )
    except FileNotFoundError as e:
        raise CommandError(args, 127, f"{args[0]}: not found") from e
    if proc.stderr:
        log.debug("%s", proc.stderr.rstrip())
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-20:])
        raise CommandError(args, proc.returncode, tail)
    return proc


def read_output(cmd: Sequence[StrPath], *, limit: int) -> bytes:
    """Run a command and return its stdout as bytes, refusing more than `limit` bytes of it.

    For decompressors fed files we did not make (a guest's kernel, a module): a small input can
    expand without bound, so the output is read in chunks and the program is killed at the limit
    rather than after it has filled memory. A non-zero exit raises CommandError as run() does.
    """
    args = [os.fspath(c) for c in cmd]
    log.debug("+ %s", shlex.join(args))
    chunks: list[bytes] = []
    size = 0
    # stderr goes to a file, not a pipe: a pipe nobody reads while stdout is read could fill and hang.
    with tempfile.TemporaryFile() as errfile:
        try:
            proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errfile)
        except FileNotFoundError as e:
            raise CommandError(args, 127, f"{args[0]}: not found") from e
        with proc:
            assert proc.stdout is not None
            while chunk := proc.stdout.read(1 << 20):
                size += len(chunk)
                if size > limit:
                    proc.kill()
                    proc.wait()
                    raise CommandError(args, -9, f"more than {limit} bytes of output; stopped")
                chunks.append(chunk)
            returncode = proc.wait()
        errfile.seek(0)
        stderr = errfile.read().decode(errors="replace")
    if stderr:
        log.debug("%s", stderr.rstrip())
    if returncode != 0:
        raise CommandError(args, returncode, "\n".join(stderr.splitlines()[-20:]))
    return b"".join(chunks)


def _stream(args: list[str], cwd: StrPath | None, env: Mapping[str, str] | None, stdin: int | None,
            output: Callable[[str], None]) -> subprocess.CompletedProcess[str]:  # fmt: skip
    """Popen with both pipes read as they fill; stderr is also collected for the error message."""
    stderr: list[str] = []
    with subprocess.Popen(args, cwd=cwd, env=env, stdin=stdin, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE) as proc, selectors.DefaultSelector() as sel:  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        pending = {proc.stdout.fileno(): b"", proc.stderr.fileno(): b""}
        for pipe in (proc.stdout, proc.stderr):
            sel.register(pipe.fileno(), selectors.EVENT_READ)
        while pending:
            for key, _ in sel.select():
                fd = int(key.fd)
                chunk = os.read(fd, 65536)
                parts = (pending[fd] + chunk).replace(b"\r", b"\n").split(b"\n")
                if chunk:
                    pending[fd] = parts.pop()
                else:
                    sel.unregister(fd)
                    del pending[fd]
                for part in parts:
                    line = part.decode("utf-8", errors="replace")
                    if fd == proc.stderr.fileno():
                        stderr.append(line)
                    if line.strip():
                        output(line)
        proc.wait()
    return subprocess.CompletedProcess(args, proc.returncode, "", "\n".join(s for s in stderr if s.strip()))


def stream(cmd: Sequence[StrPath], *, stdin: IO[bytes], chunk: int = 1 << 20) -> Iterator[bytes]:
    """Run a filter on stdin (an open file, read from its position) and yield its output in chunks.

    For output too big to hold at once, or not worth holding: the caller may stop early, and the
    program is then killed. A non-zero exit after the output ends raises CommandError.
    """
    args = [os.fspath(c) for c in cmd]
    log.debug("+ %s < %s", shlex.join(args), getattr(stdin, "name", "(stream)"))
    try:
        proc = subprocess.Popen(args, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as e:
        raise CommandError(args, 127, f"{args[0]}: not found") from e
    assert proc.stdout is not None and proc.stderr is not None
    finished = False
    try:
        while data := proc.stdout.read(chunk):
            yield data
        finished = True
    finally:
        if not finished:
            proc.kill()
        proc.stdout.close()
        stderr = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        proc.wait()
    if proc.returncode != 0:
        raise CommandError(args, proc.returncode, "\n".join(stderr.splitlines()[-20:]))
