"""What every input format shares: the :class:`Format` record, the parse settings, and the checks that turn one value
into a :class:`Record` or a :class:`DeadLetter`.

Every physical record (a line, a row, a Pub/Sub message) yields exactly one value, so ``inputs == accepted +
dead_letters`` holds by construction. No parser raises on bad input.
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import math
import re
import unicodedata
import zlib
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import IO, Any

import pyarrow as pa

from semsim_core.records import DeadLetter, Record
from semsim_core.tables import rows_table

Parsed = Record | DeadLetter


@dataclass(frozen=True)
class ParseConfig:
    """How to read records: field names for structured formats, the size cap on one text (UTF-8 bytes), the
    optional field that holds each record's event time, whether records keep all their fields, the Pub/Sub
    message attribute that holds a post's id, and how CSV/TSV fields are quoted (:data:`QUOTINGS`)."""

    id_field: str = "id"
    text_field: str = "text"
    max_text_bytes: int = 100_000
    time_field: str | None = None
    keep_fields: bool = False
    id_attribute: str = "id"
    quoting: str = "csv"


QUOTINGS = ("csv", "none")  # CSV/TSV: quoted as Python's csv and pandas write them, or raw (a quote is a character)


FileParser = Callable[[str, IO[bytes], ParseConfig], Iterator[Parsed]]
"""``(path, opened and decompressed binary file, config)``: one value per record of the file."""
LineParser = Callable[[str, Iterable[bytes], ParseConfig], Iterator[Parsed]]
"""``(path, the file's lines with their line ends, config)``: one value per record."""
MessageParser = Callable[[str, Mapping[str, str], str, ParseConfig], Parsed | None]
"""``(UTF-8 payload, attributes, message id, config)``: the message as one value, or None when the payload is not of
this format."""
FieldsReader = Callable[[str, IO[bytes], ParseConfig, Collection[int]], pa.Table]
"""``(path, opened and decompressed binary file, config, positions)``: every input field of the file's records at
``positions`` (as the format's parser numbers them), one row each in file order, typed as read
(:mod:`semsim_core.tables`)."""
RowReader = Callable[[str, IO[str], Sequence[str], str], Iterator[tuple[str, dict]]]
"""``(path, opened text file, required columns, hint)``: ``(location, row)`` per row of a table file; raises
:class:`TableError` (``hint`` ends a missing-column message)."""


@dataclass(frozen=True)
class Format:
    """One input format: its name (a ``--format`` choice), the file extensions that name it (lower case, with the
    dot), how a file of it is parsed, and, where it makes sense, how a Pub/Sub payload and the rows of a table file
    (labeled pairs, gold pairs) are read."""

    name: str
    extensions: tuple[str, ...]
    parse: FileParser
    parse_message: MessageParser | None = None
    read_rows: RowReader | None = None
    read_fields: FieldsReader | None = None  # None: the parser's records, with fields kept (:func:`parsed_fields`)

    def fields(self, path: str, file: IO[bytes], config: ParseConfig, positions: Collection[int]) -> pa.Table:
        """The fields of the records at ``positions`` of one opened file (:data:`FieldsReader`)."""
        return (self.read_fields or parsed_fields(self.parse))(path, file, config, positions)


def parsed_fields(parse: FileParser) -> FieldsReader:
    """The :data:`FieldsReader` of a format whose values carry no types of their own: its parser's accepted
    records at the positions, with their fields kept."""

    def read(path: str, file: IO[bytes], config: ParseConfig, positions: Collection[int]) -> pa.Table:
        wanted, rows = set(positions), []
        for parsed in parse(path, file, replace(config, keep_fields=True)):
            if isinstance(parsed, Record) and parsed.position in wanted:
                rows.append(parsed.fields)
                if len(rows) == len(wanted):  # read no further: a file cut short fails past its last record
                    break
        return rows_table(rows)

    return read


class TableError(ValueError):
    """A table file (labeled pairs, gold pairs) that cannot be used, reported as one line (``path:line: reason``)."""


COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zst", ".zstd", ".deflate", ".lzma", ".xz")  # what Beam opens by extension


class _Frames(io.RawIOBase):
    """The decompressed bytes of ``raw``: concatenated frames (zstd) or streams (zlib), each read by a new
    ``decompressor()``; the input ending inside one raises ``EOFError``, as the gzip, bz2 and lzma readers do."""

    def __init__(self, raw: IO[bytes], decompressor: Callable[[], Any]):
        self._raw, self._new = raw, decompressor
        self._decompressor, self._inside, self._ready = decompressor(), False, b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._ready:
            data = self._raw.read(1 << 16)
            if not data:
                if self._inside:
                    raise EOFError("the compressed stream ends before its end marker (cut short?)")
                return 0
            while data:
                if self._decompressor.eof:
                    self._decompressor = self._new()
                self._ready += self._decompressor.decompress(data)
                self._inside = not self._decompressor.eof
                data = self._decompressor.unused_data if self._decompressor.eof else b""
        size = min(len(buffer), len(self._ready))
        buffer[:size], self._ready = self._ready[:size], self._ready[size:]
        return size


