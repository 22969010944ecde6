"""Query-then-insert cell state (semsim_core.streaming); Pub/Sub message parsing is tested with the formats."""

from __future__ import annotations

import copy
import json
import pickle
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from apache_beam.coders import PickleCoder
from apache_beam.utils.timestamp import Timestamp

from pipelines import history_cli
from semsim_core import stream_history
from semsim_core.cells import assign_cells
from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.evaluation import read_stsb
from semsim_core.history import History, HistoryError, Manifest, Segment
from semsim_core.normalize import text_hash
from semsim_core.pairs import threshold_pairs
from semsim_core.records import ClusterAssignment, DeadLetter, Record, make_pair
from semsim_core.rescore import ScoreBand
from semsim_core.stream_history import AcceptedPost, StreamHistory
from semsim_core.streaming import CellIndex, Entry, Match, Outcome
from tests.conftest import SAMPLE_PARAPHRASES, STSB_TEST, fast_int8_backend, sample_titles
from transforms import DEAD_LETTER
from transforms.history_append import _AppendFn
from transforms.stream_match import (
    ACCEPTED,
    BUCKETS,
    CHANGES,
    NOTIFICATIONS,
    PAIRS,
    REDELIVERY_GUARD_SECONDS,
    Answer,
    CellStateFn,
    ClaimIdFn,
    Post,
    ResolveFn,
    reused_id,
)
from transforms.vector_coder import EntryCoder

AT_08 = ScoreBand(0.8)


def paraphrase_texts(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:n]]


def test_query_then_insert_clusters_exact_copies_and_redelivery(embedder):
    a, b, c, d = paraphrase_texts(4)  # a~b and c~d are STSb paraphrase pairs
    vectors = dict(zip("abcd", embedder.encode([a, b, c, d]), strict=True))
    cell = CellIndex()
    first = cell.add("a", vectors["a"], text_hash(a), 1.0, AT_08)
    assert first.matches == [] and first.cluster_id == "a" and first.cluster_size == 1
    second = cell.add("b", vectors["b"], text_hash(b), 2.0, AT_08)
    assert [m.id for m in second.matches] == ["a"] and second.cluster_id == "a" and second.cluster_size == 2
    assert abs(second.matches[0].score - float(vectors["a"] @ vectors["b"])) < 1e-5
    copy = cell.add("a-copy", vectors["a"], text_hash(a.upper()), 3.0, AT_08)
    assert copy.exact_of == "a" and copy.cluster_id == "a" and len(cell) == 2, "a copy is matched by hash, not stored"
    again = cell.add("b", vectors["b"], text_hash(b), 9.0, AT_08)
    assert again.seen_before and not again.other_text and again.cluster_id == "a" and again.matches == []
    reused = cell.add("b", vectors["b"], text_hash(b + " (edited)"), 9.0, AT_08)
    assert reused.seen_before and reused.other_text and len(cell) == 2, "an id reused for another text changes nothing"
    assert cell.add("a-copy", vectors["a"], text_hash(a), 9.0, AT_08).other_text is False, "a copy keeps its hash"
    other = cell.add("c", vectors["c"], text_hash(c), 4.0, AT_08)
    assert other.cluster_id == "c"
    near = float(vectors["c"] @ vectors["d"]) - 1e-4
    assert [m.id for m in cell.add("d", vectors["d"], text_hash(d), 5.0, ScoreBand(near)).matches][0] == "c"


def test_retention_by_time_and_count(embedder):
    texts = paraphrase_texts(6)
    vectors = embedder.encode(texts)
    cell = CellIndex()
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        cell.add(f"p{i}", vector, text_hash(text), float(i), AT_08)
    assert cell.evict(older_than=2.0) == ["p0", "p1"]
    assert "p0" not in cell.clusters and cell.ids == ["p2", "p3", "p4", "p5"]
    assert cell.evict(keep_newest=2) == ["p2", "p3"]
    assert cell.ids == ["p4", "p5"]
    assert [m.id for m in cell.add("p5b", vectors[5], "h5", 9.0, AT_08).matches] == ["p5", "p4"], "p4 ~ p5"


