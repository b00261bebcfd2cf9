"""Perturbation methods: RISE, occlusion and extremal perturbations."""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..capture import check_images, prepared
from .passes import (AUTO, auto_batch_size, check_baseline, check_batch_size, check_choice, check_count, check_flag, check_logits,
                     check_precision, check_randomness, check_real, chunks, finish, forward_in, outside_autocast, resolve_targets)

__all__ = ["rise", "rise_masks", "occlusion", "OCCLUSION_SCORES", "extremal_perturbation", "extremal_masks", "EXTREMAL_VARIANTS",
           "EXTREMAL_PERTURBATIONS", "EXTREMAL_REWARDS", "check_areas"]


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


@outside_autocast
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
    precision: str = "float32",
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
        precision: the masked forward passes' precision, ``"float32"``, ``"bfloat16"`` or
            ``"float16"`` (``lib.saliency.passes.forward_in``: autocast, the GPU's fast path).
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
    check_precision(precision)
    chosen = resolve_targets(model, images, targets)
    size = tuple(images.shape[-2:])
    total = torch.zeros((images.shape[0], *size), device=images.device, dtype=images.dtype)
    with prepared(model) as module, torch.no_grad():
        forward = forward_in(module, precision)
        grid, dy, dx = _draw_mask_parameters(n_masks, size, cells, keep_probability, rng, images.device)
        for piece in chunks(n_masks, batch_size):
            masks = _build_masks(grid[piece], dy[piece], dx[piece], size).to(images.dtype)
            for b in range(images.shape[0]):
                probabilities = forward(images[b : b + 1] * masks[:, None]).softmax(dim=1)[:, chosen[b]].to(masks.dtype)
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


# --------------------------------------------------------------------------------------------
# Extremal perturbations
# --------------------------------------------------------------------------------------------

#: What the mask m does: keep its region and perturb the rest (``"preserve"``), perturb its region
#: (``"delete"``), or both at once, rewarding the difference (``"dual"``).
EXTREMAL_VARIANTS = ("preserve", "delete", "dual")
#: How a pixel is perturbed where m < 1: blurred (the paper's) or faded towards 0.
EXTREMAL_PERTURBATIONS = ("blur", "fade")
#: The score the mask maximises: the target's logit (``"simple"``), or its margin over the best
#: other class (``"contrastive"``).
EXTREMAL_REWARDS = ("simple", "contrastive")

# TorchRay's fixed constants (torchray.attribution.extremal_perturbation): SGD on the mask
# parameters, the area term's weight lambda and its growth per iteration, the smooth max's 1/T.
_LEARNING_RATE, _MOMENTUM = 0.01, 0.9
_AREA_WEIGHT, _AREA_WEIGHT_GROWTH = 300.0, 1.0035
_COLDNESS = 20.0


def check_areas(areas) -> tuple[float, ...]:
    """The target areas of :func:`extremal_masks`: one fraction in (0, 1) or a non-empty sequence of them.

    Raises:
        TypeError: an area that is not a real number (a string, a mapping, a set, a bool).
        ValueError: an empty sequence, or an area that is NaN or not strictly between 0 and 1.
    """
    if isinstance(areas, (list, tuple)) or (isinstance(areas, (torch.Tensor, np.ndarray)) and areas.ndim == 1):
        values = list(areas)
        if not values:
            raise ValueError("areas must hold at least one target area, a fraction in (0, 1); got an empty sequence")
        return tuple(check_real(a, f"areas[{i}] (a fraction of the mask's frame)", low=0.0, high=1.0, low_open=True,
                                high_open=True) for i, a in enumerate(values))
    return (check_real(areas, "areas (a fraction of the mask's frame, or a sequence of them)", low=0.0, high=1.0,
                       low_open=True, high_open=True),)


class _MaskGrid(NamedTuple):
    """How a smooth mask pools its parameters (Fong et al. 2019, Sec. 3: the smooth max of
    kernel-weighted parameters on a grid of stride ``step``), laid out as TorchRay's ``MaskGenerator``.

    The mask lives on a frame that extends ``margin`` pixels beyond the image on each side;
    frame pixel u pools the window of (2r + 1)^2 zero-padded parameters that starts at its grid
    cell u // step.
    """

    cells: tuple[int, int]  # parameters per side, ceil(size / step)
    padding: int  # zero parameters around them
    window: int  # 2r + 1, the side of the window a pixel pools
    step: int
    weights: torch.Tensor  # (window^2, frame height, frame width): each pooled parameter's kernel weight
    margin: int  # frame pixels before the image, round(sigma)
    size: tuple[int, int]  # the image's (H, W)


def _mask_grid(size: tuple[int, int], step: int, sigma: float, device, dtype) -> _MaskGrid:
    padding = 1 + math.ceil(2 * sigma / step)  # the frame's margin is sigma, and a kernel reaches sigma beyond it
    window = 2 * (1 + math.ceil(sigma / step)) + 1
    cells = tuple(math.ceil(side / step) for side in size)
    frame = tuple(step * (c + 2 * padding - window) + 1 for c in cells)
    margin = round(sigma)
    if any(f < margin + side for f, side in zip(frame, size)):
        raise ValueError(f"sigma {sigma} is too small for step {step}: the mask's frame ({frame[0]} x {frame[1]}) would not "
                         f"cover the image ({size[0]} x {size[1]}) and its margin of {margin} pixels; choose sigma > 1.5 step "
                         f"(here > {1.5 * step:g}), which always covers it, or a smaller step")

    def offsets(length: int) -> torch.Tensor:
        """(window, length): each frame pixel's signed distance to the parameters of its window."""
        pixel = torch.arange(length, device=device)
        index = pixel[None, :] // step + torch.arange(window, device=device)[:, None] - padding
        return pixel[None, :].to(dtype) - (sigma + step * index.to(dtype))  # a parameter sits sigma + step i into the frame

    # In the working dtype, as TorchRay (float32): symmetric pixels tie exactly at the start, and a
    # weight rounded otherwise breaks the area term's sort differently (tests/test_extremal.py).
    dy, dx = offsets(frame[0]), offsets(frame[1])
    distance = torch.sqrt(dy[:, None, :, None] ** 2 + dx[None, :, None, :] ** 2) / sigma
    weights = torch.exp(-2 * (distance - 0.5).clamp(min=0) ** 2)  # TorchRay's kernel: flat to sigma / 2, then Gaussian
    return _MaskGrid(cells, padding, window, step, weights.reshape(-1, *frame), margin, size)


def _smooth_masks(parameters: torch.Tensor, grid: _MaskGrid) -> torch.Tensor:
    r"""(n, frame height, frame width) masks in [0, 1] from (n, *cells) parameters: at each pixel the smooth
    max :math:`\operatorname{smax}_T(z) = \sum_k z_k e^{z_k / T} / \sum_k e^{z_k / T}`, T = 1/20, of the
    kernel-weighted parameters it pools."""
    n, frame = parameters.shape[0], grid.weights.shape[1:]
    windows = F.unfold(parameters[:, None], grid.window, padding=grid.padding)
    cells = [c + 2 * grid.padding - grid.window + 1 for c in grid.cells]  # window positions per side
    pooled = windows.view(n, -1, *cells).repeat_interleave(grid.step, dim=2).repeat_interleave(grid.step, dim=3)
    weighted = grid.weights * pooled[:, :, : frame[0], : frame[1]]
    return (weighted * torch.softmax(_COLDNESS * weighted, dim=1)).sum(dim=1).clamp(0, 1)


def _crop(frame_masks: torch.Tensor, grid: _MaskGrid) -> torch.Tensor:
    (height, width), m = grid.size, grid.margin
    return frame_masks[:, m : m + height, m : m + width]


def _gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian of standard deviation ``sigma`` over ceil(4 sigma) taps each side, zero padded (TorchRay's ``imsmooth``)."""
    if sigma == 0:
        return images
    half = math.ceil(4 * sigma)
    taps = torch.arange(-half, half + 1, device=images.device, dtype=torch.float64)
    kernel = torch.exp(-((taps / sigma) ** 2) / 2)
    kernel = (kernel / kernel.sum()).to(images.dtype)
    channels = images.shape[1]
    x = F.conv2d(images, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), padding=(half, 0), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), padding=(0, half), groups=channels)


