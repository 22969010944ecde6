"""Input formats: every physical record yields exactly one record or dead letter with a clear reason, and every
reader (extension detection, files, Pub/Sub messages, table rows) derives from one registry."""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import shutil
import zlib

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from pipelines.options import StreamingDedupOptions
from semsim_core.formats import (
    FORMATS,
    REGISTRY,
    TABLE_FORMATS,
    ParseConfig,
    TableError,
    detect_format,
    parse_file,
    parse_message,
    read_fields,
    read_rows,
    table_format,
)
from semsim_core.formats.base import event_time, has_visible_character, record_from_mapping, stream_reader
from semsim_core.records import DeadLetter, Record
from tests.conftest import REPO, sample_titles
from transforms import DEAD_LETTER
from transforms.read import ReadRecords

CONFIG = ParseConfig(max_text_bytes=200)
# Sentences from STS Benchmark test (see tests/data/stsbenchmark).
GIRL = "A girl is styling her hair."
SOCCER = "A group of men play soccer on the beach."
TITLES_TSV = REPO / "tests" / "data" / "reddit_titles.tsv"  # the first 20 sample titles (see tests/data/README.md)


def parse(fmt: str, path: str, data: bytes, config: ParseConfig = CONFIG) -> list:
    return list(parse_file(path, io.BytesIO(data), fmt, config))


def errors(items) -> list[str | None]:
    return [item.error if isinstance(item, DeadLetter) else None for item in items]


def test_detect_format():
    assert detect_format("gs://bucket/a/b.jsonl.gz") == "jsonl"
    assert detect_format("x.CSV") == "csv"
    assert detect_format("x.parquet") == "parquet"
    assert detect_format("notes.txt.bz2") == "txt"
    assert detect_format("posts.ndjson") == "jsonl"
    assert detect_format("titles.tsv") == "tsv"
    assert detect_format("gs://bucket/titles.TSV.gz") == "tsv"
    assert detect_format("README.md") is None
    assert detect_format("array.json") is None, "a .json file may be one JSON document, not JSON lines"


def test_registry_names_each_format_and_extension_once():
    extensions = [extension for fmt in REGISTRY for extension in fmt.extensions]
    assert len(extensions) == len(set(extensions))
    assert len(FORMATS) == len(set(FORMATS)) and {"txt", "jsonl", "csv", "tsv", "parquet"} <= set(FORMATS)
    assert set(TABLE_FORMATS) == {"csv", "tsv", "jsonl"}
    assert [table_format(p) for p in ("a.csv", "a.TSV", "a.ndjson", "a.txt", "a.parquet", "a.csv.gz")] == [
        "csv",
        "tsv",
        "jsonl",
        None,
        None,
        None,
    ]
    with pytest.raises(ValueError, match="unknown input format 'xml'"):
        parse_file("a.xml", io.BytesIO(b""), "xml", CONFIG)


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
    items = parse("txt", "dir/in.txt", data)
    assert items[0] == Record("dir/in.txt:1", GIRL, "dir/in.txt", 1)
    assert items[6] == Record("dir/in.txt:7", SOCCER, "dir/in.txt", 7)
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
    items = parse("jsonl", "in.jsonl", data)
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
    assert parse("jsonl", "x.jsonl", data, config) == [Record("p1", GIRL, "x.jsonl", 1)]


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
    items = parse("csv", "in.csv", data)
    assert items[0] == Record("a", GIRL, "in.csv", 2)
    assert items[1] == Record("b", "two\nlines", "in.csv", 3)
    errs = errors(items)
    assert errs[2] == "malformed CSV: row has 4 fields, header has 3" and items[2].source == "in.csv:5"
    assert errs[3] == "empty line"
    assert errs[4] == "invalid UTF-8 in CSV row" and items[4].raw == 'd,"caf\\xe9",3'
    assert items[5] == Record("e", SOCCER, "in.csv", 8)


