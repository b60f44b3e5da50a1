"""Line charts and heat maps written as inline SVG text, for the run report.

Why not matplotlib here: every ``deepstrata fit`` ends by writing its report, and on the 2-core
development machine importing matplotlib alone takes 0.6 s (``benchmarks/fit_fixed_costs.py``),
drawing and encoding the two PNG figures about as long again. These charts need axes,
ticks, lines and labelled cells, which are a few hundred characters of SVG each: drawn in
milliseconds, sharp at any zoom, their numbers selectable. Pages that draw images
(activation maps, inspection grids) keep matplotlib.

The SVG is inline (HTML5 needs no namespace, so the page holds no URL) and every text goes
through ``esc``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from deepstrata.report_html import esc

# matplotlib's tab10, so the charts keep the colours the PNG figures had.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
FONT = 'font-family="system-ui, -apple-system, Segoe UI, sans-serif"'

# One panel: 420 x 330 px, as the 4.2 x 3.3 inch figures at 100 dpi were.
WIDTH, HEIGHT = 420, 330
LEFT, RIGHT, TOP, BOTTOM = 62, 14, 30, 46


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """Round tick values covering [lo, hi], about ``count`` of them, steps of 1, 2, 2.5 or 5 times a power of ten."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def tick_label(value: float, step: float) -> str:
    """``value`` with as many decimals as the tick step needs (0.25 steps get two)."""
    if value == 0:
        return "0"
    if abs(value) >= 1e5 or abs(value) < 1e-3:
        return f"{value:.1e}".replace("e-0", "e-").replace("e+0", "e")
    decimals = 0 if step >= 1 and float(step).is_integer() else max(0, -math.floor(math.log10(step)) + 1)
    text = f"{value:.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Powers of ten inside [10^lo, 10^hi]; with fewer than two of them, 1-2-5 steps."""
    powers = [10.0 ** k for k in range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1)]
    if len(powers) >= 2:
        return powers
    return [m * 10.0 ** k for k in range(math.floor(lo) - 1, math.ceil(hi) + 1) for m in (1, 2, 5)
            if lo - 1e-9 <= math.log10(m * 10.0 ** k) <= hi + 1e-9]


def _padded(lo: float, hi: float) -> tuple[float, float]:
    """The data range with 5% margins (matplotlib's default); a flat series gets a unit-sized window."""
    if hi == lo:
        half = abs(lo) * 0.05 or 0.5
        return lo - half, hi + half
    margin = (hi - lo) * 0.05
    return lo - margin, hi + margin


