"""Perturbation methods: RISE and occlusion."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..capture import check_images, prepared
from .passes import (AUTO, auto_batch_size, check_baseline, check_batch_size, check_choice, check_count, check_flag, check_randomness,
                     check_real, chunks, finish, resolve_targets)

__all__ = ["rise", "rise_masks", "occlusion", "OCCLUSION_SCORES"]


def _draw_mask_parameters(count, size, cells, keep_probability, generator, device):
    """The random part of RISE's masks: binary grids and crop offsets, drawn once for all masks."""
    cell_h, cell_w = math.ceil(size[0] / cells), math.ceil(size[1] / cells)
    grid = (torch.rand((count, 1, cells, cells), generator=generator, device=device) < keep_probability).float()
    dy = torch.randint(0, cell_h, (count,), generator=generator, device=device)
    dx = torch.randint(0, cell_w, (count,), generator=generator, device=device)
    return grid, dy, dx


def _build_masks(grid, dy, dx, size):
    """Upsample grids to (cells + 1) * C pixels per side and crop each at its offset."""
    height, width = size
    cells = grid.shape[-1]
    cell_h, cell_w = math.ceil(height / cells), math.ceil(width / cells)
    big = F.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w), mode="bilinear", align_corners=False)
    rows = (dy[:, None] + torch.arange(height, device=grid.device)[None, :])[:, :, None]
    cols = (dx[:, None] + torch.arange(width, device=grid.device)[None, :])[:, None, :]
    return big[torch.arange(grid.shape[0], device=grid.device)[:, None, None], 0, rows, cols]


