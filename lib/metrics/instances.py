r"""Does a saliency map cover every instance of its class? Two threshold-free scores per map.

For a map :math:`m` on an image of :math:`W \times H` pixels and the boxes
:math:`B_1, \dots, B_K` (:math:`K \ge 2`) of the instances of the map's target class, let
:math:`\hat m = (m - \min m) / (\max m - \min m)` be the map normalised to [0, 1] (a constant
map is all ones when its value is positive, all zeros otherwise). Then

- the **weakest instance's peak** :math:`\min_k \max_{p \in B_k} \hat m(p)`: 1 when the map
  reaches its maximum inside every box, near 0 when some instance is left dark. Higher is
  better. Chattopadhay et al. 2018 (Grad-CAM++, abstract and Fig. 1) motivate Grad-CAM++ by
  this: when an image holds several instances of a class, the feature maps with smaller
  footprints fade in Grad-CAM's globally averaged weighting, and Grad-CAM++'s pixel-wise
  weights are meant to give every instance its share.
- the **share outside** :math:`\sum_{p \notin \cup_k B_k} \hat m(p) / \sum_p \hat m(p)`: the
  fraction of the map's mass that lies outside every instance's box (1 for a map with no mass).
  Lower is more localised. A uniform map scores the fraction of the image the boxes leave
  uncovered, and 1 on the weakest peak: read both scores against that reference.

Pixels are in a box by the rule of :func:`lib.data.object_mask`: column ``j`` is inside when
``floor(x0) <= j <= floor(x1)`` (rows alike), clipped to the image. Boxes are ``x0 y0 x1 y1`` in
the map's pixel coordinates (the original image's, for maps brought back with
:func:`lib.data.whole_map_to_original`).

:func:`instance_counts` gives the number of instances of each (image, category) pair of
:func:`lib.metrics.pointing.pairs` without opening an image, to keep the pairs with two or more.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

import numpy as np
import torch

from .. import data as _data
from ._checks import check_finite, check_tensor

__all__ = ["BOX_TOLERANCE", "box_masks", "normalise", "weakest_instance_peak", "outside_share", "instance_counts"]

BOX_TOLERANCE = 1.0
"""How many pixels a box may reach beyond the image's edges (rounding) before it is rejected."""


