"""Streaming match: embed posts in small batches, query-then-insert them in per-cell Beam state, and resolve each
post's pairs and cluster once every cell it went to has answered."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import BooleanCoder, PickleCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    CombiningValueStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import BoundedWindow
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from semsim_core.cells import assign_cells
from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.normalize import text_hash
from semsim_core.records import EXACT, SEMANTIC, ClusterAssignment, Record, make_pair
from semsim_core.rescore import ScoreBand, cosine
from semsim_core.streaming import CellIndex, Entry, Fp32Scores, Outcome, earliest, utc_iso
from transforms import METRICS_NAMESPACE
from transforms.embed import EmbedBatchFn

PAIRS = "pairs"
NOTIFICATIONS = "notifications"


class Post(NamedTuple):
    """An embedded post on its way to its cells; ``cells[0]`` is its primary cell (where it is stored). ``text``
    travels along for fp32 rescoring."""

    id: str
    vector: np.ndarray
    text_hash: str
    timestamp: float
    cells: tuple[int, ...]
    text: str


class Answer(NamedTuple):
    """One cell's answer about one post; ``expected`` is how many cells the post went to."""

    cell: int
    primary: bool
    expected: int
    outcome: Outcome


class EmbedPostsFn(EmbedBatchFn):
    """Records -> :class:`Post` keyed by each of its cells (nearest first).

    Records are embedded in batches of at most ``batch_size`` cut from each bundle: a full batch is embedded at once,
    the rest when the bundle ends, so a post never waits for later posts to arrive.
    """

    def __init__(self, shared: Shared, config: EmbedConfig, centroids, margin: float):
        super().__init__(shared, config)
        self._centroids = centroids
        self._margin = margin

    def start_bundle(self) -> None:
        super().start_bundle()
        self._pending: list[tuple[Record, Timestamp, BoundedWindow]] = []

    def process(
        self, record: Record, timestamp=beam.DoFn.TimestampParam, window=beam.DoFn.WindowParam
    ) -> Iterator[WindowedValue]:
        self._pending.append((record, timestamp, window))
        if len(self._pending) >= self._config.batch_size:
            yield from self._flush()

    def finish_bundle(self) -> Iterator[WindowedValue]:
        yield from self._flush()

    def _flush(self) -> Iterator[WindowedValue]:
        batch, self._pending = self._pending, []
        if not batch:
            return
        vectors = self.embed([record.text for record, _, _ in batch])
        if self._centroids is None:
            cells = [(0,)] * len(batch)
        else:
            cells = assign_cells(vectors, self._centroids, self._margin)
        for (record, timestamp, window), vector, vector_cells in zip(batch, vectors, cells, strict=True):
            post = Post(record.id, vector, text_hash(record.text), float(timestamp), vector_cells, record.text)
            for rank, cell in enumerate(vector_cells):
                yield WindowedValue((cell, (post, rank == 0)), timestamp, (window,))


