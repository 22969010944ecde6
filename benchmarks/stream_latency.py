"""Streaming latency and throughput on the real Pub/Sub emulator, against the batch pipeline on the same texts.

    python -m benchmarks.stream_latency [--titles TITLES.tsv.gz] [--rates 10 50 100] [--history H]

For each rate: a fresh topic, ``semsim stream`` (BundleBasedDirectRunner, one-second windows), a warm-up, then posts
published at that rate for ``--seconds``. A watcher reads the clusters/ files as they appear; latency is from just
before a post is published to the moment its cluster row is on disk. Throughput at a rate is posts / (last row on
disk - first publish). The steady rate is measured on a backlog: ``--backlog`` posts published before the pipeline
starts, rate = the middle 80% of them / the time between the 10th and 90th percentile of their rows appearing (the
DirectRunner blocks up to 30 s in an empty pull, apache/beam#25442, which would otherwise dominate). The batch rate
is ``semsim batch`` (FnApiRunner, whole run incl. model load) on the same texts. With ``--history H`` (a store from
``semsim batch --history``) the streams at each rate match against it and append to it (``--commit-seconds 5``; use
a copy), and each also reports the time from launch to the first result; then a stream is restarted on the store and
its first result timed, with how many copies of the first stream's posts it finds as ``exact``; the peak RSS of
this process (the streams run in it) is printed.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.measure import machine
from benchmarks.titles import SAMPLE_TITLES, read_titles, write_titles
from pipelines.batch_dedup import run
from pipelines.streaming_dedup import start
from tests.pubsub_emulator import PROJECT, pubsub_emulator


class ClusterWatcher(threading.Thread):
    """Records when each id's cluster row first appears under ``folder``."""

    def __init__(self, folder: Path):
        super().__init__(daemon=True)
        self.folder = folder
        self.seen: dict[str, float] = {}
        self._read: set[Path] = set()
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for path in sorted(self.folder.rglob("*.parquet")) if self.folder.exists() else []:
                if path not in self._read:
                    now = time.time()
                    self._read.add(path)
                    for record_id in pd.read_parquet(path, columns=["id"])["id"]:
                        self.seen.setdefault(record_id, now)
            time.sleep(0.1)


def measure_rate(
    clients, texts: list[str], rate: float, seconds: float, workdir: Path, tag: str, flags: list[str]
) -> dict:
    publisher, subscriber = clients
    topic, subscription = f"projects/{PROJECT}/topics/load-{tag}", f"projects/{PROJECT}/subscriptions/load-{tag}"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    out = workdir / f"out-{tag}"
    watcher = ClusterWatcher(out / "clusters")
    watcher.start()
    launched = time.time()
    result = start(["--subscription", subscription, "--output", str(out), "--window-seconds", "1", *flags])
    try:
        warmup = [f"warm-{tag}-{i}" for i in range(10)]
        for i, post_id in enumerate(warmup):
            publisher.publish(topic, texts[-1 - i].encode("utf-8"), id=post_id)
        while not all(i in watcher.seen for i in warmup):
            time.sleep(0.2)
        first_result = min(watcher.seen[i] for i in warmup) - launched
        count = int(rate * seconds)
        published: dict[str, float] = {}
        start_time = time.time()
        for i, text in enumerate(texts[:count]):
            time.sleep(max(0.0, start_time + i / rate - time.time()))
            post_id = f"{tag}-{i}"
            published[post_id] = time.time()
            publisher.publish(topic, text.encode("utf-8"), id=post_id)
        deadline = time.time() + 120
        while not all(i in watcher.seen for i in published) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        result.cancel()
        watcher.stop.set()
    latencies = np.array([watcher.seen[i] - t for i, t in published.items() if i in watcher.seen])
    done = [watcher.seen[i] for i in published if i in watcher.seen]
    return {
        "rate": rate,
        "posts": len(published),
        "resolved": len(done),
        "p50": float(np.percentile(latencies, 50)),
        "p95": float(np.percentile(latencies, 95)),
        "throughput": len(done) / (max(done) - start_time),
        "first_result": first_result,
    }


