"""Query-then-insert matching for streams: one cell's stored posts, their clusters, and retention.

A :class:`CellIndex` is the in-memory form of one cell's state. A post is stored in every cell it belongs to (its
nearest and those within the margin); in each, it is queried against the stored posts, joins the cluster of its best
match there (or starts its own), and is then inserted. Two posts that share a cell therefore meet in it, whichever
comes first; a pair found in several shared cells is reported by the smallest (:func:`reported_in`). Exact copies
(same normalised text) are caught by hash before any vector search. With a rescoring band (:mod:`.rescore`), matches
whose approximate score falls in the band are scored again with fp32 vectors before the post's cluster is decided.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

import faiss
import numpy as np

from semsim_core.pairs import range_search_at_least
from semsim_core.rescore import ScoreBand


class Entry(NamedTuple):
    """One stored post (``vector`` None for an exact copy, which is matched by hash and not searched). ``text`` is
    kept only while matches are rescored with fp32 (empty otherwise); ``cells``: every cell the post is stored in."""

    id: str
    vector: np.ndarray | None
    text_hash: str
    timestamp: float
    cluster_id: str
    text: str = ""
    cells: tuple[int, ...] = ()

    def nbytes(self) -> int:
        """About the memory the entry holds: its vector, its text and ~300 bytes of the rest."""
        return 300 + len(self.text) + (self.vector.nbytes if self.vector is not None else 0)


Fp32Scores = Callable[[list[Entry]], list[float | None]]
"""The fp32 cosine of the post being matched with each stored entry; None for an entry without text."""


@dataclass
class Match:
    """A stored post at or above the threshold: its id, the cosine, its cluster, its event time (seconds) and the
    cells it is stored in."""

    id: str
    score: float
    cluster_id: str
    timestamp: float
    cells: tuple[int, ...] = ()


def reported_in(cell: int, post_cells: tuple[int, ...], match: Match) -> bool:
    """Whether ``cell`` reports a match: a pair of posts stored in several shared cells is found in each of them,
    and reported by the smallest (a match that does not say its cells counts as sharing this one)."""
    shared = set(post_cells) & set(match.cells or (cell,))
    return min(shared, default=cell) == cell


def earliest(matches: Iterable[Match]) -> Match | None:
    """The match a notification points to: the earliest post by event time, ties to the smaller id."""
    return min(matches, key=lambda m: (m.timestamp, m.id), default=None)


def utc_iso(seconds: float) -> str:
    """An event time in seconds as ISO 8601 UTC, to the millisecond."""
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="milliseconds")


class Bucket(NamedTuple):
    """The bag of a cell's Beam state that new posts go to: its ``index``, the event time of its first post
    (``start``) and how many posts it holds (``count``). Eviction clears whole bags, never rewrites one."""

    index: int
    start: float
    count: int


def next_bucket(
    current: Bucket | None, timestamp: float, width: float | None, capacity: int | None, free: Iterable[int]
) -> Bucket:
    """The bucket a post of event time ``timestamp`` goes to: the current one until it spans ``width`` seconds or
    holds ``capacity`` posts, then the first ``free`` bag (the current one grows while none is free)."""
    if current is not None:
        full = (width is not None and timestamp - current.start >= width) or (
            capacity is not None and current.count >= capacity
        )
        if not full:
            return current._replace(count=current.count + 1)
        free = [i for i in free if i != current.index]
        if not free:
            return current._replace(count=current.count + 1)
    return Bucket(min(free, default=0), timestamp, 1)


@dataclass
class Outcome:
    """What one cell says about one post: the matches it reports, and the cluster it stored the post in (that of
    its best reported match, else the post's own id) with that cluster's size here. ``seen_before``: the cell held
    the post's id already and changed nothing; ``other_text``: and what it holds under that id has another text."""

    matches: list[Match]
    cluster_id: str | None = None
    cluster_size: int = 0
    exact_of: str | None = None
    seen_before: bool = False
    rescored: int = 0
    other_text: bool = False


@dataclass
class CellIndex:
    """One cell's stored posts: vectors in a FAISS ``IndexFlatIP`` (rebuilt after evictions), text hashes for exact
    copies, cluster ids and sizes, and event timestamps for retention."""

    ids: list[str] = field(default_factory=list)  # stored posts, in insertion order
    seen: dict[str, float] = field(default_factory=dict)  # every stored or copied id -> event timestamp
    clusters: dict[str, str] = field(default_factory=dict)  # every stored or copied id -> cluster id
    sizes: dict[str, int] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)  # text hash -> id of the stored post with that text
    evicted_until: float | None = None  # the latest event time evicted so far
    _vectors: list[np.ndarray] = field(default_factory=list)
    _entries: dict[str, Entry] = field(default_factory=dict)
    _index: faiss.IndexFlatIP | None = None
    _bytes: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def _search(
        self, vector: np.ndarray, band: ScoreBand, fp32: Fp32Scores | None, horizon: float | None
    ) -> tuple[list[Match], int]:
        """Matches at or above the threshold (stored at or after ``horizon``), best first, and how many were
        rescored: candidates come from the approximate vectors at the band's search threshold; those in the band
        are decided by ``fp32`` (by their approximate score when it has no fp32 score for them)."""
        if not self.ids:
            return [], 0
        if self._index is None:
            self._index = faiss.IndexFlatIP(self._vectors[0].shape[0])
            self._index.add(np.stack(self._vectors))
        _, scores, rows = range_search_at_least(self._index, vector[None, :].astype(np.float32), band.search_threshold)
        found = [self._match(self.ids[r], min(float(s), 1.0)) for s, r in zip(scores, rows, strict=True)]
        if horizon is not None:
            found = [m for m in found if m.timestamp >= horizon]
        kept = [m for m in found if band.settled(m.score)]
        in_band = [m for m in found if band.in_band(m.score)]
        fp32_scores = fp32([self._entries[m.id] for m in in_band]) if in_band and fp32 else [None] * len(in_band)
        rescored = 0
        for match, score in zip(in_band, fp32_scores, strict=True):
            rescored += score is not None
            if score is None and match.score >= band.threshold:
                kept.append(match)
            elif score is not None and band.keeps(score):
                kept.append(self._match(match.id, score))
        return sorted(kept, key=lambda m: (-m.score, m.id)), rescored

    def _match(self, stored_id: str, score: float) -> Match:
        entry = self._entries[stored_id]
        return Match(stored_id, score, self.clusters[stored_id], entry.timestamp, entry.cells)

    def add(
        self,
        post_id: str,
        vector: np.ndarray,
        text_hash: str,
        timestamp: float,
        band: ScoreBand,
        fp32: Fp32Scores | None = None,
        text: str = "",
        cells: tuple[int, ...] = (),
        horizon: float | None = None,
        cell: int | None = None,
    ) -> Outcome:
        """Query then insert a post of this cell: exact copy by hash first, else best vector match (near the
        threshold, by ``fp32`` scores), else a new cluster. ``text`` is stored for later rescoring. ``cell`` (this
        index's cell) and ``cells`` (all the cells the post is stored in): only matches :func:`reported_in` this
        cell are reported and decide the post's cluster here. Stored posts older than ``horizon`` (event seconds;
        retention) are not matched, even before they are evicted. A post id seen before changes nothing and reports
        its stored cluster: a re-delivery, or (``other_text``) another post reusing the id."""

        def reported(match: Match) -> bool:
            return cell is None or reported_in(cell, cells, match)

        if post_id in self.clusters:
            cluster = self.clusters[post_id]
            stored_hash = self._entries[post_id].text_hash
            other_text = bool(stored_hash and text_hash and stored_hash != text_hash)
            return Outcome([], cluster, self.sizes.get(cluster, 1), seen_before=True, other_text=other_text)
        original = self.hashes.get(text_hash)
        if original is not None and horizon is not None and self.seen[original] < horizon:
            del self.hashes[text_hash]  # expired: this post becomes the text's original
            original = None
        if original is not None:
            match = self._match(original, 1.0)
            matches = [match] if reported(match) else []
            cluster = matches[0].cluster_id if matches else post_id
            self.insert(Entry(post_id, None, text_hash, timestamp, cluster, cells=cells))
            return Outcome(matches, cluster, self.sizes[cluster], exact_of=original)
        matches, rescored = self._search(vector, band, fp32, horizon)
        matches = [m for m in matches if reported(m)]
        cluster = matches[0].cluster_id if matches else post_id
        stored = np.ascontiguousarray(vector, dtype=np.float32)
        self.insert(Entry(post_id, stored, text_hash, timestamp, cluster, text, cells))
        return Outcome(matches, cluster, self.sizes[cluster], rescored=rescored)

    def insert(self, entry: Entry) -> None:
        """Store a post (or an exact copy: ``vector`` None) with its decided cluster, without querying: what
        :meth:`add` does after deciding, and how state and history are replayed."""
        self.seen[entry.id] = entry.timestamp
        self.clusters[entry.id] = entry.cluster_id
        self.sizes[entry.cluster_id] = self.sizes.get(entry.cluster_id, 0) + 1
        self._entries[entry.id] = entry
        self._bytes += self._entry_bytes(entry)
        if entry.vector is None:
            return
        self.ids.append(entry.id)
        self._vectors.append(entry.vector)
        if entry.text_hash:
            self.hashes.setdefault(entry.text_hash, entry.id)
        if self._index is not None:
            self._index.add(entry.vector[None, :])

    def entries(self) -> list[Entry]:
        """Everything stored, in insertion order: replaying it with :meth:`insert` rebuilds this index."""
        return list(self._entries.values())

    def entry(self, post_id: str) -> Entry:
        """The stored post (or copy) ``post_id``."""
        return self._entries[post_id]

    def nbytes(self) -> int:
        """About the memory this index holds (kept as entries come and go): each vector twice (the list and FAISS's
        copy), texts, and about 300 bytes of bookkeeping per post."""
        return self._bytes

    @staticmethod
    def _entry_bytes(entry: Entry) -> int:
        """The entry and FAISS's copy of its vector."""
        return entry.nbytes() + (entry.vector.nbytes if entry.vector is not None else 0)

    def evict(self, older_than: float | None = None, keep_newest: int | None = None) -> list[str]:
        """Forget posts and copies older than ``older_than`` (event seconds), and all but the ``keep_newest`` newest
        (copies count: each is an entry of state); returns the evicted ids. Members that stay keep their cluster
        ids, and cluster sizes count only what stays."""
        gone = {i for i, t in self.seen.items() if older_than is not None and t < older_than}
        left = [i for i in sorted(self.seen, key=lambda i: (self.seen[i], i)) if i not in gone]
        if keep_newest is not None and len(left) > keep_newest:
            gone.update(left[: len(left) - keep_newest])
        if not gone:
            return []
        latest = max(self.seen[i] for i in gone)
        self.evicted_until = latest if self.evicted_until is None else max(self.evicted_until, latest)
        for i in gone:
            cluster = self.clusters[i]
            self.sizes[cluster] -= 1
            if not self.sizes[cluster]:
                del self.sizes[cluster]
        keep = [row for row, post_id in enumerate(self.ids) if post_id not in gone]
        self.ids = [self.ids[row] for row in keep]
        self._vectors = [self._vectors[row] for row in keep]
        self._index = None
        self.seen = {i: t for i, t in self.seen.items() if i not in gone}
        self._entries = {i: e for i, e in self._entries.items() if i not in gone}
        self._bytes = sum(self._entry_bytes(e) for e in self._entries.values())
        self.clusters = {i: c for i, c in self.clusters.items() if i not in gone}
        self.hashes = {h: i for h, i in self.hashes.items() if i not in gone}
        return sorted(gone)
