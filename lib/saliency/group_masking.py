r"""Group-CAM: group score-weighted class activation maps.

Zhang, Rao & Yang, "Group-CAM: Group Score-Weighted Visual Explanations for Deep
Convolutional Networks", arXiv:2103.13859 (2021), Algorithm 1 and Eqs. 1-7.

Split-transform-merge.  The Grad-CAM weights (Eq. 1)
:math:`w^c_k = \frac{1}{Z}\sum_{ij} \partial \mathcal{F}_c / \partial A^k_{ij}` multiply the
K activation maps of one layer; the weighted maps are split into G groups of g = K/G
channels and each group is summed into an initial mask (Eq. 2)

.. math:: M_\ell = \mathrm{ReLU}\Big(\sum_{k=\ell g}^{(\ell+1) g - 1} w^c_k A^k\Big),

de-noised by zeroing what is not above the map's θ-th percentile (Eq. 3), min-max
normalised (Eq. 4) and bilinearly upsampled to the input, :math:`M'_\ell`.  Each mask keeps
its part of the image and fills the rest with a blurred copy :math:`\tilde I_0` (Eq. 5),
:math:`I'_\ell = I_0 \odot M'_\ell + \tilde I_0 \odot (1 - M'_\ell)`; its weight is the
confidence gain of the target's softmax probability over the blurred image (Eq. 6),
:math:`\alpha^c_\ell = \mathcal{F}_c(I'_\ell) - \mathcal{F}_c(\tilde I_0)`; and the map is
:math:`L^c = \mathrm{ReLU}(\sum_\ell \alpha^c_\ell M'_\ell)` (Eq. 7).

Paper and public code (github.com/wofmanaf/Group-CAM) differ, exposed as ``variant``:

* ``"paper"`` (default): Eqs. 1-7 as written, θ = 70 (§4.1), order of Algorithm 1 line 7:
  de-noise, normalise at the layer's resolution, then upsample.
* ``"code"``: the authors' latest ``cam/groupcam.py`` (the θ de-noising was removed in
  August 2021): each group map is ReLU'd and upsampled *before* min-max normalising (the
  normalised copy is only used to mask the input), the gains are rectified first,
  :math:`\mathrm{ReLU}(\alpha_\ell)`, and they weight the *unnormalised* upsampled maps,
  :math:`L = \sum_\ell \mathrm{ReLU}(\alpha_\ell)\,\mathrm{Up}(M_\ell)`.  ``theta`` defaults
  to None there; giving one applies Eq. 3 at the layer's resolution before upsampling, as
  the authors' earlier code did.  The copy of ``cam/groupcam.py`` we could read (commit
  0b61fdd) is such an earlier version: θ = 70 at the layer's resolution, upsampling, then
  min-max normalising, and the *unrectified* gains times the normalised masks summed before
  one final ReLU, which is the ``"paper"`` variant up to normalising after upsampling.

Both take the gradient of the pre-softmax score (Eq. 1, as the code) and the gains on
softmax probabilities (Eq. 6, as the code).  The blur is a Gaussian of kernel 51 and σ 50
(the code's ``kornia.filters.gaussian_blur2d`` setting, reflect border); the paper names
``gaussian_blur2d(I_0, ksize, sigma)`` without values, so both are keywords.

The paper's remark (§1) that G = 1 without de-noising "simplifies to Grad-CAM" holds
exactly, after the final min-max normalisation, when the single gain is positive: then
:math:`L = \alpha_0 M'_0` and normalising removes :math:`\alpha_0` and the first
normalisation (bilinear upsampling commutes with affine maps).  When :math:`\alpha_0 \le 0`
the paper variant's map is all zeros (Eq. 7's ReLU) and so is the code variant's.
De-noising breaks the equality unless it is a no-op: with θ the G = 1 map is still Grad-CAM's
exactly when at least θ % of the ReLU'd Grad-CAM map is already zero (its θ-th percentile
is 0).  Both statements are tested in ``tests/test_group_masking.py``.

Cost: one forward and backward pass stopped at the layer, one forward of the blurred
images and G forwards of masked images per image (Group-CAM's §4.3: "dozens of queries").
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..capture import check_images, prepared
from .passes import (AUTO, auto_batch_size, check_batch_size, check_choice, check_count, check_feature_map, check_flag,
                     check_precision, check_real, chunks, finish, forward_in, outside_autocast, layer_pass, normalise_maps, upsample)

__all__ = ["groupcam", "gaussian_blur", "gaussian_kernel", "percentile_filter", "group_maps", "VARIANTS"]

VARIANTS = ("paper", "code")
PAPER_THETA = 70.0
"""θ of Eq. 3, §4.1 ("the threshold θ in Eq. 3 is set as 70")."""
CODE_BLUR = (51, 50.0)
"""Kernel size and σ of the authors' code (kornia ``gaussian_blur2d``)."""


