"""The report's SVG charts: hand-computed ticks and colours, positions that follow the data, escaped text."""

import re

import pytest

from deepstrata.report_svg import HEIGHT, LEFT, TOP, WIDTH, blues, heat_map, line_chart, nice_ticks, tick_label


def test_nice_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.0, 1.0) == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    assert nice_ticks(0.93, 1.0) == pytest.approx([0.94, 0.96, 0.98, 1.0])
    assert nice_ticks(1, 22, 6) == pytest.approx([5, 10, 15, 20])
    assert nice_ticks(1, 3, 6, integer=True) == [1, 2, 3]  # one- to three-epoch runs: no 1.5 ticks
    assert nice_ticks(2.0, 2.0) == [2.0]


def test_tick_labels_carry_the_decimals_their_step_needs():
    assert [tick_label(v, 0.25) for v in (0.0, 0.25, 0.5)] == ["0", "0.25", "0.5"]
    assert tick_label(20.0, 5.0) == "20"
    assert tick_label(0.96, 0.02) == "0.96"
    assert tick_label(0.0003, 0.0001) == "3.0e-4"


def test_blues_runs_from_white_to_dark_blue():
    assert blues(0.0) == "#f7fbff" and blues(1.0) == "#08306b"
    assert blues(-1.0) == blues(0.0) and blues(2.0) == blues(1.0)


def _coords(svg: str, name: str) -> list[tuple[float, float]]:
    points = re.search(r'<polyline points="([^"]+)"[^>]*><title>' + name + "</title>", svg).group(1)
    return [tuple(map(float, p.split(","))) for p in points.split()]


def test_line_chart_maps_data_to_the_plot_box_and_keeps_the_legend_off_the_lines():
    xs = [1, 2, 3, 4, 5]
    svg = line_chart("loss", [("train_loss", xs, [2.0, 1.0, 0.6, 0.5, 0.45]),
                              ("val_loss", xs, [2.1, 1.2, 0.8, 0.7, 0.7])], "epoch")
    train = _coords(svg, "train_loss")
    assert [x for x, _ in train] == sorted(x for x, _ in train)
    assert all(LEFT <= x <= WIDTH and TOP <= y <= HEIGHT for x, y in train)
    assert train[0][1] < train[-1][1]  # a falling loss is drawn falling (SVG y grows downwards)
    assert svg.count("<circle") == 10  # markers: five points per line
    # Falling curves leave the upper right empty; rising ones the lower right.
    assert _legend_corner(svg) == ("right", "upper")
    rising = line_chart("validation metrics", [("val_accuracy", xs, [0.5, 0.8, 0.9, 0.95, 0.97]),
                                               ("val_macro_f1", xs, [0.45, 0.78, 0.9, 0.94, 0.97])], "epoch")
    assert _legend_corner(rising) == ("right", "lower")


def _legend_corner(svg: str) -> tuple[str, str]:
    x, y = map(float, re.search(r'<rect x="([\d.]+)" y="([\d.]+)"[^>]*fill-opacity', svg).groups())
    return ("right" if x > WIDTH / 2 else "left"), ("upper" if y < HEIGHT / 2 else "lower")


def test_line_chart_log_scale_and_no_markers_for_long_series():
    xs = list(range(1, 41))
    svg = line_chart("learning rate", [("lr", xs, [10.0 ** (-1 - i / 13) for i in range(40)])], "epoch",
                     log_y=True, legend=False)
    ticks = re.findall(r'y="([\d.]+)" text-anchor="end">([^<]+)</text>', svg)
    assert [label for _, label in ticks] == ["0.0001", "0.001", "0.01", "0.1"]  # the powers of ten in range
    heights = [float(y) for y, _ in ticks]
    assert heights == sorted(heights, reverse=True)  # larger rates higher up
    assert max(b - a for a, b in zip(heights[1:], heights)) - min(b - a for a, b in zip(heights[1:], heights)) < 0.5
    assert "<circle" not in svg and "fill-opacity" not in svg


def test_heat_map_prints_counts_names_and_escapes_them():
    classes = ["cat", "<dog>"]
    svg = heat_map(classes, [[9, 1], [0, 5]], [[0.9, 0.1], [0.0, 1.0]], xlabel="predicted", ylabel="true",
                   scale_label="fraction of true class")
    assert "&lt;dog&gt;" in svg and "<dog>" not in svg
    cells = re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)" height="[\d.]+" '
                       r'fill="(#[0-9a-f]{6})"><title>', svg)
    assert [colour for _, colour in cells] == [blues(0.9), blues(0.1), blues(0.0), blues(1.0)]
    counts = re.findall(r'fill="(#fff|#1d1d1f)">(\d+)</text>', svg)
    assert counts == [("#fff", "9"), ("#1d1d1f", "1"), ("#fff", "5")]  # zero cells stay blank
    assert "true &lt;dog&gt;, predicted cat: 0 (0.0% of true &lt;dog&gt;)" in svg
    assert "http" not in svg  # inline SVG needs no namespace URL


def test_large_counts_are_printed_in_full():
    svg = heat_map(["a", "b"], [[1234567.0, 3.0], [0.0, 2.5]], [[1.0, 0.0], [0.0, 1.0]], xlabel="predicted",
                   ylabel="true", scale_label="fraction of true class")
    assert ">1234567</text>" in svg and "predicted a: 1234567 (" in svg and "e+06" not in svg
    assert ">3</text>" in svg and ">2.5</text>" in svg


def test_a_thousand_class_matrix_is_one_small_image():
    n = 1000
    counts = [[5.0 if i == j else 0.0 for j in range(n)] for i in range(n)]
    svg = heat_map([str(i) for i in range(n)], counts, [[c / 5.0 for c in row] for row in counts], xlabel="predicted",
                   ylabel="true", scale_label="fraction of true class")
    assert svg.count("<image ") == 1 and "<title>" not in svg
    assert len(svg) < 100_000
    assert float(re.search(r'<svg [^>]*width="(\d+)"', svg).group(1)) < 900  # drawn 640 px wide, not 6,000
