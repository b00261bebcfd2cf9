r"""Class activation maps: Grad-CAM, Grad-CAM++, Layer-CAM, HiResCAM, XGrad-CAM, Eigen-CAM, Ablation-CAM, Score-CAM.

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

from ..capture import capture, check_images, layer_name, prepared, resolve_layer
from .passes import (AUTO, as_feature_map, as_layer_output, auto_batch_size, check_batch_size, check_choice, check_feature_map,
                     check_flag, check_logits, check_precision, chunks, feature_layout, finish, forward_in, layer_pass, normalise_maps,
                     outside_autocast,
                     resolve_targets, upsample)

__all__ = ["gradcam", "gradcam_pp", "layercam", "hirescam", "xgradcam", "eigencam", "ablationcam", "scorecam", "weighted_sum",
           "gradcam_weights", "gradcam_pp_weights", "layercam_weights", "hirescam_weights", "xgradcam_weights",
           "eigencam_projection", "REDUCTIONS"]


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


def hirescam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""HiResCAM's weights (Draelos & Carin 2020, Eq. 5): the gradient itself at every location,
    :math:`L = \mathrm{ReLU}(\sum_k \partial y^c / \partial A^k \odot A^k)`, (B, K, h, w).

    No averaging, so the map is the layer's exact contribution to the score when the layer is
    followed by global average pooling and a linear classifier; it is Rebuffi et al.'s linear
    approximation with a ReLU.
    """
    return gradients


#: XGrad-CAM's guard against a channel whose activations sum to zero (pytorch-grad-cam's value).
XGRADCAM_EPS = 1e-7


