"""Figures: overlays, method grids, curves.  Plots take tensors and return a figure;
they never compute saliency.

The book's one figure style lives here, set when the module is imported (every chapter
imports it): :data:`STYLE` (fonts legible at the book's 768-px column: a 10-pt text in a
figure about 8 inches wide reads at about 9 pt), maps in :data:`MAP_COLOURS`, a perceptually
uniform colour map, with a colour bar (:func:`map_colour_bar`), and :func:`significant` for
numbers in tables.

Section-specific figures live here too, below the shared helpers, one function per
figure, each named after what it shows.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["STYLE", "MAP_COLOURS", "to_numpy_image", "overlay", "map_colour_bar", "display_scale", "method_grid", "curves",
           "line_with_interval", "review_sheet", "significant"]

#: Matplotlib settings of every figure in the book.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 10,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "figure.max_open_warning": 0,
}
plt.rcParams.update(STYLE)

#: The colour map of saliency maps: perceptually uniform and readable in grey (jet is neither).
MAP_COLOURS = "inferno"


def significant(value, digits: int = 3) -> str:
    """``value`` as a table shows it: ``digits`` significant figures (``0.0123``, ``1.23``), whole
    numbers from ``10 ** (digits - 1)`` up as integers with thousands separators (``1,234``), and
    "—" for a missing value (None or NaN)."""
    if isinstance(digits, bool) or not isinstance(digits, int) or digits < 1:
        raise ValueError(f"digits must be a whole number of at least 1, got {digits!r}")
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return "—"
    if np.ndim(value) != 0:
        raise TypeError(f"significant formats one number, got {type(value).__name__} of shape {np.shape(value)}")
    if isinstance(value, (str, bytes)):
        return str(value)
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return str(value)
    if math.isnan(number):
        return "—"
    if math.isinf(number):
        return "∞" if number > 0 else "−∞"
    if number == 0 or isinstance(value, (int, np.integer)) or abs(number) >= 10 ** (digits - 1):
        return f"{int(round(number)):,}"
    return f"{number:#.{digits}g}".rstrip(".")


def to_numpy_image(image) -> np.ndarray:
    """A PIL image or a (3, H, W) tensor of pixels in [0, 1] -> (H, W, 3) float array.

    A PIL image goes through :func:`lib.data.rgb_image` (16-bit and float images are scaled, not
    clipped; a mode it cannot read raises ``ValueError``).
    """
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().float()
        if array.dim() == 3 and array.shape[0] == 3:
            array = array.permute(1, 2, 0)
        return array.clamp(0, 1).numpy()
    from .data import rgb_image

    return np.asarray(rgb_image(image, "overlay image"), dtype=np.float32) / 255.0


def overlay(ax, image, saliency: torch.Tensor | None = None, *, alpha: float = 0.5, cmap: str = MAP_COLOURS,
            title: str | None = None):
    """Draw ``image`` with a (H, W) map on top on the axes ``ax``; returns ``ax``."""
    ax.imshow(to_numpy_image(image))
    if saliency is not None:
        ax.imshow(saliency.detach().cpu().float().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if title:
        ax.set_title(title)
    ax.set_axis_off()
    return ax


def map_colour_bar(fig, axes, label: str = "map value", cmap: str = MAP_COLOURS):
    """One colour bar for the maps in [0, 1] drawn on ``axes`` (an array or list of axes), at their right."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    axes = list(np.asarray(axes).ravel())
    bar = fig.colorbar(ScalarMappable(Normalize(0, 1), cmap), ax=axes, fraction=0.025, pad=0.01, aspect=30)
    bar.set_label(label)
    return bar


def _scaled_label(percentile: float | None) -> str:
    """The colour bar's label for maps shown as given (None) or scaled by :func:`display_scale`."""
    return "map value" + ("" if percentile is None else f" (each map over its {percentile:g}th percentile, display only)")


def display_scale(saliency: torch.Tensor, percentile: float = 99.0) -> torch.Tensor:
    """Divide a map by its ``percentile``-th value and clip to [0, 1] (display only)."""
    top = torch.quantile(saliency.detach().float().flatten(), percentile / 100.0)
    return (saliency / top).clamp(0, 1) if top > 0 else saliency


