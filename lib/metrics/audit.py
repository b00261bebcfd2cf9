r"""The checks a practitioner runs before trusting a saliency map (the tutorial's production checklist).

* :func:`top_fraction_jaccard` and :func:`agreement_matrix`: do two methods point at the same pixels?  Jaccard index
  of their top-``fraction`` pixel sets (the tutorial's "IG vs GradCAM Jaccard@10%").
* :func:`threshold_iou`: localisation as in CheXNet (Rajpurkar et al. 2017): the map binarised at ``threshold``
  times its maximum, intersection over union with the ground-truth mask.
* :func:`augmentation_stability`: do similar inputs give similar maps?  Pearson correlation of the map of an augmented
  image, mapped back, with the original map, for five small augmentations.
* :func:`class_discrimination`: maps of each image's top-k classes and their top-fraction overlap.
* Integrated Gradients' completeness error is :func:`lib.saliency.gradients.completeness_error` (and the
  ``completeness_tolerance`` option of ``integrated_gradients``), beside the method.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from ..capture import check_images
from ..saliency.passes import predict, resolve_targets
from ..saliency.registry import resolve_method
from ._checks import check_tensor

__all__ = ["top_fraction_jaccard", "agreement_matrix", "threshold_iou", "AUGMENTATIONS", "augmentation_stability",
           "class_discrimination", "pearson", "train_mode_maps", "boxes_mask", "label_box_masks"]


def _maps(maps, what: str) -> torch.Tensor:
    maps = check_tensor(maps, what, "(B, H, W)")
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"{what} must be (B, H, W) maps with at least one map of at least one pixel, got shape "
                         f"{tuple(maps.shape)}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{what} has NaN or infinite values; a map must be finite to be ranked or thresholded")
    return maps


def _fraction(value, what: str, *, closed: bool = True) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not (0.0 < float(value) <= 1.0 if closed else 0.0 < float(value) < 1.0):
        raise ValueError(f"{what} must be a number in {'(0, 1]' if closed else '(0, 1)'}, got {value!r}")
    return float(value)


def _top_sets(maps: torch.Tensor, fraction: float) -> torch.Tensor:
    """(B, H*W) bool: exactly ``max(1, round(fraction * H * W))`` pixels per map, ties broken by position."""
    flat = maps.flatten(1)
    k = max(1, round(fraction * flat.shape[1]))
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.zeros_like(flat, dtype=torch.bool).scatter_(1, order, True)


def top_fraction_jaccard(maps_a, maps_b, fraction: float = 0.1) -> torch.Tensor:
    """(B,) Jaccard index :math:`|A \\cap B| / |A \\cup B|` of the two maps' top-``fraction`` pixel sets.

    Raises:
        ValueError: maps that are not (B, H, W) finite tensors of one shape, a fraction outside (0, 1].
    """
    a, b = _maps(maps_a, "top_fraction_jaccard: maps_a"), _maps(maps_b, "top_fraction_jaccard: maps_b")
    if a.shape != b.shape:
        raise ValueError(f"top_fraction_jaccard: maps_a {tuple(a.shape)} and maps_b {tuple(b.shape)} must have one shape")
    fraction = _fraction(fraction, "top_fraction_jaccard: fraction")
    sa, sb = _top_sets(a, fraction), _top_sets(b, fraction)
    return (sa & sb).sum(1).float() / (sa | sb).sum(1).float()


def agreement_matrix(maps: Mapping[str, torch.Tensor], fraction: float = 0.1):
    """Method x method mean top-``fraction`` Jaccard over the images, as a pandas DataFrame (symmetric, unit diagonal).

    Raises:
        ValueError: fewer than two methods, maps of different shapes (see :func:`top_fraction_jaccard`).
    """
    import pandas as pd

    if not isinstance(maps, Mapping) or len(maps) < 2:
        raise ValueError(f"agreement_matrix: give a mapping of at least two method names to (B, H, W) maps, got {type(maps).__name__}")
    names = list(maps)
    frame = pd.DataFrame(1.0, index=names, columns=names)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            frame.loc[a, b] = frame.loc[b, a] = float(top_fraction_jaccard(maps[a], maps[b], fraction).mean())
    return frame


def threshold_iou(maps, masks, threshold: float = 0.5) -> torch.Tensor:
    """(B,) IoU of ``{p : s_p >= threshold * max s}`` with the ground-truth mask (CheXNet's localisation protocol,
    Rajpurkar et al. 2017, Sec. 5: threshold 0.5).  A map whose maximum is not above 0 selects nothing: IoU 0.

    Raises:
        ValueError: maps and masks of different (B, H, W) shapes, masks not boolean or empty, a threshold outside (0, 1).
    """
    maps = _maps(maps, "threshold_iou: maps")
    masks = check_tensor(masks, "threshold_iou: masks", "(B, H, W)")
    if masks.shape != maps.shape or masks.dtype != torch.bool:
        raise ValueError(f"threshold_iou: masks must be boolean of the maps' shape {tuple(maps.shape)}, got "
                         f"{masks.dtype} {tuple(masks.shape)}")
    if not masks.flatten(1).any(1).all():
        raise ValueError("threshold_iou: a ground-truth mask is empty; IoU with no object is undefined")
    threshold = _fraction(threshold, "threshold_iou: threshold", closed=False)
    peak = maps.flatten(1).amax(1).view(-1, 1, 1)
    selected = (maps >= threshold * peak) & (peak > 0)
    return (selected & masks).flatten(1).sum(1).float() / (selected | masks).flatten(1).sum(1).float()


def pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(B,) Pearson correlation of paired maps (flattened); a constant map gives NaN (no correlation is defined).

    Raises:
        ValueError: maps that are not tensors of one shape with a batch dimension.
    """
    if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor) or a.shape != b.shape or a.ndim < 2:
        raise ValueError(f"pearson: maps must be two tensors of one shape (B, ...), got {getattr(a, 'shape', type(a).__name__)} "
                         f"and {getattr(b, 'shape', type(b).__name__)}")
    x, y = a.flatten(1).double(), b.flatten(1).double()
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    denominator = (x.pow(2).sum(1) * y.pow(2).sum(1)).sqrt()
    return torch.where(denominator > 0, (x * y).sum(1) / denominator.clamp_min(1e-300), torch.nan).float()


