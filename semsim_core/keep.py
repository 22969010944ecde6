"""Which record of a cluster is kept (``--keep``), and why each other record was removed.

A cluster's kept record is its representative: ``is_representative`` in ``clusters/``, its row in ``deduplicated/``,
and its id is the ``cluster_id`` of every member (with a history store, a stored cluster keeps its first id). The
policies order records by a key and keep the smallest:

- ``first-id``: the smallest id (string order);
- ``earliest``: the earliest event time (``--time-field``), ties to the smallest id;
- ``longest``: the longest text in characters (Unicode code points, as read), ties to the smallest id.

Every key ends with the id, and ids are unique, so the choice never depends on the order records or pairs arrive.

A removed record is explained by the *widest path* from it to the kept record in the cluster's pair graph: of all
chains of pairs joining the two, the one whose weakest pair scores highest (ties: fewer pairs, then smaller ids).
:class:`Removal` reports that path and its weakest pair; a chain of exact pairs is one exact pair (exact copies share
their normalised text), so its path is the two records.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Iterator
from typing import NamedTuple

from semsim_core.records import EXACT, SEMANTIC, Pair

FIRST_ID = "first-id"
EARLIEST = "earliest"
LONGEST = "longest"
POLICIES = (EARLIEST, LONGEST, FIRST_ID)
_LINK_WIDTH = float("inf")  # a link between records of one stored cluster never narrows a chain
_LINK_KIND = "link"

KeepKey = tuple


def keep_key(policy: str, record_id: str, length: int | None, time: int | None) -> KeepKey:
    """The order of ``policy``: the record with the smallest key in a cluster is kept. ``time`` is microseconds
    since the epoch (required by ``earliest``); ``length`` the record's text length in characters (``longest``)."""
    if policy == FIRST_ID:
        return (record_id,)
    if policy == EARLIEST:
        if time is None:
            raise ValueError(f"record {record_id!r} has no event time; --keep earliest needs --time-field")
        return (time, record_id)
    if policy == LONGEST:
        if length is None:
            raise ValueError(f"record {record_id!r} has no text length; --keep longest needs the input texts")
        return (-length, record_id)
    raise ValueError(f"unknown keep policy {policy!r}; expected one of {', '.join(POLICIES)}")


class Removal(NamedTuple):
    """Why ``id`` was removed: ``kept_id`` is kept in its place; ``score`` and ``kind`` are the weakest pair on the
    widest path between them (``kind`` ``exact`` only when every pair on it is exact); ``via`` is that path, from
    ``id`` to ``kept_id``, both included."""

    id: str
    kept_id: str
    score: float
    kind: str
    via: list[str]


def removals(
    kept_id: str, members: Iterable[str], pairs: Iterable[Pair], links: Iterable[tuple[str, str]] = ()
) -> Iterator[Removal]:
    """One :class:`Removal` for every member of a cluster other than ``kept_id``, in id order, from the cluster's
    pairs, which join them all (pairs with a record outside the cluster, which a split by HDBSCAN leaves, are
    ignored).

    ``links`` join records an earlier run put in one cluster (a history store keeps clusters, not their pairs): a
    chain may pass through one at no cost to its width, and shows it in ``via``; ``score`` and ``kind`` come from the
    pairs alone, and a chain with a link keeps its whole path even when its pairs are exact."""
    members = set(members) - {kept_id}
    links = [tuple(link) for link in links]
    inside = members | {kept_id} | {record for link in links for record in link}
    adjacent: dict[str, list[tuple[float, str, str]]] = {}
    for a, b, score, kind in [
        *((p.id_a, p.id_b, p.score, p.kind) for p in pairs),
        *((a, b, _LINK_WIDTH, _LINK_KIND) for a, b in links),
    ]:
        if a not in inside or b not in inside:
            continue
        adjacent.setdefault(a, []).append((score, b, kind))
        adjacent.setdefault(b, []).append((score, a, kind))
    # widest path from the kept record: a Dijkstra that maximises the weakest pair; the first time a record is
    # popped its path is final. Entries order by width, then pairs on the path, then ids: no dependence on input order.
    step: dict[str, tuple[str, float, str] | None] = {}  # record -> (next record towards the kept one, score, kind)
    heap: list[tuple[float, int, str, str, float, str]] = [(-_LINK_WIDTH, 0, kept_id, "", 0.0, "")]
    while heap:
        width, hops, node, towards, score, kind = heapq.heappop(heap)
        if node in step:
            continue
        step[node] = (towards, score, kind) if towards else None
        for pair_score, other, pair_kind in adjacent.get(node, ()):
            if other not in step:
                heapq.heappush(heap, (max(width, -pair_score), hops + 1, other, node, pair_score, pair_kind))
    for member in sorted(members):
        path, kinds, weakest = [member], set(), _LINK_WIDTH
        while path[-1] != kept_id:
            towards, score, kind = step[path[-1]]
            path.append(towards)
            kinds.add(kind)
            weakest = min(weakest, score)
        if kinds == {EXACT}:
            yield Removal(member, kept_id, 1.0, EXACT, [member, kept_id])
        elif kinds == {EXACT, _LINK_KIND}:
            yield Removal(member, kept_id, 1.0, EXACT, path)
        else:
            yield Removal(member, kept_id, weakest, SEMANTIC, path)
