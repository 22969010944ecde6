"""Paraphrase-mining quality of a run's pairs against gold duplicate pairs: average precision and best F1 over the
pairs ranked by score, as sentence-transformers' ``ParaphraseMiningEvaluator`` computes them.

The ranked list is every candidate pair (here: every pair a run reports at a low threshold); precision and recall are
taken at the end of each run of equal scores where a gold pair was found, and recall's denominator is every gold pair
of the corpus, found or not. So gold pairs below the run's threshold lower recall and average precision.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from semsim_core.calibration import PairsFileError, read_rows, table_format
from semsim_core.records import EXACT

Pair = tuple[str, str]


class MiningReport(NamedTuple):
    average_precision: float
    f1: float
    precision: float
    recall: float
    threshold: float  # midway between the best-F1 cut's score and the next lower one, as sentence-transformers does
    candidate_pairs: int
    gold_pairs: int
    gold_found: int


def unordered(a: str, b: str) -> Pair:
    """The pair as ``(smaller id, larger id)``."""
    return (a, b) if a < b else (b, a)


def expand_exact_groups(rows: Iterable[tuple[str, str, float, str]]) -> dict[Pair, float]:
    """Every pair a batch run reports, directly or through an exact group, with its score, from its ``pairs/`` rows
    ``(id_a, id_b, score, kind)``.

    Exact copies are reported as a star from the group's smallest id, and only that representative is embedded, so
    every two members of a group are a pair (score 1.0) and every member shares the representative's semantic pairs.
    """
    groups: dict[str, list[str]] = {}
    semantic = []
    for id_a, id_b, score, kind in rows:
        if kind == EXACT:
            groups.setdefault(id_a, [id_a]).append(id_b)
        else:
            semantic.append((id_a, id_b, float(score)))
    found = {unordered(x, y): 1.0 for members in groups.values() for x, y in itertools.combinations(members, 2)}
    for a, b, score in semantic:
        found.update((unordered(x, y), score) for x in groups.get(a, [a]) for y in groups.get(b, [b]))
    return found


def _gold_id(row: dict, column: str, where: str) -> str:
    value = row.get(column)
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value:
        raise PairsFileError(f"{where}: {column} must be a non-empty string, got {value!r}")
    return value


def read_gold_pairs(path: str, fmt: str = "auto") -> set[Pair]:
    """Gold duplicate pairs from a CSV/TSV (with a header) or JSONL file with ``id_a`` and ``id_b``; the order of the
    two ids does not matter. Raise :class:`PairsFileError` on unusable input."""
    fmt = table_format(path) if fmt == "auto" else fmt
    if fmt is None:
        raise PairsFileError(f"cannot tell the format of {path} from its extension; pass --gold-format")
    gold = set()
    for where, row in read_rows(path, fmt, ("id_a", "id_b")):
        a, b = _gold_id(row, "id_a", where), _gold_id(row, "id_b", where)
        if a == b:
            raise PairsFileError(f"{where}: id_a and id_b are the same id {a!r}")
        gold.add(unordered(a, b))
    if not gold:
        raise PairsFileError(f"{path}: no gold pairs")
    return gold


def mining_report(candidates: Mapping[Pair, float], gold: set[Pair]) -> MiningReport:
    """Average precision and best F1 of ``candidates`` (unordered pair -> score) ranked by descending score against
    ``gold`` (unordered pairs; restrict them to the corpus first: every one counts in recall's denominator)."""
    if not candidates or not gold:
        return MiningReport(0.0, 0.0, 0.0, 0.0, 0.0, len(candidates), len(gold), 0)
    scores = np.fromiter(candidates.values(), dtype=np.float64, count=len(candidates))
    is_gold = np.fromiter((pair in gold for pair in candidates), dtype=bool, count=len(candidates))
    order = np.argsort(-scores, kind="stable")
    ranked, correct = scores[order], np.cumsum(is_gold[order])
    ends = np.flatnonzero(np.append(ranked[1:] != ranked[:-1], True))  # last pair of each run of equal scores
    gained = np.diff(correct[ends], prepend=0)
    hits = ends[gained > 0]
    if not len(hits):
        return MiningReport(0.0, 0.0, 0.0, 0.0, 0.0, len(candidates), len(gold), 0)
    precision = correct[hits] / (hits + 1)
    recall = correct[hits] / len(gold)
    f1 = 2 * precision * recall / (precision + recall)
    best = int(np.argmax(f1))
    threshold = (ranked[hits[best]] + ranked[min(hits[best] + 1, len(ranked) - 1)]) / 2
    average_precision = float(np.dot(precision, gained[gained > 0])) / len(gold)
    return MiningReport(
        average_precision,
        float(f1[best]),
        float(precision[best]),
        float(recall[best]),
        float(threshold),
        len(candidates),
        len(gold),
        int(correct[-1]),
    )
