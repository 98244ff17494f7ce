"""builder/boottest.py: the matrix, its reports and JUnit, with QEMU (boot_and_wait) faked at the edge."""

from __future__ import annotations

import json
import threading
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from builder import boottest
from builder.boottest import MATRIX, run_boots, summary_table, write_junit
from builder.profile.model import Firmware
from builder.qemu import BootOptions, BootResult, MediaKind


def fake_boot(fail: set[tuple[str, str]], seen: list[tuple[str, str, bool]]):  # type: ignore[no-untyped-def]
    def boot_and_wait(
        iso: Path, opts: BootOptions, timeout: float, report_dir: Path, session: object = None
    ) -> BootResult:
        report_dir.mkdir(parents=True, exist_ok=True)
        key = (str(opts.firmware), str(opts.media))
        seen.append((*key, opts.stop is not None))
        if key in fail:
            return BootResult(False, "xen", "Panic on CPU 0", "tcg", 12.5, {"xen": 11.0}, None, ["(XEN) panic"])
        return BootResult(True, "ready", "", "tcg", 70.0, {"xen": 11.0, "ready": 70.0}, {"guests": {}})

    return boot_and_wait


def test_matrix_is_every_firmware_with_every_medium() -> None:
    assert set(MATRIX) == {(f, m) for f in (Firmware.BIOS, Firmware.UEFI) for m in (MediaKind.CDROM, MediaKind.USB)}
    assert len(MATRIX) == len(set(MATRIX))


@pytest.mark.parametrize("jobs", [1, 2])
def test_each_boot_has_its_own_report_dir_and_result(tmp_path: Path, monkeypatch, jobs: int) -> None:  # type: ignore[no-untyped-def]
    seen: list[tuple[str, str, bool]] = []
    monkeypatch.setattr(boottest, "boot_and_wait", fake_boot({("uefi", "usb")}, seen))
    runs = run_boots(tmp_path / "x.iso", MATRIX, BootOptions(), 60, tmp_path / "r", jobs)
    assert [(r.firmware, r.media) for r in runs] == MATRIX  # in matrix order, whatever finished first
    assert {(f, m) for f, m, _ in seen} == {(str(f), str(m)) for f, m in MATRIX}
    assert all(stop == (jobs > 1) for _, _, stop in seen)  # parallel boots share a stop event
    bad = json.loads((tmp_path / "r/uefi-usb/result.json").read_text())
    assert bad["passed"] is False and bad["expected_next"] and bad["reason"] == "Panic on CPU 0"
    good = json.loads((tmp_path / "r/bios-cdrom/result.json").read_text())
    assert good["passed"] is True and good["expected_next"] is None


