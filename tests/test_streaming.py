"""The streaming pipeline against the real Pub/Sub emulator (started and stopped here) on real texts."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import apache_beam as beam
import numpy as np
import pandas as pd
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from pipelines import cli
from pipelines.options import validate_streaming
from pipelines.streaming_dedup import build, start
from semsim_core.history import History
from semsim_core.run_layout import ReadSpec, Summary
from tests.conftest import REPO, SAMPLE_PARAPHRASES, fp32_unless_named, run_batch, sample_titles, write_jsonl
from tests.pubsub_emulator import PROJECT, find_launcher, pubsub_emulator

pytestmark = pytest.mark.skipif(find_launcher() is None, reason="the Pub/Sub emulator is not installed")


@pytest.fixture(scope="module")
def pubsub():
    with pubsub_emulator() as (publisher, subscriber, _):
        yield publisher, subscriber


def make_topic(pubsub, name: str) -> tuple[str, str]:
    publisher, subscriber = pubsub
    topic, subscription = f"projects/{PROJECT}/topics/{name}", f"projects/{PROJECT}/subscriptions/{name}-sub"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    return topic, subscription


def read_folder(folder: Path) -> pd.DataFrame:
    files = [p for p in folder.rglob("*.parquet")] if folder.exists() else []  # YYYY-MM-DD/HH/part-*.parquet
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else pd.DataFrame()


def wait_for(predicate, timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if time.time() > deadline:
            raise AssertionError("timed out waiting for the stream's output")
        time.sleep(0.5)


def pull_all(pubsub, subscription: str) -> list[dict]:
    _, subscriber = pubsub
    messages = []
    while True:
        response = subscriber.pull(subscription=subscription, max_messages=500, timeout=5)
        if not response.received_messages:
            return messages
        messages += [json.loads(m.message.data) for m in response.received_messages]
        subscriber.acknowledge(subscription=subscription, ack_ids=[m.ack_id for m in response.received_messages])


HEARTBEAT = '{"heartbeat": true}'  # a message with no text: a dead letter, filtered out by the tests


@contextlib.contextmanager
def beating(pubsub, topic: str):
    """A heartbeat message to ``topic`` every half second while the block runs (see :func:`streaming`)."""
    publisher, _ = pubsub
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.5):
            publisher.publish(topic, HEARTBEAT.encode())

    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    try:
        yield
    finally:
        stop.set()
        heart.join()


@contextlib.contextmanager
def streaming(pubsub, topic: str, flags: list[str]):
    """``semsim stream`` with ``flags``, stopped on exit. While it runs, a heartbeat message goes to ``topic`` every
    half second: the DirectRunner's single thread blocks up to 30 s in a pull on an empty subscription
    (apache/beam#25442), and with the heartbeat it never waits on an empty one, as a busy stream would not."""
    result = start(flags)
    with beating(pubsub, topic):
        try:
            yield result
        finally:
            result.cancel()


def without_heartbeats(dead: pd.DataFrame) -> pd.DataFrame:
    return dead[dead["raw"] != HEARTBEAT] if len(dead) else dead


def paraphrase_rows(n: int) -> list[dict]:
    return [json.loads(line) for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:n]]


def publish(publisher, topic: str, row: dict):
    """Publish a post: its text as data, its id as the ``id`` attribute; returns the publish future."""
    return publisher.publish(topic, row["text"].encode("utf-8"), id=row["id"])


def pair_set(frame: pd.DataFrame) -> set[tuple[str, str]]:
    """The (id_a, id_b) pairs of a pairs folder read so far (none before its first file is written)."""
    return set(zip(frame.get("id_a", []), frame.get("id_b", []), strict=True))


def stream_flags(subscription: str, output: Path, *extra: str) -> list[str]:
    """The stream's flags; fp32 ``torch`` unless ``extra`` names a backend (as ``run_batch`` does)."""
    return ["--subscription", subscription, "--output", str(output), "--window-seconds", "2",
            "--threshold", "0.8", *fp32_unless_named(extra)]  # fmt: skip


