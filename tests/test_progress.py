"""Progress lines of long batch runs (counts, rates, ETA; logged by the pipeline only when asked) and a stream's
status lines."""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from pathlib import Path

from pipelines.options import BatchDedupOptions
from semsim_core.progress import (
    BARS,
    LINES,
    WORKER_LINES,
    Progress,
    ProgressBars,
    ProgressSpec,
    StreamStatus,
    eta_text,
)
from tests.conftest import SAMPLE_PARAPHRASES, run_batch, sample_titles, write_jsonl


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_line_has_counts_rates_and_eta():
    clock, lines = Clock(), []
    progress = Progress(interval=10, clock=clock, log=lines.append)
    progress.add("read", 0)
    progress.add("embedded", 0, total=1000)
    clock.now = 104.0
    progress.add("read", 2000)
    progress.add("embedded", 200, total=1000)
    assert lines == []  # 4 s < interval
    clock.now = 110.0
    progress.add("embedded", 300)
    assert lines == ["read 2,000, 500/s | embedded 500 of 1,000 (50%), 50/s, ETA 0:00:10"]
    clock.now = 115.0
    progress.add("embedded", 500)
    assert len(lines) == 1  # 5 s after the last line
    assert progress.line() == "read 2,000, 500/s | embedded 1,000 of 1,000 (100%), 67/s"


def test_stream_status_counts_since_the_last_line_and_its_latency_percentiles():
    clock, lines = Clock(), []
    status = StreamStatus(interval=10, held=lambda: "cells held 2, 1 MB", clock=clock, log=lines.append)
    for latency in (0.5, 0.7, 0.9, 1.1, 3.0):
        status.add("received")
        status.add("resolved", latency)
    status.add("dead letters")
    assert lines == []
    clock.now = 110.0
    status.add("received")
    assert lines == [
        "stream: received 6 (+6) | resolved 5 (+5) | dead letters 1 (+1) | latency p50 0.90 s, p95 3.00 s (5 posts) "
        "| cells held 2, 1 MB"
    ]
    clock.now = 121.0
    status.add("resolved", 0.25)  # only what came since the last line counts for the interval and its latency
    assert lines[-1] == (
        "stream: received 6 (+0) | resolved 6 (+1) | dead letters 1 (+0) | latency p50 0.25 s, p95 0.25 s (1 posts) "
        "| cells held 2, 1 MB"
    )

    clock.now = 125.0
    status.add("received")  # within the interval: not logged when it comes...
    status.tick()
    assert len(lines) == 2
    clock.now = 131.5
    status.tick()  # ...but by the next tick, though nothing else came
    assert lines[-1].startswith("stream: received 7 (+1) | resolved 6 (+0)") and len(lines) == 3
    clock.now = 200.0
    status.tick()
    assert len(lines) == 3, "a quiet stream with nothing new logs nothing"


def test_a_stopped_stream_logs_its_last_events_once():
    clock, lines = Clock(), []
    status = StreamStatus(interval=10, clock=clock, log=lines.append)
    status.flush()
    status.add("received")
    status.flush()  # within the interval, as a stream stopped soon after a line would be
    status.flush()
    assert lines == ["stream: received 1 (+1)"]
    code = (
        "import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.INFO, format='%(message)s')\n"
        "from semsim_core.progress import stream_status\n"
        "stream_status('run-1', 3600, lambda: 'cells held 0').add('received')"
    )
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert child.stdout.splitlines() == ["stream: received 1 (+1) | cells held 0"], "logged as the process exits"


def test_interval_zero_never_logs():
    lines = []
    progress = Progress(interval=0, log=lines.append)
    progress.add("read", 5)
    assert lines == [] and progress.line().startswith("read 5")


def test_eta_text():
    assert eta_text(0) == "0:00:00"
    assert eta_text(3725.2) == "1:02:05"


def _progress_lines(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "semsim.progress"]


def test_batch_run_is_quiet_unless_its_progress_logger_is_on(tmp_path, caplog):
    lines = SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines(keepends=True)[:120]
    (tmp_path / "in.jsonl").write_text("".join(lines), encoding="utf-8")
    logger = logging.getLogger("semsim.progress")
    level = logger.level  # the semsim command turns it on, and tests that call it share this process's loggers
    logger.setLevel(logging.NOTSET)
    try:
        run_batch(tmp_path / "quiet", "--input", str(tmp_path / "in.jsonl"), "--progress-seconds", "0.000001")
    finally:
        logger.setLevel(level)
    assert not _progress_lines(caplog)


