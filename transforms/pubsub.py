"""Pub/Sub in and out: ReadPosts (messages -> timestamped records and dead letters) and PublishJson."""

from __future__ import annotations

import json
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub
from apache_beam.metrics import Metrics

from semsim_core.parsing import ParseConfig
from semsim_core.records import DeadLetter
from semsim_core.streaming import parse_message
from transforms import DEAD_LETTER, METRICS_NAMESPACE


class ParseMessageFn(beam.DoFn):
    """A Pub/Sub message -> :class:`Record` (main output) or :class:`DeadLetter` (``dead_letter``)."""

    def __init__(self, config: ParseConfig):
        self._config = config
        self._inputs = Metrics.counter(METRICS_NAMESPACE, "inputs")
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")

    def process(self, message: PubsubMessage) -> Iterator:
        self._inputs.inc()
        item = parse_message(message.data or b"", message.attributes or {}, message.message_id or "", self._config)
        if isinstance(item, DeadLetter):
            self._dead_letters.inc()
            yield beam.pvalue.TaggedOutput(DEAD_LETTER, item)
        else:
            yield item


class ReadPosts(beam.PTransform):
    """Reads ``subscription`` (``projects/P/subscriptions/S``) into ``records`` and ``dead_letter``; each element's
    timestamp is the message's publish time."""

    def __init__(self, subscription: str, config: ParseConfig):
        super().__init__()
        self._subscription = subscription
        self._config = config

    def expand(self, pbegin):
        return (
            pbegin
            | "ReadFromPubSub" >> ReadFromPubSub(subscription=self._subscription, with_attributes=True)
            | "Parse" >> beam.ParDo(ParseMessageFn(self._config)).with_outputs(DEAD_LETTER, main="records")
        )


class PublishJson(beam.PTransform):
    """Publishes each element (a dict, or a NamedTuple) as a JSON message to ``topic``."""

    def __init__(self, topic: str):
        super().__init__()
        self._topic = topic

    def expand(self, items):
        return (
            items
            | "Json" >> beam.Map(lambda item: json.dumps(getattr(item, "_asdict", lambda: item)()).encode("utf-8"))
            | "Publish" >> WriteToPubSub(self._topic)
        )