def gaussian_kernel(size: int, sigma: float, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """A 1-D Gaussian of ``size`` taps centred on ``size // 2``, summing to one (kornia's)."""
    size = check_count(size, "blur_kernel (the blur's kernel size)")
    if size % 2 == 0:
        raise ValueError(f"blur_kernel (the blur's kernel size) must be a positive odd integer, got {size}")
    sigma = check_real(sigma, "blur_sigma", low=0.0, low_open=True)
    x = torch.arange(size, device=device, dtype=torch.float64) - size // 2
    kernel = torch.exp(-(x**2) / (2 * float(sigma) ** 2))
    if not torch.isfinite(kernel).all() or kernel.sum() <= 0:
        raise ValueError(f"blur_sigma {sigma} is too small or too large for a Gaussian kernel (its values are not finite); "
                         "give a sigma of order one pixel or more")
    return (kernel / kernel.sum()).to(dtype)


def gaussian_blur(images: torch.Tensor, kernel_size: int = 51, sigma: float = 50.0) -> torch.Tensor:
    r"""Separable Gaussian blur of (B, C, H, W) images, reflect border (kornia ``gaussian_blur2d``).

    Group-CAM's baseline :math:`\tilde I_0` (Eq. 5) and the insertion/deletion substrate.
    The kernel sums to one, so blurring commutes with the per-channel normalisation of
    the model's inputs.  Where the image is too small for a reflect border
    (``kernel_size // 2 >= H`` or ``W``) the border is replicated instead.
    """
    kernel = gaussian_kernel(kernel_size, sigma, device=images.device, dtype=images.dtype)
    pad = kernel_size // 2
    mode = "reflect" if pad < min(images.shape[-2:]) else "replicate"
    channels = images.shape[1]
    x = F.pad(images, (pad, pad, pad, pad), mode=mode)
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, kernel_size), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, -1, 1).expand(channels, 1, kernel_size, 1), groups=channels)


def percentile_filter(maps: torch.Tensor, theta: float) -> torch.Tensor:
    r"""Eq. 3: keep :math:`m_{ij}` where it exceeds the θ-th percentile of its map, else 0.

    Args:
        maps: (..., h, w); each trailing (h, w) map gets its own percentile.
        theta: percentile in [0, 100], linear interpolation between order statistics
            (``numpy.percentile``'s default, which the authors' code used).

    Returns:
        Same shape; a strict ``>`` as in Eq. 3, so θ = 0 zeroes each map's minimum.
    """
    theta = check_real(theta, "theta (a percentile)", low=0.0, high=100.0)
    flat = maps.reshape(-1, maps.shape[-2] * maps.shape[-1])
    # torch.quantile takes float32 and float64 only: a half-precision map's threshold is taken in float32
    threshold = torch.quantile(flat.float(), theta / 100.0, dim=1, keepdim=True).to(flat.dtype)
    return torch.where(flat > threshold, flat, torch.zeros_like(flat)).reshape(maps.shape)


