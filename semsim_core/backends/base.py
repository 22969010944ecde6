"""What every backend shares: the :class:`Backend` record a runtime module registers, the cache folder of built
graphs, the model fingerprint that names them, and atomic, locked writes into it."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

EXPORT_VERSION = "3"  # bump when an export or quantisation recipe changes, so caches are rebuilt

Runner = Callable[[list[dict[str, np.ndarray]]], list[np.ndarray]]  # padded batches -> their embeddings, in order


@dataclass(frozen=True)
class Backend:
    """One way to run a sentence-transformers model: its ``--backend`` name, a one-line description, the packages it
    imports, whether its scores equal the model's fp32 scores (to ~1e-6), and ``load(model, threads)``, which builds
    what it needs on first use (cached under :func:`cache_dir`) and returns its :data:`Runner`. A backend that runs
    a built graph also names its file in the model's cache folder (``graph``) and ``run_graph(path, threads)``, which
    runs it without the model loaded. ``unsupported()``, where given, says why this CPU would not run the backend as
    its name promises (bf16 without bf16 hardware runs fp32), so ``auto`` leaves it out; an explicit choice runs."""

    name: str
    description: str
    needs: tuple[str, ...]
    fp32: bool
    load: Callable[[Any, int], Runner]
    graph: str | None = None
    run_graph: Callable[[Path, int], Runner] | None = None
    unsupported: Callable[[], str | None] | None = None


def cache_dir() -> Path:
    """Where built backends live: ``$SEMSIM_CACHE``, else ``$XDG_CACHE_HOME/semsim``, else ``~/.cache/semsim``."""
    if os.environ.get("SEMSIM_CACHE"):
        return Path(os.environ["SEMSIM_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "semsim"


def fingerprint(model) -> str:
    """A hash of ``model``'s weights and module settings: equal for the same model, different after any change."""
    digest = hashlib.sha256(f"{EXPORT_VERSION}\n{model!r}\n{model.max_seq_length}".encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()[:20]


def model_folder(model) -> Path:
    """The cache folder of the graphs built from ``model``."""
    return folder_of(fingerprint(model))


def folder_of(model_fingerprint: str) -> Path:
    """The cache folder of the graphs built from the model with this fingerprint."""
    return cache_dir() / "backends" / model_fingerprint


def input_names(model) -> list[str]:
    """The tokenizer outputs the model reads, in a fixed order."""
    names = model.tokenizer.model_input_names
    return [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in names]


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing): worker processes sharing a cache folder take turns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_atomically(path: Path, write: Callable[[Path], None], companions: tuple[str, ...] = ()) -> None:
    """Write through a temporary name and rename, so a concurrent or interrupted build never leaves half a file;
    ``companions`` are suffixes of files written beside it (``.bin`` beside an OpenVINO ``.xml``)."""
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    write(tmp)
    for suffix in companions:
        tmp.with_suffix(suffix).replace(path.with_suffix(suffix))
    tmp.replace(path)


def built(model, name: str, write: Callable[[Path], None], companions: tuple[str, ...] = ()) -> Path:
    """``name`` in ``model``'s cache folder, written by ``write(tmp_path)`` unless it is there. One process builds at
    a time, so processes starting together build each file once."""
    folder = model_folder(model)
    with locked(folder / ".build.lock"):
        path = folder / name
        if not path.exists():
            write_atomically(path, write, companions)
    return path