@pytest.mark.kernels
def test_matches_near_the_threshold_are_decided_by_fp32(embedder):
    stsb = read_stsb(str(STSB_TEST))
    int8 = Embedder(embedder.model, EmbedConfig(backend=fast_int8_backend()))
    approx = [int8.encode(side) for side in (stsb.first, stsb.second)]
    # only pairs near the threshold can flip (int8 moved these pairs' scores by at most 0.051 with openvino-int8 and
    # 0.078 with onnx-int8 on an AVX2-only EPYC): fp32 embeds just those
    near = np.flatnonzero(np.abs((approx[0] * approx[1]).sum(axis=1) - 0.8) < 0.1)
    first, second = [stsb.first[i] for i in near], [stsb.second[i] for i in near]
    approx = [side[near] for side in approx]
    exact = [embedder.encode(side) for side in (first, second)]
    fp32_scores, int8_scores = ((a * b).sum(axis=1) for a, b in (exact, approx))
    clear = (np.abs(fp32_scores - 0.8) > 1e-5) & (np.abs(int8_scores - 0.8) > 1e-5)  # no kernel decides these
    flipped = np.nonzero(((fp32_scores >= 0.8) != (int8_scores >= 0.8)) & clear)[0]
    assert len(flipped) > 0, "int8 puts some STSb pairs on the other side of 0.8"
    band = ScoreBand(0.8, max(0.02, 1.5 * float(np.abs(fp32_scores - int8_scores)[flipped].max())))

    for k in flipped[:8]:
        a, b = first[k], second[k]

        def fp32(stored: list[Entry], text=b) -> list[float | None]:
            return [
                float(embedder.encode([text])[0] @ embedder.encode([e.text])[0]) if e.text else None for e in stored
            ]

        cell = CellIndex()
        cell.add("a", approx[0][k], text_hash(a), 1.0, band, fp32, text=a)
        outcome = cell.add("b", approx[1][k], text_hash(b), 2.0, band, fp32, text=b)
        assert outcome.rescored == 1 and (outcome.cluster_id == "a") == (fp32_scores[k] >= 0.8), (a, b)
        kept = [round(float(fp32_scores[k]), 4)] if fp32_scores[k] >= 0.8 else []
        assert [round(m.score, 4) for m in outcome.matches] == kept, "a kept match carries its fp32 score"

        seeded = CellIndex()  # an entry without text: decided by the stored approximate vector
        seeded.insert(Entry("a", approx[0][k], "", 1.0, "a"))
        unscored = seeded.add("b", approx[1][k], text_hash(b), 2.0, band, fp32, text=b)
        assert unscored.rescored == 0 and (unscored.cluster_id == "a") == (int8_scores[k] >= 0.8)


class Bag:
    """In-memory stand-ins for the Beam state and timer a DoFn is handed (what the runner keeps per key)."""

    def __init__(self):
        self.items = []
        self.adds = self.clears = 0

    def add(self, item):
        self.items.append(item)
        self.adds += 1

    def read(self):
        return list(self.items)

    def clear(self):
        self.items = []
        self.clears += 1


class FailingBag(Bag):
    def __init__(self, items):
        self.items = list(items)

    def add(self, item):
        raise RuntimeError("state write failed")


class Value(Bag):
    def write(self, item):
        self.items = [item]

    def read(self):
        return self.items[0] if self.items else None


class Timer:
    def __init__(self):
        self.at = None

    def set(self, at):
        self.at = at

    def clear(self):
        self.at = None


def cell_state() -> dict:
    """One cell's state and timer, as the runner keeps them for its key (shared by every DoFn instance)."""
    return {**{f"bucket_{i}": Bag() for i in range(BUCKETS)}, "meta": Value(), "floor": Value(), "expire": Timer()}


def buckets(state: dict) -> list[Bag]:
    return [state[f"bucket_{i}"] for i in range(BUCKETS)]


def cell_fn(history: StreamHistory | None = None, **limits) -> CellStateFn:
    fn = CellStateFn(AT_08, None, limits.get("retention"), limits.get("max_per_cell"), history)
    fn.setup()
    return fn


def copy_of(fn: CellStateFn) -> CellStateFn:
    """A copy of a DoFn as a runner makes one (unpickled, then set up)."""
    copied = pickle.loads(pickle.dumps(fn))
    copied.setup()
    return copied


def posts(texts: list[str], vectors: np.ndarray) -> list[Post]:
    return [
        Post(f"p{i}", v, text_hash(t), float(i), (0,), t) for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
    ]


def insert(fn: CellStateFn, state: dict, post: Post) -> Answer:
    [(post_id, answer)] = fn.process((0, post), **state)
    assert post_id == post.id
    return answer


def stored_ids(state: dict) -> list[str]:
    return sorted(e.id for bag in buckets(state) for e in bag.read())


