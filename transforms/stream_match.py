"""Streaming match: embed posts in small batches, query-then-insert them in per-cell Beam state, and resolve each
post's pairs and cluster once every cell it went to has answered."""

from __future__ import annotations

import math
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from functools import partial
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.coders import BooleanCoder, FloatCoder, PickleCoder, StrUtf8Coder, TupleCoder, VarIntCoder
from apache_beam.metrics import Metrics
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.transforms.userstate import (
    BagStateSpec,
    ReadModifyWriteStateSpec,
    TimerSpec,
    on_timer,
)
from apache_beam.transforms.window import BoundedWindow, TimestampedValue
from apache_beam.utils.shared import Shared
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from semsim_core.cells import assign_cells
from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.normalize import text_hash
from semsim_core.records import EXACT, SEMANTIC, ClusterAssignment, ClusterChange, DeadLetter, Record, make_pair
from semsim_core.rescore import ScoreBand, cosine
from semsim_core.stream_history import AcceptedPost, StreamHistory
from semsim_core.streaming import (
    Bucket,
    CellIndex,
    Entry,
    Fp32Scores,
    Outcome,
    earliest,
    next_bucket,
    utc_iso,
)
from transforms import DEAD_LETTER, METRICS_NAMESPACE
from transforms.embed import EmbedBatchFn, keep_for_process
from transforms.vector_coder import EntryCoder

PAIRS = "pairs"
NOTIFICATIONS = "notifications"
ACCEPTED = "accepted"  # an AcceptedPost per post the stream stored: what it appends to a history store
CHANGES = "cluster_changes"
REDELIVERY_GUARD_SECONDS = 7 * 24 * 3600.0  # Pub/Sub keeps an unacknowledged message at most 7 days
RESOLVE_TIMEOUT_SECONDS = 300.0


class Post(NamedTuple):
    """An embedded post on its way to its cells (nearest first: the *primary* cell, whose decision is the post's
    cluster); it is stored in each of them. ``text`` travels along for fp32 rescoring."""

    id: str
    vector: np.ndarray
    text_hash: str
    timestamp: float
    cells: tuple[int, ...]
    text: str
    source: str = ""  # where the record came from (``pubsub:<message id>``), for a dead letter


class Answer(NamedTuple):
    """One cell's answer about one post: ``cells`` are all the cells the post went to (its primary first), and
    ``timestamp`` its event time in seconds; the primary cell's answer carries the ``post`` (for the history)."""

    cell: int
    cells: tuple[int, ...]
    timestamp: float
    outcome: Outcome
    post: Post | None = None


def reused_id(post_id: str) -> str:
    """The reason of the dead letter of a message whose id names an earlier post with another text."""
    return f"id {post_id!r} names an earlier post with another text (an id names one post)"


class ClaimIdFn(beam.DoFn):
    """Keyed by post id, before any cell sees the post: the first text the stream meets under an id claims the id
    (its text hash, kept until the post's event time plus the retention horizon, as long as cells keep the post;
    without a horizon, for good); a later message with that id and another text is a dead letter here, so no cell
    stores it (cells are sharded: one that never held the id could not tell). Messages with the claimed text go on:
    re-deliveries, which the cells and :class:`ResolveFn` recognise. An unclaimed id that a ``history`` store holds
    with another text is a dead letter too (:meth:`StreamHistory.names_another_text`)."""

    CLAIM = ReadModifyWriteStateSpec("claim", StrUtf8Coder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)

    def __init__(self, retention_seconds: float | None = None, history: StreamHistory | None = None):
        self._retention = retention_seconds
        self._history = history
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(
        self,
        element: tuple[str, Record],
        timestamp=beam.DoFn.TimestampParam,
        claim=beam.DoFn.StateParam(CLAIM),
        forget=beam.DoFn.TimerParam(FORGET),
    ) -> Iterator:
        post_id, record = element
        hashed, claimed = text_hash(record.text), claim.read()
        if claimed is None:
            taken = self._history is not None and self._history.names_another_text(post_id, hashed)
            if not taken:
                claim.write(hashed)
                if self._retention:
                    forget.set(Timestamp(float(timestamp) + self._retention))
        else:
            taken = claimed != hashed
        if taken:
            self._dead_letters.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, DeadLetter(record.source, record.text, reused_id(post_id)))
        else:
            yield record

    @on_timer(FORGET)
    def forget_claim(self, claim=beam.DoFn.StateParam(CLAIM)) -> None:
        claim.clear()


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
            post = Post(
                record.id, vector, text_hash(record.text), float(timestamp), vector_cells, record.text, record.source
            )
            for cell in vector_cells:
                yield WindowedValue((cell, post), timestamp, (window,))


