"""fp32 decisions from approximate embeddings: pairs whose approximate cosine falls near the threshold are scored
again with the fp32 model.

An int8 or bf16 backend moves a pair's cosine by up to its *drift* (see :mod:`.backend_choice`). With a band ``b``
wider than that drift, searching the approximate vectors at ``threshold - b`` finds every pair the fp32 model puts
at or above the threshold; pairs scoring ``threshold + b`` or more are kept as they are, and the pairs in between are
rescored with fp32 vectors and kept when their fp32 cosine reaches the threshold. The result is the fp32 model's
pairs at the threshold, for the cost of embedding the few texts of the band pairs twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from semsim_core.backends import FP32_BACKENDS

DEFAULT_RESCORE_BAND = 0.02
FP32_DRIFT = 1e-5  # what fp32 runtimes differ by (summation order): the drift limit when nothing is rescored


@dataclass(frozen=True)
class ScoreBand:
    """The threshold and the band around it whose pairs are rescored (``band`` 0: no rescoring)."""

    threshold: float
    band: float = 0.0

    @property
    def search_threshold(self) -> float:
        """Search the approximate vectors at this cosine, so no pair the fp32 model keeps is missed."""
        return max(-1.0, self.threshold - self.band)

    @property
    def max_drift(self) -> float:
        """The largest drift from fp32 a backend may have to be chosen by ``auto`` for this band: half of it (on
        2,552 STSb test sentences the largest drift was 1.5-2x the largest on the 400-text probe)."""
        return max(self.band / 2, FP32_DRIFT)

    def settled(self, score: float) -> bool:
        """Whether an approximate ``score`` is far enough above the threshold to keep without rescoring."""
        return score >= self.threshold + self.band

    def in_band(self, score: float) -> bool:
        """Whether an approximate ``score`` must be rescored before deciding."""
        return self.search_threshold <= score < self.threshold + self.band

    def keeps(self, fp32_score: float) -> bool:
        return fp32_score >= self.threshold


def rescore_band(backend: str, band: float) -> float:
    """The band to rescore for ``backend``: none for fp32 backends, whose scores are the fp32 model's already."""
    return 0.0 if backend in FP32_BACKENDS else band


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """The cosine of two unit vectors, capped at 1 as the pair search does."""
    return min(float(np.dot(a, b)), 1.0)
