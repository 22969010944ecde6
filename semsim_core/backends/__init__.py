"""Inference backends for a sentence-transformers model on the CPU.

Each backend turns padded batches (``input_ids``, ``attention_mask`` and, for BERT-like models, ``token_type_ids``, as
int64 arrays) into the model's sentence embeddings. A runtime's module in this package registers its backends as a
``BACKENDS`` tuple of :class:`~.base.Backend` records (name, description, packages needed, fp32 or not, loader);
adding a backend means adding such a module. ``torch`` (:mod:`.pytorch`) runs the model as loaded and is the
reference; the others run a graph built locally from the same weights and cached under :func:`cache_dir` in a
folder named by the model's fingerprint, so a changed model is rebuilt rather than reused. ``auto``, the default,
picks among them on each machine (:mod:`semsim_core.backend_choice`).
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil

from semsim_core.backends.base import (
    EXPORT_VERSION,
    Backend,
    Runner,
    cache_dir,
    fingerprint,
    folder_of,
    input_names,
    locked,
)

REFERENCE = "torch"  # the fp32 model as loaded: first in every listing


def _discover() -> dict[str, Backend]:
    found: list[Backend] = []
    for module in pkgutil.iter_modules(__path__):
        found.extend(getattr(importlib.import_module(f"{__name__}.{module.name}"), "BACKENDS", ()))
    found.sort(key=lambda b: b.name != REFERENCE)  # stable: otherwise in module and declaration order
    return {b.name: b for b in found}


REGISTRY = _discover()
AUTO = "auto"
DEFAULT_BACKEND = AUTO
BACKENDS = tuple(REGISTRY)
CHOICES = (AUTO, *BACKENDS)  # what --backend accepts
FP32_BACKENDS = frozenset(b.name for b in REGISTRY.values() if b.fp32)  # scores equal the model's fp32 scores


def backend_error(backend: str) -> str | None:
    """Why ``backend`` cannot run in this environment (a missing package, with the install command), or None."""
    if backend == AUTO:
        return None
    if backend not in REGISTRY:
        return f"unknown backend {backend!r}; expected one of {', '.join(CHOICES)}"
    missing = sorted(p for p in REGISTRY[backend].needs if importlib.util.find_spec(p) is None)
    if missing:
        return f"backend {backend} needs {', '.join(missing)} (pip install {' '.join(missing)}), or use --backend torch"
    return None


def candidate_error(backend: str) -> str | None:
    """Why ``auto`` cannot use ``backend`` here: :func:`backend_error`, or this CPU would not run it as named."""
    error = backend_error(backend)
    if error or REGISTRY[backend].unsupported is None:
        return error
    return REGISTRY[backend].unsupported()


def load_runner(model, backend: str, threads: int) -> Runner:
    """A function from padded batches to their sentence embeddings, for ``model`` run by ``backend`` on ``threads``
    threads. Graphs other than ``torch`` are built on first use and then read from the cache."""
    error = backend_error(backend)
    if error:
        raise ValueError(error)
    return REGISTRY[backend].load(model, threads)


def graph_runner(model_fingerprint: str, backend: str, threads: int) -> Runner | None:
    """``backend``'s runner from the graph already built for the model with this fingerprint, without the model
    loaded; None when ``backend`` runs the model itself or its graph is not built yet."""
    if backend == AUTO or backend_error(backend) or REGISTRY[backend].graph is None:
        return None
    path = folder_of(model_fingerprint) / REGISTRY[backend].graph
    return REGISTRY[backend].run_graph(path, threads) if path.exists() else None


__all__ = [
    "AUTO",
    "BACKENDS",
    "CHOICES",
    "DEFAULT_BACKEND",
    "EXPORT_VERSION",
    "FP32_BACKENDS",
    "REGISTRY",
    "Backend",
    "Runner",
    "backend_error",
    "candidate_error",
    "cache_dir",
    "fingerprint",
    "folder_of",
    "graph_runner",
    "input_names",
    "load_runner",
    "locked",
]
