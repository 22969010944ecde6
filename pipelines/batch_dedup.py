"""The batch pipeline: read, drop duplicate ids, exact pre-pass, embed, find pairs, cluster, write Parquet.

Run as ``semsim batch --input GLOB --output DIR [flags]`` or ``python -m pipelines.batch_dedup ...``.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from typing import NamedTuple

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions, TestOptions
from apache_beam.runners.runner import PipelineResult
from tqdm.contrib.logging import logging_redirect_tqdm

from pipelines.history_run import HistoryRun, open_history, release
from pipelines.options import BatchDedupOptions, OptionsError, print_flags, validate
from pipelines.run_files import (
    load_centroids,
    promote,
    read_parquet_folder,
    read_summary,
    run_entries,
    save_centroids,
    staging_folder,
)
from semsim_core import run_layout as layout
from semsim_core.backends import FP32_BACKENDS
from semsim_core.history import HistoryError, new_segment_id
from semsim_core.progress import ProgressSpec
from semsim_core.records import (
    CLUSTER_CHANGES_SCHEMA,
    CLUSTERS_SCHEMA,
    DEAD_LETTER_SCHEMA,
    EXACT,
    PAIRS_SCHEMA,
    REMOVED_SCHEMA,
    SEMANTIC,
)
from semsim_core.rescore import ScoreBand
from semsim_core.run_layout import HistoryCounts, ReadSpec, Summary, recall_shortfall
from transforms import DEAD_LETTER, METRICS_NAMESPACE
from transforms.cell_search import CELL_SIZES, STORED_TEXTS, CellFiles, SearchCells, largest
from transforms.cells import Partition, TrainCentroids
from transforms.cluster import ClusterRecords, SplitByHdbscan, pair_edge
from transforms.dedup_ids import DropDuplicateIds
from transforms.deduplicated import WriteDeduplicated
from transforms.embed import BACKEND_USED, EmbedRecords
from transforms.embeddings_io import VECTORS, LookUpVectors, ReadEmbeddings, WithTexts, WriteEmbeddings
from transforms.exact import EXACT_PAIRS, ExactPrepass, text_key, vector_key
from transforms.history_clusters import DEMOTED, MERGES, REMOVED, STORED_PAIRS, ClusterWithHistory
from transforms.history_commit import (
    MERGES_TABLE,
    RECORDS_TABLE,
    CommitSegment,
    StoredRecordRows,
    merge_row,
    segment_tables,
)
from transforms.history_read import DropStoredIds, StoredTexts
from transforms.progress import LogProgress
from transforms.read import ReadRecords
from transforms.recall import MeasureRecall
from transforms.removed import ExplainRemovals
from transforms.rescore import IN_BAND, RESCORED_TEXTS, RescorePairs
from transforms.vector_blocks import ToBlocks, VectorBlock
from transforms.vector_coder import IdVector, IdVectorText
from transforms.write import CountEach, Table, WriteSummary, WriteTables, remove_folder, write_summary

_LOG = logging.getLogger(__name__)
EXECUTION_TIME = "metric:ptransform_execution_time:total_msecs:v1"


def _load_centroids(path: str) -> np.ndarray:
    try:
        return load_centroids(path)
    except (OSError, ValueError) as e:
        raise OptionsError(f"cannot read --centroids {path!r}: {e}") from None


def _vectors_from_text(
    pipeline: beam.Pipeline, opts: BatchDedupOptions, history: HistoryRun | None, progress: ProgressSpec | None
):
    parsed = pipeline | "Read" >> ReadRecords(opts.input, opts.parse_config(), opts.format)
    unique = parsed.records | "DropDuplicateIds" >> DropDuplicateIds()
    accepted, rejected, texts = unique.records, [parsed[DEAD_LETTER], unique[DEAD_LETTER]], None
    if history and history.plan.manifest:
        root, manifest = history.plan.root, history.plan.manifest
        fresh = accepted | "DropStoredIds" >> DropStoredIds(root, manifest)
        accepted = fresh.records
        rejected.append(fresh[DEAD_LETTER])
        texts = accepted | "StoredTexts" >> StoredTexts(root, manifest)
    exact = accepted | "ExactPrepass" >> ExactPrepass(text_key, texts)
    embed = EmbedRecords(opts.embed_config(), opts.batch_window, progress=progress)
    embedded = exact.representatives | "Embed" >> embed
    return Front(parsed, accepted, rejected, exact, embedded)


def _vectors_from_embeddings(pipeline: beam.Pipeline, opts: BatchDedupOptions, history: None, _):
    parsed = pipeline | "Read" >> ReadEmbeddings(opts.input_embeddings)
    unique = parsed.records | "DropDuplicateIds" >> DropDuplicateIds()
    exact = unique.records | "ExactPrepass" >> ExactPrepass(vector_key)
    vectors = (
        exact.representatives
        | "Vectors" >> beam.Map(lambda r: (r.id, r.vector, "")).with_output_types(IdVectorText)
        | "Blocks" >> ToBlocks(opts.batch_window)
    )
    return Front(parsed, unique.records, [parsed[DEAD_LETTER], unique[DEAD_LETTER]], exact, {"vectors": vectors})


def _vectors_from_text_and_embeddings(pipeline: beam.Pipeline, opts: BatchDedupOptions, history: None, _):
    """``--input`` is the record set; each record's vector comes from ``--input-embeddings`` by id."""
    parsed = pipeline | "Read" >> ReadRecords(opts.input, opts.parse_config(), opts.format)
    unique = parsed.records | "DropDuplicateIds" >> DropDuplicateIds()
    saved = pipeline | "ReadEmbeddings" >> ReadEmbeddings(opts.input_embeddings, metrics_prefix="saved_")
    found = {"records": unique.records, "saved": saved.records, "problems": saved[DEAD_LETTER]} | (
        "LookUpVectors" >> LookUpVectors(opts.input_embeddings)
    )
    rejected = [parsed[DEAD_LETTER], unique[DEAD_LETTER], found[DEAD_LETTER]]
    exact = found.records | "ExactPrepass" >> ExactPrepass(text_key)
    with_texts = {"records": exact.representatives, "vectors": found[VECTORS]} | "Vectors" >> WithTexts()
    vectors = with_texts | "Blocks" >> ToBlocks(opts.batch_window)
    return Front(parsed, found.records, rejected, exact, {"vectors": vectors})