def test_two_instances_over_one_cells_state_lose_no_post(embedder):
    """Beam runs several DoFn instances for one key over time; each caches the cell. The reproduction of a lost post:
    limit 3, A inserts p0-p3, B inserts p4, A inserts p5 (a paraphrase of p4, so it must match it). A cell keeps its
    newest 3 once a bucket's worth (1) more came, and eviction clears bags of state, never writes one again."""
    titles = [row["text"] for row in sample_titles(4)]
    texts = [*titles, *paraphrase_texts(2)]  # p4 ~ p5
    p = posts(texts, embedder.encode(texts))
    state = cell_state()
    a, b = cell_fn(max_per_cell=3), cell_fn(max_per_cell=3)
    for post in p[:4]:
        insert(a, state, post)
    assert stored_ids(state) == ["p0", "p1", "p2", "p3"]
    insert(b, state, p[4])
    assert stored_ids(state) == ["p2", "p3", "p4"], "p0 and p1 left with their bags"
    answer = insert(a, state, p[5])
    assert [m.id for m in answer.outcome.matches] == ["p4"], "A saw B's insert, not its stale cache"
    assert answer.outcome.cluster_id == "p4" and answer.outcome.cluster_size == 2
    assert stored_ids(state) == ["p2", "p3", "p4", "p5"]
    assert sum(bag.adds for bag in buckets(state)) == 6, "each post written once"
    assert EntryCoder().decode(EntryCoder().encode(buckets(state)[2].read()[0])).id == "p2"


def test_retention_timer_and_a_failed_bundle_keep_state_and_cache_apart(embedder):
    """A retention timer on one instance evicts by event time what another inserted; a bundle that failed commits
    nothing, and the instance that ran it does not trust what it cached then."""
    texts = [paraphrase_texts(6)[i] for i in (0, 1, 4, 5)]  # p0 ~ p1, p2 ~ p3 (cosines 0.95 and 0.96)
    p = posts(texts, embedder.encode(texts))
    state = cell_state()
    template = CellStateFn(AT_08, None, 10.0, None)  # A and its sibling: copies of one DoFn in one process
    a, sibling, b = copy_of(template), copy_of(template), cell_fn(retention=10.0)
    insert(a, state, p[0])
    insert(b, state, p[2]._replace(timestamp=20.0))
    assert state["expire"].at == Timestamp(10.0), "the oldest post's horizon"
    a.expire_old_posts(0, Timestamp(10.0), **state)
    assert stored_ids(state) == ["p2"] and state["expire"].at == Timestamp(30.0)
    assert insert(b, state, p[1]._replace(timestamp=21.0)).outcome.matches == [], "p0 was evicted, in B too"

    committed = {name: copy.deepcopy(value) for name, value in state.items()}
    assert [m.id for m in insert(a, state, p[3]._replace(timestamp=22.0)).outcome.matches] == ["p2"]
    state.update(committed)  # that bundle failed: the runner keeps the state as it was, and retries elsewhere
    retried = insert(b, state, p[3]._replace(timestamp=22.0))
    assert not retried.outcome.seen_before and [m.id for m in retried.outcome.matches] == ["p2"]
    again = insert(a, state, p[3]._replace(timestamp=22.0))
    assert again.outcome.seen_before, "A rebuilt from state: p3 is stored once, by the retry"
    assert stored_ids(state) == ["p1", "p2", "p3"]

    # instances of one DoFn in one process share its cells; a bundle that fails midway leaves none half-changed
    with pytest.raises(RuntimeError, match="state write failed"):
        failing = {f"bucket_{i}": FailingBag(bag.read()) for i, bag in enumerate(buckets(state))}
        insert(sibling, {**state, **failing}, p[0]._replace(timestamp=23.0))
    assert not insert(a, state, p[0]._replace(timestamp=23.0)).outcome.seen_before, "p0 never reached state"


def test_retention_clears_whole_bags_on_a_grid_and_never_rewrites_state(embedder):
    """30 real titles, one a second, retention 8 s (bucket width 2 s): the runner fires the timer as the watermark
    passes it. Each post is written to state once; bags are cleared whole; the index is rebuilt by the timer about
    once per width, not once per post; state never holds more than retention plus two buckets of posts; a copy of
    a post past the horizon is not matched even before the timer evicts it."""
    texts = [row["text"] for row in sample_titles(30)]
    p = posts(texts, embedder.encode(texts))
    state, fn, fires = cell_state(), cell_fn(retention=8.0), 0
    for post in p:
        while state["expire"].at is not None and state["expire"].at <= Timestamp(post.timestamp):
            at, state["expire"].at = state["expire"].at, None
            fn.expire_old_posts(0, at, **state)
            fires += 1
        assert insert(fn, state, post).outcome.matches == []
        held = [int(i[1:]) for i in stored_ids(state)]
        assert min(held) >= post.timestamp - 8 - 2 * 2, (post.id, held)
    assert sum(bag.adds for bag in buckets(state)) == 30 and fires <= 30 / 2
    assert sum(bag.clears for bag in buckets(state)) >= 8, "about 20 posts left, two per bag"
    assert set(stored_ids(state)) >= {f"p{i}" for i in range(21, 30)}

    late = p[21]._replace(id="copy", timestamp=29.5)  # p21 is 8.5 s old: past the horizon, not yet evicted
    assert insert(fn, state, late).outcome.exact_of is None and "p21" in stored_ids(state)
    assert insert(fn, state, p[22]._replace(id="copy2", timestamp=29.5)).outcome.exact_of == "p22"


