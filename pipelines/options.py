"""Options of the batch and streaming pipelines, as Beam PipelineOptions, and their start-up validation."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
import uuid
from collections.abc import Sequence
from dataclasses import replace
from typing import NoReturn

from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp import pubsub
from apache_beam.options.pipeline_options import (
    DirectOptions,
    GoogleCloudOptions,
    PipelineOptions,
    PortableOptions,
    StandardOptions,
    TestOptions,
    _BeamArgumentParser,
)

from pipelines.command_parser import unknown_argument
from pipelines.gcs_credentials import NO_GCS_CREDENTIALS, gcs_credentials_error, no_gcs_credentials
from pipelines.run_files import finish_promotions, run_entries
from semsim_core.backends import CHOICES, DEFAULT_BACKEND, backend_error
from semsim_core.cells import DEFAULT_TARGET_RECALL
from semsim_core.embedder import DEFAULT_MODEL, EmbedConfig, default_threads, model_error
from semsim_core.formats import FORMATS, QUOTINGS, ParseConfig, detect_format
from semsim_core.keep import EARLIEST, FIRST_ID, POLICIES
from semsim_core.pairs import DEFAULT_THRESHOLD
from semsim_core.progress import BARS, LINES, WORKER_LINES, ProgressSpec
from semsim_core.progress import LOG as PROGRESS_LOG
from semsim_core.rescore import DEFAULT_RESCORE_BAND, ScoreBand, rescore_band
from semsim_core.run_layout import SUMMARY
from transforms.cluster import CLUSTER_METHODS
from transforms.embed import DEFAULT_WINDOW
from transforms.embeddings_io import embeddings_pattern

DEFAULT_RECALL_SAMPLE = 1_000  # queries searched by brute force against every vector: ~1 s per 100,000 vectors
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd])$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


# runners whose workers run in the launching process (unless --direct_running_mode multi_processing)
IN_PROCESS_RUNNERS = ("FnApiRunner", "DirectRunner", "BundleBasedDirectRunner", "SwitchingDirectRunner")


class OptionsError(ValueError):
    """A bad option, reported as one line before the pipeline starts."""


def _flag(parser, name: str, **kwargs) -> None:
    """Add ``--name`` with dashes and with underscores (Beam passes options on as ``--dest=value``)."""
    dashed = "--" + name.replace("_", "-")
    flags = [dashed] if "_" not in name else [dashed, "--" + name]
    parser.add_argument(*flags, dest=name, **kwargs)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Help lines end with the flag's default, where it has one its help does not already name."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def print_flags(options: type[PipelineOptions], prog: str) -> None:
    """Print the help of a command's flags (``options`` and its semsim bases), with their defaults and the Beam
    flags every command also takes."""
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=_DefaultsFormatter,
        epilog=f"Any Beam pipeline flag is taken too: --runner (default {options.DEFAULT_RUNNER} here; DataflowRunner, "
        "PortableRunner, ...), --direct_num_workers, --project, --region, --temp_location, ...",
    )
    for cls in reversed(options.__mro__):
        if issubclass(cls, SemsimOptions) and "_add_argparse_args" in vars(cls):
            cls._add_argparse_args(parser)
    parser.print_help()


class SemsimOptions(PipelineOptions):
    """Flags shared by ``semsim batch`` and ``semsim stream``."""

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        _flag(parser, "output", help="output folder")
        _flag(
            parser,
            "history",
            help="history store (a folder, local or gs://): batch deduplicates --input against everything it holds, "
            "then adds --input's records (the first run creates it); a stream matches against it and appends to it",
        )
        _flag(parser, "id_field", default="id", help="id field of structured input (default: id)")
        _flag(parser, "text_field", default="text", help="text field of structured input (default: text)")
        _flag(parser, "max_text_bytes", type=int, default=100_000, help="longer texts (UTF-8 bytes) are dead letters")
        _flag(parser, "threshold", type=float, default=DEFAULT_THRESHOLD, help="cosine threshold in (0, 1]")
        _flag(parser, "model", default=DEFAULT_MODEL, help="sentence-transformers name or local path")
        _flag(
            parser,
            "backend",
            choices=CHOICES,
            default=DEFAULT_BACKEND,
            help="inference backend; auto: the fastest on each worker's CPU whose drift from fp32 the band covers",
        )
        _flag(
            parser,
            "rescore_band",
            type=float,
            default=DEFAULT_RESCORE_BAND,
            help="pairs within this of the threshold are rescored with the fp32 model unless the backend is fp32",
        )
        _flag(parser, "batch_size", type=int, default=32, help="most texts per forward pass")
        _flag(parser, "max_batch_tokens", type=int, default=4096, help="most padded tokens per forward pass")
        _flag(
            parser,
            "embed_threads",
            type=int,
            default=0,
            help="intra-op threads per worker process; 0: its machine's cores (local: cores / --direct_num_workers)",
        )
        _flag(
            parser,
            "cell_margin",
            type=float,
            help="a vector also joins every cell whose centroid similarity is within this of its nearest cell's; "
            "default: tuned for --target-recall (batch), the partition's own (stream)",
        )
        _flag(parser, "centroids", help="centroids.npy of an earlier batch run")
        _flag(
            parser,
            "progress_seconds",
            type=float,
            default=30.0,
            help="log progress at most this often per worker (batch: records read, embedded with ETA, cells searched "
            "and pairs, clustering round; live bars instead on a terminal with a local runner; stream: posts "
            "received, resolved, dead letters, latency p50/p95, cells held); 0: off",
        )

    def parse_config(self) -> ParseConfig:
        return ParseConfig(self.id_field, self.text_field, self.max_text_bytes)

    def score_band(self) -> ScoreBand:
        """The threshold and the band rescored with fp32 (none for an fp32 ``--backend``)."""
        return ScoreBand(self.threshold, rescore_band(self.backend, self.rescore_band))

    def embed_config(self) -> EmbedConfig:
        """The embedding settings. Threads: ``--embed-threads``; when 0 and the local runner runs parallel workers,
        this machine's cores shared among them; else 0, which each worker resolves to its own cores (the machine
        that builds the pipeline is not the one that runs it on Dataflow or Flink)."""
        threads = self.embed_threads
        direct = self.view_as(DirectOptions)
        if not threads and direct.direct_running_mode in ("multi_threading", "multi_processing"):
            threads = default_threads(direct.direct_num_workers or os.cpu_count() or 1)
        max_drift = ScoreBand(self.threshold, self.rescore_band).max_drift
        return EmbedConfig(self.model, self.backend, self.batch_size, self.max_batch_tokens, threads, max_drift)


# PipelineOptions is named again as a direct base: Beam collects every flag a job carries (get_all_options, e.g. the
# Dataflow job's options) from PipelineOptions' direct subclasses only, and would drop these flags with a warning.
class BatchDedupOptions(SemsimOptions, PipelineOptions):
    """Flags of ``semsim batch`` (any other Beam pipeline flag is accepted too)."""

    DEFAULT_RUNNER = "FnApiRunner"

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        _flag(parser, "input", action="append", help="file glob (repeatable); local, gs:// or any Beam filesystem")
        _flag(
            parser,
            "input_embeddings",
            help="embeddings/ of an earlier run (no model loaded): alone, its records; with --input, vectors by id",
        )
        _flag(parser, "write_embeddings", action="store_true", help="also write embeddings/ (one row per record)")
        _flag(
            parser,
            "overwrite",
            action="store_true",
            help="replace the semsim run already in --output (its entries are deleted first); without it such a "
            "folder is refused",
        )
        _flag(
            parser,
            "time_field",
            help="event-time field of structured input (Unix seconds or milliseconds, or ISO 8601), for --keep "
            "earliest and kept in --history; a record without it is a dead letter",
        )
        _flag(
            parser,
            "keep",
            choices=POLICIES,
            help="the record each cluster keeps: earliest (by --time-field), longest (text), first-id (smallest "
            "id); default: a --history store's, else earliest with --time-field, else first-id",
        )
        _flag(
            parser,
            "write_deduplicated",
            action="store_true",
            help="also write deduplicated/: each cluster's kept record with every field of its input record",
        )
        _flag(
            parser,
            "history_dtype",
            choices=("float32", "float16"),
            help="how a new --history store keeps embeddings (float16 halves its size; default float32)",
        )
        _flag(parser, "format", choices=FORMATS, help="input format; default: from each file's extension")
        _flag(
            parser, "quoting", choices=QUOTINGS, default="csv",
            help="CSV/TSV fields: csv (quoted as Python's csv and pandas write them) or none (raw: a quote is a "
            "character, and no field holds the delimiter or a line end)",
        )  # fmt: skip
        _flag(parser, "batch_window", type=int, default=DEFAULT_WINDOW, help="texts per sorted embedding window")
        _flag(
            parser, "cells", type=int, default=0,
            help="k-means cells; 0: one up to --max-cell-size records, else count / --target-cell-size",
        )  # fmt: skip
        _flag(
            parser, "target_recall", type=float, default=DEFAULT_TARGET_RECALL,
            help="the share of threshold pairs the cells must keep: the margin is tuned for it on a sample",
        )  # fmt: skip
        _flag(parser, "target_cell_size", type=int, default=2_000, help="vectors per cell when --cells is 0")
        _flag(parser, "max_cell_size", type=int, default=20_000, help="larger cells are split again")
        _flag(parser, "kmeans_sample", type=int, default=50_000, help="vectors to train the centroids on")
        _flag(
            parser,
            "recall_sample",
            type=int,
            default=DEFAULT_RECALL_SAMPLE,
            help="measure pair recall against brute force for this many sampled vectors (0: off)",
        )
        _flag(
            parser,
            "cluster_method",
            choices=CLUSTER_METHODS,
            default="components",
            help="components: connected components of the pairs; hdbscan: those split along HDBSCAN clusters",
        )
        _flag(parser, "hdbscan_min_cluster_size", type=int, default=2, help="HDBSCAN min_cluster_size")

    def parse_config(self) -> ParseConfig:
        return replace(super().parse_config(), time_field=self.time_field, quoting=self.quoting)

    def keep_policy(self) -> str:
        """``--keep``, or its default: ``earliest`` when records have a time field, else ``first-id`` (a ``--history``
        store's own policy, once :func:`pipelines.history_run.open_history` has read it)."""
        return self.keep or (EARLIEST if self.time_field else FIRST_ID)

    def progress(self) -> ProgressSpec | None:
        """How the run shows progress, decided where it is launched: None with ``--progress-seconds 0`` or when the
        logger ``semsim.progress`` is not enabled for INFO (library use stays quiet unless asked); live bars when
        this process's stderr is a terminal and the runner works in this process; lines written by each worker
        process when local worker processes share this stderr; else log lines every ``--progress-seconds`` (each
        worker's own counts on a distributed runner)."""
        if self.progress_seconds <= 0 or not PROGRESS_LOG.isEnabledFor(logging.INFO):
            return None
        local = self.view_as(StandardOptions).runner in IN_PROCESS_RUNNERS
        processes = local and self.view_as(DirectOptions).direct_running_mode == "multi_processing"
        if processes:
            display = WORKER_LINES
        else:
            display = BARS if local and sys.stderr.isatty() else LINES
        return ProgressSpec(uuid.uuid4().hex, self.progress_seconds, display, whole_run=local and not processes)


class StreamingDedupOptions(SemsimOptions, PipelineOptions):
    """Flags of ``semsim stream`` (any other Beam pipeline flag is accepted too)."""

    DEFAULT_RUNNER = "BundleBasedDirectRunner"

    def parse_config(self) -> ParseConfig:
        return replace(super().parse_config(), id_attribute=self.id_attribute)

    @classmethod
    def _add_argparse_args(cls, parser) -> None:
        _flag(parser, "subscription", help="Pub/Sub subscription, projects/P/subscriptions/S")
        _flag(
            parser,
            "id_attribute",
            default="id",
            help="message attribute with each post's id (else the JSON id field, else the message id); Dataflow's "
            "source also drops a message published again with an id it has seen",
        )
        _flag(parser, "notify_topic", help="Pub/Sub topic: a JSON message per matched post, naming its earliest match")
        _flag(parser, "dead_letter_topic", help="Pub/Sub topic that also receives dead letters as JSON")
        _flag(parser, "retention", help="forget posts older than this (e.g. 30d, 12h, 90m, 3600s)")
        _flag(parser, "max_per_cell", type=int, help="keep at most this many posts per cell (newest)")
        _flag(parser, "window_seconds", type=int, default=10, help="write each output every this many seconds")
        _flag(parser, "commit_seconds", type=int, help="append to --history every this many seconds (default: 60)")


def duration_seconds(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` -> seconds."""
    match = _DURATION.match(text.strip())
    if not match:
        raise OptionsError(f"--retention must look like 30d, 12h, 90m or 3600s, got {text!r}")
    return float(match.group(1)) * _SECONDS[match.group(2)]


def set_runner(options: PipelineOptions, default: str) -> None:
    """``--runner`` (``default`` when not given), refused in one line when Beam knows no such runner, as a negative
    ``--direct_num_workers`` is."""
    from apache_beam.runners.runner import create_runner

    standard = options.view_as(StandardOptions)
    standard.runner = standard.runner or default
    try:
        runner = create_runner(standard.runner)
    except (ValueError, ImportError, AttributeError) as e:
        raise OptionsError(f"--runner {standard.runner}: {e}") from None
    if options.view_as(TestOptions).dry_run and type(runner).__name__ != "DataflowRunner":
        raise OptionsError(f"--dry_run only describes a Dataflow job: {standard.runner} would run this one")
    workers = options.view_as(DirectOptions).direct_num_workers
    if workers < 0:
        raise OptionsError(f"--direct_num_workers must not be negative (0: one per core), got {workers}")
    endpoint = options.view_as(PortableOptions).job_endpoint
    if endpoint and endpoint != "embed":
        check_job_service(endpoint)


def check_job_service(endpoint: str, seconds: float = 10) -> None:
    """One :class:`OptionsError` line when no job service answers at ``--job_endpoint`` within ``seconds`` (Beam's
    portable runner would wait minutes without a word)."""
    import grpc

    channel = grpc.insecure_channel(endpoint)
    try:
        grpc.channel_ready_future(channel).result(timeout=seconds)
    except grpc.FutureTimeoutError:
        raise OptionsError(
            f"--job_endpoint {endpoint}: no job service answered in {seconds:g} s; start one (deploy/flink/, "
            "deploy/portable/) or correct the address"
        ) from None
    finally:
        channel.close()


def local_absolute(path: str) -> str:
    """A local path or glob made absolute; a URI (``gs://...``) as it is."""
    return path if "://" in path else os.path.abspath(path)


def check_apart(output: str, history: str) -> None:
    """Refuse an ``--output`` folder and a ``--history`` store that are one, or one inside the other: the run's
    files would lie among the store's, and ``--overwrite`` would delete the store with the run's entries."""
    out, store = (local_absolute(path).rstrip("/") + "/" for path in (output, history))
    if out.startswith(store) or store.startswith(out):
        raise OptionsError(f"--output {output} and --history {history} overlap: keep each outside the other")


def match_files(flag: str, pattern: str) -> list:
    """The files ``pattern`` (of option ``flag``) matches on any Beam filesystem; none, or an error, is an
    :class:`OptionsError`."""
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as e:  # noqa: BLE001 - any filesystem error is reported as one line
        if pattern.startswith("gs://") and no_gcs_credentials():
            raise OptionsError(f"cannot list {flag} {pattern!r}: {NO_GCS_CREDENTIALS} (anonymously: {e})") from None
        raise OptionsError(f"cannot list {flag} {pattern!r}: {e}") from None
    if not matched:
        hint = " ([ and ] are glob characters: write [[] for a literal [)" if "[" in pattern else ""
        raise OptionsError(f"{flag} {pattern!r} matches no file{hint}")
    return matched


def _check_shared(opts: SemsimOptions, positive: tuple[str, ...], needs_model: bool = True) -> None:
    if not opts.output:
        raise OptionsError("--output is required (a folder)")
    folders = (("--output", opts.output), ("--history", opts.history))  # the run writes there: anonymously, it cannot
    on_gcs = [(flag, folder) for flag, folder in folders if folder and folder.startswith("gs://")]
    # one credentials lookup for them all; --no_auth: e.g. a --dry_run that only builds a Dataflow job
    if on_gcs and not opts.view_as(GoogleCloudOptions).no_auth and (unreachable := gcs_credentials_error(*on_gcs[0])):
        raise OptionsError(unreachable)
    if not 0.0 < opts.threshold <= 1.0:
        raise OptionsError(f"--threshold must be in (0, 1], got {opts.threshold}")
    if opts.cell_margin is not None and opts.cell_margin < 0:
        raise OptionsError("--cell-margin must not be negative")
    if not 0.0 <= opts.rescore_band < 1.0:
        raise OptionsError(f"--rescore-band must be in [0, 1), got {opts.rescore_band}")
    if opts.embed_threads < 0:
        raise OptionsError("--embed-threads must not be negative")
    for name in ("max_text_bytes", "batch_size", "max_batch_tokens", *positive):
        if getattr(opts, name) < 1:
            raise OptionsError(f"--{name.replace('_', '-')} must be a positive integer, got {getattr(opts, name)}")
    if opts.centroids:
        match_files("--centroids", opts.centroids)
    error = (model_error(opts.model) or backend_error(opts.backend)) if needs_model else None
    if error:
        raise OptionsError(error)


class _FlagParser(_BeamArgumentParser):
    """Beam's parser, whose errors (an invalid choice, a value that is not a number) are one :class:`OptionsError`
    line instead of argparse's usage dump of every Beam flag."""

    def error(self, message: str) -> NoReturn:
        raise OptionsError(message)


def unknown_flags(flags: Sequence[str], command: type[PipelineOptions]) -> tuple[list[str], list[str]]:
    """The arguments of ``flags`` that neither ``command``'s flags nor any Beam option class knows, and the flags
    there are."""
    parser = _FlagParser(allow_abbrev=False)  # as PipelineOptions.get_all_options builds it
    others = {BatchDedupOptions, StreamingDedupOptions} - {command}  # the other command's flags are not this one's
    for cls in {str(c): c for c in PipelineOptions.__subclasses__() if c not in others}.values():
        cls._add_argparse_args(parser)
    _, unknown = parser.parse_known_args(flags)
    return unknown, list(parser._option_string_actions)


def check_known_flags(options: PipelineOptions, command: type[PipelineOptions]) -> None:
    """Refuse, in one line, an argument that neither ``command``'s flags nor any Beam option class knows (Beam itself
    only warns and runs on: a mistyped ``--treshold`` would run the job at the default), with Beam's suggestion."""
    unknown, known = unknown_flags(options._flags, command)  # the arguments as given (Beam keeps no public copy)
    if unknown:
        raise OptionsError(unknown_argument(unknown[0], known))


def validate(options: PipelineOptions) -> BatchDedupOptions:
    """Check the batch options before anything runs; raise :class:`OptionsError` with one clear line.

    Also sets the default runner, FnApiRunner (Beam's DirectRunner first tries to download Prism).
    """
    check_known_flags(options, BatchDedupOptions)
    opts = options.view_as(BatchDedupOptions)
    if not opts.input and not opts.input_embeddings:
        raise OptionsError("give --input (a file glob), --input-embeddings (an embeddings/ folder), or both")
    if opts.history and opts.input_embeddings:
        raise OptionsError("--history needs --input (text): a store keeps each record's text hash and text")
    if opts.history_dtype and not opts.history:
        raise OptionsError(f"--history-dtype {opts.history_dtype} sets how a new --history store keeps embeddings")
    if opts.history and opts.cluster_method != "components":
        raise OptionsError("--history clusters by connected components; --cluster-method hdbscan cannot extend a store")
    if opts.keep == EARLIEST and not opts.time_field:
        raise OptionsError("--keep earliest needs --time-field (the input field with each record's time)")
    if opts.input_embeddings and not opts.input and (opts.keep_policy() != FIRST_ID or opts.write_deduplicated):
        raise OptionsError(
            "--keep earliest/longest and --write-deduplicated need --input (saved embeddings hold ids): give both"
        )
    if opts.cells < 0 or opts.recall_sample < 0:
        raise OptionsError("--cells and --recall-sample must not be negative")
    if not 0.0 < opts.target_recall <= 1.0:
        raise OptionsError(f"--target-recall must be in (0, 1], got {opts.target_recall}")
    positive = (
        "batch_window",
        "hdbscan_min_cluster_size",
        "target_cell_size",
        "max_cell_size",
        "kmeans_sample",
    )
    _check_shared(opts, positive, needs_model=not opts.input_embeddings)
    if opts.hdbscan_min_cluster_size < 2:
        raise OptionsError(f"--hdbscan-min-cluster-size must be at least 2, got {opts.hdbscan_min_cluster_size}")
    if opts.input_embeddings:
        opts.input_embeddings = local_absolute(opts.input_embeddings)
        match_files("--input-embeddings", embeddings_pattern(opts.input_embeddings))
    if opts.input:  # absolute: a bare '*.jsonl' matches (Beam's local match needs a folder), the summary's globs
        opts.input = [local_absolute(pattern) for pattern in opts.input]  # still name the files from elsewhere
    for pattern in opts.input or ():
        formats = {m.path: opts.format or detect_format(m.path) for m in match_files("--input", pattern)}
        folders = [path for path in formats if "://" not in path and os.path.isdir(path)]
        if folders:
            raise OptionsError(f"--input {pattern!r} is a folder; give a glob of its files ({folders[0]}/*)")
        unknown = [path for path, fmt in formats.items() if fmt is None]
        if unknown:
            raise OptionsError(
                f"cannot tell the format of {unknown[0]!r} from its extension; pass --format {{{','.join(FORMATS)}}}"
            )
        plain = [path for path, fmt in formats.items() if fmt == "txt"]
        if plain and opts.time_field:
            raise OptionsError(f"--time-field needs records with fields; {plain[0]!r} is plain text")
    if opts.history:  # the store's file list is relative to its root: fix the root
        check_apart(opts.output, opts.history)
        opts.history = local_absolute(opts.history)
    set_runner(options, BatchDedupOptions.DEFAULT_RUNNER)
    if not options.view_as(TestOptions).dry_run:  # a dry run only describes the job: it reads and writes nothing
        finish_promotions(opts.output, discard_unfinished=opts.overwrite)  # what a killed replacing run left
        earlier = run_entries(opts.output)
        if earlier and not opts.overwrite:
            names = ", ".join(path.rstrip("/").rsplit("/", 1)[-1] for path in earlier)
            raise OptionsError(f"--output {opts.output} already holds a semsim run ({names}); pass --overwrite")
    return opts


def _check_pubsub_path(flag: str, path: str, parse) -> None:
    """A Pub/Sub path checked as Beam's source and sink check it (project and resource names), in one line."""
    try:
        parse(path)
    except ValueError as e:
        raise OptionsError(f"{flag} {path}: {e}") from None


def check_pubsub_exists(flag: str, path: str) -> None:
    """One :class:`OptionsError` line when Pub/Sub (or the emulator at ``PUBSUB_EMULATOR_HOST``) says the
    subscription or topic ``path`` of option ``flag`` does not exist (a stream would fail at its first message,
    having acknowledged it); where it cannot be asked (no credentials, no permission to look, no network), the runner
    finds out for itself."""
    if not os.environ.get("PUBSUB_EMULATOR_HOST") and no_gcs_credentials():
        return
    from google.api_core import exceptions
    from google.cloud import pubsub_v1

    try:
        if "/subscriptions/" in path:
            pubsub_v1.SubscriberClient().get_subscription(request={"subscription": path}, timeout=30)
        else:
            pubsub_v1.PublisherClient().get_topic(request={"topic": path}, timeout=30)
    except exceptions.NotFound:
        raise OptionsError(f"{flag} {path} does not exist") from None
    except exceptions.GoogleAPIError:
        return


def validate_streaming(options: PipelineOptions) -> StreamingDedupOptions:
    """Check the streaming options; sets streaming mode and the default runner, BundleBasedDirectRunner."""
    check_known_flags(options, StreamingDedupOptions)
    opts = options.view_as(StreamingDedupOptions)
    if not opts.subscription or not re.match(r"^projects/[^/]+/subscriptions/[^/]+$", opts.subscription):
        raise OptionsError("--subscription is required, as projects/PROJECT/subscriptions/NAME")
    _check_pubsub_path("--subscription", opts.subscription, pubsub.parse_subscription)
    for flag, topic in (("--notify-topic", opts.notify_topic), ("--dead-letter-topic", opts.dead_letter_topic)):
        if topic:
            _check_pubsub_path(flag, topic, pubsub.parse_topic)
    if opts.history and opts.centroids:
        raise OptionsError("--centroids cannot be given with --history: the store's own centroids are used")
    if opts.history:
        check_apart(opts.output, opts.history)
    if opts.commit_seconds is not None and not opts.history:
        raise OptionsError("--commit-seconds sets how often --history is appended to: give --history too")
    if opts.commit_seconds is not None and opts.commit_seconds < 1:
        raise OptionsError(f"--commit-seconds must be a positive whole number, got {opts.commit_seconds}")
    _check_shared(opts, ())
    if opts.max_per_cell is not None and opts.max_per_cell < 1:
        raise OptionsError(f"--max-per-cell must be a positive integer, got {opts.max_per_cell}")
    if opts.window_seconds < 1:
        raise OptionsError(f"--window-seconds must be a positive whole number, got {opts.window_seconds}")
    if opts.retention and duration_seconds(opts.retention) <= 0:
        raise OptionsError(f"--retention must be longer than 0, got {opts.retention!r} (no --retention: keep all)")
    dry_run = options.view_as(TestOptions).dry_run  # a dry run only describes the job: it reads nothing
    if not dry_run and FileSystems.exists(FileSystems.join(opts.output, SUMMARY)):
        raise OptionsError(f"--output {opts.output} holds a semsim batch run: give the stream a folder of its own")
    for flag, path in (
        ("--subscription", opts.subscription),
        ("--notify-topic", opts.notify_topic),
        ("--dead-letter-topic", opts.dead_letter_topic),
    ):
        if path:
            check_pubsub_exists(flag, path)
    set_runner(options, StreamingDedupOptions.DEFAULT_RUNNER)
    options.view_as(StandardOptions).streaming = True
    return opts