class Front(NamedTuple):
    """What the reading steps hand on: the parse result, accepted records, dead letters, the exact pre-pass, the
    embedding result (``vectors``: :class:`VectorBlock` values; texts "" from saved embeddings)."""

    parsed: beam.pvalue.DoOutputsTuple
    accepted: beam.PCollection
    rejected: list
    exact: beam.pvalue.DoOutputsTuple
    embedded: dict


def _band_used(names, band: float) -> float:
    """The band rescored: none when every worker ran an fp32 backend (as ``auto`` may choose)."""
    return band if any(name not in FP32_BACKENDS for name in names) else 0.0


def _backends_used(names) -> str | None:
    """The concrete backends the workers ran, comma-separated (one, unless workers of different CPUs chose apart)."""
    return ", ".join(sorted(set(names))) or None


def _history_counts(measured: dict[str, int], history: HistoryRun) -> dict:
    plan = history.plan
    created = plan.manifest is None and measured["records_added"] > 0  # a run that accepts nothing creates no store
    return asdict(HistoryCounts(plan.root, plan.segment, created, history.records_before, **measured))


def _count_history(history: HistoryRun, accepted, clustered) -> beam.PCollection:
    """The summary's ``history`` field, as a one-element PCollection."""
    stored_pairs = clustered[STORED_PAIRS]
    counted = {
        "records_added": accepted,
        "exact_matches": stored_pairs | "StoredExact" >> beam.Filter(lambda kind: kind == EXACT),
        "pairs_with_history": stored_pairs | "StoredSemantic" >> beam.Filter(lambda kind: kind == SEMANTIC),
        "cluster_changes": clustered["changes"],
        "demoted": clustered[DEMOTED],
    }
    return counted | "CountHistory" >> CountEach() | "HistoryCounts" >> beam.Map(_history_counts, history)