@pytest.mark.parametrize("fmt, sep", [("csv", b","), ("tsv", b"\t")])
def test_a_quote_that_never_closes_costs_only_its_line(fmt, sep):
    """Without strict quoting the rest of the file became one field of one accepted record; now the line that opens
    the quote is a dead letter and the lines after it are read as rows again. A quoted field closed before other
    text is malformed too."""
    lines = [
        b"id" + sep + b"text",
        b"a" + sep + GIRL.encode(),
        b"b" + sep + b'"never closed',
        b"c" + sep + SOCCER.encode(),
    ]
    items = parse(fmt, "q", b"\n".join(lines) + b"\n")
    label = fmt.upper()
    assert items[0] == Record("a", GIRL, "q", 2)
    assert (items[1].source, items[1].raw) == ("q:3", "b" + sep.decode() + '"never closed')
    assert items[1].error.startswith(f"malformed {label}: unexpected end of data")
    assert items[2:] == [Record("c", SOCCER, "q", 4)]
    closed_early = parse(fmt, "q", lines[0] + b"\nd" + sep + b'"quoted"tail\n' + lines[1] + b"\n")
    assert closed_early[0].error.startswith(f"malformed {label}: ") and closed_early[1] == Record("a", GIRL, "q", 3)


def test_a_byte_order_mark_is_not_part_of_the_first_line():
    bom = b"\xef\xbb\xbf"
    assert parse("csv", "x.csv", bom + b"id,text\na," + GIRL.encode() + b"\n") == [Record("a", GIRL, "x.csv", 2)]
    assert parse("jsonl", "x.jsonl", bom + json.dumps({"id": "a", "text": GIRL}).encode()) == [
        Record("a", GIRL, "x.jsonl", 1)
    ]
    assert parse("txt", "x.txt", bom + GIRL.encode()) == [Record("x.txt:1", GIRL, "x.txt", 1)]
    assert parse("txt", "x.txt", bom) == []


def test_text_with_nothing_visible_is_a_dead_letter():
    for invisible in ("\u200b", "\u200b\u2060 \ufeff", "\u00ad\x01", "\u2028\u200b"):
        assert errors(parse("jsonl", "x.jsonl", json.dumps({"text": invisible}).encode())) == [
            "field 'text' has no visible characters (only spaces, controls, format characters, lone marks, blanks)"
        ]
    assert parse("jsonl", "x.jsonl", json.dumps({"id": "a", "text": "\u200b" + GIRL}).encode())[0].text.endswith(GIRL)


def test_json_that_python_cannot_hold_is_a_dead_letter():
    too_many_digits = '{"id": "a", "text": "x", "n": ' + "9" * 5000 + "}"
    too_deep = '{"id": "b", "text": "x", "n": ' + "[" * 100_000 + "]" * 100_000 + "}"
    items = parse("jsonl", "x.jsonl", f"{too_many_digits}\n{too_deep}\n".encode())
    assert errors(items)[0].startswith("unreadable JSON: Exceeds the limit (4300 digits)")
    assert errors(items)[1] == "unreadable JSON: nested too deeply"


def test_csv_without_text_column():
    assert errors(parse("csv", "in.csv", b"id,body\n1,hello\n")) == ["missing field 'text'"]


def test_tsv_of_real_titles_reads_as_the_jsonl_they_came_from():
    items = parse("tsv", str(TITLES_TSV), TITLES_TSV.read_bytes())
    expected = [Record(row["id"], row["text"], str(TITLES_TSV), line) for line, row in enumerate(sample_titles(20), 2)]
    assert items == expected
    assert sum('"' in record.text for record in items) == 3, "quoted titles keep their inner quotes, once"


