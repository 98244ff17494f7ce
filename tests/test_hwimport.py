"""Machine reports into the hardware database: `xenlive check --target FILE`, `xenlive hardware import`
and `hardware list`, through the real CLI, with the user's hardware directory in a temporary home."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ProfileError, UsageError
from builder.hardware import load_targets
from builder.hwimport import import_reports

from .conftest import REPO

QEMU_BIOS = (REPO / "builder/data/hardware/qemu-bios.yaml").read_text()
USB = '  - {id: "1b36:000d", class_code: "0c0330", name: QEMU xHCI (USB boot)}\n'


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.delenv("XENLIVE_HARDWARE_PATH", raising=False)
    return tmp_path / "config/xenlive/hardware"


def xenlive(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, env=os.environ)


def report(path: Path, text: str = QEMU_BIOS) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_check_reads_a_report_file_and_names_it_after_the_file(tmp_path, home):
    bios = report(tmp_path / "way/bios-cdrom/machine.yaml", QEMU_BIOS.replace(USB, ""))
    usb = report(tmp_path / "way/bios-usb/machine.yaml")
    proc = xenlive("check", "default", "--target", str(bios), "--target", str(usb), "--target", "qemu-bios", "--json")
    assert proc.returncode == 0, proc.stderr
    targets = json.loads(proc.stdout)["targets"]
    assert list(targets) == ["machine", "machine-2", "qemu-bios"]  # two files called machine.yaml stay two
    verdicts = {name: [(c["id"], c["status"]) for c in t["checks"]] for name, t in targets.items()}
    assert verdicts["machine-2"] == verdicts["qemu-bios"]


def test_check_of_a_missing_or_broken_file_says_which(tmp_path, home):
    proc = xenlive("check", "default", "--target", str(tmp_path / "gone.yaml"))
    assert proc.returncode == 2 and f"--target {tmp_path / 'gone.yaml'}: no such file" in proc.stderr
    bad = report(tmp_path / "bad.yaml", QEMU_BIOS.replace("threads: 2", "threads: lots"))
    proc = xenlive("check", "default", "--target", str(bad))
    assert proc.returncode == 2 and f"{bad}:" in proc.stderr and "cpu.threads: expected an integer" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_import_names_the_machine_from_its_dmi_and_then_every_command_knows_it(tmp_path, home):
    source = report(tmp_path / "stick/xenlive-reports/whatever.yaml")
    proc = xenlive("hardware", "import", str(source))
    assert proc.returncode == 0, proc.stderr
    kept = home / "qemu-standard-pc-i440fx-piix-1996.yaml"
    assert proc.stdout.split()[:2] == ["added", "qemu-standard-pc-i440fx-piix-1996"]
    assert kept.read_text() == QEMU_BIOS  # as written, comments and all
    assert xenlive("hardware", "import", str(source)).stdout.startswith("unchanged")
    listed = json.loads(xenlive("hardware", "list", "--json").stdout)
    assert {"name": "qemu-standard-pc-i440fx-piix-1996", "description": load_targets(["qemu-bios"])[0].description,
            "file": str(kept)} in listed  # fmt: skip
    proc = xenlive("check", "default", "--target", "qemu-standard-pc-i440fx-piix-1996")
    assert proc.returncode == 0 and "qemu-standard-pc-i440fx-piix-1996" in proc.stdout


def test_a_matrix_report_directory_gives_each_machine_once_with_the_most_it_saw(tmp_path, home):
    runs = tmp_path / "xenlive-test"
    report(runs / "bios-cdrom/machine.yaml", QEMU_BIOS.replace(USB, ""))
    report(runs / "bios-usb/machine.yaml")
    report(runs / "uefi-cdrom/machine.yaml", (REPO / "builder/data/hardware/qemu-uefi.yaml").read_text())
    (runs / "bios-usb/result.json").write_text("{}")
    done = import_reports(runs)
    assert [(d.name, d.state, d.source.parent.name) for d in done] == [
        ("qemu-standard-pc-i440fx-piix-1996", "added", "bios-usb"),
        ("qemu-standard-pc-q35-ich9-2009", "added", "uefi-cdrom"),
    ]


def test_reports_of_one_name_that_disagree_are_refused_and_nothing_is_written(tmp_path, home):
    runs = tmp_path / "runs"
    report(runs / "a/machine.yaml")
    report(runs / "b/machine.yaml", QEMU_BIOS.replace("memory: 2048M", "memory: 4096M"))
    with pytest.raises(UsageError, match="both 'qemu-standard-pc-i440fx-piix-1996' but describe different machines"):
        import_reports(runs)
    assert not home.exists()
    done = import_reports(runs / "b/machine.yaml", "big-qemu")
    assert [d.name for d in done] == ["big-qemu"]


def test_one_bad_report_stops_the_whole_import(tmp_path, home):
    runs = tmp_path / "runs"
    report(runs / "good.yaml")
    report(runs / "evil.yaml", QEMU_BIOS.replace("description: QEMU", 'description: "\\e[2J QEMU'))
    with pytest.raises(ProfileError) as e:
        import_reports(runs)
    assert len(e.value.problems) == 1 and f"{runs / 'evil.yaml'}:" in e.value.problems[0]
    assert not home.exists()


def test_import_never_overwrites_another_machine_unless_forced(tmp_path, home):
    report(home / "qemu-standard-pc-i440fx-piix-1996.yaml", QEMU_BIOS.replace("threads: 2", "threads: 4"))
    source = report(tmp_path / "r.yaml")
    proc = xenlive("hardware", "import", str(source))
    assert proc.returncode == 2 and "already there with other contents" in proc.stderr
    assert "threads: 4" in (home / "qemu-standard-pc-i440fx-piix-1996.yaml").read_text()
    assert import_reports(source, force=True)[0].state == "replaced"
    assert (home / "qemu-standard-pc-i440fx-piix-1996.yaml").read_text() == QEMU_BIOS


@pytest.mark.parametrize("name", ["../escape", "Upper", "-x", ""])
def test_a_name_given_is_a_target_name_never_a_path(tmp_path, home, name):
    with pytest.raises(UsageError, match="not a valid target name"):
        import_reports(report(tmp_path / "r.yaml"), name)
    assert not home.exists()


def test_a_directory_without_reports_or_a_symlinked_one_is_not_read(tmp_path, home):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no .yaml files in it"):
        import_reports(tmp_path / "empty")
    outside = report(tmp_path / "outside/x.yaml")
    (tmp_path / "links").mkdir()
    (tmp_path / "links/x.yaml").symlink_to(outside)
    with pytest.raises(UsageError, match="no .yaml files in it"):
        import_reports(tmp_path / "links")