def build(
    pipeline: beam.Pipeline,
    opts: BatchDedupOptions,
    history: HistoryRun | None = None,
    progress: ProgressSpec | None = None,
    staging: str | None = None,
) -> None:
    """Add the batch dedup steps to ``pipeline``, from text (``--input``) or saved embeddings; with ``history``
    (``--history``), against the store it opened, which the run's new records are committed to at the end; with
    ``progress``, the steps report how far they are; with ``staging``, the run writes there and replaces the run in
    ``--output`` with its own once it has finished (:func:`~pipelines.run_files.promote`)."""
    out = opts.output
    into = staging or out  # where the writers write; the summary names the entries where they end up
    if opts.input and opts.input_embeddings:
        front = _vectors_from_text_and_embeddings(pipeline, opts, history, progress)
    else:
        vectors_from = _vectors_from_embeddings if opts.input_embeddings else _vectors_from_text
        front = vectors_from(pipeline, opts, history, progress)
    exact = front.exact
    blocks = front.embedded["vectors"]
    band = opts.score_band() if not opts.input_embeddings else ScoreBand(opts.threshold)
    written = []  # what the writers return: summary.json is written after all of it
    tables = {}  # the Parquet outputs: name -> (rows, schema)
    outputs = {name: FileSystems.join(out, name) for name in layout.OUTPUT_SCHEMAS}
    if opts.write_embeddings:
        outputs[layout.EMBEDDINGS] = FileSystems.join(out, layout.EMBEDDINGS)
        vectors = blocks | "IdVectors" >> beam.FlatMap(VectorBlock.id_vectors).with_output_types(IdVector)
        embeddings = {"vectors": vectors, "exact_pairs": exact[EXACT_PAIRS]}
        written.append(embeddings | "WriteEmbeddings" >> WriteEmbeddings(FileSystems.join(into, layout.EMBEDDINGS)))
    given = _load_centroids(opts.centroids) if opts.centroids else None
    staged = False  # centroids known before the run: each block is split into cells as it is embedded
    if history and history.centroids is not None:
        partition = pipeline | "StoredCentroids" >> beam.Create([Partition(history.centroids, history.margin)])
    elif given is not None and opts.cell_margin is not None:
        partition = pipeline | "LoadCentroids" >> beam.Create([Partition(given, opts.cell_margin)])
    else:
        staged = True
        train = TrainCentroids(
            opts.cells, opts.target_cell_size, opts.max_cell_size, opts.kmeans_sample, opts.threshold,
            opts.target_recall, opts.cell_margin, given,
        )  # fmt: skip
        partition = blocks | "TrainCentroids" >> train
    centroids = partition | "Centroids" >> beam.Map(lambda p: p.centroids)
    written.append(centroids | "WriteCentroids" >> beam.Map(save_centroids, FileSystems.join(into, layout.CENTROIDS)))
    work = FileSystems.join(into, layout.WORK)  # staged vectors; without a store, the cell files too
    if history:
        plan = history.plan
        files = CellFiles(work, plan.root, plan.manifest, plan.segment, history.dtype)
    else:
        files = CellFiles(work, work, None, new_segment_id())
    search = SearchCells(files, partition, band, opts.max_cell_size, opts.target_recall, progress, staged)
    found = blocks | "FindPairs" >> search
    semantic = found["pairs"]
    if band.band:
        rescore = RescorePairs(band, opts.embed_config().fp32(), opts.batch_window)
        texts = (exact.representatives, found[STORED_TEXTS]) | "RescoreTexts" >> beam.Flatten()
        rescore_inputs = {"pairs": semantic, "records": texts}
        if not history:  # stored vectors may come from another backend: rescore whatever this run's workers ran
            rescore_inputs["backends"] = front.embedded[BACKEND_USED]
        rescoring = rescore_inputs | "Rescore" >> rescore
        semantic = rescoring["pairs"]
    pairs = (exact[EXACT_PAIRS], semantic) | "AllPairs" >> beam.Flatten()

    if history:
        cluster = ClusterWithHistory(plan.root, plan.manifest, opts.keep_policy(), progress)
        clustered = {"records": front.accepted, "pairs": pairs} | "Cluster" >> cluster
        clusters = clustered["clusters"]
        outputs[layout.CLUSTER_CHANGES] = FileSystems.join(out, layout.CLUSTER_CHANGES)
        tables[layout.CLUSTER_CHANGES] = clustered["changes"], CLUSTER_CHANGES_SCHEMA
        stored_records = {
            "records": front.accepted,
            "clusters": clusters,
            "embedded": blocks | "Ids" >> beam.FlatMap(lambda b: b.ids),
        } | "StoredRecordRows" >> StoredRecordRows(history.seen)
        merges = clustered[MERGES] | "MergeRows" >> beam.MapTuple(merge_row)
        removed = (clustered[REMOVED], clustered[DEMOTED]) | "Removals" >> beam.Flatten()
    else:
        if opts.cluster_method == "hdbscan":
            edges = pairs | "Hdbscan" >> SplitByHdbscan(opts.hdbscan_min_cluster_size)
        else:
            edges = pairs | "PairEdges" >> beam.Map(pair_edge)
        cluster = ClusterRecords(opts.keep_policy(), progress=progress)
        clusters = {"records": front.accepted, "edges": edges} | "Cluster" >> cluster
        removed = {"clusters": clusters, "pairs": pairs} | "ExplainRemovals" >> ExplainRemovals()
    outputs[layout.REMOVED] = FileSystems.join(out, layout.REMOVED)
    tables[layout.REMOVED] = removed, REMOVED_SCHEMA
    if opts.write_deduplicated:
        outputs[layout.DEDUPLICATED] = FileSystems.join(out, layout.DEDUPLICATED)
        deduplicate = WriteDeduplicated(FileSystems.join(into, layout.DEDUPLICATED), opts.parse_config(), opts.format)
        deduplicated = {"clusters": clusters, "records": front.accepted} | "WriteDeduplicated" >> deduplicate
        written.append(deduplicated)
    dead_letters = front.rejected | "AllDeadLetters" >> beam.Flatten()

    tables.update({
        layout.PAIRS: (pairs, PAIRS_SCHEMA),
        layout.CLUSTERS: (clusters, CLUSTERS_SCHEMA),
        layout.DEAD_LETTER: (dead_letters, DEAD_LETTER_SCHEMA),
    })  # fmt: skip
    where = {name: Table(FileSystems.join(into, name), schema) for name, (_, schema) in tables.items()}
    contents = {name: pcoll for name, (pcoll, _) in tables.items()}
    if history:  # the new segment's tables of the store, in the same step
        where.update(segment_tables(plan.root, plan.segment))
        contents.update({RECORDS_TABLE: stored_records, MERGES_TABLE: merges})
    files = contents | "WriteTables" >> WriteTables(where)
    written.append(files)

    parsed = front.parsed
    counted = {
        "inputs": (parsed.records, parsed[DEAD_LETTER]),
        "accepted": front.accepted,
        "dead_letters": dead_letters,
        "exact_pairs": exact[EXACT_PAIRS],
        "semantic_pairs": semantic,
        "embedded": blocks,
        "clusters": clusters | "Representatives" >> beam.Filter(lambda c: c.is_representative),
        "removed": removed,
    }
    if band.band:
        counted.update(rescored_pairs=rescoring[IN_BAND], rescored_texts=rescoring[RESCORED_TEXTS])
    counts = counted | "Count" >> CountEach(blocks=("embedded",))
    measured = {}
    if opts.write_deduplicated:
        rows = deduplicated | "DeduplicatedRows" >> beam.Map(lambda written_file: written_file[1])
        measured["deduplicated"] = rows | "CountDeduplicated" >> beam.CombineGlobally(sum)
    if progress:
        parsed.records | "ProgressRead" >> LogProgress("read", progress)
        parsed[DEAD_LETTER] | "ProgressReadDeadLetters" >> LogProgress("read", progress)
    measured["cells"] = centroids | "CountCells" >> beam.Map(len)
    measured["cell_margin"] = partition | "Margin" >> beam.Map(lambda p: p.margin)
    measured["largest_cell"] = found[CELL_SIZES] | "LargestCell" >> beam.CombineGlobally(largest)
    if opts.recall_sample:
        recall = MeasureRecall(opts.recall_sample, opts.threshold)
        measured["recall"] = {"vectors": blocks, "pairs": found["pairs"]} | "MeasureRecall" >> recall
    if not opts.input_embeddings:
        used = front.embedded[BACKEND_USED] | "BackendsUsed" >> beam.combiners.ToList()
        measured["backend"] = used | "NameBackends" >> beam.Map(_backends_used)
        measured["rescore_band"] = used | "BandUsed" >> beam.Map(_band_used, band.band)
    if history:
        segment_files = (
            files | "SegmentFiles" >> beam.FlatMap(lambda f: [f[1]] if f[0] in (RECORDS_TABLE, MERGES_TABLE) else []),
            found["parts"] | "PartPaths" >> beam.Values(),
        )
        measured["history"] = _count_history(history, front.accepted, clustered)
    settings = Summary(
        threshold=opts.threshold,
        model=None if opts.input_embeddings else opts.model,
        input_embeddings=opts.input_embeddings,
        backend_requested=None if opts.input_embeddings else opts.backend,
        rescore_band=band.band,
        cluster_method=opts.cluster_method,
        runner=str(opts.view_as(StandardOptions).runner),
        read=ReadSpec(
            opts.input, opts.format, opts.id_field, opts.text_field, opts.max_text_bytes, opts.time_field, opts.quoting
        ),
        outputs=outputs,
        keep=opts.keep_policy(),
        target_recall=opts.target_recall,
    )
    summary = WriteSummary(FileSystems.join(into, layout.SUMMARY), settings, counts, after=written)
    done = measured | "Summary" >> summary
    if history:
        done = done | "CommitHistory" >> CommitSegment(plan, partition, segment_files)
    if staging:  # the staging folder goes as a whole, its work with it
        done | "Promote" >> beam.Map(lambda _: promote(staging, out))
    else:
        done | "RemoveWork" >> beam.Map(lambda _: remove_folder(work))