def history_store(root, posts: list[Post], cluster_of: dict[str, str]) -> StreamHistory:
    """A one-cell history store holding ``posts`` (created empty, then appended to as a stream appends)."""
    history = History(str(root))
    dim = posts[0].vector.shape[0]
    segment = Segment("empty", "", 0, "test", ())
    history.commit(Manifest("m", None, dim, "float32", 0.0, "", 1), segment, None, np.ones((1, dim), np.float32))
    stored = StreamHistory(str(root))
    accepted = [AcceptedPost(p.id, p.text, p.timestamp, (0,), p.vector, cluster_of.get(p.id, p.id), False)
                for p in posts]  # fmt: skip
    stored.append(accepted, "day1", "test", "test")
    assert stored.append(accepted, "day1", "test", "test").version == 2, "a segment is committed once"
    return stored


def test_near_duplicates_in_neighbouring_cells_meet_once(embedder):
    """Two paraphrases published together, each nearest to a different cell and within the margin of the other's:
    whatever order the two cells take them in, they give one pair and one cluster. A cell that stored a post under
    another id than its answer's cluster (it did not report the match) has that id merged: a cluster change, so a
    later post that joins it there lands in the same cluster."""
    texts = paraphrase_texts(2)
    a, b = posts(texts, embedder.encode(texts))
    a, b = a._replace(cells=(0, 1)), b._replace(cells=(1, 0))
    same_order = ([(0, a), (0, b), (1, a), (1, b)], [(1, b), (0, b), (0, a), (1, a)])
    opposite = ([(0, b), (0, a), (1, a), (1, b)], [(1, a), (0, b), (0, a), (1, b)])
    for order in (*same_order, *opposite):
        fn, states, resolve, resolved = cell_fn(), {0: cell_state(), 1: cell_state()}, ResolveFn(), {}
        outputs = []
        for cell, post in order:
            [(post_id, answer)] = fn.process((cell, post), **states[cell])
            state = resolved.setdefault(post_id, resolve_state())
            outputs += list(resolve.process((post_id, answer), **state))
        pairs = [o.value for o in outputs if getattr(o, "tag", None) == PAIRS]
        clusters = {o.id: o.cluster_id for o in outputs if isinstance(o, ClusterAssignment)}
        changes = [o.value for o in outputs if getattr(o, "tag", None) == CHANGES]
        assert [(p.id_a, p.id_b) for p in pairs] == [("p0", "p1")], order
        assert set(clusters) == {"p0", "p1"} and len(set(clusters.values())) == 1, order
        held = {e.cluster_id for state in states.values() for bag in buckets(state) for e in bag.read()}
        assert held - set(clusters.values()) == {c.previous_cluster_id for c in changes}, (order, changes)
        assert all(c.cluster_id == clusters[c.id] for c in changes)


def test_history_records_join_cells_by_hash_and_leave_by_time(embedder, tmp_path):
    """A stored text's copy is an exact match with the stored record (and its cluster); retention and
    --max-per-cell evict stored records by event time, and a later cache rebuild does not bring them back."""
    texts = [paraphrase_texts(6)[i] for i in (0, 4, 1, 5)]  # p0 ~ p2, p1 ~ p3
    p = posts(texts, embedder.encode(texts))
    history = history_store(tmp_path / "h", p[:2], {"p1": "c-old"})
    state = cell_state()
    a = cell_fn(history, retention=10.0)
    copy = p[1]._replace(id="copy", text_hash=text_hash(texts[1].upper()), timestamp=5.0)
    answer = insert(a, state, copy)
    assert answer.outcome.exact_of == "p1" and answer.outcome.cluster_id == "c-old"
    assert stored_ids(state) == ["copy"], "history records stay in the store, not in state"
    a.expire_old_posts(0, Timestamp(11.5), **state)  # p0 (time 0) and p1 (time 1) leave; the copy (5) stays
    assert state["floor"].read() == 1.0 and stored_ids(state) == ["copy"]
    fresh = cell_fn(history, retention=10.0)  # another worker, building the cell from state and store
    assert insert(fresh, state, p[2]._replace(timestamp=12.0)).outcome.matches == [], "p0 stays evicted"

    bounded = cell_state()
    b, c = cell_fn(history, max_per_cell=2), cell_fn(history, max_per_cell=2)
    insert(b, bounded, p[2]._replace(timestamp=3.0))  # p0, p1 stored; p2 makes three: a bucket's worth (1) more
    assert bounded["floor"].read() is None
    assert [m.id for m in insert(c, bounded, p[3]._replace(timestamp=4.0)).outcome.matches] == ["p1"]
    assert stored_ids(bounded) == ["p2", "p3"] and bounded["floor"].read() == 1.0


