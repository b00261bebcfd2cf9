"""Perturbation methods: RISE."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..capture import check_images, prepared
from .passes import (AUTO, auto_batch_size, check_batch_size, check_count, check_flag, check_randomness, check_real, chunks,
                     finish, resolve_targets)

__all__ = ["rise", "rise_masks"]


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