def _remove_empty_temp_dirs(output: str) -> None:
    """Beam's file sinks can leave an empty ``beam-temp-*`` or ``.temp*`` folder beside local outputs; object stores
    have no empty folders."""
    for folder in glob.glob(os.path.join(glob.escape(output), "*", "*temp*"), include_hidden=True):
        try:
            os.rmdir(folder)
        except OSError:
            pass


class Launch(NamedTuple):
    """A built batch pipeline, its options, the history store it locked and how it shows progress."""

    pipeline: beam.Pipeline
    opts: BatchDedupOptions
    history: HistoryRun | None
    progress: ProgressSpec | None


def _pipeline(argv: list[str]) -> Launch:
    """Validate the flags, open (and lock) ``--history``, and build the pipeline they describe."""
    options = PipelineOptions(argv)
    opts = validate(options)
    dry_run = options.view_as(TestOptions).dry_run
    replacing = opts.overwrite and not dry_run and run_entries(opts.output)
    history = open_history(opts) if opts.history and not dry_run else None
    pipeline = beam.Pipeline(options=options)
    progress = opts.progress()
    build(pipeline, opts, history, progress, staging_folder(opts.output) if replacing else None)
    return Launch(pipeline, opts, history, progress)


def start(argv: list[str]) -> PipelineResult:
    """Validate the flags and start the pipeline; returns at once with its result (a flex template must not wait)."""
    return _pipeline(argv).pipeline.run()