def test_appends_and_compaction_take_turns(embedder, tmp_path):
    """A compaction replaces the files a worker's manifest names: a cell the process has read stays as read (the
    store as of that manifest), and a read of the files takes the new manifest. An append waits while another
    writer holds the store's lock, then commits."""
    texts = paraphrase_texts(4)
    p = posts(texts, embedder.encode(texts))
    root = str(tmp_path / "h")
    reader = history_store(root, p[:2], {})
    assert [e.id for e in reader.cell_entries(0)] == ["p0", "p1"]
    writer = StreamHistory(root)
    as_stored = [AcceptedPost(q.id, q.text, q.timestamp, (0,), q.vector, q.id, False) for q in p]
    writer.append(as_stored[2:3], "day2", "test", "stream")
    History(root).compact("compactor")
    assert [e.id for e in reader.cell_entries(0)] == ["p0", "p1"], "the cell as this process read it"
    stream_history._read_cells.clear()  # in another process: the files its manifest names are gone
    assert [e.id for e in reader.cell_entries(0)] == ["p0", "p1", "p2"]

    History(root).lock("a batch run")
    with pytest.raises(HistoryError, match="is locked by a batch run"):
        writer.append(as_stored[3:], "day3", "test", "stream")
    append = _AppendFn(StreamHistory(root), "launch", wait_seconds=60)
    threading.Timer(1.0, History(root).unlock, ["a batch run"]).start()
    assert list(append.process((None, as_stored[3:]), pane=SimpleNamespace(index=0))) == ["launch-00000000"]
    assert [e.id for e in StreamHistory(root).cell_entries(0)] == ["p0", "p1", "p2", "p3"]
    started_on_other_cells = StreamHistory(root, centroids="centroids-0123456789abcdef.npy")
    with pytest.raises(HistoryError, match="has other centroids .* than when this stream started"):
        started_on_other_cells.append(as_stored[3:], "day4", "test", "stream")


def test_a_stored_exact_copy_keeps_its_id_in_the_cells_of_its_text(embedder, tmp_path):
    """A store holds an exact copy without a vector (``embedded`` false): its id must still be known to the cells of
    its text, else a restarted stream takes the id again (a second cluster row, and the store holds it twice)."""
    texts = paraphrase_texts(2)
    p = posts(texts, embedder.encode(texts))
    root = str(tmp_path / "h")
    history_store(root, p[:1], {})
    as_stored = [AcceptedPost(q.id, q.text, q.timestamp, (0,), q.vector, q.id, False) for q in p]
    copy = as_stored[0]._replace(id="copy-of-p0", timestamp=3.0, copy=True)
    StreamHistory(root).append([copy, as_stored[1]], "s1", "test", "stream")
    entries = {e.id: e for e in StreamHistory(root).cell_entries(0)}
    assert set(entries) == {"p0", "copy-of-p0", "p1"} and entries["copy-of-p0"].vector is None
    assert entries["copy-of-p0"].cluster_id == "p0" and entries["copy-of-p0"].cells == (0,)

    state = cell_state()
    again = insert(cell_fn(StreamHistory(root)), state, p[0]._replace(id="copy-of-p0", timestamp=9.0))
    assert again.outcome.seen_before and not again.outcome.other_text, "sent again: a re-delivery"
    other = p[1]._replace(id="copy-of-p0", timestamp=9.0)
    assert insert(cell_fn(StreamHistory(root)), cell_state(), other).outcome.other_text, "another text: refused"


def test_the_clusters_a_stream_merges_are_merged_in_the_store(embedder, tmp_path):
    """A post stored under a cluster id that another post's arrival merged (a cluster change) is read back from the
    store in the merged cluster: a restarted stream holds one cluster where the first held two ids."""
    texts = paraphrase_texts(3)
    p = posts(texts, embedder.encode(texts))
    root = str(tmp_path / "h")
    history_store(root, p[:1], {})
    writer = StreamHistory(root)
    as_stored = [AcceptedPost(q.id, q.text, q.timestamp, (0,), q.vector, q.id, False) for q in p]
    writer.append(as_stored[1:2], "s1", "test", "stream")  # p1 stored under its own id in one cell
    writer.append([as_stored[2]._replace(cluster_id="p0", merged=("p1",))], "s2", "test", "stream")
    assert {e.id: e.cluster_id for e in StreamHistory(root).cell_entries(0)} == {"p0": "p0", "p1": "p0", "p2": "p0"}