class _CachedCell(NamedTuple):
    token: str | None  # the state's version token the index was built at
    index: CellIndex
    from_history: set[str]  # ids that came from the history store (never written to state)
    buckets: list[set[str]]  # per bag of state: the ids in it the index still holds


class _CellCache:
    """The cells one worker process holds, for every :class:`CellStateFn` instance of one pipeline it runs (runners
    may make instances often: the local runner makes one per bundle). A bundle takes a cell out while it works on it
    and puts it back after, so a bundle that fails midway leaves nothing half-changed behind. Least recently used
    cells go first beyond ``max_bytes``."""

    def __init__(self, max_bytes: int):
        self._max_bytes = max_bytes
        self._cells: OrderedDict[int, _CachedCell] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, cell: int) -> _CachedCell | None:
        with self._lock:
            return self._cells.pop(cell, None)

    def cells(self) -> list[_CachedCell]:
        with self._lock:
            return list(self._cells.values())

    def put(self, cell: int, cached: _CachedCell) -> None:
        with self._lock:
            self._cells[cell] = cached
            total = sum(c.index.nbytes() for c in self._cells.values())
            while total > self._max_bytes and len(self._cells) > 1:
                total -= self._cells.popitem(last=False)[1].index.nbytes()


_process_caches: dict[str, _CellCache] = {}  # one per CellStateFn of a pipeline (its key), in this process
_process_caches_lock = threading.Lock()


def cells_held(cache_key: str) -> str:
    """The cells one stream (its :class:`CellStateFn`'s ``cache_key``) holds in this worker process, and their size:
    for the stream's status line."""
    with _process_caches_lock:
        cache = _process_caches.get(cache_key)
    cells = cache.cells() if cache else []
    return f"cells held {len(cells):,}, {sum(c.index.nbytes() for c in cells) / 2**20:,.0f} MB"


BUCKETS = 6  # bags of Beam state per cell: eviction clears a bag once the index holds none of its posts
_META_CODER = TupleCoder((StrUtf8Coder(), VarIntCoder(), FloatCoder(), VarIntCoder()))


class CellState(NamedTuple):
    """The Beam state of one cell, as :class:`CellStateFn` is handed it."""

    buckets: tuple  # BUCKETS bags of Entry: the posts the stream stored in the cell
    meta: object  # (version token that every write replaces, the current bucket: index, start, count)
    floor: object  # the latest event time evicted: history records up to it stay out

    def token(self) -> str | None:
        meta = self.meta.read()
        return meta[0] if meta else None

    def bucket(self) -> Bucket | None:
        meta = self.meta.read()
        return Bucket(*meta[1:]) if meta else None

    def write(self, bucket: Bucket | None) -> str:
        """Record a write: a new version token (returned) and the current bucket."""
        token = uuid.uuid4().hex
        self.meta.write((token, *(bucket or Bucket(0, 0.0, 0))))
        return token


