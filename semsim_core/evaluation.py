"""Quality measurements on STS Benchmark: Spearman correlation and the paraphrase threshold with the best F1."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import spearmanr

from semsim_core.embedder import Embedder


class StsbPairs(NamedTuple):
    first: list[str]
    second: list[str]
    gold: np.ndarray


class StsbReport(NamedTuple):
    pairs: int
    spearman: float
    threshold: float
    f1: float
    precision: float
    recall: float


def read_stsb(path: str) -> StsbPairs:
    """Read an STS Benchmark file (tab-separated, no header, no quoting; score in column 5, sentences in 6 and 7)."""
    first, second, gold = [], [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            columns = line.rstrip("\n").split("\t")
            gold.append(float(columns[4]))
            first.append(columns[5])
            second.append(columns[6])
    return StsbPairs(first, second, np.asarray(gold))


def pair_cosines(embedder: Embedder, first: list[str], second: list[str]) -> np.ndarray:
    """Cosine similarity of each (first[i], second[i]); every distinct sentence is encoded once."""
    unique = list(dict.fromkeys(first + second))
    row = {text: i for i, text in enumerate(unique)}
    vectors = embedder.encode(unique)
    a = vectors[[row[t] for t in first]]
    b = vectors[[row[t] for t in second]]
    return np.einsum("ij,ij->i", a, b)


def best_f1_threshold(cosines: np.ndarray, is_paraphrase: np.ndarray) -> tuple[float, float, float, float]:
    """Return ``(threshold, f1, precision, recall)`` of the cosine cut that best separates paraphrases.

    Candidate thresholds are the observed cosines; a pair is predicted a paraphrase when ``cosine >= threshold``.
    """
    order = np.argsort(-cosines, kind="stable")
    sorted_cos, sorted_pos = cosines[order], is_paraphrase[order].astype(np.int64)
    true_pos = np.cumsum(sorted_pos)
    predicted = np.arange(1, len(order) + 1)
    precision = true_pos / predicted
    recall = true_pos / max(int(sorted_pos.sum()), 1)
    f1 = np.where(true_pos > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)
    # Only cut between distinct cosines, so the threshold keeps every pair counted above it.
    last_of_run = np.append(sorted_cos[1:] != sorted_cos[:-1], True)
    best = int(np.argmax(np.where(last_of_run, f1, -1.0)))
    return float(sorted_cos[best]), float(f1[best]), float(precision[best]), float(recall[best])


def evaluate_stsb(embedder: Embedder, path: str, paraphrase_min_score: float = 4.0) -> StsbReport:
    """Spearman correlation (x1, as MTEB reports it) of cosines with gold scores, and the best-F1 threshold for
    telling paraphrases (gold ``>= paraphrase_min_score``, 4 = "mostly equivalent") from the rest."""
    data = read_stsb(path)
    cosines = pair_cosines(embedder, data.first, data.second)
    spearman = float(spearmanr(cosines, data.gold).statistic)
    threshold, f1, precision, recall = best_f1_threshold(cosines, data.gold >= paraphrase_min_score)
    return StsbReport(len(data.gold), spearman, threshold, f1, precision, recall)