def test_recentre_repartitions_a_store_that_streams_then_read_in_parallel(embedder, tmp_path, capsys):
    """A one-cell store (what a stream without centroids appends to) of 300 real titles: `semsim history recentre
    --cells 4` trains centroids on the stored vectors and writes each row into its new cells (nearest plus the
    margin tuned for them), keeping records and merges; a stream started on the old centroids refuses the store."""
    texts = [row["text"] for row in sample_titles(300)]
    p = posts(texts, embedder.encode(texts))
    root = str(tmp_path / "h")
    history = History(root)
    empty = Segment("empty", "", 0, "test", ())
    history.commit(Manifest("m", None, 384, "float32", 0.05, "", 1), empty, None, np.ones((1, 384), np.float32))
    before = StreamHistory(root, centroids=history.manifest().centroids)
    stored = [AcceptedPost(q.id, q.text, q.timestamp, (0,), q.vector, q.id, False) for q in p]
    before.append([*stored[:-1], stored[-1]._replace(cluster_id="p0", merged=("p299",))], "day1", "test", "stream")
    old_centroids = history.manifest().centroids

    History(root).lock("a stream's append")
    assert history_cli.main(["recentre", root, "--cells", "4"]) == 2
    assert "is locked by a stream's append" in capsys.readouterr().err
    History(root).unlock()
    assert history_cli.main(["recentre", root, "--cells", "4"]) == 0
    assert "1 -> 4 cells, margin 0.05 -> " in capsys.readouterr().out
    manifest = history.manifest()
    centroids = history.centroids(manifest)
    assert manifest.cells == 4 and not (tmp_path / "h" / old_centroids).exists()
    cells_of = assign_cells(np.stack([q.vector for q in p]), centroids, manifest.margin)
    assigned = dict(zip([q.id for q in p], cells_of, strict=True))
    after = StreamHistory(root, centroids=manifest.centroids)
    for cell in range(4):
        entries = after.cell_entries(cell)
        assert sorted(e.id for e in entries) == sorted(i for i, cells in assigned.items() if cell in cells)
        assert all(e.cells == assigned[e.id] for e in entries)
        assert {e.cluster_id for e in entries if e.id in ("p0", "p299")} <= {"p0"}, "merges kept"
    assert sum(len(after.cell_entries(c)) for c in range(4)) > 300 > max(len(after.cell_entries(c)) for c in range(4))
    with pytest.raises(HistoryError, match="has other centroids"):
        before.append(stored[:1], "day2", "test", "stream")
    assert History(root).info()["orphans"] == []


def test_recentre_tunes_a_margin_for_the_new_cells(embedder, tmp_path, capsys):
    """A one-cell store's margin is 0; recentring into 8 cells with that margin lost the pairs across the new
    borders (and a run's recall sample, of new records only, did not see it). The new cells get a margin tuned on
    the stored vectors: the STSb paraphrases among 1,500 real texts keep their pairs at 0.8 in a shared cell."""
    with open(SAMPLE_PARAPHRASES, encoding="utf-8") as f:
        texts = [json.loads(line)["text"] for line in f] + [row["text"] for row in sample_titles(1000)]
    vectors = embedder.encode(texts)
    p = posts(texts, vectors)
    root = str(tmp_path / "h")
    History(root).commit(Manifest("m", None, 384, "float32", 0.0, "", 1), Segment("e", "", 0, "t", ()), None,
                         np.ones((1, 384), np.float32))  # fmt: skip
    stored = [AcceptedPost(q.id, q.text, q.timestamp, (0,), q.vector, q.id, False) for q in p]
    StreamHistory(root, centroids=History(root).manifest().centroids).append(stored, "day1", "test", "stream")

    assert history_cli.main(["recentre", root, "--cells", "8"]) == 0
    manifest = History(root).manifest()
    assert manifest.cells == 8 and manifest.margin > 0
    assert f"margin 0 -> {manifest.margin:g}" in capsys.readouterr().out
    after = StreamHistory(root, centroids=manifest.centroids)
    cells_of = {e.id: set(e.cells) for cell in range(8) for e in after.cell_entries(cell)}
    pairs = threshold_pairs([q.id for q in p], vectors, 0.8)
    kept = sum(bool(cells_of[pair.id_a] & cells_of[pair.id_b]) for pair in pairs)
    assert len(pairs) > 200 and kept / len(pairs) >= 0.99
    untuned = assign_cells(vectors, History(root).centroids(manifest), 0.0)
    lost = sum(not set(untuned[int(a[1:])]) & set(untuned[int(b[1:])]) for a, b, *_ in pairs)
    assert lost, "with the old margin, 0, pairs across the new borders would have been lost"