def group_maps(activations: torch.Tensor, weights: torch.Tensor, groups: int) -> torch.Tensor:
    r"""Eq. 2: :math:`M_\ell = \mathrm{ReLU}(\sum_{k \in \ell} w_k A^k)`, (B, G, h, w).

    Channels are split into G contiguous groups; when G does not divide K the groups
    have floor(K/G) or ceil(K/G) channels (channel k goes to group floor(k G / K)).
    """
    channels = activations.shape[1]
    if not 1 <= groups <= channels:
        raise ValueError(f"groups must be in [1, {channels}] (the layer's channels), got {groups}")
    weighted = weights[:, :, None, None] * activations
    if channels % groups == 0:
        summed = weighted.reshape(weighted.shape[0], groups, channels // groups, *weighted.shape[2:]).sum(dim=2)
    else:
        index = torch.arange(channels, device=activations.device) * groups // channels
        summed = weighted.new_zeros(weighted.shape[0], groups, *weighted.shape[2:]).index_add_(1, index, weighted)
    return F.relu(summed)


_DEFAULT = object()


@outside_autocast
def groupcam(
    model,
    images,
    targets=None,
    *,
    layer: str = "last",
    groups: int = 32,
    theta=_DEFAULT,
    variant: str = "paper",
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    precision: str = "float32",
):
    r"""Group-CAM (Zhang et al. 2021, Algorithm 1, Eqs. 1-7); see the module docstring.

    One forward and backward pass (stopped at ``layer``) for the weights, one forward of
    the blurred images, and B x G forwards of masked images, all images' masks together
    in chunks of ``batch_size``.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the predicted class.
        layer: layer alias or module name (``"last"``: the last convolutional map).
        groups: G (paper: 32, §4.1); at most the layer's channel count.
        theta: percentile θ of Eq. 3, or None for no de-noising.  Default: 70 for
            ``variant="paper"`` (§4.1), None for ``"code"`` (removed from the code).
        variant: ``"paper"`` (Eqs. 3-7 as written) or ``"code"`` (authors' latest code).
        blur_kernel, blur_sigma: Gaussian blur of the baseline (code: 51 and 50).
        raw: return the unnormalised (B, H, W) map (the sum of Eq. 7).
        batch_size: masked images per forward pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all B x G at once).
        precision: the masked forward passes' precision, ``"float32"``, ``"bfloat16"`` or
            ``"float16"`` (``lib.saliency.passes.forward_in``: autocast, the GPU's fast path).
            Eq. 6's gains are differences of probabilities: where they are about 1e-3 (an
            untrained network) bfloat16's three significant digits lose their order; prefer
            float16 there.

    Returns:
        (B, H, W) maps in [0, 1] on the images' device.

    Raises:
        ValueError: unknown variant, groups outside [1, K], θ outside [0, 100].
    """
    check_choice(variant, "variant", VARIANTS)
    if theta is _DEFAULT:
        theta = PAPER_THETA if variant == "paper" else None
    elif theta is not None:
        theta = check_real(theta, "theta (a percentile)", low=0.0, high=100.0)
    check_images(images)
    check_flag(raw, "raw")
    groups = check_count(groups, "groups")
    gaussian_kernel(blur_kernel, blur_sigma)  # checks both before any pass
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    check_precision(precision)
    record = layer_pass(model, images, targets, layer, batch_size=batch_size)
    check_feature_map(record.activations, layer, "groupcam")
    maps = group_maps(record.activations, record.gradients.mean(dim=(2, 3)), groups)  # (B, G, h, w)
    if theta is not None:
        maps = percentile_filter(maps, theta)
    size = tuple(images.shape[-2:])
    if variant == "paper":
        masks = upsample(normalise_maps(maps.flatten(0, 1)), size).view(*maps.shape[:2], *size)
    else:
        maps = upsample(maps, size)
        masks = normalise_maps(maps.flatten(0, 1)).view_as(maps)
    gains = _confidence_gains(model, images, record.targets, masks, blur_kernel, blur_sigma, batch_size, precision)
    if variant == "paper":
        saliency = F.relu(torch.einsum("bg,bghw->bhw", gains, masks))
    else:
        saliency = torch.einsum("bg,bghw->bhw", F.relu(gains), maps)
    return finish(saliency, images, raw)


def _confidence_gains(model, images, targets, masks, blur_kernel, blur_sigma, batch_size, precision="float32"):
    """Eq. 6 for every (image, group): p_c(I'_l) - p_c(blurred image), (B, G)."""
    count, groups = masks.shape[:2]
    blurred = gaussian_blur(images, blur_kernel, blur_sigma)
    with prepared(model) as raw_module, torch.no_grad():
        module = forward_in(raw_module, precision)
        # probabilities in float32 at least: Eq. 6's gains are small differences that half precision rounds away
        baseline = torch.cat([module(blurred[p]).float().softmax(dim=1) for p in chunks(count, batch_size)])
        baseline = baseline.gather(1, targets.view(-1, 1))  # (B, 1)
        flat_masks = masks.flatten(0, 1).unsqueeze(1)  # (B G, 1, H, W)
        owner = torch.arange(count, device=images.device).repeat_interleave(groups)
        scores = []
        for piece in chunks(count * groups, batch_size):
            b, m = owner[piece], flat_masks[piece]
            perturbed = images[b] * m + blurred[b] * (1 - m)  # Eq. 5
            scores.append(module(perturbed).float().softmax(dim=1).gather(1, targets[b].view(-1, 1)).squeeze(1))
    return (torch.cat(scores).view(count, groups) - baseline).to(masks.dtype)