AUGMENTATIONS = ("flip", "shift right", "shift left", "brighter", "darker")
"""The five small augmentations of :func:`augmentation_stability`."""


def _shift(x: torch.Tensor, pixels: int) -> torch.Tensor:
    """Shift right by ``pixels`` (left when negative), edge columns repeated."""
    if pixels > 0:
        return torch.cat([x[..., :1].expand(*x.shape[:-1], pixels), x[..., :-pixels]], dim=-1)
    return torch.cat([x[..., -pixels:], x[..., -1:].expand(*x.shape[:-1], -pixels)], dim=-1)


def augmentation_stability(model, method, images, targets=None, *, shift: float = 0.04, brightness: float = 0.1,
                           method_kwargs: dict | None = None, std: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    r"""Pearson correlation of each augmented image's map, mapped back, with the original map (the tutorial's
    stability check: "correlation across 5 minor augmentations").

    The augmentations: horizontal flip (map flipped back); shifts right and left by ``shift`` of the width (maps
    shifted back, compared on the columns both images saw); brightness ``+brightness`` and ``-brightness`` of the
    pixel range, added in pixel space (``std``: the model's per-channel normalisation, so that a pixel change
    :math:`\delta` is :math:`\delta / \sigma_c` in the model's input; default 1).  The class explained is fixed
    from the original image.

    Returns:
        ``{augmentation: (B,) correlation}`` in the order of :data:`AUGMENTATIONS` (NaN where a map is constant).

    Raises:
        ValueError: bad images or targets, a shift outside (0, 0.5), a brightness outside (0, 1).
    """
    check_images(images)
    function = resolve_method(method)
    kwargs = dict(method_kwargs or {})
    if isinstance(shift, (bool, np.bool_)) or not isinstance(shift, numbers.Real) or not 0 < shift < 0.5:
        raise ValueError(f"augmentation_stability: shift must be a fraction of the width in (0, 0.5), got {shift!r}")
    if isinstance(brightness, (bool, np.bool_)) or not isinstance(brightness, numbers.Real) or not 0 < brightness < 1:
        raise ValueError(f"augmentation_stability: brightness must be in (0, 1), got {brightness!r}")
    shift, brightness = float(shift), float(brightness)
    targets = resolve_targets(model, images, targets)
    if std is None:
        scale = torch.ones(images.shape[1])
    else:
        try:
            values = std.detach().cpu() if isinstance(std, torch.Tensor) else np.asarray(std, dtype=np.float64)
            scale = torch.as_tensor(values, dtype=torch.float64).to(images.dtype).flatten()
        except (TypeError, ValueError):
            scale = None
        if scale is None or scale.numel() != images.shape[1] or not torch.isfinite(scale).all() or (scale <= 0).any():
            raise ValueError(f"augmentation_stability: std must be {images.shape[1]} finite positive numbers (the model's "
                             f"per-channel normalisation), got {std!r}")
    step = (brightness / scale.to(images)).view(1, -1, 1, 1)
    pixels = max(1, round(shift * images.shape[-1]))
    original = function(model, images, targets, **kwargs)
    out = {}
    flipped = function(model, images.flip(-1), targets, **kwargs).flip(-1)
    out["flip"] = pearson(original, flipped)
    right = function(model, _shift(images, pixels), targets, **kwargs)
    out["shift right"] = pearson(original[..., :-pixels], right[..., pixels:])
    left = function(model, _shift(images, -pixels), targets, **kwargs)
    out["shift left"] = pearson(original[..., pixels:], left[..., :-pixels])
    out["brighter"] = pearson(original, function(model, images + step, targets, **kwargs))
    out["darker"] = pearson(original, function(model, images - step, targets, **kwargs))
    return out


def class_discrimination(model, method, images, *, k: int = 3, fraction: float = 0.1,
                         method_kwargs: dict | None = None) -> dict:
    """Maps of each image's top-``k`` classes and their pairwise top-``fraction`` Jaccard (the checklist's "does
    GradCAM highlight different regions for different classes?").

    Returns:
        A dict: ``classes`` (B, k), the top-k classes by logit; ``maps`` (B, k, H, W); ``overlap`` (B, k, k), the
        Jaccard index of each pair; ``mean_overlap`` (B,), its mean over the pairs i < j.

    Raises:
        ValueError: k not a whole number in [2, number of classes], a fraction outside (0, 1].
    """
    check_images(images)
    function = resolve_method(method)
    with torch.no_grad():
        logits = predict(model, images)[0]
    if isinstance(k, (bool, np.bool_)) or not isinstance(k, numbers.Integral) or not 2 <= k <= logits.shape[1]:
        raise ValueError(f"class_discrimination: k must be a whole number in [2, {logits.shape[1]}], got {k!r}")
    k = int(k)
    fraction = _fraction(fraction, "class_discrimination: fraction")
    classes = logits.topk(k, dim=1).indices
    maps = torch.stack([function(model, images, classes[:, j], **dict(method_kwargs or {})) for j in range(k)], dim=1)
    overlap = torch.ones(images.shape[0], k, k)
    pairs = []
    for i in range(k):
        for j in range(i + 1, k):
            overlap[:, i, j] = overlap[:, j, i] = top_fraction_jaccard(maps[:, i], maps[:, j], fraction).cpu()
            pairs.append(overlap[:, i, j])
    return {"classes": classes, "maps": maps, "overlap": overlap, "mean_overlap": torch.stack(pairs, 1).mean(1)}


class _BatchStatisticsNorm(torch.nn.Module):
    """A BatchNorm that normalises with the statistics of the batch it sees (training mode's arithmetic) in any mode,
    without updating running statistics: what a map computed with ``model.train()`` would see."""

    def __init__(self, norm: torch.nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias, self.eps = norm.weight, norm.bias, norm.eps

    def forward(self, x):
        return torch.nn.functional.batch_norm(x, None, None, self.weight, self.bias, training=True, eps=self.eps)


def train_mode_maps(model, method, images, targets=None, *, method_kwargs: dict | None = None) -> dict:
    """Maps as a model left in training mode would give them: every BatchNorm of a *copy* of the model normalises by
    the statistics of the batch (the tutorial's "Batch Normalization artifacts"), while the library's methods
    otherwise run every model in eval mode (``lib.capture.prepared``).  The caller's model is not touched.

    Returns:
        A dict: ``eval`` and ``train`` (B, H, W) maps, ``correlation`` (B,) their Pearson correlation and ``targets``
        (B,), the classes explained, fixed from the eval-mode prediction so that both maps explain the same class.

    Raises:
        ValueError: a model without BatchNorm layers (training mode would change nothing), a batch of one image (batch
            statistics of one image per channel are defined but degenerate).
    """
    import copy
    import dataclasses

    check_images(images)
    if images.shape[0] < 2:
        raise ValueError("train_mode_maps: give at least 2 images; training-mode BatchNorm normalises over the batch")
    function = resolve_method(method)
    network = model.model if hasattr(model, "model") and isinstance(model.model, torch.nn.Module) else model
    norms = [name for name, m in network.named_modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        raise ValueError("train_mode_maps: the model has no BatchNorm layer, so training mode changes no map")
    targets = resolve_targets(model, images, targets)
    twin = copy.deepcopy(network)
    for name in norms:
        parent, _, leaf = name.rpartition(".")
        owner = twin.get_submodule(parent) if parent else twin
        setattr(owner, leaf, _BatchStatisticsNorm(getattr(owner, leaf)))
    copied = dataclasses.replace(model, model=twin) if network is not model else twin
    kwargs = dict(method_kwargs or {})
    eval_maps = function(model, images, targets, **kwargs)
    train_maps = function(copied, images, targets, **kwargs)
    return {"eval": eval_maps, "train": train_maps, "correlation": pearson(eval_maps, train_maps), "targets": targets}


def boxes_mask(boxes, size: int | tuple[int, int]) -> torch.Tensor:
    """(H, W) bool union of ``(K, 4)`` boxes ``x0 y0 x1 y1`` in the map's pixel coordinates (``lib.data.Batch.boxes``),
    pixel ``j`` inside when ``floor(x0) <= j <= floor(x1)`` (rows alike), clipped to the map: the ground truth of
    :func:`threshold_iou`.  No boxes give an all-False mask.

    Raises:
        ValueError: boxes that are not (K, 4) finite numbers or have ``x1 < x0`` or ``y1 < y0``.
    """
    pair = (size, size) if not isinstance(size, (tuple, list)) else tuple(size)
    if len(pair) != 2 or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) or v < 1 for v in pair):
        raise ValueError(f"boxes_mask: size must be a whole number >= 1 or a (height, width) pair, got {size!r}")
    height, width = (int(v) for v in pair)
    try:
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float64))
    except (TypeError, ValueError) as error:
        raise ValueError(f"boxes_mask: boxes must be a (K, 4) array of x0 y0 x1 y1, got {boxes!r}") from error
    if b.numel() == 0:
        b = b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes_mask: boxes must be a (K, 4) array of x0 y0 x1 y1, got shape {tuple(b.shape)}")
    if not torch.isfinite(b).all() or (b[:, 2] < b[:, 0]).any() or (b[:, 3] < b[:, 1]).any():
        raise ValueError(f"boxes_mask: boxes must be finite x0 y0 x1 y1 with x1 >= x0 and y1 >= y0, got {b.tolist()}")
    mask = torch.zeros(height, width, dtype=torch.bool)
    limits = torch.tensor([width, height, width, height], dtype=b.dtype)
    for x0, y0, x1, y1 in b.clamp(min=-1.0).minimum(limits).floor().long().tolist():  # clamped: no int64 overflow
        mask[max(y0, 0):max(y1 + 1, 0), max(x0, 0):max(x1 + 1, 0)] = True
    return mask


