"""The portable submission path (what Flink runs): Beam's Python job service and an SDK worker pool in separate
processes, started and stopped by deploy/portable/run-local.sh with deploy/flink's submission flags."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from dataclasses import replace

import pandas as pd

from semsim_core.run_layout import Summary
from tests.conftest import REPO, SAMPLE_PARAPHRASES, assert_invariants, run_batch, sample_titles, write_jsonl

SCRIPT = REPO / "deploy" / "portable" / "run-local.sh"
FLINK_FLAGS = REPO / "deploy" / "flink" / "portable-flags.txt"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _sorted(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    return frame.sort_values(keys).reset_index(drop=True)


def test_portable_runner_matches_fnapi_runner_and_stops_its_services(tmp_path):
    titles = write_jsonl(tmp_path / "titles.jsonl", sample_titles(150))
    paraphrases = tmp_path / "paraphrases.jsonl"
    paraphrases.write_text("".join(SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines(keepends=True)[:200]))
    flags = ["--input", str(titles), "--input", str(paraphrases), "--backend", "onnx"]  # fp32, loaded from the cache
    local = run_batch(tmp_path / "fnapi", *flags)

    job_port, pool_port = _free_port(), _free_port()
    env = {**os.environ, "PYTHON": sys.executable, "JOB_PORT": str(job_port), "POOL_PORT": str(pool_port)}
    env["LOG_DIR"] = str(tmp_path)
    done = subprocess.run(
        ["bash", str(SCRIPT), *flags, "--output", str(tmp_path / "portable")],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    pids = [int(p) for p in re.findall(r"pid (\d+)", done.stdout)]
    assert len(pids) == 2 and not any(_alive(p) for p in pids), "job service or worker pool left running"
    leftover = subprocess.run(["pgrep", "-f", f"(--port|--service_port) ({job_port}|{pool_port})"], capture_output=True)
    assert leftover.stdout == b""

    out = tmp_path / "portable"
    summary = Summary.from_json((out / "summary.json").read_text())
    assert summary.runner == "PortableRunner"
    untimed = {"wall_seconds": None, "step_seconds": None}
    same_run = {"runner": local.summary.runner, "outputs": local.summary.outputs, **untimed}
    assert replace(summary, **same_run) == replace(local.summary, **untimed)
    keys = ["id_a", "id_b"]
    pairs, clusters = pd.read_parquet(out / "pairs"), pd.read_parquet(out / "clusters")
    pd.testing.assert_frame_equal(_sorted(pairs, keys), _sorted(local.pairs, keys), check_exact=False, atol=1e-5)
    pd.testing.assert_frame_equal(_sorted(clusters, ["id"]), _sorted(local.clusters, ["id"]))
    assert_invariants(local)
    assert local.summary.semantic_pairs > 0

    loads = re.search(r'"model_loads": (\d+)', done.stdout)
    assert loads and int(loads.group(1)) == 1, done.stdout[-2000:]  # one SDK worker process, one model


def test_submission_flags_are_flinks():
    listed = [line for line in FLINK_FLAGS.read_text().splitlines() if line and not line.startswith("#")]
    assert {line.split("=", 1)[0] for line in listed} == {
        "--runner", "--job_endpoint", "--artifact_endpoint", "--environment_type", "--environment_config"
    }  # fmt: skip
    assert "--runner=PortableRunner" in listed and "--environment_type=EXTERNAL" in listed
    assert "portable-flags.txt" in SCRIPT.read_text()
