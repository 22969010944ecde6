"""WriteEmbeddings / ReadEmbeddings: the ``embeddings/`` folder that lets a run re-threshold without the model."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
import pyarrow as pa
from apache_beam.io import fileio

from semsim_core.embeddings_io import embeddings_table, parse_embeddings
from semsim_core.records import Pair
from transforms.dead_letters import ParseFn
from transforms.read import ReadFiles
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
    """Parses one saved embeddings Parquet file into :class:`EmbeddedRecord` and :class:`DeadLetter` values."""

    def parse(self, readable: fileio.ReadableFile) -> Iterator:
        with readable.open(mime_type="application/octet-stream", compression_type="uncompressed") as file:
            yield from parse_embeddings(readable.metadata.path, file)


def embeddings_pattern(folder_or_glob: str) -> str:
    """A glob as given, or the Parquet files of a folder."""
    if any(c in folder_or_glob for c in "*?["):
        return folder_or_glob
    return folder_or_glob.rstrip("/") + "/*.parquet"


class ReadEmbeddings(ReadFiles):
    """Read ``embeddings/`` of an earlier run (a folder, or a glob of Parquet files) into ``records``
    (:class:`EmbeddedRecord`) and ``dead_letter``."""

    def __init__(self, folder_or_glob: str):
        super().__init__([embeddings_pattern(folder_or_glob)], ParseEmbeddingsFn())
