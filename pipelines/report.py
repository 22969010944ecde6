"""``semsim report OUT_DIR``: one self-contained HTML page on a batch run: its counts, the pair-score histogram, the
cluster-size distribution, the largest clusters with examples, dead-letter reasons, recall and calibration."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from functools import partial
from pathlib import Path

from pipelines.command_parser import CommandParser
from pipelines.gcs_credentials import gcs_credentials_error
from semsim_core import run_layout as layout
from semsim_core.formats import FORMATS, QUOTINGS, ParseConfig, Parsed, detect_format, parse_file
from semsim_core.report import ReportError, RunFolder, find_texts, load_run, read_summary, render_html


def _parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="semsim report", description=__doc__)
    parser.add_argument(
        "out_dir", metavar="OUT_DIR", help="the --output folder of a semsim batch run: a path or a URI (gs://, file://)"
    )
    parser.add_argument("--html", metavar="FILE", help="a local file for the page (default: OUT_DIR/report.html)")
    parser.add_argument("--examples", type=int, default=5, metavar="N", help="example records per cluster (5)")
    parser.add_argument("--top-clusters", type=int, default=10, metavar="K", help="largest clusters shown (10)")
    texts = parser.add_argument_group(
        "example texts",
        "the outputs hold ids, not texts; the examples' texts are read from the batch run's input as its summary.json "
        "records it, or from the files given here (with their parsing flags), in path order until every example is "
        "found",
    )
    texts.add_argument("--input", action="append", default=[], metavar="GLOB", help="input files (repeatable)")
    texts.add_argument("--format", choices=FORMATS, help="for files whose extension does not say")
    texts.add_argument("--id-field", default="id")
    texts.add_argument("--text-field", default="text")
    texts.add_argument("--max-text-bytes", type=int, default=ParseConfig.max_text_bytes)
    texts.add_argument("--quoting", choices=QUOTINGS, default="csv", help="CSV/TSV quoting, as semsim batch's")
    return parser


def _input_paths(patterns: Sequence[str]) -> list[str]:
    """The files matching ``patterns`` in path order; any Beam filesystem (imported only when --input is given)."""
    from pipelines.options import OptionsError, match_files

    try:
        return sorted({m.path for pattern in patterns for m in match_files("--input", pattern)})
    except OptionsError as e:
        raise ReportError(str(e)) from None


def _parsed(paths: Sequence[str], fmt: str | None, config: ParseConfig) -> Iterator[Parsed]:
    """Every record of ``paths``, parsed and decompressed exactly as ``semsim batch`` reads them."""
    from transforms.read import open_input

    for path in paths:
        file_format = fmt or detect_format(path)
        if file_format is not None:
            with open_input(path) as file:
                yield from parse_file(path, file, file_format, config)


def _texts(paths: Sequence[str], fmt: str | None, config: ParseConfig, wanted: set[str]) -> dict[str, str]:
    return find_texts(_parsed(paths, fmt, config), wanted)


def write_report(argv: Sequence[str]) -> tuple[str, int]:
    """Parse the flags, read the run (on any filesystem pyarrow reaches) and write the page; return where, and its
    size in bytes. Bad input raises :class:`ReportError`."""
    args = _parser().parse_args(argv)
    for flag, value in (("--examples", args.examples), ("--top-clusters", args.top_clusters)):
        if value < 1:
            raise ReportError(f"{flag} must be a positive integer, got {value}")
    if unreachable := gcs_credentials_error("OUT_DIR", args.out_dir):
        raise ReportError(unreachable)
    out = RunFolder(args.out_dir)
    texts = None
    if args.input:
        config = ParseConfig(args.id_field, args.text_field, args.max_text_bytes, quoting=args.quoting)
        texts = partial(_texts, _input_paths(args.input), args.format, config)
    elif (read := read_summary(out).read).input:
        # The run's own input and parsing flags, recorded in its summary.json; gone since: ids only.
        config = ParseConfig(read.id_field, read.text_field, read.max_text_bytes, quoting=read.quoting)
        try:
            texts = partial(_texts, _input_paths(read.input), read.format, config)
        except ReportError as e:
            print(f"semsim report: no example texts: the run's input is gone ({e}); give --input", file=sys.stderr)
    page = render_html(load_run(out, args.examples, args.top_clusters, texts)).encode("utf-8")
    where = args.html or f"{args.out_dir.rstrip('/')}/{layout.REPORT}"
    try:
        if args.html:
            Path(args.html).write_bytes(page)
        else:
            out.write_bytes(layout.REPORT, page)
    except OSError as e:
        raise ReportError(f"cannot write {where!r}: {e}") from None
    return where, len(page)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: write the report and say where; bad input prints one line on stderr and exits 2."""
    started = time.perf_counter()
    try:
        path, size = write_report(sys.argv[1:] if argv is None else argv)
    except ReportError as e:
        print(f"semsim report: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} ({size / 1024:.0f} KiB) in {time.perf_counter() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
