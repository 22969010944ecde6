"""The batch pipeline: read, drop duplicate ids, exact pre-pass, embed, find pairs, cluster, write Parquet.

Run as ``semsim batch --input GLOB --output DIR [flags]`` or ``python -m pipelines.batch_dedup ...``.
"""

from __future__ import annotations

import glob
import json
import os
import sys
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.options import BatchDedupOptions, OptionsError, validate
from pipelines.run_files import load_centroids, read_summary, remove_run, save_centroids
from semsim_core import run_layout as layout
from semsim_core.records import CLUSTERS_SCHEMA, DEAD_LETTER_SCHEMA, PAIRS_SCHEMA, Pair
from semsim_core.rescore import ScoreBand
from semsim_core.run_layout import ReadSpec, Summary
from transforms import DEAD_LETTER, METRICS_NAMESPACE
from transforms.cells import TrainCentroids
from transforms.cluster import ClusterRecords, HdbscanEdges
from transforms.dedup_ids import DropDuplicateIds
from transforms.embed import BACKEND_USED, EmbedRecords
from transforms.embeddings_io import ReadEmbeddings, WriteEmbeddings
from transforms.exact import EXACT_PAIRS, ExactPrepass, text_key, vector_key
from transforms.pairs import CELL_SIZES, FindPairs, largest
from transforms.progress import LogProgress
from transforms.read import ReadRecords
from transforms.recall import MeasureRecall
from transforms.rescore import IN_BAND, RESCORED_TEXTS, RescorePairs
from transforms.vector_coder import IdVector
from transforms.write import CountEach, WriteRows, WriteSummary


def _load_centroids(path: str) -> np.ndarray:
    try:
        return load_centroids(path)
    except (OSError, ValueError) as e:
        raise OptionsError(f"cannot read --centroids {path!r}: {e}") from None


def _edge(pair: Pair) -> tuple[str, str]:
    return pair.id_a, pair.id_b


def _vectors_from_text(pipeline: beam.Pipeline, opts: BatchDedupOptions):
    parsed = pipeline | "Read" >> ReadRecords(opts.input, opts.parse_config(), opts.format)
    unique = parsed.records | "DropDuplicateIds" >> DropDuplicateIds()
    exact = unique.records | "ExactPrepass" >> ExactPrepass(text_key)
    embedded = exact.representatives | "Embed" >> EmbedRecords(opts.embed_config(), opts.batch_window)
    return parsed, unique, exact, embedded


def _vectors_from_embeddings(pipeline: beam.Pipeline, opts: BatchDedupOptions):
    parsed = pipeline | "Read" >> ReadEmbeddings(opts.input_embeddings)
    unique = parsed.records | "DropDuplicateIds" >> DropDuplicateIds()
    exact = unique.records | "ExactPrepass" >> ExactPrepass(vector_key)
    vectors = exact.representatives | "Vectors" >> beam.Map(lambda r: (r.id, r.vector)).with_output_types(IdVector)
    return parsed, unique, exact, {"vectors": vectors}


def _backends_used(names) -> str | None:
    """The concrete backends the workers ran, comma-separated (one, unless workers of different CPUs chose apart)."""
    return ", ".join(sorted(set(names))) or None


def _log_progress(counted: dict, embedded_input, seconds: float) -> None:
    """Progress lines: records read, vectors embedded (of the representatives, with an ETA) and pairs found."""
    total = embedded_input | "CountToEmbed" >> beam.combiners.Count.Globally()
    run = uuid.uuid4().hex
    counted["inputs"] | "ProgressRead" >> LogProgress("read", seconds, run)
    counted["embedded"] | "ProgressEmbedded" >> LogProgress("embedded", seconds, run, total)
    counted["semantic_pairs"] | "ProgressPairs" >> LogProgress("pairs", seconds, run)


