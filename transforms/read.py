"""ReadFiles / ReadRecords: match file patterns on any Beam filesystem and parse every file into records and dead
letters."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import IO

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from semsim_core.formats import ParseConfig, Parsed, detect_format, parse_file
from semsim_core.formats.base import stream_reader
from semsim_core.records import DeadLetter
from transforms.dead_letters import ParseFn, parse_and_route

_BINARY = "application/octet-stream"


@contextmanager
def open_input(path: str) -> Iterator[IO[bytes]]:
    """An input file on any Beam filesystem, opened for reading and decompressed by its extension
    (:func:`~semsim_core.formats.base.stream_reader`: a truncated or corrupt stream raises)."""
    with ExitStack() as stack:
        file = stack.enter_context(FileSystems.open(path, _BINARY, CompressionTypes.UNCOMPRESSED))
        reader = stream_reader(path, file)
        yield stack.enter_context(reader) if reader is not None else file


class ParseFileFn(ParseFn):
    """Parses one matched file, of ``fmt`` or else the format its extension names, into :class:`Record` and
    :class:`DeadLetter` values. A file that cannot be read to its end (a corrupt or truncated compressed stream, a
    folder) ends in one dead letter for the rest of it, after the records read before."""

    def __init__(self, config: ParseConfig, fmt: str | None = None):
        super().__init__()
        self._config = config
        self._format = fmt

    def parse(self, readable: fileio.ReadableFile) -> Iterator[Parsed]:
        path = readable.metadata.path
        fmt = self._format or detect_format(path)
        if fmt is None:
            yield DeadLetter(path, "", "unknown file type; name it with --format")
            return
        count = 0
        try:
            with open_input(path) as file:
                for parsed in parse_file(path, file, fmt, self._config):
                    count += 1
                    yield parsed
        except Exception as e:  # noqa: BLE001 - an unreadable file becomes a dead letter, never a crashed job
            where = f"after its first {count} records" if count else "at all"
            yield DeadLetter(path, "", f"cannot read the file {where}: {type(e).__name__}: {e}")


def _file_of(path: str) -> str:
    """The file ``path`` names: a local path with its symbolic links resolved (a file reached through a linked
    folder is one file), any other as it is."""
    return path if "://" in path else os.path.realpath(path)


class ReadFiles(beam.PTransform):
    """Match ``patterns`` (globs; local, gs:// or any Beam filesystem; .gz/.bz2/... by extension) and parse each file
    with ``parse_fn``, once however many patterns (or symbolic links) reach it (grouping the matches by file also
    spreads the files over the workers). Returns a tuple of PCollections: ``records`` and ``dead_letter``."""

    def __init__(self, patterns: Sequence[str], parse_fn: ParseFn):
        super().__init__()
        self._patterns = list(patterns)
        self._parse_fn = parse_fn

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "ByPath" >> beam.Map(lambda match: (_file_of(match.path), match))
            | "OncePerPath" >> beam.GroupByKey()
            | "First" >> beam.MapTuple(lambda _, matches: min(matches, key=lambda m: m.path))  # ids name its path
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> parse_and_route(self._parse_fn)
        )


class ReadRecords(ReadFiles):
    """Read text records (any format of :data:`semsim_core.formats.FORMATS`) into ``records`` (:class:`Record`) and
    ``dead_letter``."""

    def __init__(self, patterns: Sequence[str], config: ParseConfig, fmt: str | None = None):
        super().__init__(patterns, ParseFileFn(config, fmt))