def test_tsv_quoting_ids_and_bad_rows():
    data = (
        b"id\ttext\tscore\n"
        b"a\t" + GIRL.encode() + b"\t2.5\n"
        b'b\t"tab\tinside"\t1\n'
        b'c\t"two\nlines"\t1\n'
        b'd\tsays "hi" twice\t1\n'
        b"\t" + SOCCER.encode() + b"\t3\n"
        b"e\ttoo\tmany\tfields\n"
        b"f\tfield with a comma, kept\n"
        b"\n"
        b"g\tcaf\xe9\t1\n"
        b"h\tcarriage\rreturn\t1\n"
        b"i\t \t1\n"
    )
    items = parse("tsv", "dir/in.tsv", data)
    assert items[:4] == [
        Record("a", GIRL, "dir/in.tsv", 2),
        Record("b", "tab\tinside", "dir/in.tsv", 3),
        Record("c", "two\nlines", "dir/in.tsv", 4),
        Record("d", 'says "hi" twice', "dir/in.tsv", 6),
    ]
    assert [(item.source, item.error) for item in items[4:]] == [
        ("dir/in.tsv:7", "field 'id' is empty"),
        ("dir/in.tsv:8", "malformed TSV: row has 4 fields, header has 3"),
        ("dir/in.tsv:9", "malformed TSV: row has 2 fields, header has 3"),
        ("dir/in.tsv:10", "empty line"),
        ("dir/in.tsv:11", "invalid UTF-8 in TSV row"),
        ("dir/in.tsv:12", "malformed TSV: row has 2 fields, header has 3"),  # a lone CR ends a line, as in Python
        ("dir/in.tsv:13", "malformed TSV: row has 2 fields, header has 3"),
        ("dir/in.tsv:14", "field 'text' is empty or whitespace only"),
    ]  # fmt: skip
    assert items[8].raw == "g\tcaf\\xe9\t1"
    assert errors(parse("tsv", "in.tsv", b"id\tbody\n1\thello\n")) == ["missing field 'text'"]
    without_ids = b"subreddit\tbody\nsoccer\t" + SOCCER.encode() + b"\n"
    assert parse("tsv", "x.tsv", without_ids, ParseConfig(text_field="body")) == [Record("x.tsv:2", SOCCER, "x.tsv", 2)]


def test_parquet_rows_and_bad_values():
    table = pa.table({"id": ["a", None, "c", "d"], "text": [GIRL, SOCCER, None, "  "], "other": [1, 2, 3, 4]})
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    items = parse("parquet", "dir/in.parquet", buffer.getvalue())
    assert items[0] == Record("a", GIRL, "dir/in.parquet", 1)
    assert items[1] == Record("dir/in.parquet:2", SOCCER, "dir/in.parquet", 2)
    assert errors(items)[2:] == ["field 'text' is null", "field 'text' is empty or whitespace only"]
    assert json.loads(items[2].raw) == {"id": "c", "text": None}


def test_parquet_binary_text_and_corrupt_file():
    buffer = io.BytesIO()
    pq.write_table(pa.table({"text": pa.array([b"bytes"], pa.binary())}), buffer)
    assert errors(parse("parquet", "b.parquet", buffer.getvalue())) == ["field 'text' is bytes, expected a string"]
    corrupt = parse("parquet", "c.parquet", b"PAR1 not really parquet")
    assert len(corrupt) == 1 and corrupt[0].error.startswith("cannot read Parquet file (any row)")


def test_a_parquet_value_python_cannot_hold_costs_only_its_row():
    """A string that is not UTF-8, a timestamp past the year 9999: that row is a dead letter, not the whole file."""
    texts = pa.Array.from_buffers(pa.string(), 3, pa.array([GIRL.encode(), b"caf\xe9", SOCCER.encode()]).buffers())
    times = pa.array([0, 9 * 10**18, 1_000_000], pa.timestamp("us"))
    buffer = io.BytesIO()
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": texts, "at": times}), buffer)
    items = parse("parquet", "p.parquet", buffer.getvalue(), ParseConfig(time_field="at"))
    assert items[0] == Record("a", GIRL, "p.parquet", 1, 0) and items[2] == Record(
        "c", SOCCER, "p.parquet", 3, 1_000_000
    )
    assert items[1].source == "p.parquet:2"
    assert "column 'text': UnicodeDecodeError" in items[1].error and "column 'at': OverflowError" in items[1].error


@pytest.mark.parametrize("fmt", ["txt", "jsonl", "csv", "tsv"])
def test_empty_file_yields_nothing(fmt):
    assert parse(fmt, "empty", b"") == []