def test_entry_coder_round_trips_and_is_compact(embedder):
    vector = embedder.encode(["A man is playing a flute."])[0]
    entries = [
        Entry("p1", vector, "h", 1.5, "c", "A man is playing a flute."),
        Entry("p2", None, "h", 2.0, "c"),  # an exact copy: no vector
    ]
    coder = EntryCoder()
    for entry in entries:
        decoded = coder.decode(coder.encode(entry))
        assert decoded._replace(vector=None) == entry._replace(vector=None)
        assert (decoded.vector is None) == (entry.vector is None)
    np.testing.assert_array_equal(coder.decode(coder.encode(entries[0])).vector, vector)
    assert len(coder.encode(entries[0]._replace(text=""))) < 0.92 * len(
        PickleCoder().encode(entries[0]._replace(text=""))
    )


def a_post(post_id: str, cells: tuple[int, ...]) -> Post:
    return Post(post_id, np.ones(4, np.float32) / 2, "hash", 0.0, cells, "text")


def resolve_state() -> dict:
    return {"answers": Bag(), "done": Value(), "forget": Timer(), "timeout": Timer()}


def test_a_post_is_notified_once_with_the_earliest_match_and_both_times():
    resolve = ResolveFn()
    state = resolve_state()
    primary = Outcome([Match("late", 0.95, "orig", 300.0), Match("orig", 0.85, "orig", 100.0)], "orig", 3)
    neighbour = Outcome([Match("other", 0.9, "x", 100.0)])  # as early as "orig": the smaller id wins
    answers = [
        Answer(4, (7, 4), 500.0, neighbour),
        Answer(7, (7, 4), 500.0, primary, a_post("new", (7, 4))),
    ]
    out = [list(resolve.process(("new", a), **state)) for a in answers]
    assert out[0] == [], "waits for every cell"
    assignment, *tagged = out[1]
    assert assignment == ClusterAssignment("new", "orig", False, 3)
    pairs = [t.value for t in tagged if t.tag == PAIRS]
    assert sorted((p.id_a, p.id_b) for p in pairs) == [("late", "new"), ("new", "orig"), ("new", "other")]
    [accepted] = [t.value for t in tagged if t.tag == ACCEPTED]
    assert (accepted.id, accepted.cluster_id, accepted.cells, accepted.copy) == ("new", "orig", (7, 4), False)
    [note] = [t.value for t in tagged if t.tag == NOTIFICATIONS]
    assert note == {
        "id": "new", "duplicate_of": "orig", "score": 0.85, "kind": "semantic", "cluster_id": "orig",
        "time": "1970-01-01T00:08:20.000+00:00", "duplicate_of_time": "1970-01-01T00:01:40.000+00:00", "matches": 3,
    }  # fmt: skip
    assert list(resolve.process(("new", answers[1]), **state)) == [], "a re-delivered post resolves once"
    assert state["forget"].at == Timestamp(500.0 + REDELIVERY_GUARD_SECONDS), "and that memory expires"


def test_an_id_is_claimed_by_its_first_text_before_any_cell_stores_it():
    """Cells are sharded: a message reusing an id with another text that lands in a cell that never held the id was
    stored there (and later posts paired with it under the first post's id). It stops before the cells now."""
    claim = ClaimIdFn(retention_seconds=60.0)
    state = {"claim": Value(), "forget": Timer()}
    first = Record("r1", "A cat sits on the mat.", "pubsub:1", 0)
    assert list(claim.process(("r1", first), timestamp=Timestamp(10.0), **state)) == [first]
    assert state["forget"].at == Timestamp(70.0), "kept for the retention horizon"
    again = first._replace(source="pubsub:2")
    assert list(claim.process(("r1", again), timestamp=Timestamp(11.0), **state)) == [again], "a re-delivery goes on"
    other = Record("r1", "Stock markets dropped sharply on Monday.", "pubsub:3", 0)
    [refused] = claim.process(("r1", other), timestamp=Timestamp(12.0), **state)
    assert refused.tag == DEAD_LETTER and refused.value == DeadLetter(
        "pubsub:3", other.text, "id 'r1' names an earlier post with another text (an id names one post)"
    )
    assert state["forget"].at == Timestamp(70.0), "the first text keeps the claim"
    claim.forget_claim(state["claim"])
    assert list(claim.process(("r1", other), timestamp=Timestamp(90.0), **state)) == [other], "past the horizon"
    forever = {"claim": Value(), "forget": Timer()}
    assert list(ClaimIdFn().process(("r1", first), timestamp=Timestamp(10.0), **forever)) == [first]
    assert forever["forget"].at is None, "without a retention horizon the cells keep the post, and the claim stays"


