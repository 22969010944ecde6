"""``semsim calibrate``: reading labeled pairs, the precision / recall / F1 curve, and the command on STS Benchmark."""

from __future__ import annotations

import csv
import re
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import numpy as np
import pytest

from pipelines.calibrate import CURVE_COLUMNS, target_line
from pipelines.cli import main
from semsim_core.calibration import GRID, read_labeled_pairs
from semsim_core.evaluation import pair_cosines
from semsim_core.ranking import best_f1_cut, best_f1_threshold, curve_at, exact_curve, target_precision_cut
from tests.conftest import REPO, STSB_DEV, write_jsonl

LABELED = REPO / "tests" / "data" / "sts_labeled_pairs.csv"
SEMSIM = str(Path(sys.executable).with_name("semsim"))
SVG = "{http://www.w3.org/2000/svg}"

# Seven pairs with cosines given by construction; four are positive.
SCORES = np.array([0.95, 0.90, 0.90, 0.80, 0.70, 0.60, 0.55])
LABELS = np.array([1, 1, 0, 1, 0, 1, 0], dtype=bool)


def labeled_rows() -> list[dict[str, str]]:
    with open(LABELED, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_curve_csv(path: Path) -> dict[str, np.ndarray]:
    with open(path, encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CURVE_COLUMNS
    return {column: np.array([float(row[column]) for row in rows]) for column in CURVE_COLUMNS}


def test_curve_by_hand():
    curve = curve_at(SCORES, LABELS, [0.5, 0.6, 0.85, 0.9, 0.96])
    assert curve.predicted_positive.tolist() == [7, 6, 3, 3, 0]
    assert curve.precision[:4].tolist() == [4 / 7, 4 / 6, 2 / 3, 2 / 3] and np.isnan(curve.precision[4])
    assert curve.recall.tolist() == [1.0, 1.0, 0.5, 0.5, 0.0]
    assert curve.f1.tolist() == pytest.approx([8 / 11, 8 / 10, 4 / 7, 4 / 7, 0.0], abs=1e-15)


def test_best_and_target_precision_cuts_by_hand():
    curve = exact_curve(SCORES, LABELS)
    assert curve.threshold.tolist() == [0.55, 0.60, 0.70, 0.80, 0.90, 0.95]
    best = best_f1_cut(SCORES, LABELS)
    assert (best.threshold, best.recall, best.predicted_positive) == (0.60, 1.0, 6)
    assert best.f1 == pytest.approx(0.8, abs=1e-15) and best.precision == pytest.approx(2 / 3, abs=1e-15)
    assert best_f1_threshold(SCORES, LABELS)[:2] == pytest.approx((best.threshold, best.f1), abs=1e-15)
    assert target_precision_cut(curve, 0.75).threshold == 0.80  # precision 3/4; 0.70 has 3/5
    assert target_precision_cut(curve, 1.0).threshold == 0.95
    unreachable = exact_curve(np.array([0.9, 0.8]), np.array([False, True]))
    assert target_precision_cut(unreachable, 0.6) is None
    assert target_line(unreachable, None, 0.6) == (
        "precision >= 0.6: no threshold reaches it (highest precision 0.500, at threshold 0.8000)"
    )


def test_csv_tsv_jsonl_and_graded_scores_read_the_same_pairs(tmp_path):
    rows = labeled_rows()
    with open(tmp_path / "pairs.tsv", "w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    jsonl = [{"text_a": r["text_a"], "text_b": r["text_b"], "label": int(r["label"])} for r in rows]
    write_jsonl(tmp_path / "pairs.jsonl", jsonl)
    expected = read_labeled_pairs(str(LABELED))
    assert len(expected.first) == 60 and int(expected.labels.sum()) == 16
    for path in (tmp_path / "pairs.tsv", tmp_path / "pairs.jsonl"):
        pairs = read_labeled_pairs(str(path))
        assert pairs.first == expected.first and pairs.second == expected.second
        assert pairs.labels.tolist() == expected.labels.tolist()
    graded = read_labeled_pairs(str(LABELED), "csv", positive_min=3.0)
    assert graded.labels.tolist() == [float(r["score"]) >= 3.0 for r in rows]


def test_stsb_files_are_detected_and_labeled_by_score():
    pairs = read_labeled_pairs(str(STSB_DEV))  # tab-separated although named .csv: auto reads it as stsb
    assert len(pairs.first) == 1500 and int(pairs.labels.sum()) == 264  # README: 264 paraphrases (gold >= 4)
    assert int(read_labeled_pairs(str(STSB_DEV), "stsb", positive_min=3.0).labels.sum()) > 264


@pytest.mark.parametrize(
    ("content", "flags", "message"),
    [
        ("text_a,text_b\nA girl is styling her hair.,A girl is brushing her hair.\n", [],
         "{path}: missing column(s) label (or a graded score column with --positive-min S)"),
        ("text_a,text_b,label\nA girl is styling her hair.,A girl is brushing her hair.,yes\n", [],
         "{path}:2: label 'yes' is not a number"),
        ("text_a,text_b,label\nA girl is styling her hair.,A girl is brushing her hair.,2\n", [],
         "{path}:2: label must be 0 or 1, got '2'"),
        ("text_a,text_b,score\nA girl is styling her hair.,A girl is brushing her hair.,high\n",
         ["--positive-min", "4"], "{path}:2: score 'high' is not a number"),
        ("", [], "{path}: no labeled pairs"),
        ("text_a,text_b,label\n", [], "{path}: no labeled pairs"),
        ("text_a,text_b,label\nA girl is styling her hair.,A girl is brushing her hair.,0\n", [],
         "{path}: no positive pair (label 1); recall needs at least one"),
        ("text_a,text_b,label\nA girl is styling her hair.,,1\n", [],
         "{path}:2: text_b must be a non-empty string, got ''"),
        ("text_a,text_b,label\nA girl is styling her hair.,A girl is brushing her hair.,1\n",
         ["--target-precision", "1.5"], "--target-precision must be in (0, 1], got 1.5"),
    ],
)  # fmt: skip
def test_bad_input_fails_with_one_line(tmp_path, capsys, content, flags, message):
    path = tmp_path / "pairs.csv"
    path.write_text(content, encoding="utf-8")
    assert main(["calibrate", "--pairs", str(path), "--out", str(tmp_path / "cal"), *flags]) == 2
    assert capsys.readouterr().err.splitlines() == [f"semsim calibrate: error: {message.format(path=path)}"]
    assert not list(tmp_path.glob("cal*"))


def test_bad_jsonl_fails_with_one_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"text_a": "A man is cutting a potato.", "label": 1}])
    done = subprocess.run([SEMSIM, "calibrate", "--pairs", str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"semsim calibrate: error: {path}:1: missing field(s) text_b (or a graded score column with --positive-min S)"
    ]


def test_cli_end_to_end_on_labeled_sts_rows(tmp_path, capsys, embedder):
    out = tmp_path / "runs" / "small"  # a folder that does not exist yet is made, as batch makes its --output
    assert main(["calibrate", "--pairs", str(LABELED), "--backend", "torch", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("60 pairs, 16 positive; model all-MiniLM-L6-v2, backend torch\n")
    assert "threshold precision  recall     F1 predicted" in printed and "<- best F1" in printed
    assert printed.endswith(f"and {out}.svg\n") and f"wrote {out}.csv (" in printed
    assert ElementTree.parse(f"{out}.svg").getroot().tag == f"{SVG}svg"
    written = read_curve_csv(Path(f"{out}.csv"))
    pairs = read_labeled_pairs(str(LABELED))
    expected = exact_curve(pair_cosines(embedder, pairs.first, pairs.second), pairs.labels)
    for column in CURVE_COLUMNS:
        assert written[column].tolist() == pytest.approx(getattr(expected, column).tolist(), abs=1e-6)


def test_sts_dev_curve_is_sensible_and_best_threshold_repeats(tmp_path, capsys):
    out = tmp_path / "dev"
    flags = ["--format", "stsb", "--positive-min", "4", "--backend", "torch", "--target-precision", "0.8"]
    assert main(["calibrate", "--pairs", str(STSB_DEV), *flags, "--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    table = lines[2 : lines.index(next(line for line in lines if line.startswith("best F1:")))]
    assert len(table) == len(GRID) + 2  # the grid, the best-F1 row and the target-precision row
    curve = read_curve_csv(Path(f"{out}.csv"))
    assert np.all(np.diff(curve["threshold"]) > 0)
    assert np.all(np.diff(curve["recall"]) <= 0) and np.all(np.diff(curve["predicted_positive"]) <= 0)
    for column in ("precision", "recall", "f1"):
        assert np.all((curve[column] >= 0) & (curve[column] <= 1))
    # the README's figures for STSb dev (the CLI's cut equals the library's: test_cli_end_to_end_on_labeled_sts_rows)
    printed_best = next(line for line in lines if line.startswith("best F1:"))
    threshold, f1 = (float(x) for x in re.match(r"best F1: threshold ([\d.]+) .*F1 ([\d.]+)", printed_best).groups())
    assert threshold == pytest.approx(0.806, abs=0.001) and f1 == pytest.approx(0.676, abs=0.001)
    assert any(line.startswith("precision >= 0.8: lowest threshold") for line in lines)

    chart = ElementTree.parse(f"{out}.svg").getroot()  # a standalone SVG file: the chart `semsim report` draws
    assert chart.findtext(f"{SVG}title") == "Calibration: sts-dev.csv"
    series = chart.findall(f".//{SVG}path[@class='series']")
    assert [line.findtext(f"{SVG}title") for line in series] == ["precision", "recall", "F1"]
    assert all(line.get("d").count("L") > 100 for line in series)
    markers = [label.text for label in chart.findall(f".//{SVG}text[@class='marker-label']")]
    assert markers == [f"best F1 {f1:.3f}", "precision >= 0.8"]
