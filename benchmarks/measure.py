"""Run one command as a child process and measure its wall time and peak memory (RSS)."""

from __future__ import annotations

import os
import subprocess
import time

from semsim_core.backend_choice import cpu_profile, isa_flags
from semsim_core.embedder import default_threads


def machine() -> str:
    """This machine's CPU, threads and vector ISA: the first line of every benchmark's figures."""
    cpu = cpu_profile()
    return (
        f"CPU: {cpu['cpu']} ({cpu['machine']}), {default_threads()} threads; ISA: {' '.join(isa_flags(cpu['flags']))}"
    )


def run_measured(args: list[str]) -> tuple[float, float]:
    """Run ``args``; return (wall seconds, peak RSS in GiB of the child). Raises if the command fails."""
    start = time.perf_counter()
    child = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - start
    stderr = child.stderr.read().decode(errors="replace")
    child.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{stderr[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20
