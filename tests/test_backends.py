"""Inference backends and length-aware batching, on the bundled model and real STS Benchmark sentences."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines.options import BatchDedupOptions
from semsim_core.backends import BACKENDS, FP32_BACKENDS, REGISTRY, fingerprint, folder_of, load_runner
from semsim_core.backends.openvino_quantize import import_openvino
from semsim_core.embedder import EmbedConfig, Embedder, default_threads
from tests.conftest import SAMPLE_PARAPHRASES, run_batch, stsb_unique_sentences


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    return stsb_unique_sentences()[:300]


@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "torch"])
def test_backend_agrees_with_fp32(backend, embedder, sentences, backend_cache):
    reference = embedder.encode(sentences)
    vectors = Embedder(embedder.model, EmbedConfig(backend=backend, threads=1)).encode(sentences)
    cosines = (vectors * reference).sum(axis=1)
    assert vectors.shape == reference.shape and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert cosines.mean() >= 0.99, (backend, cosines.mean(), cosines.min())
    assert any(backend_cache.glob(f"backends/{fingerprint(embedder.model)}/*"))


def test_built_backend_is_reused_and_rebuilt_when_the_weights_change(embedder, backend_cache):
    Embedder(embedder.model, EmbedConfig(backend="onnx-int8", threads=1))
    folder = backend_cache / "backends" / fingerprint(embedder.model)
    files = [folder / "model.onnx", folder / "model-int8.onnx"]  # what onnx-int8 needs (other workers add more)
    built = [p.stat().st_mtime_ns for p in files]
    Embedder(embedder.model, EmbedConfig(backend="onnx-int8", threads=1))
    assert [p.stat().st_mtime_ns for p in files] == built

    changed = Embedder.load(backend="torch").model
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    assert fingerprint(changed) != fingerprint(embedder.model)


def test_batches_are_length_sorted_within_limits_and_cover_every_text(embedder):
    lengths = [5, 300, 7, 7, 12, 40, 3, 250, 9, 60] * 7
    batcher = Embedder(embedder.model, EmbedConfig(backend="torch", batch_size=8, max_batch_tokens=512, threads=1))
    batches = batcher.batches(lengths)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths)
    for batch in batches:
        padded = max(lengths[i] for i in batch) * len(batch)
        assert len(batch) <= 8 and (padded <= 512 or len(batch) == 1)


@pytest.mark.parametrize("backend", ["torch", "openvino"])  # openvino: batches queued to parallel streams
def test_encode_keeps_input_order(backend, embedder, sentences, backend_cache):
    texts = [sentences[0] * 20, *sentences[1:40], "ok"]
    batcher = Embedder(embedder.model, EmbedConfig(backend=backend, batch_size=4, max_batch_tokens=256, threads=2))
    batched = batcher.encode(texts)
    one_by_one = np.vstack([batcher.encode([t]) for t in texts])
    assert np.allclose(batched, one_by_one, atol=1e-4)


def test_openvino_model_serves_threads_at_once(embedder, sentences, backend_cache):
    """Beam may call one worker's shared model from several threads; each gets its own results."""
    batcher = Embedder(embedder.model, EmbedConfig(backend="openvino", batch_size=4, threads=2))
    halves = [sentences[:150], sentences[150:]]
    expected = [batcher.encode(texts) for texts in halves]
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(batcher.encode, halves * 4))
    for got, want in zip(results, expected * 4, strict=True):
        assert np.allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("backend", ["torch", "onnx", "openvino"])
def test_thread_setting_is_applied(backend, embedder, backend_cache):
    runner = load_runner(embedder.model, backend, threads=1)
    if backend == "torch":
        assert torch.get_num_threads() == 1
    elif backend == "onnx":
        assert runner.session.get_session_options().intra_op_num_threads == 1
    else:
        assert runner.compiled.get_property("INFERENCE_NUM_THREADS") == 1
        assert sys.modules["openvino_telemetry"] is None, "OpenVINO's usage telemetry stays off"
    torch.set_num_threads(default_threads())


def test_a_compiled_openvino_model_is_cached_beside_its_graph(embedder, sentences, backend_cache):
    folder = folder_of(fingerprint(embedder.model))
    first = load_runner(embedder.model, "openvino", threads=1)
    assert any((folder / "openvino-cache").glob("*.blob")), "the first load kept the compiled model"
    again = load_runner(embedder.model, "openvino", threads=1)
    assert again.compiled.get_property("LOADED_FROM_CACHE"), "a later load imports it instead of compiling"
    settings = {"INFERENCE_NUM_THREADS": 1, "INFERENCE_PRECISION_HINT": "f32"}  # default: bf16 where the CPU has it
    fresh = import_openvino().Core().compile_model(str(folder / "model.onnx"), "CPU", settings)
    batch = embedder._padded(embedder.inputs.encode(sentences[:32]), np.arange(32))
    expected = fresh.create_infer_request().infer(batch)[0]
    for runner in (first, again):
        np.testing.assert_allclose(runner([batch])[0], expected, atol=1e-6)
    if not REGISTRY["openvino-bf16"].unsupported():  # one cached graph, each load at its own precision
        bf16 = load_runner(embedder.model, "openvino-bf16", threads=1).compiled
        assert bf16.get_property("LOADED_FROM_CACHE")
        assert bf16.get_property("INFERENCE_PRECISION_HINT").to_string() == "bf16"


def test_default_threads_share_the_cores():
    cores = default_threads(1)
    assert default_threads(cores) == 1
    assert default_threads(cores * 4) == 1
    assert default_threads(2) == max(1, cores // 2)


def test_pipeline_threads_default_to_the_cores_per_local_worker():
    shared = PipelineOptions(["--direct_running_mode=multi_processing", "--direct_num_workers=2"])
    assert shared.view_as(BatchDedupOptions).embed_config().threads == default_threads(2)
    # Any other runner: 0, which each worker process resolves to its own cores (not the submitting machine's).
    assert PipelineOptions([]).view_as(BatchDedupOptions).embed_config().threads == 0
    assert PipelineOptions(["--runner=DataflowRunner"]).view_as(BatchDedupOptions).embed_config().threads == 0
    assert PipelineOptions(["--embed-threads", "3"]).view_as(BatchDedupOptions).embed_config().threads == 3


def test_batch_pipeline_on_the_default_auto_backend_reports_the_fp32_pairs(tmp_path):
    data = tmp_path / "in.jsonl"
    data.write_text("".join(SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines(keepends=True)[:300]))
    fp32 = run_batch(tmp_path / "fp32", "--input", str(data), "--backend", "torch")
    auto = run_batch(tmp_path / "auto", "--input", str(data), "--backend", "auto")
    expected = {(r.id_a, r.id_b): r.score for r in fp32.pairs.itertuples()}
    found = {(r.id_a, r.id_b): r.score for r in auto.pairs.itertuples()}
    borderline = {p for p, score in {**expected, **found}.items() if abs(score - 0.8) < 1e-6}
    assert auto.summary.backend_requested == "auto" and auto.summary.backend in BACKENDS
    assert auto.counters["model_loads"] == 1 and len(expected) > 50
    assert set(found) - borderline == set(expected) - borderline
    assert max(abs(found[p] - expected[p]) for p in found.keys() & expected.keys()) <= auto.summary.rescore_band + 1e-5
    if auto.summary.backend in FP32_BACKENDS:  # auto chose fp32 (no bf16 or VNNI here): nothing to rescore
        assert auto.summary.rescored_pairs == 0 and auto.counters.get("rescore_model_loads", 0) == 0
        assert auto.summary.rescore_band == 0
    else:
        assert auto.summary.rescored_pairs > 0
