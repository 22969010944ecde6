"""The run report behind ``semsim report``: figures from a batch run's outputs and one self-contained HTML page.

Parquet is read with pyarrow column projection and filters (only the columns and rows each part needs), histograms
are computed with numpy, and cluster examples are a bounded sample, so a large run stays fast. The page has no
script, no external resource and inline SVG charts (:mod:`semsim_core.svg_charts`); every user text is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.dataset as ds
import pyarrow.fs as pafs

from semsim_core import run_layout as layout
from semsim_core.locations import resolve
from semsim_core.ranking import best_f1_index
from semsim_core.records import (
    CLUSTERS_SCHEMA,
    DEAD_LETTER_SCHEMA,
    PAIRS_SCHEMA,
    REMOVED_SCHEMA,
    SEMANTIC,
    DeadLetter,
    Record,
)
from semsim_core.run_layout import Summary, recall_shortfall
from semsim_core.svg_charts import Marker, bar_list_svg, calibration_svg, fmt, histogram_svg

RUN_FIELDS = ("threshold", "model", "backend", "cluster_method", "keep", "runner", "input_embeddings")
CALIBRATION_COLUMNS = ("threshold", "precision", "recall", "f1")
TEXT_CHARS = 500  # longest text or raw input shown in full
_REASON_REWRITES = (
    (r"^(duplicate id) .*$", r"\1"),  # the repeated id itself
    (r"(: | \().*$", ""),  # details after a colon or in parentheses
    (r" \d+", " N"),  # sizes, byte offsets, columns
)

TextLookup = Callable[[set[str]], dict[str, str]]


class ReportError(ValueError):
    """The output folder cannot be reported on (missing, or not a ``semsim batch`` output)."""


@dataclass(frozen=True)
class Histogram:
    """Counts of values in the bins ``[edges[i], edges[i + 1])`` (the last bin includes its right edge)."""

    edges: np.ndarray
    counts: np.ndarray


@dataclass(frozen=True)
class Link:
    """A record's strongest pair: the other record, the score and the kind (``exact`` or ``semantic``)."""

    other: str
    score: float
    kind: str


@dataclass(frozen=True)
class ClusterMember:
    """One example record of a cluster; ``text`` is None when no input was given to look it up."""

    id: str
    is_representative: bool
    text: str | None
    link: Link | None


@dataclass(frozen=True)
class ClusterExample:
    """A large cluster with a bounded sample of its members."""

    cluster_id: str
    size: int
    members: list[ClusterMember]


@dataclass(frozen=True)
class RemovalExample:
    """A removed record beside the one kept in its place (texts None when not looked up or not found)."""

    id: str
    kept_id: str
    score: float | None
    kind: str
    via: list[str]
    text: str | None
    kept_text: str | None


@dataclass(frozen=True)
class Reason:
    """A dead-letter reason (the error with its details generalised), how often it occurs and its first example."""

    reason: str
    count: int
    source: str
    raw: str
    error: str


@dataclass(frozen=True)
class Calibration:
    """A calibration curve read from a CSV (threshold, precision, recall, f1[, predicted_positive]) or why not."""

    name: str
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class RunReport:
    """Everything the HTML page shows."""

    out_dir: str
    summary: Summary
    scores: Histogram
    sizes: Histogram
    cluster_rows: int
    dead_letter_rows: int
    largest: list[ClusterExample]
    removals: list[RemovalExample]
    removed_rows: int | None  # rows of removed/; None when the run wrote none (an older semsim's --history run)
    reasons: list[Reason]
    calibrations: list[Calibration]
    texts_looked_up: bool


def score_histogram(scores: np.ndarray, threshold: float, bins: int = 50) -> Histogram:
    """Histogram of pair scores in ``bins`` equal bins from a round value below min(threshold, lowest score) to 1."""
    low = min(threshold, float(scores.min())) if scores.size else threshold
    lo = max(0.0, math.floor(low * 20) / 20 - 0.05)
    counts, edges = np.histogram(np.minimum(scores, 1.0), bins=bins, range=(lo, 1.0))
    return Histogram(edges, counts)


def log2_edges(largest: int) -> np.ndarray:
    """Bin edges 1, 2, 4, ..., 2**k with 2**k > ``largest``: bins [1, 2), [2, 4), [4, 8), ... for a log scale."""
    return 2.0 ** np.arange(max(int(largest), 1).bit_length() + 1)


