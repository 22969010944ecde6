"""Quality measurements on STS Benchmark: Spearman correlation and the paraphrase threshold with the best F1."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy.stats import spearmanr

from semsim_core.embedder import Embedder
from semsim_core.formats import TableError
from semsim_core.ranking import best_f1_threshold


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
    """Read an STS Benchmark file (tab-separated, no header, no quoting; score in column 5, sentences in 6 and 7).
    A file that is not one raises :class:`TableError` naming the first line at fault."""
    first, second, gold = [], [], []
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                columns = line.rstrip("\n").split("\t")
                try:
                    gold.append(float(columns[4]))
                    first.append(columns[5])
                    second.append(columns[6])
                except (IndexError, ValueError):
                    raise TableError(
                        f"{path}:{number}: not an STS Benchmark line (tab-separated; score in field 5, sentences in "
                        "6 and 7)"
                    ) from None
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TableError(f"{path}: not UTF-8 text") from None
    return StsbPairs(first, second, np.asarray(gold))


def pair_cosines(embedder: Embedder, first: list[str], second: list[str]) -> np.ndarray:
    """Cosine similarity of each (first[i], second[i]); every distinct sentence is encoded once."""
    unique = list(dict.fromkeys(first + second))
    row = {text: i for i, text in enumerate(unique)}
    vectors = embedder.encode(unique)
    a = vectors[[row[t] for t in first]]
    b = vectors[[row[t] for t in second]]
    return np.einsum("ij,ij->i", a, b)


def evaluate_stsb(embedder: Embedder, data: StsbPairs, paraphrase_min_score: float = 4.0) -> StsbReport:
    """Spearman correlation (x1, as MTEB reports it) of cosines with gold scores, and the best-F1 threshold for
    telling paraphrases (gold ``>= paraphrase_min_score``, 4 = "mostly equivalent") from the rest
    (:func:`semsim_core.ranking.best_f1_threshold`: a pair is predicted a paraphrase when ``cosine >= threshold``)."""
    cosines = pair_cosines(embedder, data.first, data.second)
    spearman = float(spearmanr(cosines, data.gold).statistic)
    threshold, f1, precision, recall = best_f1_threshold(cosines, data.gold >= paraphrase_min_score)
    return StsbReport(len(data.gold), spearman, threshold, f1, precision, recall)
