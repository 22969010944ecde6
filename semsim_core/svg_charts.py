"""Self-contained SVG charts (no JavaScript, no fonts, no external files): histograms, horizontal bars, line charts,
and the calibration curve built on them.

Every chart has a title, axes with ticks and tick labels, and axis labels; all text is HTML-escaped, so the SVG can be
inlined in an HTML page as is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

import numpy as np

WIDTH, HEIGHT = 680, 320
TOP, RIGHT, BOTTOM, LEFT = 40, 24, 52, 72
COLORS = ("#3b6fb6", "#d9822b", "#2e9e5b", "#8e44ad")
MARKER_COLORS = ("#c0392b", "#16a085")
ROW = 22  # height of one bar in a horizontal bar chart


@dataclass(frozen=True)
class Marker:
    """A labelled vertical line at data value ``x`` (a threshold, say)."""

    x: float
    label: str


@dataclass(frozen=True)
class Scale:
    """Maps data values in ``[lo, hi]`` to pixels in ``[start, end]``, linearly or on a base-10 log scale; a ``whole``
    scale (counts) has ticks at whole numbers only."""

    lo: float
    hi: float
    start: float
    end: float
    log: bool = False
    whole: bool = False

    def __call__(self, value: float) -> float:
        lo, hi, v = self.lo, self.hi, value
        if self.log:
            lo, hi, v = math.log10(lo), math.log10(hi), math.log10(v)
        return self.start + (v - lo) / (hi - lo) * (self.end - self.start)

    def ticks(self) -> list[float]:
        """Tick values inside the domain."""
        ticks = log_ticks(self.lo, self.hi) if self.log else linear_ticks(self.lo, self.hi)
        return [t for t in ticks if float(t).is_integer()] if self.whole else ticks


def linear_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round values 1, 2 or 5 times a power of ten apart inside ``[lo, hi]``, about ``target`` of them."""
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / target
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw * (1 - 1e-9))
    digits = max(0, -math.floor(math.log10(step)))
    first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
    return [round(k * step, digits) for k in range(first, last + 1)]


