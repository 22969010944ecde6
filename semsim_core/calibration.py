"""Labeled pairs for threshold calibration: reading them (CSV/TSV/JSONL tables, STS Benchmark files) and the
threshold grid ``semsim calibrate`` prints. The metrics at each cut are :mod:`semsim_core.ranking`'s.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from semsim_core.evaluation import read_stsb
from semsim_core.formats import TABLE_FORMATS, TableError, read_rows, table_format

PAIRS_FORMATS = ("auto", *TABLE_FORMATS, "stsb")
STSB_POSITIVE_MIN = 4.0  # STS Benchmark: 4 = "the two sentences are mostly equivalent"
GRID = np.round(np.arange(0.50, 0.951, 0.05), 2)  # the thresholds of the printed table


class LabeledPairs(NamedTuple):
    first: list[str]
    second: list[str]
    labels: np.ndarray  # bool: True for a duplicate (positive) pair


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
        raise TableError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TableError(f"{path}: not UTF-8 text") from None
    if _is_stsb_row(first_line):
        return "stsb"
    fmt = table_format(path)
    if fmt is None:
        raise TableError(f"cannot tell the format of {path} from its extension; pass --format")
    return fmt


def text_value(row: dict, column: str, where: str) -> str:
    """A non-empty string field of a row."""
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise TableError(f"{where}: {column} must be a non-empty string, got {value!r}")
    return value


def number_value(row: dict, column: str, where: str) -> float:
    """A finite number field of a row (a JSON number or a string holding one)."""
    value: Any = row.get(column)
    if value is None:
        raise TableError(f"{where}: {column} is missing")
    try:
        number = float(value) if isinstance(value, (str, int, float)) else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise TableError(f"{where}: {column} {value!r} is not a number")
    return number


def _label(row: dict, where: str) -> bool:
    value = number_value(row, "label", where)
    if value not in (0.0, 1.0):
        raise TableError(f"{where}: label must be 0 or 1, got {row['label']!r}")
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
    data = read_stsb(path)
    return LabeledPairs(data.first, data.second, data.gold >= positive_min)


def read_labeled_pairs(path: str, fmt: str = "auto", positive_min: float | None = None) -> LabeledPairs:
    """Read labeled pairs: CSV/TSV/JSONL with ``text_a``, ``text_b`` and ``label`` (0/1), or a graded ``score`` that
    is positive when ``>= positive_min``; or an STS Benchmark file (``stsb``; positive from ``positive_min``, default
    4). Raise :class:`TableError` on unusable input, including a file with no pair or no positive pair."""
    fmt = pairs_format(path) if fmt == "auto" else fmt
    if fmt == "stsb":
        positive_min = STSB_POSITIVE_MIN if positive_min is None else positive_min
        pairs = _read_stsb(path, positive_min)
    else:
        pairs = _read_table(path, fmt, positive_min)
    if not len(pairs.labels):
        raise TableError(f"{path}: no labeled pairs")
    if not pairs.labels.any():
        rule = "label 1" if positive_min is None else f"score >= {positive_min:g}"
        raise TableError(f"{path}: no positive pair ({rule}); recall needs at least one")
    return pairs
