"""``--backend auto``: measured on this machine, gated by drift from fp32, cached by machine key, never overriding an
explicit backend."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys

import numpy as np
import pytest

from semsim_core import backend_choice
from semsim_core.backend_choice import Measurement, cached_choice, choose_backend, isa_flags, pair_drift, pick
from semsim_core.backends import BACKENDS, FP32_BACKENDS, REGISTRY, fingerprint
from semsim_core.embedder import EmbedConfig, Embedder, default_threads
from semsim_core.rescore import DEFAULT_RESCORE_BAND, ScoreBand
from tests.conftest import stsb_unique_sentences

CANDIDATES = BACKENDS  # the candidates the pipelines' auto uses: one measurement serves every test of a session
LIMIT = ScoreBand(0.8, DEFAULT_RESCORE_BAND).max_drift


@pytest.fixture
def short_probe(monkeypatch):
    """The probe's first 20 pairs, for tests of how candidates are measured and listed rather than of the figures
    (one thread times the whole probe at ~10 s a candidate on an AVX2-only CPU)."""
    first, second = backend_choice.probe_texts()
    monkeypatch.setattr(backend_choice, "probe_texts", lambda: (first[:20], second[:20]))


def test_pair_drift_hand_checked():
    reference = np.eye(3, dtype=np.float32)
    moved = np.array([[1, 0, 0], [0.6, 0.8, 0], [0, 0, 1]], dtype=np.float32)
    # pairs (0,1): 0 -> 0.6 (reaches 0.5 after: counted, drift 0.6); (0,2) and (1,2) stay 0, below the floor
    assert pair_drift(reference, moved) == pytest.approx(0.6)
    assert pair_drift(reference, moved, floor=0.7) == 0.0
    assert pair_drift(reference, np.full((3, 3), np.nan, dtype=np.float32)) == float("inf")


def test_pick_is_the_fastest_within_the_drift_limit():
    measured = [
        Measurement("torch", 250.0, 0.0),
        Measurement("openvino-bf16", 900.0, 0.002),
        Measurement("openvino-int8", 1100.0, 0.02),
        Measurement("onnx-int8", None, None, "needs onnxruntime"),
    ]
    assert pick(measured, 0.01) == "openvino-bf16"
    assert pick(measured, 0.05) == "openvino-int8"
    assert pick(measured[2:], 0.001) == "torch", "nothing passes: the reference"


def test_isa_flags_keep_what_decides_kernels():
    flags = "fpu avx2 fma avx512f avx512_vnni amx_int8 sse4_2 hypervisor"
    assert isa_flags(flags) == ["amx_int8", "avx2", "avx512_vnni", "avx512f", "fma"]


def test_auto_choice_passes_the_gate_is_cached_and_measured_again_for_a_new_key(embedder, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="semsim.backend")
    choice = choose_backend(embedder.model, default_threads(), LIMIT, CANDIDATES)
    chosen = next(m for m in choice.measurements if m.backend == choice.backend)
    assert chosen.drift <= LIMIT
    # every candidate ran, except bf16 on a CPU without it (it would be fp32 openvino under another name)
    no_bf16 = REGISTRY["openvino-bf16"].unsupported()
    assert [m.backend for m in choice.measurements if m.error] == (["openvino-bf16"] if no_bf16 else [])
    assert all(m.rate > 0 for m in choice.measurements if not m.error)
    assert chosen.rate == max(m.rate for m in choice.measurements if not m.error and m.drift <= LIMIT)
    assert next(m for m in choice.measurements if m.backend == "onnx").drift < 1e-5, "fp32 runtimes agree"
    source = "cached measurements" if choice.cached else "measured now"  # cached if a test before measured
    assert caplog.records[-1].message.startswith(f"backend auto: {choice.backend} ({source}: torch ")

    def measure_again(*args):
        raise AssertionError("measured again although the key is unchanged")

    monkeypatch.setattr(backend_choice, "_measure_all", measure_again)
    again = choose_backend(embedder.model, default_threads(), LIMIT, CANDIDATES)
    assert again.cached and again.backend == choice.backend and again.measurements == choice.measurements
    known = cached_choice(fingerprint(embedder.model), default_threads(), LIMIT, CANDIDATES)
    assert known.cached and known.measurements == choice.measurements, "the same answer without the model"
    unmeasured = default_threads() + 97  # another thread count: another key (+1 may be cached by a run outside pytest)
    assert cached_choice(fingerprint(embedder.model), unmeasured, LIMIT, CANDIDATES) is None
    with pytest.raises(AssertionError, match="measured again"):
        choose_backend(embedder.model, unmeasured, LIMIT, CANDIDATES)
    monkeypatch.setattr(backend_choice, "cpu_profile", lambda: {"cpu": "Other CPU", "flags": "avx2", "machine": "x"})
    with pytest.raises(AssertionError, match="measured again"):
        choose_backend(embedder.model, default_threads(), LIMIT, CANDIDATES)


def test_strict_limit_keeps_fp32_and_key_is_recorded(embedder, backend_cache):
    choice = choose_backend(embedder.model, default_threads(), 1e-5, CANDIDATES)  # the measurements cached above
    assert choice.backend in FP32_BACKENDS
    record = json.loads(next((backend_cache / "auto").glob("*.json")).read_text())
    assert {"cpu", "flags", "threads", "runtimes", "model"} <= set(record["key"])
    assert record["key"]["runtimes"]["openvino"] != "absent"


def test_candidates_are_timed_in_rounds(embedder, short_probe, backend_cache, monkeypatch):
    timed = []
    real_pass = backend_choice._timed_pass

    def recorded(model, texts):
        timed.append(model.backend)
        return real_pass(model, texts)

    monkeypatch.setattr(backend_choice, "_timed_pass", recorded)
    measured = backend_choice._measure_all(embedder.model, 1, ("torch", "openvino"))
    assert timed == ["torch", "openvino", "torch", "openvino"], "each round times every candidate in turn"
    assert [m.backend for m in measured] == ["torch", "openvino"] and all(m.rate > 0 for m in measured)
    assert measured[0].drift == 0 and measured[1].drift < 1e-5


def test_missing_runtime_is_skipped_with_a_reason(embedder, short_probe, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="semsim.backend")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if onnxruntime were not installed
    choice = choose_backend(embedder.model, 1, LIMIT, ("torch", "onnx-int8"))
    skipped = choice.measurements[1]
    assert skipped.rate is None and "needs onnxruntime" in skipped.error and choice.backend == "torch"
    assert "onnx-int8 skipped (backend onnx-int8 needs onnxruntime" in caplog.records[-1].message


def test_backend_this_cpu_cannot_run_as_named_is_left_out(embedder, short_probe, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="semsim.backend")
    reason = "this CPU has no bf16 (AVX512-BF16 or AMX): it would run fp32, as openvino"
    bf16 = dataclasses.replace(REGISTRY["openvino-bf16"], unsupported=lambda: reason)
    monkeypatch.setitem(REGISTRY, "openvino-bf16", bf16)
    choice = choose_backend(embedder.model, 1, LIMIT, ("torch", "openvino-bf16"))
    assert choice.backend == "torch" and choice.measurements[1] == Measurement("openvino-bf16", None, None, reason)
    assert f"openvino-bf16 skipped ({reason})" in caplog.records[-1].message
    assert Embedder(embedder.model, EmbedConfig(backend="openvino-bf16", threads=1)).backend == "openvino-bf16"


def test_auto_without_its_fp32_reference_is_one_clear_error(embedder, monkeypatch):
    reason = "as if this CPU could not run it"
    monkeypatch.setitem(REGISTRY, "torch", dataclasses.replace(REGISTRY["torch"], unsupported=lambda: reason))
    with pytest.raises(RuntimeError, match=f"the fp32 reference, torch, cannot run here: {reason}"):
        choose_backend(embedder.model, 1, LIMIT, ("torch",))


def test_explicit_backend_is_never_replaced(embedder, monkeypatch):
    monkeypatch.setattr(backend_choice, "choose_backend", lambda *a: pytest.fail("auto ran for an explicit backend"))
    assert Embedder(embedder.model, EmbedConfig(backend="openvino", threads=1)).backend == "openvino"


def test_auto_embedder_runs_the_chosen_backend(embedder):
    auto = Embedder(embedder.model, EmbedConfig(threads=default_threads()))
    texts = stsb_unique_sentences()[:50]
    chosen = Embedder(embedder.model, EmbedConfig(backend=auto.backend, threads=2))
    assert auto.backend in CANDIDATES
    assert np.allclose(auto.encode(texts), chosen.encode(texts), atol=1e-4)