def test_batch_progress_comes_from_inside_the_work_at_the_real_rate(tmp_path, caplog):
    """Embedding counts windows as they are encoded: several lines with growing counts before the last window, at
    a rate within 2x of the one the encoder's own clock (``encode_ms``) gives; the summary has each step's time."""
    source = write_jsonl(tmp_path / "titles.jsonl", sample_titles(2000))
    flags = ["--input", str(source), "--backend", "openvino", "--batch-window", "200", "--progress-seconds", "0.1"]
    with caplog.at_level(logging.INFO, logger="semsim.progress"):
        batch = run_batch(tmp_path / "out", *flags)
    lines = _progress_lines(caplog)
    total = batch.summary.embedded
    embedded = [re.search(r"embedded ([\d,]+) of ([\d,]+) \(\d+%\), ([\d,]+)/s", line) for line in lines]
    counts = [int(m[1].replace(",", "")) for m in embedded if m]
    assert {int(m[2].replace(",", "")) for m in embedded if m} == {total}
    partial = sorted({c for c in counts if 0 < c < total})
    assert len(partial) >= 3 and counts == sorted(counts), "counts grow while the windows are encoded"
    assert any("ETA" in line for line in lines)
    encoded_rate = batch.counters["embedded"] / (batch.counters["encode_ms"] / 1000)
    reported = int(next(m for m in reversed(embedded) if m)[3].replace(",", ""))
    assert encoded_rate / 2 <= reported <= encoded_rate * 2
    last = lines[-1]
    assert re.search(r"cells searched (\d+) of \1 \(100%\)", last) and "clustering round" in last
    steps = batch.summary.step_seconds
    assert {"Embed", "FindPairs"} <= set(steps) and min(steps.values()) >= 0.05
    assert 0 < steps["Embed"] <= batch.summary.wall_seconds
    # Beam samples the step under way every 200 ms: the step's time is its encoding, give or take some samples
    assert steps["Embed"] >= batch.counters["encode_ms"] / 1000 * 0.8, "the step's time holds its encoding"


def test_bars_draw_every_step_and_keep_each_final_rate():
    screen = io.StringIO()
    clock, lines = Clock(), []
    progress = Progress(interval=1, clock=clock, log=lines.append, bars=ProgressBars(screen, mininterval=0))
    progress.add("embedded", 0, total=10)
    for _ in range(10):
        clock.now += 1
        progress.add("embedded", 1, total=10)
    progress.reach("clustering round", 2, 6)
    progress.reach("clustering round", 1, 6)  # a late thread of round 1 does not move it back
    progress.bars.close()
    drawn = screen.getvalue()
    assert "embedded: 100%" in drawn and "10/10" in drawn
    assert "clustering round:  33%" in drawn and "2/6" in drawn
    assert lines == [], "bars replace the log lines"


def test_a_worker_among_others_shows_the_run_total_without_share_or_eta():
    clock = Clock()
    progress = Progress(interval=0, clock=clock, whole_run=False)
    progress.add("embedded", 0, total=1000)
    clock.now += 10
    progress.add("embedded", 200, total=1000)
    assert progress.line() == "embedded 200 (run: 1,000), 20/s"


def test_progress_display_follows_the_runner_and_the_terminal(monkeypatch, caplog):
    def display(*flags: str, tty: bool = False):
        monkeypatch.setattr(sys.stderr, "isatty", lambda: tty)
        opts = BatchDedupOptions(["--input", "x", "--output", "y", *flags])
        spec = opts.progress()
        return spec and (spec.display, spec.whole_run)

    caplog.set_level(logging.WARNING, logger="semsim.progress")  # as a library user leaves it
    assert display("--runner", "FnApiRunner") is None, "quiet unless the progress logger is on"
    with caplog.at_level(logging.INFO, logger="semsim.progress"):
        assert display("--runner", "FnApiRunner", tty=True) == (BARS, True)
        assert display("--runner", "FnApiRunner") == (LINES, True)
        assert display("--direct_running_mode", "multi_threading", "--runner", "FnApiRunner", tty=True) == (BARS, True)
        processes = ("--runner", "FnApiRunner", "--direct_running_mode", "multi_processing")
        assert display(*processes, tty=True) == (WORKER_LINES, False)
        assert display("--runner", "DataflowRunner", tty=True) == (LINES, False)
        assert display("--runner", "FnApiRunner", "--progress-seconds", "0", tty=True) is None


def test_runs_in_one_process_keep_their_own_counts():
    first, second = ProgressSpec("run-1", 30).open(), ProgressSpec("run-2", 30).open()
    first.add("read", 5)
    second.add("read", 2)
    assert ProgressSpec("run-1", 30).open() is first
    assert first.line().startswith("read 5") and second.line().startswith("read 2")


def _run_on_a_terminal(args: list[str], columns: int = 120) -> tuple[int, str]:
    """Run ``args`` with stderr on a pseudo-terminal of ``columns`` columns; its exit status and what it drew."""
    primary, replica = pty.openpty()
    fcntl.ioctl(replica, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    drawn = bytearray()

    def read() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO: the terminal's last writer closed it
                return
            if not chunk:
                return
            drawn.extend(chunk)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        done = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=replica, timeout=300)
    finally:
        os.close(replica)
        reader.join(timeout=10)
        os.close(primary)
    return done.returncode, drawn.decode("utf-8", "replace")


def test_the_command_draws_live_bars_on_a_terminal(tmp_path):
    source = write_jsonl(tmp_path / "titles.jsonl", sample_titles(400))
    semsim = str(Path(sys.executable).with_name("semsim"))
    args = [semsim, "batch", "--input", str(source), "--output", str(tmp_path / "out"), "--backend", "openvino"]
    code, drawn = _run_on_a_terminal([*args, "--batch-window", "100"])
    assert code == 0, drawn
    final = drawn.replace("\r", "\n")
    embedded = json.loads((tmp_path / "out" / "summary.json").read_text())["embedded"]
    assert "embedded: 100%" in final and f"{embedded}/{embedded}" in final
    assert re.search(r"cells searched: 100%.*\b1/1\b", final) and "clustering round: 100%" in final
    assert "semsim.progress:" not in drawn, "bars, not log lines"