def _zstd() -> Any:
    import zstandard  # Beam's own dependency, imported where a .zst file is read

    return zstandard.ZstdDecompressor().decompressobj()


_STREAM_READERS: dict[str, Callable[[IO[bytes]], IO[bytes]]] = {
    ".gz": lambda raw: gzip.GzipFile(fileobj=raw, mode="rb"),
    ".bz2": lambda raw: bz2.BZ2File(raw, "rb"),
    ".xz": lambda raw: lzma.LZMAFile(raw, "rb"),
    ".lzma": lambda raw: lzma.LZMAFile(raw, "rb"),
    ".zst": lambda raw: io.BufferedReader(_Frames(raw, _zstd)),
    ".zstd": lambda raw: io.BufferedReader(_Frames(raw, _zstd)),
    ".deflate": lambda raw: io.BufferedReader(_Frames(raw, zlib.decompressobj)),  # zlib streams, as Beam writes
}


def compression_suffix(path: str) -> str | None:
    """The compression suffix that ends ``path`` (``.gz``, ...; any case), or None for an uncompressed file."""
    name = path.lower()
    return next((suffix for suffix in COMPRESSION_SUFFIXES if name.endswith(suffix)), None)


def stream_reader(path: str, raw: IO[bytes]) -> IO[bytes] | None:
    """``raw`` (the file's bytes as stored) decompressed when ``path`` ends in a compression suffix, else None:
    ``.gz``, ``.bz2``, ``.xz``, ``.lzma`` by the Python standard library, ``.zst``/``.zstd`` and ``.deflate`` frame
    by frame (:class:`_Frames`). These readers raise on a corrupt or truncated stream (Beam's own decompression
    stops at a truncated end without a word); closing one leaves ``raw`` open."""
    suffix = compression_suffix(path)
    return _STREAM_READERS[suffix](raw) if suffix in _STREAM_READERS else None


_BOM = b"\xef\xbb\xbf"


_LONE_CR = re.compile(rb"(?<=\r)(?!\n)")  # just after a carriage return that no line feed follows


def by_line(parse_lines: LineParser, universal: bool = False) -> FileParser:
    """The file parser of a line-based format: feeds ``parse_lines`` the file's lines one at a time, a UTF-8 byte
    order mark (as Excel and Notepad write) removed from the first. Lines end in ``\\n`` or ``\\r\\n``, and with
    ``universal`` also in a lone ``\\r`` (classic Mac text, Excel's "CSV (Macintosh)"), as Python's universal
    newlines read them."""

    def lines(file: IO[bytes]) -> Iterator[bytes]:
        first = file.readline().removeprefix(_BOM)
        if first:  # else the file is empty (a mark alone ends it: it has no line end)
            yield first
            yield from iter(file.readline, b"")  # Beam's decompressing files are not iterable

    def universal_lines(file: IO[bytes]) -> Iterator[bytes]:
        for line in lines(file):
            yield from (piece for piece in _LONE_CR.split(line) if piece) if b"\r" in line[:-2] else (line,)

    def parse(path: str, file: IO[bytes], config: ParseConfig) -> Iterator[Parsed]:
        return parse_lines(path, (universal_lines if universal else lines)(file), config)

    return parse


def printable(raw: bytes | str) -> str:
    """Return ``raw`` as a valid UTF-8 string, invalid bytes and lone surrogates shown as ``\\x..`` escapes."""
    if isinstance(raw, str):
        raw = raw.encode("utf-8", "surrogateescape")
    return raw.decode("utf-8", "backslashreplace")


def text_error(value: Any, what: str, max_bytes: int) -> str | None:
    """Return why ``value``, named ``what`` (``field 'text'``, ``the line``), is not an acceptable text, or None
    when it is."""
    if value is None:
        return f"{what} is null"
    if not isinstance(value, str):
        return f"{what} is {type(value).__name__}, expected a string"
    if "\x00" in value:
        return f"{what} contains NUL bytes"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return f"{what} is not valid UTF-8 (lone surrogate or undecodable bytes)"
    if not value.strip():
        return f"{what} is empty or whitespace only"
    if not has_visible_character(value):
        return f"{what} has no visible characters (only spaces, controls, format characters, lone marks, blanks)"
    if size > max_bytes:
        return f"{what} is {size} bytes, over the cap of {max_bytes} (--max-text-bytes)"
    return None


