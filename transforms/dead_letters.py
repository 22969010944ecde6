"""Dead-letter routing shared by every source: a :class:`ParseFn` parses one input (a matched file, a Pub/Sub message)
and :func:`parse_and_route` sends what it yields to ``records`` or ``dead_letter``, counting both."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from semsim_core.records import DeadLetter
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class ParseFn(beam.DoFn):
    """Base of the parsing DoFns: :meth:`parse` turns one input into records and :class:`DeadLetter` values; each is
    counted (``inputs``, ``dead_letters``, after ``metrics_prefix``) and emitted, records on the main output and dead
    letters on ``dead_letter``."""

    def __init__(self, metrics_prefix: str = "") -> None:
        self._inputs = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}inputs")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, f"{metrics_prefix}dead_letters")

    def parse(self, element: Any) -> Iterable[Any]:
        """The records and dead letters of one input; subclasses implement it."""
        raise NotImplementedError

    def process(self, element: Any) -> Iterator:
        for item in self.parse(element):
            self._inputs.inc()
            if isinstance(item, DeadLetter):
                self._dead_letters.inc()
                yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)
            else:
                yield item


def parse_and_route(parse_fn: ParseFn) -> beam.PTransform:
    """``ParDo(parse_fn)`` with two outputs: ``records`` (the main one) and ``dead_letter``."""
    return beam.ParDo(parse_fn).with_outputs(DEAD_LETTER, main="records")
