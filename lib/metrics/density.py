r"""Positive and negative map density (Jalwana et al., CVPR 2021, §5.4).

For an image :math:`I \in \mathbb{R}^{c \times h \times w}`, its saliency map
:math:`\Psi \in [0, 1]^{h \times w}` and the true label :math:`\ell`,

.. math::
    \rho^+_{map} = \frac{P\big(K(I \odot \Psi)\big)}{\sum_{i,j} \Psi^{(i,j)}} \times (h \times w),
    \qquad
    \rho^-_{map} = \frac{P\big(K(I \odot (1 - \Psi))\big)}{\sum_{i,j} (1 - \Psi)^{(i,j)}} \times (h \times w),

where :math:`P(\cdot)` is the model's softmax probability of the true label.  Higher
:math:`\rho^+` is better (few pixels kept, confidence retained); lower :math:`\rho^-` is
better.  With :math:`\Psi = 1` everywhere :math:`\rho^+` is the model's confidence on the
image (the paper's "extreme case").

The paper leaves open in which space :math:`I \odot \Psi` is taken.  ``space="pixels"``
(default; needs a ``lib.models.Classifier``) multiplies the pixel values in [0, 1], so a
removed pixel is black, then normalises for the network; ``space="input"`` multiplies the
normalised tensor as given (a removed pixel becomes the dataset's mean colour) and works
for any ``nn.Module``.  A map with :math:`\sum \Psi = 0` (or :math:`\sum (1 - \Psi) = 0`)
has an undefined density, reported as NaN.

Inputs: :math:`\Psi` is a mask of mass in [0, 1] (the denominators are its mass and the mass
of its complement), so :func:`map_density` refuses maps with NaN or infinite values and maps
outside [0, 1] (normalise signed or unbounded maps first); :func:`relative_difference` is a
ratio of Frobenius norms, defined for maps of any sign, and refuses only NaN or infinite values.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture import check_images, check_targets, prepared
from ..saliency.passes import check_batch_size, chunks
from ._checks import check_finite, check_range, check_tensor

__all__ = ["DensityResult", "map_density", "relative_difference"]


@dataclass
class DensityResult:
    """Per-image densities and their parts.

    Attributes:
        rho_plus, rho_minus: (B,) :math:`\\rho^+_{map}`, :math:`\\rho^-_{map}`.
        p_plus, p_minus: (B,) probability of the label on :math:`I\\odot\\Psi` and
            :math:`I\\odot(1-\\Psi)`.
        p_full: (B,) probability of the label on the image itself.
        coverage: (B,) :math:`\\sum\\Psi / (h w)`, the map's mean.
    """

    rho_plus: torch.Tensor
    rho_minus: torch.Tensor
    p_plus: torch.Tensor
    p_minus: torch.Tensor
    p_full: torch.Tensor
    coverage: torch.Tensor


def map_density(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    labels,
    *,
    space: str = "pixels",
    batch_size: int | None = 32,
) -> DensityResult:
    r""":math:`\rho^+_{map}` and :math:`\rho^-_{map}` of §5.4 for a batch of maps.

    Args:
        model: a ``lib.models.Classifier`` (any ``nn.Module`` with ``space="input"``).
        images: (B, 3, H, W) normalised images.
        maps: (B, H, W) saliency maps in [0, 1] on the images' grid.
        labels: (B,) true labels (an int for all).
        space: ``"pixels"`` (mask the pixel values) or ``"input"`` (mask the normalised tensor).
        batch_size: images per forward pass (three passes per image: masked, inverse, full).

    Returns:
        :class:`DensityResult`.

    Raises:
        ValueError: shapes disagree, maps with NaN or infinite values or outside [0, 1] (the
            densities divide by the mass of :math:`\Psi` and of :math:`1 - \Psi`), an unknown
            ``space``, no labels or not one per image, labels out of range, a batch size below 1.
        TypeError: maps that are not a real tensor, a batch size that is not an integer.
    """
    check_images(images)
    expected = (images.shape[0], *images.shape[-2:])
    check_tensor(maps, "map_density: maps", f"(B, H, W) = {expected}")
    if maps.shape != expected:
        raise ValueError(f"map_density: maps must be (B, H, W) = {expected}, got {tuple(maps.shape)}")
    check_finite(maps, "map_density: maps", hint="a saliency map must be finite, in [0, 1]")
    check_range(maps, "map_density: maps", 0, 1, hint="the map is a mask of mass (normalise it first)")
    if space not in ("pixels", "input"):
        raise ValueError(f"map_density: unknown space {space!r}; accepted: pixels, input")
    if space == "pixels" and isinstance(model, torch.nn.Module):
        raise ValueError("space='pixels' needs a lib.models.Classifier (its mean/std); use space='input' for a bare module")
    _slice(labels, images.shape[0], slice(None))  # no labels, or not one per image: refused before any pass
    batch_size = check_batch_size(batch_size)
    maps = maps.to(images)
    area = images.shape[-2] * images.shape[-1]
    parts = {"plus": [], "minus": [], "full": []}
    with prepared(model) as module, torch.no_grad():
        for piece in chunks(images.shape[0], batch_size):
            x, psi = images[piece], maps[piece].unsqueeze(1)
            if space == "pixels":
                pixels = model.denormalize(x)
                variants = [model.normalize(pixels * psi), model.normalize(pixels * (1 - psi)), x]
            else:
                variants = [x * psi, x * (1 - psi), x]
            logits = module(torch.cat(variants))
            n = x.shape[0]
            chosen = check_targets(_slice(labels, images.shape[0], piece), logits[:n])
            probs = logits.softmax(dim=1).gather(1, chosen.repeat(3).view(-1, 1)).view(3, n)
            for key, row in zip(("plus", "minus", "full"), probs):
                parts[key].append(row)
    p_plus, p_minus, p_full = (torch.cat(parts[k]) for k in ("plus", "minus", "full"))
    kept = maps.sum(dim=(1, 2))
    removed = (1 - maps).sum(dim=(1, 2))
    nan = torch.tensor(float("nan"), dtype=p_plus.dtype, device=p_plus.device)
    rho_plus = torch.where(kept > 0, p_plus / kept.clamp_min(1e-12) * area, nan)
    rho_minus = torch.where(removed > 0, p_minus / removed.clamp_min(1e-12) * area, nan)
    return DensityResult(rho_plus, rho_minus, p_plus, p_minus, p_full, kept / area)


def _slice(labels, batch: int, piece: slice):
    if labels is None:
        raise ValueError("map density needs the true labels")
    if isinstance(labels, int) and not isinstance(labels, bool):
        return labels
    if isinstance(labels, (bool, str, bytes)):
        raise TypeError(f"map_density: labels must be class indices (an int, or one per image), got {labels!r}")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"map_density: labels must be class indices (an int, or one per image), "
                        f"got {type(labels).__name__}") from None
    if labels.dim() == 0:  # one class for all (a NumPy or 0-d tensor integer); its dtype is checked with the logits
        return labels
    labels = labels.reshape(-1)
    if labels.numel() != batch:
        raise ValueError(f"labels must have one class per image: got {labels.numel()} for {batch} images")
    return labels[piece]


def relative_difference(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    r"""Eq. 5.5 of Jalwana et al. 2021 per pair of maps (B, H, W) -> (B,).

    :math:`\|\Psi_1 - \Psi_2\|_2 / \big((\|\Psi_1\|_2 + \|\Psi_2\|_2) / 2\big)` (Frobenius
    norms); Table 5.4 reports its mean over images.  Two all-zero maps differ by 0.  The
    norms are defined for maps of any sign, so signed maps are accepted as they are.

    Raises:
        TypeError: a map batch that is not a real tensor.
        ValueError: batches of different shapes or not (B, H, W) (a single (H, W) map would be
            read as H maps), or with NaN or infinite values.
    """
    check_tensor(first, "relative_difference: first", "(B, H, W)")
    check_tensor(second, "relative_difference: second", "(B, H, W)")
    if first.shape != second.shape or first.dim() != 3:
        raise ValueError(f"relative_difference: maps must be two (B, H, W) batches of one shape, "
                         f"got {tuple(first.shape)} and {tuple(second.shape)}")
    check_finite(first, "relative_difference: the first maps")
    check_finite(second, "relative_difference: the second maps")
    a, b = first.flatten(1).double(), second.flatten(1).double()
    scale = (a.norm(dim=1) + b.norm(dim=1)) / 2
    diff = (a - b).norm(dim=1)
    out = first.dtype if first.is_floating_point() else torch.get_default_dtype()  # integer or bool maps: a real ratio
    return torch.where(scale > 0, diff / scale.clamp_min(1e-300), torch.zeros_like(diff)).to(out)
