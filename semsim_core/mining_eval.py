"""Paraphrase-mining quality of a run's pairs against gold duplicate pairs: average precision and best F1 over the
pairs ranked by score, as sentence-transformers' ``ParaphraseMiningEvaluator`` computes them.

The ranked list is every candidate pair (here: every pair a run reports at a low threshold); the metrics are
:mod:`semsim_core.ranking`'s over the distinct scores, with recall's denominator every gold pair of the corpus, found
or not. So gold pairs below the run's threshold lower recall and average precision.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import numpy as np

from semsim_core.formats import TableError, read_rows, table_format
from semsim_core.ranking import average_precision, best_f1_cut
from semsim_core.records import EXACT

IdPair = tuple[str, str]  # two record ids, the smaller first (see unordered)


class MiningReport(NamedTuple):
    average_precision: float
    f1: float
    precision: float
    recall: float
    threshold: float  # midway between the best-F1 cut's score and the next lower one, as sentence-transformers does
    candidate_pairs: int
    gold_pairs: int
    gold_found: int


def unordered(a: str, b: str) -> IdPair:
    """The pair as ``(smaller id, larger id)``."""
    return (a, b) if a < b else (b, a)


def expand_exact_groups(rows: Iterable[tuple[str, str, float, str]]) -> dict[IdPair, float]:
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
        raise TableError(f"{where}: {column} must be a non-empty string, got {value!r}")
    return value


def read_gold_pairs(path: str, fmt: str = "auto") -> set[IdPair]:
    """Gold duplicate pairs from a CSV/TSV (with a header) or JSONL file with ``id_a`` and ``id_b``; the order of the
    two ids does not matter. Raise :class:`TableError` on unusable input."""
    fmt = table_format(path) if fmt == "auto" else fmt
    if fmt is None:
        raise TableError(f"cannot tell the format of {path} from its extension; pass --gold-format")
    gold = set()
    for where, row in read_rows(path, fmt, ("id_a", "id_b")):
        a, b = _gold_id(row, "id_a", where), _gold_id(row, "id_b", where)
        if a == b:
            raise TableError(f"{where}: id_a and id_b are the same id {a!r}")
        gold.add(unordered(a, b))
    if not gold:
        raise TableError(f"{path}: no gold pairs")
    return gold


def mining_report(candidates: Mapping[IdPair, float], gold: set[IdPair]) -> MiningReport:
    """Average precision and best F1 of ``candidates`` (unordered pair -> score) ranked by descending score against
    ``gold`` (unordered pairs; restrict them to the corpus first: every one counts in recall's denominator)."""
    scores = np.fromiter(candidates.values(), dtype=np.float64, count=len(candidates))
    is_gold = np.fromiter((pair in gold for pair in candidates), dtype=bool, count=len(candidates))
    found = int(is_gold.sum())
    if not found:
        return MiningReport(0.0, 0.0, 0.0, 0.0, 0.0, len(candidates), len(gold), 0)
    best = best_f1_cut(scores, is_gold, positives=len(gold))
    below = scores[scores < best.threshold]
    threshold = (best.threshold + (below.max() if below.size else best.threshold)) / 2
    return MiningReport(
        average_precision(scores, is_gold, positives=len(gold)),
        best.f1,
        best.precision,
        best.recall,
        float(threshold),
        len(candidates),
        len(gold),
        found,
    )