def test_a_subscription_or_topic_that_does_not_exist_is_one_line(pubsub, tmp_path, capsys):
    """Else the stream would start, acknowledge its first posts and fail on them (a topic at the first match)."""
    missing = f"projects/{PROJECT}/subscriptions/nothing-here"
    assert cli.main(["stream", "--subscription", missing, "--output", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == f"semsim stream: error: --subscription {missing} does not exist"
    _, subscription = make_topic(pubsub, "exists")
    for flag in ("--notify-topic", "--dead-letter-topic"):
        topic = f"projects/{PROJECT}/topics/no-such-topic"
        argv = ["stream", "--subscription", subscription, "--output", str(tmp_path / "out"), flag, topic]
        assert cli.main(argv) == 2
        assert capsys.readouterr().err.strip() == f"semsim stream: error: {flag} {topic} does not exist"
    assert not (tmp_path / "out").exists()


def test_a_batch_runs_folder_and_a_zero_retention_are_refused(pubsub, tmp_path, capsys):
    _, subscription = make_topic(pubsub, "refusals")
    batch = tmp_path / "batch"
    batch.mkdir()
    (batch / "summary.json").write_text("{}")
    assert cli.main(["stream", "--subscription", subscription, "--output", str(batch)]) == 2
    expected = f"semsim stream: error: --output {batch} holds a semsim batch run: give the stream a folder of its own"
    assert capsys.readouterr().err.strip() == expected
    argv = ["stream", "--subscription", subscription, "--output", str(tmp_path / "out"), "--retention", "0d"]
    assert cli.main(argv) == 2
    expected = "semsim stream: error: --retention must be longer than 0, got '0d' (no --retention: keep all)"
    assert capsys.readouterr().err.strip() == expected


def test_stream_matches_batch_notifies_and_handles_bad_and_repeated_messages(pubsub, tmp_path):
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "posts")
    notify_topic, notify_subscription = make_topic(pubsub, "duplicates")
    dead_topic, dead_subscription = make_topic(pubsub, "rejected")
    pairs = paraphrase_rows(120)
    titles = [{"id": r["id"], "text": r["text"]} for r in sample_titles(81)]
    reused_id_text = titles.pop()["text"]
    earlier, later = pairs[0::2] + titles, pairs[1::2]  # each paraphrase's second half is published after the first
    clusters_folder = tmp_path / "out" / "clusters"
    flags = ["--notify-topic", notify_topic, "--dead-letter-topic", dead_topic]
    int8 = ["--backend", "openvino-int8", "--rescore-band", "0.08"]  # a band wider than int8's drift on any CPU seen
    with streaming(pubsub, topic, stream_flags(subscription, tmp_path / "out", *flags, *int8)):
        for row in earlier:
            publish(publisher, topic, row)
        wait_for(lambda: len(read_folder(clusters_folder)) >= len(earlier))
        for row in later:
            publish(publisher, topic, row)
        for bad in (b'{"text": ', b"   ", b"caf\xe9 broken"):
            publisher.publish(topic, bad)
        wait_for(lambda: len(read_folder(clusters_folder)) >= len(earlier) + len(later))
        publish(publisher, topic, earlier[0]).result()  # re-delivery
        publish(publisher, topic, {"id": earlier[1]["id"], "text": reused_id_text}).result()  # another post, one id
        wait_for(lambda: len(without_heartbeats(read_folder(tmp_path / "out" / "dead_letter"))) >= 4)
        time.sleep(4)  # two more windows: a second row for the re-delivered post would be on disk by now

    posts = earlier + later
    clusters = read_folder(clusters_folder)
    assert sorted(clusters["id"]) == sorted(r["id"] for r in posts), "every post exactly once"
    dead = without_heartbeats(read_folder(tmp_path / "out" / "dead_letter"))
    assert sorted(e.split(":")[0].split(" at")[0] for e in dead["error"]) == sorted(
        ["malformed JSON", "the message is empty or whitespace only", "invalid UTF-8",
         f"id '{earlier[1]['id']}' names an earlier post with another text (an id names one post)"]
    )  # fmt: skip
    assert reused_id_text in set(dead["raw"])
    published = [m["error"] for m in pull_all(pubsub, dead_subscription) if m["raw"] != HEARTBEAT]
    assert sorted(published) == sorted(dead["error"])

    stream_pairs = read_folder(tmp_path / "out" / "pairs")
    fp32 = run_batch(
        tmp_path / "batch", "--input", str(write_jsonl(tmp_path / "posts.jsonl", posts)), "--backend", "torch"
    )
    borderline = {(r.id_a, r.id_b) for r in pd.concat([fp32.pairs, stream_pairs]).itertuples() if r.score < 0.8 + 1e-6}
    assert pair_set(stream_pairs) - borderline == pair_set(fp32.pairs) - borderline, "int8 + rescoring = fp32's pairs"
    assert len(stream_pairs) == len(pair_set(stream_pairs)) > 30

    later_ids = {r["id"] for r in later}
    notes = pull_all(pubsub, notify_subscription)
    notified = {n["id"]: n for n in notes}
    assert len(notified) == len(notes), "one notification per post that matched"
    scores = {frozenset((r.id_a, r.id_b)): r.score for r in stream_pairs.itertuples()}
    for note in notes:  # it names the earliest of the post's matches, with both times
        partners = [next(iter(pair - {note["id"]})) for pair in scores if note["id"] in pair]
        assert 1 <= note["matches"] <= len(partners) and note["score"] >= 0.8
        assert note["score"] == pytest.approx(scores[frozenset((note["id"], note["duplicate_of"]))])
        assert note["duplicate_of_time"] <= note["time"]
        earlier = [notified[p]["time"] for p in partners if p in notified and notified[p]["time"] <= note["time"]]
        assert all(note["duplicate_of_time"] <= time for time in earlier)
    for pair in stream_pairs.itertuples():
        if (pair.id_a in later_ids) != (pair.id_b in later_ids):
            assert (pair.id_a if pair.id_a in later_ids else pair.id_b) in notified, "the later post is notified"
    cluster_of = dict(zip(clusters["id"], clusters["cluster_id"], strict=True))
    assert all(cluster_of[n["id"]] == n["cluster_id"] for n in notes)
    assert not [t for t in threading.enumerate() if not t.daemon and t is not threading.main_thread()]


def stream_segments(store: Path) -> list[dict]:
    """The segments a stream committed to ``store``."""
    manifest = json.loads((store / "manifest.json").read_text())
    return [s for s in manifest["segments"] if s["run"].startswith("stream ")]


def _segment_ids(store: Path, segment: dict) -> set[str]:
    records = [store / f for f in segment["files"] if f.startswith("records/")]
    return set(pd.concat(pd.read_parquet(f, columns=["id"]) for f in records)["id"])


def test_a_stream_on_a_history_store_appends_to_it_and_a_killed_stream_forgets_nothing_committed(
    pubsub, tmp_path, embedder
):
    """Stream A matches against a store built by a batch run, appends the posts it stores, and is killed (SIGKILL);
    stream B on the same store finds copies and paraphrases of A's committed posts, with A's cluster ids. The job
    carries no history: its graph stays small, and a worker reads only the cells it serves."""
    publisher, _ = pubsub
    rows = paraphrase_rows(60)
    stored, day_two = rows[0:40], rows[40:60]  # pairs: (stored[2i], stored[2i+1]) and (day_two[2i], day_two[2i+1])
    titles = [{"id": r["id"], "text": r["text"]} for r in sample_titles(400)]
    store = tmp_path / "history"
    batch = run_batch(tmp_path / "batch", "--input", str(write_jsonl(tmp_path / "h.jsonl", stored[0::2] + titles)),
                      "--history", str(store), "--cells", "4")  # fmt: skip
    stored_cluster = batch.clusters.set_index("id")["cluster_id"]

    topic_a, subscription_a = make_topic(pubsub, "history-a")
    flags = ["--history", str(store), "--commit-seconds", "2"]
    options = PipelineOptions(stream_flags(subscription_a, tmp_path / "a", *flags))
    graph = beam.Pipeline(options=options)
    build(graph, validate_streaming(options))
    history_bytes = sum(f.stat().st_size for f in store.glob("cell=*/*.parquet"))
    assert len(graph.to_runner_api().SerializeToString()) < min(100_000, history_bytes / 4), "no history in the job"

    command = [sys.executable, "-m", "pipelines.streaming_dedup", *stream_flags(subscription_a, tmp_path / "a", *flags)]
    copy_of_stored = {"id": "copy-1", "text": stored[0]["text"].upper()}
    first_posts = [copy_of_stored, *stored[1::2], *day_two[0::2]]
    vectors = embedder.encode([r["text"] for r in stored])
    clear = [i for i in range(0, len(stored), 2) if float(vectors[i] @ vectors[i + 1]) >= 0.81]
    paraphrased = {tuple(sorted((stored[i]["id"], stored[i + 1]["id"]))) for i in clear}  # of stored posts
    copied = tuple(sorted((stored[0]["id"], "copy-1")))  # a copy of a stored text, found by hash

    def a_done() -> bool:  # the store commit and A's output files are written apart: wait for both
        committed = {i for s in stream_segments(store) for i in _segment_ids(store, s)}
        day_two_ids = {r["id"] for r in day_two[0::2]}
        return (
            day_two_ids <= committed
            and {copied, *paraphrased} <= pair_set(a_pairs())
            and day_two_ids | {"copy-1"} <= set(read_folder(tmp_path / "a" / "clusters").get("id", []))
        )

    def a_pairs() -> pd.DataFrame:
        return read_folder(tmp_path / "a" / "pairs")

    with beating(pubsub, topic_a):
        stream_a = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            for row in first_posts:
                publish(publisher, topic_a, row)
            wait_for(a_done, 180)  # the day-2 posts committed; the copy and the paraphrases found
        finally:
            stream_a.send_signal(signal.SIGKILL)
            stream_a.wait()
    assert clear
    found = a_pairs()
    assert copied in pair_set(found[found["kind"] == "exact"])
    a_cluster = read_folder(tmp_path / "a" / "clusters").set_index("id")["cluster_id"]
    assert a_cluster["copy-1"] == stored_cluster[stored[0]["id"]]

    topic_b, subscription_b = make_topic(pubsub, "history-b")
    copies = [{"id": f"copy-of-{r['id']}", "text": r["text"]} for r in day_two[0::2]]
    history = History(str(store))
    centroids = history.centroids(history.manifest())
    edited = [{"id": stored[i]["id"], "text": stored[i]["text"] + " (edited)"} for i in range(2, len(stored), 2)]
    cell_of = {r["id"]: int(np.argmax(centroids @ v)) for r, v in zip(stored, vectors, strict=True)}
    reused = next(r for r, v in zip(edited, embedder.encode([r["text"] for r in edited]), strict=True)
                  if int(np.argmax(centroids @ v)) == cell_of[r["id"]])  # fmt: skip
    second_posts = [*copies, *day_two[1::2], reused]  # the last reuses a stored id for another text
    copies_of_a = {tuple(sorted((r["id"], f"copy-of-{r['id']}"))) for r in day_two[0::2]}
    later = embedder.encode([r["text"] for r in day_two])
    clear_later = [i for i in range(0, len(day_two), 2) if float(later[i] @ later[i + 1]) >= 0.81]
    paraphrases_of_a = {tuple(sorted((day_two[i]["id"], day_two[i + 1]["id"]))) for i in clear_later}
    with streaming(pubsub, topic_b, stream_flags(subscription_b, tmp_path / "b", *flags)) as stream_b:
        for row in second_posts:
            publish(publisher, topic_b, row)
        wait_for(
            lambda: (
                len(read_folder(tmp_path / "b" / "clusters")) >= len(second_posts) - 1
                and copies_of_a | paraphrases_of_a <= pair_set(read_folder(tmp_path / "b" / "pairs"))
                and len(without_heartbeats(read_folder(tmp_path / "b" / "dead_letter")))
            )
        )
        touched = stream_b.metrics().query()["counters"]
    b_pairs, b_clusters = read_folder(tmp_path / "b" / "pairs"), read_folder(tmp_path / "b" / "clusters")
    [refused] = without_heartbeats(read_folder(tmp_path / "b" / "dead_letter"))["error"]
    assert refused == f"id {reused['id']!r} names an earlier post with another text (an id names one post)"
    assert reused["id"] not in set(b_clusters["id"]), "a stored id, reused for another text after a restart"
    exact = pair_set(b_pairs[b_pairs["kind"] == "exact"])
    assert copies_of_a <= exact, "A's posts, by hash"
    b_cluster = b_clusters.set_index("id")["cluster_id"]
    for row in day_two[0::2]:
        assert b_cluster[f"copy-of-{row['id']}"] == a_cluster[row["id"]], "with the cluster id A gave"
    assert clear_later and paraphrases_of_a <= pair_set(b_pairs), "paraphrases of A's posts (cosine 0.81 or more)"
    reads = sum(c.committed for c in touched if c.key.metric.name == "history_cells_read")
    assert 1 <= reads <= 4 * 2, "cells are read when first served (and again after a rebuild), never all at once"


def test_stream_with_centroids_probes_neighbour_cells(pubsub, tmp_path):
    """Posts are stored in their nearest cell and probe the others; with a margin covering every cell the pairs are
    exactly the batch run's (same centroids, same margin)."""
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "cell-posts")
    posts = paraphrase_rows(60) + [{"id": r["id"], "text": r["text"]} for r in sample_titles(40)]
    source = write_jsonl(tmp_path / "posts.jsonl", posts)
    batch = run_batch(tmp_path / "batch", "--input", str(source), "--cells", "3", "--cell-margin", "2")
    assert batch.summary.cells == 3
    centroids = str(tmp_path / "batch" / "centroids.npy")
    flags = stream_flags(subscription, tmp_path / "out", "--centroids", centroids, "--cell-margin", "2")
    with streaming(pubsub, topic, flags):
        for row in posts:
            publish(publisher, topic, row)
        wait_for(  # pairs and clusters are written apart: a window's clusters can land before its pairs
            lambda: (
                len(read_folder(tmp_path / "out" / "clusters")) >= len(posts)
                and pair_set(read_folder(tmp_path / "out" / "pairs")) >= pair_set(batch.pairs)
            )
        )
    stream_pairs = read_folder(tmp_path / "out" / "pairs")
    assert sorted(read_folder(tmp_path / "out" / "clusters")["id"]) == sorted(r["id"] for r in posts)
    assert pair_set(stream_pairs) == pair_set(batch.pairs) and len(stream_pairs) == len(batch.pairs) > 10


