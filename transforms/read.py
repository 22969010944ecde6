"""ReadFiles / ReadRecords: match file patterns on any Beam filesystem and parse every file into records and dead
letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from semsim_core.parsing import ParseConfig, detect_format, parse_file
from semsim_core.records import DeadLetter
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class ParseFn(beam.DoFn):
    """Base of the file-parsing DoFns: counts every item, emits records on the main output and dead letters on
    ``dead_letter``. Subclasses implement :meth:`parse`."""

    def __init__(self) -> None:
        self._inputs = Metrics.counter(METRICS_NAMESPACE, "inputs")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def parse(self, readable: fileio.ReadableFile) -> Iterator:
        raise NotImplementedError

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        for item in self.parse(readable):
            self._inputs.inc()
            if isinstance(item, DeadLetter):
                self._dead_letters.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)
            else:
                yield item


class ParseFileFn(ParseFn):
    """Parses one matched text file into :class:`Record` and :class:`DeadLetter` values."""

    def __init__(self, config: ParseConfig, fmt: str | None = None):
        super().__init__()
        self._config = config
        self._format = fmt

    def parse(self, readable: fileio.ReadableFile) -> Iterator:
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
            | "Parse" >> beam.ParDo(self._parse_fn).with_outputs(DEAD_LETTER, main="records")
        )


class ReadRecords(ReadFiles):
    """Read text records (.txt/.jsonl/.csv/.parquet) into ``records`` (:class:`Record`) and ``dead_letter``."""

    def __init__(self, patterns: Sequence[str], config: ParseConfig, fmt: str | None = None):
        super().__init__(patterns, ParseFileFn(config, fmt))
