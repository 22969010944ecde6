"""``semsim calibrate``: choose a cosine threshold from labeled pairs.

Scores every pair with the model, prints precision / recall / F1 over a grid of thresholds with the best-F1 cut and
the lowest cut reaching --target-precision, and writes the whole curve (one row per distinct cosine) as PREFIX.csv
and as a chart, PREFIX.svg (the calibration chart of ``semsim report``).
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import numpy as np

from pipelines.command_parser import CommandParser
from semsim_core.backends import CHOICES, DEFAULT_BACKEND, backend_error
from semsim_core.calibration import GRID, PAIRS_FORMATS, read_labeled_pairs
from semsim_core.embedder import DEFAULT_MODEL, EmbedConfig, model_error
from semsim_core.evaluation import pair_cosines
from semsim_core.formats import TableError
from semsim_core.ranking import Curve, Cut, best_f1_index, curve_at, exact_curve, target_precision_cut
from semsim_core.svg_charts import Marker, calibration_svg

PROG = "semsim calibrate"
CURVE_COLUMNS = ("threshold", "precision", "recall", "f1", "predicted_positive")


def _parser() -> argparse.ArgumentParser:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = CommandParser(prog=PROG, description=__doc__, formatter_class=formatter)
    parser.add_argument(
        "--pairs",
        required=True,
        metavar="FILE",
        help="labeled pairs: CSV/TSV/JSONL with text_a, text_b and label (0/1) or score, or an STS Benchmark file",
    )
    parser.add_argument(
        "--format",
        choices=PAIRS_FORMATS,
        default="auto",
        help="auto: by extension; a file whose first line is an STS Benchmark row reads as stsb",
    )
    parser.add_argument(
        "--positive-min",
        type=float,
        metavar="S",
        help="label pairs by a graded score: positive when score >= this (stsb: default 4, 'mostly equivalent')",
    )
    parser.add_argument(
        "--target-precision", type=float, default=0.9, metavar="P", help="find the lowest threshold reaching this"
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, metavar="M", help="sentence-transformers name or local path")
    parser.add_argument("--backend", choices=CHOICES, default=DEFAULT_BACKEND, help="inference backend (default: auto)")
    parser.add_argument(
        "--out", default="calibration", metavar="PREFIX", help="writes PREFIX.csv and PREFIX.svg (default: calibration)"
    )
    return parser


def _options_error(args: argparse.Namespace) -> str | None:
    if not 0.0 < args.target_precision <= 1.0:
        return f"--target-precision must be in (0, 1], got {args.target_precision}"
    if args.positive_min is not None and not math.isfinite(args.positive_min):
        return f"--positive-min must be a number, got {args.positive_min}"
    error = model_error(args.model) or backend_error(args.backend)
    if error:
        return error
    folder = os.path.dirname(os.path.abspath(args.out))
    try:
        os.makedirs(folder, exist_ok=True)  # as batch's --output, a new folder is made
    except OSError as e:
        return f"--out {args.out!r}: cannot create folder {folder}: {e.strerror}"
    if not os.access(folder, os.W_OK):
        return f"--out {args.out!r}: folder {folder} is not writable"
    return None


def _fmt(value: float, digits: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def format_table(rows: list[tuple[Cut, str]]) -> str:
    """The cuts as an aligned table, one per line, each followed by its note."""
    lines = [f"{'threshold':>9} {'precision':>9} {'recall':>7} {'F1':>6} {'predicted':>9}"]
    for cut, note in rows:
        lines.append(
            f"{cut.threshold:9.4f} {_fmt(cut.precision, 3):>9} {cut.recall:7.3f} {cut.f1:6.3f} "
            f"{cut.predicted_positive:9d}{'  <- ' + note if note else ''}"
        )
    return "\n".join(lines)


def write_curve_csv(curve: Curve, path: str) -> None:
    """One row per threshold, full float precision (a threshold can be passed back to ``--threshold`` as is)."""
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(CURVE_COLUMNS)
        for i in range(len(curve.threshold)):
            writer.writerow(curve.cut(i))


def write_curve_svg(
    curve: Curve, best: Cut, target: Cut | None, target_precision: float, title: str, path: str
) -> None:
    """Precision, recall and F1 against the threshold with the best-F1 and target-precision cuts marked, as an SVG
    file (:func:`semsim_core.svg_charts.calibration_svg`)."""
    markers = [Marker(best.threshold, f"best F1 {best.f1:.3f}")]
    if target is not None:
        markers.append(Marker(target.threshold, f"precision >= {target_precision:g}"))
    svg = calibration_svg(
        curve.threshold, curve.precision, curve.recall, curve.f1, title=f"Calibration: {title}", markers=markers
    )
    with open(path, "w", encoding="utf-8") as f:
        f.write(svg + "\n")


def target_line(curve: Curve, target: Cut | None, target_precision: float) -> str:
    """The line that reports the target-precision cut, or says that no cut of ``curve`` reaches the target."""
    if target is None:
        best = int(np.nanargmax(curve.precision))
        return (
            f"precision >= {target_precision:g}: no threshold reaches it (highest precision "
            f"{curve.precision[best]:.3f}, at threshold {curve.threshold[best]:.4f})"
        )
    return f"precision >= {target_precision:g}: lowest threshold {target.threshold:.4f} ({_describe(target)})"


def _describe(cut: Cut) -> str:
    return (
        f"precision {cut.precision:.3f}, recall {cut.recall:.3f}, F1 {cut.f1:.3f}, "
        f"{cut.predicted_positive} predicted positive"
    )


def main(argv: list[str]) -> int:
    """Entry point: print the table and the chosen thresholds, write the curve; bad input prints one line, exit 2."""
    args = _parser().parse_args(argv)
    error = _options_error(args)
    if error is None:
        try:
            pairs = read_labeled_pairs(args.pairs, args.format, args.positive_min)
        except TableError as e:
            error = str(e)
    if error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return 2
    embedder = EmbedConfig(args.model, args.backend).load()
    scores = pair_cosines(embedder, pairs.first, pairs.second).astype(np.float64)
    curve = exact_curve(scores, pairs.labels)
    best = curve.cut(best_f1_index(curve.f1))
    target = target_precision_cut(curve, args.target_precision)
    grid = curve_at(scores, pairs.labels, GRID)
    rows = [(grid.cut(i), "") for i in range(len(GRID))] + [(best, "best F1")]
    if target is not None:
        rows.append((target, f"lowest with precision >= {args.target_precision:g}"))
    rows.sort(key=lambda row: row[0].threshold)
    print(f"{len(scores)} pairs, {int(pairs.labels.sum())} positive; model {args.model}, backend {embedder.backend}")
    print(format_table(rows))
    print(f"best F1: threshold {best.threshold:.4f} ({_describe(best)})")
    print(target_line(curve, target, args.target_precision))
    write_curve_csv(curve, f"{args.out}.csv")
    write_curve_svg(curve, best, target, args.target_precision, os.path.basename(args.pairs), f"{args.out}.svg")
    print(f"wrote {args.out}.csv ({len(curve.threshold)} thresholds) and {args.out}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