def label_box_masks(boxes: Sequence, box_labels: Sequence, labels, size: int | tuple[int, int]) -> torch.Tensor:
    """(B, H, W) bool: per image, the union of its boxes of its label (:func:`boxes_mask`), from a
    ``lib.data.Batch``'s ``boxes`` and ``box_labels``.  An image without such a box, or whose boxes
    the crop cut away, gets an all-False mask: leave it out before :func:`threshold_iou`
    (``masks.flatten(1).any(1)``).

    Raises:
        ValueError: lists of different lengths, or boxes as :func:`boxes_mask` refuses them.
    """
    labels = [int(label) for label in (labels.tolist() if isinstance(labels, torch.Tensor) else labels)]
    if not len(boxes) == len(box_labels) == len(labels):
        raise ValueError(f"label_box_masks: boxes, box_labels and labels must have one entry per image, got "
                         f"{len(boxes)}, {len(box_labels)} and {len(labels)}")
    masks = []
    for image_boxes, image_labels, label in zip(boxes, box_labels, labels):
        chosen = torch.as_tensor(image_labels).reshape(-1) == label
        masks.append(boxes_mask(torch.as_tensor(image_boxes, dtype=torch.float64).reshape(-1, 4)[chosen]
                                if chosen.numel() else [], size))
    return torch.stack(masks)