def method_grid(
    pixels: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    row_titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cell: float = 1.6,
    percentile: float | None = 99.0,
    max_columns: int = 7,
):
    """Images (rows) x methods (columns): the image, then each method's map over it, with a colour bar.

    With more than ``max_columns - 1`` methods the methods wrap into blocks of rows (every
    image again, with the next methods), so that panels stay large enough to read.

    Args:
        pixels: (B, 3, H, W) in [0, 1] (use ``Classifier.denormalize``).
        maps: method name -> (B, H, W) maps in [0, 1].
        row_titles: one label per image (class name and confidence, say).
        percentile: for display only, each map is divided by its value at this
            percentile and clipped to 1, as is usual for sparse gradient maps (their few
            extreme pixels would otherwise leave everything else dark); None shows maps as given.
        max_columns: panels per row, the image included (at least 2).

    Raises:
        ValueError: ``max_columns`` below 2.
    """
    if isinstance(max_columns, bool) or not isinstance(max_columns, int) or max_columns < 2:
        raise ValueError(f"max_columns must be a whole number of at least 2 (the image and one map), got {max_columns!r}")
    if not isinstance(pixels, torch.Tensor) or pixels.dim() != 4 or pixels.shape[1] != 3:
        raise ValueError(f"pixels must be a (B, 3, H, W) tensor, got {getattr(pixels, 'shape', type(pixels).__name__)}")
    if not maps:
        raise ValueError("maps is empty: give at least one method's (B, H, W) maps")
    for name, batch in maps.items():
        if not isinstance(batch, torch.Tensor) or tuple(batch.shape) != (pixels.shape[0], *pixels.shape[-2:]):
            raise ValueError(f"maps[{name!r}] must be a (B, H, W) = {(pixels.shape[0], *pixels.shape[-2:])} tensor like the "
                             f"pixels, got {getattr(batch, 'shape', type(batch).__name__)}")
    if row_titles is not None and len(row_titles) != pixels.shape[0]:
        raise ValueError(f"row_titles has {len(row_titles)} titles for {pixels.shape[0]} images")
    if percentile is not None and not 0 < percentile <= 100:
        raise ValueError(f"percentile must be in (0, 100] or None, got {percentile!r}")
    names = list(maps)
    per_block = max_columns - 1
    blocks = [names[i : i + per_block] for i in range(0, len(names), per_block)] or [[]]
    images, columns = pixels.shape[0], 1 + max(len(b) for b in blocks)
    fig, axes = plt.subplots(images * len(blocks), columns, figsize=(cell * columns + 0.6, cell * images * len(blocks)),
                             squeeze=False)
    for k, block in enumerate(blocks):
        for r in range(images):
            row = axes[k * images + r]
            overlay(row[0], pixels[r], title=row_titles[r] if row_titles else None)
            for c, name in enumerate(block, start=1):
                shown = maps[name][r] if percentile is None else display_scale(maps[name][r], percentile)
                overlay(row[c], pixels[r], shown, alpha=alpha, title=name if r == 0 else None)
            for ax in row[1 + len(block):]:
                ax.set_axis_off()
    fig.tight_layout()
    map_colour_bar(fig, axes[:, 1:], label=_scaled_label(percentile))
    return fig