_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
# letters and symbols drawn as nothing: the Hangul fillers, the blank Braille pattern (the usual "blank post"
# characters), and the halfwidth Hangul filler
_BLANK_CHARACTERS = frozenset("\u115f\u1160\u3164\u2800\uffa0")


def has_visible_character(text: str) -> bool:
    """Whether ``text`` holds a character other than whitespace, control and format characters (zero width spaces
    and joiners, byte order marks, soft hyphens, ...), combining marks and variation selectors with nothing to mark,
    and the blank letters (Hangul fillers, the blank Braille pattern): text a reader, or a model, can see. Stops at
    the first such character, so ordinary text costs one lookup."""
    return any(ch not in _BLANK_CHARACTERS and unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


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
    """Build a record from a parsed JSON object or table row; the id falls back to ``<file>:<position>``."""
    locator = f"{path}:{position}"
    if config.text_field not in row:
        return DeadLetter(locator, raw, f"missing field '{config.text_field}'")
    error = text_error(row[config.text_field], f"field '{config.text_field}'", config.max_text_bytes)
    if error:
        return DeadLetter(locator, raw, error)
    record_id, error = _id_or_error(row.get(config.id_field), config.id_field, derived_id(path, position))
    if error:
        return DeadLetter(locator, raw, error)
    time = None
    if config.time_field:
        time, error = event_time(row.get(config.time_field), config.time_field)
        if error:
            return DeadLetter(locator, raw, error)
    return Record(record_id, row[config.text_field], path, position, time, dict(row) if config.keep_fields else None)


def event_time(value: Any, field: str) -> tuple[int | None, str | None]:
    """``(microseconds since the Unix epoch, None)`` for a time value, else ``(None, reason)``. Accepted: Unix
    seconds or milliseconds (a number, or a string of one, as CSV holds them; :func:`epoch_micros` tells them
    apart), an ISO 8601 string (UTC unless it names an offset) or a datetime (Parquet timestamps)."""
    if value is None:
        return None, f"missing time field '{field}'"
    moment = value
    if isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            return None, f"field '{field}' is a number too large for a time"
        except ValueError:
            pass
        else:
            return epoch_micros(number, field)
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            return None, f"field '{field}' is {value!r}: expected Unix seconds or an ISO 8601 time"
    if not isinstance(moment, datetime):
        return None, f"field '{field}' is {type(value).__name__}: expected Unix seconds or an ISO 8601 time"
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1_000_000), None


MILLISECONDS_FROM = 1e11  # as seconds: the year 5138; as milliseconds: 1973-03-03
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MICROS_RANGE = tuple(
    (moment - _EPOCH) // timedelta(microseconds=1)
    for moment in (datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
)
"""The first and last microsecond of the years 1-9999, the times every output (a Parquet timestamp, a Python
datetime) can hold."""


def epoch_micros(number: float, field: str) -> tuple[int | None, str | None]:
    """A Unix time in seconds, or in milliseconds when its magnitude is at least :data:`MILLISECONDS_FROM` (no
    record of this era is that many seconds from 1970, and milliseconds reach it from March 1973 on), as
    microseconds; NaN, infinities and times outside the years 1-9999 are refused."""
    if not math.isfinite(number):
        return None, f"field '{field}' is {number}: expected Unix seconds or milliseconds"
    micros = round(number * (1_000 if abs(number) >= MILLISECONDS_FROM else 1_000_000))
    if not MICROS_RANGE[0] <= micros <= MICROS_RANGE[1]:
        return None, f"field '{field}' is {number:g}: as Unix seconds or milliseconds, outside the years 1-9999"
    return micros, None


def derived_id(path: str, position: int) -> str:
    """The id of a record that has none: where it is, ``<path>:<line or row number>`` (the path as matched, so files
    of one name in several folders keep apart)."""
    return f"{path}:{position}"


def message_source(message_id: str) -> str:
    """Where a Pub/Sub message's record or dead letter comes from: ``pubsub:<message id>``."""
    return f"pubsub:{message_id}"


def strip_newline(line: bytes) -> bytes:
    """``line`` without its line end (``\\n``, ``\\r\\n`` or a lone ``\\r``)."""
    return line[:-2] if line.endswith(b"\r\n") else line[:-1] if line.endswith((b"\n", b"\r")) else line


def decode_line(line: bytes) -> tuple[str | None, str | None]:
    """``(text, None)`` for a UTF-8 line, else ``(None, reason)``."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as e:
        return None, f"invalid UTF-8 at byte {e.start}"
