"""Progress lines of long batch runs (counts, rates, ETA; logged by the pipeline only when asked) and a stream's
status lines."""

from __future__ import annotations

import logging

from semsim_core.progress import Progress, StreamStatus, eta_text, run_progress
from tests.conftest import SAMPLE_PARAPHRASES, run_batch


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


def test_interval_zero_never_logs():
    lines = []
    progress = Progress(interval=0, log=lines.append)
    progress.add("read", 5)
    assert lines == [] and progress.line().startswith("read 5")


def test_eta_text():
    assert eta_text(0) == "0:00:00"
    assert eta_text(3725.2) == "1:02:05"


def test_batch_run_logs_progress_when_asked_and_is_quiet_by_default(tmp_path, caplog):
    lines = SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines(keepends=True)[:120]
    (tmp_path / "in.jsonl").write_text("".join(lines), encoding="utf-8")
    flags = ["--input", str(tmp_path / "in.jsonl"), "--backend", "torch"]
    logger = logging.getLogger("semsim.progress")
    level = logger.level  # the semsim command turns it on, and tests that call it share this process's loggers
    logger.setLevel(logging.NOTSET)
    try:
        run_batch(tmp_path / "quiet", *flags, "--progress-seconds", "0.000001")
    finally:
        logger.setLevel(level)
    assert not [r for r in caplog.records if r.name == "semsim.progress"]

    with caplog.at_level(logging.INFO, logger="semsim.progress"):
        batch = run_batch(tmp_path / "loud", *flags, "--progress-seconds", "0.000001")
    lines = [r.getMessage() for r in caplog.records if r.name == "semsim.progress"]
    assert lines, "no progress line"
    last = lines[-1]
    embedded = batch.counters["embedded"]
    assert f"read {batch.summary.inputs:,}" in last
    assert f"embedded {embedded:,} of {embedded:,} (100%)" in last
    assert f"pairs {batch.summary.semantic_pairs:,}" in last
    assert any("ETA" in line for line in lines)


def test_runs_in_one_process_keep_their_own_counts():
    first, second = run_progress("run-1", 30), run_progress("run-2", 30)
    first.add("read", 5)
    second.add("read", 2)
    assert run_progress("run-1", 30) is first
    assert first.line().startswith("read 5") and second.line().startswith("read 2")
