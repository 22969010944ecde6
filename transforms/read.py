"""ReadRecords: match file patterns on any Beam filesystem and parse every file into records and dead letters."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.metrics import Metrics

from semsim_core.parsing import ParseConfig, detect_format, parse_file
from semsim_core.records import DeadLetter
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class ParseFileFn(beam.DoFn):
    """Parses one matched file; emits :class:`Record` on the main output and :class:`DeadLetter` on ``dead_letter``."""

    def __init__(self, config: ParseConfig, fmt: str | None = None):
        self._config = config
        self._format = fmt
        self._inputs = Metrics.counter(METRICS_NAMESPACE, "inputs")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, readable: fileio.ReadableFile) -> Iterator:
        path = readable.metadata.path
        fmt = self._format or detect_format(path)
        if fmt is None:
            self._inputs.inc()
            self._dead_letters.inc()
            yield beam.pvalue.TaggedOutput(
                DEAD_LETTER, DeadLetter(path, "", "unknown file type; name it with --format")
            )
            return
        with readable.open(mime_type="application/octet-stream") as file:
            for item in parse_file(path, file, fmt, self._config):
                self._inputs.inc()
                if isinstance(item, DeadLetter):
                    self._dead_letters.inc()
                    yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)
                else:
                    yield item


class ReadRecords(beam.PTransform):
    """Read ``patterns`` (globs; local, gs:// or any Beam filesystem; .gz/.bz2 by extension).

    Returns a tuple of PCollections with ``records`` (:class:`Record`) and ``dead_letter`` (:class:`DeadLetter`).
    """

    def __init__(self, patterns: Sequence[str], config: ParseConfig, fmt: str | None = None):
        super().__init__()
        self._patterns = list(patterns)
        self._config = config
        self._format = fmt

    def expand(self, pbegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "Match" >> fileio.MatchAll()
            | "Spread" >> beam.Reshuffle()
            | "Open" >> fileio.ReadMatches()
            | "Parse" >> beam.ParDo(ParseFileFn(self._config, self._format)).with_outputs(DEAD_LETTER, main="records")
        )