def run(argv: list[str]) -> tuple[Summary | None, PipelineResult]:
    """Validate the flags, run the pipeline to completion; return the summary it wrote (None for a ``--dry_run``,
    which only describes the job) and the Beam result. A run that fails here unlocks its history store (left as it
    was: nothing is committed before the end)."""
    pipeline, opts, history, progress = _pipeline(argv)
    shown = progress.open() if progress else None  # held here, so an in-process run's last state can be shown
    started = time.monotonic()
    try:
        result = pipeline.run()
        result.wait_until_finish()
    except BaseException:
        if history:
            release(history)
        raise
    finally:
        if shown:
            shown.finish()
    if opts.view_as(TestOptions).dry_run:
        return None, result
    _remove_empty_temp_dirs(opts.output)
    summary = read_summary(opts.output).measured(
        wall_seconds=round(time.monotonic() - started, 1), step_seconds=step_seconds(result) or None
    )
    write_summary(FileSystems.join(opts.output, layout.SUMMARY), summary)
    for warning in (recall_shortfall(summary), _nothing_accepted(summary, opts.output)):
        if warning:
            _LOG.warning(warning)
    return summary, result


def _nothing_accepted(summary: Summary, out: str) -> str | None:
    """One line when every record read is a dead letter (a mistyped --text-field, a wrong --format): the run
    succeeded, and found nothing."""
    if not summary.inputs or summary.accepted:
        return None
    errors = read_parquet_folder(FileSystems.join(out, layout.DEAD_LETTER), DEAD_LETTER_SCHEMA)["error"].to_pylist()
    reason, count = Counter(errors).most_common(1)[0]
    return (
        f"every one of the {summary.inputs} records read is a dead letter ({count} of them: {reason}); check "
        "--text-field, --id-field and --format"
    )


