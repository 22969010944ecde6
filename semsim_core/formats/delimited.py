"""Delimited text with a header row: CSV (``.csv``) and TSV (``.tsv``), one parser and one row reader told apart by
the delimiter. Both follow the quoting of :mod:`csv`'s default dialect (what Python's ``csv`` and pandas write): a
field that holds the delimiter, a line end or a double quote is enclosed in double quotes, and a double quote inside
it is doubled; a double quote inside an unquoted field is kept as it is."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator, Sequence
from functools import partial
from typing import IO

from semsim_core.formats.base import Format, ParseConfig, Parsed, TableError, by_line, printable, record_from_mapping
from semsim_core.records import DeadLetter


class _LineTracker:
    """Feeds decoded lines to :mod:`csv` and remembers which physical lines made up the last row; lines handed back
    (:meth:`take_first_line`) are fed again before the rest of the file."""

    def __init__(self, lines: Iterable[bytes]):
        self._lines = iter(lines)
        self._again: list[str] = []  # lines to feed again, last first
        self.number = 0
        self.consumed: list[str] = []
        self.first_line = 1

    def __iter__(self) -> _LineTracker:
        return self

    def __next__(self) -> str:
        line = self._again.pop() if self._again else next(self._lines).decode("utf-8", "surrogateescape")
        self.number += 1
        self.consumed.append(line)
        return line

    def take_row(self) -> tuple[int, str]:
        """Return the first line number and raw text of the row just read, and start the next row."""
        first, raw = self.first_line, "".join(self.consumed).rstrip("\r\n")
        self.consumed, self.first_line = [], self.number + 1
        return first, raw

    def take_first_line(self) -> tuple[int, str]:
        """Like :meth:`take_row`, for the first line of the row just read only: its other lines are fed again."""
        first, *rest = self.consumed
        self._again.extend(reversed(rest))
        self.number -= len(rest)
        self.consumed = [first]
        return self.take_row()


FIELD_LIMIT = 64 << 20  # characters of one CSV/TSV field: what an unclosed quote may take in before it is refused


def parse_delimited(
    path: str, lines: Iterable[bytes], config: ParseConfig, delimiter: str, label: str
) -> Iterator[Parsed]:
    """A file with a header row; one record per data row, positioned at the row's first line. ``label`` (``CSV``,
    ``TSV``) names the format in dead-letter reasons.

    Quoting is strict: a quoted field closed before other text (``"a"b``) is a malformed row (with
    ``config.quoting == "none"`` a quote is an ordinary character: raw TSV, where no field holds the delimiter or a
    line end). A row that cannot be read across several lines (a quote that never closes, so the rest of the file
    would be one field; a field over :data:`FIELD_LIMIT`) is a dead letter of its first line only, and reading goes
    on from the next line. A long field that closes (a document over ``--max-text-bytes``) is its row's dead letter:
    re-reading its inner lines would make records of them."""
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT, 4 * config.max_text_bytes + 1024))
    tracker = _LineTracker(lines)
    quoting = csv.QUOTE_NONE if config.quoting == "none" else csv.QUOTE_MINIMAL
    reader = csv.reader(tracker, delimiter=delimiter, strict=True, quoting=quoting)
    header: list[str] | None = None
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            reason = f"malformed {label}: {e}"
            if len(tracker.consumed) > 1:
                number, raw = tracker.take_first_line()
                reason += " (in a row from this line on; its later lines are read again)"
            else:
                number, raw = tracker.take_row()
            yield DeadLetter(f"{path}:{number}", printable(raw), reason)
            continue
        number, raw = tracker.take_row()
        if header is None:
            header = row
            named = [c for c in dict.fromkeys((config.id_field, config.text_field, config.time_field)) if c]
            twice = [c for c in named if header.count(c) > 1]
            if twice:  # which column holds the text (or id, or time) cannot be told: the file is not read
                error = f"malformed {label}: the header names column {twice[0]!r} twice; its rows are not read"
                yield DeadLetter(f"{path}:{number}", printable(raw), error)
                return
            continue
        locator = f"{path}:{number}"
        if not row:
            yield DeadLetter(locator, printable(raw), "empty line")
        elif len(row) != len(header):
            error = f"malformed {label}: row has {len(row)} fields, header has {len(header)}"
            yield DeadLetter(locator, printable(raw), error)
        elif any("\udc80" <= ch <= "\udcff" for field in row for ch in field):
            yield DeadLetter(locator, printable(raw), f"invalid UTF-8 in {label} row")
        else:
            yield record_from_mapping(dict(zip(header, row, strict=True)), path, number, raw, config)


def read_delimited_rows(
    path: str, f: IO[str], required: Sequence[str], hint: str, delimiter: str
) -> Iterator[tuple[str, dict]]:
    """``(path:line, row)`` per data row (the line where the row ends); the header must name the ``required``
    columns."""
    reader = csv.DictReader(f, delimiter=delimiter)
    try:
        missing = [c for c in required if c not in (reader.fieldnames or ())]
        if reader.fieldnames and missing:
            raise TableError(f"{path}: missing column(s) {', '.join(missing)}{hint}")
        for row in reader:
            yield f"{path}:{reader.line_num}", row
    except csv.Error as e:
        raise TableError(f"{path}:{reader.line_num}: {e}") from None


def delimited_format(name: str, extensions: tuple[str, ...], delimiter: str) -> Format:
    """The :class:`Format` of delimited text with a header row, split at ``delimiter``."""
    parse = partial(parse_delimited, delimiter=delimiter, label=name.upper())
    rows = partial(read_delimited_rows, delimiter=delimiter)
    return Format(name, extensions, by_line(parse, universal=True), read_rows=rows)


CSV = delimited_format("csv", (".csv",), ",")
TSV = delimited_format("tsv", (".tsv",), "\t")