def review_sheet(items: Sequence[Mapping], *, per_class: int = 8, total: int = 64, title: str = "Review sheet",
                 cell: float = 1.5):
    """A batch review of a classifier's explanations: overlays grouped by predicted class.

    The practitioner's check before trusting a model (saliencytutorial: look at 20-50
    explanations of each class, the wrong predictions above all): one row per predicted class
    headed by the class name, or, when the items carry labels, a row of the correct and a row
    of the incorrect predictions of each class (the incorrect heading and panel titles in red,
    each panel naming the label).  Classes are in alphabetical order, the images of a row in the
    order given.  At most ``per_class`` overlays are shown per row and ``total`` in all (taken
    one per row in turn, so every row keeps an overlay while there is room); the sheet's title
    says how many were left out, and each heading counts all of its row's images.

    Args:
        items: one mapping per explained image with keys ``name`` (the file, a str),
            ``predicted`` (the predicted class name), ``confidence`` (its probability),
            ``correct`` (True / False against the label, None without one), ``label`` (the
            label's class name, or None), ``pixels`` ((3, H, W) in [0, 1]) and ``map`` ((H, W)
            in [0, 1]).  ``pixels`` and ``map`` may be None for an image the sheet leaves out
            (beyond the first ``per_class`` of its row), so that a caller explaining a large
            folder keeps only the overlays that can be shown.
        per_class: overlays per row, at least 1.
        total: overlays on the sheet, at least 1.
        title: the sheet's title, followed by the counts.
        cell: side of one overlay in inches.

    Returns:
        The figure; its subfigures are the rows (``fig.subfigs``, the last holding the colour bar).

    Raises:
        ValueError: no items, an item without one of the keys or with ``correct`` not a bool or None, ``per_class`` or ``total``
            not a whole number >= 1, or a shown item without ``pixels`` or ``map``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    for value, name in ((per_class, "per_class"), (total, "total")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if isinstance(items, (str, bytes, Mapping)) or not isinstance(items, Sequence) or not items:
        raise ValueError("items must be a non-empty sequence of mappings, one per explained image")
    keys = ("name", "predicted", "confidence", "correct", "label", "pixels", "map")
    for k, item in enumerate(items):
        missing = [key for key in keys if not isinstance(item, Mapping) or key not in item]
        if missing:
            raise ValueError(f"items[{k}] lacks {', '.join(missing)}; each item needs the keys {', '.join(keys)}")
        if item["correct"] is not None and not isinstance(item["correct"], bool):
            raise ValueError(f"items[{k}]['correct'] must be True, False or None (no label), got {item['correct']!r}")
    labelled = any(item["correct"] is not None for item in items)
    verdicts = (True, False, None) if labelled else (None,)
    rows = []  # (class name, verdict, its items)
    for predicted in sorted({str(item["predicted"]) for item in items}):
        for verdict in verdicts:
            members = [item for item in items if str(item["predicted"]) == predicted and item["correct"] is verdict]
            if members:
                rows.append((predicted, verdict, members))
    shown = [[] for _ in rows]
    room, added = total, True
    while room and added:  # one overlay per row in turn
        added = False
        for r, (_, _, members) in enumerate(rows):
            if room and len(shown[r]) < min(per_class, len(members)):
                shown[r].append(members[len(shown[r])])
                room -= 1
                added = True
    for r, row in enumerate(shown):
        for item in row:
            if item["pixels"] is None or item["map"] is None:
                raise ValueError(f"{item['name']} is shown on the sheet (within the first {per_class} of its row) but "
                                 "has no pixels or map")
    count = sum(len(row) for row in shown)
    kinds = {True: "correct", False: "incorrect", None: "no label" if labelled else None}
    heading = f"{title}: {len(items)} images, {len({r[0] for r in rows})} predicted classes"
    if labelled:
        wrong = sum(1 for item in items if item["correct"] is False)
        heading += f", {sum(1 for item in items if item['correct'] is True)} correct, {wrong} incorrect"
    if count < len(items):
        heading += (f"\nshowing {count} of {len(items)} (at most {per_class} per {'row' if labelled else 'class'} "
                    f"and {total} in all)")
        hidden = sum(1 for row in shown if not row)
        if hidden:
            heading += f"; {hidden} {'row' if hidden == 1 else 'rows'} left out: " + ", ".join(
                f"{predicted}" + (f" ({kinds[verdict]})" if labelled else "") for (predicted, verdict, _), row in zip(rows, shown)
                if not row)
    kept = [(row, shown[r]) for r, row in enumerate(rows) if shown[r]]
    columns = max(3, max(len(row_shown) for _, row_shown in kept))  # three at least: room for the headings
    fig = plt.figure(figsize=(cell * columns + 0.4, (cell + 0.5) * len(kept) + 1.0), layout="constrained")
    fig.suptitle(heading)
    subfigures = fig.subfigures(len(kept) + 1, 1, squeeze=False, height_ratios=[cell + 0.5] * len(kept) + [0.45])[:, 0]
    for subfigure, ((predicted, verdict, members), row_shown) in zip(subfigures, kept):
        what = kinds[verdict]
        counted = f"{len(row_shown)} of {len(members)}" if len(row_shown) < len(members) else f"{len(members)}"
        subfigure.suptitle(f"{predicted}" + (f" — {what}" if what else "") + f" ({counted})", x=0.01, ha="left",
                           fontweight="bold", color="red" if verdict is False else "black")
        axes = subfigure.subplots(1, columns, squeeze=False)[0]
        for ax, item in zip(axes, row_shown):
            text = f"{item['name']}\n{float(item['confidence']):.0%}"
            if verdict is False:
                text += f", label: {item['label']}"
            overlay(ax, item["pixels"], item["map"])
            ax.set_title(text, fontsize=8, color="red" if verdict is False else "black")
        for ax in axes[len(row_shown):]:
            ax.set_axis_off()
    bar = subfigures[-1].add_axes((0.3, 0.45, 0.4, 0.25))
    subfigures[-1].colorbar(ScalarMappable(Normalize(0, 1), MAP_COLOURS), cax=bar, orientation="horizontal",
                            label="map value")
    return fig


def curves(ax, x, ys: Mapping[str, torch.Tensor], *, xlabel: str = "", ylabel: str = "", title: str | None = None):
    """One line per entry of ``ys`` over a shared ``x``; returns ``ax``."""
    x = torch.as_tensor(x).cpu().numpy()
    for label, y in ys.items():
        ax.plot(x, torch.as_tensor(y).cpu().numpy(), label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend()
    return ax


def line_with_interval(ax, frame, *, x: str, y: str, hue: str | None = None, title: str | None = None):
    """Seaborn line plot of a long-form DataFrame with 95% bootstrap bands; returns ``ax``."""
    import seaborn as sns

    sns.lineplot(data=frame, x=x, y=y, hue=hue, errorbar=("ci", 95), marker="o", ax=ax)
    if title:
        ax.set_title(title)
    return ax


# --------------------------------------------------------------------------- Group-CAM (04_groupcam_ablations)


def insertion_deletion_examples(pixels: torch.Tensor, maps: Mapping[str, torch.Tensor], insertion: Mapping[str, torch.Tensor],
                                deletion: Mapping[str, torch.Tensor], fractions, *, row_titles: Sequence[str] | None = None,
                                cell: float = 1.8):
    """Group-CAM Fig. 4 analogue: per image (rows) each method's map, then its insertion and deletion curves.

    Args:
        pixels: (B, 3, H, W) in [0, 1].
        maps, insertion, deletion: method -> (B, H, W) maps / (B, n + 1) probability curves.
        fractions: (n + 1,) fraction of pixels inserted or deleted at each point.
    """
    rows, names = pixels.shape[0], list(maps)
    columns = 1 + len(names) + 2
    fig, axes = plt.subplots(rows, columns, figsize=(cell * columns + 2.4, cell * rows), squeeze=False)
    x = torch.as_tensor(fractions).cpu().numpy()
    for r in range(rows):
        overlay(axes[r, 0], pixels[r], title=row_titles[r] if row_titles else None)
        for c, name in enumerate(names, start=1):
            overlay(axes[r, c], pixels[r], maps[name][r], title=name if r == 0 else None)
        areas = {name: [] for name in names}
        for c, (game, data) in enumerate((("insertion", insertion), ("deletion", deletion)), start=1 + len(names)):
            ax = axes[r, c]
            for k, name in enumerate(names):
                y = data[name][r].detach().cpu().numpy()
                ax.plot(x, y, color=f"C{k}")
                areas[name].append(float(np.trapezoid(y, dx=1 / (len(y) - 1))))
            ax.set_ylim(0, 1.02)
            ax.set_title(game if r == 0 else None)
            ax.set_xlabel("fraction of pixels" if r == rows - 1 else None)
        # One legend per image, outside its curves: each method's area under insertion / deletion.
        handles = [plt.Line2D([], [], color=f"C{k}") for k in range(len(names))]
        axes[r, -1].legend(handles, [f"{name}: {a[0]:.2f} / {a[1]:.2f}" for name, a in areas.items()],
                           title="AUC ins. / del.", loc="upper left", bbox_to_anchor=(1.03, 1.0), borderaxespad=0)
    fig.tight_layout()
    return fig


def ablation_lines(frame, *, x: str, log_x: bool = False, title: str | None = None):
    """Group-CAM Table 2 / Fig. 5 analogue: insertion, deletion and over-all AUC against ``x``.

    Args:
        frame: long form with columns ``x``, ``"metric"`` (insertion/deletion/over-all),
            ``"value"`` (one row per image and setting); bands are 95% bootstrap intervals.
    """
    import seaborn as sns

    metrics = list(dict.fromkeys(frame["metric"]))
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.4 * len(metrics), 2.8), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(data=frame[frame["metric"] == metric], x=x, y="value", errorbar=("ci", 95), marker="o", ax=ax)
        if log_x:
            ax.set_xscale("log", base=2)
        elif np.issubdtype(np.asarray(frame[x]).dtype, np.integer):
            ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))  # counts take whole values
        ax.set_title(metric)
        ax.set_ylabel("AUC")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return fig


def randomization_maps(pixels: torch.Tensor, rows: Mapping[str, torch.Tensor], layer_names: Sequence[str], *,
                       every: int = 1, cell: float = 1.3):
    """Group-CAM Fig. 6 analogue: one image, the trained map then the map after each randomisation step.

    Args:
        pixels: (3, H, W) image in [0, 1].
        rows: label (e.g. "cascading") -> (L + 1, H, W) maps, ``[0]`` the trained model's.
        layer_names: the L layers randomised, in order.
        every: show every ``every``-th step (the last always).
    """
    steps = sorted(set(range(1, len(layer_names) + 1, every)) | {len(layer_names)})
    columns = 2 + len(steps)
    fig, axes = plt.subplots(len(rows), columns, figsize=(cell * columns, cell * len(rows) + 0.3), squeeze=False)
    for r, (label, maps) in enumerate(rows.items()):
        overlay(axes[r, 0], pixels, title=label)
        overlay(axes[r, 1], pixels, maps[0], title="trained")
        for c, s in enumerate(steps, start=2):
            overlay(axes[r, c], pixels, maps[s], title=layer_names[s - 1])
    fig.tight_layout()
    map_colour_bar(fig, axes[:, 1:])
    return fig


# --------------------------------------------------------------------------- CAMERAS (03_cameras_lemmas)


def cameras_steps(pixels: torch.Tensor, per_scale: torch.Tensor, sizes: Sequence, kept: torch.Tensor,
                  fused: torch.Tensor, gradcam_map: torch.Tensor, *, cell: float = 1.7):
    """CAMERAS on one image (Jalwana et al. 2021, Fig. 5.1 top): each scale's map, the fused map, Grad-CAM.

    Args:
        pixels: (3, H, W) image in [0, 1].
        per_scale: (T, H, W) single-scale maps in [0, 1]; ``sizes`` their input heights and
            ``kept`` (T,) bool whether the class gate kept them.
        fused: (H, W) the CAMERAS map; gradcam_map: (H, W) Grad-CAM at the same layer.
    """
    count = per_scale.shape[0] + 3
    fig, axes = plt.subplots(1, count, figsize=(cell * count, cell * 1.15), squeeze=False)
    overlay(axes[0, 0], pixels, title="image")
    for t in range(per_scale.shape[0]):
        size = sizes[t][0] if isinstance(sizes[t], (tuple, list)) else sizes[t]
        overlay(axes[0, t + 1], pixels, per_scale[t], title=f"{size}px" + ("" if bool(kept[t]) else " (dropped)"))
    overlay(axes[0, -2], pixels, fused, title="CAMERAS")
    overlay(axes[0, -1], pixels, gradcam_map, title="Grad-CAM")
    fig.tight_layout()
    map_colour_bar(fig, axes[:, 1:])
    return fig


def difference_table(matrix: torch.Tensor, labels: Sequence, *, title: str = "", fmt: str = ".2f"):
    """Heat map of a square table (Table 5.4 analogue: Eq. 5.5 differences between settings), one label per row."""
    import seaborn as sns

    shape = tuple(torch.as_tensor(matrix).shape)
    if len(shape) != 2 or shape[0] != shape[1] or shape[0] != len(labels):
        raise ValueError(f"difference_table needs a square matrix with one label per row, got shape {shape} and {len(labels)} labels")

    fig, ax = plt.subplots(figsize=(1.1 * len(labels) + 1.8, 0.8 * len(labels) + 1.2))
    sns.heatmap(torch.as_tensor(matrix).cpu().numpy(), annot=True, fmt=fmt, xticklabels=labels, yticklabels=labels,
                cmap="viridis", ax=ax, cbar=False)
    ax.tick_params(axis="x", rotation=30)
    ax.tick_params(axis="y", rotation=0)
    ax.set_title(title)
    fig.tight_layout()
    return fig


def lemma_errors(frame, *, x: str, y: str, hue: str, panels: str):
    """One panel per value of ``panels``: relative interpolation error against ``x`` (Lemmas 5.1-5.2)."""
    import seaborn as sns

    names = list(dict.fromkeys(frame[panels]))
    fig, axes = plt.subplots(1, len(names), figsize=(4.2 * len(names), 3.2), squeeze=False)
    for ax, name in zip(axes[0], names):
        sns.lineplot(data=frame[frame[panels] == name], x=x, y=y, hue=hue, marker="o", errorbar=("ci", 95), ax=ax)
        ax.set_title(str(name))
    fig.tight_layout()
    return fig


def interpolation_metrics(gammas, values: Mapping[str, torch.Tensor], *, xlabel: str = "gamma"):
    """Metrics along the Eq. 5.6 path from CAMERAS (gamma = 0) to Grad-CAM (gamma = 1), one panel each (Fig. 5.8)."""
    fig, axes = plt.subplots(1, len(values), figsize=(3.6 * len(values), 3.0), squeeze=False)
    for ax, (name, y) in zip(axes[0], values.items()):
        ax.plot(torch.as_tensor(gammas).cpu().numpy(), torch.as_tensor(y).cpu().numpy(), marker="o")
        ax.set_xlabel(xlabel)
        ax.set_title(name)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Layer combination (02_layer_combination)


def pointing_by_layer(frame, *, baseline: Mapping[str, float] | None = None, paper_baseline: Mapping[str, float] | None = None,
                      layer_order: Sequence[str] | None = None):
    """Rebuffi et al. Fig. 3 analogue: pointing accuracy per layer, one line per method, all and difficult panels.

    Args:
        frame: rows with columns ``method``, ``layer``, ``accuracy``, ``accuracy_difficult``
            (and optionally ``low``/``high``, ``low_difficult``/``high_difficult`` for error bars).
        baseline: ``{"all": value, "difficult": value}``, our centre baseline (dashed line).
        paper_baseline: the paper's centre baseline (dotted line).
        layer_order: x-axis order (default: first appearance).
    """
    layers = list(layer_order) if layer_order is not None else list(dict.fromkeys(frame["layer"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    for ax, (subset, column) in zip(axes, (("all", "accuracy"), ("difficult", "accuracy_difficult"))):
        for method, part in frame.groupby("method", sort=False):
            part = part.set_index("layer").reindex(layers)
            x = np.arange(len(layers))
            y = part[column].to_numpy(dtype=float) * 100
            low_col, high_col = ("low", "high") if subset == "all" else ("low_difficult", "high_difficult")
            if low_col in part and high_col in part:
                err = np.stack([y - part[low_col].to_numpy(dtype=float) * 100, part[high_col].to_numpy(dtype=float) * 100 - y])
                ax.errorbar(x, y, yerr=np.clip(err, 0, None), marker="o", capsize=2, label=method)
            else:
                ax.plot(x, y, marker="o", label=method)
        if baseline is not None and subset in baseline:
            ax.axhline(100 * baseline[subset], color="k", ls="--", lw=1, label="centre (ours)")
        if paper_baseline is not None and subset in paper_baseline:
            ax.axhline(100 * paper_baseline[subset], color="grey", ls=":", lw=1, label="centre (paper, VOC07)")
        ax.set_xticks(np.arange(len(layers)), layers, rotation=45, ha="right")
        ax.set_title(f"{subset} ({'A' if subset == 'all' else 'D'})")
        ax.set_xlabel("layer (shallow to deep)")
    axes[0].set_ylabel("pointing accuracy (%)")
    axes[1].legend(bbox_to_anchor=(1.02, 1), loc="upper left")
    fig.tight_layout()
    return fig


def layer_weights(frame, *, title: str | None = None):
    """Rebuffi et al. Fig. 9 analogue: each scheme's normalised weight across depth (columns: layer, scheme, weight)."""
    layers = list(dict.fromkeys(frame["layer"]))
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for scheme, part in frame.groupby("scheme", sort=False):
        part = part.set_index("layer").reindex(layers)
        ax.plot(np.arange(len(layers)), part["weight"].to_numpy(dtype=float), marker="o", label=scheme)
    ax.set_xticks(np.arange(len(layers)), layers, rotation=45, ha="right")
    ax.set_ylabel("normalised weight")
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Extract & Aggregate (01_extract_aggregate)