def build(pipeline: beam.Pipeline, opts: BatchDedupOptions) -> None:
    """Add the batch dedup steps to ``pipeline``, from text (``--input``) or saved embeddings."""
    out = opts.output
    front = _vectors_from_embeddings if opts.input_embeddings else _vectors_from_text
    parsed, unique, exact, embedded = front(pipeline, opts)
    vectors = embedded["vectors"]
    band = opts.score_band() if not opts.input_embeddings else ScoreBand(opts.threshold)
    written = []  # what the writers return: summary.json is written after all of it
    if opts.write_embeddings:
        embeddings = {"vectors": vectors, "exact_pairs": exact[EXACT_PAIRS]}
        written.append(embeddings | "WriteEmbeddings" >> WriteEmbeddings(FileSystems.join(out, layout.EMBEDDINGS)))
    if opts.centroids:
        centroids = pipeline | "LoadCentroids" >> beam.Create([_load_centroids(opts.centroids)])
    else:
        train = TrainCentroids(
            opts.cells, opts.target_cell_size, opts.max_cell_size, opts.cell_margin, opts.kmeans_sample
        )
        centroids = vectors | "TrainCentroids" >> train
    written.append(centroids | "WriteCentroids" >> beam.Map(save_centroids, FileSystems.join(out, layout.CENTROIDS)))
    search = FindPairs(band.search_threshold, centroids, opts.cell_margin, opts.max_cell_size)
    found = vectors | "FindPairs" >> search
    semantic = found.pairs
    if band.band:
        rescore = RescorePairs(band, opts.embed_config().fp32(), opts.batch_window)
        rescoring = {"pairs": found.pairs, "records": exact.representatives} | "Rescore" >> rescore
        semantic = rescoring["pairs"]
    pairs = (exact[EXACT_PAIRS], semantic) | "AllPairs" >> beam.Flatten()

    if opts.cluster_method == "hdbscan":
        linked = vectors | "Hdbscan" >> HdbscanEdges(centroids, opts.pca_dims, opts.hdbscan_min_cluster_size)
        edges = (exact[EXACT_PAIRS] | "ExactEdges" >> beam.Map(_edge), linked) | "AllEdges" >> beam.Flatten()
    else:
        edges = pairs | "PairEdges" >> beam.Map(_edge)
    clusters = {"records": unique.records, "edges": edges} | "Cluster" >> ClusterRecords()
    dead_letters = (parsed[DEAD_LETTER], unique[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()

    outputs = {name: FileSystems.join(out, name) for name in layout.OUTPUT_SCHEMAS}
    written.append(pairs | "WritePairs" >> WriteRows(outputs[layout.PAIRS], PAIRS_SCHEMA))
    written.append(clusters | "WriteClusters" >> WriteRows(outputs[layout.CLUSTERS], CLUSTERS_SCHEMA))
    written.append(dead_letters | "WriteDeadLetters" >> WriteRows(outputs[layout.DEAD_LETTER], DEAD_LETTER_SCHEMA))

    counted = {
        "inputs": (parsed.records, parsed[DEAD_LETTER]) | "Inputs" >> beam.Flatten(),
        "accepted": unique.records,
        "dead_letters": dead_letters,
        "exact_pairs": exact[EXACT_PAIRS],
        "semantic_pairs": semantic,
        "embedded": vectors,
        "clusters": clusters | "Representatives" >> beam.Filter(lambda c: c.is_representative),
    }
    if band.band:
        counted.update(rescored_pairs=rescoring[IN_BAND], rescored_texts=rescoring[RESCORED_TEXTS])
    measured = counted | "Count" >> CountEach()
    if opts.progress_seconds > 0:
        _log_progress(counted, exact.representatives, opts.progress_seconds)
    measured["cells"] = centroids | "CountCells" >> beam.Map(len)
    measured["largest_cell"] = found[CELL_SIZES] | "LargestCell" >> beam.CombineGlobally(largest)
    if opts.recall_sample:
        recall = MeasureRecall(opts.recall_sample, opts.threshold)
        measured["recall"] = {"vectors": vectors, "pairs": found.pairs} | "MeasureRecall" >> recall
    if not opts.input_embeddings:
        used = embedded[BACKEND_USED] | "BackendsUsed" >> beam.combiners.ToList()
        measured["backend"] = used | "NameBackends" >> beam.Map(_backends_used)
    settings = Summary(
        threshold=opts.threshold,
        model=None if opts.input_embeddings else opts.model,
        input_embeddings=opts.input_embeddings,
        backend_requested=None if opts.input_embeddings else opts.backend,
        rescore_band=band.band,
        cluster_method=opts.cluster_method,
        runner=str(opts.view_as(StandardOptions).runner),
        read=ReadSpec(opts.input, opts.format, opts.id_field, opts.text_field, opts.max_text_bytes),
        outputs=outputs,
    )
    measured | "Summary" >> WriteSummary(FileSystems.join(out, layout.SUMMARY), settings, after=written)


def _remove_empty_temp_dirs(output: str) -> None:
    """Beam's file sinks can leave an empty ``beam-temp-*`` or ``.temp*`` folder beside local outputs; object stores
    have no empty folders."""
    for folder in glob.glob(os.path.join(glob.escape(output), "*", "*temp*"), include_hidden=True):
        try:
            os.rmdir(folder)
        except OSError:
            pass


def _pipeline(argv: list[str]) -> tuple[beam.Pipeline, BatchDedupOptions]:
    """Validate the flags and build the pipeline they describe."""
    options = PipelineOptions(argv)
    opts = validate(options)
    if opts.overwrite and not options.view_as(TestOptions).dry_run:
        remove_run(opts.output)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, opts)
    return pipeline, opts


def start(argv: list[str]) -> PipelineResult:
    """Validate the flags and start the pipeline; returns at once with its result (a flex template must not wait)."""
    return _pipeline(argv)[0].run()


def run(argv: list[str]) -> tuple[Summary, PipelineResult]:
    """Validate the flags, run the pipeline to completion; return the summary it wrote and the Beam result."""
    pipeline, opts = _pipeline(argv)
    result = pipeline.run()
    result.wait_until_finish()
    _remove_empty_temp_dirs(opts.output)
    return read_summary(opts.output), result


def counters(result: PipelineResult) -> dict[str, int]:
    """The run's ``semsim`` metric counters (inputs, dead_letters, embedded, exact_pairs, semantic_pairs,
    truncated_texts, model_loads), summed over steps and workers."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


def main(argv: list[str] | None = None) -> int:
    """Entry point: run and print the summary; bad options print one line and exit 2."""
    try:
        summary, result = run(sys.argv[1:] if argv is None else argv)
    except OptionsError as e:
        print(f"semsim batch: error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(summary.to_json().decode("utf-8"))
    print("counters:", json.dumps(counters(result), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
