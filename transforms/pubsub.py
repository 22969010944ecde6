"""Pub/Sub in and out: ReadPosts (messages -> timestamped records and dead letters) and PublishJson."""

from __future__ import annotations

import json
from collections.abc import Iterator

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage, ReadFromPubSub, WriteToPubSub

from semsim_core.formats import ParseConfig, Parsed, parse_message
from transforms.dead_letters import ParseFn, parse_and_route


class ParseMessageFn(ParseFn):
    """A Pub/Sub message -> :class:`Record` (main output) or :class:`DeadLetter` (``dead_letter``)."""

    def __init__(self, config: ParseConfig):
        super().__init__()
        self._config = config

    def parse(self, message: PubsubMessage) -> Iterator[Parsed]:
        yield parse_message(message.data or b"", message.attributes or {}, message.message_id or "", self._config)


class ReadPosts(beam.PTransform):
    """Reads ``subscription`` (``projects/P/subscriptions/S``) into ``records`` and ``dead_letter``; each element's
    timestamp is the message's publish time. ``id_label``: the attribute the source deduplicates messages by (a
    publisher's retry of one post), where the runner's Pub/Sub source supports it (Dataflow's)."""

    def __init__(self, subscription: str, config: ParseConfig, id_label: str | None = None):
        super().__init__()
        self._subscription = subscription
        self._config = config
        self._id_label = id_label

    def expand(self, pbegin):
        read = ReadFromPubSub(subscription=self._subscription, with_attributes=True, id_label=self._id_label)
        return pbegin | "ReadFromPubSub" >> read | "Parse" >> parse_and_route(ParseMessageFn(self._config))


MAX_PUBLISHED_STRING = 1_000_000  # characters of one string field in a published message (Pub/Sub's cap: 10 MB)


def json_message(item) -> bytes:
    """An element (a dict, or a NamedTuple) as a JSON message: UTF-8 as is (not ``\\u`` escapes, which take up to 6
    bytes a character), each string cut to :data:`MAX_PUBLISHED_STRING` characters (a dead letter's ``raw`` may be
    the 10 MB message it rejects; the Parquet output keeps it whole), so a message always fits Pub/Sub."""
    fields = getattr(item, "_asdict", lambda: item)()
    cut = {k: v[:MAX_PUBLISHED_STRING] if isinstance(v, str) else v for k, v in fields.items()}
    return json.dumps(cut, ensure_ascii=False).encode("utf-8", "backslashreplace")


class PublishJson(beam.PTransform):
    """Publishes each element (a dict, or a NamedTuple) as a JSON message to ``topic`` (:func:`json_message`)."""

    def __init__(self, topic: str):
        super().__init__()
        self._topic = topic

    def expand(self, items):
        return items | "Json" >> beam.Map(json_message) | "Publish" >> WriteToPubSub(self._topic)