def test_an_interrupted_matrix_stops_the_other_boots(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    stops: list[threading.Event] = []

    def boot_and_wait(
        iso: Path, opts: BootOptions, timeout: float, report_dir: Path, session: object = None
    ) -> BootResult:
        assert opts.stop is not None
        stops.append(opts.stop)
        report_dir.mkdir(parents=True, exist_ok=True)
        if opts.firmware == Firmware.UEFI:
            raise KeyboardInterrupt
        opts.stop.wait(5)
        return BootResult(False, "firmware", "stopped", "tcg", 0.1)

    monkeypatch.setattr(boottest, "boot_and_wait", boot_and_wait)
    with pytest.raises(KeyboardInterrupt):
        run_boots(tmp_path / "x.iso", MATRIX, BootOptions(), 60, tmp_path / "r", 4)
    assert stops and all(s.is_set() for s in stops)


def test_summary_and_junit_name_the_failure(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(boottest, "boot_and_wait", fake_boot({("bios", "usb")}, []))
    runs = run_boots(tmp_path / "x.iso", MATRIX, BootOptions(), 60, tmp_path / "r", 1)
    table = summary_table(runs).splitlines()
    assert table[0].split()[:3] == ["firmware/media", "verdict", "time"]
    assert any(line.startswith("bios/usb") and "FAIL" in line and "Panic on CPU 0" in line for line in table)
    write_junit(runs, tmp_path / "j/junit.xml", tmp_path / "x.iso")
    suite = ET.parse(tmp_path / "j/junit.xml").getroot()
    assert (suite.get("tests"), suite.get("failures")) == (str(len(MATRIX)), "1")
    (failed,) = [c for c in suite.iter("testcase") if c.find("failure") is not None]
    assert failed.get("name") == "bios-usb"
    failure = failed.find("failure")
    assert failure is not None and failure.get("message") == "xen: Panic on CPU 0"
    assert "(XEN) panic" in (failure.text or "")


FLAKE = "failure on the console: [    5.616711] Kernel panic - not syncing: Fatal exception in interrupt"


def scripted_boot(results: list[BootResult], calls: list[Path]):  # type: ignore[no-untyped-def]
    """A boot_and_wait that gives these results in turn, writing a console log each time."""

    def boot_and_wait(
        iso: Path, opts: BootOptions, timeout: float, report_dir: Path, session: object = None
    ) -> BootResult:
        report_dir.mkdir(parents=True, exist_ok=True)
        (report_dir / "console.log").write_text(f"boot {len(calls) + 1}\n")
        calls.append(report_dir)
        return results[len(calls) - 1]

    return boot_and_wait


def test_a_dom0_kernel_panic_under_tcg_is_booted_again_and_said(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[Path] = []
    flake = BootResult(False, "dom0 userspace", FLAKE, "tcg", 40.0)
    good = BootResult(True, "ready", "every guest is running", "tcg", 80.0, {"ready": 80.0}, {"guests": {}})
    monkeypatch.setattr(boottest, "boot_and_wait", scripted_boot([flake, good], calls))
    (run,) = run_boots(tmp_path / "x.iso", [(Firmware.BIOS, MediaKind.CDROM)], BootOptions(), 60, tmp_path / "r", 1)
    assert len(calls) == 2 and run.result.passed and run.result.retried == FLAKE
    report = tmp_path / "r/bios-cdrom"
    assert (report / "console.first.log").read_text() == "boot 1\n" and (
        report / "console.log"
    ).read_text() == "boot 2\n"
    assert json.loads((report / "result.json").read_text())["retried"] == FLAKE
    assert "second boot: the first had failure on the console" in summary_table([run])


@pytest.mark.parametrize(
    "first",
    [
        BootResult(False, "dom0 kernel", FLAKE, "kvm", 20.0),  # not the emulator: a real failure
        BootResult(False, "xen", FLAKE, "tcg", 4.0),  # not in dom0's Linux
        BootResult(False, "dom0 kernel", "failure on the console: Kernel panic - not syncing: VFS", "tcg", 9.0),
        BootResult(False, "xen", "Panic on CPU 0", "tcg", 12.5),
    ],
)
def test_other_failures_are_not_booted_again(tmp_path: Path, monkeypatch, first: BootResult) -> None:  # type: ignore[no-untyped-def]
    calls: list[Path] = []
    monkeypatch.setattr(boottest, "boot_and_wait", scripted_boot([first], calls))
    (run,) = run_boots(tmp_path / "x.iso", [(Firmware.BIOS, MediaKind.CDROM)], BootOptions(), 60, tmp_path / "r", 1)
    assert len(calls) == 1 and not run.result.passed and run.result.retried is None


def test_a_panic_that_comes_back_fails(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    calls: list[Path] = []
    flake = BootResult(False, "dom0 kernel", FLAKE, "tcg", 20.0)
    monkeypatch.setattr(boottest, "boot_and_wait", scripted_boot([flake, flake, flake], calls))
    (run,) = run_boots(tmp_path / "x.iso", [(Firmware.BIOS, MediaKind.CDROM)], BootOptions(), 60, tmp_path / "r", 1)
    assert len(calls) == 2 and not run.result.passed and run.result.retried == FLAKE
