"""The exceptions xenlive raises; each class carries the exit code the CLI uses for it.

Exit codes (docs/architecture.md, "Errors and exit codes"): 0 success, 1 the work failed, 2 bad usage or bad profile,
3 a hardware-compatibility check failed.
"""

from __future__ import annotations


class XenliveError(Exception):
    """Base class: an expected failure with a message for the user and an optional hint."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class ProfileError(XenliveError):
    """The profile (or a file it names) is wrong; `problems` lists every problem found."""

    exit_code = 2

    def __init__(self, problems: list[str], *, hint: str | None = None) -> None:
        super().__init__("\n".join(problems), hint=hint)
        self.problems = problems


class UsageError(XenliveError):
    """The command line asks for something impossible (a missing ISO, a bad option mix)."""

    exit_code = 2


class MissingToolError(XenliveError):
    """A host program or file that a stage needs is not installed."""

    exit_code = 2


class CheckFailed(XenliveError):
    """A hardware-compatibility check at error level failed."""

    exit_code = 3


class CommandError(XenliveError):
    """An external command exited non-zero; the message carries the tail of its stderr."""

    def __init__(self, cmd: list[str], returncode: int, stderr_tail: str) -> None:
        import shlex

        what = f"exited with status {returncode}" if returncode >= 0 else f"was killed by signal {-returncode}"
        tail = stderr_tail.strip() or "(no output on stderr)"
        super().__init__(f"command {what}: {shlex.join(cmd)}\n{tail}")
        self.cmd = cmd
        self.returncode = returncode
        self.stderr_tail = stderr_tail


class TemplateError(XenliveError):
    """A jinja2 template failed to render; the message names the template and line."""


class IsoError(XenliveError):
    """Mastering or reading an ISO failed."""


class VerifyFailed(XenliveError):
    """`xenlive verify` found the ISO different from what its manifest describes."""


class MediaError(XenliveError):
    """Writing an image to a medium was refused or failed; the medium must not be trusted."""


class BootTestFailed(XenliveError):
    """An image booted in QEMU did not reach XENLIVE-READY with every guest running."""
