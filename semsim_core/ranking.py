"""Ranking metrics of scored, labeled pairs: precision, recall and F1 at score thresholds, the best-F1 cut, average
precision and the lowest cut reaching a target precision.

Every function takes ``scores`` (one float per pair) and ``labels`` (True for a positive pair) and predicts a pair
positive when its score is ``>= threshold`` (inclusive), so pairs with equal scores are always on the same side of a
cut. With ``TP`` the positives predicted positive, ``PP`` all pairs predicted positive and ``P`` the positives:

- precision = TP / PP (NaN when PP = 0), recall = TP / P (0 when P = 0);
- F1 = 2 * precision * recall / (precision + recall), the harmonic mean as sentence-transformers computes it (0 when
  TP = 0).

``positives`` (default: the number of positive labels) is ``P`` when some positives were never scored, such as gold
duplicate pairs that a run did not report: they count in recall's denominator and can never be found.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np


class Cut(NamedTuple):
    """One operating point: pairs with score ``>= threshold`` are predicted positive."""

    threshold: float
    precision: float  # NaN when nothing is predicted positive
    recall: float
    f1: float
    predicted_positive: int


class Curve(NamedTuple):
    """Operating points at ascending thresholds, one array per :class:`Cut` field."""

    threshold: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    predicted_positive: np.ndarray

    def cut(self, i: int) -> Cut:
        """The ``i``-th operating point."""
        return Cut(
            float(self.threshold[i]),
            float(self.precision[i]),
            float(self.recall[i]),
            float(self.f1[i]),
            int(self.predicted_positive[i]),
        )


def _counts(
    scores: np.ndarray, labels: np.ndarray, thresholds: np.ndarray, positives: int | None
) -> tuple[np.ndarray, np.ndarray, int]:
    """``(TP, PP)`` at each threshold (int64 arrays) and ``P``."""
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels, dtype=bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-d and of one length, got {scores.shape} and {labels.shape}")
    ordered = np.sort(scores)
    positive_scores = np.sort(scores[labels])
    if positives is None:
        positives = len(positive_scores)
    elif positives < len(positive_scores):
        raise ValueError(f"positives={positives} is fewer than the {len(positive_scores)} positive labels")
    predicted = len(ordered) - np.searchsorted(ordered, thresholds, side="left")
    true_pos = len(positive_scores) - np.searchsorted(positive_scores, thresholds, side="left")
    return true_pos, predicted, positives


def _distinct_scores(scores: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(scores, dtype=np.float64))


def curve_at(
    scores: np.ndarray,
    labels: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    positives: int | None = None,
) -> Curve:
    """Precision, recall, F1 and predicted positives at each of ``thresholds`` (ascending for a :class:`Curve` that
    :func:`target_precision_cut` and :func:`best_f1_index` can read)."""
    cuts = np.asarray(thresholds, dtype=np.float64)
    true_pos, predicted, positives = _counts(scores, labels, cuts, positives)
    precision = np.divide(true_pos, predicted, out=np.full(len(cuts), np.nan), where=predicted > 0)
    recall = true_pos / max(positives, 1)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(cuts)), where=true_pos > 0)
    return Curve(cuts, precision, recall, f1, predicted)


def exact_curve(scores: np.ndarray, labels: np.ndarray, positives: int | None = None) -> Curve:
    """The curve at every distinct score, ascending: every operating point the scores allow."""
    return curve_at(scores, labels, _distinct_scores(scores), positives)


def best_f1_index(f1: np.ndarray) -> int:
    """The index of the highest F1 on a curve with ascending thresholds; on a tie the last one (the higher threshold,
    fewer pairs predicted positive). NaN is skipped; raise ValueError when every value is NaN or there is none."""
    f1 = np.asarray(f1, dtype=np.float64)
    return len(f1) - 1 - int(np.nanargmax(f1[::-1]))


def best_f1_cut(scores: np.ndarray, labels: np.ndarray, positives: int | None = None) -> Cut:
    """The cut with the highest F1 over every distinct score (:func:`exact_curve`; on a tie, the higher threshold).
    Raise ValueError when there is no score."""
    curve = exact_curve(scores, labels, positives)
    return curve.cut(best_f1_index(curve.f1))


def best_f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float, float, float]:
    """``(threshold, f1, precision, recall)`` of :func:`best_f1_cut`."""
    best = best_f1_cut(scores, labels)
    return best.threshold, best.f1, best.precision, best.recall


def average_precision(scores: np.ndarray, labels: np.ndarray, positives: int | None = None) -> float:
    """Average precision of the pairs ranked by descending score: ``sum(precision_k * new_TP_k) / P`` over the
    distinct scores ``k`` from the highest, ``new_TP_k`` the positives first predicted at cut ``k`` (pairs of equal
    score enter together). With every positive scored, this is scikit-learn's ``average_precision_score``; 0 when
    there is no positive."""
    true_pos, predicted, positives = _counts(scores, labels, _distinct_scores(scores)[::-1], positives)
    if not positives:
        return 0.0
    gained = np.diff(true_pos, prepend=0)
    found = gained > 0
    return float(np.dot(true_pos[found] / predicted[found], gained[found])) / positives


def target_precision_cut(curve: Curve, target: float) -> Cut | None:
    """The cut with the lowest threshold whose precision is at least ``target`` (the most recall at that precision)
    on an ascending curve such as :func:`exact_curve`, or None when no cut reaches it."""
    reached = np.flatnonzero(np.nan_to_num(curve.precision, nan=-1.0) >= target)
    return curve.cut(int(reached[0])) if len(reached) else None