def rise_masks(
    count: int,
    size: tuple[int, int],
    *,
    cells: int = 7,
    keep_probability: float = 0.5,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    r"""RISE's random smooth masks, (count, H, W) in [0, 1].

    Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
    Models", BMVC 2018, Sec. 3.2: a binary grid of ``cells`` x ``cells`` cells, each
    kept with probability p, is bilinearly upsampled to (cells + 1) * C pixels per side
    (C = ceil(H / cells)) and cropped at a random offset in [0, C) on each axis.
    """
    count, cells = check_count(count, "count"), check_count(cells, "cells")
    keep_probability = check_real(keep_probability, "keep_probability", low=0.0, high=1.0, low_open=True)
    return _build_masks(*_draw_mask_parameters(count, size, cells, keep_probability, generator, device), size)


def rise(
    model,
    images,
    targets=None,
    *,
    n_masks: int = 8000,
    cells: int = 7,
    keep_probability: float = 0.5,
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    seed: int = 0,
    generator: torch.Generator | None = None,
):
    r"""RISE: the expected mask weighted by the target's probability on the masked image.

    Petsiuk, Das & Saenko, BMVC 2018, Eq. 6:
    :math:`S = \frac{1}{N p} \sum_{i=1}^N f_c(I \odot M_i)\, M_i` with :math:`f_c` the
    softmax probability of the target.  Defaults are TorchRay's evaluation setting used
    by the CAMERAS and Group-CAM comparisons: N = 8,000 masks of 7 x 7 cells, p = 0.5.
    The same masks serve every image of the batch (drawn at once from ``seed``/``generator``,
    so the map does not depend on ``batch_size``);
    masked images go through the network ``batch_size`` at a time.  The original code
    upsamples with scikit-image (order 1, reflect); here it is torch's bilinear.

    Args:
        n_masks: N. The map's noise falls as 1/sqrt(N); the quick profile uses fewer.
        cells: grid side s.
        keep_probability: p.
        batch_size: masks per forward pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
        seed, generator: the masks' randomness.
    Other arguments, returns and errors as :func:`lib.saliency.gradcam` (raw maps are at the
    input's resolution); also ValueError for ``n_masks`` or ``cells`` below 1 and a
    ``keep_probability`` outside (0, 1].
    """
    check_images(images)
    check_flag(raw, "raw")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    n_masks, cells = check_count(n_masks, "n_masks"), check_count(cells, "cells")
    keep_probability = check_real(keep_probability, "keep_probability", low=0.0, high=1.0, low_open=True)
    rng = check_randomness(seed, generator, images.device)
    chosen = resolve_targets(model, images, targets)
    size = tuple(images.shape[-2:])
    total = torch.zeros((images.shape[0], *size), device=images.device, dtype=images.dtype)
    with prepared(model) as module, torch.no_grad():
        grid, dy, dx = _draw_mask_parameters(n_masks, size, cells, keep_probability, rng, images.device)
        for piece in chunks(n_masks, batch_size):
            masks = _build_masks(grid[piece], dy[piece], dx[piece], size).to(images.dtype)
            for b in range(images.shape[0]):
                probabilities = module(images[b : b + 1] * masks[:, None]).softmax(dim=1)[:, chosen[b]]
                total[b] += torch.einsum("n,nhw->hw", probabilities, masks)
    return finish(total / (n_masks * keep_probability), images, raw)


#: What :func:`occlusion` measures the drop of: the target's softmax probability or its logit.
OCCLUSION_SCORES = ("probability", "logit")


def _window_starts(size: int, window: int, stride: int) -> list[int]:
    return list(range(0, size - window + 1, stride)) if window <= size else []


def occlusion(
    model,
    images,
    targets=None,
    *,
    window: int = 32,
    stride: int = 16,
    baseline: float | torch.Tensor = 0.0,
    score: str = "probability",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
):
    r"""Occlusion: how much the target's score drops when a square of the image is hidden.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
    Sec. 4.2: a square of side ``window`` filled with ``baseline`` slides over the image in
    steps of ``stride`` (all channels at once); each pixel's value is the mean, over the
    squares that cover it, of :math:`s_t(x) - s_t(x_{\text{occluded}})`.  A pixel that no square
    covers (the right and bottom margins when ``stride`` does not divide the rest) gets 0.  As
    captum's ``Occlusion`` with ``sliding_window_shapes=(3, window, window)``, against which it
    is tested with ``score="logit"`` (captum differentiates nothing and reads the model's
    output as it is).  The map is signed: a square whose removal raises the score counts
    negatively, and the ReLU-free normalisation keeps that ordering.

    Args:
        window: the square's side in pixels (the paper slid a grey square; 32 px suits 224 px inputs).
        stride: pixels between two squares' corners.
        baseline: what the square holds, in the model's input space: a number (0: the mean colour)
            or a tensor that broadcasts to the images (a blurred copy, say).
        score: ``"probability"`` (the paper's Fig. 7 plots the correct class's probability) or ``"logit"``.
        batch_size: occluded images per forward pass (``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).
    Other arguments and returns as :func:`lib.saliency.gradcam`.

    Raises:
        ValueError: a window larger than the image, non-positive window or stride, a baseline that
            is not finite, an unknown score; otherwise as :func:`lib.saliency.gradcam`.
    """
    check_images(images)
    check_flag(raw, "raw")
    window, stride = check_count(window, "window"), check_count(stride, "stride")
    fill = check_baseline(baseline, images)
    check_choice(score, "score", OCCLUSION_SCORES)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    height, width = images.shape[-2:]
    rows, cols = _window_starts(height, window, stride), _window_starts(width, window, stride)
    if not rows or not cols:
        raise ValueError(f"window {window} is larger than the images ({height} x {width}); choose window <= {min(height, width)}")
    chosen = resolve_targets(model, images, targets)
    corners = torch.tensor([(r, c) for r in rows for c in cols], device=images.device)
    ys = torch.arange(height, device=images.device)
    xs = torch.arange(width, device=images.device)
    read = (lambda logits: logits.softmax(dim=1)) if score == "probability" else (lambda logits: logits)
    maps = torch.zeros((images.shape[0], height, width), device=images.device, dtype=images.dtype)
    with prepared(model) as module, torch.no_grad():
        clean = read(module(images)).gather(1, chosen.view(-1, 1)).squeeze(1)  # (B,)
        covered = torch.zeros((height, width), device=images.device, dtype=images.dtype)
        for piece in chunks(corners.shape[0], batch_size):
            r, c = corners[piece, 0], corners[piece, 1]
            inside_y = (ys[None, :] >= r[:, None]) & (ys[None, :] < r[:, None] + window)
            inside_x = (xs[None, :] >= c[:, None]) & (xs[None, :] < c[:, None] + window)
            squares = (inside_y[:, :, None] & inside_x[:, None, :]).to(images.dtype)  # (n, H, W)
            covered += squares.sum(dim=0)
            for b in range(images.shape[0]):
                occluded = images[b : b + 1] * (1 - squares[:, None]) + fill[b : b + 1] * squares[:, None]
                drop = clean[b] - read(module(occluded))[:, chosen[b]]
                maps[b] += torch.einsum("n,nhw->hw", drop, squares)
    maps = torch.where(covered > 0, maps / covered.clamp_min(1), torch.zeros_like(maps))
    return finish(maps, images, raw)
