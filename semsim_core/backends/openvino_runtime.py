"""OpenVINO on the exported graph: fp32, bf16 where the CPU has it, and static int8 calibrated by NNCF."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np

from semsim_core.backends.base import Backend, Runner, built, input_names, locked
from semsim_core.backends.onnx_export import onnx_graph
from semsim_core.backends.openvino_quantize import import_openvino, write_batches

CALIBRATION_TEXTS = Path(__file__).parents[1] / "int8_calibration_texts.txt"


def _calibration_batches(model, batch_size: int = 16) -> list[dict[str, np.ndarray]]:
    texts = CALIBRATION_TEXTS.read_text(encoding="utf-8").splitlines()
    names = input_names(model)
    batches = []
    for start in range(0, len(texts), batch_size):
        encoded = model.tokenizer(
            texts[start : start + batch_size], padding=True, truncation=True, max_length=model.max_seq_length
        )
        batches.append({n: np.asarray(encoded[n], dtype=np.int64) for n in names})
    return batches


def _quantize_in_child(source: Path, calibration: Path, target: Path) -> None:
    """Run :mod:`.openvino_quantize` in a child process that finds this copy of semsim_core; its output is kept
    and shown only if it fails."""
    module = "semsim_core.backends.openvino_quantize"
    command = [sys.executable, "-m", module, str(source), str(calibration), str(target)]
    path = os.pathsep.join(p for p in (str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH")) if p)
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": path})
    if done.returncode != 0:
        output = (done.stdout + done.stderr)[-3000:]
        raise RuntimeError(f"building the openvino-int8 backend failed (exit status {done.returncode}):\n{output}")


def _quantized(model) -> Path:
    source = onnx_graph(model)

    def write(target: Path) -> None:
        calibration = target.with_suffix(".npz")
        write_batches(calibration, _calibration_batches(model))
        try:
            _quantize_in_child(source, calibration, target)
        finally:
            calibration.unlink()

    return built(model, "openvino-int8.xml", write, companions=(".bin",))


def _runner(path: Path, threads: int, precision: str) -> Runner:
    """OpenVINO in throughput mode: the threads form streams (one per thread on a few cores) that each run a whole
    batch; on 2 cores this measured 5-10% (fp32) and 10-20% (int8) faster than one batch at a time on all threads,
    whose small matrices cannot keep both cores busy. The largest batches start first and each next batch goes to
    whichever stream is free (an ``AsyncInferQueue``), so no stream idles behind a long batch at the end of a call.
    Results are collected by the calling thread: the queue's own callbacks are C++, and Python callbacks would wait
    for the GIL while the pipeline's other threads hold it.

    The compiled model is kept in OpenVINO's model cache beside the graph (``openvino-cache/``, keyed by OpenVINO on
    the graph, device and settings): a later load imports it in ~0.06 s instead of compiling the graph in ~0.3 s.
    Loads take turns, so processes starting together compile once."""
    ov = import_openvino()
    settings = {"PERFORMANCE_HINT": "THROUGHPUT", "INFERENCE_NUM_THREADS": threads}
    settings["INFERENCE_PRECISION_HINT"] = precision
    if os.access(path.parent, os.W_OK):
        settings["CACHE_DIR"] = str(path.parent / "openvino-cache")
    with locked(path.parent / ".build.lock"):
        compiled = ov.Core().compile_model(str(path), "CPU", settings)
    local = threading.local()  # a queue serves one call at a time; Beam may call from several threads

    def run(batches: list[dict[str, np.ndarray]]) -> list[np.ndarray]:
        if not hasattr(local, "queue"):
            local.queue = ov.AsyncInferQueue(compiled)
        queue = local.queue
        out: list[np.ndarray | None] = [None] * len(batches)
        running: list[int | None] = [None] * len(queue)  # the batch each request holds

        def collect(slot: int) -> None:
            if running[slot] is not None:
                out[running[slot]] = queue[slot].get_output_tensor(0).data.copy()
                running[slot] = None

        for index in sorted(range(len(batches)), key=lambda i: -batches[i]["input_ids"].size):
            slot = queue.get_idle_request_id()
            collect(slot)
            queue.start_async(batches[index])  # runs on the idle request just returned
            running[slot] = index
        queue.wait_all()
        for slot in range(len(queue)):
            collect(slot)
        return out

    run.compiled = compiled
    return run


def _no_bf16() -> str | None:
    """Why ``openvino-bf16`` would run fp32 here: OpenVINO lists no BF16 capability (AVX512-BF16, AMX) on this CPU."""
    if "BF16" in import_openvino().Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        return None
    return "this CPU has no bf16 (AVX512-BF16 or AMX): it would run fp32, as openvino"


def _load(graph, precision: str, model, threads: int) -> Runner:
    return _runner(graph(model), threads, precision)


def _run_graph(precision: str, path: Path, threads: int) -> Runner:
    return _runner(path, threads, precision)


NEEDS = ("openvino", "onnx")
BACKENDS = (
    Backend(
        "openvino",
        "OpenVINO on the exported graph (fp32).",
        NEEDS,
        True,
        partial(_load, onnx_graph, "f32"),
        "model.onnx",
        partial(_run_graph, "f32"),
    ),
    Backend(
        "openvino-bf16",
        "OpenVINO, bf16 inference on CPUs that have it (AVX512-BF16, AMX), fp32 elsewhere.",
        NEEDS,
        False,
        partial(_load, onnx_graph, "bf16"),
        "model.onnx",
        partial(_run_graph, "bf16"),
        _no_bf16,
    ),
    Backend(
        "openvino-int8",
        "OpenVINO, static int8 by NNCF, calibrated on ``int8_calibration_texts.txt`` (300 real texts).",
        (*NEEDS, "nncf"),
        False,
        partial(_load, _quantized, "f32"),
        "openvino-int8.xml",
        partial(_run_graph, "f32"),
    ),
)
