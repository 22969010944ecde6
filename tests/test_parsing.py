"""Input parsing: every physical record yields exactly one record or dead letter with a clear reason."""

from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semsim_core.parsing import ParseConfig, detect_format, parse_csv, parse_jsonl, parse_parquet, parse_txt
from semsim_core.records import DeadLetter, Record

CONFIG = ParseConfig(max_text_bytes=200)
# Sentences from STS Benchmark test (see tests/data/stsbenchmark).
GIRL = "A girl is styling her hair."
SOCCER = "A group of men play soccer on the beach."


def lines(data: bytes) -> list[bytes]:
    return io.BytesIO(data).readlines()


def errors(items) -> list[str | None]:
    return [item.error if isinstance(item, DeadLetter) else None for item in items]


def test_detect_format():
    assert detect_format("gs://bucket/a/b.jsonl.gz") == "jsonl"
    assert detect_format("x.CSV") == "csv"
    assert detect_format("x.parquet") == "parquet"
    assert detect_format("notes.txt.bz2") == "txt"
    assert detect_format("README.md") is None
    assert detect_format("array.json") is None, "a .json file may be one JSON document, not JSON lines"


def test_txt_ids_and_bad_lines():
    data = (
        GIRL.encode()
        + b"\r\n"
        + b"\n"
        + b"   \t \n"
        + b"caf\xe9 au lait\n"
        + b"nul\x00byte\n"
        + ("x" * 201).encode()
        + b"\n"
        + SOCCER.encode()
    )
    items = list(parse_txt("dir/in.txt", lines(data), CONFIG))
    assert items[0] == Record("in.txt:1", GIRL, "dir/in.txt", 1)
    assert items[6] == Record("in.txt:7", SOCCER, "dir/in.txt", 7)
    errs = errors(items)
    assert "empty or whitespace" in errs[1] and "empty or whitespace" in errs[2]
    assert errs[3] == "invalid UTF-8 at byte 3"
    assert items[3].raw == "caf\\xe9 au lait" and items[3].source == "dir/in.txt:4"
    assert "NUL" in errs[4]
    assert "201 bytes, over the cap of 200" in errs[5]


def test_jsonl_fields_and_bad_lines():
    rows = [
        json.dumps({"id": "a", "text": GIRL}),
        json.dumps({"id": 7, "text": SOCCER}),
        json.dumps({"text": SOCCER}),
        '{"id": "b", "text": ',
        "[1, 2]",
        json.dumps({"id": "c"}),
        json.dumps({"id": "d", "text": 42}),
        json.dumps({"id": "e", "text": None}),
        json.dumps({"id": True, "text": GIRL}),
        json.dumps({"id": "", "text": GIRL}),
        '{"id": "f", "text": "bad \\ud800 surrogate"}',
        "",
    ]
    data = "\n".join(rows).encode() + b"\n" + b'{"id": "g", "text": "\xff"}\n'
    items = list(parse_jsonl("in.jsonl", lines(data), CONFIG))
    assert len(items) == 13
    assert items[0] == Record("a", GIRL, "in.jsonl", 1)
    assert items[1].id == "7"
    assert items[2].id == "in.jsonl:3"
    errs = errors(items)
    assert errs[3].startswith("malformed JSON")
    assert errs[4] == "JSON line is a list, expected an object"
    assert errs[5] == "missing field 'text'"
    assert errs[6] == "field 'text' is int, expected a string"
    assert errs[7] == "field 'text' is null"
    assert errs[8] == "field 'id' is bool, expected a string or integer"
    assert errs[9] == "field 'id' is empty"
    assert "not valid UTF-8" in errs[10]
    assert errs[11] == "empty line"
    assert errs[12].startswith("invalid UTF-8")


def test_jsonl_custom_fields():
    data = json.dumps({"post_id": "p1", "body": GIRL, "text": "ignored"}).encode()
    config = ParseConfig(id_field="post_id", text_field="body")
    assert list(parse_jsonl("x.jsonl", lines(data), config)) == [Record("p1", GIRL, "x.jsonl", 1)]


def test_csv_rows_positions_and_bad_rows():
    data = (
        b"id,text,extra\r\n"
        b'a,"' + GIRL.encode() + b'",1\r\n'
        b'b,"two\nlines",2\r\n'
        b"c,too,many,fields\r\n"
        b"\r\n"
        b'd,"caf\xe9",3\r\n'
        b'e,"' + SOCCER.encode() + b'",4\r\n'
    )
    items = list(parse_csv("in.csv", lines(data), CONFIG))
    assert items[0] == Record("a", GIRL, "in.csv", 2)
    assert items[1] == Record("b", "two\nlines", "in.csv", 3)
    errs = errors(items)
    assert errs[2] == "malformed CSV: row has 4 fields, header has 3" and items[2].source == "in.csv:5"
    assert errs[3] == "empty line"
    assert errs[4] == "invalid UTF-8 in CSV row" and items[4].raw == 'd,"caf\\xe9",3'
    assert items[5] == Record("e", SOCCER, "in.csv", 8)


def test_csv_without_text_column():
    items = list(parse_csv("in.csv", lines(b"id,body\n1,hello\n"), CONFIG))
    assert errors(items) == ["missing field 'text'"]


def test_parquet_rows_and_bad_values():
    table = pa.table({"id": ["a", None, "c", "d"], "text": [GIRL, SOCCER, None, "  "], "other": [1, 2, 3, 4]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    buffer.seek(0)
    items = list(parse_parquet("dir/in.parquet", buffer, CONFIG))
    assert items[0] == Record("a", GIRL, "dir/in.parquet", 1)
    assert items[1] == Record("in.parquet:2", SOCCER, "dir/in.parquet", 2)
    assert errors(items)[2:] == ["field 'text' is null", "field 'text' is empty or whitespace only"]
    assert json.loads(items[2].raw) == {"id": "c", "text": None}


def test_parquet_binary_text_and_corrupt_file():
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array([b"bytes"], pa.binary())}), buffer)
    buffer.seek(0)
    assert errors(parse_parquet("b.parquet", buffer, CONFIG)) == ["field 'text' is bytes, expected a string"]
    corrupt = list(parse_parquet("c.parquet", io.BytesIO(b"PAR1 not really parquet"), CONFIG))
    assert len(corrupt) == 1 and corrupt[0].error.startswith("cannot read Parquet file (at open)")


@pytest.mark.parametrize("parser", [parse_txt, parse_jsonl, parse_csv])
def test_empty_file_yields_nothing(parser):
    assert list(parser("empty", [], CONFIG)) == []
