r"""Class activation maps: Grad-CAM, Grad-CAM++, Layer-CAM, Score-CAM.

Every CAM is :math:`L = \mathrm{ReLU}(\sum_k w_k \odot A_k)` for the activations
:math:`A` (K channels) of one layer; the methods differ only in the weights
:math:`w_k` (a scalar per channel, or a map per channel for Layer-CAM).  The shared part
is :func:`lib.saliency.passes.layer_pass` (one forward, one backward stopped at the
layer) and :func:`weighted_sum`; each CAM states only its weights (``*_weights``), and
:data:`REDUCTIONS` turns them into maps for one layer pass.

``layer`` is an alias of the model (``"last"``: the last convolutional feature map) or
a module name; maps are computed at the layer's resolution, then (unless ``raw``)
bilinearly upsampled to the input and min-max normalised.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..capture import capture, check_images, layer_name, prepared
from .passes import (AUTO, auto_batch_size, check_batch_size, check_choice, check_feature_map, check_flag, chunks, finish,
                     layer_pass, normalise_maps, resolve_targets, upsample)

__all__ = ["gradcam", "gradcam_pp", "layercam", "scorecam", "weighted_sum", "gradcam_weights", "gradcam_pp_weights",
           "layercam_weights", "REDUCTIONS"]


def weighted_sum(activations: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """ReLU(sum_k w_k * A_k) for weights (B, K) or (B, K, h, w); returns (B, h, w)."""
    if weights.dim() == 2:
        weights = weights[:, :, None, None]
    return F.relu((weights * activations).sum(dim=1))


def gradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Grad-CAM's channel weights (Selvaraju et al. 2017, Eq. 1): :math:`w_k = \frac{1}{Z}\sum_{ij} \partial y^c / \partial A^k_{ij}`, (B, K)."""
    return gradients.mean(dim=(2, 3))


def gradcam_pp_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Grad-CAM++'s channel weights (Chattopadhay et al. 2018, Eq. 19), (B, K).

    .. math:: \alpha^{kc}_{ij} = \frac{g_{ij}^2}{2 g_{ij}^2 + \sum_{ab} A^k_{ab}\, g_{ij}^3},
              \qquad w_k = \sum_{ij} \alpha^{kc}_{ij}\,\mathrm{ReLU}(g_{ij})

    with :math:`g = \partial y^c / \partial A^k`; :math:`\alpha` is 0 where g is 0 (the 0/0 case).
    """
    g, a = gradients, activations
    g2 = g.pow(2)
    denominator = 2 * g2 + a.sum(dim=(2, 3), keepdim=True) * g2 * g
    alpha = torch.where(g != 0, g2 / (denominator + 1e-6), torch.zeros_like(g))
    return (alpha * F.relu(g)).sum(dim=(2, 3))


def layercam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Layer-CAM's weights (Jiang et al. 2021, Eq. 5): one per location, :math:`\mathrm{ReLU}(\partial y^c / \partial A^k_{ij})`, (B, K, h, w)."""
    return F.relu(gradients)