def test_parse_message_text_json_and_bad_messages():
    assert parse_message(b"A girl is styling her hair.", {}, "17", CONFIG) == Record(
        "17", "A girl is styling her hair.", "pubsub:17", 0
    )
    assert parse_message(b"A girl is styling her hair.", {"id": "post-1"}, "17", CONFIG).id == "post-1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {}, "18", CONFIG).id == "j1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {"id": "attr"}, "18", CONFIG).id == "attr"
    assert parse_message(b'{"text": "A girl."}', {}, "19", CONFIG) == Record("19", "A girl.", "pubsub:19", 0)
    uid = PipelineOptions(["--id-attribute", "uid"]).view_as(StreamingDedupOptions).parse_config()
    assert uid.id_attribute == "uid", "--id-attribute uid: that attribute, not 'id', names the post"
    assert parse_message(b"A girl.", {"uid": "u1", "id": "other"}, "22", uid).id == "u1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {"uid": "u1"}, "22", uid).id == "u1"
    assert parse_message(b'{"id": "j1", "text": "A girl."}', {"id": "attr"}, "22", uid).id == "j1"
    assert parse_message(b"[1, 2]", {}, "21", CONFIG) == Record("21", "[1, 2]", "pubsub:21", 0), "text, not JSON"
    assert parse_message(b'{"id": null, "text": "A girl."}', {}, "23", CONFIG).id == "23", "a null id: the message's"
    braced = parse_message(b"{Update} A new version", {"id": "b1"}, "24", CONFIG)
    assert braced.error.endswith("(a text starting with '{' is sent as a JSON object)"), braced
    bad = {
        b'{"text": ': "malformed JSON",
        b'{"id": "x"}': "missing field 'text'",
        b"   ": "the message is empty or whitespace only",
        b"caf\xe9": "invalid UTF-8 at byte 3",
        b'{"text": ""}': "field 'text' is empty or whitespace only",
    }
    for data, reason in bad.items():
        item = parse_message(data, {}, "20", CONFIG)
        assert isinstance(item, DeadLetter) and item.error.startswith(reason) and item.source == "pubsub:20"


def test_read_rows_of_tsv_and_jsonl(tmp_path):
    rows = list(read_rows(str(TITLES_TSV), "tsv", ("id", "text")))
    assert [(where, row["id"], row["text"]) for where, row in rows] == [
        (f"{TITLES_TSV}:{line}", row["id"], row["text"]) for line, row in enumerate(sample_titles(20), 2)
    ]
    with pytest.raises(TableError, match=r"reddit_titles.tsv: missing column\(s\) label; see --help"):
        list(read_rows(str(TITLES_TSV), "tsv", ("text", "label"), "; see --help"))
    (tmp_path / "bad.jsonl").write_text('{"id": 1}\n[2]\n', encoding="utf-8")
    with pytest.raises(TableError, match=r"bad.jsonl:2: not a JSON object"):
        list(read_rows(str(tmp_path / "bad.jsonl"), "jsonl", ("id",)))
    with pytest.raises(TableError, match="cannot read"):
        list(read_rows(str(tmp_path / "missing.csv"), "csv", ()))


def test_read_records_on_a_tsv_glob(tmp_path):
    """ReadRecords on the FnApiRunner: plain and gzipped TSV files by glob, their bad rows as dead letters."""
    shutil.copy(TITLES_TSV, tmp_path / "a.tsv")
    with gzip.open(tmp_path / "b.tsv.gz", "wb") as f:
        f.write(b"id\ttext\n" + b"g1\t" + GIRL.encode() + b"\n" + b"g2\n")
    expected = [(row["id"], row["text"]) for row in sample_titles(20)] + [("g1", GIRL)]
    with beam.Pipeline("FnApiRunner", options=PipelineOptions([])) as p:
        read = p | ReadRecords([str(tmp_path / "*.tsv*")], ParseConfig())
        assert_that(read.records | "IdText" >> beam.Map(lambda r: (r.id, r.text)), equal_to(expected))
        dead = read[DEAD_LETTER] | "SourceError" >> beam.Map(lambda d: (d.source.rsplit("/", 1)[-1], d.error))
        assert_that(dead, equal_to([("b.tsv.gz:3", "malformed TSV: row has 1 fields, header has 2")]), label="Dead")


