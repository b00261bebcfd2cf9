"""Figures: overlays, method grids, curves.  Plots take tensors and return a figure;
they never compute saliency.

Section-specific figures live here too, below the shared helpers, one function per
figure, each named after what it shows.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["to_numpy_image", "overlay", "method_grid", "curves", "line_with_interval"]


def to_numpy_image(image) -> np.ndarray:
    """A PIL image or a (3, H, W) tensor of pixels in [0, 1] -> (H, W, 3) float array."""
    if isinstance(image, torch.Tensor):
        array = image.detach().cpu().float()
        if array.dim() == 3 and array.shape[0] == 3:
            array = array.permute(1, 2, 0)
        return array.clamp(0, 1).numpy()
    return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0


def overlay(ax, image, saliency: torch.Tensor | None = None, *, alpha: float = 0.5, cmap: str = "jet", title: str | None = None):
    """Draw ``image`` with a (H, W) map on top on the axes ``ax``; returns ``ax``."""
    ax.imshow(to_numpy_image(image))
    if saliency is not None:
        ax.imshow(saliency.detach().cpu().float().numpy(), cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    if title:
        ax.set_title(title, fontsize=8)
    ax.set_axis_off()
    return ax


def method_grid(
    pixels: torch.Tensor,
    maps: Mapping[str, torch.Tensor],
    *,
    row_titles: Sequence[str] | None = None,
    alpha: float = 0.5,
    cell: float = 1.6,
):
    """Images (rows) x methods (columns): the image, then each method's map over it.

    Args:
        pixels: (B, 3, H, W) in [0, 1] (use ``Classifier.denormalize``).
        maps: method name -> (B, H, W) maps in [0, 1].
        row_titles: one label per image (class name and confidence, say).
    """
    rows, columns = pixels.shape[0], 1 + len(maps)
    fig, axes = plt.subplots(rows, columns, figsize=(cell * columns, cell * rows), squeeze=False)
    for r in range(rows):
        overlay(axes[r, 0], pixels[r], title=row_titles[r] if row_titles else None)
        for c, (name, batch) in enumerate(maps.items(), start=1):
            overlay(axes[r, c], pixels[r], batch[r], alpha=alpha, title=name if r == 0 else None)
    fig.tight_layout()
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
    ax.legend(fontsize=7)
    return ax


def line_with_interval(ax, frame, *, x: str, y: str, hue: str | None = None, title: str | None = None):
    """Seaborn line plot of a long-form DataFrame with 95% bootstrap bands; returns ``ax``."""
    import seaborn as sns

    sns.lineplot(data=frame, x=x, y=y, hue=hue, errorbar=("ci", 95), marker="o", ax=ax)
    if title:
        ax.set_title(title)
    return ax