def framework_grid(pixels: torch.Tensor, maps: Mapping[str, Mapping[str, torch.Tensor]], *, title: str | None = None,
                   cell: float = 1.6, percentile: float | None = 99.0):
    """Rebuffi et al. Fig. 15 analogue: one image, methods (rows) x layers (columns).

    Args:
        pixels: (3, H, W) image in [0, 1].
        maps: method -> layer -> (H, W) map in [0, 1].
        percentile: display scaling of each map (see :func:`display_scale`); None: as given.
    """
    methods = list(maps)
    layers = list(next(iter(maps.values())))
    fig, axes = plt.subplots(len(methods), len(layers), figsize=(cell * len(layers), cell * len(methods) + 0.3), squeeze=False)
    for r, method in enumerate(methods):
        for c, layer in enumerate(layers):
            shown = maps[method][layer]
            shown = shown if percentile is None else display_scale(shown, percentile)
            overlay(axes[r, c], pixels, shown, title=layer if r == 0 else None)
        axes[r, 0].set_axis_on()
        axes[r, 0].set_xticks([])
        axes[r, 0].set_yticks([])
        axes[r, 0].set_ylabel(method)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    map_colour_bar(fig, axes, label=_scaled_label(percentile))
    return fig


def class_sensitivity_points(frame, *, panels: str = "meta", x: str = "layer", hue: str = "method"):
    """Rebuffi et al. Figs. 6-7 analogue: Spearman(max-class map, min-class map) per layer and method.

    Args:
        frame: long-form DataFrame with columns ``spearman``, ``x``, ``hue`` and ``panels``
            (one panel per value, e.g. without / with meta-saliency); one row per image.
    Points are means with 95% bootstrap intervals; 0 (dashed) is the class-sensitive ideal.
    """
    import seaborn as sns

    values = list(dict.fromkeys(frame[panels]))
    fig, axes = plt.subplots(1, len(values), figsize=(4.2 * len(values) + 1.6, 3.6), sharey=True, squeeze=False)
    for ax, value in zip(axes[0], values):
        part = frame[frame[panels] == value]
        sns.pointplot(data=part, x=x, y="spearman", hue=hue, errorbar=("ci", 95), dodge=0.4, markersize=4,
                      linewidth=1, ax=ax, legend=ax is axes[0, -1])
        ax.axhline(0, color="k", ls="--", lw=0.8)
        ax.set_title(f"{panels} = {value}")
        ax.set_ylabel("Spearman(max class, min class)")
        ax.tick_params(axis="x", rotation=30)
    handles = axes[0, -1].get_legend()
    if handles is not None:
        sns.move_legend(axes[0, -1], "upper left", bbox_to_anchor=(1.02, 1), title=None)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- PGD enhancement (05_pgd_enhancement)