def test_max_per_cell_forgets_the_oldest_posts(pubsub, tmp_path):
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "bounded")
    first, paraphrase, *_ = paraphrase_rows(2)
    fillers = [{"id": r["id"], "text": r["text"]} for r in sample_titles(3)]
    with streaming(pubsub, topic, stream_flags(subscription, tmp_path / "out", "--max-per-cell", "2")):
        for row in [first, *fillers]:  # one after another: the first has the oldest publish time
            publish(publisher, topic, row).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 4)
        publish(publisher, topic, paraphrase).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 5)
    clusters = read_folder(tmp_path / "out" / "clusters")
    assert read_folder(tmp_path / "out" / "pairs").empty, "the first post was evicted before its paraphrase came"
    assert clusters.set_index("id").loc[paraphrase["id"], "cluster_id"] == paraphrase["id"]


def test_retention_forgets_posts_by_timer(pubsub, tmp_path, caplog):
    """Also: the stream logs its status every --progress-seconds."""
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "retained")
    first, paraphrase, *_ = paraphrase_rows(2)
    flags = stream_flags(subscription, tmp_path / "out", "--retention", "2s", "--progress-seconds", "1")
    with caplog.at_level(logging.INFO, logger="semsim.progress"), streaming(pubsub, topic, flags):
        publish(publisher, topic, first).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 1)
        time.sleep(5)  # the watermark moves past the first post's expiry, and its timer evicts it
        publish(publisher, topic, paraphrase).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 2)
    assert read_folder(tmp_path / "out" / "pairs").empty, "the first post was forgotten before its paraphrase came"
    # this stream's lines: one an earlier test cancelled may still log its last events here (its status thread
    # ticks on in the process), with more posts received
    status = [r.getMessage() for r in caplog.records if re.match(r"stream: received [12] ", r.getMessage())]
    assert status and any("resolved 1 (" in line and "latency p50" in line for line in status), status
    assert all("cells held 1," in line for line in status if "resolved" in line), status


