"""`xenlive hardware import` and `hardware list`: the user's hardware database grows from machine reports.

A report (builder/machinereport.py) is a hardware file that dom0 wrote about the machine it booted
on. Importing one validates it as a hardware file, names it (from its DMI maker and model, or
--name) and writes it into the user's hardware directory ($XDG_CONFIG_HOME/xenlive/hardware), where
every command finds it by name. Reports come from sticks that have been in other people's machines:
each is read like any hardware file (size-capped, regular files only, every value checked), the
name is made from its text, never taken as a path, and nothing is written unless every report given
is valid.

A directory holds several reports: a stick's xenlive-reports/, or the report directory of a
`xenlive test` matrix, where each way booted saw the same machine (machine.yaml in each). Reports
of the same name that agree are one machine: the one that saw the most PCI devices is kept (QEMU
adds a USB controller only for a USB boot). Reports of the same name that disagree on anything else
are refused, since a file must describe one machine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from builder.errors import ProfileError, UsageError
from builder.hardware import Target, hardware_dirs, load_target_file, name_for, target_files
from builder.profile.model import TARGET_NAME

MAX_REPORTS = 256
MAX_DEPTH = 3  # levels below the directory given: a test report is DIR/WAY/machine.yaml


@dataclass(frozen=True)
class Report:
    path: Path
    text: str
    target: Target


@dataclass(frozen=True)
class Imported:
    name: str
    path: Path
    source: Path
    state: str  # added, replaced, unchanged


def user_dir() -> Path:
    """Where imports go: the user's own hardware directory (the second of hardware_dirs())."""
    return hardware_dirs()[1]


def report_files(source: Path) -> list[Path]:
    """The hardware files a FILE or DIRECTORY argument gives, in a stable order."""
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise UsageError(f"{source}: no such file or directory", hint="give a machine report or a directory of them")
    found: list[Path] = []
    for top, dirs, files in os.walk(source):
        depth = len(Path(top).relative_to(source).parts)
        dirs[:] = sorted(d for d in dirs if depth < MAX_DEPTH and not (Path(top) / d).is_symlink())
        found += [Path(top) / f for f in sorted(files) if f.endswith(".yaml") and not (Path(top) / f).is_symlink()]
        if len(found) > MAX_REPORTS:
            raise UsageError(f"{source}: more than {MAX_REPORTS} .yaml files; import a smaller directory")
    if not found:
        raise UsageError(f"{source}: no .yaml files in it (machine reports are NAME.yaml or machine.yaml)")
    return found


def read_reports(paths: list[Path]) -> list[Report]:
    """Every file read and validated; all problems of all files at once."""
    reports: list[Report] = []
    problems: list[str] = []
    for path in paths:
        try:
            target = load_target_file(path, "report")
        except ProfileError as e:
            problems += e.problems
            continue
        reports.append(Report(path, path.read_text(), target))
    if problems:
        raise ProfileError(problems, hint="nothing was imported; see builder/data/hardware/*.yaml for the format")
    return reports


def report_name(report: Report) -> str:
    dmi = report.target.dmi
    if dmi is not None and (dmi.vendor or dmi.product):
        return name_for(f"{dmi.vendor} {dmi.product}")
    return name_for(report.path.stem)


def _same_machine(a: Target, b: Target) -> bool:
    """Equal in everything but the PCI devices, and one's devices include the other's."""
    pa, pb = {(d.id, d.class_code) for d in a.pci}, {(d.id, d.class_code) for d in b.pci}
    return replace(a, pci=(), source=None) == replace(b, pci=(), source=None) and (pa <= pb or pb <= pa)


def choose(reports: list[Report], name: str | None) -> dict[str, Report]:
    """One report per name: same-named reports of one machine give the one that saw the most."""
    if name is not None and not TARGET_NAME.fullmatch(name):
        raise UsageError(f"--name {name!r}: not a valid target name (a-z, 0-9, '.', '_', '-'; up to 63 characters)")
    chosen: dict[str, Report] = {}
    for report in reports:
        key = name or report_name(report)
        kept = chosen.get(key)
        if kept is None:
            chosen[key] = report
        elif _same_machine(kept.target, report.target):
            if len(report.target.pci) > len(kept.target.pci):
                chosen[key] = report
        else:
            raise UsageError(
                f"{kept.path} and {report.path} are both {key!r} but describe different machines (or the same"
                " one booted differently)",
                hint="import them one at a time with --name",
            )
    return chosen


def import_reports(source: Path, name: str | None = None, *, force: bool = False,
                   directory: Path | None = None) -> list[Imported]:  # fmt: skip
    """Validate every report in SOURCE, then write each into the user's hardware directory."""
    chosen = choose(read_reports(report_files(source)), name)
    directory = directory or user_dir()
    existing = target_files([directory])
    done: list[Imported] = []
    refused = [n for n, r in chosen.items() if n in existing and existing[n].read_text() != r.text and not force]
    if refused:
        raise UsageError(
            f"{directory}: {', '.join(refused)} already there with other contents",
            hint="add --force to replace them, or --name to import under another name",
        )
    directory.mkdir(parents=True, exist_ok=True)
    for key, report in chosen.items():
        path = directory / f"{key}.yaml"
        if key in existing and existing[key].read_text() == report.text:
            done.append(Imported(key, path, report.path, "unchanged"))
            continue
        fd, tmp = tempfile.mkstemp(prefix=f".{key}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w") as f:
            f.write(report.text)
        os.replace(tmp, path)
        done.append(Imported(key, path, report.path, "replaced" if key in existing else "added"))
    return done