def log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside ``[lo, hi]``, with 2 and 5 times them added when that leaves fewer than three."""
    exponents = range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
    ticks: list[float] = []
    for mantissas in ((1,), (1, 2, 5)):
        ticks = [m * 10.0**e for e in exponents for m in mantissas if lo <= m * 10.0**e <= hi * (1 + 1e-9)]
        if len(ticks) >= 3:
            break
    return ticks


def fmt(value: float) -> str:
    """A short number label: thousands separators for whole numbers, three significant digits otherwise."""
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    return f"{value:.3g}"


def _svg(title: str, height: int, body: list[str]) -> str:
    label = escape(title)
    return "\n".join(
        [
            f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" aria-label="{label}" '
            f'viewBox="0 0 {WIDTH} {height}" width="{WIDTH}" height="{height}" '
            'font-family="sans-serif" font-size="11">',
            f"<title>{label}</title>",
            f'<text class="chart-title" x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14" '
            f'font-weight="bold">{label}</text>',
            *body,
            "</svg>",
        ]
    )


def _x_axis(x: Scale, bottom: float, top: float, label: str) -> list[str]:
    parts = [f'<line class="axis" x1="{x.start}" x2="{x.end}" y1="{bottom}" y2="{bottom}" stroke="#333"/>']
    for tick in x.ticks():
        px = x(tick)
        parts.append(f'<line class="grid" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" stroke="#ececec"/>')
        parts.append(f'<line class="tick" x1="{px:.1f}" x2="{px:.1f}" y1="{bottom}" y2="{bottom + 5}" stroke="#333"/>')
        parts.append(f'<text class="tick-label" x="{px:.1f}" y="{bottom + 17}" text-anchor="middle">{fmt(tick)}</text>')
    middle = (x.start + x.end) / 2
    parts.append(f'<text class="axis-label" x="{middle}" y="{bottom + 38}" text-anchor="middle">{escape(label)}</text>')
    return parts


def _y_axis(y: Scale, left: float, right: float, label: str) -> list[str]:
    parts = [f'<line class="axis" x1="{left}" x2="{left}" y1="{y.start}" y2="{y.end}" stroke="#333"/>']
    for tick in y.ticks():
        py = y(tick)
        parts.append(f'<line class="grid" x1="{left}" x2="{right}" y1="{py:.1f}" y2="{py:.1f}" stroke="#ececec"/>')
        parts.append(f'<line class="tick" x1="{left - 5}" x2="{left}" y1="{py:.1f}" y2="{py:.1f}" stroke="#333"/>')
        parts.append(f'<text class="tick-label" x="{left - 8}" y="{py + 4:.1f}" text-anchor="end">{fmt(tick)}</text>')
    middle = (y.start + y.end) / 2
    parts.append(
        f'<text class="axis-label" x="16" y="{middle}" text-anchor="middle" '
        f'transform="rotate(-90 16 {middle})">{escape(label)}</text>'
    )
    return parts


def _markers(markers: Sequence[Marker], x: Scale, top: float, bottom: float) -> list[str]:
    parts = []
    for k, marker in enumerate(m for m in markers if x.lo <= m.x <= x.hi):
        px, color = x(marker.x), MARKER_COLORS[k % len(MARKER_COLORS)]
        anchor = "end" if px > (x.start + x.end) / 2 else "start"
        dx = -4 if anchor == "end" else 4
        parts.append(
            f'<line class="marker" x1="{px:.1f}" x2="{px:.1f}" y1="{top}" y2="{bottom}" stroke="{color}" '
            f'stroke-width="2" stroke-dasharray="6 3"/>'
        )
        parts.append(
            f'<text class="marker-label" x="{px + dx:.1f}" y="{top + 12 + 14 * k}" text-anchor="{anchor}" '
            f'fill="{color}">{escape(marker.label)}</text>'
        )
    return parts


def _no_data(top: float, bottom: float) -> str:
    middle = (top + bottom) / 2
    return f'<text class="no-data" x="{WIDTH / 2}" y="{middle}" text-anchor="middle" fill="#888">no data</text>'


def histogram_svg(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    title: str,
    x_label: str,
    y_label: str = "count",
    x_log: bool = False,
    y_log: bool = False,
    markers: Sequence[Marker] = (),
) -> str:
    """A histogram: one ``rect.bar`` per non-empty bin ``[edges[i], edges[i + 1])``; either axis may be log-scaled."""
    edges, counts = np.asarray(edges, dtype=np.float64), np.asarray(counts, dtype=np.int64)
    bottom, top = HEIGHT - BOTTOM, TOP
    largest = max(int(counts.max(initial=0)), 1)
    x = Scale(float(edges[0]), float(edges[-1]), LEFT, WIDTH - RIGHT, x_log)
    y = (
        Scale(0.5, largest * 2.0, bottom, top, log=True)
        if y_log
        else Scale(0.0, largest * 1.08, bottom, top, whole=True)
    )
    body = _y_axis(y, LEFT, WIDTH - RIGHT, y_label) + _x_axis(x, bottom, top, x_label)
    for lo, hi, count in zip(edges[:-1], edges[1:], counts, strict=True):
        if count <= 0:
            continue
        x0, x1, py = x(lo), x(hi), y(count)
        body.append(
            f'<rect class="bar" x="{x0 + 0.5:.1f}" y="{py:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" '
            f'height="{bottom - py:.1f}" fill="{COLORS[0]}"><title>[{fmt(lo)}, {fmt(hi)}): {count:,}</title></rect>'
        )
    if not counts.any():
        body.append(_no_data(top, bottom))
    return _svg(title, HEIGHT, body + _markers(markers, x, top, bottom))


def bar_list_svg(labels: Sequence[str], values: Sequence[int], *, title: str, x_label: str) -> str:
    """Horizontal bars, one ``rect.bar`` per label, top to bottom in the given order, each with its value."""
    left, label_chars = 280, 44
    height = TOP + max(len(labels), 1) * ROW + BOTTOM
    bottom = height - BOTTOM
    x = Scale(0.0, max(max(values, default=0), 1) * 1.15, left, WIDTH - RIGHT, whole=True)
    body = _x_axis(x, bottom, TOP, x_label)
    body.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{TOP}" y2="{bottom}" stroke="#333"/>')
    for row, (label, value) in enumerate(zip(labels, values, strict=True)):
        y0 = TOP + row * ROW
        short = label if len(label) <= label_chars else label[: label_chars - 1] + "…"
        body.append(
            f'<text class="bar-label" x="{left - 8}" y="{y0 + ROW / 2 + 4}" text-anchor="end">'
            f"<title>{escape(label)}</title>{escape(short)}</text>"
        )
        width = x(value) - left
        body.append(
            f'<rect class="bar" x="{left}" y="{y0 + 3}" width="{max(width, 1):.1f}" height="{ROW - 6}" '
            f'fill="{COLORS[1]}"><title>{escape(label)}: {value:,}</title></rect>'
        )
        body.append(f'<text class="bar-value" x="{left + width + 4:.1f}" y="{y0 + ROW / 2 + 4}">{value:,}</text>')
    if not labels:
        body.append(_no_data(TOP, bottom))
    return _svg(title, height, body)


def _path(x: Scale, y: Scale, xs: np.ndarray, ys: np.ndarray) -> str:
    """SVG path data through the finite points; a missing (NaN) value breaks the line."""
    commands, pen_down = [], False
    for vx, vy in zip(xs, ys, strict=True):
        if not (math.isfinite(vx) and math.isfinite(vy)):
            pen_down = False
            continue
        commands.append(f"{'L' if pen_down else 'M'}{x(vx):.1f},{y(vy):.1f}")
        pen_down = True
    return " ".join(commands)


def line_chart_svg(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] = (0.0, 1.0),
    markers: Sequence[Marker] = (),
) -> str:
    """Lines sharing one x axis, one ``path.series`` per named series, with a legend above the plot."""
    xs_array = np.asarray(xs, dtype=np.float64)
    finite = xs_array[np.isfinite(xs_array)]
    bottom, top = HEIGHT - BOTTOM, TOP
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    x = Scale(lo, hi if hi > lo else lo + 1.0, LEFT, WIDTH - RIGHT)
    y = Scale(y_range[0], y_range[1], bottom, top)
    body = _y_axis(y, LEFT, WIDTH - RIGHT, y_label) + _x_axis(x, bottom, top, x_label)
    for k, (name, values) in enumerate(series.items()):
        color = COLORS[k % len(COLORS)]
        data = _path(x, y, xs_array, np.asarray(values, dtype=np.float64))
        body.append(
            f'<path class="series" d="{data}" fill="none" stroke="{color}" stroke-width="2">'
            f"<title>{escape(name)}</title></path>"
        )
        legend_x, legend_y = LEFT + 120 * k, top - 8
        body.append(
            f'<line class="legend" x1="{legend_x}" x2="{legend_x + 18}" y1="{legend_y}" y2="{legend_y}" '
            f'stroke="{color}" stroke-width="3"/>'
        )
        body.append(f'<text class="legend" x="{legend_x + 24}" y="{legend_y + 4}">{escape(name)}</text>')
    if not finite.size:
        body.append(_no_data(top, bottom))
    return _svg(title, HEIGHT, body + _markers(markers, x, top, bottom))


def calibration_svg(
    thresholds: Sequence[float],
    precision: Sequence[float],
    recall: Sequence[float],
    f1: Sequence[float],
    *,
    title: str,
    markers: Sequence[Marker] = (),
) -> str:
    """A calibration curve: precision, recall and F1 (one ``path.series`` each, NaN breaks a line) against the score
    threshold, pairs with a score ``>= threshold`` predicted duplicates; as ``semsim calibrate`` and ``semsim report``
    draw it."""
    return line_chart_svg(
        thresholds,
        {"precision": precision, "recall": recall, "F1": f1},
        title=title,
        x_label="threshold (a pair scoring >= it is predicted a duplicate)",
        y_label="precision / recall / F1",
        markers=markers,
    )
