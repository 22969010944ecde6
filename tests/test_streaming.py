"""The streaming pipeline against the real Pub/Sub emulator (started and stopped here) on real texts."""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from pipelines.streaming_dedup import start
from tests.conftest import SAMPLE_PARAPHRASES, fp32_unless_named, run_batch, sample_titles, write_jsonl
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
def streaming(pubsub, topic: str, flags: list[str]):
    """``semsim stream`` with ``flags``, cancelled on exit. While it runs, a heartbeat message goes to ``topic`` every
    half second: the DirectRunner's single thread blocks up to 30 s in a pull on an empty subscription
    (apache/beam#25442), and with the heartbeat it never waits on an empty one, as a busy stream would not."""
    publisher, _ = pubsub
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(0.5):
            publisher.publish(topic, HEARTBEAT.encode())

    result = start(flags)
    heart = threading.Thread(target=beat, daemon=True)
    heart.start()
    try:
        yield result
    finally:
        result.cancel()
        stop.set()
        heart.join()


def without_heartbeats(dead: pd.DataFrame) -> pd.DataFrame:
    return dead[dead["raw"] != HEARTBEAT] if len(dead) else dead


def paraphrase_rows(n: int) -> list[dict]:
    return [json.loads(line) for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:n]]


def publish(publisher, topic: str, row: dict):
    """Publish a post: its text as data, its id as the ``id`` attribute; returns the publish future."""
    return publisher.publish(topic, row["text"].encode("utf-8"), id=row["id"])


def pair_set(frame: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(frame["id_a"], frame["id_b"], strict=True))


def stream_flags(subscription: str, output: Path, *extra: str) -> list[str]:
    """The stream's flags; fp32 ``torch`` unless ``extra`` names a backend (as ``run_batch`` does)."""
    return ["--subscription", subscription, "--output", str(output), "--window-seconds", "2",
            "--threshold", "0.8", *fp32_unless_named(extra)]  # fmt: skip


def test_stream_matches_batch_notifies_and_handles_bad_and_repeated_messages(pubsub, tmp_path):
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "posts")
    notify_topic, notify_subscription = make_topic(pubsub, "duplicates")
    dead_topic, dead_subscription = make_topic(pubsub, "rejected")
    pairs = paraphrase_rows(120)
    titles = [{"id": r["id"], "text": r["text"]} for r in sample_titles(80)]
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
        wait_for(lambda: len(without_heartbeats(read_folder(tmp_path / "out" / "dead_letter"))) >= 3)
        time.sleep(4)  # two more windows: a second row for the re-delivered post would be on disk by now

    posts = earlier + later
    clusters = read_folder(clusters_folder)
    assert sorted(clusters["id"]) == sorted(r["id"] for r in posts), "every post exactly once"
    dead = without_heartbeats(read_folder(tmp_path / "out" / "dead_letter"))
    assert sorted(e.split(":")[0].split(" at")[0] for e in dead["error"]) == sorted(
        ["malformed JSON", "field 'data' is empty or whitespace only", "invalid UTF-8"]
    )
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


def test_restart_from_seeded_history(pubsub, tmp_path):
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "later-posts")
    pairs = paraphrase_rows(40)
    history, later = pairs[0::2], pairs[1::2]
    history_input = str(write_jsonl(tmp_path / "h.jsonl", history))
    run_batch(tmp_path / "history", "--input", history_input, "--write-embeddings", "--backend", "torch")
    approximate = ["--backend", "openvino-int8", "--rescore-band", "0.08"]  # decided by fp32 against the history
    flags = stream_flags(subscription, tmp_path / "out", "--seed-embeddings", str(tmp_path / "history"), *approximate)
    with streaming(pubsub, topic, flags):
        for row in later:
            publish(publisher, topic, row)
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= len(later))
    stream_pairs = read_folder(tmp_path / "out" / "pairs")
    batch = run_batch(tmp_path / "all", "--input", str(write_jsonl(tmp_path / "all.jsonl", history + later)))
    history_ids = {r["id"] for r in history}
    cross = {(a, b) for a, b in pair_set(batch.pairs) if (a in history_ids) != (b in history_ids)}
    assert cross and cross <= pair_set(stream_pairs), "fp32 history settles matches near the threshold exactly"


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
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= len(posts))
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


def test_retention_forgets_posts_by_timer(pubsub, tmp_path):
    publisher, _ = pubsub
    topic, subscription = make_topic(pubsub, "retained")
    first, paraphrase, *_ = paraphrase_rows(2)
    with streaming(pubsub, topic, stream_flags(subscription, tmp_path / "out", "--retention", "2s")):
        publish(publisher, topic, first).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 1)
        time.sleep(5)  # the watermark moves past the first post's expiry, and its timer evicts it
        publish(publisher, topic, paraphrase).result()
        wait_for(lambda: len(read_folder(tmp_path / "out" / "clusters")) >= 2)
    assert read_folder(tmp_path / "out" / "pairs").empty, "the first post was forgotten before its paraphrase came"


def test_emulator_and_its_java_process_stop():
    with pubsub_emulator() as (_, _, process):
        assert process.poll() is None
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)