def line_chart(title: str, lines: Sequence[tuple[str, Sequence[float], Sequence[float]]], xlabel: str,
               *, log_y: bool = False, legend: bool = True) -> str:
    """One panel of ``lines`` (label, xs, ys): markers up to 30 points a line, the legend in the emptiest corner."""
    xs_all = [x for _, xs, _ in lines for x in xs]
    ys_all = [y for _, _, ys in lines for y in ys]
    if log_y:
        ys_all = [math.log10(y) for y in ys_all]
    x_lo, x_hi = _padded(min(xs_all), max(xs_all))
    y_lo, y_hi = _padded(min(ys_all), max(ys_all))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + (x - x_lo) / (x_hi - x_lo) * plot_w

    def py(y: float) -> float:
        value = math.log10(y) if log_y else y
        return TOP + (y_hi - value) / (y_hi - y_lo) * plot_h

    parts = [f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/>']
    integer_x = all(float(x).is_integer() for x in xs_all)
    x_ticks = nice_ticks(min(xs_all), max(xs_all), 6, integer=integer_x) if max(xs_all) > min(xs_all) \
        else [xs_all[0]]
    x_step = x_ticks[1] - x_ticks[0] if len(x_ticks) > 1 else 1.0
    for x in x_ticks:
        parts.append(f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" stroke="#ddd"/>'
                     f'<text x="{px(x):.1f}" y="{TOP + plot_h + 16}" text-anchor="middle">'
                     f'{esc(tick_label(x, x_step))}</text>')
    if log_y:
        y_ticks = _log_ticks(y_lo, y_hi)
        y_labels = [f"{t:g}" for t in y_ticks]
    else:
        y_ticks = nice_ticks(y_lo, y_hi, 6)
        y_step = y_ticks[1] - y_ticks[0] if len(y_ticks) > 1 else abs(y_ticks[0]) or 1.0
        y_labels = [tick_label(t, y_step) for t in y_ticks]
    for y, label in zip(y_ticks, y_labels):
        parts.append(f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" stroke="#ddd"/>'
                     f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{esc(label)}</text>')
    points_px: list[tuple[float, float]] = []
    for i, (label, xs, ys) in enumerate(lines):
        color = PALETTE[i % len(PALETTE)]
        coords = [(px(x), py(y)) for x, y in zip(xs, ys)]
        points_px.extend(coords)
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.6">'
                     f'<title>{esc(label)}</title></polyline>')
        if len(xs) <= 30:
            parts.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.6" fill="{color}"/>' for x, y in coords)
    if legend:
        parts.append(_legend([label for label, _, _ in lines], points_px, plot_w, plot_h))
    parts.append(f'<text x="{LEFT + plot_w / 2:.1f}" y="{TOP - 10}" text-anchor="middle" font-size="14">'
                 f'{esc(title)}</text>'
                 f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" text-anchor="middle">{esc(xlabel)}</text>')
    return (f'<svg role="img" aria-label="{esc(title)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
            f'height="{HEIGHT}" {FONT} font-size="11" fill="#1d1d1f">{"".join(parts)}</svg>')


def _legend(labels: Sequence[str], points: Sequence[tuple[float, float]], plot_w: float, plot_h: float) -> str:
    """A boxed key in whichever inner corner of the plot covers the fewest data points."""
    box_w = 24 + 6.5 * max(len(label) for label in labels)
    box_h = 8 + 16 * len(labels)
    corners = [(LEFT + plot_w - box_w - 6, TOP + 6), (LEFT + plot_w - box_w - 6, TOP + plot_h - box_h - 6),
               (LEFT + 6, TOP + 6), (LEFT + 6, TOP + plot_h - box_h - 6)]  # upper right first, as matplotlib
    x0, y0 = min(corners, key=lambda c: sum(c[0] <= x <= c[0] + box_w and c[1] <= y <= c[1] + box_h
                                            for x, y in points))
    parts = [f'<rect x="{x0:.1f}" y="{y0:.1f}" width="{box_w:.1f}" height="{box_h}" fill="#fff" '
             f'fill-opacity="0.85" stroke="#ccc"/>']
    for i, label in enumerate(labels):
        y = y0 + 12 + 16 * i
        parts.append(f'<line x1="{x0 + 6:.1f}" y1="{y:.1f}" x2="{x0 + 20:.1f}" y2="{y:.1f}" '
                     f'stroke="{PALETTE[i % len(PALETTE)]}" stroke-width="2"/>'
                     f'<text x="{x0 + 24:.1f}" y="{y + 4:.1f}">{esc(label)}</text>')
    return "".join(parts)


BLUES = ((247, 251, 255), (8, 48, 107))
"""The end points of matplotlib's Blues, white to dark blue: the heat map's colours, between them linearly."""


def blues(rate: float) -> str:
    """A colour from white to dark blue for ``rate`` in [0, 1]."""
    rate = min(1.0, max(0.0, rate))
    return "#" + "".join(f"{round(a + (b - a) * rate):02x}" for a, b in zip(*BLUES))


def count_text(count: float) -> str:
    """A cell's count: a whole number in full (1234567, not 1.23457e+06), anything else as ``g``."""
    return f"{count:.0f}" if float(count).is_integer() else f"{count:g}"


RASTER_ABOVE = 60
"""Above this many classes the cells are one embedded PNG (one pixel each, scaled up), not n² SVG rectangles."""


def _raster(rates: Sequence[Sequence[float]], left: float, top: float, side: float) -> str:
    """The grid as an n x n PNG (PIL, a dependency already) drawn over ``side`` px with sharp pixels."""
    import base64
    import io

    import numpy as np
    from PIL import Image

    light, dark = (np.array(end, np.float64) for end in BLUES)
    values = np.clip(np.asarray(rates, np.float64), 0.0, 1.0)[..., None]
    pixels = np.round(light + (dark - light) * values).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return (f'<image x="{left:.1f}" y="{top:.1f}" width="{side:.1f}" height="{side:.1f}" preserveAspectRatio="none" '
            f'style="image-rendering: pixelated" href="data:image/png;base64,{data}"/>')


def heat_map(classes: Sequence[str], counts: Sequence[Sequence[float]], rates: Sequence[Sequence[float]],
             *, xlabel: str, ylabel: str, scale_label: str) -> str:
    """A square grid coloured by ``rates`` (0..1); counts printed up to 20 classes, names up to 40, a colour key.

    Up to ``RASTER_ABOVE`` classes each cell is a rectangle with its counts as a tooltip; beyond,
    the grid is one PNG of a pixel per cell, so a 1,000-class matrix is one image of some tens to
    hundreds of kilobytes (about 100 kB with ten confusions a row), not a million elements.
    """
    n = len(classes)
    cell = max(6.0, min(34.0, 520.0 / n)) if n <= RASTER_ABOVE else 640.0 / n
    labels = [str(c) for c in classes] if n <= 40 else []
    margin = 24 + (min(12, max((len(label) for label in labels), default=0)) * 6.5 if labels else 0)
    left, top = 30 + margin, 10
    side = cell * n
    bar_x = left + side + 16
    width, height = bar_x + 70, top + side + 0.75 * margin + 30
    parts = [_raster(rates, left, top, side)] if n > RASTER_ABOVE else []
    for i in range(n if n <= RASTER_ABOVE else 0):
        for j in range(n):
            rate, count = rates[i][j], counts[i][j]
            x, y = left + j * cell, top + i * cell
            tip = f"true {classes[i]}, predicted {classes[j]}: {count_text(count)} ({rate:.1%} of true {classes[i]})"
            parts.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{cell:.1f}" height="{cell:.1f}" '
                         f'fill="{blues(rate)}"><title>{esc(tip)}</title></rect>')
            if n <= 20 and count:
                color = "#fff" if rate > 0.5 else "#1d1d1f"
                parts.append(f'<text x="{x + cell / 2:.1f}" y="{y + cell / 2 + 4:.1f}" text-anchor="middle" '
                             f'fill="{color}">{count_text(count)}</text>')
    slanted = bool(labels) and max(len(name) for name in labels) > 2  # long names slant, as the PNG figure had
    for k, label in enumerate(labels):
        short = label if len(label) <= 12 else label[:11] + "…"
        centre = left + k * cell + cell / 2
        parts.append(f'<text x="{left - 5:.1f}" y="{top + k * cell + cell / 2 + 4:.1f}" text-anchor="end">'
                     f'{esc(short)}</text>')
        if slanted:
            parts.append(f'<text transform="translate({centre:.1f},{top + side + 10:.1f}) rotate(-45)" '
                         f'text-anchor="end">{esc(short)}</text>')
        else:
            parts.append(f'<text x="{centre:.1f}" y="{top + side + 15:.1f}" text-anchor="middle">{esc(short)}</text>')
    steps = 10
    for s in range(steps):
        rate = 1 - (s + 0.5) / steps
        parts.append(f'<rect x="{bar_x}" y="{top + s * side / steps:.1f}" width="14" height="{side / steps + 0.5:.1f}" '
                     f'fill="{blues(rate)}"/>')
    parts.append(f'<rect x="{bar_x}" y="{top}" width="14" height="{side:.1f}" fill="none" stroke="#999"/>'
                 f'<text x="{bar_x + 18}" y="{top + 8}">1.0</text>'
                 f'<text x="{bar_x + 18}" y="{top + side / 2 + 4:.1f}">0.5</text>'
                 f'<text x="{bar_x + 18}" y="{top + side:.1f}">0</text>'
                 f'<text transform="translate({bar_x + 58},{top + side / 2:.1f}) rotate(90)" text-anchor="middle">'
                 f'{esc(scale_label)}</text>'
                 f'<text x="{left + side / 2:.1f}" y="{height - 6:.1f}" text-anchor="middle">{esc(xlabel)}</text>'
                 f'<text transform="translate(12,{top + side / 2:.1f}) rotate(-90)" text-anchor="middle">'
                 f'{esc(ylabel)}</text>')
    return (f'<svg role="img" aria-label="confusion matrix" viewBox="0 0 {width:.0f} {height:.0f}" '
            f'width="{width:.0f}" height="{height:.0f}" {FONT} font-size="11" fill="#1d1d1f">{"".join(parts)}</svg>')
