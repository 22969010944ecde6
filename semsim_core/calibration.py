"""Threshold calibration on labeled pairs: read them, measure precision / recall / F1 at every cosine cut, and pick the
best-F1 cut and the lowest cut that reaches a target precision.

A pair is predicted a duplicate when its cosine is ``>= threshold``, as in ``semsim batch``.
"""

from __future__ import annotations

import csv
import json
import math
import posixpath
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np

from semsim_core.evaluation import best_f1_threshold, read_stsb

PAIRS_FORMATS = ("auto", "csv", "tsv", "jsonl", "stsb")
STSB_POSITIVE_MIN = 4.0  # STS Benchmark: 4 = "the two sentences are mostly equivalent"
GRID = np.round(np.arange(0.50, 0.951, 0.05), 2)  # the thresholds of the printed table
_EXTENSIONS = {".csv": "csv", ".tsv": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class PairsFileError(ValueError):
    """A pairs file that cannot be used, reported as one line (``path:line: reason``)."""


class LabeledPairs(NamedTuple):
    first: list[str]
    second: list[str]
    labels: np.ndarray  # bool: True for a duplicate (positive) pair


class Cut(NamedTuple):
    """One operating point: pairs with cosine ``>= threshold`` are predicted positive."""

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
        return Cut(
            float(self.threshold[i]),
            float(self.precision[i]),
            float(self.recall[i]),
            float(self.f1[i]),
            int(self.predicted_positive[i]),
        )


def table_format(path: str) -> str | None:
    """``csv``, ``tsv`` or ``jsonl`` from a file's extension, or None."""
    return _EXTENSIONS.get(posixpath.splitext(path.lower())[1])


def _is_stsb_row(line: str) -> bool:
    columns = line.rstrip("\n").split("\t")
    try:
        float(columns[4])
    except (IndexError, ValueError):
        return False
    return len(columns) >= 7


def pairs_format(path: str) -> str:
    """The format of a labeled-pairs file: by extension, except that a file whose first line is an STS Benchmark row
    (7+ tab-separated fields, a number in the 5th) is ``stsb`` (STSb ships tab-separated files named ``.csv``)."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            first_line = f.readline()
    except OSError as e:
        raise PairsFileError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PairsFileError(f"{path}: not UTF-8 text") from None
    if _is_stsb_row(first_line):
        return "stsb"
    fmt = table_format(path)
    if fmt is None:
        raise PairsFileError(f"cannot tell the format of {path} from its extension; pass --format")
    return fmt


def _csv_rows(path: str, f, delimiter: str, required: Sequence[str], hint: str) -> Iterator[tuple[str, dict]]:
    reader = csv.DictReader(f, delimiter=delimiter)
    try:
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if reader.fieldnames and missing:
            raise PairsFileError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
        for row in reader:
            yield f"{path}:{reader.line_num}", row
    except csv.Error as e:
        raise PairsFileError(f"{path}:{reader.line_num}: {e}") from None


def _jsonl_rows(path: str, f, required: Sequence[str], hint: str) -> Iterator[tuple[str, dict]]:
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PairsFileError(f"{where}: invalid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise PairsFileError(f"{where}: not a JSON object")
        missing = [c for c in required if c not in row]
        if missing:
            raise PairsFileError(f"{where}: missing field(s) {', '.join(missing)}{hint}")
        yield where, row


def read_rows(path: str, fmt: str, required: Sequence[str], hint: str = "") -> Iterator[tuple[str, dict]]:
    """``(location, row)`` for each row of a CSV or TSV file (with a header row) or a JSONL file (one object per
    line); raise :class:`PairsFileError` when a ``required`` column is missing (``hint`` ends that message)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "jsonl":
                yield from _jsonl_rows(path, f, required, hint)
            else:
                yield from _csv_rows(path, f, "\t" if fmt == "tsv" else ",", required, hint)
    except OSError as e:
        raise PairsFileError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise PairsFileError(f"{path}: not UTF-8 text") from None


def text_value(row: dict, column: str, where: str) -> str:
    """A non-empty string field of a row."""
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise PairsFileError(f"{where}: {column} must be a non-empty string, got {value!r}")
    return value


def number_value(row: dict, column: str, where: str) -> float:
    """A finite number field of a row (a JSON number or a string holding one)."""
    value: Any = row.get(column)
    if value is None:
        raise PairsFileError(f"{where}: {column} is missing")
    try:
        number = float(value) if isinstance(value, (str, int, float)) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise PairsFileError(f"{where}: {column} {value!r} is not a number")
    return number


def _label(row: dict, where: str) -> bool:
    value = number_value(row, "label", where)
    if value not in (0.0, 1.0):
        raise PairsFileError(f"{where}: label must be 0 or 1, got {row['label']!r}")
    return value == 1.0


def _read_table(path: str, fmt: str, positive_min: float | None) -> LabeledPairs:
    column = "label" if positive_min is None else "score"
    hint = " (or a graded score column with --positive-min S)" if positive_min is None else ""
    first, second, labels = [], [], []
    for where, row in read_rows(path, fmt, ("text_a", "text_b", column), hint):
        first.append(text_value(row, "text_a", where))
        second.append(text_value(row, "text_b", where))
        labels.append(_label(row, where) if positive_min is None else number_value(row, "score", where) >= positive_min)
    return LabeledPairs(first, second, np.asarray(labels, dtype=bool))


def _read_stsb(path: str, positive_min: float) -> LabeledPairs:
    try:
        data = read_stsb(path)
    except OSError as e:
        raise PairsFileError(f"cannot read {path}: {e.strerror}") from None
    except (IndexError, ValueError):
        raise PairsFileError(
            f"{path}: not an STS Benchmark file (tab-separated; score in field 5, sentences in 6 and 7)"
        ) from None
    return LabeledPairs(data.first, data.second, data.gold >= positive_min)


def read_labeled_pairs(path: str, fmt: str = "auto", positive_min: float | None = None) -> LabeledPairs:
    """Read labeled pairs: CSV/TSV/JSONL with ``text_a``, ``text_b`` and ``label`` (0/1), or a graded ``score`` that
    is positive when ``>= positive_min``; or an STS Benchmark file (``stsb``; positive from ``positive_min``, default
    4). Raise :class:`PairsFileError` on unusable input, including a file with no pair or no positive pair."""
    fmt = pairs_format(path) if fmt == "auto" else fmt
    if fmt == "stsb":
        positive_min = STSB_POSITIVE_MIN if positive_min is None else positive_min
        pairs = _read_stsb(path, positive_min)
    else:
        pairs = _read_table(path, fmt, positive_min)
    if not len(pairs.labels):
        raise PairsFileError(f"{path}: no labeled pairs")
    if not pairs.labels.any():
        rule = "label 1" if positive_min is None else f"score >= {positive_min:g}"
        raise PairsFileError(f"{path}: no positive pair ({rule}); recall needs at least one")
    return pairs


def curve_at(scores: np.ndarray, labels: np.ndarray, thresholds: Sequence[float] | np.ndarray) -> Curve:
    """Precision, recall, F1 and predicted positives at each threshold (pairs with ``score >= threshold`` are
    predicted positive). Precision is NaN where no pair is predicted positive, F1 is 0 where no positive pair is."""
    scores = np.asarray(scores, dtype=np.float64)
    cuts = np.asarray(thresholds, dtype=np.float64)
    ordered = np.sort(scores)
    positive_scores = np.sort(scores[np.asarray(labels, dtype=bool)])
    predicted = len(ordered) - np.searchsorted(ordered, cuts, side="left")
    true_pos = len(positive_scores) - np.searchsorted(positive_scores, cuts, side="left")
    precision = np.divide(true_pos, predicted, out=np.full(len(cuts), np.nan), where=predicted > 0)
    recall = true_pos / max(len(positive_scores), 1)
    f1 = 2 * true_pos / np.maximum(predicted + len(positive_scores), 1)  # 2TP / (2TP + FP + FN)
    return Curve(cuts, precision, recall, f1, predicted)


def exact_curve(scores: np.ndarray, labels: np.ndarray) -> Curve:
    """The curve at every distinct score: every operating point the scores allow, thresholds ascending."""
    return curve_at(scores, labels, np.unique(np.asarray(scores, dtype=np.float64)))


def best_f1_cut(scores: np.ndarray, labels: np.ndarray) -> Cut:
    """The cut with the best F1 (:func:`semsim_core.evaluation.best_f1_threshold`; on a tie, the higher threshold)."""
    threshold = best_f1_threshold(np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=bool))[0]
    return curve_at(scores, labels, [threshold]).cut(0)


def target_precision_cut(curve: Curve, target: float) -> Cut | None:
    """The cut with the lowest threshold whose precision is at least ``target`` (the most recall at that precision)
    on an ascending curve such as :func:`exact_curve`, or None when no cut reaches it."""
    reached = np.flatnonzero(np.nan_to_num(curve.precision, nan=-1.0) >= target)
    return curve.cut(int(reached[0])) if len(reached) else None