def test_a_stream_of_one_cell_says_so(tmp_path, caplog, embedder):
    """Without --centroids the stream is one cell (correct, not parallel), and its log says so at start. With them,
    the margin is the one the batch run that wrote them tuned (its summary.json), unless --cell-margin. Its
    stateful steps are keyed with deterministic coders (Beam warns otherwise)."""
    centroids = tmp_path / "centroids.npy"
    np.save(centroids, embedder.encode(["A cat sat.", "Stocks fell today.", "Rain is coming."]))

    def logged(*extra: str) -> str:
        options = PipelineOptions(stream_flags("projects/semsim-test/subscriptions/s", tmp_path / "out", *extra))
        caplog.clear()
        with caplog.at_level(logging.INFO):
            build(beam.Pipeline(options=options), validate_streaming(options))
        return caplog.text

    assert "the stream runs as a single cell" in logged()
    assert "may not be deterministic" not in caplog.text, "the stateful steps' keys have deterministic coders"
    assert "single cell" not in logged("--centroids", str(centroids))
    assert "no summary.json beside --centroids: cell margin 0.10" in caplog.text
    read = ReadSpec(["in.jsonl"], None, "id", "text", 65536, None)
    summary = Summary(0.8, "m", None, "auto", 0.02, "components", "FnApiRunner", read, {}, cell_margin=0.0625)
    (tmp_path / "summary.json").write_bytes(summary.to_json())
    assert "cells: 3, margin 0.0625" in logged("--centroids", str(centroids)), "the batch run's tuned margin"
    assert "cells: 3, margin 0.2000" in logged("--centroids", str(centroids), "--cell-margin", "0.2")


def test_emulator_and_its_java_process_stop():
    with pubsub_emulator() as (_, _, process):
        assert process.poll() is None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