def _pyramid(images: torch.Tensor, levels: int, kind: str, max_blur: float) -> torch.Tensor:
    """(n, L, C, H, W): level l perturbs with strength 1 - l / (L - 1), so level L - 1 is the image itself.
    Blur: a Gaussian of sigma_max (1 - l / (L - 1)); fade: the image times l / (L - 1)."""
    strengths = [1 - level / (levels - 1) for level in range(levels)]
    if kind == "blur":
        return torch.stack([_gaussian_blur(images, max_blur * s) for s in strengths], dim=1)
    return torch.stack([images * (1 - s) for s in strengths], dim=1)


def _perturb(pyramid: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(n, C, H, W): each pixel read from the pyramid at level m (L - 1), linearly between the two levels around it."""
    levels, channels = pyramid.shape[1], pyramid.shape[2]
    level = masks[:, None, None] * (levels - 1)
    lower = level.floor()
    fraction = level - lower
    lower = lower.long().expand(-1, 1, channels, -1, -1)
    upper = (lower + 1).clamp(max=levels - 1)
    return ((1 - fraction) * pyramid.gather(1, lower) + fraction * pyramid.gather(1, upper)).squeeze(1)


def _score(logits: torch.Tensor, targets: torch.Tensor, reward: str) -> torch.Tensor:
    score = logits.gather(1, targets[:, None]).squeeze(1)
    if reward == "simple":
        return score
    return score - logits.scatter(1, targets[:, None], float("-inf")).amax(dim=1)


def _area_ramps(areas: list[float], pixels: int, device, dtype) -> torch.Tensor:
    """(n, pixels): the sorted mask of area a, int(pixels (1 - a)) zeros then ones (TorchRay's reference)."""
    zeros = torch.tensor([int(pixels * (1 - a)) for a in areas], device=device)
    return (torch.arange(pixels, device=device)[None, :] >= zeros[:, None]).to(dtype)


def extremal_masks(
    model,
    images,
    targets=None,
    *,
    areas=(0.1,),
    variant: str = "preserve",
    perturbation: str = "blur",
    reward: str = "simple",
    max_iter: int = 800,
    num_levels: int = 8,
    step: int = 7,
    sigma: float = 21.0,
    max_blur: float = 20.0,
    jitter: bool = True,
    batch_size: int | str | None = AUTO,
) -> torch.Tensor:
    r"""The extremal perturbation masks, one per image and area: (B, len(areas), H, W) in [0, 1].

    Fong, Patrick & Vedaldi, ICCV 2019 (see :func:`extremal_perturbation` for the method and the
    arguments).  Each mask is optimised alone; masks go through the network ``batch_size`` at a
    time (``"auto"``: :func:`lib.saliency.passes.auto_batch_size`), the dual variant sending two
    perturbed images per mask.

    Raises:
        ValueError: areas outside (0, 1) or none, an unknown variant, perturbation or reward,
            max_iter, step or batch_size below 1, num_levels below 2, sigma or max_blur not > 0,
            a sigma too small for the step, a contrastive reward on a model with one class;
            otherwise as :func:`lib.saliency.gradcam`.
        TypeError: a setting of the wrong type.
    """
    check_images(images)
    areas = check_areas(areas)
    check_choice(variant, "variant", EXTREMAL_VARIANTS)
    check_choice(perturbation, "perturbation", EXTREMAL_PERTURBATIONS)
    check_choice(reward, "reward", EXTREMAL_REWARDS)
    max_iter, step = check_count(max_iter, "max_iter"), check_count(step, "step")
    num_levels = check_count(num_levels, "num_levels", low=2)
    sigma = check_real(sigma, "sigma", low=0.0, low_open=True)
    max_blur = check_real(max_blur, "max_blur", low=0.0, low_open=True)
    jitter = check_flag(jitter, "jitter")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    work = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    grid = _mask_grid(tuple(images.shape[-2:]), step, sigma, images.device, work)
    chosen = resolve_targets(model, images, targets)
    count = len(areas)
    owners = torch.arange(images.shape[0] * count, device=images.device) // count
    area_of = list(areas) * images.shape[0]
    masks = []
    with prepared(model) as module:
        for piece in chunks(owners.numel(), batch_size):
            with torch.no_grad():
                pyramid = _pyramid(images[owners[piece]].to(work), num_levels, perturbation, max_blur)
            ramps = _area_ramps(area_of[piece], grid.weights[0].numel(), images.device, work)
            parameters = _optimise(module, pyramid, chosen[owners[piece]], ramps, grid, variant, reward, max_iter, jitter,
                                   images.dtype)
            with torch.no_grad():
                masks.append(_crop(_smooth_masks(parameters, grid), grid))
    return torch.cat(masks).reshape(images.shape[0], count, *images.shape[-2:]).to(images.dtype)


def _optimise(module, pyramid, targets, ramps, grid, variant, reward, max_iter, jitter, dtype) -> torch.Tensor:
    """The mask parameters after max_iter - 1 steps of SGD with momentum on the energy (TorchRay returns
    the mask of its last iteration, made before that iteration's step, so the last step is not taken)."""
    parameters = torch.ones((pyramid.shape[0], *grid.cells), device=pyramid.device, dtype=pyramid.dtype)
    velocity, area_weight = None, _AREA_WEIGHT
    for iteration in range(max_iter - 1):
        with torch.enable_grad():
            parameters.requires_grad_(True)
            frame_masks = _smooth_masks(parameters, grid)
            masks = _crop(frame_masks, grid)
            if variant == "preserve":
                x = _perturb(pyramid, masks)
            elif variant == "delete":
                x = _perturb(pyramid, 1 - masks)
            else:
                x = torch.cat([_perturb(pyramid, masks), _perturb(pyramid, 1 - masks)])
            if jitter and iteration % 2 == 0:
                x = x.flip(dims=(3,))
            logits = check_logits(module(x.to(dtype)), x.shape[0]).to(pyramid.dtype)
            if reward == "contrastive" and logits.shape[1] < 2:
                raise ValueError("reward='contrastive' needs a model with at least two classes (the target's margin over "
                                 f"the best other class); this one returns {logits.shape[1]}; use reward='simple'")
            scores = _score(logits, targets.repeat(x.shape[0] // targets.shape[0]), reward)
            if variant == "delete":
                scores = -scores
            elif variant == "dual":
                scores = scores[: targets.shape[0]] - scores[targets.shape[0] :]
            area_loss = ((frame_masks.flatten(1).sort(dim=1).values - ramps) ** 2).mean(dim=1)
            energy = (scores - area_weight * area_loss).sum()
            (ascent,) = torch.autograd.grad(energy, parameters)
        velocity = ascent if velocity is None else velocity.mul(_MOMENTUM).add(ascent, alpha=1 - _MOMENTUM)
        parameters = parameters.detach().add(velocity, alpha=_LEARNING_RATE).clamp(0, 1)
        area_weight *= _AREA_WEIGHT_GROWTH
    return parameters.detach()


def extremal_perturbation(
    model,
    images,
    targets=None,
    *,
    areas=(0.1,),
    variant: str = "preserve",
    perturbation: str = "blur",
    reward: str = "simple",
    max_iter: int = 800,
    num_levels: int = 8,
    step: int = 7,
    sigma: float = 21.0,
    max_blur: float = 20.0,
    jitter: bool = True,
    raw: bool = False,
    batch_size: int | str | None = AUTO,
):
    r"""Extremal perturbation: the smooth mask of a fixed area that best keeps (or removes) the target's score.

    Fong, Patrick & Vedaldi, "Understanding Deep Networks via Extremal Perturbations and Smooth
    Masks", ICCV 2019, Sec. 3, Eqs. 3-8.  The extremal perturbation of area a is
    :math:`m_a = \operatorname{argmax}_{m:\, \|m\|_1 = a |\Omega|} \Phi(m \otimes x)`; the area
    constraint becomes the ranking penalty :math:`R_a(m) = \|\operatorname{vecsort}(m) - r_a\|^2`,
    :math:`r_a` the sorted mask of area a ((1 - a)|Ω| zeros, then ones), in the energy
    :math:`\Phi(m \otimes x) - \lambda_t R_a(m)` (TorchRay's: R_a as a mean over pixels,
    :math:`\lambda_t = 300 \cdot 1.0035^t` at iteration t).  The mask is smooth by construction,
    :math:`m(u) = \operatorname{smax}_{T,i}\, k(u - u_i)\, \bar m_i` with the smooth max
    :math:`\operatorname{smax}_T(z) = \sum_i z_i e^{z_i/T} / \sum_i e^{z_i/T}`, T = 1/20, over
    parameters :math:`\bar m_i` on a grid of stride ``step`` and a kernel of width ``sigma``
    (TorchRay's: 1 out to sigma / 2, then :math:`e^{-2(|u|/\sigma - 1/2)^2}`).  The perturbation
    blurs each pixel by how little the mask keeps it,
    :math:`[m \otimes x](u) = (g_{\sigma_{\max}(1 - m(u))} * x)(u)`, read from a pyramid of
    ``num_levels`` blurs :math:`\sigma_{\max}(1 - l / (L - 1))` between which it interpolates
    linearly (zero padding at the border; ``perturbation="fade"``: :math:`m(u)\, x(u)` instead).

    Variants: ``"preserve"`` maximises :math:`\Phi(m \otimes x)`, ``"delete"``
    :math:`-\Phi((1 - m) \otimes x)` and ``"dual"`` their sum, one forward of each per step.
    :math:`\Phi` is the target's logit (``reward="simple"``) or its margin over the best other
    logit (``"contrastive"``; TorchRay gives the target -100 for that maximum, here -inf).

    The defaults are TorchRay's ``extremal_perturbation``, and so is the optimisation: the
    parameters start at 1 and climb the energy by SGD (learning rate 0.01, momentum 0.9 with
    dampening 0.9), clipped to [0, 1] after each step; with ``jitter`` every other step (the
    first, the third, ...) shows the network the perturbed image flipped left to right.  The mask
    lives on a frame reaching round(sigma) pixels beyond the image on each side, and the area a
    is a fraction of that frame, as TorchRay's; the map is the frame cropped to the image.
    TorchRay returns the mask of its last iteration, made before that iteration's step: so
    does this, the mask after ``max_iter - 1`` steps, without the passes of a step it would not
    see.  Nothing is random: the jitter is the same at every call.

    Several areas give one mask each (:func:`extremal_masks`); the map is their sum, as
    TorchRay's pointing-game benchmark (``examples/attribution_benchmark.py``) sums the masks of
    areas 0.025, 0.05, 0.1 and 0.2.  With the default single area the map is the mask.

    Args:
        areas: a: one fraction of the frame in (0, 1) or a sequence of them.
        variant: one of :data:`EXTREMAL_VARIANTS`.
        perturbation: one of :data:`EXTREMAL_PERTURBATIONS`.
        reward: one of :data:`EXTREMAL_REWARDS`.
        max_iter: iterations of the optimisation (800, TorchRay's; the tests use far fewer).
        num_levels: L, the levels of the perturbation pyramid (>= 2).
        step: the stride of the parameter grid in pixels.
        sigma: the kernel's width in pixels, also the frame's margin (above 1.5 step the frame always covers the image).
        max_blur: :math:`\sigma_{\max}`, the blur of a pixel the mask removes entirely.
        jitter: flip every other perturbed image left to right.
        raw: return the sum of the masks, each in [0, 1], as it is.
        batch_size: masks optimised together (``"auto"``: :func:`lib.saliency.passes.auto_batch_size`;
            None: all at once); the dual variant sends two images per mask through the network.
    Other arguments and returns as :func:`lib.saliency.gradcam`; the model comes back as given
    (TorchRay leaves its parameters frozen).  Images in half precision are perturbed and
    optimised in float32 and sent to the network in their own dtype.

    Raises:
        ValueError, TypeError: as :func:`extremal_masks`; a ``raw`` that is not a bool.
    """
    check_flag(raw, "raw")
    masks = extremal_masks(model, images, targets, areas=areas, variant=variant, perturbation=perturbation, reward=reward,
                           max_iter=max_iter, num_levels=num_levels, step=step, sigma=sigma, max_blur=max_blur,
                           jitter=jitter, batch_size=batch_size)
    return finish(masks.sum(dim=1), images, raw)