def attack_examples(pixels: torch.Tensor, perturbations: Mapping[str, torch.Tensor], adversarials: Mapping[str, torch.Tensor],
                    *, clean_titles: Sequence[str], adversarial_titles: Mapping[str, Sequence[str]], cell: float = 1.8):
    """CAMERAS Fig. 5.6 analogue: per image (row) the clean image, then for each attack its
    perturbation (amplified to the row's largest absolute value, grey = 0) and its adversarial image.

    Args:
        pixels: (B, 3, H, W) clean pixels in [0, 1].
        perturbations, adversarials: attack name -> (B, 3, H, W).
        clean_titles: one title per row (label and confidence).
        adversarial_titles: attack name -> one title per row.
    """
    rows, names = pixels.shape[0], list(perturbations)
    fig, axes = plt.subplots(rows, 1 + 2 * len(names), figsize=(cell * (1 + 2 * len(names)), cell * rows), squeeze=False)
    for r in range(rows):
        overlay(axes[r, 0], pixels[r], title=clean_titles[r])
        scale = max(float(perturbations[n][r].abs().max()) for n in names) or 1.0
        for c, name in enumerate(names):
            shown = (perturbations[name][r] / (2 * scale) + 0.5).clamp(0, 1)
            overlay(axes[r, 1 + 2 * c], shown, title=f"{name}: perturbation" if r == 0 else None)
            overlay(axes[r, 2 + 2 * c], adversarials[name][r], title=adversarial_titles[name][r])
    fig.tight_layout()
    return fig


