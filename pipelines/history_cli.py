"""``semsim history {info,compact,recentre,unlock} H``: what a history store holds, and its upkeep."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from pipelines.command_parser import CommandParser
from pipelines.gcs_credentials import gcs_credentials_error
from semsim_core.cells import DEFAULT_TARGET_RECALL
from semsim_core.history import History, HistoryError, Manifest
from semsim_core.pairs import DEFAULT_THRESHOLD

COMPACT_OWNER = "semsim history compact"
RECENTRE_OWNER = "semsim history recentre"


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="semsim history", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{info,compact,recentre,unlock}")
    for name, text in (
        ("info", "print what the history holds as JSON: model, cells, records, files, orphans, the lock"),
        ("compact", "rewrite it as one file per cell and one records file, with merged cluster ids resolved"),
        ("recentre", "train new centroids on the stored vectors and repartition the store into their cells"),
        ("unlock", "remove the writer's lock left by a dead run"),
    ):
        command = commands.add_parser(name, help=text, description=text)
        command.add_argument("history", metavar="H", help="the history store (local folder or gs://bucket/path)")
        if name == "unlock":
            command.add_argument("--force", action="store_true", help="even from a process running on this host")
        if name == "recentre":
            command.add_argument("--cells", type=_positive, default=0, help="cells (default: one per target size)")
            command.add_argument("--target-cell-size", type=_positive, default=2_000, help="records per cell")
            command.add_argument("--max-cell-size", type=_positive, default=20_000, help="larger cells split again")
            command.add_argument(
                "--threshold", type=_fraction, default=DEFAULT_THRESHOLD, help="the threshold the margin is tuned for"
            )
            command.add_argument(
                "--target-recall", type=_fraction, default=DEFAULT_TARGET_RECALL, help="share of pairs the cells keep"
            )
            command.add_argument("--cell-margin", type=_margin, default=None, help="a fixed margin, not tuned")
    return parser


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _number(text: str, fits: Callable[[float], bool], what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")  # fits nothing
    if not fits(value):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
    return value


def _fraction(text: str) -> float:
    return _number(text, lambda v: 0 < v <= 1, "in (0, 1]")


def _margin(text: str) -> float:
    return _number(text, lambda v: 0 <= v <= 2, "in [0, 2]")


def _shape(manifest: Manifest) -> str:
    files = sum(len(s.files) for s in manifest.segments)
    return f"{len(manifest.segments)} segments, {files} files"


def run(argv: Sequence[str]) -> str:
    """Run one subcommand; return what it prints. Bad input raises :class:`HistoryError`."""
    args = _parser().parse_args(argv)
    if unreachable := gcs_credentials_error("H", args.history):
        raise HistoryError(unreachable)
    history = History(args.history)
    if args.command == "info":
        return json.dumps(history.info(), indent=2)
    if args.command == "compact":
        before = history.manifest()
        after = history.compact(COMPACT_OWNER)
        if after.version == before.version:
            return f"history {history.root} is compact already: {_shape(after)} (version {after.version})"
        return (
            f"compacted history {history.root}: {_shape(before)} (version {before.version}) -> "
            f"{_shape(after)} (version {after.version})"
        )
    if args.command == "recentre":
        before = history.manifest()
        after = history.recentre(
            RECENTRE_OWNER,
            args.threshold,
            args.target_recall,
            cells=args.cells,
            target_cell_size=args.target_cell_size,
            max_cell_size=args.max_cell_size,
            margin=args.cell_margin,
        )
        return (
            f"recentred history {history.root}: {before.cells} -> {after.cells} cells, margin {before.margin:g} -> "
            f"{after.margin:g}, "
            f"{sum(s.rows for s in after.segments)} records (version {before.version} -> {after.version}); "
            "restart the streams on it"
        )
    holder = history.lock_holder()
    if holder is None:
        history.manifest()  # a path that holds no store says so (a store's first run is locked before its manifest)
        return f"history {history.root} is not locked"
    if history.held_here(holder) and not args.force:
        raise HistoryError(
            f"history {history.root} is locked by {holder.get('owner')} (pid {holder.get('pid')}), which is still "
            "running on this host: stop it first (or give --force if that pid is another program now)"
        )
    history.unlock()
    return (
        f"unlocked history {history.root}: it was locked by {holder.get('owner')} (pid {holder.get('pid')} on "
        f"{holder.get('host')} since {holder.get('since')})"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: print the result; bad input prints one line on stderr and exits 2."""
    try:
        print(run(sys.argv[1:] if argv is None else argv))
    except HistoryError as e:
        print(f"semsim history: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
