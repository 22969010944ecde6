"""The streaming pipeline: Pub/Sub posts matched, as they arrive, against every post seen before.

Run as ``semsim stream --subscription projects/P/subscriptions/S --output DIR [flags]`` or
``python -m pipelines.streaming_dedup ...``. Runs until cancelled.
"""

from __future__ import annotations

import logging
import sys
import uuid

import apache_beam as beam
import numpy as np
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.options import (
    OptionsError,
    StreamingDedupOptions,
    duration_seconds,
    print_flags,
    validate_streaming,
)
from pipelines.run_files import load_centroids, partition_margin
from semsim_core import run_layout as layout
from semsim_core.embedder import model_identity
from semsim_core.history import History, HistoryError, check_compatible
from semsim_core.records import CLUSTER_CHANGES_SCHEMA, CLUSTERS_SCHEMA, DEAD_LETTER_SCHEMA, PAIRS_SCHEMA
from semsim_core.stream_history import StreamHistory
from transforms import DEAD_LETTER
from transforms.history_append import DEFAULT_COMMIT_SECONDS, AppendToHistory
from transforms.progress import LogStreamStatus
from transforms.pubsub import PublishJson, ReadPosts
from transforms.stream_match import ACCEPTED, CHANGES, NOTIFICATIONS, PAIRS, MatchPosts
from transforms.write import WriteWindowedRows

_LOG = logging.getLogger(__name__)
FALLBACK_MARGIN = 0.1  # for --centroids without the summary of the batch run that tuned their margin


def _open_history(opts: StreamingDedupOptions, rescoring: bool) -> tuple[StreamHistory, np.ndarray, float]:
    """``--history``: the store checked against this stream's model; its centroids and margin become the stream's
    cells. Only the manifest and centroids are read here: workers read cells when they first serve them."""
    history = History(opts.history)
    if opts.cell_margin is not None:
        raise OptionsError("--cell-margin cannot be given with --history: the store's cells and margin are used")
    try:
        manifest = history.manifest()
        fingerprint, dim = model_identity(opts.model)
        check_compatible(manifest, opts.model, fingerprint, dim, root=opts.history)
        centroids = history.centroids(manifest)
    except HistoryError as e:
        raise OptionsError(str(e)) from None
    _LOG.info("history %s: %d cells, %d records", opts.history, manifest.cells, sum(s.rows for s in manifest.segments))
    return StreamHistory(opts.history, rescoring, manifest.centroids), centroids, manifest.margin


def _id_label(pipeline: beam.Pipeline, opts: StreamingDedupOptions) -> str | None:
    """``--id-attribute`` for Pub/Sub's source where the runner honours it (Dataflow); the local runners refuse any
    id label, and the stream's own re-delivery guard (one resolution per post id) still holds there."""
    runner = str(pipeline.options.view_as(StandardOptions).runner)
    return opts.id_attribute if "Dataflow" in runner and opts.id_attribute else None


def build(pipeline: beam.Pipeline, opts: StreamingDedupOptions) -> None:
    """Add the streaming steps to ``pipeline``."""
    out = opts.output
    band = opts.score_band()
    history, margin = None, opts.cell_margin
    if opts.history:
        history, centroids, margin = _open_history(opts, bool(band.band))
    else:
        centroids = load_centroids(opts.centroids) if opts.centroids else None
        if centroids is not None and margin is None:
            margin = partition_margin(opts.centroids)
            if margin is None:
                margin = FALLBACK_MARGIN
                _LOG.warning("no summary.json beside --centroids: cell margin %.2f (give --cell-margin)", margin)
    if centroids is not None:
        _LOG.info("cells: %d, margin %.4f", len(centroids), margin)
    if centroids is None:
        _LOG.warning("no --centroids: the stream runs as a single cell (correct, not parallel)")
    elif len(centroids) == 1:
        _LOG.warning("the history store has one cell: the stream runs as one (`semsim history recentre` splits it)")
    posts = pipeline | "Read" >> ReadPosts(opts.subscription, opts.parse_config(), _id_label(pipeline, opts))
    matcher = MatchPosts(
        opts.embed_config(),
        band,
        centroids,
        margin,
        retention_seconds=duration_seconds(opts.retention) if opts.retention else None,
        max_per_cell=opts.max_per_cell,
        history=history,
    )
    matched = posts.records | "Match" >> matcher
    if history:
        matched[ACCEPTED] | "AppendToHistory" >> AppendToHistory(history, opts.commit_seconds or DEFAULT_COMMIT_SECONDS)
    seconds = opts.window_seconds
    folder = {name: FileSystems.join(out, name) for name in layout.OUTPUT_SCHEMAS}
    matched["clusters"] | "WriteClusters" >> WriteWindowedRows(folder[layout.CLUSTERS], CLUSTERS_SCHEMA, seconds)
    matched[PAIRS] | "WritePairs" >> WriteWindowedRows(folder[layout.PAIRS], PAIRS_SCHEMA, seconds)
    changes = FileSystems.join(out, layout.CLUSTER_CHANGES)
    matched[CHANGES] | "WriteClusterChanges" >> WriteWindowedRows(changes, CLUSTER_CHANGES_SCHEMA, seconds)
    dead = (posts[DEAD_LETTER], matched[DEAD_LETTER]) | "AllDeadLetters" >> beam.Flatten()
    dead | "WriteDeadLetters" >> WriteWindowedRows(folder[layout.DEAD_LETTER], DEAD_LETTER_SCHEMA, seconds)
    if opts.progress_seconds > 0:
        run, every = uuid.uuid4().hex, opts.progress_seconds  # `seconds` above is the output windows' width
        held = matcher.held()
        posts.records | "StatusReceived" >> LogStreamStatus("received", every, run, held)
        matched["clusters"] | "StatusResolved" >> LogStreamStatus("resolved", every, run, held, latency=True)
        dead | "StatusDeadLetters" >> LogStreamStatus("dead letters", every, run, held)
    if opts.notify_topic:
        matched[NOTIFICATIONS] | "Notify" >> PublishJson(opts.notify_topic)
    if opts.dead_letter_topic:
        dead | "PublishDeadLetters" >> PublishJson(opts.dead_letter_topic)


def start(argv: list[str]) -> PipelineResult:
    """Validate the flags and start the pipeline; returns at once with the running pipeline's result."""
    options = PipelineOptions(argv)
    opts = validate_streaming(options)
    pipeline = beam.Pipeline(options=options)
    build(pipeline, opts)
    return pipeline.run()


def main(argv: list[str] | None = None) -> int:
    """Entry point: run until cancelled (Ctrl-C); bad options print one line and exit 2."""
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print_flags(StreamingDedupOptions, "semsim stream")
        return 0
    try:
        result = start(argv)
    except OptionsError as e:
        print(f"semsim stream: error: {e}", file=sys.stderr)
        return 2
    try:
        result.wait_until_finish()
    except KeyboardInterrupt:
        result.cancel()
    return 0


if __name__ == "__main__":
    sys.exit(main())