def step_seconds(result: PipelineResult) -> dict[str, float]:
    """Seconds the runner measured in each top-level step of the pipeline (Beam's ``ptransform_execution_time``:
    processing elements, starting and finishing bundles), summed over its parts and workers; steps under 0.05 s are
    left out, and a runner that reports no such metric gives an empty dict."""
    try:
        measured = result.monitoring_metrics().query()["counters"]
    except (AttributeError, NotImplementedError):
        return {}
    totals: dict[str, float] = {}
    for counter in measured:
        if counter.key.metric.name == EXECUTION_TIME and counter.key.step:
            step = counter.key.step.split("/", 1)[0]
            totals[step] = totals.get(step, 0) + counter.committed / 1000
    return {step: round(seconds, 1) for step, seconds in totals.items() if seconds >= 0.05}


def counters(result: PipelineResult) -> dict[str, int]:
    """The run's ``semsim`` metric counters (inputs, dead_letters, embedded, exact_pairs, semantic_pairs,
    truncated_texts, model_loads), summed over steps and workers."""
    totals: dict[str, int] = {}
    for counter in result.metrics().query(MetricsFilter().with_namespace(METRICS_NAMESPACE))["counters"]:
        name = counter.key.metric.name
        totals[name] = totals.get(name, 0) + counter.committed
    return totals


def main(argv: list[str] | None = None) -> int:
    """Entry point: run and print the summary; bad options print one line and exit 2. Log lines are written above
    the progress bars, if any, rather than through them."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print_flags(BatchDedupOptions, "semsim batch")
        return 0
    try:
        with logging_redirect_tqdm():
            summary, result = run(argv)
    except OptionsError as e:
        print(f"semsim batch: error: {e}", file=sys.stderr)
        return 2
    except HistoryError as e:  # a store file found damaged mid-run; the store is left as it was
        message = str(e).split("[while running", 1)[0]  # without the step and traceback Beam adds
        print(f"semsim batch: error: {' '.join(message.split())}", file=sys.stderr)
        return 2
    if summary is None:
        print("semsim batch: dry run: the job was built and described to the runner; nothing ran")
        return 0
    sys.stdout.write(summary.to_json().decode("utf-8"))
    print("counters:", json.dumps(counters(result), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