def beta_sweep(frame, *, x: str = "beta", panels: Sequence[tuple[str, str]] = (), reference: Mapping[str, float] | None = None):
    """One panel per ``(column, label)`` of ``panels``: its mean over images against ``x`` (log axis,
    with 95% bootstrap bands), a dashed line at ``reference[column]`` where given."""
    import seaborn as sns

    fig, axes = plt.subplots(1, len(panels), figsize=(4.0 * len(panels), 3.2), squeeze=False)
    for ax, (column, label) in zip(axes[0], panels):
        sns.lineplot(data=frame, x=x, y=column, errorbar=("ci", 95), marker="o", ax=ax)
        if reference and column in reference:
            ax.axhline(reference[column], color="grey", linestyle="--", linewidth=1, label="plain PGD")
            ax.legend()
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_xlim(left=0)  # beta >= 0: the symlog axis would otherwise run over negative values
        ax.set_ylabel(label)
    fig.tight_layout()
    return fig


def cleaning_curves(fraction: torch.Tensor, panels: Mapping[str, Mapping[str, torch.Tensor]]):
    """CAMERAS Fig. 5.9 (last column) over a set of images: one panel per attack, the mean
    probability of the original label, relative to the clean image's (so the ideal curve of
    Eq. 5.7 is 1), against the fraction of pixels cleaned, one line per map.

    Args:
        fraction: (S + 1,) cleaned fraction of the image.
        panels: attack name -> {map name -> (B, S + 1) relative probabilities}.
    """
    x = torch.as_tensor(fraction).double().cpu().numpy() * 100
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="ideal (Eq. 5.7)")
        for name, values in lines.items():
            ax.plot(x, values.double().mean(dim=0).cpu().numpy(), label=name, marker=".")
        ax.set_xlabel("pixels cleaned (% of image)")
        ax.set_title(title)
    axes[0, 0].set_ylabel("P(original label) / P on clean image")
    axes[0, -1].legend()
    fig.tight_layout()
    return fig


