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