class CellStateFn(beam.DoFn):
    """Keyed by cell. Beam state (a bag of :class:`Entry`) is the source of truth; a :class:`CellIndex` per cell is
    the worker's cache, rebuilt from state (and seeds) whenever the state's entry count differs from the cache's.

    Primary posts are queried then inserted; probe copies are only queried. Matches in ``band`` are rescored with
    the ``fp32`` model (loaded once per worker, on the first such match) before a post's cluster is decided; stored
    posts then keep their text. Retention: an event-time timer evicts posts older than ``retention_seconds``;
    ``max_per_cell`` keeps only the newest posts.
    """

    ENTRIES = BagStateSpec("entries", PickleCoder())
    COUNT = CombiningValueStateSpec("count", sum)
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)
    FP32_CACHE = 10_000  # fp32 vectors kept per DoFn instance, most recently used

    def __init__(
        self,
        band: ScoreBand,
        fp32: EmbedConfig | None,
        retention_seconds: float | None,
        max_per_cell: int | None,
        seeds=None,
    ):
        self._band = band
        self._fp32 = fp32
        self._shared = Shared()
        self._retention = retention_seconds
        self._max_per_cell = max_per_cell
        self._seeds = seeds or {}
        self._rescored = Metrics.counter(METRICS_NAMESPACE, "rescored_pairs")

    def setup(self) -> None:
        self._cache: dict[int, tuple[int, CellIndex]] = {}
        self._fp32_model: Embedder | None = None
        self._fp32_vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def _fp32_vector_of(self, texts: dict[str, str]) -> dict[str, np.ndarray]:
        """fp32 vectors of ``{id: text}``, from the cache or embedded now."""
        missing = [i for i in texts if i not in self._fp32_vectors]
        if missing:
            if self._fp32_model is None:
                self._fp32_model = self._shared.acquire(self._fp32.load, tag=self._fp32)
            for i, vector in zip(missing, self._fp32_model.encode([texts[i] for i in missing]), strict=True):
                self._fp32_vectors[i] = vector
        for i in texts:
            self._fp32_vectors.move_to_end(i)
        while len(self._fp32_vectors) > self.FP32_CACHE:
            self._fp32_vectors.popitem(last=False)
        return {i: self._fp32_vectors[i] for i in texts}

    def _fp32_scores(self, post: Post) -> Fp32Scores | None:
        if not self._band.band:
            return None

        def scores(stored: list[Entry]) -> list[float | None]:
            vectors = self._fp32_vector_of({post.id: post.text, **{e.id: e.text for e in stored if e.text}})
            vectors.update({e.id: e.vector for e in stored if e.fp32})
            return [cosine(vectors[post.id], vectors[e.id]) if e.id in vectors else None for e in stored]

        return scores

    def _index(self, cell: int, entries, count) -> CellIndex:
        stored = count.read()
        cached = self._cache.get(cell)
        if cached is None or cached[0] != stored:
            index = CellIndex()
            for entry in [*self._seeds.get(cell, ()), *entries.read()]:
                index.insert(entry)
            self._cache[cell] = (stored, index)
        return self._cache[cell][1]

    def _rewrite(self, cell: int, index: CellIndex, entries, count) -> None:
        seeded = {s.id for s in self._seeds.get(cell, ())}
        kept = [e for e in index.entries() if e.id not in seeded]
        entries.clear()
        for entry in kept:
            entries.add(entry)
        count.clear()
        count.add(len(kept))
        self._cache[cell] = (len(kept), index)

    def _schedule_expiry(self, index: CellIndex, expire) -> None:
        if self._retention and index.seen:
            expire.set(Timestamp(min(index.seen.values()) + self._retention))

    def process(
        self,
        element: tuple[int, tuple[Post, bool]],
        entries=beam.DoFn.StateParam(ENTRIES),
        count=beam.DoFn.StateParam(COUNT),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> Iterator[tuple[str, Answer]]:
        cell, (post, primary) = element
        index = self._index(cell, entries, count)
        fp32 = self._fp32_scores(post)
        if not primary:
            outcome = index.probe(post.vector, self._band, fp32)
        else:
            text = post.text if self._band.band else ""
            outcome = index.add(post.id, post.vector, post.text_hash, post.timestamp, self._band, fp32, text)
        self._rescored.inc(outcome.rescored)
        if not primary:
            yield post.id, Answer(cell, False, len(post.cells), outcome)
            return
        if not outcome.seen_before:
            entries.add(index.entries()[-1])
            count.add(1)
            self._cache[cell] = (self._cache[cell][0] + 1, index)
            if self._max_per_cell and len(index) > self._max_per_cell:
                index.evict(keep_newest=self._max_per_cell)
                self._rewrite(cell, index, entries, count)
            self._schedule_expiry(index, expire)
        yield post.id, Answer(cell, True, len(post.cells), outcome)

    @on_timer(EXPIRE)
    def expire_old_posts(
        self,
        cell=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        entries=beam.DoFn.StateParam(ENTRIES),
        count=beam.DoFn.StateParam(COUNT),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> None:
        index = self._index(cell, entries, count)
        if index.evict(older_than=float(fired) - self._retention + 1e-6):
            self._rewrite(cell, index, entries, count)
        self._schedule_expiry(index, expire)


class ResolveFn(beam.DoFn):
    """Keyed by post id: waits for every cell's :class:`Answer`, then emits the post's cluster assignment, its pairs
    (``pairs``) and, when it matched, one notification naming the earliest matching post (``notifications``). A
    re-delivered post is resolved once; with a retention horizon, that memory is dropped by a timer when the post
    itself is forgotten."""

    ANSWERS = BagStateSpec("answers", PickleCoder())
    DONE = ReadModifyWriteStateSpec("done", BooleanCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, retention_seconds: float | None = None):
        self._retention = retention_seconds

    def process(
        self,
        element: tuple[str, Answer],
        timestamp=beam.DoFn.TimestampParam,
        answers=beam.DoFn.StateParam(ANSWERS),
        done=beam.DoFn.StateParam(DONE),
        forget=beam.DoFn.TimerParam(FORGET),
    ) -> Iterator:
        post_id, answer = element
        if done.read():
            return
        answers.add(answer)
        received = list(answers.read())
        if len(received) < answer.expected:
            return
        done.write(True)
        answers.clear()
        if self._retention:
            forget.set(Timestamp(float(timestamp) + self._retention))
        primary = next(a for a in received if a.primary).outcome
        if primary.seen_before:
            return
        cluster = primary.cluster_id
        yield ClusterAssignment(post_id, cluster, cluster == post_id, primary.cluster_size)
        matches = [match for a in received for match in a.outcome.matches]
        kinds = {match.id: EXACT if match.id == primary.exact_of else SEMANTIC for match in matches}
        for match in matches:
            yield beam.pvalue.TaggedOutput(PAIRS, make_pair(post_id, match.id, match.score, kinds[match.id]))
        first = earliest(matches)
        if first is not None:
            notification = {
                "id": post_id,
                "duplicate_of": first.id,
                "score": first.score,
                "kind": kinds[first.id],
                "cluster_id": cluster,
                "time": utc_iso(float(timestamp)),
                "duplicate_of_time": utc_iso(first.timestamp),
                "matches": len(matches),
            }
            yield beam.pvalue.TaggedOutput(NOTIFICATIONS, notification)

    @on_timer(FORGET)
    def forget_post(self, done=beam.DoFn.StateParam(DONE)) -> None:
        done.clear()


class MatchPosts(beam.PTransform):
    """Records -> ``clusters`` (:class:`ClusterAssignment`), ``pairs`` (:class:`Pair`) and ``notifications``.

    Posts are embedded in batches of at most ``batch_size`` cut from each bundle (a post never waits for a batch to
    fill), keyed by every cell within ``margin`` of their nearest centroid (one cell without
    ``centroids``), matched against per-cell state (matches within ``band`` of the threshold rescored with fp32),
    then resolved per post.
    """

    def __init__(
        self,
        config: EmbedConfig,
        band: ScoreBand,
        centroids: np.ndarray | None,
        margin: float,
        retention_seconds: float | None = None,
        max_per_cell: int | None = None,
        seeds: dict[int, Sequence[Entry]] | None = None,
    ):
        super().__init__()
        self._embed = EmbedPostsFn(Shared(), config, centroids, margin)
        self._cells = CellStateFn(band, config.fp32() if band.band else None, retention_seconds, max_per_cell, seeds)
        self._resolve = ResolveFn(retention_seconds)

    def expand(self, records):
        return (
            records
            | "EmbedAndAssignCells" >> beam.ParDo(self._embed)
            | "MatchInCell" >> beam.ParDo(self._cells)
            | "Resolve" >> beam.ParDo(self._resolve).with_outputs(PAIRS, NOTIFICATIONS, main="clusters")
        )


def seed_entries(
    ids: Sequence[str], vectors: np.ndarray, clusters: dict[str, str], centroids: np.ndarray | None, fp32: bool
) -> dict[int, list[Entry]]:
    """History from a batch run (its embeddings and cluster ids) as entries of each vector's nearest cell; ``fp32``:
    the run's backend was fp32, so its vectors can settle matches near the threshold."""
    nearest = [0] * len(ids) if centroids is None else [c[0] for c in assign_cells(vectors, centroids, 0.0)]
    seeded_at = time.time()
    by_cell: dict[int, list[Entry]] = {}
    for record_id, vector, cell in zip(ids, vectors, nearest, strict=True):
        vector = np.ascontiguousarray(vector, np.float32)
        entry = Entry(record_id, vector, "", seeded_at, clusters.get(record_id, record_id), fp32=fp32)
        by_cell.setdefault(cell, []).append(entry)
    return by_cell