def sanity_example(pixels: torch.Tensor, maps: Mapping[str, torch.Tensor], scores: Mapping[str, float],
                   fraction: torch.Tensor, probabilities: Mapping[str, torch.Tensor], clean_probability: float):
    """CAMERAS Fig. 5.9 for one image: the image, each map with its sanity score, and the
    probability-pixels curves with the ideal level.

    Args:
        pixels: (3, H, W); maps: name -> (H, W); scores: name -> score;
        probabilities: name -> (S + 1,) probability of the original label.
    """
    fig, axes = plt.subplots(1, 2 + len(maps), figsize=(2.4 * (2 + len(maps)) + 1.2, 2.6),
                             gridspec_kw={"width_ratios": [1] * (1 + len(maps)) + [1.6]})
    overlay(axes[0], pixels, title="image")
    for ax, (name, heat) in zip(axes[1:], maps.items()):
        overlay(ax, pixels, heat, title=f"{name}: {scores[name]:.3f}")
    ax = axes[-1]
    x = torch.as_tensor(fraction).double().cpu().numpy() * 100
    ax.axhline(clean_probability, color="black", linestyle="--", linewidth=1, label="ideal")
    for name, values in probabilities.items():
        ax.plot(x, values.double().cpu().numpy(), label=name)
    ax.set_xlabel("pixels cleaned (%)")
    ax.set_ylabel("P(original label)")
    ax.legend()
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- Benchmarks (06_benchmarks)


