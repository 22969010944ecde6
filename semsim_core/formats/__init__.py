"""Input formats and their registry: one module per format, each defining one :class:`Format`, and :data:`REGISTRY`,
from which every reader derives: extension detection and the ``--format`` choices, file parsing (``semsim batch``,
``semsim report``), Pub/Sub message parsing (``semsim stream``) and the table reader of labeled and gold pairs
(``semsim calibrate``, ``semsim eval mining``).

Adding a format is one module defining its ``Format`` and one entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import IO

import pyarrow as pa

from semsim_core.formats import delimited, jsonl, parquet, txt
from semsim_core.formats.base import (
    QUOTINGS,
    Format,
    ParseConfig,
    Parsed,
    TableError,
    compression_suffix,
    decode_line,
    message_source,
    printable,
)
from semsim_core.records import DeadLetter

__all__ = [
    "FORMATS",
    "QUOTINGS",
    "REGISTRY",
    "TABLE_FORMATS",
    "Format",
    "ParseConfig",
    "Parsed",
    "TableError",
    "detect_format",
    "parse_file",
    "parse_message",
    "read_fields",
    "read_rows",
    "table_format",
]

REGISTRY: tuple[Format, ...] = (delimited.CSV, delimited.TSV, jsonl.FORMAT, parquet.FORMAT, txt.FORMAT)
"""Every input format. A Pub/Sub payload goes to the first format here whose message parser takes it, so plain text,
which takes any payload, comes last."""

FORMATS = tuple(fmt.name for fmt in REGISTRY)
TABLE_FORMATS = tuple(fmt.name for fmt in REGISTRY if fmt.read_rows)
"""The formats a labeled-pairs or gold-pairs file may have."""

_BY_NAME = {fmt.name: fmt for fmt in REGISTRY}
_BY_EXTENSION = {extension: fmt for fmt in REGISTRY for extension in fmt.extensions}


def _format(name: str) -> Format:
    if name not in _BY_NAME:
        raise ValueError(f"unknown input format {name!r}; expected one of {', '.join(FORMATS)}")
    return _BY_NAME[name]


def detect_format(path: str) -> str | None:
    """Return the input format named by the file's extension (ignoring a compression suffix), or None."""
    name = posixpath.basename(path).lower()
    name = name.removesuffix(compression_suffix(name) or "")
    fmt = _BY_EXTENSION.get(posixpath.splitext(name)[1])
    return fmt.name if fmt else None


def table_format(path: str) -> str | None:
    """The format of a table file (one of :data:`TABLE_FORMATS`) from its extension, or None."""
    fmt = _BY_EXTENSION.get(posixpath.splitext(path.lower())[1])
    return fmt.name if fmt and fmt.read_rows else None


def parse_file(path: str, file: IO[bytes], fmt: str, config: ParseConfig) -> Iterator[Parsed]:
    """Parse one opened (already decompressed) binary file of format ``fmt``."""
    return _format(fmt).parse(path, file, config)


def read_fields(path: str, file: IO[bytes], fmt: str, config: ParseConfig, positions: Collection[int]) -> pa.Table:
    """Every input field of the records at ``positions`` of one opened file of format ``fmt``, typed as read."""
    return _format(fmt).fields(path, file, config, positions)


def parse_message(data: bytes, attributes: Mapping[str, str], message_id: str, config: ParseConfig) -> Parsed:
    """A Pub/Sub message as a :class:`Record` or :class:`DeadLetter`, from the first format that takes its UTF-8
    payload: a JSON object with the text (and optionally id) field, else plain text. The id is the attribute named
    ``config.id_attribute``, else the JSON id field, else the Pub/Sub message id."""
    text, error = decode_line(data)
    if error:
        return DeadLetter(message_source(message_id), printable(data), error)
    for fmt in REGISTRY:
        parsed = fmt.parse_message(text, attributes, message_id, config) if fmt.parse_message else None
        if parsed is not None:
            return parsed
    return DeadLetter(message_source(message_id), text, "no input format takes this message")


def read_rows(path: str, fmt: str, required: Sequence[str], hint: str = "") -> Iterator[tuple[str, dict]]:
    """``(location, row)`` for each row of a table file of format ``fmt`` (one of :data:`TABLE_FORMATS`: CSV or TSV
    with a header row, JSONL); raise :class:`TableError` on a file that cannot be read or lacks a ``required`` column
    (``hint`` ends that message)."""
    reader = _format(fmt).read_rows
    if reader is None:
        raise ValueError(f"{fmt} files hold no table rows; expected one of {', '.join(TABLE_FORMATS)}")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            yield from reader(path, f, required, hint)
    except OSError as e:
        raise TableError(f"cannot read {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise TableError(f"{path}: not UTF-8 text") from None
