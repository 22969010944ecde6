"""RescorePairs: the pairs found on approximate (int8/bf16) vectors, with those near the threshold decided by fp32."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from semsim_core.backends import FP32_BACKENDS
from semsim_core.embedder import EmbedConfig
from semsim_core.records import Pair
from semsim_core.rescore import ScoreBand, cosine
from transforms import METRICS_NAMESPACE
from transforms.embed import EmbedRecords
from transforms.vector_blocks import VectorBlock
from transforms.vector_coder import IdVector

IN_BAND = "in_band"
RESCORED_TEXTS = "rescored_texts"


class SplitByBandFn(beam.DoFn):
    """Candidate pairs -> kept as they are (far enough above the threshold) or ``in_band`` (to rescore). When
    ``backends`` (the backends the workers embedded with) are all fp32, as ``auto`` may choose, every score is
    already the fp32 one: pairs are kept by the threshold and nothing is rescored."""

    def __init__(self, band: ScoreBand):
        self._band = band

    def process(self, pair: Pair, backends: Iterable[str] = ()) -> Iterator:
        backends = list(backends)
        if backends and all(b in FP32_BACKENDS for b in backends):
            if self._band.keeps(pair.score):
                yield pair
        elif self._band.in_band(pair.score):
            yield beam.pvalue.TaggedOutput(IN_BAND, pair)
        elif self._band.settled(pair.score):
            yield pair


def _with_first_vector(joined: tuple[str, dict[str, Iterable]]) -> Iterator[tuple[str, tuple[Pair, np.ndarray]]]:
    _, sides = joined
    for vector in sides["vector"]:
        for pair in sides["pair"]:
            yield pair.id_b, (pair, vector)


class ScoreWithSecondVectorFn(beam.DoFn):
    """Pairs (with their first fp32 vector) grouped with their second id's fp32 vector -> the pairs whose fp32
    cosine reaches the threshold, with that score."""

    def __init__(self, band: ScoreBand):
        self._band = band
        self._rescored = Metrics.counter(METRICS_NAMESPACE, "rescored_pairs")

    def process(self, joined: tuple[str, dict[str, Iterable]]) -> Iterator[Pair]:
        _, sides = joined
        for vector in sides["vector"]:
            for pair, first in sides["pair"]:
                self._rescored.inc()
                score = cosine(first, vector)
                if self._band.keeps(score):
                    yield pair._replace(score=score)


class RescorePairs(beam.PTransform):
    """``{"pairs": candidate semantic Pairs at or above the band's search threshold, "records": the Records they
    name, optionally "backends": the backend names the vectors came from}`` -> ``pairs`` (the fp32 model's pairs at
    the threshold), ``in_band`` (the candidates that were rescored) and ``rescored_texts`` (the records embedded
    again).

    Only the texts of in-band pairs are embedded, with ``fp32`` (a config of an fp32 backend; its counters are
    ``rescore_embedded``, ``rescore_model_loads``, ...): their ids reach the records as a side input (a small share
    of all ids), so the records are filtered where they are, not shuffled. Each pair is then joined with both
    vectors by id, so no worker holds more than one id's pairs.
    """

    def __init__(self, band: ScoreBand, fp32: EmbedConfig, window: int):
        super().__init__()
        self._band = band
        self._fp32 = fp32
        self._window = window

    def expand(self, inputs):
        backends = [beam.pvalue.AsList(inputs["backends"])] if "backends" in inputs else []
        split = inputs["pairs"] | "SplitByBand" >> beam.ParDo(SplitByBandFn(self._band), *backends).with_outputs(
            IN_BAND, main="settled"
        )
        in_band = split[IN_BAND]
        needed = beam.pvalue.AsDict(
            in_band
            | "NeededIds" >> beam.FlatMap(lambda p: [(p.id_a, True), (p.id_b, True)])
            | "DistinctIds" >> beam.Distinct()
        )
        texts = inputs["records"] | "NeededTexts" >> beam.Filter(lambda r, ids: r.id in ids, needed)
        blocks = (texts | "EmbedFp32" >> EmbedRecords(self._fp32, self._window, "rescore_")).vectors
        vectors = blocks | "IdVectors" >> beam.FlatMap(VectorBlock.id_vectors).with_output_types(IdVector)
        by_first = in_band | "ByFirstId" >> beam.Map(lambda p: (p.id_a, p))
        with_first = (
            {"pair": by_first, "vector": vectors}
            | "JoinFirstVector" >> beam.CoGroupByKey()
            | "BySecondId" >> beam.FlatMap(_with_first_vector)
        )
        rescored = (
            {"pair": with_first, "vector": vectors}
            | "JoinSecondVector" >> beam.CoGroupByKey()
            | "Score" >> beam.ParDo(ScoreWithSecondVectorFn(self._band))
        )
        pairs = (split.settled, rescored) | "AllPairs" >> beam.Flatten()
        return {"pairs": pairs, IN_BAND: in_band, RESCORED_TEXTS: texts}
