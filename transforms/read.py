"""ReadFiles / ReadRecords: match file patterns on any Beam filesystem and parse every file into records and dead
letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io import fileio

from semsim_core.formats import ParseConfig, Parsed, detect_format, parse_file
from semsim_core.records import DeadLetter
from transforms.dead_letters import ParseFn, parse_and_route


class ParseFileFn(ParseFn):
    """Parses one matched file, of ``fmt`` or else the format its extension names, into :class:`Record` and
    :class:`DeadLetter` values."""

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
        with readable.open(mime_type="application/octet-stream") as file:
            yield from parse_file(path, file, fmt, self._config)


class ReadFiles(beam.PTransform):
    """Match ``patterns`` (globs; local, gs:// or any Beam filesystem; .gz/.bz2/... by extension) and parse each file
    with ``parse_fn``. Returns a tuple of PCollections: ``records`` and ``dead_letter``."""

    def __init__(self, patterns: Sequence[str], parse_fn: ParseFn):
        super().__init__()
        self._patterns = list(patterns)
        self._parse_fn = parse_fn

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "Spread" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> parse_and_route(self._parse_fn)
        )


class ReadRecords(ReadFiles):
    """Read text records (any format of :data:`semsim_core.formats.FORMATS`) into ``records`` (:class:`Record`) and
    ``dead_letter``."""

    def __init__(self, patterns: Sequence[str], config: ParseConfig, fmt: str | None = None):
        super().__init__(patterns, ParseFileFn(config, fmt))