def test_read_records_reads_each_file_once_to_its_end_or_says_where_it_stopped(tmp_path):
    """ReadRecords on the FnApiRunner: files of one name in two folders keep their records apart; a file matched by
    two patterns, or reached through a linked folder, is read once; a gzipped Parquet file is read; a corrupt gzip is
    one dead letter and a truncated one is its records up to the cut plus one dead letter for the rest (Beam's own
    decompression stopped at the cut without a word)."""
    titles = [row["text"] for row in sample_titles(60)]
    for folder, pair in (("a", titles[:2]), ("b", titles[2:4])):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "same.txt").write_text("\n".join(pair) + "\n", encoding="utf-8")
    table = io.BytesIO()
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": titles[4:6]}), table)
    (tmp_path / "a" / "rows.parquet.gz").write_bytes(gzip.compress(table.getvalue()))
    (tmp_path / "a" / "corrupt.jsonl.gz").write_bytes(b"not gzip at all\n")
    lines = "".join(json.dumps({"id": f"t{i}", "text": text}) + "\n" for i, text in enumerate(titles[6:]))
    packed = gzip.compress(lines.encode())
    (tmp_path / "b" / "cut.jsonl.gz").write_bytes(packed[: len(packed) // 2])
    (tmp_path / "c").symlink_to(tmp_path / "a", target_is_directory=True)  # a's files again, through a link

    patterns = [str(tmp_path / "*" / "*"), str(tmp_path / "a" / "same.txt"), str(tmp_path / "c" / "*.txt")]
    with beam.Pipeline("FnApiRunner", options=PipelineOptions([])) as p:
        read = p | ReadRecords(patterns, ParseConfig())
        records = read.records | "IdText" >> beam.Map(lambda r: (r.id, r.text))
        dead = read[DEAD_LETTER] | "SourceError" >> beam.Map(lambda d: (d.source.rsplit("/", 1)[-1], d.error))
        cut = [f"t{i}" for i in range(len(titles) - 6)]

        def check(both):
            records, dead = both
            ids = [record_id for record_id, _ in records]
            same = {(f"{tmp_path / 'a' / 'same.txt'}:{line}", text) for line, text in enumerate(titles[:2], 1)}
            same |= {(f"{tmp_path / 'b' / 'same.txt'}:{line}", text) for line, text in enumerate(titles[2:4], 1)}
            assert len(ids) == len(set(ids)), "every record once"
            assert same | {("p1", titles[4]), ("p2", titles[5])} <= set(records)
            read_before_cut = [record_id for record_id in ids if record_id.startswith("t")]
            assert 0 < len(read_before_cut) < len(cut) and read_before_cut == cut[: len(read_before_cut)]
            assert len(ids) == 6 + len(read_before_cut)
            assert sorted(dead) == [
                ("corrupt.jsonl.gz", "cannot read the file at all: BadGzipFile: Not a gzipped file (b'no')"),
                ("cut.jsonl.gz", f"cannot read the file after its first {len(read_before_cut)} records: EOFError: "
                 "Compressed file ended before the end-of-stream marker was reached"),
            ]  # fmt: skip

        checked = (
            p
            | "Once" >> beam.Create([None])
            | "Check" >> beam.Map(lambda _, r, d: check((r, d)), beam.pvalue.AsList(records), beam.pvalue.AsList(dead))
        )
        assert_that(checked, equal_to([None]))


def test_event_times_from_a_time_field():
    config = ParseConfig(time_field="at")
    rows = [
        {"id": "a", "text": "x", "at": 1762084800},
        {"id": "b", "text": "x", "at": "1762084800.5"},
        {"id": "c", "text": "x", "at": "2025-11-02T12:00:00Z"},
        {"id": "d", "text": "x", "at": "2025-11-02T13:00:00+01:00"},
        {"id": "e", "text": "x", "at": "2025-11-02T12:00:00"},
        {"id": "h", "text": "x", "at": 1762084800500},  # milliseconds
        {"id": "i", "text": "x", "at": "1762084800000"},
        {"id": "f", "text": "x"},
        {"id": "g", "text": "x", "at": "yesterday"},
        {"id": "j", "text": "x", "at": "nan"},
    ]
    parsed = [record_from_mapping(row, "p.jsonl", i, "", config) for i, row in enumerate(rows, start=1)]
    noon = 1762084800 * 1_000_000
    assert [p.time for p in parsed[:7]] == [noon, noon + 500_000, noon, noon, noon, noon + 500_000, noon]
    assert parsed[7].error == "missing time field 'at'"
    assert "expected Unix seconds or an ISO 8601 time" in parsed[8].error
    assert parsed[9].error == "field 'at' is nan: expected Unix seconds or milliseconds"
    for outside in (1e15, -1e15, "1e17"):  # as milliseconds: past the year 9999, before the year 1
        assert "outside the years 1-9999" in event_time(outside, "at")[1]
    assert event_time(10**400, "at") == (None, "field 'at' is a number too large for a time")
    assert record_from_mapping(rows[0], "p.jsonl", 1, "", ParseConfig()).time is None


def test_fields_of_chosen_records_in_every_format(tmp_path):
    """``read_fields``: the records at the parser's positions, every field, typed as the format reads it."""
    tsv = REPO / "tests" / "data" / "reddit_titles.tsv"
    with open(tsv, "rb") as f:  # rows 2 and 4 of the file: its first and third records
        table = read_fields(str(tsv), f, "tsv", ParseConfig(), {2, 4})
    assert table.column_names == ["id", "text", "subreddit"] and table.schema.field("id").type == pa.string()
    assert table["id"].to_pylist() == ["reddit-thbv1", "reddit-12ey6x"] and table["subreddit"][1].as_py() == "ArtCrit"
    assert table["text"][0].as_py().startswith("Should be front page news!!! Romney shuns reporter who asks him")

    txt = tmp_path / "posts.txt"
    txt.write_text("first\n\nthird\n", encoding="utf-8")
    with open(txt, "rb") as f:
        assert read_fields(str(txt), f, "txt", ParseConfig(), {3}).to_pylist() == [{"text": "third"}]

    rows = [{"id": "a", "text": "x", "n": 1}, {"id": "b", "text": "y", "n": 2.5, "tags": ["t"]}, {"id": "c"}]
    jsonl = tmp_path / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    with open(jsonl, "rb") as f:  # row 3 has no text: a dead letter, never a field row
        table = read_fields(str(jsonl), f, "jsonl", ParseConfig(), {1, 2, 3})
    assert table.to_pylist() == [{"id": "a", "text": "x", "n": 1.0, "tags": None}, {**rows[1]}]

    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"id": ["a", "b", "c"], "text": ["x", "y", "z"], "n": pa.array([1, 2, 3], pa.int16())}),
                   parquet, row_group_size=2)  # fmt: skip
    with open(parquet, "rb") as f:  # rows 1 and 3, across two row groups, with the file's types
        table = read_fields(str(parquet), f, "parquet", ParseConfig(), [3, 1])
    assert table.to_pylist() == [{"id": "a", "text": "x", "n": 1}, {"id": "c", "text": "z", "n": 3}]
    assert table.schema.field("n").type == pa.int16()