def xgradcam_weights(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""XGrad-CAM's channel weights (Fu et al. 2020, Eq. 11), (B, K):
    :math:`w_k = \sum_{ij} \frac{A^k_{ij}}{\sum_{ab} A^k_{ab}} \frac{\partial y^c}{\partial A^k_{ij}}`,
    the gradient averaged with the activations as weights (the denominator plus :data:`XGRADCAM_EPS`)."""
    return (gradients * activations).sum(dim=(2, 3)) / (activations.sum(dim=(2, 3)) + XGRADCAM_EPS)


def _class_activation_map(weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
    def reduction(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return weighted_sum(activations, weights(activations, gradients))

    return reduction


REDUCTIONS = {
    "gradcam": _class_activation_map(gradcam_weights),
    "gradcam_pp": _class_activation_map(gradcam_pp_weights),
    "layercam": _class_activation_map(layercam_weights),
    "hirescam": _class_activation_map(hirescam_weights),
    "xgradcam": _class_activation_map(xgradcam_weights),
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


def hirescam(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""HiResCAM.

    Draelos & Carin, "Use HiResCAM instead of Grad-CAM for faithful explanations of
    convolutional neural networks", arXiv 2020, Eq. 5:
    :math:`L = \mathrm{ReLU}(\sum_k \partial y^c / \partial A^k \odot A^k)` (:func:`hirescam_weights`).
    Arguments, returns and errors as :func:`gradcam`.
    """
    return _cam("hirescam", model, images, targets, layer, raw, batch_size)


def xgradcam(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""XGrad-CAM.

    Fu et al., "Axiom-based Grad-CAM: Towards Accurate Visualization and Explanation of CNNs",
    BMVC 2020, Eq. 11: Grad-CAM with each channel's gradient averaged with its activations as
    weights (:func:`xgradcam_weights`), :math:`L = \mathrm{ReLU}(\sum_k w_k A^k)`.
    Arguments, returns and errors as :func:`gradcam`.
    """
    return _cam("xgradcam", model, images, targets, layer, raw, batch_size)


def _layer_output(model, images: torch.Tensor, layer: str, method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]:
    """One forward pass without gradient: the layer's feature map (B, K, h, w), the logits, the
    layer's output as recorded and its layout (:func:`lib.saliency.passes.feature_layout`)."""
    with prepared(model) as module, torch.no_grad(), capture(model, [layer], gradients=False) as record:
        logits = check_logits(module(images))
        output = record[layer]
        layout = feature_layout(model, layer, output)
        activations = check_feature_map(as_feature_map(output, layout), layer, method)
    return activations, logits, output, layout


def eigencam_projection(activations: torch.Tensor, *, centre: bool = True) -> torch.Tensor:
    r"""Eigen-CAM's map (Muhammad & Yeasin 2020, Eqs. 5-6): each location's activations
    projected on the first right singular vector of the (h w, K) activation matrix, (B, h, w).

    ``centre`` subtracts each channel's spatial mean before the decomposition, as
    pytorch-grad-cam does (the paper decomposes the activations as they are).  A singular
    vector's sign is arbitrary; it is chosen so that the projection's largest magnitude is
    positive (the sign correction of Chung & Ying 2025, Eq. 13), and the map is then
    :math:`\mathrm{ReLU}` of the projection.
    """
    batch, channels, height, width = activations.shape
    matrix = activations.reshape(batch, channels, height * width).transpose(1, 2).double()  # (B, hw, K)
    if centre:
        matrix = matrix - matrix.mean(dim=1, keepdim=True)
    _, _, vh = torch.linalg.svd(matrix, full_matrices=False)
    projection = (matrix @ vh[:, 0, :, None]).squeeze(-1)  # (B, hw)
    flip = projection.amin(dim=1).abs() > projection.amax(dim=1).abs()
    projection = torch.where(flip[:, None], -projection, projection)
    return F.relu(projection).reshape(batch, height, width).to(activations.dtype)


def eigencam(model, images, targets=None, *, layer: str = "last", centre: bool = True, raw: bool = False,
             batch_size: int | str | None = AUTO):
    r"""Eigen-CAM.

    Muhammad & Yeasin, "Eigen-CAM: Class Activation Map using Principal Components",
    IJCNN 2020, Eqs. 5-6: the layer's activations projected on their first principal
    component (:func:`eigencam_projection`).  It uses no gradient and no class: ``targets``
    are checked and otherwise ignored, so the map is the same for every class.

    Args:
        centre: subtract each channel's spatial mean first (pytorch-grad-cam; the paper does not).
        batch_size: images per forward pass (``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).
    Other arguments, returns and errors as :func:`gradcam`.
    """
    check_images(images)
    check_flag(raw, "raw")
    check_flag(centre, "centre")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    layer = layer_name(model, layer)
    resolve_targets(model, images, targets)
    maps = [eigencam_projection(_layer_output(model, images[piece], layer, "eigencam")[0], centre=centre)
            for piece in chunks(images.shape[0], batch_size)]
    return finish(torch.cat(maps), images, raw)


def ablationcam(model, images, targets=None, *, layer: str = "last", raw: bool = False,
                batch_size: int | str | None = AUTO):
    r"""Ablation-CAM.

    Desai & Ramaswamy, "Ablation-CAM: Visual Explanations for Deep Convolutional Network via
    Gradient-free Localization", WACV 2020, Eq. 3: channel k's weight is the relative drop of
    the target's score when its feature map is set to zero,
    :math:`w_k = (y^c - y^c_k) / y^c`, and :math:`L = \mathrm{ReLU}(\sum_k w_k A^k)`.  One
    forward pass per channel and image: the layer's output is replaced by the recorded one with
    channel k zeroed (pytorch-grad-cam zeroes it too when the layer's minimum is 0, as after a
    ReLU, and otherwise sets it to its minimum minus 1e7).  A target score of exactly 0 has no
    relative drop; its weights are 0.

    Args:
        batch_size: ablated copies per forward pass (``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).
    Other arguments, returns and errors as :func:`gradcam`.
    """
    check_images(images)
    check_flag(raw, "raw")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    layer = layer_name(model, layer)
    chosen = resolve_targets(model, images, targets)
    activations, logits, output, layout = _layer_output(model, images, layer, "ablationcam")
    score = logits.gather(1, chosen.view(-1, 1)).squeeze(1)  # (B,)
    _, module = resolve_layer(model, layer)
    channels = activations.shape[1]
    replacement = {}
    handle = module.register_forward_hook(lambda _m, _i, _o: replacement["output"])
    try:
        with prepared(model) as network, torch.no_grad():
            dropped = []
            for b in range(images.shape[0]):
                scores = []
                for piece in chunks(channels, batch_size):
                    ablated = activations[b : b + 1].repeat(piece.stop - piece.start, 1, 1, 1)
                    copies = torch.arange(ablated.shape[0], device=ablated.device)
                    ablated[copies, torch.arange(piece.start, piece.stop, device=ablated.device)] = 0
                    replacement["output"] = as_layer_output(ablated, layout, output[b : b + 1])
                    out = network(images[b : b + 1].expand(ablated.shape[0], -1, -1, -1))
                    scores.append(out[:, chosen[b]])
                dropped.append(torch.cat(scores))
    finally:
        handle.remove()
    dropped = torch.stack(dropped)  # (B, K): y^c with channel k ablated
    weights = torch.where(score[:, None] != 0, (score[:, None] - dropped) / score[:, None], torch.zeros_like(dropped))
    return finish(weighted_sum(activations, weights), images, raw)


@outside_autocast
def scorecam(
    model,
    images,
    targets=None,
    *,
    layer: str = "last",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    weighting: str = "channel_softmax",
    precision: str = "float32",
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
        precision: the masked forward passes' precision, ``"float32"``, ``"bfloat16"`` or
            ``"float16"`` (``lib.saliency.passes.forward_in``: autocast, the GPU's fast path).
    Other arguments, returns and errors as :func:`gradcam`.
    """
    check_choice(weighting, "weighting", ("channel_softmax", "probability"))
    check_precision(precision)
    check_flag(raw, "raw")
    check_images(images)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    layer = layer_name(model, layer)
    chosen = resolve_targets(model, images, targets)
    maps = []
    with prepared(model) as module, torch.no_grad():
        masked_forward = forward_in(module, precision)
        for b in range(images.shape[0]):
            with capture(model, [layer], gradients=False) as record:
                module(images[b : b + 1])
                output = record[layer]
                activation = check_feature_map(as_feature_map(output, feature_layout(model, layer, output)), layer,
                                               "scorecam")[0]
            masks = normalise_maps(upsample(activation.unsqueeze(0), tuple(images.shape[-2:]))[0])
            scores = []
            for piece in chunks(masks.shape[0], batch_size):
                logits = masked_forward(images[b : b + 1] * masks[piece, None]).to(masks.dtype)
                if weighting == "probability":
                    logits = logits.softmax(dim=1)
                scores.append(logits[:, chosen[b]])
            scores = torch.cat(scores)
            weights = scores.softmax(dim=0) if weighting == "channel_softmax" else scores
            maps.append(weighted_sum(activation.unsqueeze(0), weights.unsqueeze(0)))
    return finish(torch.cat(maps), images, raw)