def measure_restart(clients, texts: list[str], workdir: Path, tag: str, flags: list[str]) -> dict:
    """A stream started on the store after the others stopped: the time from launch to its first result, and how
    many copies (upper-cased) of ten posts the first stream committed it finds as ``exact`` pairs with them."""
    publisher, subscriber = clients
    topic, subscription = f"projects/{PROJECT}/topics/restart", f"projects/{PROJECT}/subscriptions/restart"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=60)
    out = workdir / "out-restart"
    watcher = ClusterWatcher(out / "clusters")
    watcher.start()
    launched = time.time()
    result = start(["--subscription", subscription, "--output", str(out), "--window-seconds", "1", *flags])
    copies = {f"copy-{tag}-{i}": f"{tag}-{i}" for i in range(10)}
    try:
        for i, copy in enumerate(copies):
            publisher.publish(topic, texts[i].upper().encode("utf-8"), id=copy)
        deadline = time.time() + 300
        while not all(i in watcher.seen for i in copies) and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(2)  # the pairs' window
    finally:
        result.cancel()
        watcher.stop.set()
    pairs = pd.read_parquet(out / "pairs") if (out / "pairs").exists() else pd.DataFrame(columns=["id_a", "id_b"])
    found = {tuple(sorted(p)) for p in pairs[pairs["kind"] == "exact"][["id_a", "id_b"]].itertuples(index=False)}
    return {
        "first_result": min(watcher.seen.values(), default=float("nan")) - launched,
        "exact": sum(tuple(sorted(item)) in found for item in copies.items()),
    }


def measure_backlog(clients, texts: list[str], workdir: Path) -> float:
    """Posts per second while ``semsim stream`` drains a backlog of ``texts``."""
    publisher, subscriber = clients
    topic, subscription = f"projects/{PROJECT}/topics/backlog", f"projects/{PROJECT}/subscriptions/backlog"
    publisher.create_topic(name=topic)
    subscriber.create_subscription(name=subscription, topic=topic, ack_deadline_seconds=600)
    for future in [publisher.publish(topic, t.encode("utf-8"), id=f"b{i}") for i, t in enumerate(texts)]:
        future.result()
    watcher = ClusterWatcher(workdir / "out-backlog" / "clusters")
    watcher.start()
    result = start(["--subscription", subscription, "--output", str(workdir / "out-backlog"), "--window-seconds", "1"])
    try:
        deadline = time.time() + 600
        while len(watcher.seen) < 0.9 * len(texts) and time.time() < deadline:
            time.sleep(0.2)
    finally:
        result.cancel()
        watcher.stop.set()
    seen = np.sort(np.array(list(watcher.seen.values())))
    first, last = seen[len(texts) // 10], seen[9 * len(texts) // 10 - 1]
    return (9 * len(texts) // 10 - len(texts) // 10) / (last - first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--titles", type=Path, default=SAMPLE_TITLES, help="titles file (default: the committed sample)"
    )
    parser.add_argument("--rates", type=float, nargs="+", default=[10, 50, 100])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--backlog", type=int, default=2000)
    parser.add_argument("--history", type=Path, help="a history store the streams match against and append to")
    args = parser.parse_args()
    flags = ["--history", str(args.history), "--commit-seconds", "5"] if args.history else []
    texts = read_titles(args.titles, max(int(max(args.rates) * args.seconds) + 20, args.backlog))
    with tempfile.TemporaryDirectory() as tmp, pubsub_emulator() as (publisher, subscriber, _):
        workdir = Path(tmp)
        rows = [
            measure_rate((publisher, subscriber), texts, r, args.seconds, workdir, f"r{int(r)}", flags)
            for r in args.rates
        ]
        first = f"r{int(args.rates[0])}"
        restart = measure_restart((publisher, subscriber), texts, workdir, first, flags) if args.history else None
        peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        steady = measure_backlog((publisher, subscriber), texts[: args.backlog], workdir)
        source = write_titles(workdir, texts)
        began = time.perf_counter()
        run(["--input", str(source), "--output", str(workdir / "batch")])
        batch_rate = len(texts) / (time.perf_counter() - began)
    print(f"batch (semsim batch, {len(texts)} titles, whole run): {batch_rate:.1f} posts/s")
    print(machine())
    if args.history:
        print(f"history {args.history}; peak RSS of the streams' process {peak_rss:.0f} MB")
    print(f"{'rate/s':>7} {'posts':>6} {'resolved':>8} {'p50 s':>6} {'p95 s':>6} {'sustained/s':>11} {'vs batch':>8} "
          f"{'first result s':>14}")  # fmt: skip
    for r in rows:
        print(
            f"{r['rate']:>7.0f} {r['posts']:>6} {r['resolved']:>8} {r['p50']:>6.2f} {r['p95']:>6.2f} "
            f"{r['throughput']:>11.1f} {r['throughput'] / batch_rate:>7.2f}x {r['first_result']:>14.1f}"
        )
    print(f"steady rate draining a backlog of {args.backlog}: {steady:.1f} posts/s = {steady / batch_rate:.2f}x batch")
    if restart:
        print(
            f"restart on the store: first result {restart['first_result']:.1f} s after launch; copies of the first "
            f"stream's posts found as exact: {restart['exact']} of 10"
        )


if __name__ == "__main__":
    main()
