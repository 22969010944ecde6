"""JSON lines (``.jsonl``, ``.ndjson``): one JSON object per line with the text field and optionally the id field. A
Pub/Sub payload that starts with ``{`` is one such object."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

from semsim_core.formats.base import (
    Format,
    ParseConfig,
    Parsed,
    TableError,
    by_line,
    decode_line,
    message_source,
    printable,
    record_from_mapping,
    strip_newline,
)
from semsim_core.records import DeadLetter


def _json_object(text: str, what: str) -> tuple[dict[str, Any] | None, str | None]:
    """``(object, None)`` when ``text`` is a JSON object, else ``(None, reason)``; ``what`` names it in the reason."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"malformed JSON: {e.msg} at column {e.colno}"
    except ValueError as e:  # an integer over Python's digit limit
        return None, f"unreadable JSON: {e}"
    except RecursionError:
        return None, "unreadable JSON: nested too deeply"
    if not isinstance(obj, dict):
        return None, f"JSON {what} is a {type(obj).__name__}, expected an object"
    return obj, None


def parse_jsonl(path: str, lines: Iterable[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One JSON object per line with ``config.text_field`` and optionally ``config.id_field``."""
    for number, line in enumerate(lines, 1):
        line = strip_newline(line)
        locator = f"{path}:{number}"
        text, error = decode_line(line)
        if error:
            yield DeadLetter(locator, printable(line), error)
            continue
        if not text.strip():
            yield DeadLetter(locator, text, "empty line")
            continue
        obj, error = _json_object(text, "line")
        if error:
            yield DeadLetter(locator, text, error)
        else:
            yield record_from_mapping(obj, path, number, text, config)


def parse_jsonl_message(
    text: str, attributes: Mapping[str, str], message_id: str, config: ParseConfig
) -> Parsed | None:
    """A payload that starts with ``{`` as one JSON object (None for any other payload); the id is the
    ``config.id_attribute`` attribute, else the object's id field, else the message id."""
    if not text.lstrip().startswith("{"):
        return None
    source = message_source(message_id)
    obj, error = _json_object(text, "message")
    if error:  # a plain-text post that starts with "{" is sent as a JSON object ({"text": ...})
        return DeadLetter(source, text, f"{error} (a text starting with '{{' is sent as a JSON object)")
    row = {**obj, config.id_field: obj.get(config.id_field)}
    if attributes.get(config.id_attribute):
        row[config.id_field] = attributes[config.id_attribute]
    elif row[config.id_field] is None:  # no id field, or a null one: the message id
        row[config.id_field] = message_id
    parsed = record_from_mapping(row, source, 0, text, config)
    return parsed._replace(source=source) if isinstance(parsed, DeadLetter) else parsed


def read_jsonl_rows(path: str, f: IO[str], required: Sequence[str], hint: str) -> Iterator[tuple[str, dict]]:
    """``(path:line, object)`` per non-blank line; every object must hold the ``required`` fields."""
    for number, line in enumerate(f, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise TableError(f"{where}: invalid JSON: {e.msg}") from None
        if not isinstance(row, dict):
            raise TableError(f"{where}: not a JSON object")
        missing = [c for c in required if c not in row]
        if missing:
            raise TableError(f"{where}: missing field(s) {', '.join(missing)}{hint}")
        yield where, row


FORMAT = Format(
    "jsonl", (".jsonl", ".ndjson"), by_line(parse_jsonl), parse_message=parse_jsonl_message, read_rows=read_jsonl_rows
)
