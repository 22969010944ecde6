"""Query-then-insert cell state and Pub/Sub message parsing (semsim_core.streaming)."""

from __future__ import annotations

import json

from semsim_core.normalize import text_hash
from semsim_core.parsing import ParseConfig
from semsim_core.records import DeadLetter, Record
from semsim_core.streaming import CellIndex, parse_message
from tests.conftest import SAMPLE_PARAPHRASES

CONFIG = ParseConfig()


def paraphrase_texts(n: int) -> list[str]:
    return [json.loads(line)["text"] for line in SAMPLE_PARAPHRASES.read_text(encoding="utf-8").splitlines()[:n]]


def test_parse_message_text_json_and_bad_messages():
    assert parse_message(b"A girl is styling her hair.", {}, "17", CONFIG) == Record(
        "17", "A girl is styling her hair.", "pubsub:17", 0
    )
    assert parse_message(b"A girl is styling her hair.", {"id": "post-1"}, "17", CONFIG).id == "post-1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {}, "18", CONFIG).id == "j1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {"id": "attr"}, "18", CONFIG).id == "attr"
    assert parse_message(b'{"text": "A girl."}', {}, "19", CONFIG).id == "19"
    bad = {
        b'{"text": ': "malformed JSON",
        b'{"id": "x"}': "missing field 'text'",
        b"   ": "field 'data' is empty or whitespace only",
        b"caf\xe9": "invalid UTF-8 at byte 3",
        b'{"text": ""}': "field 'text' is empty or whitespace only",
    }
    for data, reason in bad.items():
        item = parse_message(data, {}, "20", CONFIG)
        assert isinstance(item, DeadLetter) and item.error.startswith(reason) and item.source == "pubsub:20"


def test_query_then_insert_clusters_exact_copies_and_redelivery(embedder):
    a, b, c, d = paraphrase_texts(4)  # a~b and c~d are STSb paraphrase pairs
    vectors = dict(zip("abcd", embedder.encode([a, b, c, d]), strict=True))
    cell = CellIndex()
    first = cell.add("a", vectors["a"], text_hash(a), 1.0, 0.8)
    assert first.matches == [] and first.cluster_id == "a" and first.cluster_size == 1
    second = cell.add("b", vectors["b"], text_hash(b), 2.0, 0.8)
    assert [m.id for m in second.matches] == ["a"] and second.cluster_id == "a" and second.cluster_size == 2
    assert abs(second.matches[0].score - float(vectors["a"] @ vectors["b"])) < 1e-5
    copy = cell.add("a-copy", vectors["a"], text_hash(a.upper()), 3.0, 0.8)
    assert copy.exact_of == "a" and copy.cluster_id == "a" and len(cell) == 2, "a copy is matched by hash, not stored"
    again = cell.add("b", vectors["b"], text_hash(b), 9.0, 0.8)
    assert again.seen_before and again.cluster_id == "a" and again.matches == []
    other = cell.add("c", vectors["c"], text_hash(c), 4.0, 0.8)
    assert other.cluster_id == "c"
    near = float(vectors["c"] @ vectors["d"]) - 1e-4
    assert [m.id for m in cell.probe(vectors["d"], near).matches][0] == "c" and len(cell) == 3


def test_retention_by_time_and_count(embedder):
    texts = paraphrase_texts(6)
    vectors = embedder.encode(texts)
    cell = CellIndex()
    for i, (text, vector) in enumerate(zip(texts, vectors, strict=True)):
        cell.add(f"p{i}", vector, text_hash(text), float(i), 0.8)
    assert cell.evict(older_than=2.0) == ["p0", "p1"]
    assert "p0" not in cell.clusters and cell.probe(vectors[0], 0.99).matches == []
    assert cell.evict(keep_newest=2) == ["p2", "p3"]
    assert cell.ids == ["p4", "p5"] and [m.id for m in cell.probe(vectors[5], 0.99).matches] == ["p5"]
