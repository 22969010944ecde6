"""The ONNX graph that the ONNX Runtime and OpenVINO backends run: every module of the model (transformer, pooling,
dense, normalize) traced from the loaded weights into one graph whose output is the sentence embedding. Exported
locally, never downloaded."""

from __future__ import annotations

import warnings
from pathlib import Path

from semsim_core.backends.base import built, input_names


def onnx_graph(model) -> Path:
    """``model.onnx`` in the model's cache folder, exported on first use."""
    return built(model, "model.onnx", lambda tmp: _export(model, tmp))


def _export(model, path: Path) -> None:
    import torch

    names = input_names(model)

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(dict(zip(names, inputs, strict=True)))["sentence_embedding"]

    sample = model.tokenizer(["a short text", "and a slightly longer one"], padding=True, return_tensors="pt")
    axes = {name: {0: "batch", 1: "tokens"} for name in names}
    with warnings.catch_warnings():
        # the traced branches (attention mask present, mask width == token count) hold for every padded batch, and
        # the graph indexes with no negative indices
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator")
        torch.onnx.export(
            SentenceEmbedding().eval(),
            tuple(sample[n] for n in names),
            str(path),
            input_names=names,
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
