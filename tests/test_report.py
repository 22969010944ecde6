"""``semsim report``: a real batch run reported and rendered in headless Chromium (selenium), and the pure parts."""

from __future__ import annotations

import dataclasses
import html
import io
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.fs as pafs
import pytest
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from pipelines.cli import main
from semsim_core.report import (
    ClusterExample,
    ClusterMember,
    Histogram,
    Link,
    Reason,
    RemovalExample,
    ReportError,
    RunFolder,
    RunReport,
    load_run,
    log2_edges,
    reason_labels,
    render_html,
    score_histogram,
    size_histogram,
)
from semsim_core.run_layout import ReadSpec, Summary
from semsim_core.svg_charts import bar_list_svg, line_chart_svg, linear_ticks, log_ticks
from tests.conftest import SAMPLE_PARAPHRASES, BatchRun, assert_invariants, run_batch, sample_titles, write_jsonl

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"  # Debian: scripts/setup-chromium.sh
INJECTED = '<script>console.error("injected")</script><img src=x onerror="console.error(1)"> Free crypto giveaway'
# The README's STSb dev figures (precision, recall at 0.75 .. 0.90 of 264 paraphrases) as `semsim calibrate` writes them
CALIBRATION_CSV = """threshold,precision,recall,f1,predicted_positive
0.75,0.48,0.88,0.621,484
0.80,0.58,0.80,0.670,364
0.85,0.66,0.63,0.645,252
0.90,0.74,0.43,0.544,153
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> tuple[Path, Path, BatchRun]:
    """A real batch run (bundled model, torch backend) over sample titles, STSb paraphrases, copies and bad lines."""
    folder = tmp_path_factory.mktemp("report")
    titles = sample_titles(150)
    paraphrases = [json.loads(line) for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:40]]
    copies = [{"id": f"copy-{k}", "text": variant} for k, variant in enumerate(_variants(titles[0]["text"], 6))]
    injected = [{"id": f"spam-{k}", "text": variant} for k, variant in enumerate(_variants(INJECTED, 4))]
    rows = titles + paraphrases + copies + injected + [{"id": "copy-0", "text": "a repeated id"}, {"id": "no-text"}]
    data = write_jsonl(folder / "in.jsonl", rows)
    with open(data, "a", encoding="utf-8") as f:
        f.write('{"id": "broken", "text": "unterminated\n')
    out = folder / "out"
    batch = run_batch(out, "--input", str(data), "--backend", "torch", "--recall-sample", "20")
    (out / "stsb_dev_calibration.csv").write_text(CALIBRATION_CSV, encoding="utf-8")
    return data, out, batch


def _variants(text: str, n: int) -> list[str]:
    """``n`` texts equal to ``text`` after normalisation (case, outer and inner whitespace)."""
    return [text, text.upper(), "  " + text, text.replace(" ", "\t"), text.lower(), text + " "][:n]


@pytest.fixture
def chromium(tmp_path, monkeypatch) -> Iterator[webdriver.Chrome]:
    """Headless Chromium driven by chromedriver; on teardown every process it started must be gone."""
    for binary in (CHROMIUM, CHROMEDRIVER):
        if not Path(binary).exists():
            pytest.fail(
                f"{binary} not found: run scripts/setup-chromium.sh (Debian packages chromium, chromium-driver)"
            )
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager, if consulted, must not go online
    monkeypatch.setenv("SE_AVOID_STATS", "true")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run"]
    for flag in [*flags, f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,2000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    started = psutil.Process(driver.service.process.pid)
    try:
        yield driver
    finally:
        processes = [started, *started.children(recursive=True)]
        driver.quit()
        _, alive = psutil.wait_procs(processes, timeout=10)
        for process in alive:
            process.kill()
        assert not alive, f"processes left running after quit: {alive}"


def test_report_reads_a_run_on_any_filesystem(run_dir, tmp_path, capsys):
    """`semsim report` takes the run as a URI (file:// here; gs:// the same way) and reads it through pyarrow's
    filesystems: the run copied into pyarrow's in-memory filesystem reads as the local one does."""
    data, out, _ = run_dir
    page = tmp_path / "page.html"
    assert main(["report", out.as_uri(), "--input", str(data), "--html", str(page)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {page} (") and "Recall and calibration" in page.read_text()

    memory = pafs._MockFileSystem()
    pafs.copy_files(str(out), "/runs/out", destination_filesystem=memory)
    remote, local = load_run(RunFolder("/runs/out", memory)), load_run(out)
    assert remote.out_dir == "/runs/out"
    assert render_html(dataclasses.replace(remote, out_dir=local.out_dir)) == render_html(local), "the same page"
    assert [c.name for c in remote.calibrations] == ["stsb_dev_calibration.csv"]
    with pytest.raises(ReportError, match="output folder '/runs/gone' does not exist"):
        load_run(RunFolder("/runs/gone", memory))


def test_report_of_a_real_run_renders_in_chromium(run_dir, chromium, capsys):
    data, out, batch = run_dir
    assert_invariants(batch)
    started = time.perf_counter()
    assert main(["report", str(out), "--input", str(data), "--examples", "4", "--top-clusters", "5"]) == 0
    elapsed = time.perf_counter() - started
    page = out / "report.html"
    assert capsys.readouterr().out.startswith(f"wrote {page} (")
    print(f"semsim report: {elapsed:.2f} s, {page.stat().st_size / 1024:.0f} KiB")

    chromium.get(page.as_uri())
    png = chromium.get_screenshot_as_png()
    errors = [entry for entry in chromium.get_log("browser") if entry["level"] == "SEVERE"]

    assert errors == []
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 20_000
    assert len(Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 20)) > 20
    assert chromium.title == f"semsim report: {out}"
    assert chromium.find_elements(By.TAG_NAME, "script") == [] and chromium.find_elements(By.TAG_NAME, "img") == []
    charts = chromium.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4 and all(c.size["width"] > 300 and c.size["height"] > 100 for c in charts)

    semantic = batch.pairs[batch.pairs["kind"] == "semantic"]
    bars = chromium.find_elements(By.CSS_SELECTOR, "#scores svg rect.bar")
    assert 0 < len(bars) <= len(semantic) and all(b.size["height"] > 0 for b in bars)
    assert chromium.find_element(By.CSS_SELECTOR, "#scores svg line.marker").size["height"] > 200
    assert "threshold 0.8" in chromium.find_element(By.CSS_SELECTOR, "#scores svg .marker-label").text
    assert len(chromium.find_elements(By.CSS_SELECTOR, "#cluster-sizes svg rect.bar")) >= 3
    reasons = chromium.find_elements(By.CSS_SELECTOR, "#dead-letters svg rect.bar")
    assert len(reasons) == 3, "malformed JSON, missing field 'text', duplicate id"
    lines = chromium.find_elements(By.CSS_SELECTOR, "#quality svg path.series")
    assert len(lines) == 3 and all(line.get_attribute("d").count("L") >= 2 for line in lines)

    clusters = chromium.find_elements(By.CSS_SELECTOR, "#largest-clusters .cluster")
    assert len(clusters) == 5
    assert clusters[0].find_element(By.TAG_NAME, "h3").text.startswith("copy-0: 7 records")
    first_texts = [td.text for td in clusters[0].find_elements(By.CSS_SELECTOR, "td.text")]
    assert len(first_texts) == 4 and first_texts[0] == sample_titles(1)[0]["text"]
    spam = next(c for c in clusters if c.find_element(By.TAG_NAME, "h3").text.startswith("spam-0"))
    assert spam.find_element(By.CSS_SELECTOR, "td.text").text == INJECTED
    assert "pair recall" in chromium.find_element(By.ID, "quality").text
    shown = chromium.find_element(By.ID, "summary").text
    assert f"wall time\n{batch.summary.wall_seconds:,.1f} s" in shown and "Embed\n" in shown

    removed = batch.summary.accepted - batch.summary.clusters
    note = chromium.find_element(By.CSS_SELECTOR, "#removed p.note").text
    share = f"{removed} of {batch.summary.accepted} accepted records ({removed / batch.summary.accepted:.1%})"
    assert note.startswith(share)
    rows = chromium.find_elements(By.CSS_SELECTOR, "#removed table.removals tbody tr")
    assert len(rows) == 8, "twice --examples, spread over the scores"
    scores = [float(row.find_elements(By.TAG_NAME, "td")[4].text) for row in rows]
    assert scores == sorted(scores, reverse=True) and scores[0] == 1.0 and scores[-1] < 0.9
    text_of: dict[str, str] = {}
    for line in data.read_text(encoding="utf-8").splitlines()[:-1]:  # the last line is broken JSON
        record = json.loads(line)
        text_of.setdefault(record["id"], " ".join(record.get("text", "").split()))  # a repeated id: the first
    for row in rows:  # kept text and removed text side by side, both read back from --input
        cells = [" ".join(td.text.split()) for td in row.find_elements(By.TAG_NAME, "td")]
        assert cells[1] == text_of[cells[0]] and cells[3] == text_of[cells[2]]


def test_example_texts_come_from_the_input_recorded_in_the_summary(run_dir, tmp_path, capsys):
    _, out, _ = run_dir
    page = tmp_path / "report.html"
    assert main(["report", str(out), "--html", str(page)]) == 0
    assert html.escape(sample_titles(1)[0]["text"]) in page.read_text(encoding="utf-8")

    moved = tmp_path / "moved"
    shutil.copytree(out, moved, ignore=shutil.ignore_patterns("report.html"))
    summary = json.loads((moved / "summary.json").read_text())
    summary["read"]["input"] = [str(tmp_path / "gone.jsonl")]
    (moved / "summary.json").write_text(json.dumps(summary))
    capsys.readouterr()
    assert main(["report", str(moved)]) == 0  # ids only, and says why
    assert "no example texts" in capsys.readouterr().err
    assert html.escape(sample_titles(1)[0]["text"]) not in (moved / "report.html").read_text(encoding="utf-8")


def test_figures_match_the_parquet_outputs(run_dir):
    _, out, batch = run_dir
    run = load_run(out, examples=3, top_clusters=2)
    semantic = batch.pairs.loc[batch.pairs["kind"] == "semantic", "score"].to_numpy()
    assert np.array_equal(run.scores.counts, np.histogram(semantic, bins=run.scores.edges)[0])
    sizes = batch.clusters.loc[batch.clusters["is_representative"], "cluster_size"].to_numpy()
    assert np.array_equal(run.sizes.counts, np.histogram(sizes, bins=run.sizes.edges)[0])
    assert [(c.cluster_id, c.size, len(c.members)) for c in run.largest][0] == ("copy-0", 7, 3)
    assert all(m.text is None for c in run.largest for m in c.members), "no --input, no texts"
    assert run.largest[0].members[1].link == Link("copy-0", 1.0, "exact")
    counted = {r.reason: r.count for r in run.reasons}
    assert counted == {"duplicate id": 1, "malformed JSON": 1, "missing field 'text'": 1}
    assert run.summary.recall.queries == 20 and [c.name for c in run.calibrations] == ["stsb_dev_calibration.csv"]


def test_score_histogram_counts_equal_numpy():
    rng = np.random.default_rng(7)
    scores = np.concatenate([rng.uniform(0.8, 1.0, 5000), [0.8, 1.0, 1.0000001]]).astype(np.float32)
    hist = score_histogram(scores, threshold=0.8)
    assert hist.edges[0] == pytest.approx(0.75) and hist.edges[-1] == 1.0 and len(hist.counts) == 50
    assert np.array_equal(hist.counts, np.histogram(np.minimum(scores, 1.0), bins=hist.edges)[0])
    assert hist.counts.sum() == len(scores)
    assert score_histogram(np.array([0.62], np.float32), threshold=0.7).edges[0] == pytest.approx(0.55)


def test_cluster_sizes_in_log2_bins():
    assert log2_edges(1).tolist() == [1, 2]
    assert log2_edges(8).tolist() == [1, 2, 4, 8, 16]
    sizes = np.array([1, 1, 1, 2, 3, 4, 7, 8, 100])
    hist = size_histogram(sizes)
    assert hist.edges.tolist() == [1, 2, 4, 8, 16, 32, 64, 128]
    assert hist.counts.tolist() == [3, 2, 2, 1, 0, 0, 1] == np.histogram(sizes, bins=hist.edges)[0].tolist()
    assert log_ticks(0.5, 2000) == [1, 10, 100, 1000] and log_ticks(1, 8) == [1, 2, 5]
    assert linear_ticks(0.75, 1.0) == [0.75, 0.8, 0.85, 0.9, 0.95, 1.0]


def test_dead_letter_errors_become_countable_reasons():
    errors = [
        "duplicate id 'j1' (first seen at /data/a.jsonl:1)",
        "malformed JSON: Expecting ',' delimiter at column 12",
        "field 'text' is 4000 bytes, over the cap of 3000 (--max-text-bytes)",
        "invalid UTF-8 at byte 25",
    ]
    assert reason_labels(pa.array(errors)).to_pylist() == [
        "duplicate id",
        "malformed JSON",
        "field 'text' is N bytes, over the cap of N",
        "invalid UTF-8 at byte N",
    ]


def test_user_text_is_escaped():
    script = '<script>alert("x")</script>'
    run = RunReport(
        out_dir=f"/runs/{script}",
        summary=Summary(
            threshold=0.8,
            model=script,
            input_embeddings=None,
            backend_requested="torch",
            rescore_band=0.0,
            cluster_method="components",
            runner=script,
            read=ReadSpec(None, None, "id", "text", 100),
            outputs={},
            inputs=2,
            accepted=1,
            dead_letters=1,
            clusters=1,
        ),
        scores=Histogram(np.linspace(0.75, 1, 51), np.zeros(50, np.int64)),
        sizes=Histogram(np.array([1.0, 2.0, 4.0]), np.array([0, 1])),
        cluster_rows=1,
        dead_letter_rows=1,
        largest=[ClusterExample(script, 2, [ClusterMember(script, True, script, Link(f"{script}2", 0.9, "semantic"))])],
        removals=[RemovalExample(script, script, 0.9, "semantic", [script, "b", script], script, script)],
        removed_rows=1,
        reasons=[Reason(script, 1, script, script, script)],
        calibrations=[],
        texts_looked_up=True,
    )
    page = render_html(run)
    assert "<script" not in page and page.count("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;") >= 12
    assert "<script" not in bar_list_svg([script], [3], title=script, x_label=script)


def test_bad_input_one_line_exit_2(tmp_path, capsys):
    missing = tmp_path / "missing"
    assert main(["report", str(missing)]) == 2
    assert capsys.readouterr().err.splitlines() == [f"semsim report: error: output folder '{missing}' does not exist"]
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith(f"semsim report: error: '{tmp_path / 'summary.json'}' not found")


def test_a_missing_value_breaks_the_line():
    chart = line_chart_svg(
        [0.7, 0.8, 0.9, 1.0], {"precision": [0.5, float("nan"), 0.7, 0.8]}, title="t", x_label="x", y_label="y"
    )
    path = chart.split('class="series" d="')[1].split('"')[0]
    assert path.count("M") == 2 and path.count("L") == 1