def _size(size) -> tuple[int, int]:
    try:
        width, height = (operator.index(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be a pair of positive ints (width, height), got {size!r}") from None
    if width <= 0 or height <= 0:
        raise ValueError(f"size must be a pair of positive ints (width, height), got {size!r}")
    return width, height


def box_masks(boxes, size) -> torch.Tensor:
    """Boolean ``(K, H, W)`` masks of ``K >= 2`` instance boxes on a ``W x H`` image.

    Column ``j`` of box ``(x0, y0, x1, y1)`` is inside when ``floor(x0) <= j <= floor(x1)``,
    clipped to the image (rows alike), as :func:`lib.data.object_mask` rasterises boxes.

    Args:
        boxes: ``(K, 4)`` boxes ``x0 y0 x1 y1`` in the image's pixel coordinates.
        size: ``(width, height)`` of the image.

    Raises:
        ValueError: no boxes, a single box (the scores compare instances), boxes that are not
            ``(K, 4)`` finite numbers, a box with ``x1 < x0`` or ``y1 < y0``, or a box reaching
            more than :data:`BOX_TOLERANCE` pixels outside the image (boxes in another
            coordinate frame than the map, e.g. the network's input).
    """
    width, height = _size(size)
    try:
        b = torch.as_tensor(np.asarray(boxes, dtype=np.float64) if not isinstance(boxes, torch.Tensor) else boxes,
                            dtype=torch.float64)
    except (TypeError, ValueError):
        raise ValueError(f"boxes must be a (K, 4) array of numbers, got {type(boxes).__name__}") from None
    if b.numel() == 0:
        raise ValueError("no boxes: the scores need the boxes of at least 2 instances of the class")
    if b.dim() != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must be (K, 4) rows x0 y0 x1 y1, got shape {tuple(b.shape)}")
    if b.shape[0] == 1:
        raise ValueError("one instance: the scores compare the instances of a class and need at least 2 boxes")
    if not torch.isfinite(b).all():
        raise ValueError("boxes must be finite numbers")
    t = BOX_TOLERANCE
    for k, (x0, y0, x1, y1) in enumerate(b.tolist()):
        if x1 < x0 or y1 < y0:
            raise ValueError(f"box {k} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) has x1 < x0 or y1 < y0; boxes are x0 y0 x1 y1")
        if x0 < -t or y0 < -t or x1 > width + t or y1 > height + t:
            raise ValueError(
                f"box {k} ({x0:g}, {y0:g}, {x1:g}, {y1:g}) lies outside the {width}x{height} image "
                f"(by more than {t:g} px): boxes must be in the map's pixel coordinates")
    columns = torch.arange(width, dtype=torch.float64, device=b.device)
    rows = torch.arange(height, dtype=torch.float64, device=b.device)
    low, high = b.floor()[:, :2], b.floor()[:, 2:]
    inside_x = (columns[None] >= low[:, :1]) & (columns[None] <= high[:, :1])  # (K, W)
    inside_y = (rows[None] >= low[:, 1:]) & (rows[None] <= high[:, 1:])  # (K, H)
    masks = inside_y[:, :, None] & inside_x[:, None, :]
    empty = (~masks.flatten(1).any(dim=1)).nonzero().flatten().tolist()
    if empty:
        raise ValueError(f"box {empty[0]} covers no pixel of the {width}x{height} image")
    return masks


def normalise(saliency_map: torch.Tensor) -> torch.Tensor:
    """Min-max normalise one map to [0, 1], float64; a constant map: ones if positive, else zeros."""
    m = saliency_map.detach().to(torch.float64)
    low, high = m.min(), m.max()
    if high > low:
        return (m - low) / (high - low)
    return torch.ones_like(m) if high > 0 else torch.zeros_like(m)


def _checked(saliency_map, boxes, size, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    width, height = _size(size)
    check_tensor(saliency_map, f"{what}: the map", "(H, W)")
    if saliency_map.dim() != 2:
        raise ValueError(f"the map must be a 2-D (H, W) tensor, got {tuple(saliency_map.shape)}")
    if tuple(saliency_map.shape) != (height, width):
        raise ValueError(
            f"the map is {tuple(saliency_map.shape)} but the image is {width}x{height} (expected ({height}, {width})): "
            "bring maps back to the image first (lib.data.whole_map_to_original)")
    check_finite(saliency_map, f"{what}: the map", item=None)
    return normalise(saliency_map), box_masks(boxes, (width, height)).to(saliency_map.device)


def weakest_instance_peak(saliency_map: torch.Tensor, boxes, size) -> float:
    r"""The weakest instance's peak :math:`\min_k \max_{p \in B_k} \hat m(p)` (module docstring).

    Args:
        saliency_map: ``(H, W)`` map on the image (any real values; normalised here).
        boxes: ``(K, 4)``, ``K >= 2``, the instances' boxes ``x0 y0 x1 y1`` in the map's pixels.
        size: ``(width, height)`` of the image.

    Returns:
        A number in [0, 1]; higher: every instance is highlighted.

    Raises:
        ValueError: a map that is not ``(height, width)`` or not finite; bad boxes (:func:`box_masks`).
        TypeError: a map that is not a real tensor.
    """
    m, masks = _checked(saliency_map, boxes, size, "weakest_instance_peak")
    peaks = torch.where(masks, m[None], torch.zeros_like(m)[None]).flatten(1).max(dim=1).values
    return float(peaks.min())


def outside_share(saliency_map: torch.Tensor, boxes, size) -> float:
    r"""The share of the map's mass outside every instance's box (module docstring).

    :math:`\sum_{p \notin \cup_k B_k} \hat m(p) / \sum_p \hat m(p)`, 1 for a map with no mass.

    Args and Raises as :func:`weakest_instance_peak`.

    Returns:
        A number in [0, 1]; lower: more localised on the instances.
    """
    m, masks = _checked(saliency_map, boxes, size, "outside_share")
    total = float(m.sum())
    if total == 0.0:
        return 1.0
    return float(m[~masks.any(dim=0)].sum()) / total


def instance_counts(samples: Sequence[_data.Sample] | _data.Dataset, pairs) -> torch.Tensor:
    """How many instances (boxes) of its category each (image, category) pair's image holds.

    Args:
        samples: a :class:`lib.data.Dataset` (read without opening an image) or a sequence of
            :class:`lib.data.Sample`.
        pairs: ``(sample index, category)`` pairs, e.g. :func:`lib.metrics.pointing.pairs`.

    Returns:
        int64 ``(P,)``.

    Raises:
        ValueError: a pair that is not two ints, or an index outside ``samples``.
    """
    counts = []
    for pair in pairs:
        try:
            index, category = (operator.index(v) for v in pair)
        except (TypeError, ValueError):
            raise ValueError(f"each pair must be (sample index, category) ints, got {pair!r}") from None
        if not 0 <= index < len(samples):
            raise ValueError(f"pair {pair!r}: sample index outside the {len(samples)} samples")
        if isinstance(samples, _data.Dataset):
            labels, _ = samples.objects(index)
        else:
            labels = samples[index].box_labels
        counts.append(int((torch.as_tensor(labels).reshape(-1) == category).sum()))
    return torch.tensor(counts, dtype=torch.int64)