COMPRESSORS = {
    ".gz": gzip.compress,
    ".bz2": bz2.compress,
    ".xz": lzma.compress,
    ".lzma": lambda data: lzma.compress(data, format=lzma.FORMAT_ALONE),
    ".zst": lambda data: zstandard.ZstdCompressor().compress(data),
    ".zstd": lambda data: zstandard.ZstdCompressor().compress(data),
    ".deflate": zlib.compress,
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_every_compression_reads_to_its_end_or_says_it_was_cut_short(suffix):
    """Beam's own .zst and .deflate decompression stopped at a cut without a word: a file cut short lost its
    records (all of them, for a one-frame .zst) with no dead letter."""
    lines = [f"{row['text']}\n".encode() for row in sample_titles(2000)]
    half = len(lines) // 2
    packed = COMPRESSORS[suffix](b"".join(lines[:half])) + COMPRESSORS[suffix](b"".join(lines[half:]))
    with stream_reader(f"titles.txt{suffix}", io.BytesIO(packed)) as whole:
        assert whole.read() == b"".join(lines), "every frame, member or stream, in order"
    cut = packed[: len(packed) * 3 // 4]
    with stream_reader(f"titles.txt{suffix}", io.BytesIO(cut)) as reader, pytest.raises(EOFError):
        assert reader.read().startswith(b"".join(lines[:half]))


def test_a_text_of_blank_letters_or_lone_marks_has_nothing_visible():
    for blank in ("\u3164\u3164", "\u2800", "\ufe0f\ufe0f", "\u0301", "\u115f\u1160", "\uffa0", "\u200b \u00ad"):
        assert not has_visible_character(blank), repr(blank)
    for seen in ("e\u0301", "\u2764\ufe0f", "\u3131", "\u2801", "x"):
        assert has_visible_character(seen), repr(seen)


def test_a_damaged_parquet_row_group_costs_only_the_rows_from_there_on(tmp_path):
    path = tmp_path / "groups.parquet"
    texts = [row["text"] for row in sample_titles(300)]
    pq.write_table(pa.table({"id": [f"g{i}" for i in range(300)], "text": texts}), path, row_group_size=100)
    column = pq.ParquetFile(path).metadata.row_group(1).column(1)
    data = bytearray(path.read_bytes())
    data[column.data_page_offset + 30 : column.data_page_offset + column.total_compressed_size - 10] = b"A" * (
        column.total_compressed_size - 40
    )
    with io.BytesIO(bytes(data)) as file:
        parsed = list(parse_file(str(path), file, "parquet", ParseConfig()))
    *records, dead = parsed
    assert [r.id for r in records] == [f"g{i}" for i in range(100)], "the first row group is read"
    assert isinstance(dead, DeadLetter) and dead.error.startswith("cannot read Parquet file (rows after row 100)")
    with io.BytesIO(bytes(data)) as file:
        assert read_fields(str(path), file, "parquet", ParseConfig(), [1, 100])["id"].to_pylist() == ["g0", "g99"]


def test_a_csv_field_longer_than_the_cap_is_one_dead_letter_not_records_of_its_lines():
    document = "Report, part one\n" + "".join(f"ghost{i},{'word ' * 20_000}\n" for i in range(5)) + "end"
    rows = [["id", "text"], ["doc", document], *([f"r{i}", f"Ordinary row {i}"] for i in range(3))]
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    parsed = list(parse_file("long.csv", io.BytesIO(buffer.getvalue().encode()), "csv", ParseConfig()))
    assert [type(p).__name__ for p in parsed] == ["DeadLetter", "Record", "Record", "Record"]
    assert parsed[0].source == "long.csv:2" and "over the cap of 100000 (--max-text-bytes)" in parsed[0].error
    assert [p.id for p in parsed[1:]] == ["r0", "r1", "r2"]


def test_the_fields_of_a_file_cut_short_are_read_up_to_the_cut():
    """--write-deduplicated reads the kept records' fields again: it crashed on the cut its first read survived."""
    rows = enumerate(sample_titles(2000))
    lines = "".join(json.dumps({"id": f"t{i}", "text": row["text"]}) + "\n" for i, row in rows)
    packed = gzip.compress(lines.encode())
    with stream_reader("cut.jsonl.gz", io.BytesIO(packed[: len(packed) // 2])) as file:
        assert read_fields("cut.jsonl.gz", file, "jsonl", ParseConfig(), [1, 3])["id"].to_pylist() == ["t0", "t2"]


def test_a_header_naming_the_text_column_twice_is_one_dead_letter_for_the_file():
    data = b"id,text,text\nd1,the real text is here,a summary column\n"
    [dead] = parse_file("twice.csv", io.BytesIO(data), "csv", ParseConfig())
    assert dead == DeadLetter(
        "twice.csv:1", "id,text,text", "malformed CSV: the header names column 'text' twice; its rows are not read"
    )


def test_raw_tsv_is_read_as_written_with_quoting_none():
    """The Reddit titles TSV is raw: a title may start with a quote. Read as quoted CSV it was a dead letter, or lost
    its quotes; --quoting none reads it as written."""
    data = b'id\ttitle\nr1\t"Incredibly expensive" is an understatement\nr2\tA "quoted" word\n'
    raw = ParseConfig(text_field="title", quoting="none")
    assert [r.text for r in parse_file("t.tsv", io.BytesIO(data), "tsv", raw)] == [
        '"Incredibly expensive" is an understatement',
        'A "quoted" word',
    ]
    quoted = list(parse_file("t.tsv", io.BytesIO(data), "tsv", ParseConfig(text_field="title")))
    assert isinstance(quoted[0], DeadLetter) and "malformed TSV" in quoted[0].error


def test_classic_mac_line_ends_are_line_ends_in_text_and_tables():
    """Excel's "CSV (Macintosh)" ends lines in a lone CR: the whole file was one dead letter (a .txt one record)."""
    table = b'id,text\rr1,first row\rr2,"quoted\rcell"\rr3,third\r'
    parsed = list(parse_file("mac.csv", io.BytesIO(table), "csv", ParseConfig()))
    assert [(r.id, r.text) for r in parsed] == [("r1", "first row"), ("r2", "quoted\rcell"), ("r3", "third")]
    lines = list(parse_file("mac.txt", io.BytesIO(b"one\rtwo\r\nthree\nfour\r"), "txt", ParseConfig()))
    assert [r.text for r in lines] == ["one", "two", "three", "four"]
