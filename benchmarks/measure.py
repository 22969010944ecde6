"""Run one command as a child process and measure its wall time and peak memory (RSS)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from semsim_core.backend_choice import cpu_profile, isa_flags
from semsim_core.embedder import default_threads

SEMSIM = str(Path(sys.executable).with_name("semsim"))  # the command every benchmark runs as a child process


def machine() -> str:
    """This machine's CPU, threads and vector ISA: the first line of every benchmark's figures."""
    cpu = cpu_profile()
    return (
        f"CPU: {cpu['cpu']} ({cpu['machine']}), {default_threads()} threads; ISA: {' '.join(isa_flags(cpu['flags']))}"
    )


def timed(fn, *args, repeat: int = 1):
    """``fn(*args)``'s result and its fastest time over ``repeat`` calls (this machine is noisy: the best of a few
    runs is the stable figure)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn(*args)
        best = min(best, time.perf_counter() - start)
    return result, best


def run_measured(args: list[str]) -> tuple[float, float]:
    """Run ``args``; return (wall seconds, peak RSS in GiB of the child). Raises if the command fails."""
    seconds, rss, _ = run_child(args)
    return seconds, rss


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run ``args``; return (wall seconds, peak RSS in GiB of the child, its standard output). Raises if it fails."""
    with tempfile.TemporaryFile() as stdout, tempfile.TemporaryFile() as stderr:
        start = time.perf_counter()
        child = subprocess.Popen(args, stdout=stdout, stderr=stderr)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
        stdout.seek(0)
        stderr.seek(0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{stderr.read().decode(errors='replace')[-3000:]}")
        return seconds, usage.ru_maxrss / 2**20, stdout.read().decode(errors="replace")


def faster(baseline_s: float, seconds: float) -> str:
    """``seconds`` against ``baseline_s`` as a speed-up: "2.40x faster", or "1.30x slower"."""
    ratio = baseline_s / seconds
    return f"{ratio:.2f}x faster" if ratio >= 1 else f"{1 / ratio:.2f}x slower"


def share(part: int, whole: int) -> str:
    """``part / whole`` to 4 places; "n/a" when ``whole`` is 0 (nothing to find, or nothing found)."""
    return f"{part / whole:.4f}" if whole else "n/a"