def size_histogram(sizes: np.ndarray) -> Histogram:
    """How many clusters have a size in each power-of-two bin."""
    edges = log2_edges(int(sizes.max(initial=1)))
    counts, _ = np.histogram(sizes, bins=edges)
    return Histogram(edges, counts)


def reason_labels(errors: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Dead-letter errors with their details generalised into countable reasons, e.g. "field 'text' is 4000 bytes,
    over the cap of 3000 (--max-text-bytes)" -> "field 'text' is N bytes, over the cap of N"."""
    for pattern, replacement in _REASON_REWRITES:
        errors = pc.replace_substring_regex(errors, pattern, replacement)
    return errors


def _clip(text: str, chars: int = TEXT_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


def dead_letter_reasons(dead: ds.Dataset) -> list[Reason]:
    """Dead-letter reasons, most frequent first, each with its first row as the example (only those rows' raw input
    is read)."""
    reasons = reason_labels(dead.to_table(columns=["error"])["error"])
    counted = pc.value_counts(reasons)
    pairs = zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist(), strict=True)
    ordered = sorted(pairs, key=lambda vc: (-vc[1], vc[0]))
    firsts = pa.array([pc.index(reasons, reason).as_py() for reason, _ in ordered], pa.int64())
    rows = dead.take(firsts, columns=["source", "raw", "error"]).to_pylist()
    return [
        Reason(reason, count, row["source"], _clip(row["raw"]), row["error"])
        for (reason, count), row in zip(ordered, rows, strict=True)
    ]


def largest_clusters(representatives: pa.Table, k: int) -> pa.Table:
    """The ``k`` largest clusters of more than one record (``cluster_id``, ``cluster_size``), largest first, ties by
    cluster id."""
    multi = representatives.filter(pc.greater(representatives["cluster_size"], 1))
    if k <= 0 or multi.num_rows == 0:
        return multi.slice(0, 0)
    order = [("cluster_size", "descending"), ("cluster_id", "ascending")]
    return multi.take(pc.select_k_unstable(multi, k, sort_keys=order)).sort_by(order)


def sample_ids(members: pa.Table, cluster_id: str, n: int) -> list[str]:
    """The representative (whose id is the cluster id) and up to ``n - 1`` other members spread evenly over the id
    order."""
    ids = members.filter(pc.equal(members["cluster_id"], cluster_id))["id"]
    others = pc.filter(ids, pc.not_equal(ids, cluster_id))
    others = others.take(pc.sort_indices(others))
    if n <= 1 or len(others) == 0:
        return [cluster_id]
    picks = np.unique(np.linspace(0, len(others) - 1, min(n - 1, len(others))).round().astype(np.int64))
    return [cluster_id, *others.take(pa.array(picks)).to_pylist()]


def strongest_links(pairs: pa.Table, ids: Collection[str]) -> dict[str, Link]:
    """For each of ``ids``, its highest-scoring pair in ``pairs`` (``id_a, id_b, score, kind``); ties by other id."""
    columns = {"score": pairs["score"], "kind": pairs["kind"]}
    both = pa.concat_tables(
        [
            pa.table({"id": pairs["id_a"], "other": pairs["id_b"], **columns}),
            pa.table({"id": pairs["id_b"], "other": pairs["id_a"], **columns}),
        ]
    )
    links = {}
    for record_id in ids:
        rows = both.filter(pc.equal(both["id"], record_id))
        if rows.num_rows:
            order = [("score", "descending"), ("other", "ascending")]
            best = rows.take(pc.select_k_unstable(rows, 1, sort_keys=order)).to_pylist()[0]
            links[record_id] = Link(best["other"], best["score"], best["kind"])
    return links


def find_texts(parsed: Iterable[Record | DeadLetter], wanted: Collection[str]) -> dict[str, str]:
    """The text of each wanted id among parsed input records; the first record of an id wins (as in the batch run)
    and reading stops once every id is found."""
    missing, found = set(wanted), {}
    for item in parsed:
        if not missing:
            break
        if isinstance(item, Record) and item.id in missing:
            found[item.id] = item.text
            missing.discard(item.id)
    return found


def read_calibration(name: str, data: bytes) -> Calibration:
    """A calibration CSV (``threshold,precision,recall,f1[,predicted_positive]``) named ``name``, sorted by
    threshold."""
    try:
        table = pa_csv.read_csv(pa.BufferReader(data))
        missing = [c for c in CALIBRATION_COLUMNS if c not in table.column_names]
        if missing:
            return Calibration(name, error=f"lacks column(s) {', '.join(missing)}")
        names = [c for c in (*CALIBRATION_COLUMNS, "predicted_positive") if c in table.column_names]
        columns = {c: table[c].cast(pa.float64()).to_numpy() for c in names}
    except (OSError, ValueError) as e:
        return Calibration(name, error=f"cannot read it: {e}")
    order = np.argsort(columns["threshold"], kind="stable")
    return Calibration(name, {c: values[order] for c, values in columns.items()})


class RunFolder:
    """A batch run's ``--output`` folder on any filesystem pyarrow reaches: a local path, or a URI (``file://``,
    ``gs://``, ``s3://``, ``hdfs://``); or a path on a given ``filesystem``."""

    def __init__(self, location: str | Path, filesystem: pafs.FileSystem | None = None):
        self.location = str(location)
        if filesystem is not None:
            self.fs, self.root = filesystem, self.location
            return
        try:
            self.fs, self.root = resolve(self.location)
        except (pa.ArrowException, OSError, ValueError) as e:
            raise ReportError(f"cannot open {self.location!r}: {e}") from None

    def path(self, name: str) -> str:
        return f"{self.root.rstrip('/')}/{name}"

    def is_file(self, name: str) -> bool:
        return self.fs.get_file_info(self.path(name)).type == pafs.FileType.File

    def is_dir(self, name: str = "") -> bool:
        return self.fs.get_file_info(self.path(name) if name else self.root).type == pafs.FileType.Directory

    def read_bytes(self, name: str) -> bytes:
        with self.fs.open_input_stream(self.path(name)) as f:
            return f.read()

    def write_bytes(self, name: str, data: bytes) -> None:
        with self.fs.open_output_stream(self.path(name)) as f:
            f.write(data)

    def names(self) -> list[str]:
        """The entries directly in the folder."""
        return sorted(info.base_name for info in self.fs.get_file_info(pafs.FileSelector(self.root)))


def read_summary(out: RunFolder) -> Summary:
    """``summary.json`` of a batch run; a missing or unreadable one is a :class:`ReportError`."""
    if not out.is_dir():
        raise ReportError(f"output folder {out.location!r} does not exist")
    path = out.path(layout.SUMMARY)
    try:
        return Summary.from_json(out.read_bytes(layout.SUMMARY).decode("utf-8"))
    except FileNotFoundError:
        staged = [name for name in out.names() if name.startswith(layout.STAGED_RUN_PREFIX)]
        if any(out.is_file(f"{name}/{layout.PROMOTING}") for name in staged):
            raise ReportError(
                f"{path!r} not found: the run did not finish, or a run replacing it (--overwrite) stopped while moving "
                f"in; the next `semsim batch` with --output {out.location} finishes moving it"
            ) from None
        if any(out.is_file(f"{name}/{layout.SUMMARY}") for name in staged):
            raise ReportError(
                f"{path!r} not found: the run did not finish, or a run replacing it (--overwrite) stopped before it "
                f"was moved in; the next `semsim batch` with --output {out.location} moves it in if it finished (with "
                "--history: its segment committed), else removes it"
            ) from None
        raise ReportError(
            f"{path!r} not found: the run did not finish, or {out.location!r} is not a semsim batch run's --output"
        ) from None
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {path!r}: {e}") from None


def _dataset(out: RunFolder, name: str, schema: pa.Schema) -> ds.Dataset:
    if not out.is_dir(name):
        raise ReportError(f"{out.path(name)!r} not found: is {out.location!r} the --output of a semsim batch run?")
    try:
        return ds.dataset(out.path(name), filesystem=out.fs, format="parquet", schema=schema)
    except (OSError, ValueError) as e:
        raise ReportError(f"cannot read {out.path(name)!r}: {e}") from None


def _cluster_examples(
    clusters: ds.Dataset, pairs: ds.Dataset, top: pa.Table, examples: int, texts: TextLookup | None
) -> list[ClusterExample]:
    top_ids = top["cluster_id"].combine_chunks()
    members = clusters.to_table(columns=["id", "cluster_id"], filter=ds.field("cluster_id").isin(top_ids))
    chosen = {cid: sample_ids(members, cid, examples) for cid in top_ids.to_pylist()}
    wanted = {i for ids in chosen.values() for i in ids}
    value_set = pa.array(sorted(wanted), pa.string())
    touching = ds.field("id_a").isin(value_set) | ds.field("id_b").isin(value_set)
    links = strongest_links(pairs.to_table(filter=touching), wanted)
    text_of = texts(wanted) if texts else {}
    return [
        ClusterExample(cid, size, [ClusterMember(i, i == cid, text_of.get(i), links.get(i)) for i in chosen[cid]])
        for cid, size in zip(top_ids.to_pylist(), top["cluster_size"].to_pylist(), strict=True)
    ]


def spread_indices(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` rows spread evenly over the score order, strongest first (a missing score sorts last)."""
    order = np.argsort(-np.nan_to_num(scores, nan=-np.inf), kind="stable")
    if len(order) <= n:
        return order
    return order[np.linspace(0, len(order) - 1, n).round().astype(int)]


def _removal_examples(removed: ds.Dataset, n: int, texts: TextLookup | None) -> list[RemovalExample]:
    scores = removed.to_table(columns=["score"])["score"].to_numpy(zero_copy_only=False).astype(np.float64)
    rows = removed.take(pa.array(spread_indices(scores, n))).to_pylist()
    text_of = texts({i for row in rows for i in (row["id"], row["kept_id"])}) if texts and rows else {}
    return [
        RemovalExample(
            r["id"], r["kept_id"], r["score"], r["kind"], r["via"], text_of.get(r["id"]), text_of.get(r["kept_id"])
        )
        for r in rows
    ]


def load_run(
    out_dir: str | Path | RunFolder, examples: int = 5, top_clusters: int = 10, texts: TextLookup | None = None
) -> RunReport:
    """Read what the report needs from a batch run's ``--output`` folder (a path, a URI or a :class:`RunFolder`);
    ``texts`` looks up example texts by id."""
    out = out_dir if isinstance(out_dir, RunFolder) else RunFolder(out_dir)
    summary = read_summary(out)
    pairs = _dataset(out, layout.PAIRS, PAIRS_SCHEMA)
    clusters = _dataset(out, layout.CLUSTERS, CLUSTERS_SCHEMA)
    dead = _dataset(out, layout.DEAD_LETTER, DEAD_LETTER_SCHEMA)
    removed = _dataset(out, layout.REMOVED, REMOVED_SCHEMA) if out.is_dir(layout.REMOVED) else None
    calibration_files = [name for name in out.names() if "calibration" in name and name.endswith(".csv")]
    try:
        scores = pairs.to_table(columns=["score"], filter=ds.field("kind") == SEMANTIC)["score"].to_numpy()
        representatives = clusters.to_table(
            columns=["cluster_id", "cluster_size"], filter=ds.field("is_representative")
        )
        top = largest_clusters(representatives, top_clusters)
        return RunReport(
            out_dir=out.location,
            summary=summary,
            scores=score_histogram(scores, summary.threshold),
            sizes=size_histogram(representatives["cluster_size"].to_numpy()),
            cluster_rows=clusters.count_rows(),
            dead_letter_rows=dead.count_rows(),
            largest=_cluster_examples(clusters, pairs, top, examples, texts),
            removals=_removal_examples(removed, 2 * examples, texts) if removed else [],
            removed_rows=removed.count_rows() if removed else None,
            reasons=dead_letter_reasons(dead),
            calibrations=[read_calibration(name, out.read_bytes(name)) for name in calibration_files],
            texts_looked_up=texts is not None,
        )
    except (pa.ArrowInvalid, OSError) as e:
        raise ReportError(f"cannot read the outputs in {out.location!r}: {e}") from None


STYLE = """
body { font-family: sans-serif; margin: 2em auto; max-width: 60em; color: #222; line-height: 1.4; padding: 0 1em; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
dl.figures { display: grid; grid-template-columns: repeat(auto-fill, minmax(11em, 1fr)); gap: 0.6em; }
dl.figures div { background: #f5f7fa; border-radius: 6px; padding: 0.5em 0.8em; }
dl.figures dt { font-size: 0.85em; color: #555; } dl.figures dd { margin: 0; font-size: 1.3em; font-weight: bold; }
dl.run { display: grid; grid-template-columns: max-content 1fr; gap: 0.2em 1em; } dl.run dd { margin: 0; }
table { border-collapse: collapse; width: 100%; margin: 0.5em 0 1.5em; font-size: 0.92em; }
th, td { border-bottom: 1px solid #e5e5e5; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
td.text, td.raw { white-space: pre-wrap; word-break: break-word; } td.raw { font-family: monospace; }
.num { text-align: right; } .note, .caption { color: #555; font-size: 0.92em; }
.ok { color: #1e7d3a; } .bad { color: #b3261e; font-weight: bold; } .badge { font-size: 0.8em; color: #3b6fb6; }
svg.chart { display: block; max-width: 100%; height: auto; }
"""


def _figures(items: Iterable[tuple[str, str]], css: str = "figures") -> str:
    cells = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in items)
    return f'<dl class="{css}">{cells}</dl>'


def _summary_section(run: RunReport) -> str:
    s = run.summary
    counts = [(name.replace("_", " "), fmt(value)) for name, value in layout.counts(s).items()]
    if s.accepted:
        duplicates = s.accepted - s.clusters
        counts.append(("removed (duplicates)", f"{duplicates:,} ({duplicates / s.accepted:.1%})"))
    info = "".join(
        f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k in RUN_FIELDS if (v := getattr(s, k)) not in (None, "")
    )
    checks = [
        ("inputs = accepted + dead letters", s.inputs == s.accepted + s.dead_letters),
        (f"clusters/ has one row per accepted record ({run.cluster_rows:,} rows)", run.cluster_rows == s.accepted),
        (f"dead_letter/ has {run.dead_letter_rows:,} rows", run.dead_letter_rows == s.dead_letters),
    ]
    if run.removed_rows is not None:
        demoted = _demoted(s)
        kept_and_removed = f"kept + removed = accepted ({s.clusters:,} + {run.removed_rows:,} rows of removed/)"
        if demoted:
            kept_and_removed = (
                f"kept + removed = accepted + stored records no longer kept ({s.clusters:,} + {run.removed_rows:,} "
                f"rows of removed/ = {s.accepted:,} + {demoted:,})"
            )
        checks.append((kept_and_removed, s.clusters + run.removed_rows == s.accepted + demoted))
    check_items = "".join(
        f'<li class="{"ok" if good else "bad"}">{"✓" if good else "✗"} {escape(text)}</li>' for text, good in checks
    )
    return (
        f'<section id="summary"><h2>Summary</h2>{_figures(counts)}<dl class="run">{info}</dl>'
        f'<ul class="checks">{check_items}</ul>'
        '<p class="note">Removed: accepted records that are not the kept record (representative) of their cluster.</p>'
        f"{_time_part(s)}</section>"
    )


def _time_part(summary: Summary) -> str:
    if summary.wall_seconds is None:
        return ""
    steps = sorted((summary.step_seconds or {}).items(), key=lambda item: -item[1])
    items = [("wall time", f"{summary.wall_seconds:,.1f} s"), *((step, f"{sec:,.1f} s") for step, sec in steps)]
    return (
        f'<h3>Time</h3>{_figures(items)}<p class="caption">Wall time from start to end; per step, the time the runner '
        "measured in it, summed over workers.</p>"
    )


def _scores_section(run: RunReport) -> str:
    threshold = run.summary.threshold
    chart = histogram_svg(
        run.scores.edges,
        run.scores.counts,
        title="Semantic pair scores",
        x_label="cosine similarity",
        y_label="pairs",
        markers=[Marker(threshold, f"threshold {threshold:g}")],
    )
    semantic = int(run.scores.counts.sum())
    exact = run.summary.exact_pairs
    exact_note = f" {exact:,} exact pairs (same normalised text, score 1 by definition) are not drawn." if exact else ""
    return (
        f'<section id="scores"><h2>Pair scores</h2>{chart}<p class="caption">{semantic:,} semantic pairs in '
        f"{len(run.scores.counts)} bins; the dashed line is the run's threshold.{escape(exact_note)}</p></section>"
    )


def _sizes_section(run: RunReport) -> str:
    chart = histogram_svg(
        run.sizes.edges,
        run.sizes.counts,
        title="Cluster sizes (log scales)",
        x_label="cluster size (records; bins 1, 2-3, 4-7, ...)",
        y_label="clusters",
        x_log=True,
        y_log=True,
    )
    singletons = int(run.sizes.counts[0]) if run.sizes.counts.size else 0
    total = int(run.sizes.counts.sum())
    return (
        f'<section id="cluster-sizes"><h2>Cluster sizes</h2>{chart}<p class="caption">{total:,} clusters, '
        f"{singletons:,} of them single records; both axes are logarithmic.</p></section>"
    )


def _member_row(member: ClusterMember, texts_looked_up: bool) -> str:
    badge = ' <span class="badge">representative</span>' if member.is_representative else ""
    link = member.link
    link_cell = f"{escape(link.other)} ({link.score:.3f}, {escape(link.kind)})" if link else "—"
    text = _text_cell(member.text, texts_looked_up)
    return f"<tr><td>{escape(member.id)}{badge}</td>{text}<td>{link_cell}</td></tr>"


def _text_cell(text: str | None, texts_looked_up: bool) -> str:
    if text is not None:
        return f'<td class="text">{escape(_clip(text))}</td>'
    return '<td class="note">not found in --input</td>' if texts_looked_up else '<td class="note">—</td>'


def _clusters_section(run: RunReport) -> str:
    if run.texts_looked_up:
        note = "Texts are looked up by id in the --input files."
    else:
        note = (
            "semsim's outputs store ids, not texts: run <code>semsim report OUT_DIR --input GLOB</code> with the batch "
            "run's input to show them."
        )
    parts = [
        '<section id="largest-clusters"><h2>Largest clusters</h2>',
        f'<p class="note">The representative and other members spread evenly over the id order; "strongest pair" is '
        f"the member's highest-scoring pair (other id, score, kind). {note}</p>",
    ]
    for cluster in run.largest:
        rows = "".join(_member_row(m, run.texts_looked_up) for m in cluster.members)
        shown = len(cluster.members)
        parts.append(
            f'<div class="cluster"><h3>{escape(cluster.cluster_id)}: {cluster.size:,} records '
            f'<span class="note">({shown} shown)</span></h3><table class="examples"><thead><tr><th>id</th>'
            f"<th>text</th><th>strongest pair</th></tr></thead><tbody>{rows}</tbody></table></div>"
        )
    if not run.largest:
        parts.append('<p class="note">No cluster has more than one record.</p>')
    return "".join(parts) + "</section>"


def _demoted(summary: Summary) -> int:
    """Stored records a --history run replaced as kept (they are in its removed/ too)."""
    return summary.history.demoted if summary.history else 0


def _removals_section(run: RunReport) -> str:
    if run.removed_rows is None:
        return ""
    demoted = _demoted(run.summary)
    own = run.removed_rows - demoted
    share = own / run.summary.accepted if run.summary.accepted else 0.0
    replaced = f", and {demoted:,} stored records that earlier runs kept are kept no longer" if demoted else ""
    head = (
        f'<section id="removed"><h2>Removed records</h2><p class="note">{own:,} of '
        f"{run.summary.accepted:,} accepted records ({share:.1%}) were removed{replaced}, each in favour of its "
        f"cluster's kept record (--keep {escape(run.summary.keep)}). Examples spread over the scores, strongest first; "
        '"via" is the chain of pairs when the two records are not a pair themselves.</p>'
    )
    if not run.removals:
        return head + '<p class="note">Nothing was removed.</p></section>'
    rows = []
    for r in run.removals:
        score = "—" if r.score is None else f"{r.score:.3f}"
        via = escape(" ~ ".join(r.via)) if len(r.via) > 2 else ""
        rows.append(
            f"<tr><td>{escape(r.kept_id)}</td>{_text_cell(r.kept_text, run.texts_looked_up)}<td>{escape(r.id)}</td>"
            f'{_text_cell(r.text, run.texts_looked_up)}<td class="num">{score}</td><td>{escape(r.kind)}</td>'
            f"<td>{via}</td></tr>"
        )
    return (
        f'{head}<table class="removals"><thead><tr><th>kept</th><th>kept text</th><th>removed</th>'
        '<th>removed text</th><th class="num">score</th><th>kind</th><th>via</th></tr></thead>'
        f"<tbody>{''.join(rows)}</tbody></table></section>"
    )


def _dead_letters_section(run: RunReport) -> str:
    if not run.reasons:
        return '<section id="dead-letters"><h2>Dead letters</h2><p class="note">No rejected inputs.</p></section>'
    chart = bar_list_svg(
        [r.reason for r in run.reasons],
        [r.count for r in run.reasons],
        title="Dead letters by reason",
        x_label="inputs",
    )
    rows = "".join(
        f'<tr><td>{escape(r.reason)}</td><td class="num">{r.count:,}</td><td>{escape(r.source)}</td>'
        f'<td class="raw">{escape(r.raw)}</td><td>{escape(r.error)}</td></tr>'
        for r in run.reasons
    )
    return (
        f'<section id="dead-letters"><h2>Dead letters</h2>{chart}<table class="reasons"><thead><tr><th>reason</th>'
        f'<th class="num">count</th><th>first example</th><th>raw input</th><th>error</th></tr></thead>'
        f"<tbody>{rows}</tbody></table></section>"
    )


def _recall_part(summary: Summary) -> str:
    recall = summary.recall
    if recall is None:
        return '<p class="note">Pair recall was not measured (<code>semsim batch --recall-sample N</code>).</p>'
    items = [("pair recall", f"{recall.recall:.4f}")]
    if summary.target_recall is not None:
        items.append(("target", f"{summary.target_recall:g}"))
    items += [("queries", fmt(recall.queries)), ("true pairs", fmt(recall.true_pairs)), ("found", fmt(recall.found))]
    if summary.cell_margin is not None:
        items.append(("cell margin", f"{summary.cell_margin:.4f}"))
    shortfall = recall_shortfall(summary)
    warning = f'<p class="bad">{escape(shortfall)}</p>' if shortfall else ""
    return (
        f'{_figures(items)}{warning}<p class="caption">Share of the true pairs (by brute force) of the sampled query '
        "vectors that the cell partition found.</p>"
    )


def _calibration_part(calibration: Calibration, threshold: float) -> str:
    name = escape(calibration.name)
    if calibration.error:
        return f'<p class="bad">{name}: {escape(calibration.error)}</p>'
    c = calibration.columns
    markers = [Marker(threshold, f"run threshold {threshold:g}")]
    captions = []
    if c["threshold"].size and np.isfinite(c["f1"]).any():
        best = best_f1_index(c["f1"])
        markers.append(Marker(float(c["threshold"][best]), f"best F1 {c['f1'][best]:.3f}"))
        captions.append(
            f"best F1 {c['f1'][best]:.3f} at threshold {c['threshold'][best]:g} "
            f"(precision {c['precision'][best]:.3f}, recall {c['recall'][best]:.3f})"
        )
    if c["threshold"].size:
        near = int(np.argmin(np.abs(c["threshold"] - threshold)))
        predicted = c.get("predicted_positive")
        known = predicted is not None and np.isfinite(predicted[near])
        extra = f", {fmt(predicted[near])} predicted positive" if known else ""
        captions.append(
            f"at threshold {c['threshold'][near]:g}: precision {c['precision'][near]:.3f}, recall "
            f"{c['recall'][near]:.3f}, F1 {c['f1'][near]:.3f}{extra}"
        )
    chart = calibration_svg(
        c["threshold"],
        c["precision"],
        c["recall"],
        c["f1"],
        title=f"Calibration: {calibration.name}",
        markers=markers,
    )
    return f'<div class="calibration">{chart}<p class="caption">{name}: {escape("; ".join(captions))}.</p></div>'


def _quality_section(run: RunReport) -> str:
    threshold = run.summary.threshold
    calibrations = "".join(_calibration_part(c, threshold) for c in run.calibrations) or (
        '<p class="note">No calibration curve (a <code>*calibration*.csv</code> in the output folder, as written by '
        "<code>semsim calibrate</code>).</p>"
    )
    return f'<section id="quality"><h2>Recall and calibration</h2>{_recall_part(run.summary)}{calibrations}</section>'


def render_html(run: RunReport) -> str:
    """The report as one HTML page: no script, no external resource (a CSP forbids both), inline SVG charts."""
    title = escape(f"semsim report: {run.out_dir}")
    sections = (
        _summary_section, _scores_section, _sizes_section, _clusters_section, _removals_section,
        _dead_letters_section,
    )  # fmt: skip
    body = "".join(section(run) for section in sections) + _quality_section(run)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{STYLE}</style></head>"
        f'<body><h1>semsim report</h1><p class="note">{escape(run.out_dir)}</p>{body}</body></html>\n'
    )
