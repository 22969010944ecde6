"""Turn input files into :class:`Record` or :class:`DeadLetter` values, one per input record.

Every physical record (a line of ``.txt``/``.jsonl``, a row of ``.csv``/``.parquet``) yields exactly one value, so
``inputs == accepted + dead_letters`` holds by construction. Nothing here raises on bad input.
"""

from __future__ import annotations

import csv
import json
import posixpath
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import pyarrow.parquet as pq

from semsim_core.records import DeadLetter, Record

FORMATS = ("txt", "jsonl", "csv", "parquet")
_EXTENSIONS = {
    ".txt": "txt",
    ".text": "txt",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")  # what Beam opens by extension

Parsed = Record | DeadLetter


@dataclass(frozen=True)
class ParseConfig:
    """How to read records: field names for structured formats and the size cap on one text (UTF-8 bytes)."""

    id_field: str = "id"
    text_field: str = "text"
    max_text_bytes: int = 100_000


def detect_format(path: str) -> str | None:
    """Return the input format named by the file's extension (ignoring a compression suffix), or None."""
    name = posixpath.basename(path).lower()
    for suffix in _COMPRESSION_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    return _EXTENSIONS.get(posixpath.splitext(name)[1])


def printable(raw: bytes | str) -> str:
    """Return ``raw`` as a valid UTF-8 string, invalid bytes and lone surrogates shown as ``\\x..`` escapes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def text_error(value: Any, field: str, max_bytes: int) -> str | None:
    """Return why ``value`` is not an acceptable text, or None when it is."""
    if value is None:
        return f"field '{field}' is null"
    if not isinstance(value, str):
        return f"field '{field}' is {type(value).__name__}, expected a string"
    if "\x00" in value:
        return f"field '{field}' contains NUL bytes"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"field '{field}' is not valid UTF-8 (lone surrogate or undecodable bytes)"
    if not value.strip():
        return f"field '{field}' is empty or whitespace only"
    if size > max_bytes:
        return f"field '{field}' is {size} bytes, over the cap of {max_bytes} (--max-text-bytes)"
    return None


def _id_or_error(value: Any, field: str, fallback: str) -> tuple[str | None, str | None]:
    if value is None:
        return fallback, None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return None, f"field '{field}' is {type(value).__name__}, expected a string or integer"
    value = str(value)
    if not value.strip():
        return None, f"field '{field}' is empty"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return None, f"field '{field}' is not valid UTF-8"
    return value, None


def record_from_mapping(row: Mapping[str, Any], path: str, position: int, raw: str, config: ParseConfig) -> Parsed:
    """Build a record from a parsed JSON object, CSV row or Parquet row; the id falls back to ``<file>:<position>``."""
    locator = f"{path}:{position}"
    if config.text_field not in row:
        return DeadLetter(locator, raw, f"missing field '{config.text_field}'")
    error = text_error(row[config.text_field], config.text_field, config.max_text_bytes)
    if error:
        return DeadLetter(locator, raw, error)
    record_id, error = _id_or_error(row.get(config.id_field), config.id_field, derived_id(path, position))
    if error:
        return DeadLetter(locator, raw, error)
    return Record(record_id, row[config.text_field], path, position)


def derived_id(path: str, position: int) -> str:
    """The id of a record that has none: ``<file name>:<line or row number>``."""
    return f"{posixpath.basename(path)}:{position}"


def _strip_newline(line: bytes) -> bytes:
    return line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith(b"\n") else line


def _decode_line(line: bytes) -> tuple[str | None, str | None]:
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start}"


def parse_txt(path: str, lines: Iterable[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per line; the id is ``<file name>:<line number>``."""
    for number, line in enumerate(lines, 1):
        line = _strip_newline(line)
        locator = f"{path}:{number}"
        text, error = _decode_line(line)
        error = error or text_error(text, "line", config.max_text_bytes)
        if error:
            yield DeadLetter(locator, printable(line), error)
        else:
            yield Record(derived_id(path, number), text, path, number)


def parse_jsonl(path: str, lines: Iterable[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One JSON object per line with ``config.text_field`` and optionally ``config.id_field``."""
    for number, line in enumerate(lines, 1):
        line = _strip_newline(line)
        locator = f"{path}:{number}"
        text, error = _decode_line(line)
        if error:
            yield DeadLetter(locator, printable(line), error)
            continue
        if not text.strip():
            yield DeadLetter(locator, text, "empty line")
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            yield DeadLetter(locator, text, f"malformed JSON: {e.msg} at column {e.colno}")
            continue
        if not isinstance(obj, dict):
            yield DeadLetter(locator, text, f"JSON line is a {type(obj).__name__}, expected an object")
            continue
        yield record_from_mapping(obj, path, number, text, config)


class _LineTracker:
    """Feeds decoded lines to :mod:`csv` and remembers which physical lines made up the last row."""

    def __init__(self, lines: Iterable[bytes]):
        self._lines = iter(lines)
        self.number = 0
        self.consumed: list[str] = []
        self.first_line = 1

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        line = next(self._lines).decode("utf-8", "surrogateescape")
        self.number += 1
        self.consumed.append(line)
        return line

    def take_row(self) -> tuple[int, str]:
        """Return the first line number and raw text of the row just read, and start the next row."""
        first, raw = self.first_line, "".join(self.consumed).rstrip("\r\n")
        self.consumed, self.first_line = [], self.number + 1
        return first, raw


def parse_csv(path: str, lines: Iterable[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """A CSV file with a header row; one record per data row, positioned at the row's first line."""
    csv.field_size_limit(max(csv.field_size_limit(), 4 * config.max_text_bytes + 1024))
    tracker = _LineTracker(lines)
    reader = csv.reader(tracker)
    header: list[str] | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            number, raw = tracker.take_row()
            yield DeadLetter(f"{path}:{number}", printable(raw), f"malformed CSV: {e}")
            continue
        number, raw = tracker.take_row()
        if header is None:
            header = row
            continue
        locator = f"{path}:{number}"
        if not row:
            yield DeadLetter(locator, printable(raw), "empty line")
        elif len(row) != len(header):
            error = f"malformed CSV: row has {len(row)} fields, header has {len(header)}"
            yield DeadLetter(locator, printable(raw), error)
        elif any("\udc80" <= ch <= "\udcff" for field in row for ch in field):
            yield DeadLetter(locator, printable(raw), "invalid UTF-8 in CSV row")
        else:
            yield record_from_mapping(dict(zip(header, row, strict=True)), path, number, raw, config)


def parse_parquet(path: str, file: IO[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per Parquet row, positioned at its 1-based row number; only the id and text columns are read."""
    number = 0
    try:
        parquet = pq.ParquetFile(file)
        names = set(parquet.schema_arrow.names)
        columns = [c for c in dict.fromkeys((config.id_field, config.text_field)) if c in names] or None
        for batch in parquet.iter_batches(columns=columns):
            for row in batch.to_pylist():
                number += 1
                raw = json.dumps(row, ensure_ascii=False, default=str)
                yield record_from_mapping(row, path, number, raw, config)
    except Exception as e:  # noqa: BLE001 - a corrupt file becomes a dead letter, never a crashed job
        where = f"after row {number}" if number else "at open"
        yield DeadLetter(path, "", f"cannot read Parquet file ({where}): {type(e).__name__}: {e}")


def parse_file(path: str, file: IO[bytes], fmt: str, config: ParseConfig) -> Iterator[Parsed]:
    """Parse one opened (already decompressed) binary file of format ``fmt``."""
    if fmt == "parquet":
        return parse_parquet(path, file, config)
    parsers = {"txt": parse_txt, "jsonl": parse_jsonl, "csv": parse_csv}
    if fmt not in parsers:
        raise ValueError(f"unknown input format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return parsers[fmt](path, iter(file.readline, b""), config)  # Beam's decompressing files are not iterable