def test_an_id_a_store_holds_is_claimed_by_its_stored_text(embedder, tmp_path):
    """A restarted stream has no claims: an id its store holds, sent with another text, landed in a cell that never
    held it, was stored there and appended to the store a second time."""
    texts = paraphrase_texts(3)
    p = posts(texts, embedder.encode(texts))
    history = history_store(tmp_path / "h", p[:2], {})
    claim = ClaimIdFn(history=StreamHistory(str(tmp_path / "h")))

    def sent(post_id: str, text: str) -> list:
        state = {"claim": Value(), "forget": Timer()}
        return list(claim.process((post_id, Record(post_id, text, "pubsub:9", 0)), timestamp=Timestamp(9.0), **state))

    assert sent("p0", texts[0]) == [Record("p0", texts[0], "pubsub:9", 0)], "the stored text again: a re-delivery"
    upper = texts[0].upper()
    assert sent("p0", upper) == [Record("p0", upper, "pubsub:9", 0)], "the same text as the store normalises it"
    [refused] = sent("p0", texts[2])
    assert refused.tag == DEAD_LETTER and refused.value.error == reused_id("p0")
    assert sent("p2", texts[2]) == [Record("p2", texts[2], "pubsub:9", 0)], "an id the store does not hold"
    assert history.names_another_text("p1", text_hash(texts[0])) and not history.names_another_text("new", "0" * 32)


def test_resolve_per_cell_timeout_and_self_matches():
    resolve = ResolveFn(retention_seconds=60.0, timeout_seconds=30.0)
    decided = Outcome([Match("new", 1.0, "new", 5.0), Match("old", 0.9, "old", 1.0)], "old", 2)
    again = Outcome([], "old", 2, seen_before=True)
    state = resolve_state()
    # a re-delivery's answer (seen_before) comes first, then the same cell's first answer: the first one decides
    assert list(resolve.process(("new", Answer(3, (3,), 5.0, again, a_post("new", (3,)))), **state)) == []
    assert state["timeout"].at is not None, "waiting is bounded"
    assignment, *tagged = resolve.process(("new", Answer(3, (3,), 5.0, decided, a_post("new", (3,)))), **state)
    assert assignment == ClusterAssignment("new", "old", False, 2)
    pairs = [t.value for t in tagged if t.tag == PAIRS]
    assert pairs == [make_pair("new", "old", 0.9, "semantic")], "no pair with itself"
    assert state["timeout"].at is None and state["forget"].at == Timestamp(65.0)

    lost = resolve_state()  # the primary cell's answer never comes: the timeout resolves with the other cell's matches
    neighbour = Outcome([Match("near", 0.88, "c9", 2.0)])
    assert list(resolve.process(("late", Answer(5, (4, 5), 7.0, neighbour)), **lost)) == []
    out = list(resolve.give_up_waiting("late", **lost))
    assert [o.value for o in out[:1]] == [ClusterAssignment("late", "c9", False, 0)]
    assert all(o.timestamp == Timestamp(7.0) for o in [out[0], *(t.value for t in out[1:])]), "at the post's time"
    assert lost["done"].read() and list(resolve.give_up_waiting("late", **lost)) == []

    redelivered = resolve_state()  # resolved long ago, remembered no more: the primary says seen_before; nothing
    assert list(resolve.process(("old", Answer(3, (3,), 1.0, again, a_post("old", (3,)))), **redelivered)) == []
    assert list(resolve.give_up_waiting("old", **redelivered)) == []

    restarted = resolve_state()  # a new stream: the primary cell holds the id, stored with another text
    reused = Outcome([], "old", 2, seen_before=True, other_text=True)
    message = a_post("old", (3, 4))._replace(text="Another text", source="pubsub:7")
    [refused] = resolve.process(("old", Answer(3, (3, 4), 9.0, reused, message)), **restarted)
    assert refused.tag == DEAD_LETTER and refused.value == DeadLetter(
        "pubsub:7", "Another text", "id 'old' names an earlier post with another text (an id names one post)"
    ), "at once, not after the timeout"
    assert list(resolve.process(("old", Answer(4, (3, 4), 9.0, Outcome([], "old", 1))), **restarted)) == []
    assert list(resolve.give_up_waiting("old", **restarted)) == [], "its other cells' answers resolve nothing"


def test_a_published_message_fits_pubsub_whatever_it_carries():
    """A dead letter carries the message it rejects: 3.8 MB of 'é' was 11.4 MB of \\u escapes, over Pub/Sub's 10 MB."""
    from transforms.pubsub import MAX_PUBLISHED_STRING, json_message

    for raw in ("é" * 1_900_000, "\x01" * 1_700_000, "🙂" * 2_400_000):
        message = json_message({"source": "pubsub:1", "raw": raw, "error": "over the cap"})
        assert len(message) < 10_000_000
        assert json.loads(message)["raw"] == raw[:MAX_PUBLISHED_STRING]
    assert json_message({"text": "café"}) == '{"text": "café"}'.encode()
