"""Plain text (``.txt``, ``.text``): one record per line, its id ``<file name>:<line number>``. Any Pub/Sub payload
that no other format takes is one plain text."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping

from semsim_core.formats.base import (
    Format,
    ParseConfig,
    Parsed,
    by_line,
    decode_line,
    derived_id,
    message_source,
    printable,
    strip_newline,
    text_error,
)
from semsim_core.records import DeadLetter, Record


def parse_txt(path: str, lines: Iterable[bytes], config: ParseConfig) -> Iterator[Parsed]:
    """One record per line; the id is ``<file name>:<line number>``."""
    for number, line in enumerate(lines, 1):
        line = strip_newline(line)
        locator = f"{path}:{number}"
        text, error = decode_line(line)
        error = error or text_error(text, "the line", config.max_text_bytes)
        if error:
            yield DeadLetter(locator, printable(line), error)
        else:
            fields = {config.text_field: text} if config.keep_fields else None
            yield Record(derived_id(path, number), text, path, number, fields=fields)


def parse_txt_message(text: str, attributes: Mapping[str, str], message_id: str, config: ParseConfig) -> Parsed:
    """The whole payload is the text; the id is the ``config.id_attribute`` attribute, else the message id."""
    source = message_source(message_id)
    error = text_error(text, "the message", config.max_text_bytes)
    if error:
        return DeadLetter(source, text, error)
    return Record(attributes.get(config.id_attribute) or message_id, text, source, 0)


FORMAT = Format("txt", (".txt", ".text"), by_line(parse_txt, universal=True), parse_message=parse_txt_message)
