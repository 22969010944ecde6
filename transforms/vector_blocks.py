"""Embedded records moved in blocks: the steps after the encoder (staging, sampling, counting, the recall check)
run once per block of vectors instead of once per vector, which the runner would otherwise pay per step and vector.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import apache_beam as beam
import numpy as np


@dataclass(frozen=True)
class VectorBlock:
    """Embedded records as one element: row ``i`` of ``vectors`` (unit float32) is the vector of ``ids[i]``, whose
    text is ``texts[i]`` ("" for vectors read from saved embeddings)."""

    ids: list[str]
    vectors: np.ndarray
    texts: list[str]

    def __len__(self) -> int:
        return len(self.ids)

    def id_vectors(self) -> Iterator[tuple[str, np.ndarray]]:
        """The block's ``(id, vector)`` items."""
        return zip(self.ids, self.vectors, strict=True)

    def take(self, rows: Sequence[int] | np.ndarray) -> VectorBlock:
        """The block of ``rows``, in that order."""
        return VectorBlock([self.ids[r] for r in rows], self.vectors[rows], [self.texts[r] for r in rows])

    @classmethod
    def of(cls, items: Sequence[tuple[str, np.ndarray, str]]) -> VectorBlock:
        """The block of ``(id, vector, text)`` items."""
        ids, vectors, texts = zip(*items, strict=True)
        return cls(list(ids), np.stack(vectors), list(texts))

    @classmethod
    def gathered(cls, blocks: Sequence[VectorBlock], rows: np.ndarray) -> VectorBlock:
        """Rows ``rows`` (positions in the blocks' rows one after another) of ``blocks``, in that order, copying
        only those rows' vectors (``blocks`` must not be empty)."""
        if len(blocks) == 1:
            return blocks[0].take(rows)
        starts = np.cumsum([0, *(len(block) for block in blocks)])
        owner = np.searchsorted(starts, rows, side="right") - 1
        vectors = np.empty((len(rows), blocks[0].vectors.shape[1]), blocks[0].vectors.dtype)
        for b, block in enumerate(blocks):
            mine = np.flatnonzero(owner == b)
            vectors[mine] = block.vectors[rows[mine] - starts[b]]
        ids = [i for block in blocks for i in block.ids]
        texts = [t for block in blocks for t in block.texts]
        return cls([ids[r] for r in rows], vectors, [texts[r] for r in rows])


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of ``ids`` (BLAKE2b), as uint64: samples taken by smallest hash are the same in every
    run, whatever the order or the bundles the ids arrive in."""
    digests = b"".join(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


class SmallestIdHashes(beam.CombineFn):
    """:class:`VectorBlock` values -> one block of the ``size`` vectors whose ids hash smallest (:func:`id_hashes`),
    in hash order (the same in every run, and spread evenly over the input whatever its order); an empty block (no
    rows, no columns) when there are none. Holds at most about ``2 * size`` rows plus one block."""

    def __init__(self, size: int):
        self._size = size

    def create_accumulator(self) -> list[tuple[np.ndarray, VectorBlock]]:
        return []

    def _smallest_rows(self, pieces: list[tuple[np.ndarray, VectorBlock]]) -> tuple[np.ndarray, np.ndarray]:
        """Every piece's hashes, one after another, and the positions of the ``size`` smallest among them."""
        hashes = np.concatenate([h for h, _ in pieces])
        return hashes, np.argsort(hashes, kind="stable")[: self._size]

    def _smallest(self, pieces: list[tuple[np.ndarray, VectorBlock]]) -> list[tuple[np.ndarray, VectorBlock]]:
        if len(pieces) < 2 and sum(len(b) for _, b in pieces) <= self._size:
            return pieces
        hashes, keep = self._smallest_rows(pieces)
        return [(hashes[keep], VectorBlock.gathered([b for _, b in pieces], keep))]

    def add_input(self, pieces, block: VectorBlock):
        pieces.append((id_hashes(block.ids), block))
        return self._smallest(pieces) if sum(len(b) for _, b in pieces) > 2 * self._size else pieces

    def merge_accumulators(self, accumulators):
        return self._smallest([piece for pieces in accumulators for piece in pieces])

    def extract_output(self, pieces) -> VectorBlock:
        if not pieces:
            return VectorBlock([], np.zeros((0, 0), np.float32), [])
        _, keep = self._smallest_rows(pieces)
        blocks = [b for _, b in pieces]
        if len(blocks) == 1 and np.array_equal(keep, np.arange(len(blocks[0]))):
            return blocks[0]  # already the smallest, in hash order (a merge's output)
        return VectorBlock.gathered(blocks, keep)


class ToBlocks(beam.PTransform):
    """``(id, vector, text)`` items -> :class:`VectorBlock` values of up to ``size`` rows (cut per bundle)."""

    def __init__(self, size: int = 8192):
        super().__init__()
        self._size = size

    def expand(self, items):
        return (
            items
            | "Batch" >> beam.BatchElements(min_batch_size=self._size, max_batch_size=self._size)
            | "Block" >> beam.Map(VectorBlock.of).with_output_types(VectorBlock)
        )
