"""One model per worker process: not per thread, bundle or DoFn instance."""

from __future__ import annotations

import gc
import logging
import pickle
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from apache_beam.pvalue import TaggedOutput
from apache_beam.utils.shared import Shared

from semsim_core.embedder import EmbedConfig
from semsim_core.records import Record
from tests.conftest import assert_invariants, run_batch, sample_titles, write_jsonl
from transforms.embed import EmbedBatchFn


@pytest.fixture
def titles_file(tmp_path):
    return write_jsonl(tmp_path / "titles.jsonl", [{"id": r["id"], "text": r["text"]} for r in sample_titles(300)])


@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_model_loaded_once_per_worker_process(tmp_path, titles_file, mode, caplog, capfd):
    """Also: with progress on, each worker process reports its own embedding as it goes (worker processes write
    their lines to the stderr they share with this one; threads share one count, logged here)."""
    with caplog.at_level(logging.INFO, logger="semsim.progress"):
        batch = run_batch(
            tmp_path / "out",
            "--input", str(titles_file),
            "--batch-window", "8",
            "--direct_running_mode", mode,
            "--direct_num_workers", "2",
            "--backend", "onnx",  # fp32, one model per process, loaded from the cache without sentence-transformers
            "--progress-seconds", "0.01",
        )  # fmt: skip
    assert_invariants(batch)
    assert batch.counters["embedded"] == 300  # ~38 windows of 8 texts
    processes = 2 if mode == "multi_processing" else 1
    assert 1 <= batch.counters["model_loads"] <= processes
    if mode == "multi_processing":
        lines = [line for line in capfd.readouterr().err.splitlines() if "semsim.progress (worker" in line]
    else:
        lines = [r.getMessage() for r in caplog.records if r.name == "semsim.progress"]
    counts = [int(m[1]) for m in (re.search(r"embedded (\d+) ", line) for line in lines) if m]
    assert len(set(counts)) >= 3 and min(counts) < 300 / processes, "counts while the windows are embedded"


def test_dofn_copies_in_threads_share_one_model():
    """Beam pickles a DoFn into each worker thread; every copy must reach the same model through Shared."""
    fn = EmbedBatchFn(Shared(), EmbedConfig())
    copies = [pickle.loads(pickle.dumps(fn)) for _ in range(4)]
    loads = []
    for copy in copies:
        original = copy._load
        copy._load = lambda original=original: loads.append(1) or original()

    def embed(copy):
        copy.setup()
        copy.start_bundle()
        outputs = list(copy.process([Record("r1", "A girl is styling her hair.", "stsb", 1)]))
        return [o for o in outputs if not isinstance(o, TaggedOutput)]  # the backend it ran, once per bundle

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(embed, copies))
    assert len(loads) == 1
    assert len({id(copy._embedder) for copy in copies}) == 1
    assert all(len(r) == 1 and r[0].ids == ["r1"] and r[0].vectors.shape == (1, 384) for r in results)


def test_two_models_used_in_turn_by_short_lived_dofns_load_once_each():
    """The local streaming runner makes a DoFn instance per bundle; Beam's Shared keeps only the last object released
    alive, so the run's model and the fp32 rescoring model, used in turn, were each loaded again for every bundle
    (6 loads for 3 rounds here). Each is now held for the process."""
    loads = []

    def short_lived(fn: EmbedBatchFn) -> EmbedBatchFn:
        copy = pickle.loads(pickle.dumps(fn))
        original = copy._load
        copy._load = lambda: loads.append(fn) or original()
        return copy

    embedders = [EmbedBatchFn(Shared(), EmbedConfig(backend=b)) for b in ("torch", "onnx")]
    for _ in range(3):
        for fn in embedders:
            copy = short_lived(fn)
            copy.setup()
            assert copy.embed(["A girl is styling her hair."]).shape == (1, 384)
            del copy
            gc.collect()
    assert len(loads) == 2
