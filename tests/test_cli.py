"""The ``semsim`` command and ``python -m pipelines.batch_dedup`` as a user runs them."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipelines.cli import main
from semsim_core.embedder import DEFAULT_MODEL, resolve_model
from tests.conftest import REPO, SAMPLE_PARAPHRASES, STSB_TEST, sample_titles, write_jsonl

LABELED_PAIRS = REPO / "tests" / "data" / "sts_labeled_pairs.csv"

SEMSIM = str(Path(sys.executable).with_name("semsim"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--threshold", "0"], "--threshold must be in (0, 1], got 0.0"),
        (["--threshold", "1.01"], "--threshold must be in (0, 1], got 1.01"),
        (["--input", "/nonexistent/*.jsonl"], "--input '/nonexistent/*.jsonl' matches no file"),
        (
            ["--input", "/no/d[1].jsonl"],
            "--input '/no/d[1].jsonl' matches no file ([ and ] are glob characters: write [[] for a literal [)",
        ),
        (["--model", "/nonexistent/model"], "model path '/nonexistent/model' does not exist"),
        (["--batch-size", "0"], "--batch-size must be a positive integer, got 0"),
        (["--history-dtype", "float16"], "--history-dtype float16 sets how a new --history store keeps embeddings"),
        (["--keep", "earliest"], "--keep earliest needs --time-field (the input field with each record's time)"),
        (["--treshold", "0.99"], "unknown flag --treshold (did you mean --threshold?)"),
        (["--retention", "30d"], "unknown flag --retention (did you mean --region?)"),  # a stream flag
        (["0.9"], "unexpected argument '0.9' (every value follows its flag: --flag value)"),
        (["--target-recall", "0"], "--target-recall must be in (0, 1], got 0.0"),
        (["--hdbscan-min-cluster-size", "1"], "--hdbscan-min-cluster-size must be at least 2, got 1"),
        (["--runner", "FooRunner"], "--runner FooRunner: Unexpected pipeline runner: FooRunner. Valid values are "),
        (["--runner", "foo.BarRunner"], "--runner foo.BarRunner: No module named 'foo'"),
        (["--direct_num_workers", "-2"], "--direct_num_workers must not be negative (0: one per core), got -2"),
        (["--dry_run", "true"], "--dry_run only describes a Dataflow job: FnApiRunner would run this one"),
        (
            ["--runner", "PortableRunner", "--job_endpoint", "localhost:1"],
            "--job_endpoint localhost:1: no job service answered in 10 s; start one (deploy/flink/, deploy/portable/) "
            "or correct the address",
        ),
    ],
)
def test_bad_options_fail_with_one_line(tmp_path, capsys, flags, message):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "A girl is styling her hair."}])
    assert main(["batch", "--input", str(data), "--output", str(tmp_path / "out"), *flags]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    expected = f"semsim batch: error: {message}"
    assert line.startswith(expected) if message.endswith(" ") else line == expected  # (Beam's list of runners)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["batch", "--backend", "nope"], "semsim batch: error: argument --backend: invalid choice: 'nope'"),
        (["batch", "--threshold", "high"], "semsim batch: error: argument --threshold: invalid float value: 'high'"),
        (["stream", "--subscription", "projects/semsim-test/subscriptions/s", "--window-seconds", "1.5"],
         "semsim stream: error: argument --window-seconds/--window_seconds: invalid int value: '1.5'"),
        (["eval", "stsb"], "semsim eval stsb: error: the following arguments are required: --file"),
        (["eval", "stsb", "--file", "/nonexistent.csv"],
         "semsim eval stsb: error: --file: cannot read /nonexistent.csv: No such file or directory"),
        (["eval", "stsb", "--file", str(LABELED_PAIRS)],
         f"semsim eval stsb: error: --file: {LABELED_PAIRS}:1: not an STS Benchmark line"),
        (["eval", "stsb", "--file", str(STSB_TEST), "--paraphrase-min-score", "7"],
         "semsim eval stsb: error: --paraphrase-min-score 7: 0 of the 1379 pairs are paraphrases then; the threshold "
         "search needs both paraphrases and others"),
        (["eval", "mining", "--input", "x.jsonl"], "semsim eval mining: error: the following arguments are required"),
        (["eval", "mining", "--input", "x.jsonl", "--gold", "g.csv", "--treshold-floor", "0.6"],
         "semsim eval mining: error: unknown flag --treshold-floor (did you mean --threshold-floor?)"),
        (["eval", "bogus"],
         "semsim: error: unknown command 'eval bogus': eval stsb or eval mining (semsim eval --help)"),
        (["eval"], "semsim: error: semsim eval needs a command: eval stsb or eval mining (semsim eval --help)"),
        (["calibrate", "--pairs", "p.csv", "--format", "nope"], "semsim calibrate: error: argument --format: invalid"),
        (["calibrate"], "semsim calibrate: error: the following arguments are required: --pairs"),
        (["report", "/nonexistent"], "semsim report: error: output folder '/nonexistent' does not exist"),
        (["report", "out", "--examples", "many"], "semsim report: error: argument --examples: invalid int value"),
        (["history", "info", "/nonexistent"], "semsim history: error: history /nonexistent does not exist"),
        (["history", "recentre", "h", "--cells", "0"],
         "semsim history recentre: error: argument --cells: must be a positive"),
        (["batch", "--input", str(SAMPLE_PARAPHRASES.parent), "--output", "o"],
         f"semsim batch: error: --input '{SAMPLE_PARAPHRASES.parent}' is a folder; give a glob of its files"),
        (["history", "recentre", "h", "--target-recall", "1.5"],
         "semsim history recentre: error: argument --target-recall: must be in (0, 1], got '1.5'"),
        (["history", "recentre", "h", "--cels", "4"],
         "semsim history: error: unknown flag --cels (did you mean --cells?)"),
        (["report", "out", "--exampels", "3"],
         "semsim report: error: unknown flag --exampels (did you mean --examples?)"),
        (["eval", "stsb", "--file", "f.csv", "--modle", "m"],
         "semsim eval stsb: error: unknown flag --modle (did you mean --model?)"),
        (["calibrate", "--pairs", "p.csv", "extra"],
         "semsim calibrate: error: unexpected argument 'extra' (every value follows its flag: --flag value)"),
        (["history", "frob", "h"], "semsim history: error: argument {info,compact,recentre,unlock}: invalid choice"),
        (["frobnicate"], "semsim: error: unknown command 'frobnicate' (semsim --help lists them)"),
        (["batch", "--input", "in.jsonl", "--model", "nonexistent-org/nope"],
         "semsim batch: error: model 'nonexistent-org/nope' cannot be loaded: it is not a local folder, not in the "
         "Hugging Face cache"),  # then: nor on the hub, or the hub cannot be reached (from here: no network)
        (["stream", "--subscription", "projects/semsim-test/subscriptions/s", "--model", "no such model"],
         "semsim stream: error: model 'no such model' is neither a local folder nor a Hugging Face hub name"),
    ],
)  # fmt: skip
def test_every_command_says_a_bad_invocation_in_one_line(tmp_path, capsys, argv, message):
    argv = [*argv, "--output", str(tmp_path / "out")] if argv[0] in ("batch", "stream") else argv
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's exit, as the installed command exits
        code = e.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith(message), err


@pytest.mark.parametrize(("command", "runner"), [("batch", "FnApiRunner"), ("stream", "BundleBasedDirectRunner")])
def test_help_names_the_command_and_the_defaults(capsys, command, runner):
    assert main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert out.startswith(f"usage: semsim {command} ")
    assert "cosine threshold in (0, 1] (default: 0.8)" in out and f"--runner (default {runner} here" in out
    module = {"batch": "pipelines.batch_dedup", "stream": "pipelines.streaming_dedup"}[command]
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True)
    assert " ".join(done.stdout.split()) == out, "python -m of the pipeline module says the same"


def test_bad_option_in_the_installed_command_prints_one_line_and_exits_2(tmp_path):
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "A girl is styling her hair."}])
    args = [SEMSIM, "batch", "--input", str(data), "--output", str(tmp_path / "out"), "--rescore-band", "1.5"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["semsim batch: error: --rescore-band must be in [0, 1), got 1.5"]
    assert not (tmp_path / "out").exists()


def test_a_model_folder_that_cannot_load_is_one_line(tmp_path, capsys):
    """A copy cut short (no weights): one line before anything runs, not a traceback from inside the pipeline."""
    model = tmp_path / "model"
    shutil.copytree(resolve_model(DEFAULT_MODEL), model, ignore=shutil.ignore_patterns("model.safetensors"))
    data = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "A girl is styling her hair."}])
    for command in (
        ["batch", "--input", str(data), "--output", str(tmp_path / "out")],
        ["calibrate", "--pairs", str(LABELED_PAIRS)],
    ):
        assert main([*command, "--model", str(model)]) == 2
        (line,) = capsys.readouterr().err.strip().splitlines()
        assert (
            line.startswith(f"semsim {command[0]}: error: model path '{model}' cannot be loaded: ")
            and "model.safetensors" in line
        )
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "argv",
    [
        ["batch", "--input", "in.jsonl", "--output", "gs://semsim-test/out"],
        ["batch", "--input", "in.jsonl", "--output", "out", "--history", "gs://semsim-test/history"],
        ["stream", "--subscription", "projects/semsim-test/subscriptions/s", "--output", "gs://semsim-test/out"],
        ["report", "gs://semsim-test/out"],  # pyarrow's GCS filesystem would retry for minutes, silently
        ["history", "info", "gs://semsim-test/history"],
    ],
)
def test_a_gcs_folder_without_credentials_is_one_line_at_once(tmp_path, argv):
    """No credentials: Beam would connect anonymously and fail the first write (a listing retries for two
    minutes); semsim says what is missing before anything runs."""
    env = {k: v for k, v in os.environ.items() if k != "GOOGLE_APPLICATION_CREDENTIALS"}
    env.update(CLOUDSDK_CONFIG=str(tmp_path / "gcloud"), NO_GCE_CHECK="true")  # no gcloud login, not a GCE VM
    done = subprocess.run([SEMSIM, *argv], capture_output=True, text=True, timeout=60, cwd=tmp_path, env=env)
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert re.fullmatch(
        r"semsim (batch|stream|report|history): error: (--output|--history|OUT_DIR|H) 'gs://semsim-test/\w+' is on "
        r"Google Cloud Storage, and no "
        r"Google Cloud credentials were found: run `gcloud auth application-default login`, or set "
        r"GOOGLE_APPLICATION_CREDENTIALS to a service account's key file",
        line,
    )


def test_missing_input_and_unknown_format(tmp_path, capsys):
    assert main(["batch", "--output", str(tmp_path / "out")]) == 2
    assert "give --input (a file glob), --input-embeddings (an embeddings/ folder), or both" in capsys.readouterr().err
    (tmp_path / "notes.md").write_text("A girl is styling her hair.\n", encoding="utf-8")
    assert main(["batch", "--input", str(tmp_path / "notes.md"), "--output", str(tmp_path / "out")]) == 2
    assert "pass --format" in capsys.readouterr().err


def test_module_entry_point_runs_and_prints_summary(tmp_path):
    data = tmp_path / "posts.txt"
    data.write_text("A girl is styling her hair.\nA girl is brushing her hair.\nA girl is styling her hair!\n")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "pipelines.batch_dedup", "--input", str(data), "--output", str(out)]
    done = subprocess.run([*command, "--backend", "onnx"], capture_output=True, text=True, timeout=300)  # fp32
    assert done.returncode == 0, done.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["inputs"] == summary["accepted"] == 3 and summary["runner"] == "FnApiRunner"
    assert json.JSONDecoder().raw_decode(done.stdout)[0] == summary
    assert "counters:" in done.stdout
    assert not list(out.glob("*/beam-temp-*"))


def test_eval_stsb_reproduces_published_spearman(capsys):
    assert main(["eval", "stsb", "--file", str(STSB_TEST)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pairs"] == 1379
    assert abs(report["spearman"] - 0.8203) <= 0.002


def test_a_second_run_into_an_output_is_refused_unless_overwrite(tmp_path, capsys):
    data = write_jsonl(tmp_path / "posts.jsonl", sample_titles(30))
    out = tmp_path / "out"
    flags = ["batch", "--input", str(data), "--output", str(out), "--backend", "torch", "--progress-seconds", "0"]
    assert main(flags) == 0
    assert main(["report", str(out)]) == 0
    (out / "pairs" / "part-99999-of-99999.parquet").write_bytes(b"an earlier run's leftover")
    (out / "notes.txt").write_text("the user's own file")
    summary = (out / "summary.json").read_text()
    capsys.readouterr()

    assert main(flags) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"semsim batch: error: --output {out} already holds a semsim run (pairs, clusters, dead_letter, removed, "
        "centroids.npy, summary.json, report.html); pass --overwrite"
    ]
    assert (out / "summary.json").read_text() == summary, "a refused run changes nothing"

    data.write_text(data.read_text().splitlines(keepends=True)[0])
    assert main([*flags, "--overwrite"]) == 0
    assert not (out / "pairs" / "part-99999-of-99999.parquet").exists() and (out / "notes.txt").exists()
    assert not (out / "report.html").exists(), "the earlier run's report goes with it"
    assert len(pd.read_parquet(out / "clusters")) == 1, "only the new run's rows"

    (out / "summary.json").unlink()  # as a run that stopped before its end leaves it
    assert main(["report", str(out)]) == 2
    assert "the run did not finish" in capsys.readouterr().err


@pytest.mark.parametrize("store", ["out", "out/pairs", "."])
def test_an_output_and_a_history_store_inside_one_another_are_refused(tmp_path, capsys, monkeypatch, store):
    """Else the run's files lie among the store's, and --overwrite deletes a store kept as out/pairs."""
    monkeypatch.chdir(tmp_path)
    data = write_jsonl(tmp_path / "posts.jsonl", sample_titles(3))
    subscription = "projects/semsim-test/subscriptions/posts"
    for command in (["batch", "--input", str(data), "--overwrite"], ["stream", "--subscription", subscription]):
        assert main([*command, "--output", "out", "--history", store]) == 2
        message = f"--output out and --history {store} overlap: keep each outside the other"
        assert capsys.readouterr().err.strip().splitlines() == [f"semsim {command[0]}: error: {message}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["posts.jsonl"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--window-seconds", "0"], "--window-seconds must be a positive whole number, got 0"),
        (["--commit-seconds", "10"], "--commit-seconds sets how often --history is appended to: give --history too"),
        (["--history", "h", "--commit-seconds", "0"], "--commit-seconds must be a positive whole number, got 0"),
        (
            ["--history", "h", "--centroids", "c.npy"],
            "--centroids cannot be given with --history: the store's own centroids are used",
        ),  # fmt: skip
        (["--history", "/nonexistent/h"], "history /nonexistent/h does not exist (no manifest.json)"),
        (
            ["--history", "/nonexistent/h", "--cell-margin", "0.2"],
            "--cell-margin cannot be given with --history: the store's cells and margin are used",
        ),
        (["--max-per-cel", "5"], "unknown flag --max-per-cel (did you mean --max-per-cell?)"),
        (
            ["--notify-topic", "projects/x/topics/t"],
            "--notify-topic projects/x/topics/t: Invalid PubSub project name: 'x'.",
        ),
        (
            ["--dead-letter-topic", "topics/t"],
            "--dead-letter-topic topics/t: PubSub topic must be in the form "
            "\"projects/<project>/topics/<topic>\" (got 'topics/t').",
        ),  # fmt: skip
        (["--cells", "4"], "unknown flag --cells (did you mean --labels?)"),  # a batch flag (the suggestion: Beam's)
    ],
)
def test_bad_stream_options_fail_with_one_line(tmp_path, capsys, flags, message):
    argv = ["stream", "--subscription", "projects/semsim-test/subscriptions/posts", "--output", str(tmp_path / "out")]
    assert main([*argv, *flags]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [f"semsim stream: error: {message}"]


def test_a_subscription_beam_would_refuse_is_one_line(tmp_path, capsys):
    argv = ["stream", "--subscription", "projects/bars/subscriptions/s", "--output", str(tmp_path / "out")]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "semsim stream: error: --subscription projects/bars/subscriptions/s: Invalid PubSub project name: 'bars'."
    ]


def test_a_run_that_accepts_nothing_says_why_in_one_warning(tmp_path, caplog):
    """A mistyped or forgotten --text-field made every record a dead letter: exit 0, and nothing said so."""
    data = tmp_path / "titles.tsv"
    data.write_text("id\ttitle\nr1\tA girl is styling her hair.\nr2\tA man is playing a guitar.\n", encoding="utf-8")
    assert main(["batch", "--input", str(data), "--output", str(tmp_path / "out"), "--backend", "torch"]) == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "every one of the 2 records read is a dead letter (2 of them: missing field 'text'); check --text-field, "
        "--id-field and --format"
    ]
