"""``semsim batch --history``: day-by-day runs against a history store equal one full run; exact copies of stored
texts are not embedded again; a killed or failed run leaves the store as it was, and its rerun equals an
uninterrupted one."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import pytest

from pipelines.run_files import finish_promotions, staged_runs
from semsim_core.history import History
from semsim_core.report import load_run, render_html
from tests.conftest import (
    REPO,
    SAMPLE_PARAPHRASES,
    assert_invariants,
    run_batch,
    sample_titles,
    stsb_unique_sentences,
    write_jsonl,
)
from transforms.history_commit import FAIL_BEFORE_COMMIT

DAYS = 3
COPIES = 4  # day-3 records that copy a day-1 text
BRIDGE_SEARCH = 800  # STSb test sentences searched for a bridging triple
DAY_TIMES = ["2026-11-01T12:00:00Z", 1793620800, "2026-11-03T12:00:00"]  # ISO, Unix seconds, ISO without offset


def _days(tmp_path: Path) -> list[Path]:
    """A real slice cut into three days: Reddit titles, STSb paraphrase pairs whose two sides fall on different
    days, and on day 3 exact copies (new ids) of day-1 titles. Ids start with their day, so the earlier of two
    records also has the smaller id, as a full run's representative choice needs."""
    titles = sample_titles(150)
    with open(SAMPLE_PARAPHRASES, encoding="utf-8") as f:
        paraphrases = [json.loads(line) for line, _ in zip(f, range(40), strict=False)]
    days: list[list[dict]] = [[] for _ in range(DAYS)]
    for i, row in enumerate(titles):
        days[i % DAYS].append(row)
    for i in range(0, len(paraphrases), 2):
        first = (i // 2) % DAYS
        days[first].append(paraphrases[i])
        days[(first + 1) % DAYS].append(paraphrases[i + 1])
    copies = [{"id": f"copy-{row['id']}", "text": row["text"]} for row in days[0][:COPIES]]
    days[2].extend(copies)
    paths = []
    for day, rows in enumerate(days, start=1):
        dated = [{"id": f"d{day}-{row['id']}", "text": row["text"], "time": DAY_TIMES[day - 1]} for row in rows]
        paths.append(write_jsonl(tmp_path / f"day{day}.jsonl", dated))
    return paths


def _pair_set(pairs: pd.DataFrame) -> set[tuple[str, str, str]]:
    return set(zip(pairs["id_a"], pairs["id_b"], pairs["kind"], strict=True))


def _stored_partition(root: Path) -> set[frozenset[str]]:
    history = History(str(root))
    manifest = history.manifest()
    merges = history.cluster_merges(manifest)
    members: dict[str, set[str]] = {}
    for table in history.read_records(manifest, ["id", "cluster_id"]):
        for record_id, cluster in zip(table["id"].to_pylist(), table["cluster_id"].to_pylist(), strict=True):
            members.setdefault(merges.get(cluster, cluster), set()).add(record_id)
    return {frozenset(ids) for ids in members.values()}


def _partition(clusters: pd.DataFrame) -> set[frozenset[str]]:
    return {frozenset(group["id"]) for _, group in clusters.groupby("cluster_id")}


def _run_day(out: Path, history: Path, day: Path, *flags: str):
    return run_batch(
        out, "--input", str(day), "--history", str(history), "--cells", "4", "--time-field", "time", *flags
    )


class Days(NamedTuple):
    files: list[Path]  # the three days' inputs
    after: list[Path]  # the store after day 1 and after day 2 (tests copy what they change)
    runs: list  # the BatchRun of day 1 and day 2
    outputs: list[Path]


@pytest.fixture(scope="module")
def days(tmp_path_factory) -> Days:
    """Days 1 and 2 run once for this module's tests."""
    root = tmp_path_factory.mktemp("days")
    files = _days(root)
    after = [root / "after-day1", root / "after-day2"]
    outputs = [root / "out1", root / "out2"]
    runs = [_run_day(outputs[0], after[0], files[0])]
    shutil.copytree(after[0], after[1])
    cwd = os.getcwd()
    os.chdir(root)  # day 2 names its store by a relative path
    try:
        runs.append(_run_day(outputs[1], Path(after[1].name), files[1]))
    finally:
        os.chdir(cwd)
    return Days(files, after, runs, outputs)


def _copy(store: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(store, tmp_path / "history"))


def test_days_against_history_equal_one_full_run(tmp_path, days):
    history = _copy(days.after[1], tmp_path)
    runs = [*days.runs, _run_day(tmp_path / "out3", history, days.files[2])]
    for run in runs:
        assert_invariants(run)
    first, _, third = (run.summary.history for run in runs)
    assert first.created and first.records_before == 0
    assert third.records_before == runs[0].summary.accepted + runs[1].summary.accepted

    centroids = next(history.glob("centroids-*.npy"))
    margin = History(str(history)).manifest().margin
    assert margin == runs[0].summary.cell_margin > 0, "the store keeps the margin its first run tuned"
    inputs = [flag for day in days.files for flag in ("--input", str(day))]
    full = run_batch(tmp_path / "full", *inputs, "--centroids", str(centroids), "--cell-margin", str(margin))
    daily_pairs = pd.concat([run.pairs for run in runs])
    assert _pair_set(daily_pairs) == _pair_set(full.pairs)
    assert full.summary.semantic_pairs >= 10  # paraphrase pairs across days, mostly
    scores = daily_pairs.merge(full.pairs, on=["id_a", "id_b"], suffixes=("_day", "_full"))
    assert (scores["score_day"] - scores["score_full"]).abs().max() < 1e-5
    assert _stored_partition(history) == _partition(full.clusters)
    assert sum(run.summary.history.pairs_with_history for run in runs) > 0

    # Exact copies: paired with the stored record by text hash, never embedded again.
    assert third.exact_matches == COPIES
    copies = runs[2].pairs[runs[2].pairs["id_b"].str.startswith("d3-copy-")]
    assert len(copies) == COPIES and set(copies["kind"]) == {"exact"}
    assert copies["id_a"].str.startswith("d1-").all()
    assert runs[2].summary.embedded == runs[2].summary.accepted - COPIES

    info = History(str(history)).info()
    assert info["records"] == full.summary.accepted and info["segments"] == DAYS
    stored = History(str(history))
    times = pd.concat(t.to_pandas() for t in stored.read_records(stored.manifest(), ["id", "event_time"]))
    days_seen = times.groupby(times["id"].str[:2])["event_time"].unique()
    assert {day: [str(t) for t in seen] for day, seen in days_seen.items()} == {
        "d1": ["2026-11-01 12:00:00+00:00"], "d2": ["2026-11-02 12:00:00+00:00"], "d3": ["2026-11-03 12:00:00+00:00"]
    }  # fmt: skip


def _store_state(root: Path) -> tuple[bytes, set[frozenset[str]]]:
    return (root / "manifest.json").read_bytes(), _stored_partition(root)


def _outputs(out: Path) -> tuple[set, set]:
    return _pair_set(pd.read_parquet(out / "pairs")), _partition(pd.read_parquet(out / "clusters"))


def test_killed_or_failed_runs_leave_the_store_as_it_was(tmp_path, monkeypatch, days):
    day2 = days.files[1]
    history = _copy(days.after[0], tmp_path)
    before = _store_state(history)

    # Killed once its new vectors are in the store's cells, not yet committed.
    committed = set(History(str(history)).manifest().files("cell="))
    # fp32 onnx: loads from the cache without sentence-transformers (the run is killed; its backend is not the subject)
    command = [sys.executable, "-m", "pipelines.batch_dedup", "--backend", "onnx", "--cells", "4"]
    command += ["--input", str(day2), "--history", str(history), "--output", str(tmp_path / "killed")]
    command += ["--time-field", "time"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        parts = {str(p.relative_to(history)) for p in history.glob("cell=*/*.parquet")}
        if parts - committed:
            break
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it wrote its cell parts"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert _store_state(history) == before
    assert History(str(history)).info()["orphans"]  # the dead run's parts, invisible to readers

    # Failed between writing everything (summary included) and committing; once as a run replacing another
    # (--overwrite): its staged run is not moved in by the next launch, as the store never got it.
    monkeypatch.setenv(FAIL_BEFORE_COMMIT, "1")
    with pytest.raises(Exception, match=FAIL_BEFORE_COMMIT):
        _run_day(tmp_path / "failed", history, day2)
    replaced = Path(shutil.copytree(days.outputs[0], tmp_path / "replaced"))
    with pytest.raises(Exception, match=FAIL_BEFORE_COMMIT):
        _run_day(replaced, history, day2, "--overwrite")
    monkeypatch.delenv(FAIL_BEFORE_COMMIT)
    assert _store_state(history) == before and History(str(history)).lock_holder() is None
    assert staged_runs(str(replaced)), "the failed run's staged outputs, summary included"
    finish_promotions(str(replaced), discard_unfinished=False)
    assert _outputs(replaced) == _outputs(days.outputs[0]), "the earlier run stays: the store never got this one"
    finish_promotions(str(replaced), discard_unfinished=True)
    assert not staged_runs(str(replaced))

    # The rerun (over the killed run's lock and outputs) equals the uninterrupted run.
    rerun = _run_day(tmp_path / "killed", history, day2, "--overwrite")
    assert_invariants(rerun)
    assert _outputs(tmp_path / "killed") == _outputs(days.outputs[1])
    assert _stored_partition(history) == _stored_partition(days.after[1])


def test_bad_history_is_one_error_line_and_changes_nothing(tmp_path, capsys, days):
    from pipelines.cli import main

    day2 = days.files[1]
    history = _copy(days.after[0], tmp_path)
    before = _store_state(history)
    manifest = json.loads((history / "manifest.json").read_bytes())

    def refused(change, expected: str, mid_run: bool = False) -> None:
        change()
        out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
        argv = ["batch", "--input", str(day2), "--history", str(history), "--output", str(out), "--backend", "torch"]
        argv += ["--time-field", "time"]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert (mid_run or len(err) == 1) and expected in err[-1], "\n".join(err)  # mid-run, after Beam's own log
        assert err[-1].startswith("semsim batch: error: history ")
        (history / "manifest.json").write_bytes(before[0])
        assert _store_state(history) == before

    def write_manifest(**changes) -> None:
        (history / "manifest.json").write_text(json.dumps({**manifest, **changes}))

    refused(lambda: write_manifest(dim=768), "dim")
    refused(lambda: write_manifest(model="other-model", fingerprint="0" * 20), "other-model")
    refused(lambda: write_manifest(schema_version=99), "newer semsim")
    refused(lambda: History(str(history)).lock("another run"), "locked by another run")
    History(str(history)).unlock()
    part = history / manifest["segments"][0]["files"][0]
    saved = part.read_bytes()
    refused(part.unlink, "missing")
    part.write_bytes(b"not parquet")
    refused(lambda: None, "corrupt")
    part.write_bytes(saved)
    # Damaged inside, footers intact: found when the cells are read, mid-run; still one line, the store untouched.
    cells = {history / f: (history / f).read_bytes() for s in manifest["segments"] for f in s["files"] if "cell=" in f}
    for path, data in cells.items():
        footer = 8 + int.from_bytes(data[-8:-4], "little")
        path.write_bytes(data[:4] + bytes(b ^ 0xFF for b in data[4:-footer]) + data[-footer:])
    refused(lambda: None, "is corrupt: Couldn't deserialize thrift", mid_run=True)
    for path, data in cells.items():
        path.write_bytes(data)
    # A store that cannot be created (also as root, whom file modes do not stop): /proc takes no new folders.
    argv = ["batch", "--input", str(day2), "--history", "/proc/semsim-history", "--output", str(tmp_path / "proc")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to history /proc/semsim-history" in err[0], "\n".join(err)
    if os.geteuid() != 0:
        history.chmod(0o500)
        try:
            refused(lambda: None, "cannot write")
        finally:
            history.chmod(0o755)


def _bridge(sentences: list[str], vectors, threshold: float) -> tuple[list[str], dict[str, float]]:
    """Real STSb sentences a, b, c with b a duplicate of both a and c, which are not duplicates of each other (each
    cosine at least 0.01 from the threshold, so every float kernel agrees), and the fp32 cosines of b with a and c."""
    sims = vectors @ vectors.T
    for b in range(len(sentences)):
        near = [i for i in range(len(sentences)) if i != b and sims[b, i] >= threshold + 0.01]
        for a in near:
            for c in near:
                if a < c and sims[a, c] < threshold - 0.01:
                    return [sentences[i] for i in (a, b, c)], {"a": float(sims[a, b]), "c": float(sims[c, b])}
    raise AssertionError("no bridging triple in the STSb test sentences")


def test_a_first_run_that_accepts_no_record_creates_no_store(tmp_path):
    """Only bad records on a store's first run: the dead letters are written and the store is left uncreated (it
    would have no centroids); the next run creates it."""
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a"}\n{"id": "b", "text": " "}\n', encoding="utf-8")
    store = tmp_path / "history"
    nothing = run_batch(tmp_path / "out1", "--input", str(bad), "--history", str(store))
    assert_invariants(nothing)
    assert nothing.summary.dead_letters == 2 and nothing.summary.history.records_added == 0
    assert not nothing.summary.history.created and not History(str(store)).exists()
    assert History(str(store)).lock_holder() is None
    titles = write_jsonl(tmp_path / "titles.jsonl", sample_titles(30))
    first = run_batch(tmp_path / "out2", "--input", str(titles), "--history", str(store))
    assert first.summary.history.created and first.summary.history.records_added == 30
    assert History(str(store)).manifest().version == 1


def test_a_record_that_joins_two_stored_clusters_merges_them(tmp_path, embedder):
    """Also: with an approximate backend and a band that holds both pairs, the stored texts are embedded again with
    fp32 and the pairs carry fp32 scores."""
    sentences = stsb_unique_sentences()[:BRIDGE_SEARCH]
    (a, b, c), fp32 = _bridge(sentences, embedder.encode(sentences), 0.8)
    history = tmp_path / "history"
    first = write_jsonl(tmp_path / "day1.jsonl", [{"id": "a", "text": a}, {"id": "c", "text": c}])
    second = write_jsonl(tmp_path / "day2.jsonl", [{"id": "b", "text": b}])
    day1 = run_batch(tmp_path / "out1", "--input", str(first), "--history", str(history))
    assert set(day1.clusters["cluster_id"]) == {"a", "c"}
    band = ("--backend", "onnx-int8", "--rescore-band", "0.2")
    day2 = run_batch(tmp_path / "out2", "--input", str(second), "--history", str(history), *band)
    assert_invariants(day2)
    assert day2.summary.rescored_pairs == 2 and day2.summary.rescored_texts == 3  # b, and the stored a and c
    scores = dict(zip(day2.pairs["id_a"], day2.pairs["score"], strict=True))
    assert abs(scores["a"] - fp32["a"]) < 1e-5 and abs(scores["b"] - fp32["c"]) < 1e-5
    assert day2.clusters.to_dict("records") == [
        {"id": "b", "cluster_id": "a", "is_representative": False, "cluster_size": 3}
    ]
    changes = pd.read_parquet(tmp_path / "out2" / "cluster_changes")
    assert changes.to_dict("records") == [{"id": "c", "cluster_id": "a", "previous_cluster_id": "c"}]
    assert day2.summary.history.cluster_changes == 1 and day2.summary.history.pairs_with_history == 2
    assert _stored_partition(history) == {frozenset({"a", "b", "c"})}
    History(str(history)).compact("test")
    assert _stored_partition(history) == {frozenset({"a", "b", "c"})}
    assert History(str(history)).cluster_merges(History(str(history)).manifest()) == {}


def _kept_so_far(outputs: list[Path]) -> set[str]:
    """The deduplicated corpus after several history runs: every run's deduplicated/ ids less every run's removed/."""
    kept = set().union(*(pd.read_parquet(out / "deduplicated", columns=["id"])["id"] for out in outputs))
    return kept - set().union(*(pd.read_parquet(out / "removed", columns=["id"])["id"] for out in outputs))


def test_the_kept_record_is_the_earliest_across_days(tmp_path, capsys):
    """Real reposts over two days: a day-2 post that is older than the day-1 cluster it joins becomes the kept
    record, while the stored cluster keeps its id; the stored record it replaces is in day 2's removed/, so the days'
    deduplicated/ less their removed/ is one full run's deduplicated/. The store holds its policy for every run."""
    from pipelines.cli import main

    posts = {row["id"]: row for row in map(json.loads, (REPO / "tests/data/reddit_reposts.jsonl").open())}
    late = ["nn8r5", "ui51l"]  # 2011 and June 2012: older than what they join
    day1 = write_jsonl(tmp_path / "day1.jsonl", [row for key, row in posts.items() if key not in late])
    day2 = write_jsonl(tmp_path / "day2.jsonl", [posts[key] for key in late])
    history = tmp_path / "history"
    fields = ("--text-field", "title", "--time-field", "created_utc", "--write-deduplicated")
    flags = ("--history", str(history), *fields)
    first = run_batch(tmp_path / "out1", "--input", str(day1), *flags)
    assert_invariants(first)
    assert first.summary.keep == json.loads((history / "manifest.json").read_text())["keep"] == "earliest"
    cluster_of = first.clusters.set_index("id")["cluster_id"]
    assert cluster_of["18uj93"] == cluster_of["vll13"] == "vll13" and cluster_of["12771e"] == "12771e"

    second = run_batch(tmp_path / "out2", "--input", str(day2), *flags)  # no --keep: the store's
    assert_invariants(second)
    rows = second.clusters.set_index("id")
    # the stored clusters keep their ids; their kept records are now the older posts of day 2 (first-id would
    # have kept the stored 18uj93 and 12771e, whose ids sort first)
    assert rows.loc["nn8r5", "cluster_id"] == "vll13" and rows.loc["ui51l", "cluster_id"] == "12771e"
    assert rows.loc["nn8r5", "is_representative"] and rows.loc["ui51l", "is_representative"]
    assert rows.loc["nn8r5", "cluster_size"] == 3
    # the records they replace as kept: vll13 reaches nn8r5 through 18uj93, its stored cluster-mate (nn8r5 and
    # vll13 score under the threshold); 12771e is an exact copy of ui51l
    assert second.summary.history.demoted == 2 and second.summary.deduplicated == 2
    removed = second.removed.set_index("id")
    assert removed.loc["vll13", "kept_id"] == "nn8r5" and list(removed.loc["vll13", "via"]) == [
        "vll13",
        "18uj93",
        "nn8r5",
    ]
    assert removed.loc["vll13", "kind"] == "semantic"
    assert removed.loc["vll13", "score"] == second.pairs.set_index(["id_a", "id_b"]).loc[("18uj93", "nn8r5"), "score"]
    assert removed.loc["12771e"].to_dict() | {"via": list(removed.loc["12771e", "via"])} == {
        "kept_id": "ui51l", "score": 1.0, "kind": "exact", "via": ["12771e", "ui51l"]
    }  # fmt: skip
    full = run_batch(tmp_path / "full", "--input", str(day1), "--input", str(day2), *fields)
    assert _kept_so_far([tmp_path / "out1", tmp_path / "out2"]) == set(full.clusters.query("is_representative")["id"])
    page = render_html(load_run(tmp_path / "out2", examples=4, top_clusters=2))
    assert "0 of 2 accepted records (0.0%) were removed, and 2 stored records that earlier runs kept are kept" in page
    assert 'class="bad"' not in page, "every check of the report holds"

    out = tmp_path / "out3"
    capsys.readouterr()
    argv = ["batch", "--input", str(day2), "--output", str(out), "--backend", "torch", *flags, "--keep", "first-id"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"semsim batch: error: history {history} keeps the earliest record of each cluster; --keep "
                   "first-id would choose differently across days (omit --keep, or start a new store)"]  # fmt: skip
    assert main([*argv[:-2], "--history-dtype", "float16"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"semsim batch: error: history {history} keeps float32 embeddings; --history-dtype float16 sets that for a "
        "new store only (omit it, or start a new store)"
    )


def test_the_kept_record_is_the_longest_across_days(tmp_path):
    """A store created with --keep longest keeps each record's text length: a longer near copy on day 2 replaces
    the stored record as kept."""
    posts = {row["id"]: row for row in map(json.loads, (REPO / "tests/data/reddit_reposts.jsonl").open())}
    short, longer = "vj200", "1edyye"  # "There once was a man from Nantucket", and the same with "..."
    history = tmp_path / "history"
    flags = ("--history", str(history), "--text-field", "title", "--keep", "longest")
    run_batch(tmp_path / "out1", "--input", str(write_jsonl(tmp_path / "day1.jsonl", [posts[short]])), *flags)
    second = run_batch(
        tmp_path / "out2", "--input", str(write_jsonl(tmp_path / "day2.jsonl", [posts[longer]])), *flags[:4]
    )
    assert_invariants(second)
    assert second.summary.keep == "longest" and second.summary.history.demoted == 1
    assert second.clusters.to_dict("records") == [
        {"id": longer, "cluster_id": short, "is_representative": True, "cluster_size": 2}
    ]
    assert second.removed[["id", "kept_id"]].to_dict("records") == [{"id": short, "kept_id": longer}]
    stored = History(str(history))
    lengths = pd.concat(t.to_pandas() for t in stored.read_records(stored.manifest(), ["id", "text_length"]))
    assert dict(zip(lengths["id"], lengths["text_length"], strict=True)) == {
        short: len(posts[short]["title"]), longer: len(posts[longer]["title"])
    }  # fmt: skip
