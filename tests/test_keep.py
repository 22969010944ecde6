"""The keep policy, removal explanations and table unification, as pure functions."""

from __future__ import annotations

import itertools

import pyarrow as pa
import pytest

from semsim_core.keep import EARLIEST, FIRST_ID, LONGEST, Removal, keep_key, removals
from semsim_core.records import EXACT, SEMANTIC, make_pair
from semsim_core.tables import conform, rows_table, unify


def kept(policy: str, records: list[tuple[str, str, int]]) -> str:
    return min(records, key=lambda r: keep_key(policy, r[0], len(r[1]), r[2]))[0]


def test_policies_and_their_ties():
    records = [("b", "short", 20), ("a", "a longer one", 30), ("c", "longest of all", 20)]
    assert kept(FIRST_ID, records) == "a"
    assert kept(EARLIEST, records) == "b", "b and c share the earliest time: the smaller id"
    assert kept(LONGEST, records) == "c"
    assert kept(LONGEST, [("z", "same", 1), ("y", "same", 2)]) == "y", "equal lengths: the smaller id"
    with pytest.raises(ValueError, match="needs --time-field"):
        keep_key(EARLIEST, "a", 1, None)
    with pytest.raises(ValueError, match="unknown keep policy"):
        keep_key("latest", "a", 1, 1)


def test_direct_transitive_and_exact_removals():
    pairs = [
        make_pair("k", "a", 0.9, SEMANTIC),  # direct
        make_pair("a", "b", 0.95, SEMANTIC),  # b reaches k only through a: the weakest link is 0.9
        make_pair("b", "c", 0.85, SEMANTIC),
        make_pair("k", "c", 0.81, SEMANTIC),  # c: direct 0.81, or through b and a with weakest 0.85: wider
        make_pair("k", "e1", 1.0, EXACT),
        make_pair("e1", "e2", 1.0, EXACT),  # a chain of exact copies is one exact pair
        make_pair("c", "outside", 0.99, SEMANTIC),  # a pair with a record of another cluster is ignored
    ]
    found = {r.id: r for r in removals("k", ["k", "a", "b", "c", "e1", "e2"], pairs)}
    assert found["a"] == Removal("a", "k", 0.9, SEMANTIC, ["a", "k"])
    assert found["b"] == Removal("b", "k", 0.9, SEMANTIC, ["b", "a", "k"])
    assert found["c"] == Removal("c", "k", 0.85, SEMANTIC, ["c", "b", "a", "k"])
    assert found["e2"] == Removal("e2", "k", 1.0, EXACT, ["e2", "k"])
    assert sorted(found) == ["a", "b", "c", "e1", "e2"]


def test_removals_do_not_depend_on_the_order_of_pairs():
    pairs = [
        make_pair("k", "a", 0.9, SEMANTIC),
        make_pair("k", "b", 0.9, SEMANTIC),
        make_pair("a", "c", 0.9, SEMANTIC),
        make_pair("b", "c", 0.9, SEMANTIC),  # c has two equally wide paths: the one through the smaller id
    ]
    first, *others = [list(removals("k", "kabc", order)) for order in itertools.permutations(pairs)]
    assert all(other == first for other in others)
    assert first[2] == Removal("c", "k", 0.9, SEMANTIC, ["c", "a", "k"])


def test_removals_through_stored_clusters():
    """A history store keeps clusters, not pairs: a chain steps from a stored record on a pair to its stored
    cluster's kept record by a link, which takes nothing from the score and shows in ``via``."""
    pairs = [
        make_pair("new", "s1", 0.9, SEMANTIC),  # s1 is stored, in the cluster kept as k1
        make_pair("new", "s2", 0.85, SEMANTIC),  # s2 is stored, in the cluster kept as k2
        make_pair("copy", "s3", 1.0, EXACT),  # s3 is stored, in k1's cluster
    ]
    links = [("s1", "k1"), ("s2", "k2"), ("s3", "k1")]
    found = {r.id: r for r in removals("k1", ["new", "copy", "k2"], pairs, links)}
    assert found["new"] == Removal("new", "k1", 0.9, SEMANTIC, ["new", "s1", "k1"])
    assert found["k2"] == Removal("k2", "k1", 0.85, SEMANTIC, ["k2", "s2", "new", "s1", "k1"]), "a demoted record"
    assert found["copy"] == Removal("copy", "k1", 1.0, EXACT, ["copy", "s3", "k1"]), "exact, through a link"
    assert sorted(found) == ["copy", "k2", "new"]


def test_tables_keep_types_and_unify_by_name():
    jsonl = rows_table([{"id": "a", "n": 1, "flag": True}, {"id": "b", "n": "two", "extra": {"x": 1}}])
    assert jsonl.schema.field("n").type == pa.string(), "1 and 'two' share no type: strings"
    assert jsonl.column("n").to_pylist() == ["1", "two"]
    assert jsonl.schema.field("flag").type == pa.bool_()
    huge = rows_table([{"h": 2**64 - 1}, {"h": 1}])  # over 64 bits signed: pyarrow raises OverflowError, not Arrow's
    assert huge.column("h").to_pylist() == [str(2**64 - 1), "1"]
    parquet = pa.table({"id": ["c"], "n": pa.array([3], pa.int32()), "flag": [False], "when": [1.5]})
    schema = unify([jsonl.schema, parquet.schema])
    assert schema.names == ["id", "n", "flag", "extra", "when"]
    assert schema.field("n").type == pa.string() and schema.field("when").type == pa.float64()
    table = conform(parquet, schema)
    assert table.schema == schema
    assert table.to_pylist() == [{"id": "c", "n": "3", "flag": False, "extra": None, "when": 1.5}]
    widened = unify([pa.schema([("n", pa.int32())]), pa.schema([("n", pa.int64())]), pa.schema([("n", pa.null())])])
    assert widened.field("n").type == pa.int64()
    nested = conform(pa.table({"n": [{"x": 1}]}), pa.schema([("n", pa.string())]))
    assert nested.column("n").to_pylist() == ['{"x": 1}']
