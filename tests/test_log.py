"""What a user sees while xenlive works: steps, progress, -q/-v, NO_COLOR and TERM=dumb."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import select
import subprocess
import sys
import time

import pytest

from builder import log as xlog
from builder import terminal
from builder.log import LineHandler, LiveHandler, Meter, Progress, describe, progress, setup_logging, step
from builder.mmdebstrap import AptProgress
from builder.stages.rootfs import squashfs_progress

from .conftest import REPO

TOOLS = REPO / "tests/data/tools"
ESCAPES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # any control character but tab and newline


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def restore_logging():
    yield
    setup_logging()


def test_terminal_abilities_follow_tty_term_and_no_color():
    tty = Tty()
    xterm = terminal.detect(tty, {"TERM": "xterm"})
    assert xterm.live and xterm.color
    assert terminal.detect(tty, {"TERM": "xterm", "NO_COLOR": "1"}).color is False
    assert terminal.detect(tty, {"TERM": "xterm", "NO_COLOR": "1"}).live is True
    assert terminal.detect(tty, {"TERM": "xterm", "NO_COLOR": ""}).color is True  # empty means unset (no-color.org)
    dumb = terminal.detect(tty, {"TERM": "dumb"})
    assert not dumb.live and not dumb.color
    pipe = terminal.detect(io.StringIO(), {"TERM": "xterm"})
    assert not pipe.live and not pipe.color
    assert terminal.Terminal(False, False, 80).style("x", "red") == "x"
    assert terminal.Terminal(True, True, 80).style("x", "red") == "\x1b[31mx\x1b[0m"


def test_plain_strips_control_sequences():
    assert terminal.plain("\x1b[31mred\x1b[0m a\rb\x1b[K c\td") == "red ab c\td"


def _lines_handler(verbose: bool = False) -> tuple[io.StringIO, logging.Logger]:
    out = io.StringIO()
    logger = logging.getLogger("builder")
    logger.handlers[:] = [LineHandler(out, terminal.detect(out, {}), verbose=verbose)]
    logger.setLevel(xlog.VERBOSE if verbose else logging.INFO)
    return out, logger


def test_without_a_terminal_each_step_is_one_plain_line():
    out, logger = _lines_handler()
    timings: dict[str, float] = {}
    with step("dom0 base system", timings):
        progress("dom0: essential packages", 3, 69, "packages fetched")
        logging.getLogger("builder.stages.rootfs").log(xlog.VERBOSE, "    a detail")
        with step("guest 1/2: tiny (busybox)"):
            Meter("writing the ISO", 10, "bytes")(10)
    with step("master ISO", timings):
        pass
    assert out.getvalue() == "==> dom0 base system\n  ==> guest 1/2: tiny (busybox)\n==> master ISO\n"
    assert set(timings) == {"dom0 base system", "master ISO"}


def test_verbose_lines_add_details_and_step_times():
    out, logger = _lines_handler(verbose=True)
    with step("customize dom0"):
        logging.getLogger("builder.stages.customize").log(xlog.VERBOSE, "    overlay welcome")
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["==> customize dom0", "    overlay welcome"]
    assert re.fullmatch(r" {4}customize dom0: \d+\.\d s", lines[2])


def test_a_message_with_control_characters_is_cleaned_for_a_log():
    out, logger = _lines_handler()
    logger.warning("tool said: \x1b[1mbold\x1b[0m\rover")
    assert out.getvalue() == "tool said: boldover\n"


def test_quiet_shows_warnings_only(capsys):
    setup_logging(verbosity=-1)
    with step("squashfs layers"):
        progress("top layer", 50, 100)
        logging.getLogger("builder.x").info("info")
        logging.getLogger("builder.x").warning("careful")
    assert capsys.readouterr().err == "careful\n"


def test_on_a_terminal_the_status_line_is_redrawn_then_replaced_by_the_step_time():
    out = Tty()
    term = terminal.Terminal(live=True, color=False, width=120)
    handler = LiveHandler(out, term, verbose=False)
    logger = logging.getLogger("builder")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    try:
        with step("dom0 base system"):
            progress("dom0: remaining packages", 12, 93, "packages unpacked")
            logging.getLogger("builder.x").warning("a warning while it runs")
            progress("dom0: remaining packages", 40, 93, "packages unpacked")
    finally:
        handler.close()
    text = out.getvalue()
    assert (
        "\r| dom0 base system  0 s  dom0: remaining packages [##..................]  13% 12/93 packages unpacked"
        in (text)
    )
    assert "\r\x1b[Ka warning while it runs\n" in text  # the status line is erased, the message printed, then redrawn
    assert "40/93 packages unpacked" in text
    assert re.search(r"\r\x1b\[K==> dom0 base system  \d+\.\d s\n", text)


def test_a_failed_step_says_so_on_the_terminal():
    out = Tty()
    handler = LiveHandler(out, terminal.Terminal(live=True, color=False, width=80), verbose=False)
    logger = logging.getLogger("builder")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    with pytest.raises(RuntimeError), step("master ISO"):
        raise RuntimeError("boom")
    handler.close()
    assert re.search(r"==> master ISO failed after \d+\.\d s\n", out.getvalue())


def test_byte_progress_shows_rate_and_eta():
    text = describe(Progress("writing /dev/sdb", 100 * 2**20, 400 * 2**20, "bytes"), 50 * 2**20)
    assert text == "writing /dev/sdb [#####...............]  25% 100.0 MiB of 400.0 MiB, 50.0 MiB/s, ETA 6 s"
    assert describe(Progress("dom0: creating tarball", 0), None) == "dom0: creating tarball"
    assert describe(Progress("base layer", 72, 100), None) == "base layer [##############......]  72%"


def test_live_rate_is_measured_from_the_first_report_of_a_piece_of_work(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(xlog.time, "monotonic", lambda: clock[0])
    handler = LiveHandler(Tty(), terminal.Terminal(live=True, color=False, width=200), verbose=False)
    handler.steps = [("burn", 1000.0)]
    handler.emit(_progress_record(Progress("writing x", 0, 1000, "bytes")))
    clock[0] += 2
    handler.emit(_progress_record(Progress("writing x", 500, 1000, "bytes")))
    assert handler.rate(clock[0]) == 250
    assert handler.status_text(clock[0]).endswith("500 B of 1000 B, 250 B/s, ETA 2 s")


def _progress_record(p: Progress) -> logging.LogRecord:
    record = logging.LogRecord("builder", logging.INFO, __file__, 0, p.what, None, None)
    setattr(record, xlog.PROGRESS, p)
    return record


def _collect(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    seen: list[str] = []
    monkeypatch.setattr(Meter, "INTERVAL", 0.0)

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            p = getattr(record, xlog.PROGRESS, None)
            if p is not None:
                seen.append(describe(p, None))

    logger = logging.getLogger("builder")
    logger.handlers[:] = [Collect()]
    logger.setLevel(logging.INFO)
    return seen


def test_mmdebstrap_progress_counts_packages_out_of_each_rounds_total(monkeypatch):
    seen = _collect(monkeypatch)
    feed = AptProgress("dom0")
    for line in (TOOLS / "mmdebstrap-verbose.txt").read_text().splitlines():
        feed(line)
    fetched = [s for s in seen if "essential packages" in s and "fetched" in s]
    assert fetched[0].endswith(" 1/69 packages fetched") and fetched[-1].endswith(" 69/69 packages fetched")
    assert any(s.endswith(" 69/69 packages unpacked") for s in seen if "essential" in s)
    assert any(s.endswith(" 69/69 packages set up") for s in seen if "essential" in s)
    remaining = [s for s in seen if "remaining packages" in s and "/31 " in s]
    assert remaining[-1] == "dom0: remaining packages [####################] 100% 31/31 packages set up"
    assert "dom0: running apt-get update" in seen and "dom0: creating tarball" in seen
    assert not any("Get:1 http" in s or "/8941" in s for s in seen)  # package list downloads are not packages


def test_mksquashfs_progress_is_its_percentage(monkeypatch):
    seen = _collect(monkeypatch)
    feed = squashfs_progress("base layer")
    data = (TOOLS / "mksquashfs-progress.txt").read_bytes().decode()
    for line in re.split(r"[\r\n]", data):
        if line.strip():
            feed(line)
    assert [s.rsplit(" ", 1)[-1] for s in seen] == ["2%", "7%", "29%", "74%", "100%"]


def _on_a_pty(args: list[str], env: dict[str, str]) -> str:
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "builder", *args], stdin=subprocess.DEVNULL, stdout=slave,
                            stderr=slave, env={**os.environ, **env}, cwd=REPO)  # fmt: skip
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            seen += data
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(master)
    return seen.decode(errors="replace")


@pytest.mark.parametrize(("env", "coloured"), [({"TERM": "xterm"}, True), ({"TERM": "xterm", "NO_COLOR": "1"}, False),
                                               ({"TERM": "dumb"}, False)])  # fmt: skip
def test_errors_are_coloured_only_where_the_terminal_allows(env, coloured):
    text = _on_a_pty(["show", "no-such-profile"], env)
    assert "profile not found" in text or "no-such-profile" in text
    assert ("\x1b[31" in text) is coloured
    if not coloured:
        assert not ESCAPES.search(text.replace("\r\n", "\n"))


def test_cli_quiet_and_verbose_flags_go_before_or_after_the_command(tmp_path):
    env = {**os.environ, "XENLIVE_CACHE_DIR": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "builder", *args], capture_output=True, text=True, env=env)

    assert "entries" in run("cache", "ls").stderr
    assert run("cache", "ls", "-q").stderr == "" and run("-q", "cache", "ls").stderr == ""
    listed = run("devices", "-v")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr
