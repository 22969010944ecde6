"""WriteEmbeddings / ReadEmbeddings: the ``embeddings/`` folder that lets a run re-threshold without the model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics import Metrics

from semsim_core.embeddings_io import embeddings_table, first_dimension, parse_embeddings, saved_vector_label
from semsim_core.records import DeadLetter, Pair, Record
from transforms import DEAD_LETTER, METRICS_NAMESPACE
from transforms.dead_letters import ParseFn
from transforms.read import ReadFiles
from transforms.vector_coder import IdVectorText
from transforms.write import ParquetSink


def _embeddings_table(items: list[tuple[str, np.ndarray]]) -> pa.Table:
    return embeddings_table([record_id for record_id, _ in items], np.stack([vector for _, vector in items]))


def _with_copies(element: tuple[str, dict[str, Iterable]]) -> Iterator[tuple[str, np.ndarray]]:
    """A representative's vector also stands for each exact copy of it (``exact`` pairs run from the representative)."""
    representative, joined = element
    for vector in joined["vector"]:
        yield representative, vector
        for pair in joined["copies"]:
            yield pair.id_b, vector


class WriteEmbeddings(beam.PTransform):
    """Writes one ``embeddings/`` row per accepted record: representatives' vectors, and the same vector for each of
    their exact copies. Input: ``{"vectors": (id, vector), "exact_pairs": Pair}``."""

    def __init__(self, folder: str):
        super().__init__()
        self._folder = folder

    def expand(self, inputs):
        copies = inputs["exact_pairs"] | "ByRepresentative" >> beam.Map(_by_representative)
        return (
            {"vector": inputs["vectors"], "copies": copies}
            | "Join" >> beam.CoGroupByKey()
            | "WithCopies" >> beam.FlatMap(_with_copies)
            | "Parquet"
            >> fileio.WriteToFiles(
                self._folder,
                file_naming=fileio.default_file_naming("part", ".parquet"),
                sink=lambda _: ParquetSink(_embeddings_table),
            )
        )


def _by_representative(pair: Pair) -> tuple[str, Pair]:
    return pair.id_a, pair


class ParseEmbeddingsFn(ParseFn):
    """Parses one saved embeddings Parquet file into :class:`EmbeddedRecord` and :class:`DeadLetter` values; a row
    whose vector has not ``dim`` values is a dead letter."""

    def __init__(self, dim: int | None, metrics_prefix: str = ""):
        super().__init__(metrics_prefix)
        self._dim = dim

    def parse(self, readable: fileio.ReadableFile) -> Iterator:
        with readable.open(mime_type="application/octet-stream", compression_type="uncompressed") as file:
            yield from parse_embeddings(readable.metadata.path, file, self._dim)


def embeddings_pattern(folder_or_glob: str) -> str:
    """A glob as given, or the Parquet files of a folder."""
    if any(c in folder_or_glob for c in "*?["):
        return folder_or_glob
    return folder_or_glob.rstrip("/") + "/*.parquet"


def saved_dimension(folder_or_glob: str) -> int | None:
    """The size of the first saved vector in ``embeddings/`` (a folder or glob; files in path order): the size every
    vector read from there must have. None when no file holds one."""
    for path in sorted(m.path for m in FileSystems.match([embeddings_pattern(folder_or_glob)])[0].metadata_list):
        with FileSystems.open(path, compression_type="uncompressed") as f:
            try:
                dim = first_dimension(f)
            except Exception:  # noqa: BLE001 - an unreadable file is the run's dead letter, not the launch's error
                continue
        if dim:
            return dim
    return None


class ReadEmbeddings(ReadFiles):
    """Read ``embeddings/`` of an earlier run (a folder, or a glob of Parquet files) into ``records``
    (:class:`EmbeddedRecord`) and ``dead_letter``; vectors of another size than the first saved one
    (:func:`saved_dimension`, read when the pipeline is built) are dead letters. Rows are counted as ``inputs`` and
    ``dead_letters`` after ``metrics_prefix`` (``saved_`` where they are not the run's input but looked up by it)."""

    def __init__(self, folder_or_glob: str, metrics_prefix: str = ""):
        parse = ParseEmbeddingsFn(saved_dimension(folder_or_glob), metrics_prefix)
        super().__init__([embeddings_pattern(folder_or_glob)], parse)


VECTORS = "vectors"


class _LookUpFn(beam.DoFn):
    """``(id, {"record": [Record], "saved": [vector, ...]})`` -> the record (and its vector, tagged), or a dead
    letter saying why it has no vector; a saved vector no record asks for is counted (``unused_embeddings``)."""

    def __init__(self, where: str):
        self._where = where
        self._dead_letters = Metrics.counter(METRICS_NAMESPACE, "dead_letters")
        self._unused = Metrics.counter(METRICS_NAMESPACE, "unused_embeddings")

    def process(self, element: tuple[str, dict[str, Iterable]], problems: list[DeadLetter]) -> Iterator:
        record_id, joined = element
        records, saved = list(joined["record"]), list(joined["saved"])
        if not records:
            self._unused.inc(len(saved))
            return
        (record,) = records  # ids are unique by now
        distinct = {vector.tobytes(): vector for vector in saved}
        if len(distinct) == 1:
            yield record
            yield beam.pvalue.TaggedOutput(VECTORS, (record_id, saved[0]))
            return
        self._dead_letters.inc()
        yield beam.pvalue.TaggedOutput(
            DEAD_LETTER, DeadLetter(record.locator, record.raw, self._missing(record, distinct, problems))
        )

    def _missing(self, record: Record, distinct: dict, problems: list[DeadLetter]) -> str:
        if distinct:
            return f"id {record.id!r} has {len(distinct)} different vectors in --input-embeddings {self._where}"
        label = saved_vector_label(record.id)
        row = next((p for p in problems if p.raw == label), None)
        if row:
            return f"the vector of id {record.id!r} in --input-embeddings is unusable ({row.source}: {row.error})"
        unreadable = [p for p in problems if not p.raw]
        reason = f"id {record.id!r} has no vector in --input-embeddings {self._where}"
        if unreadable:
            reason += (
                f" ({len(unreadable)} of its files could not be read; {unreadable[0].source}: {unreadable[0].error})"
            )
        return reason


def _vector_with_text(element: tuple[str, dict[str, Iterable]]) -> Iterator[tuple[str, np.ndarray, str]]:
    record_id, joined = element
    for record in joined["record"]:
        for vector in joined["vector"]:
            yield record_id, vector, record.text


class LookUpVectors(beam.PTransform):
    """Records of ``--input`` get their vectors from ``--input-embeddings`` (an earlier run's ``embeddings/``), by
    id, instead of from the model. Takes ``{"records": Record, "saved": EmbeddedRecord, "problems": DeadLetter}``
    (the last two from :class:`ReadEmbeddings`); returns
    ``records`` (those with one saved vector), ``vectors`` (``(id, vector)``) and ``dead_letter`` (a record whose id
    has no usable vector, or several different ones: the reason names the row or file at fault). Saved vectors of ids
    the input does not hold are counted (``unused_embeddings``), not used."""

    def __init__(self, where: str):
        super().__init__()
        self._where = where

    def expand(self, inputs):
        joined = {
            "record": inputs["records"] | "RecordById" >> beam.Map(lambda r: (r.id, r)),
            "saved": inputs["saved"] | "VectorById" >> beam.Map(lambda r: (r.id, r.vector)),
        } | "JoinSaved" >> beam.CoGroupByKey()
        problems = beam.pvalue.AsList(inputs["problems"])
        return joined | "LookUp" >> beam.ParDo(_LookUpFn(self._where), problems).with_outputs(
            VECTORS, DEAD_LETTER, main="records"
        )


class WithTexts(beam.PTransform):
    """``{"records": Record, "vectors": (id, vector)}`` -> ``(id, vector, text)`` for each record with a vector."""

    def expand(self, inputs):
        return (
            {
                "record": inputs["records"] | "RecordById" >> beam.Map(lambda r: (r.id, r)),
                "vector": inputs["vectors"],
            }
            | "Join" >> beam.CoGroupByKey()
            | "WithText" >> beam.FlatMap(_vector_with_text).with_output_types(IdVectorText)
        )