class CellStateFn(beam.DoFn):
    """Keyed by cell. Beam state is the source of truth: :data:`BUCKETS` bags of :class:`Entry`
    (:class:`EntryCoder`) and a version token that every write replaces. A :class:`CellIndex` per cell is the worker
    process's cache (shared by the DoFn's instances there, :class:`_CellCache`, within ``cache_bytes``), trusted only
    while the state holds the token it was built at: Beam runs several instances and processes for one key over
    time, and a failed bundle commits nothing, so a count, or a token written in a bundle that failed, could match a
    state the cache never saw.

    With a ``history`` store, a cell's stored records join its index when the cache is built (read from the store
    by the worker, never written to state; ``history_cells_read`` counts the reads), less those older than the
    retention horizon or than what the cell has evicted (``history_floor``, in state).

    Each post is queried then inserted in every cell it belongs to; a match is reported only by the smallest cell
    the two posts share (:func:`~semsim_core.streaming.reported_in`), where one of them certainly found the other,
    whichever came first. Matches in ``band`` are rescored with
    the ``fp32`` model (loaded once per worker, on the first such match) before a post's cluster is decided; stored
    posts then keep their text.

    Eviction never rewrites state: a post goes to the current bag of state until that bag spans a quarter of
    ``retention_seconds`` or holds a quarter of ``max_per_cell`` (:func:`~semsim_core.streaming.next_bucket`), and a
    bag is cleared once the index holds none of its posts. The index forgets posts older than ``retention_seconds``
    by an event-time timer on a grid of the bucket width (queries skip them before), and, once ``max_per_cell`` plus
    a bucket's worth are stored, all but the newest ``max_per_cell`` (exact copies count).
    """

    BUCKET_SPECS = tuple(BagStateSpec(f"bucket_{i}", EntryCoder()) for i in range(BUCKETS))
    META = ReadModifyWriteStateSpec("meta", _META_CODER)
    FLOOR = ReadModifyWriteStateSpec("history_floor", FloatCoder())
    EXPIRE = TimerSpec("expire", TimeDomain.WATERMARK)
    FP32_CACHE = 10_000  # fp32 vectors kept per DoFn instance, most recently used

    def __init__(
        self,
        band: ScoreBand,
        fp32: EmbedConfig | None,
        retention_seconds: float | None,
        max_per_cell: int | None,
        history: StreamHistory | None = None,
        cache_bytes: int = 2 << 30,
    ):
        self._band = band
        self._fp32 = fp32
        self._shared = Shared()
        self._retention = retention_seconds
        self._max_per_cell = max_per_cell
        self._history = history
        self._cache_bytes = cache_bytes
        self.cache_key = uuid.uuid4().hex  # the same in every copy of this DoFn: they share a process's cells
        live = BUCKETS - 2  # buckets within the limits: one more fills, one more is free to rotate into
        self._width = retention_seconds / live if retention_seconds else None
        self._capacity = -(-max_per_cell // live) if max_per_cell else None
        self._rescored = Metrics.counter(METRICS_NAMESPACE, "rescored_pairs")
        self._rebuilds = Metrics.counter(METRICS_NAMESPACE, "cell_cache_rebuilds")
        self._history_reads = Metrics.counter(METRICS_NAMESPACE, "history_cells_read")
        self._cleared = Metrics.counter(METRICS_NAMESPACE, "cell_buckets_cleared")

    def setup(self) -> None:
        with _process_caches_lock:
            self._cells = _process_caches.setdefault(self.cache_key, _CellCache(self._cache_bytes))
        self._fp32_model: Embedder | None = None
        self._fp32_vectors: OrderedDict[str, np.ndarray] = OrderedDict()

    def _fp32_vector_of(self, texts: list[str]) -> dict[str, np.ndarray]:
        """fp32 vectors of ``texts``, by text (not by id: an id may come again with another text), from the cache
        or embedded now."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._fp32_vectors))
        if missing:
            if self._fp32_model is None:
                self._fp32_model = self._shared.acquire(self._fp32.load, tag=self._fp32)
                keep_for_process(self._fp32, self._fp32_model)
            for text, vector in zip(missing, self._fp32_model.encode(missing), strict=True):
                self._fp32_vectors[text] = vector
        for text in texts:
            self._fp32_vectors.move_to_end(text)
        while len(self._fp32_vectors) > self.FP32_CACHE:
            self._fp32_vectors.popitem(last=False)
        return {text: self._fp32_vectors[text] for text in texts}

    def _fp32_scores(self, post: Post) -> Fp32Scores | None:
        if not self._band.band:
            return None

        def scores(stored: list[Entry]) -> list[float | None]:
            vectors = self._fp32_vector_of([post.text, *(e.text for e in stored if e.text)])
            return [cosine(vectors[post.text], vectors[e.text]) if e.text else None for e in stored]

        return scores

    def _take(self, cell: int, state: CellState, horizon: float | None) -> _CachedCell:
        """The cell as its state holds it now, taken out of the process's cache: the cached index if the state's
        token is the one it was built at, else rebuilt from the history store (records later than ``horizon`` and
        the cell's floor) and state. Put it back with :meth:`_CellCache.put` when done."""
        token = state.token()
        cached = self._cells.take(cell)
        if cached is not None and cached.token == token:
            return cached
        self._rebuilds.inc()
        index = CellIndex()
        own = [list(bag.read()) for bag in state.buckets]
        loaded: list[Entry] = []
        if self._history is not None:
            self._history_reads.inc()
            bounds = [b for b in (horizon, state.floor.read()) if b is not None]
            ids = {e.id for bag in own for e in bag}
            loaded = [e for e in self._history.cell_entries(cell, max(bounds, default=None)) if e.id not in ids]
        for entry in [*loaded, *(e for bag in own for e in bag)]:
            index.insert(entry)
        return _CachedCell(token, index, {e.id for e in loaded}, [{e.id for e in bag} for bag in own])

    def _evict(self, cached: _CachedCell, state: CellState, **limits) -> _CachedCell:
        """Evict from the index by ``limits`` (:meth:`CellIndex.evict`); clear each bag of state the index now
        holds none of (history records stay in the store, below the new floor)."""
        gone = set(cached.index.evict(**limits))
        if not gone:
            return cached
        for bag, ids in zip(state.buckets, cached.buckets, strict=True):
            if ids and ids <= gone:
                bag.clear()
                self._cleared.inc()
            ids -= gone
        if self._history is not None:
            state.floor.write(cached.index.evicted_until)
        return cached._replace(token=state.write(state.bucket()))

    def _store(self, cached: _CachedCell, state: CellState, entry: Entry) -> _CachedCell:
        """Add a stored post to the current bucket's bag, then keep ``max_per_cell`` (lazily: once one bucket's
        worth more has come)."""
        free = [i for i, ids in enumerate(cached.buckets) if not ids]
        bucket = next_bucket(state.bucket(), entry.timestamp, self._width, self._capacity, free)
        state.buckets[bucket.index].add(entry)
        cached.buckets[bucket.index].add(entry.id)
        cached = cached._replace(token=state.write(bucket))
        if self._max_per_cell and len(cached.index.seen) > self._max_per_cell + self._capacity:
            cached = self._evict(cached, state, keep_newest=self._max_per_cell)
        return cached

    def _schedule_expiry(self, index: CellIndex, expire) -> None:
        """Arm the retention timer at the oldest post's horizon, rounded up to a multiple of the bucket width: the
        index evicts (and is rebuilt) at most once per width, whatever the traffic."""
        if self._retention and index.seen:
            due = min(index.seen.values()) + self._retention
            expire.set(Timestamp(math.ceil(due / self._width) * self._width))

    def _horizon(self, now: float) -> float | None:
        return now - self._retention if self._retention else None

    def process(
        self,
        element: tuple[int, Post],
        bucket_0=beam.DoFn.StateParam(BUCKET_SPECS[0]),
        bucket_1=beam.DoFn.StateParam(BUCKET_SPECS[1]),
        bucket_2=beam.DoFn.StateParam(BUCKET_SPECS[2]),
        bucket_3=beam.DoFn.StateParam(BUCKET_SPECS[3]),
        bucket_4=beam.DoFn.StateParam(BUCKET_SPECS[4]),
        bucket_5=beam.DoFn.StateParam(BUCKET_SPECS[5]),
        meta=beam.DoFn.StateParam(META),
        floor=beam.DoFn.StateParam(FLOOR),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> Iterator[tuple[str, Answer]]:
        cell, post = element
        primary = cell == post.cells[0]
        state = CellState((bucket_0, bucket_1, bucket_2, bucket_3, bucket_4, bucket_5), meta, floor)
        horizon = self._horizon(post.timestamp)
        cached = self._take(cell, state, horizon)
        index = cached.index
        fp32 = self._fp32_scores(post)
        text = post.text if self._band.band else ""
        outcome = index.add(
            post.id, post.vector, post.text_hash, post.timestamp, self._band, fp32, text, post.cells, horizon, cell
        )
        self._rescored.inc(outcome.rescored)
        if not outcome.seen_before:
            cached = self._store(cached, state, index.entry(post.id))
            self._schedule_expiry(index, expire)
        self._cells.put(cell, cached)
        yield post.id, Answer(cell, post.cells, post.timestamp, outcome, post if primary else None)

    @on_timer(EXPIRE)
    def expire_old_posts(
        self,
        cell=beam.DoFn.KeyParam,
        fired=beam.DoFn.TimestampParam,
        bucket_0=beam.DoFn.StateParam(BUCKET_SPECS[0]),
        bucket_1=beam.DoFn.StateParam(BUCKET_SPECS[1]),
        bucket_2=beam.DoFn.StateParam(BUCKET_SPECS[2]),
        bucket_3=beam.DoFn.StateParam(BUCKET_SPECS[3]),
        bucket_4=beam.DoFn.StateParam(BUCKET_SPECS[4]),
        bucket_5=beam.DoFn.StateParam(BUCKET_SPECS[5]),
        meta=beam.DoFn.StateParam(META),
        floor=beam.DoFn.StateParam(FLOOR),
        expire=beam.DoFn.TimerParam(EXPIRE),
    ) -> None:
        state = CellState((bucket_0, bucket_1, bucket_2, bucket_3, bucket_4, bucket_5), meta, floor)
        horizon = self._horizon(float(fired))
        cached = self._evict(self._take(cell, state, horizon), state, older_than=horizon + 1e-6)
        self._schedule_expiry(cached.index, expire)
        self._cells.put(cell, cached)


def _answer_per_cell(received: Iterable[Answer]) -> dict[int, Answer]:
    """One answer per cell: a re-delivered post can be answered twice by a cell, the second time ``seen_before``;
    the first answer is the one that decided."""
    chosen: dict[int, Answer] = {}
    for answer in received:
        if answer.cell not in chosen or chosen[answer.cell].outcome.seen_before:
            chosen[answer.cell] = answer
    return chosen


def _primary(by_cell: dict[int, Answer]) -> Answer | None:
    """The answer of the post's primary (nearest) cell, when it came."""
    return by_cell.get(next(iter(by_cell.values())).cells[0])


def _decided(by_cell: dict[int, Answer]) -> bool:
    """Every cell of the post answered, and its primary cell stored it now (not ``seen_before``)."""
    primary = _primary(by_cell)
    return primary is not None and not primary.outcome.seen_before and set(primary.cells) <= set(by_cell)


class ResolveFn(beam.DoFn):
    """Keyed by post id: waits for an answer from every cell the post went to, then emits the post's cluster
    assignment, its pairs (``pairs``), the cluster ids its arrival merged (``cluster_changes``) and, when it matched,
    one notification naming the earliest matching post (``notifications``).

    The post's cluster is that of its best reported match in any cell (highest score, then smaller id), else its
    own id: the cell that reports the match stored the post in that cluster too. Every other cluster id a cell
    stored the post under, or that a reported match carries, is merged into it: one :class:`ClusterChange` each
    (cells decide before they hear from each other, so two posts arriving together can leave a cell holding an id
    that another cell's answer replaced; applied in order, the changes give every pair one cluster).

    Answers are tracked per cell, so a re-delivered post's second answers (``seen_before``) neither count twice nor
    decide. A post that is not decided ``timeout_seconds`` (processing time) after its first answer is resolved with
    what arrived (``resolve_timeouts``), and without its primary cell's answer not appended to the history; a post
    whose only primary answer says ``seen_before`` was resolved before, and emits nothing. Once resolved, a post id
    is remembered until its event time plus the retention horizon (or ``guard_seconds`` without one, Pub/Sub's
    longest message retention by default), so re-deliveries in that time resolve nothing.
    A stored post that matches itself (a re-delivery racing its own insert) gives no pair (``self_matches``). A
    message whose primary cell holds its id with another text (``Outcome.other_text``: a post of a history store
    before this stream; within the stream :class:`ClaimIdFn` stops them) is a dead letter.
    """

    ANSWERS = BagStateSpec("answers", PickleCoder())
    DONE = ReadModifyWriteStateSpec("done", BooleanCoder())
    FORGET = TimerSpec("forget", TimeDomain.WATERMARK)
    TIMEOUT = TimerSpec("timeout", TimeDomain.REAL_TIME)

    def __init__(
        self,
        retention_seconds: float | None = None,
        guard_seconds: float = REDELIVERY_GUARD_SECONDS,
        timeout_seconds: float = RESOLVE_TIMEOUT_SECONDS,
    ):
        self._guard = retention_seconds or guard_seconds
        self._timeout = timeout_seconds
        self._timeouts = Metrics.counter(METRICS_NAMESPACE, "resolve_timeouts")
        self._self_matches = Metrics.counter(METRICS_NAMESPACE, "self_matches")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(
        self,
        element: tuple[str, Answer],
        answers=beam.DoFn.StateParam(ANSWERS),
        done=beam.DoFn.StateParam(DONE),
        forget=beam.DoFn.TimerParam(FORGET),
        timeout=beam.DoFn.TimerParam(TIMEOUT),
    ) -> Iterator:
        post_id, answer = element
        if answer.post is not None and answer.outcome.other_text:  # on the primary answer: one per message
            self._dead_letters.inc()
            dead = DeadLetter(answer.post.source, answer.post.text, reused_id(post_id))
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, dead)
        if done.read():
            return
        received = [*answers.read(), answer]
        if not _decided(_answer_per_cell(received)):
            if len(received) == 1:
                timeout.set(Timestamp.now() + self._timeout)
            answers.add(answer)
            return
        yield from self._resolve(post_id, received, answers, done, forget, timeout)

    @on_timer(TIMEOUT)
    def give_up_waiting(
        self,
        post_id=beam.DoFn.KeyParam,
        answers=beam.DoFn.StateParam(ANSWERS),
        done=beam.DoFn.StateParam(DONE),
        forget=beam.DoFn.TimerParam(FORGET),
        timeout=beam.DoFn.TimerParam(TIMEOUT),
    ) -> Iterator:
        received = list(answers.read())
        if done.read() or not received:
            return
        self._timeouts.inc()
        at = received[0].timestamp
        for output in self._resolve(post_id, received, answers, done, forget, timeout):
            if isinstance(output, beam.pvalue.TaggedOutput):
                yield beam.pvalue.TaggedOutput(output.tag, TimestampedValue(output.value, at))
            else:
                yield TimestampedValue(output, at)

    def _resolve(self, post_id: str, received: list[Answer], answers, done, forget, timeout) -> Iterator:
        by_cell = _answer_per_cell(received)
        first = received[0]
        done.write(True)
        answers.clear()
        timeout.clear()
        forget.set(Timestamp(first.timestamp + self._guard))
        primary = _primary(by_cell)
        if primary is not None and primary.outcome.seen_before:
            return  # resolved before: a re-delivery
        answered = [a.outcome for a in by_cell.values() if not a.outcome.seen_before]
        matches = [m for outcome in answered for m in outcome.matches if m.id != post_id]
        self._self_matches.inc(sum(m.id == post_id for outcome in answered for m in outcome.matches))
        copies_of = {outcome.exact_of for outcome in answered} - {None}
        best = min(matches, key=lambda m: (-m.score, m.id), default=None)
        cluster = best.cluster_id if best else post_id
        size = max((outcome.cluster_size for outcome in answered if outcome.cluster_id == cluster), default=0)
        merged = sorted(({o.cluster_id for o in answered} | {m.cluster_id for m in matches}) - {cluster, None})
        yield ClusterAssignment(post_id, cluster, cluster == post_id, size)
        for previous in merged:
            yield beam.pvalue.TaggedOutput(CHANGES, ClusterChange(post_id, cluster, previous))
        if primary is not None:  # stored in its cells: the history gets it too
            post = primary.post
            copy = primary.outcome.exact_of is not None  # its nearest cell holds it without a vector of its own
            stored = AcceptedPost(post.id, post.text, post.timestamp, post.cells, post.vector, cluster, copy, merged)
            yield beam.pvalue.TaggedOutput(ACCEPTED, stored)
        kinds = {match.id: EXACT if match.id in copies_of else SEMANTIC for match in matches}
        for match in matches:
            yield beam.pvalue.TaggedOutput(PAIRS, make_pair(post_id, match.id, match.score, kinds[match.id]))
        first_match = earliest(matches)
        if first_match is not None:
            notification = {
                "id": post_id,
                "duplicate_of": first_match.id,
                "score": first_match.score,
                "kind": kinds[first_match.id],
                "cluster_id": cluster,
                "time": utc_iso(first.timestamp),
                "duplicate_of_time": utc_iso(first_match.timestamp),
                "matches": len(matches),
            }
            yield beam.pvalue.TaggedOutput(NOTIFICATIONS, notification)

    @on_timer(FORGET)
    def forget_post(self, done=beam.DoFn.StateParam(DONE)) -> None:
        done.clear()


class MatchPosts(beam.PTransform):
    """Records -> a dict of ``clusters`` (:class:`ClusterAssignment`), ``pairs`` (:class:`Pair`),
    ``cluster_changes`` (:class:`ClusterChange`), ``notifications``, ``accepted`` (:class:`AcceptedPost`) and
    ``dead_letter`` (messages whose id names an earlier post with another text).

    Each id is claimed by its first text (:class:`ClaimIdFn`); posts are embedded in batches of at most
    ``batch_size`` cut from each bundle (a post never waits for a batch to fill), keyed by their nearest cell and
    every cell within ``margin`` of it (one cell without ``centroids``), matched against and stored in per-cell state
    (matches within ``band`` of the threshold rescored with fp32), then resolved per post.
    """

    def __init__(
        self,
        config: EmbedConfig,
        band: ScoreBand,
        centroids: np.ndarray | None,
        margin: float,
        retention_seconds: float | None = None,
        max_per_cell: int | None = None,
        history: StreamHistory | None = None,
    ):
        super().__init__()
        self._embed = EmbedPostsFn(Shared(), config, centroids, margin)
        fp32 = config.fp32() if band.band else None
        self._cells = CellStateFn(band, fp32, retention_seconds, max_per_cell, history)
        self._resolve = ResolveFn(retention_seconds)
        self._claim = ClaimIdFn(retention_seconds, history)

    def held(self) -> Callable[[], str]:
        """What the stream holds in a worker process, as :func:`cells_held` says it (picklable)."""
        return partial(cells_held, self._cells.cache_key)

    def expand(self, records) -> dict[str, beam.PCollection]:
        claimed = (
            records
            | "KeyById" >> beam.Map(lambda record: (record.id, record)).with_output_types(tuple[str, Any])
            | "ClaimIds" >> beam.ParDo(self._claim).with_outputs(DEAD_LETTER, main="records")
        )
        resolved = (
            claimed.records
            | "EmbedAndAssignCells" >> beam.ParDo(self._embed).with_output_types(tuple[int, Any])  # deterministic keys
            | "MatchInCell" >> beam.ParDo(self._cells).with_output_types(tuple[str, Any])
            | "Resolve"
            >> beam.ParDo(self._resolve).with_outputs(
                PAIRS, CHANGES, NOTIFICATIONS, ACCEPTED, DEAD_LETTER, main="clusters"
            )
        )
        outputs = {name: resolved[name] for name in ("clusters", PAIRS, CHANGES, NOTIFICATIONS, ACCEPTED)}
        dead = (claimed[DEAD_LETTER], resolved[DEAD_LETTER]) | "DeadLetters" >> beam.Flatten()
        return {**outputs, DEAD_LETTER: dead}
