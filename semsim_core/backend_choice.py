"""``--backend auto``: time every installed backend on this machine, keep those whose scores stay close enough to
fp32, pick the fastest, and remember the measurements for this machine, runtime and model.

The probe is :data:`PROBE_PAIRS` (200 STS Benchmark train sentence pairs held out from the int8 calibration texts).
For each candidate backend it measures

- the **rate**: texts per second encoding the probe's 400 texts, the best of two rounds (each loads every candidate in
  turn, warms it and times one pass);
- the **drift**: the largest ``|cos_backend(a, b) - cos_fp32(a, b)|`` over every pair of probe texts whose cosine is at
  least 0.5 for either (the range where paraphrase thresholds are set; ~700 pairs), against the model as loaded
  (PyTorch fp32).

A backend passes the gate when its drift is at most the limit the caller allows (the pipelines allow half their
``--rescore-band``: on 2,552 STSb test sentences the largest drift measured was 1.5-2x the probe's, so pairs outside
the band keep their fp32 side of the threshold). The measurements are cached in
``cache_dir()/auto/<key>.json``; the key hashes the CPU model, its instruction-set flags, the thread count, the
settings that cap the runtimes' kernels (:data:`KERNEL_SETTINGS`), the inference runtimes' versions and the model's
fingerprint, so a changed machine, runtime or model measures again.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from semsim_core.backends import BACKENDS, EXPORT_VERSION, cache_dir, candidate_error, fingerprint, locked

PROBE_PAIRS = Path(__file__).with_name("backend_probe_pairs.tsv")
PROBE_VERSION = "3"  # bump when the probe or its measures change, so cached measurements are taken again
DRIFT_FLOOR = 0.5  # drift is measured on pairs at or above this cosine
WARM_TEXTS = 64  # a candidate's second round warms on this many probe texts
RUNTIMES = ("torch", "onnxruntime", "openvino", "nncf", "onnx", "transformers", "sentence-transformers", "numpy")
# settings that change which kernels the runtimes pick (instruction-set caps, thread pools): part of the key
KERNEL_SETTINGS = (
    "ATEN_CPU_CAPABILITY",
    "MKL_ENABLE_INSTRUCTIONS",
    "ONEDNN_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
    "NPY_DISABLE_CPU_FEATURES",
    "FAISS_SIMD_LEVEL",
    "OMP_NUM_THREADS",
)
_LOG = logging.getLogger("semsim.backend")


@dataclass(frozen=True)
class Measurement:
    """One backend on this machine: texts per second on the probe, and its largest pair-score drift from fp32
    (None when it could not run here, with the reason in ``error``)."""

    backend: str
    rate: float | None
    drift: float | None
    error: str | None = None


@dataclass(frozen=True)
class Choice:
    """What ``auto`` decided: the backend, every candidate's measurement, and whether they came from the cache."""

    backend: str
    max_drift: float
    measurements: tuple[Measurement, ...]
    cached: bool

    def describe(self) -> str:
        """One line: the choice, then every candidate's rate and drift, or why it was left out."""
        parts = []
        for m in self.measurements:
            if m.error:
                parts.append(f"{m.backend} skipped ({m.error})")
            else:
                gate = "" if m.drift <= self.max_drift else f", over the {self.max_drift:g} drift limit"
                parts.append(f"{m.backend} {m.rate:.0f}/s drift {m.drift:.4f}{gate}")
        source = "cached measurements" if self.cached else "measured now"
        return f"backend auto: {self.backend} ({source}: {'; '.join(parts)})"


def cpu_profile() -> dict[str, str]:
    """The CPU model and its feature flags as the OS reports them (``model name``/``flags`` on x86 Linux,
    ``CPU part``/``Features`` on ARM Linux; the platform's processor name elsewhere)."""
    found: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                name, _, value = line.partition(":")
                found.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    model = found.get("model name") or found.get("CPU part") or platform.processor() or platform.machine()
    flags = found.get("flags") or found.get("Features") or ""
    return {"cpu": model, "flags": " ".join(sorted(flags.split())), "machine": platform.machine()}


def isa_flags(flags: str) -> list[str]:
    """The flags that decide inference kernels (AVX2/AVX-512/VNNI/AMX on x86; SVE/dot-product/bf16 on ARM)."""
    wanted = ("avx2", "avx512", "avx_vnni", "amx", "fma", "sve", "asimddp", "bf16", "i8mm")
    return sorted(f for f in flags.split() if f.startswith(wanted))


def runtime_versions() -> dict[str, str]:
    versions = {}
    for name in RUNTIMES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


def machine_key(model_fingerprint: str, threads: int) -> dict:
    """Everything a measurement depends on; equal keys may share one measurement."""
    return {
        **cpu_profile(),
        "threads": threads,
        "settings": {name: os.environ[name] for name in KERNEL_SETTINGS if os.environ.get(name)},
        "runtimes": runtime_versions(),
        "model": model_fingerprint,
        "probe": PROBE_VERSION,
        "export": EXPORT_VERSION,
    }


def probe_texts() -> tuple[list[str], list[str]]:
    """The probe's pairs as two aligned lists."""
    first, second = [], []
    for line in PROBE_PAIRS.read_text(encoding="utf-8").splitlines():
        a, b = line.split("\t")
        first.append(a)
        second.append(b)
    return first, second


