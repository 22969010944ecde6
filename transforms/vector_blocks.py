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
    def joined(cls, blocks: Sequence[VectorBlock]) -> VectorBlock:
        """The rows of ``blocks`` in order, as one block (``blocks`` must not be empty)."""
        if len(blocks) == 1:
            return blocks[0]
        ids = [i for block in blocks for i in block.ids]
        texts = [t for block in blocks for t in block.texts]
        return cls(ids, np.concatenate([block.vectors for block in blocks]), texts)


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """Stable 64-bit hashes of ``ids`` (BLAKE2b), as uint64: samples taken by smallest hash are the same in every
    run, whatever the order or the bundles the ids arrive in."""
    digests = b"".join(hashlib.blake2b(i.encode("utf-8"), digest_size=8).digest() for i in ids)
    return np.frombuffer(digests, dtype=">u8").astype(np.uint64)


class SmallestIdHashes(beam.CombineFn):
    """:class:`VectorBlock` values -> one block of the ``size`` vectors whose ids hash smallest (:func:`id_hashes`),
    in id order; an empty block (no rows, no columns) when there are none. Holds at most about ``2 * size`` rows
    plus one block."""

    def __init__(self, size: int):
        self._size = size

    def create_accumulator(self) -> list[tuple[np.ndarray, VectorBlock]]:
        return []

    def _smallest(self, pieces: list[tuple[np.ndarray, VectorBlock]]) -> list[tuple[np.ndarray, VectorBlock]]:
        if len(pieces) < 2 and sum(len(b) for _, b in pieces) <= self._size:
            return pieces
        hashes = np.concatenate([h for h, _ in pieces])
        keep = np.argsort(hashes, kind="stable")[: self._size]
        return [(hashes[keep], VectorBlock.joined([b for _, b in pieces]).take(keep))]

    def add_input(self, pieces, block: VectorBlock):
        pieces.append((id_hashes(block.ids), block))
        return self._smallest(pieces) if sum(len(b) for _, b in pieces) > 2 * self._size else pieces

    def merge_accumulators(self, accumulators):
        return self._smallest([piece for pieces in accumulators for piece in pieces])

    def extract_output(self, pieces) -> VectorBlock:
        pieces = self._smallest(pieces)
        if not pieces:
            return VectorBlock([], np.zeros((0, 0), np.float32), [])
        block = pieces[0][1]
        return block.take(sorted(range(len(block)), key=block.ids.__getitem__))


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
