"""A model folder whose graph is built loads from the backend cache: the kept tokenizer makes the model's own input
ids, and a fresh process embeds the same vectors without importing sentence-transformers or torch."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from semsim_core.embedder import EmbedConfig
from semsim_core.model_inputs import load, of_model, save
from tests.conftest import REPO, stsb_unique_sentences


def _texts() -> list[str]:
    """Real sentences, one lowercase-sensitive, an empty one and one longer than the model's window."""
    sentences = stsb_unique_sentences()[:400]
    return [*sentences, sentences[0].upper(), "", " ".join(sentences[:40])]


def test_kept_tokenizer_makes_the_models_input_ids(embedder, tmp_path):
    inputs = of_model(embedder.model)
    save(embedder.model, inputs, tmp_path)
    kept = load(tmp_path)
    assert kept.settings == inputs.settings
    texts = _texts()
    expected = inputs.encode(texts)
    assert kept.encode(texts) == {name: expected[name] for name in inputs.settings.names}
    assert max(len(ids) for ids in kept.encode(texts)["input_ids"]) == inputs.settings.max_seq_length
    assert kept.lengths(texts) == inputs.lengths(texts)
    assert load(tmp_path / "elsewhere") is None


def test_a_fresh_process_embeds_from_the_cache_without_sentence_transformers(tmp_path):
    texts = _texts()
    loaded = EmbedConfig(backend="openvino", threads=1).load()  # builds or finds the graph, keeps the tokenizer
    (tmp_path / "texts.json").write_text(json.dumps(texts))
    script = f"""
import json, sys
import numpy as np
from semsim_core.embedder import EmbedConfig
embedder = EmbedConfig(backend="openvino", threads=1).load()
np.save({str(tmp_path / "vectors.npy")!r}, embedder.encode(json.load(open({str(tmp_path / "texts.json")!r}))))
heavy = sorted({{"sentence_transformers", "torch"}} & set(sys.modules))
print(json.dumps([embedder.model is None, embedder.backend, heavy]))
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [True, "openvino", []]
    np.testing.assert_allclose(np.load(tmp_path / "vectors.npy"), loaded.encode(texts), atol=1e-5)


def test_torch_always_loads_the_model():
    assert EmbedConfig(backend="torch", threads=1).load().model is not None


def test_rescoring_embeds_with_an_fp32_backend(monkeypatch):
    assert EmbedConfig(backend="openvino-int8").fp32().backend == "openvino"
    monkeypatch.setitem(sys.modules, "openvino", None)  # as if OpenVINO were not installed
    assert EmbedConfig(backend="onnx-int8").fp32().backend == "onnx"
