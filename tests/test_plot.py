"""The book's figure style (lib.plot): legible sizes, a perceptually uniform map colour, colour bars, wrapping grids."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from lib import plot  # noqa: E402


def test_importing_the_module_sets_the_book_style():
    assert plt.rcParams["font.size"] == plot.STYLE["font.size"] >= 10 and plt.rcParams["legend.fontsize"] >= 9


def test_a_grid_of_many_methods_wraps_into_blocks_with_one_colour_bar():
    pixels = torch.rand(2, 3, 16, 16)
    maps = {f"method {k}": torch.rand(2, 16, 16) for k in range(11)}
    fig = plot.method_grid(pixels, maps, row_titles=["a", "b"], max_columns=7)
    try:
        panels = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
        bars = [ax for ax in fig.axes if ax.get_label() == "<colorbar>"]
        assert len(panels) == 2 * 2 * 7 and len(bars) == 1  # 2 blocks of 2 images, 7 panels a row
        titles = [ax.get_title() for ax in panels if ax.get_title()]
        assert titles.count("a") == 2 and titles.count("b") == 2  # every image heads each block
        assert [t for t in titles if t.startswith("method")] == [f"method {k}" for k in range(11)]  # each method once
        overlaid = [im for ax in panels for im in ax.get_images() if im.get_cmap().name == plot.MAP_COLOURS]
        assert len(overlaid) == 2 * 11  # every map in the uniform colour map, none in jet
        assert "99th percentile" in bars[0].get_ylabel()
    finally:
        plt.close(fig)
    for bad in (1, 2.5, "3", True):
        with pytest.raises(ValueError, match="max_columns must be a whole number of at least 2"):
            plot.method_grid(pixels, maps, max_columns=bad)


@pytest.mark.parametrize("call, message", [
    (lambda p, m: plot.method_grid(p, {"a": torch.rand(2, 8, 8)}), r"maps\['a'\] must be a \(B, H, W\) = \(2, 16, 16\)"),
    (lambda p, m: plot.method_grid(p[0], m), r"pixels must be a \(B, 3, H, W\) tensor"),
    (lambda p, m: plot.method_grid(p, {"a": torch.rand(3, 16, 16)}), r"maps\['a'\] must be"),
    (lambda p, m: plot.method_grid(p, {}), "maps is empty"),
    (lambda p, m: plot.method_grid(p, m, row_titles=["one"]), "row_titles has 1 titles for 2 images"),
    (lambda p, m: plot.method_grid(p, m, percentile=150), r"percentile must be in \(0, 100\]"),
    (lambda p, m: plot.method_grid(p, {"a": torch.rand(2, 16, 16).numpy()}), r"maps\['a'\] must be"),
    (lambda p, m: plot.difference_table(torch.rand(3, 3), ["a", "b"]), "square matrix with one label per row"),
    (lambda p, m: plot.benchmark_ratios([]), "needs the rows of lib.benchmark.compare"),
    (lambda p, m: plot.significant(0.5, 0), "digits must be a whole number"),
])
def test_what_a_figure_cannot_show_is_refused_by_name(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call(torch.rand(2, 3, 16, 16), {"a": torch.rand(2, 16, 16)})


def _review_items(rows):
    """One review item per (predicted, correct, label); pixels and maps random."""
    generator = torch.Generator().manual_seed(0)
    return [{"name": f"img{k}.png", "predicted": predicted, "confidence": 0.5, "correct": correct, "label": label,
             "pixels": torch.rand(3, 8, 8, generator=generator), "map": torch.rand(8, 8, generator=generator)}
            for k, (predicted, correct, label) in enumerate(rows)]


def _rows_of(fig):
    """(heading, its colour, the titles of its overlays) for each row of a review sheet."""
    from matplotlib.colors import to_hex

    rows = []
    for subfigure in fig.subfigs[:-1]:  # the last holds the colour bar
        panels = [ax for ax in subfigure.axes if ax.get_images()]
        rows.append((subfigure._suptitle.get_text(), to_hex(subfigure._suptitle.get_color()),
                     [(ax.get_title(), to_hex(ax.title.get_color())) for ax in panels]))
    return rows


def test_review_sheet_groups_by_class_and_puts_incorrect_apart_in_red():
    items = _review_items([("tabby", True, "tabby")] * 3 + [("tabby", False, "tiger cat"), ("dog", None, None),
                                                             ("dog", False, "wolf")])
    fig = plot.review_sheet(items, per_class=2, total=64, title="sheet")
    try:
        rows = _rows_of(fig)
        assert [(heading, colour) for heading, colour, _ in rows] == [
            ("dog — incorrect (1)", "#ff0000"), ("dog — no label (1)", "#000000"),
            ("tabby — correct (2 of 3)", "#000000"), ("tabby — incorrect (1)", "#ff0000")]
        assert [len(panels) for _, _, panels in rows] == [1, 1, 2, 1]  # per_class caps the correct tabbies
        assert rows[3][2] == [("img3.png\n50%, label: tiger cat", "#ff0000")]
        assert rows[2][2][0] == ("img0.png\n50%", "#000000")  # the first of a row, in the order given
        title = fig._suptitle.get_text()
        assert title.startswith("sheet: 6 images, 2 predicted classes, 3 correct, 2 incorrect")
        assert "showing 5 of 6 (at most 2 per row and 64 in all)" in title
    finally:
        plt.close(fig)


def test_review_sheet_without_labels_has_a_row_per_class_and_a_total_taken_in_turn():
    items = _review_items([("b", None, None)] * 5 + [("a", None, None)] * 2 + [("c", None, None)])
    fig = plot.review_sheet(items, per_class=8, total=4)
    try:
        rows = _rows_of(fig)
        assert [heading for heading, _, _ in rows] == ["a (2)", "b (1 of 5)", "c (1)"]  # one per row in turn: a, b, c, a
        assert "showing 4 of 8 (at most 8 per class and 4 in all)" in fig._suptitle.get_text()
    finally:
        plt.close(fig)
    fig = plot.review_sheet(items, per_class=8, total=2)
    try:
        assert [heading for heading, _, _ in _rows_of(fig)] == ["a (1 of 2)", "b (1 of 5)"]
        assert "1 row left out: c" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


@pytest.mark.parametrize("change, message", [
    (lambda items: items[:0], "items must be a non-empty sequence"),
    (lambda items: [{k: v for k, v in items[0].items() if k != "label"}], r"items\[0\] lacks label"),
    (lambda items: [{**items[0], "correct": 1}], "must be True, False or None"),
    (lambda items: [{**items[0], "map": None}], "img0.png is shown on the sheet .* but has no pixels or map"),
])
def test_review_sheet_refuses_what_it_cannot_show(change, message):
    with pytest.raises(ValueError, match=message):
        plot.review_sheet(change(_review_items([("a", None, None)])))
    for bad in (0, 1.5, True):
        with pytest.raises(ValueError, match="per_class must be a whole number of at least 1"):
            plot.review_sheet(_review_items([("a", None, None)]), per_class=bad)