def benchmark_ratios(frame, *, batches: Sequence[int] | None = None, floor_at_least: float = 0.8,
                     names: Mapping[str, str] | None = None):
    """Time ratios of every method, one panel per batch size, log scale with 1 marked.

    Args:
        frame: rows of ``lib.benchmark.compare`` (columns method, batch, peer, ours / peer,
            ours / floor).  Bars: ours / each peer, and ours / floor (grey).
        floor_at_least: an ``ours / floor`` below this is a measurement problem
            (``lib.benchmark.below_floor``) and gets no bar.
        names: method -> the name shown (default: the names in the frame).
    """
    import pandas as pd

    frame = frame if isinstance(frame, pd.DataFrame) else pd.DataFrame(list(frame))
    if frame.empty or "ours / floor" not in frame.columns:
        raise ValueError("benchmark_ratios needs the rows of lib.benchmark.compare (columns method, batch, peer, ratios)")
    if not isinstance(floor_at_least, (int, float)) or not math.isfinite(floor_at_least) or floor_at_least < 0:
        raise ValueError(f"floor_at_least must be a finite ratio >= 0, got {floor_at_least!r}")
    frame = frame.assign(**{"ours / floor": frame["ours / floor"].where(frame["ours / floor"] >= floor_at_least)})
    batches = sorted(frame["batch"].unique()) if batches is None else list(batches)
    methods = list(dict.fromkeys(frame["method"]))
    peers = [p for p in dict.fromkeys(frame["peer"]) if p != "-"]
    series = [("floor", "ours / floor", "0.6")] + [(p, "ours / peer", None) for p in peers]
    height = 0.8 / len(series)
    fig, axes = plt.subplots(1, len(batches), figsize=(4.2 * len(batches), 0.32 * len(methods) * len(series) / 2 + 1.4),
                             sharey=True, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        part = frame[frame["batch"] == batch]
        for k, (label, column, color) in enumerate(series):
            rows = part if label == "floor" else part[part["peer"] == label]
            values = rows.drop_duplicates("method").set_index("method")[column].reindex(methods)
            ax.barh(np.arange(len(methods)) + (k - (len(series) - 1) / 2) * height, values.to_numpy(dtype=float),
                    height=height, color=color, label=f"ours / {label}")
        ax.axvline(1.0, color="black", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"batch {batch}")
        ax.set_xlabel("time ratio (< 1: ours faster)")
    axes[0, 0].set_yticks(np.arange(len(methods)), [(names or {}).get(m, m) for m in methods])
    axes[0, 0].invert_yaxis()
    axes[0, -1].legend(loc="lower right")
    fig.tight_layout()
    return fig
