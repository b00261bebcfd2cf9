r"""The pointing game (Zhang et al., *Top-down neural attention by excitation backprop*, ECCV 2016),
as evaluated by TorchRay (Fong et al. 2019) and by Rebuffi et al., *There and back again:
revisiting backpropagation saliency methods*, CVPR 2020 (supplementary A).

A saliency map "points" at its maximum. The point is a **hit** for class :math:`c` when some
ground-truth pixel of :math:`c` lies within a tolerance :math:`\tau = 15` px of it, measured on
the **original** image (the map is first carried back from the network's input crop with
:func:`lib.data.map_to_original`):

.. math::
    \mathrm{hit}(p, \Omega_c) = \big[\exists\, q \in \Omega_c : \|q - p\|_2 < \tau\big],
    \qquad
    \mathrm{acc} = \frac{1}{|C|} \sum_{c \in C} \frac{|\mathrm{hits}_c|}{|\mathrm{hits}_c| + |\mathrm{misses}_c|}.

Choices, with their sources:

- **Strict or inclusive tolerance.** TorchRay's ``PointingGame.evaluate`` accepts pixels with
  ``(u - x)^2 + (v - y)^2 < tolerance^2`` (strict: a pixel exactly 15 px away is a miss); the
  paper's text says "within a threshold of 15 pixels". ``inclusive=False`` (default) follows
  TorchRay, whose code produced the paper's numbers; ``inclusive=True`` accepts distance
  :math:`\le \tau`. Pixels are indexed by their integer coordinates (TorchRay's
  ``arange(H)``, ``arange(W)``), the point is ``(x, y) = (column, row)``.
- **Ties.** The point is the first maximum in row-major order (``torch.argmax`` on the
  flattened map, as TorchRay's ``_saliency_to_point``). A constant map therefore points at
  the top-left pixel of the original image (usually a miss: a map that says nothing scores
  nothing).
- **Per-class averaging.** TorchRay averages over all of the dataset's classes (an absent
  class counts as 0 with ``clamp(min=1)``); VOC has all 20 classes present in its test set so
  this is the mean over present classes. We average over the classes **present** among the
  evaluated pairs (1,000 ImageNet classes are never all present in a subsample).
- **Centre baseline.** TorchRay's ``center`` method points at ``(W / 2, H / 2)`` of the
  original image: :func:`centre_baseline`.
- **Difficult subset** (Zhang et al. 2016; Rebuffi et al. supp. A): the image/class pairs
  whose objects of that class cover less than 25% of the image **and** whose image shows at
  least one other class. TorchRay reads these flags from files made for VOC07/COCO14; we
  recompute the rule from the annotation (:func:`difficult`). ImageNet validation images carry
  a single class, so the second condition can never hold; for single-class datasets
  (ImageNet, the embedded set) :func:`difficult` applies the area rule alone and says so.
- TorchRay's benchmark smooths gradient-type maps with a Gaussian (``smooth=0.02``) before
  taking the maximum; this module takes the maps as given.

The **grid pointing game** (Böhle, Fritz & Schiele, *B-cos networks: alignment is all we need for
interpretability*, CVPR 2022, Sec. 5.1) tests class selectivity on multi-class scenes the data
lacks: ``rows x cols`` images of different classes are tiled into one input; the map for each
tile's class should fall in that tile. :func:`grid_pointing` scores both the argmax (hit when
the maximum lies in the tile) and Böhle et al.'s localisation score (the fraction of the map's
positive mass inside the tile).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .. import data as _data
from .stats import Interval, bootstrap_ci

__all__ = [
    "PointingResult",
    "GridResult",
    "max_points",
    "hits_at",
    "pointing_hits",
    "class_mean_accuracy",
    "difficult",
    "pointing_game",
    "pointing_games",
    "PointingTable",
    "centre_baseline",
    "centre_maps",
    "pointing_interval",
    "grid_groups",
    "grid_images",
    "grid_pointing",
]

SINGLE_CLASS_SOURCES = ("imagenet", "embedded")
"""Dataset names (prefixes of ``Sample.source``) whose images carry one class: difficult = area rule only."""


# --------------------------------------------------------------------------------------------
# Hits
# --------------------------------------------------------------------------------------------


def max_points(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The point ``(x, y)`` of each map's maximum (first in row-major order), int64 ``(N, 2)``.

    Args:
        maps: ``N`` tensors ``(H_i, W_i)`` (sizes may differ) or one ``(N, H, W)`` tensor.
    """
    points = []
    for m in maps:
        if m.dim() != 2 or m.numel() == 0:
            raise ValueError(f"each map must be a non-empty (H, W) tensor, got {tuple(m.shape)}")
        index = int(torch.argmax(m.reshape(-1)))
        points.append((index % m.shape[1], index // m.shape[1]))
    return torch.tensor(points, dtype=torch.int64).reshape(-1, 2)


def _hit(point: tuple[float, float], mask: torch.Tensor, tolerance: float, inclusive: bool) -> bool:
    height, width = mask.shape
    x, y = point
    x0, x1 = max(0, math.floor(x - tolerance)), min(width - 1, math.ceil(x + tolerance))
    y0, y1 = max(0, math.floor(y - tolerance)), min(height - 1, math.ceil(y + tolerance))
    if x1 < x0 or y1 < y0:
        return False
    window = mask[y0:y1 + 1, x0:x1 + 1]
    if not window.any():
        return False
    v = (torch.arange(y0, y1 + 1, dtype=torch.float64) - y)[:, None] ** 2
    u = (torch.arange(x0, x1 + 1, dtype=torch.float64) - x)[None, :] ** 2
    d2 = v + u
    accept = d2 <= tolerance**2 if inclusive else d2 < tolerance**2
    return bool((window.to(torch.bool) & accept.to(window.device)).any())


def hits_at(
    points: torch.Tensor | Sequence[Sequence[float]],
    masks: Sequence[torch.Tensor],
    tolerance: float = 15,
    *,
    inclusive: bool = False,
) -> torch.Tensor:
    r"""Pointing-game hits of given points: bool ``(N,)``.

    ``hit_i = any pixel q of masks[i] with ||q - points[i]|| < tolerance`` (``<=`` with
    ``inclusive``), TorchRay's ``PointingGame.evaluate``.

    Args:
        points: ``(N, 2)`` as ``(x, y)`` = (column, row), integer or fractional.
        masks: ``N`` boolean ``(H_i, W_i)`` ground-truth masks (e.g. :func:`lib.data.object_mask`).
        tolerance: radius in pixels (15 in TorchRay and both papers).
        inclusive: accept a pixel at exactly ``tolerance`` (the paper's wording) instead of
            TorchRay's strict ``<``.

    Raises:
        ValueError: mismatched lengths, a mask that is not 2-D, a negative tolerance.
    """
    points = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    if len(masks) != points.shape[0]:
        raise ValueError(f"{points.shape[0]} points but {len(masks)} masks")
    if not tolerance >= 0:
        raise ValueError(f"tolerance must be >= 0, got {tolerance}")
    out = []
    for (x, y), mask in zip(points.tolist(), masks):
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ValueError("each mask must be a 2-D (H, W) tensor")
        out.append(_hit((x, y), mask, float(tolerance), inclusive))
    return torch.tensor(out, dtype=torch.bool)


def pointing_hits(
    maps_original: Sequence[torch.Tensor],
    masks: Sequence[torch.Tensor],
    tolerance: float = 15,
    *,
    inclusive: bool = False,
) -> torch.Tensor:
    """Hits of maps already on the original images: the first maximum within ``tolerance`` of the mask.

    Args:
        maps_original: ``N`` maps ``(H_i, W_i)`` on the original images (see
            :func:`lib.data.map_to_original`).
        masks: ``N`` boolean masks of the same sizes.
        tolerance, inclusive: see :func:`hits_at`.

    Returns:
        bool ``(N,)``.
    """
    if len(maps_original) != len(masks):
        raise ValueError(f"{len(maps_original)} maps but {len(masks)} masks")
    for m, k in zip(maps_original, masks):
        if tuple(m.shape) != tuple(k.shape):
            raise ValueError(f"map {tuple(m.shape)} and mask {tuple(k.shape)} differ in size")
    return hits_at(max_points(maps_original), masks, tolerance, inclusive=inclusive)


def class_mean_accuracy(hits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    r"""Mean over the classes present of each class's hit rate (Rebuffi et al. supp. A): float64 scalar.

    ``nan`` for an empty selection.
    """
    hits = torch.as_tensor(hits).reshape(-1).to(torch.float64)
    labels = torch.as_tensor(labels).reshape(-1).long()
    if hits.numel() != labels.numel():
        raise ValueError(f"{hits.numel()} hits but {labels.numel()} labels")
    if hits.numel() == 0:
        return torch.tensor(float("nan"), dtype=torch.float64)
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, hits)
    counts = torch.zeros(len(classes), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(hits))
    return (sums / counts).mean()


def difficult(
    sample: _data.Sample,
    label: int | None = None,
    *,
    area_fraction: float = 0.25,
    other_class: bool | None = None,
) -> bool:
    """Whether an image/class pair is in the pointing game's "difficult" subset (Zhang et al. 2016).

    Difficult: the objects of class ``label`` cover less than ``area_fraction`` of the image
    (area of the union of its boxes or segments, :func:`lib.data.object_mask`) and, when
    ``other_class`` holds, the image shows at least one other class.

    Args:
        label: the class (default ``sample.label``).
        other_class: require another class in the image. None: required, except for
            single-class datasets (``sample.source`` starting with ``imagenet`` or
            ``embedded``), where only the area rule is applied (an ImageNet validation image
            is annotated with one class, so the rule could never hold).
    """
    label = sample.label if label is None else int(label)
    if other_class is None:
        other_class = not str(sample.source).startswith(SINGLE_CLASS_SOURCES)
    mask = _data.object_mask(sample, label)
    small = float(mask.to(torch.float64).mean()) < area_fraction
    if not other_class:
        return small
    return small and bool((sample.box_labels != label).any())


# --------------------------------------------------------------------------------------------
# The game on a batch
# --------------------------------------------------------------------------------------------


@dataclass
class PointingResult:
    """Per-pair outcomes of a pointing game and their class-averaged accuracies.

    Attributes:
        hits: bool ``(N,)``, one per evaluated image/class pair.
        labels: int64 ``(N,)``, the class of each pair.
        difficult: bool ``(N,)``, the pair is in the difficult subset.
        points: int64/float ``(N, 2)`` ``(x, y)`` on the original image.
        accuracy: mean over classes of the per-class hit rate (all pairs).
        accuracy_difficult: the same on the difficult pairs (``nan`` when there are none).
    """

    hits: torch.Tensor
    labels: torch.Tensor
    difficult: torch.Tensor
    points: torch.Tensor
    accuracy: float
    accuracy_difficult: float

    @classmethod
    def from_hits(cls, hits, labels, difficult, points) -> "PointingResult":
        hits = torch.as_tensor(hits, dtype=torch.bool)
        labels = torch.as_tensor(labels, dtype=torch.int64)
        difficult = torch.as_tensor(difficult, dtype=torch.bool)
        return cls(
            hits, labels, difficult, points,
            float(class_mean_accuracy(hits, labels)),
            float(class_mean_accuracy(hits[difficult], labels[difficult])),
        )

    @staticmethod
    def cat(results: Sequence["PointingResult"]) -> "PointingResult":
        """Join the results of several batches."""
        if not results:
            raise ValueError("no results to join")
        return PointingResult.from_hits(
            torch.cat([r.hits for r in results]),
            torch.cat([r.labels for r in results]),
            torch.cat([r.difficult for r in results]),
            torch.cat([r.points.to(torch.float64) for r in results]),
        )

    def interval(self, subset: str = "all", **kwargs) -> Interval:
        """95% bootstrap interval of the class-averaged accuracy (see :func:`pointing_interval`)."""
        return pointing_interval(self, subset=subset, **kwargs)


def _targets(samples: Sequence[_data.Sample], targets) -> list[int]:
    if targets is None:
        return [int(s.label) for s in samples]
    if isinstance(targets, int):
        return [targets] * len(samples)
    targets = torch.as_tensor(targets).reshape(-1).tolist()
    if len(targets) != len(samples):
        raise ValueError(f"{len(targets)} targets for {len(samples)} samples")
    return [int(t) for t in targets]


def pointing_game(
    maps: torch.Tensor,
    samples: Sequence[_data.Sample],
    targets=None,
    *,
    input_size: int,
    crop_fraction: float = 0.875,
    tolerance: float = 15,
    inclusive: bool = False,
    area_fraction: float = 0.25,
) -> PointingResult:
    """Play the pointing game with maps on the network's input (Rebuffi et al. 2020, supp. A).

    Each map is carried back to its original image (:func:`lib.data.map_to_original`: the
    inverse of the resize + centre crop, zeros outside the crop), its first maximum is taken,
    and it is a hit when it lies within ``tolerance`` px of the target class's boxes/segments
    (:func:`lib.data.object_mask`).

    Args:
        maps: ``(B, h, w)`` saliency maps on the input crop (any resolution, usually ``S x S``).
        samples: the ``B`` samples the maps were computed on (for sizes and annotations).
        targets: the class each map explains: None (each sample's label), an int, or ``(B,)``.
            For multi-class scenes pass one map per (image, class present) pair, repeating
            the sample.
        input_size, crop_fraction: the preprocessing's geometry.
        tolerance, inclusive: see :func:`hits_at`.
        area_fraction: the difficult subset's area threshold (:func:`difficult`).

    Returns:
        :class:`PointingResult`.
    """
    samples = list(samples)
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        raise ValueError("maps must be a (B, h, w) tensor")
    if maps.shape[0] != len(samples):
        raise ValueError(f"{maps.shape[0]} maps for {len(samples)} samples")
    labels = _targets(samples, targets)
    originals = _data.map_to_original(maps.detach(), [s.size for s in samples], input_size, crop_fraction)
    masks = [_data.object_mask(s, c) for s, c in zip(samples, labels)]
    points = max_points(originals)
    hits = hits_at(points, masks, tolerance, inclusive=inclusive)
    hard = [difficult(s, c, area_fraction=area_fraction) for s, c in zip(samples, labels)]
    return PointingResult.from_hits(hits, labels, hard, points)


def pointing_games(
    maps: dict,
    samples: Sequence[_data.Sample],
    targets=None,
    *,
    input_size: int,
    crop_fraction: float = 0.875,
    tolerance: float = 15,
    inclusive: bool = False,
    area_fraction: float = 0.25,
) -> dict:
    """:func:`pointing_game` for many sets of maps of the same samples (masks and difficult flags built once).

    Args:
        maps: ``{key: (B, h, w)}``, e.g. ``{(method, layer): maps}``.
        Other arguments as :func:`pointing_game`.

    Returns:
        ``{key: PointingResult}``.
    """
    samples = list(samples)
    labels = _targets(samples, targets)
    sizes = [s.size for s in samples]
    masks = [_data.object_mask(s, c) for s, c in zip(samples, labels)]
    hard = [difficult(s, c, area_fraction=area_fraction) for s, c in zip(samples, labels)]
    keys = list(maps)
    for key in keys:
        m = maps[key]
        if not isinstance(m, torch.Tensor) or m.dim() != 3 or m.shape[0] != len(samples):
            raise ValueError(f"maps[{key!r}] must be ({len(samples)}, h, w)")
    points = torch.zeros(len(keys), len(samples), 2, dtype=torch.int64)
    for i, size in enumerate(sizes):  # every key's map of one image carried back in one call
        stacked = torch.stack([maps[key][i].detach() for key in keys])
        points[:, i] = max_points(_stack_to_original(stacked, size, input_size, crop_fraction))
    return {
        key: PointingResult.from_hits(hits_at(points[k], masks, tolerance, inclusive=inclusive), labels, hard, points[k])
        for k, key in enumerate(keys)
    }


def _stack_to_original(maps: torch.Tensor, size: tuple[int, int], input_size: int, crop_fraction: float) -> torch.Tensor:
    """:func:`lib.data.map_to_original` for ``K`` maps ``(K, h, w)`` of ONE image, in one interpolation each step."""
    width, height = (int(v) for v in size)
    g = _data.crop_geometry(width, height, input_size, crop_fraction)
    m = maps.to(maps.dtype if maps.is_floating_point() else torch.float32)[:, None]
    if m.shape[-2:] != (input_size, input_size):
        m = F.interpolate(m, size=(input_size, input_size), mode="bilinear", align_corners=False)
    frame = m.new_zeros((m.shape[0], 1, g.resized_height, g.resized_width))
    frame[..., g.top:g.top + input_size, g.left:g.left + input_size] = m
    back = F.interpolate(frame, size=(height, width), mode="bilinear", align_corners=False,
                         antialias=height < g.resized_height or width < g.resized_width)
    return back[:, 0]


class PointingTable:
    """Accumulates pointing results over batches, TorchRay-style (``update`` per batch, then ``results``).

    Example::

        table = PointingTable(input_size=224)
        for batch_samples, maps in ...:        # maps: {key: (B, S, S)}
            table.update(maps, batch_samples)
        results = table.results()              # {key: PointingResult}
        frame = table.frame(names=("method", "layer"))
    """

    def __init__(self, **options):
        self.options = options
        self._parts: dict = {}

    def update(self, maps: dict, samples: Sequence[_data.Sample], targets=None) -> None:
        for key, result in pointing_games(maps, samples, targets, **self.options).items():
            self._parts.setdefault(key, []).append(result)

    def add(self, key, result: PointingResult) -> None:
        """Add a result computed elsewhere (e.g. :func:`centre_baseline`) under ``key``."""
        self._parts.setdefault(key, []).append(result)

    def results(self) -> dict:
        return {key: PointingResult.cat(parts) for key, parts in self._parts.items()}

    def frame(self, names: Sequence[str] = ("key",)):
        """One row per key: the key's parts under ``names``, accuracy, accuracy_difficult, n, n_difficult."""
        import pandas as pd

        rows = []
        for key, r in self.results().items():
            parts = key if isinstance(key, tuple) else (key,)
            row = dict(zip(names, parts))
            row.update(accuracy=r.accuracy, accuracy_difficult=r.accuracy_difficult,
                       n=len(r.hits), n_difficult=int(r.difficult.sum()))
            rows.append(row)
        return pd.DataFrame(rows)


def centre_baseline(
    samples: Sequence[_data.Sample],
    targets=None,
    *,
    tolerance: float = 15,
    inclusive: bool = False,
    area_fraction: float = 0.25,
) -> PointingResult:
    """Point at the centre ``(W / 2, H / 2)`` of every original image (TorchRay's ``center`` method).

    The baseline every method must beat; Rebuffi et al. Fig. 3 reports 69.6% (all) and 42.4%
    (difficult) for it on VOC07.
    """
    samples = list(samples)
    labels = _targets(samples, targets)
    points = torch.tensor([[s.size[0] / 2, s.size[1] / 2] for s in samples], dtype=torch.float64).reshape(-1, 2)
    masks = [_data.object_mask(s, c) for s, c in zip(samples, labels)]
    hits = hits_at(points, masks, tolerance, inclusive=inclusive)
    hard = [difficult(s, c, area_fraction=area_fraction) for s, c in zip(samples, labels)]
    return PointingResult.from_hits(hits, labels, hard, points)


def centre_maps(batch: int, size: int | tuple[int, int], *, device=None) -> torch.Tensor:
    """Maps ``(B, H, W)`` that peak at the centre (a cone ``1 - d / d_max``), for the convention's API.

    On an even grid the maximum falls on the pixel just below-right of the exact centre
    (first in row-major order of the four tied pixels); :func:`centre_baseline` points at the
    exact centre of the original image instead.
    """
    height, width = (size, size) if isinstance(size, int) else size
    y = torch.arange(height, dtype=torch.float32, device=device) - (height - 1) / 2
    x = torch.arange(width, dtype=torch.float32, device=device) - (width - 1) / 2
    d = (y[:, None] ** 2 + x[None, :] ** 2).sqrt()
    cone = 1 - d / d.max().clamp_min(1e-12)
    return cone.expand(batch, height, width).clone()


def pointing_interval(
    result: PointingResult,
    *,
    subset: str = "all",
    minus: PointingResult | None = None,
    level: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> Interval:
    """Percentile bootstrap interval of the class-averaged accuracy, resampling image/class pairs.

    With ``minus`` (a result on the same pairs, e.g. the best single layer), the interval of
    the paired difference ``accuracy(result) - accuracy(minus)``, both computed on the same
    resample.

    Args:
        subset: ``"all"`` or ``"difficult"``.
    """
    if subset not in ("all", "difficult"):
        raise ValueError(f"subset must be 'all' or 'difficult', got {subset!r}")
    keep = torch.ones_like(result.hits) if subset == "all" else result.difficult
    hits, labels = result.hits[keep].to(torch.float64), result.labels[keep]
    other = None
    if minus is not None:
        if not torch.equal(minus.labels, result.labels):
            raise ValueError("minus must be evaluated on the same image/class pairs")
        other = minus.hits[keep].to(torch.float64)
    if hits.numel() == 0:
        nan = float("nan")
        return Interval(nan, nan, nan, 0)

    def statistic(index: torch.Tensor) -> torch.Tensor:
        index = index.long()
        value = class_mean_accuracy(hits[index], labels[index])
        if other is not None:
            value = value - class_mean_accuracy(other[index], labels[index])
        return value

    return bootstrap_ci(torch.arange(hits.numel()), statistic, level=level, resamples=resamples, seed=seed)


# --------------------------------------------------------------------------------------------
# Grid pointing game (Böhle et al. 2022)
# --------------------------------------------------------------------------------------------


@dataclass
class GridResult:
    """Outcomes of the grid pointing game.

    Attributes:
        hits: bool ``(G, T)``: the map for tile ``t`` of grid ``g`` has its maximum in tile ``t``.
        energy: float ``(G, T)``: fraction of the map's positive mass inside tile ``t``
            (Böhle et al. 2022's localisation score; 1/T for a uniform map).
        accuracy: mean of ``hits``; localisation: mean of ``energy``.
    """

    hits: torch.Tensor
    energy: torch.Tensor
    accuracy: float
    localisation: float


def grid_groups(labels, count: int, *, tiles: int = 4, seed: int = 0) -> torch.Tensor:
    """Indices ``(count, tiles)`` of images to tile, each group of ``tiles`` different classes.

    Groups are drawn at random (seeded) without reusing an image within a group; images may
    recur across groups when ``count * tiles`` exceeds the pool.

    Raises:
        ValueError: fewer than ``tiles`` distinct classes.
    """
    labels = torch.as_tensor(labels).reshape(-1)
    if len(torch.unique(labels)) < tiles:
        raise ValueError(f"need at least {tiles} distinct classes, got {len(torch.unique(labels))}")
    generator = torch.Generator().manual_seed(seed)
    groups = []
    while len(groups) < count:
        order = torch.randperm(len(labels), generator=generator).tolist()
        seen, group = set(), []
        for i in order:
            if int(labels[i]) not in seen:
                seen.add(int(labels[i]))
                group.append(i)
                if len(group) == tiles:
                    break
        groups.append(group)
    return torch.tensor(groups, dtype=torch.int64).reshape(count, tiles)


def grid_images(images: torch.Tensor, *, rows: int = 2, cols: int = 2, tile_size: int | None = None) -> torch.Tensor:
    """Tile ``(G * rows * cols, 3, S, S)`` images into ``(G, 3, rows * s, cols * s)`` grids.

    Tile ``t`` of a grid sits at row ``t // cols``, column ``t % cols``. ``tile_size``
    resizes each image (bilinear) to ``s``; None keeps ``S`` (Böhle et al. tile full-size images).
    """
    n, channels, height, width = images.shape
    per = rows * cols
    if n % per:
        raise ValueError(f"{n} images do not fill grids of {rows}x{cols}")
    if tile_size is not None:
        images = F.interpolate(images, size=(tile_size, tile_size), mode="bilinear", align_corners=False, antialias=True)
        height = width = tile_size
    grids = images.reshape(n // per, rows, cols, channels, height, width)
    return grids.permute(0, 3, 1, 4, 2, 5).reshape(n // per, channels, rows * height, cols * width)


def grid_pointing(maps: torch.Tensor, *, rows: int = 2, cols: int = 2) -> GridResult:
    """Score maps on grids: ``maps[g * T + t]`` explains tile ``t``'s class in grid ``g`` (``T = rows * cols``).

    Args:
        maps: ``(G * T, H, W)`` with ``H``, ``W`` divisible by ``rows``, ``cols``.

    Returns:
        :class:`GridResult`.
    """
    if maps.dim() != 3:
        raise ValueError("maps must be (G * T, H, W)")
    per = rows * cols
    n, height, width = maps.shape
    if n % per or height % rows or width % cols:
        raise ValueError(f"maps {tuple(maps.shape)} do not match {rows}x{cols} grids")
    th, tw = height // rows, width // cols
    tiles = torch.arange(n, device=maps.device) % per
    flat = maps.detach().reshape(n, -1).argmax(dim=1)
    row, col = flat // width, flat % width
    hits = (row // th * cols + col // tw) == tiles
    positive = maps.detach().clamp_min(0).reshape(n, rows, th, cols, tw).sum(dim=(2, 4)).reshape(n, per)
    total = positive.sum(dim=1)
    inside = positive.gather(1, tiles[:, None]).squeeze(1)
    energy = torch.where(total > 0, inside / total.clamp_min(1e-30), torch.zeros_like(total))
    g = n // per
    return GridResult(hits.reshape(g, per).cpu(), energy.reshape(g, per).cpu(),
                      float(hits.float().mean()), float(energy.float().mean()))
