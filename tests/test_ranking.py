"""Ranking metrics (semsim_core.ranking): hand-computed cases, and brute force and scikit-learn on STSb dev."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from semsim_core.ranking import (
    Cut,
    average_precision,
    best_f1_cut,
    best_f1_index,
    best_f1_threshold,
    curve_at,
    exact_curve,
    target_precision_cut,
)
from tests.conftest import STSB_DEV

# Three pairs tie at 0.8; three of the five are positive.
SCORES = np.array([0.9, 0.8, 0.8, 0.8, 0.5])
LABELS = np.array([True, False, True, True, False])


def test_ties_enter_together_and_the_threshold_is_inclusive():
    curve = exact_curve(SCORES, LABELS)
    assert curve.threshold.tolist() == [0.5, 0.8, 0.9]
    assert curve.predicted_positive.tolist() == [5, 4, 1]  # at 0.8 all three tied pairs are in, never one or two
    assert curve.precision.tolist() == [3 / 5, 3 / 4, 1.0]
    assert curve.recall.tolist() == [1.0, 1.0, 1 / 3]
    assert curve.f1.tolist() == pytest.approx([3 / 4, 6 / 7, 1 / 2], abs=1e-15)
    assert curve.cut(1) == Cut(0.8, 0.75, 1.0, curve.f1[1], 4)
    between = curve_at(SCORES, LABELS, [0.8, np.nextafter(0.8, 1.0), 0.85, 0.9, 0.95])
    assert between.predicted_positive.tolist() == [4, 1, 1, 1, 0]
    assert np.isnan(between.precision[-1]) and (between.recall[-1], between.f1[-1]) == (0.0, 0.0)


def test_best_f1_and_target_precision_by_hand():
    best = best_f1_cut(SCORES, LABELS)
    assert (best.threshold, best.precision, best.recall, best.predicted_positive) == (0.8, 0.75, 1.0, 4)
    assert best.f1 == pytest.approx(6 / 7, abs=1e-15)
    assert best_f1_threshold(SCORES, LABELS) == (best.threshold, best.f1, best.precision, best.recall)
    curve = exact_curve(SCORES, LABELS)
    assert target_precision_cut(curve, 0.7).threshold == 0.8  # the lowest cut with precision >= 0.7 (0.5 has 0.6)
    assert target_precision_cut(curve, 1.0).threshold == 0.9
    assert best_f1_index(np.array([0.5, 0.8, 0.8, np.nan])) == 2  # a tie goes to the higher threshold
    with pytest.raises(ValueError):
        best_f1_index(np.array([np.nan]))


def test_all_negatives():
    labels = np.zeros(len(SCORES), dtype=bool)
    curve = exact_curve(SCORES, labels)
    assert curve.precision.tolist() == [0.0, 0.0, 0.0] and curve.recall.tolist() == [0.0, 0.0, 0.0]
    assert curve.f1.tolist() == [0.0, 0.0, 0.0]
    assert best_f1_cut(SCORES, labels) == Cut(0.9, 0.0, 0.0, 0.0, 1)  # every F1 ties at 0: the highest threshold
    assert target_precision_cut(curve, 0.5) is None
    assert average_precision(SCORES, labels) == 0.0


def test_average_precision_by_hand_and_with_unscored_positives():
    # 0.9 adds one positive at precision 1, 0.8 adds two at precision 3/4: (1 * 1 + 2 * 3/4) / 3
    assert average_precision(SCORES, LABELS) == pytest.approx(5 / 6, abs=1e-15)
    assert average_precision(SCORES, LABELS) == pytest.approx(average_precision_score(LABELS, SCORES), abs=1e-15)
    order = np.array([3, 1, 4, 0, 2])  # the order of tied pairs does not matter
    assert average_precision(SCORES[order], LABELS[order]) == average_precision(SCORES, LABELS)
    # Two more positives were never scored (gold pairs a run missed): recall and AP count them, as mining_eval does
    assert average_precision(SCORES, LABELS, positives=5) == pytest.approx(2.5 / 5, abs=1e-15)
    assert best_f1_cut(SCORES, LABELS, positives=5).recall == 3 / 5
    with pytest.raises(ValueError, match="fewer than the 3 positive labels"):
        exact_curve(SCORES, LABELS, positives=2)


def test_equal_brute_force_and_scikit_learn_on_stsb_dev():
    """Scores: STSb dev gold similarity (0-5, many ties); labels: the pair is from the news genre."""
    with open(STSB_DEV, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f]
    scores = np.array([float(row[4]) for row in rows])
    labels = np.array([row[0] == "main-news" for row in rows])
    curve = exact_curve(scores, labels)
    assert len(curve.threshold) < len(scores) / 5
    for i, threshold in enumerate(curve.threshold):
        predicted = scores >= threshold
        true_pos = int((predicted & labels).sum())
        assert curve.predicted_positive[i] == predicted.sum()
        assert curve.precision[i] == true_pos / predicted.sum() and curve.recall[i] == true_pos / labels.sum()
    assert average_precision(scores, labels) == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