def pair_drift(reference: np.ndarray, vectors: np.ndarray, floor: float = DRIFT_FLOOR) -> float:
    """The largest change of any pair's cosine between two embeddings of the same texts (rows aligned, unit
    vectors), over pairs whose cosine reaches ``floor`` in either."""
    if not np.all(np.isfinite(vectors)):
        return float("inf")
    upper = np.triu_indices(len(reference), k=1)
    before, after = (reference @ reference.T)[upper], (vectors @ vectors.T)[upper]
    near = (before >= floor) | (after >= floor)
    return float(np.abs(after[near].astype(np.float64) - before[near]).max(initial=0.0))


def _timed_pass(embedder, texts: Sequence[str]) -> float:
    started = time.perf_counter()
    embedder.encode(texts)
    return time.perf_counter() - started


def pick(measurements: Sequence[Measurement], max_drift: float) -> str:
    """The fastest backend whose drift is within ``max_drift`` (torch, the reference, always qualifies)."""
    passing = [m for m in measurements if m.error is None and m.drift <= max_drift]
    return max(passing, key=lambda m: m.rate).backend if passing else "torch"


def _measure_all(model, threads: int, candidates: Sequence[str]) -> list[Measurement]:
    """Measure torch (whose vectors are the reference) and every other candidate, in two rounds: each round loads
    every candidate in turn (from the cache after the first) and warms it, then times one pass over the probe; a
    candidate's best round counts. The first round warms on the whole probe and keeps those vectors, the second on
    its first :data:`WARM_TEXTS` texts (the candidate's first calls, already made once: a quarter less work than a
    whole pass). Rounds make a machine that is busy for part of the probe slow every candidate alike, where timing
    one candidate after another would favour whichever ran in the quiet part; one candidate is held at a time."""
    from semsim_core.embedder import EmbedConfig, Embedder

    first, second = probe_texts()
    texts = list(dict.fromkeys(first + second))
    order = ["torch", *(b for b in candidates if b != "torch")]
    failed = {b: error.split(" (pip")[0] for b in order if (error := candidate_error(b))}
    vectors, best = {}, {}
    for _ in range(2):
        for backend in (b for b in order if b not in failed):
            try:  # a backend that fails here is left out, with the reason logged
                embedder = Embedder(model, EmbedConfig(backend=backend, threads=threads))
                if backend in vectors:
                    embedder.encode(texts[:WARM_TEXTS])
                else:
                    vectors[backend] = embedder.encode(texts)
                best[backend] = min(best.get(backend, float("inf")), _timed_pass(embedder, texts))
            except Exception as e:  # noqa: BLE001
                failed[backend] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            embedder = None  # released before the next candidate loads
    if "torch" in failed:  # no reference: no drift can be measured, so no candidate can pass the gate
        raise RuntimeError(f"backend auto: the fp32 reference, torch, cannot run here: {failed['torch']}")
    reference = vectors["torch"]
    return [
        Measurement(b, None, None, failed[b])
        if b in failed
        else Measurement(b, len(texts) / best[b], pair_drift(reference, vectors[b]))
        for b in order
        if b in candidates
    ]


def _choice_file(model_fingerprint: str, threads: int, candidates: Sequence[str]) -> tuple[dict, Path]:
    """The machine key of a measurement and the cache file that holds it."""
    key = machine_key(model_fingerprint, threads)
    digest = hashlib.sha256(json.dumps({**key, "candidates": list(candidates)}, sort_keys=True).encode()).hexdigest()
    return key, cache_dir() / "auto" / f"{digest[:24]}.json"


def _chosen(path: Path, max_drift: float, measurements: list[Measurement] | None = None) -> Choice:
    cached = measurements is None
    if cached:
        measurements = [Measurement(**m) for m in json.loads(path.read_text())["measurements"]]
    choice = Choice(pick(measurements, max_drift), max_drift, tuple(measurements), cached)
    _LOG.info(choice.describe())
    return choice


def cached_choice(
    model_fingerprint: str, threads: int, max_drift: float, candidates: Sequence[str] = BACKENDS
) -> Choice | None:
    """:func:`choose_backend`'s answer from the measurements cached for this machine and the model with this
    fingerprint, without the model; None when they have not been taken yet."""
    _, path = _choice_file(model_fingerprint, threads, candidates)
    return _chosen(path, max_drift) if path.exists() else None


def choose_backend(model, threads: int, max_drift: float, candidates: Sequence[str] = BACKENDS) -> Choice:
    """The fastest of ``candidates`` on this machine whose probe drift is at most ``max_drift``, measured on first
    use and then read from the cache (a lock makes concurrent worker processes measure once, one at a time)."""
    key, path = _choice_file(fingerprint(model), threads, candidates)
    with locked(path.with_suffix(".lock")):
        if path.exists():
            return _chosen(path, max_drift)
        measurements = _measure_all(model, threads, candidates)
        record = {"key": key, "isa": isa_flags(key["flags"]), "measurements": [asdict(m) for m in measurements]}
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(path)
    return _chosen(path, max_drift, measurements)