def _class_activation_map(weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def reduction(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return weighted_sum(activations, weights(activations, gradients))

    return reduction


REDUCTIONS = {
    "gradcam": _class_activation_map(gradcam_weights),
    "gradcam_pp": _class_activation_map(gradcam_pp_weights),
    "layercam": _class_activation_map(layercam_weights),
}
"""CAM name -> ``(activations, gradients) -> (B, h, w)`` raw map, :func:`weighted_sum` with the
method's weights: the one statement of each CAM that :func:`gradcam`, :func:`gradcam_pp`,
:func:`layercam` and the multi-layer maps of :mod:`lib.saliency.combine` read."""


def _cam(name: str, model, images, targets, layer: str, raw: bool, batch_size: int | None) -> torch.Tensor:
    check_flag(raw, "raw")
    record = layer_pass(model, images, targets, layer, batch_size=batch_size)
    check_feature_map(record.activations, layer, name)
    return finish(REDUCTIONS[name](record.activations, record.gradients), images, raw)


def gradcam(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""Grad-CAM.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
    Gradient-based Localization", ICCV 2017, Eqs. 1-2:
    :math:`w_k = \frac{1}{Z}\sum_{ij} \partial y^c / \partial A^k_{ij}`,
    :math:`L = \mathrm{ReLU}(\sum_k w_k A^k)`, with :math:`y^c` the pre-softmax score
    (:func:`gradcam_weights`).

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the predicted class.
        layer: layer alias or module name.
        raw: return the unnormalised (B, h, w) map at the layer's resolution.
        batch_size: images per forward/backward pass (None: all).

    Returns:
        (B, H, W) maps in [0, 1] on the images' device.

    Raises:
        ValueError: bad images (shape, empty, NaN, another device than the model), targets
            outside the classes, an unknown layer, one that does not run, runs twice or is not
            a feature map (B, C, h, w), logits or maps that are not finite.
        TypeError: images, targets, layer, ``raw`` or ``batch_size`` of the wrong type (images of
            another dtype than the model's weights included).
    """
    return _cam("gradcam", model, images, targets, layer, raw, batch_size)


def gradcam_pp(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""Grad-CAM++.

    Chattopadhay et al., "Grad-CAM++: Generalized Gradient-based Visual Explanations for
    Deep Convolutional Networks", WACV 2018, Eq. 19 (the score passed through
    :math:`\exp`, so higher derivatives are powers of the first; :func:`gradcam_pp_weights`).
    Same convention as pytorch-grad-cam, against which it is tested.
    Arguments, returns and errors as :func:`gradcam`.
    """
    return _cam("gradcam_pp", model, images, targets, layer, raw, batch_size)


def layercam(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""Layer-CAM.

    Jiang et al., "LayerCAM: Exploring Hierarchical Class Activation Maps for
    Localization", IEEE TIP 2021, Eqs. 5-6: every location keeps its own weight,
    :math:`L = \mathrm{ReLU}(\sum_k \mathrm{ReLU}(\partial y^c / \partial A^k) \odot A^k)`,
    which stays faithful at shallow layers where Grad-CAM's spatial average fails.
    Arguments, returns and errors as :func:`gradcam`.
    """
    return _cam("layercam", model, images, targets, layer, raw, batch_size)


def scorecam(
    model,
    images,
    targets=None,
    *,
    layer: str = "last",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    weighting: str = "channel_softmax",
):
    r"""Score-CAM.

    Wang et al., "Score-CAM: Score-Weighted Visual Explanations for Convolutional Neural
    Networks", CVPR workshops 2020, Algorithm 1: each channel, upsampled to the input and
    min-max normalised, masks the image, :math:`M_k = s(\mathrm{Up}(A_k))`; its weight is
    the target's score on :math:`X \odot M_k`, and :math:`L = \mathrm{ReLU}(\sum_k w_k A_k)`.

    Implementations differ on the score: ``weighting="channel_softmax"``
    (default; Algorithm 1 and pytorch-grad-cam) takes the softmax over channels of the
    target's logits on the masked images; subtracting a baseline's score (the paper's
    "increase of confidence") does not change a softmax.  ``weighting="probability"``
    uses the target's softmax probability on each masked image directly, as the
    authors' public code does.  A constant channel gives an all-zero mask.

    Args:
        batch_size: masked images per forward pass, K per image in all (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
        weighting: ``channel_softmax`` or ``probability``.
    Other arguments, returns and errors as :func:`gradcam`.
    """
    check_choice(weighting, "weighting", ("channel_softmax", "probability"))
    check_flag(raw, "raw")
    check_images(images)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    layer = layer_name(model, layer)
    chosen = resolve_targets(model, images, targets)
    maps = []
    with prepared(model) as module, torch.no_grad():
        for b in range(images.shape[0]):
            with capture(model, [layer], gradients=False) as record:
                module(images[b : b + 1])
                activation = check_feature_map(record[layer], layer, "scorecam")[0]
            masks = normalise_maps(upsample(activation.unsqueeze(0), tuple(images.shape[-2:]))[0])
            scores = []
            for piece in chunks(masks.shape[0], batch_size):
                logits = module(images[b : b + 1] * masks[piece, None])
                if weighting == "probability":
                    logits = logits.softmax(dim=1)
                scores.append(logits[:, chosen[b]])
            scores = torch.cat(scores)
            weights = scores.softmax(dim=0) if weighting == "channel_softmax" else scores
            maps.append(weighted_sum(activation.unsqueeze(0), weights.unsqueeze(0)))
    return finish(torch.cat(maps), images, raw)
