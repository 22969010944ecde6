"""Query-then-insert cell state (semsim_core.streaming); Pub/Sub message parsing is tested with the formats."""

from __future__ import annotations

import json

import numpy as np
import pytest

from semsim_core.embedder import EmbedConfig, Embedder
from semsim_core.evaluation import read_stsb
from semsim_core.normalize import text_hash
from semsim_core.records import ClusterAssignment
from semsim_core.rescore import ScoreBand
from semsim_core.streaming import CellIndex, Entry, Match, Outcome
from tests.conftest import SAMPLE_PARAPHRASES, STSB_TEST
from transforms.stream_match import NOTIFICATIONS, PAIRS, Answer, ResolveFn

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
    assert again.seen_before and again.cluster_id == "a" and again.matches == []
    other = cell.add("c", vectors["c"], text_hash(c), 4.0, AT_08)
    assert other.cluster_id == "c"
    near = float(vectors["c"] @ vectors["d"]) - 1e-4
    assert [m.id for m in cell.probe(vectors["d"], ScoreBand(near)).matches][0] == "c" and len(cell) == 3


def test_retention_by_time_and_count(embedder):
    texts = paraphrase_texts(6)
    vectors = embedder.encode(texts)
    cell = CellIndex()
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        cell.add(f"p{i}", vector, text_hash(text), float(i), AT_08)
    assert cell.evict(older_than=2.0) == ["p0", "p1"]
    assert "p0" not in cell.clusters and cell.probe(vectors[0], ScoreBand(0.99)).matches == []
    assert cell.evict(keep_newest=2) == ["p2", "p3"]
    assert cell.ids == ["p4", "p5"] and [m.id for m in cell.probe(vectors[5], ScoreBand(0.99)).matches] == ["p5"]


@pytest.mark.kernels
def test_matches_near_the_threshold_are_decided_by_fp32(embedder):
    stsb = read_stsb(str(STSB_TEST))
    int8 = Embedder(embedder.model, EmbedConfig(backend="openvino-int8"))
    approx = [int8.encode(side) for side in (stsb.first, stsb.second)]
    # only pairs near the threshold can flip (int8's drift from fp32 here is under 0.05): fp32 embeds just those
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

        seeded = CellIndex()  # history without text (seeds): decided by the stored approximate vector
        seeded.insert(Entry("a", approx[0][k], "", 1.0, "a"))
        unscored = seeded.add("b", approx[1][k], text_hash(b), 2.0, band, fp32, text=b)
        assert unscored.rescored == 0 and (unscored.cluster_id == "a") == (int8_scores[k] >= 0.8)


class Bag:
    """In-memory stand-ins for the Beam state and timer a DoFn is handed (what the runner keeps per key)."""

    def __init__(self):
        self.items = []

    def add(self, item):
        self.items.append(item)

    def read(self):
        return list(self.items)

    def clear(self):
        self.items = []


class Value(Bag):
    def write(self, item):
        self.items = [item]

    def read(self):
        return self.items[0] if self.items else None


class Timer:
    def set(self, at):
        self.at = at


def test_a_post_is_notified_once_with_the_earliest_match_and_both_times():
    resolve = ResolveFn()
    state = {"answers": Bag(), "done": Value(), "forget": Timer()}
    primary = Outcome([Match("late", 0.95, "orig", 300.0), Match("orig", 0.85, "orig", 100.0)], "orig", 3)
    probe = Outcome([Match("other", 0.9, "x", 100.0)])  # as early as "orig": the smaller id wins
    answers = [Answer(4, False, 2, probe), Answer(7, True, 2, primary)]
    out = [list(resolve.process(("new", a), 500.0, **state)) for a in answers]
    assert out[0] == [], "waits for every cell"
    assignment, *tagged = out[1]
    assert assignment == ClusterAssignment("new", "orig", False, 3)
    pairs = [t.value for t in tagged if t.tag == PAIRS]
    assert sorted((p.id_a, p.id_b) for p in pairs) == [("late", "new"), ("new", "orig"), ("new", "other")]
    [note] = [t.value for t in tagged if t.tag == NOTIFICATIONS]
    assert note == {
        "id": "new", "duplicate_of": "orig", "score": 0.85, "kind": "semantic", "cluster_id": "orig",
        "time": "1970-01-01T00:08:20.000+00:00", "duplicate_of_time": "1970-01-01T00:01:40.000+00:00", "matches": 3,
    }  # fmt: skip
    assert list(resolve.process(("new", answers[1]), 500.0, **state)) == [], "a re-delivered post resolves once"
