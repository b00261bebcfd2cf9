r"""The pointing game (Zhang et al., *Top-down neural attention by excitation backprop*, ECCV 2016),
as evaluated by TorchRay (Fong et al. 2019) and by Rebuffi et al., *There and back again:
revisiting backpropagation saliency methods*, CVPR 2020 (supplementary A).

A saliency map "points" at its maximum. The point is a **hit** for class :math:`c` when some
ground-truth pixel of :math:`c` lies within a tolerance :math:`\tau = 15` px of it, measured on
the **original** image (the map is first carried back from the network's input to the original
image, see the two protocols below):

.. math::
    \mathrm{hit}(p, \Omega_c) = \big[\exists\, q \in \Omega_c : \|q - p\|_2 < \tau\big],
    \qquad
    \mathrm{acc} = \frac{1}{|C|} \sum_{c \in C} \frac{|\mathrm{hits}_c|}{|\mathrm{hits}_c| + |\mathrm{misses}_c|}.

Two **protocols** (the ``protocol`` argument of :class:`PointingGame`, :func:`pointing_game`,
:func:`centre_baseline`, :func:`difficult`, :func:`play`):

- ``"torchray"``: the game as TorchRay's benchmark plays it on VOC07/COCO14
  (``torchray/benchmark/pointing_game.py``, ``torchray/benchmark/datasets.py``,
  ``torchray/benchmark/models.py``, ``examples/attribution_benchmark.py``). The network sees the
  **whole** image, no centre crop (``get_transform``: shorter side resized to 224, aspect kept,
  one image per batch; we default to a square resize so batches stack, see
  :func:`lib.data.whole_image_preprocess`); the map is resized bilinearly to the original size
  (:func:`lib.data.whole_map_to_original`, TorchRay's ``resize=image_size``). One pair per
  class present in the image (:func:`pairs`: VOC classes whose objects are all ``difficult``
  are skipped, COCO crowd objects count); the ground truth is the union of the class's COCO
  segments (``coco_as_mask``) or VOC boxes (``voc_as_mask``); the difficult subset follows
  Zhang et al.'s rule on the boxes (:func:`difficult`). Default for multi-object data (every
  ``Sample.source`` other than ImageNet/embedded).
- ``"crop"``: the present behaviour for single-class data (ImageNet, the embedded set):
  maps on the network's resize + centre crop are carried back with
  :func:`lib.data.map_to_original` (zeros outside the crop), the difficult area rule uses
  segments where the sample has them. Default when every sample is ImageNet/embedded.

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
- **Per-class averaging.** TorchRay's ``PointingGame.accuracy`` averages
  ``hits / (hits + misses).clamp(min=1)`` over all of the dataset's classes (20 for VOC, 80
  for COCO: an absent class counts as 0); VOC07 test and COCO14 val have every class present,
  so there this is the mean over present classes. We average over the classes **present**
  among the evaluated pairs (of the subset), under both protocols (1,000 ImageNet classes, or
  80 COCO classes in COCO128, are never all present in a subsample).
- **Centre baseline.** TorchRay's ``center`` method points at ``(W / 2, H / 2)`` of the
  original image (``examples/attribution_benchmark.py``), under either protocol:
  :func:`centre_baseline`. TorchRay's published centre accuracies (``docs/pointing.csv``):
  VOC07 69.6% (difficult 42.4%), COCO14 27.8% (difficult 19.5%).
- **Difficult subset** (Zhang et al. 2016; Rebuffi et al. supp. A): the image/class pairs
  whose objects of that class cover less than 25% of the image **and** whose image shows at
  least one other class. TorchRay reads these flags from files made by Zhang et al. for
  VOC07/COCO14 (``pointing_game_ebp_voc07_difficult.txt``, ``..._coco_difficult.txt``); we
  recompute the rule from the annotation (:func:`difficult`). ImageNet validation images carry
  a single class, so the second condition can never hold; for single-class datasets
  (ImageNet, the embedded set) :func:`difficult` applies the area rule alone and says so.
- **Paired tests.** :meth:`PointingResult.class_weights` gives per-pair weights whose dot
  product with the hits is the class-mean accuracy (for sign-flip tests of paired differences).
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
import numbers
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from .. import data as _data
from ._checks import check_finite, check_int, check_real, check_tensor
from .stats import Interval, bootstrap_ci

__all__ = [
    "PROTOCOLS",
    "PointingResult",
    "Pairs",
    "pairs",
    "play",
    "GridResult",
    "max_points",
    "hits_at",
    "class_mean_accuracy",
    "difficult",
    "PointingGame",
    "pointing_game",
    "centre_baseline",
    "centre_maps",
    "pointing_interval",
    "grid_groups",
    "grid_images",
    "grid_pointing",
]

SINGLE_CLASS_SOURCES = ("imagenet", "embedded")
"""Dataset names (prefixes of ``Sample.source``) whose images carry one class: difficult = area rule only."""

PROTOCOLS = ("torchray", "crop")
"""The pointing-game protocols: TorchRay's whole-image game, and the resize + centre-crop one."""

VOC_SOURCES = ("voc",)
"""Prefixes of ``Sample.source`` whose ``difficult`` flags are VOC's (pairs of all-difficult classes are skipped)."""


def _is_single_class(sample: _data.Sample) -> bool:
    return str(sample.source).startswith(SINGLE_CLASS_SOURCES)


def _check_protocol(protocol) -> None:
    if protocol is not None and protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be 'torchray', 'crop' or None (by the data), not {protocol!r}")


def _protocol(protocol: str | None, samples: Sequence[_data.Sample]) -> str:
    """The protocol to play: as given, or by the data (``"crop"`` for ImageNet/embedded, else ``"torchray"``)."""
    _check_protocol(protocol)
    if protocol is not None:
        return protocol
    if not samples:
        raise ValueError("no samples to tell the protocol by: pass protocol='torchray' or protocol='crop'")
    single = {_is_single_class(s) for s in samples}
    if single == {True, False}:
        raise ValueError(
            "samples mix single-class (ImageNet/embedded) and multi-object (COCO/VOC) sources: "
            "pass protocol='torchray' or protocol='crop'"
        )
    return "crop" if single != {False} else "torchray"


def _label_space(samples: Sequence[_data.Sample]) -> str | None:
    """Whose class indices the samples' labels are: ``"ImageNet"`` (ImageNet/embedded sources),
    ``"VOC"`` (``voc...``) or ``"COCO"`` (COCO and any other multi-object source); None for no samples.

    Raises:
        ValueError: samples of two label spaces (their class indices would be averaged together).
    """
    spaces: dict[str, str] = {}
    for s in samples:
        space = "ImageNet" if _is_single_class(s) else "VOC" if str(s.source).startswith(VOC_SOURCES) else "COCO"
        spaces.setdefault(space, str(s.source))
    if len(spaces) > 1:
        named = ", ".join(f"{space} (source {source!r})" for space, source in spaces.items())
        raise ValueError(f"samples carry the labels of {named}: one pointing game scores one label space")
    return next(iter(spaces), None)


def _sample_list(samples) -> list[_data.Sample]:
    """``samples`` as a list of :class:`lib.data.Sample`, checked."""
    accepted = "a lib.data.Dataset or a sequence of lib.data.Sample"
    if isinstance(samples, (str, bytes)) or not isinstance(samples, Iterable):
        raise TypeError(f"samples must be {accepted}, got {type(samples).__name__}")
    samples = list(samples)
    for i, s in enumerate(samples):
        if not isinstance(s, _data.Sample):
            raise TypeError(f"samples must be {accepted}, got {type(s).__name__} at position {i}")
    return samples


def _check_tolerance(tolerance) -> None:
    if isinstance(tolerance, (bool, np.bool_)) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a finite number >= 0 (pixels: an int or a float, not a bool), "
                        f"got {tolerance!r} ({type(tolerance).__name__})")
    if not 0 <= tolerance < math.inf:
        raise ValueError(f"tolerance must be a finite number >= 0, got {tolerance}")


def _check_inclusive(inclusive) -> None:
    if not isinstance(inclusive, (bool, np.bool_)):
        raise TypeError(f"inclusive must be True or False, got {inclusive!r} ({type(inclusive).__name__})")


# --------------------------------------------------------------------------------------------
# Hits
# --------------------------------------------------------------------------------------------


def max_points(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """The point ``(x, y)`` of each map's maximum (first in row-major order), int64 ``(N, 2)``.

    Args:
        maps: ``N`` tensors ``(H_i, W_i)`` (sizes may differ) or one ``(N, H, W)`` tensor.

    Raises:
        ValueError: a map that is not a non-empty ``(H, W)`` tensor, is complex, or has NaN
            or infinite values (its maximum would be undefined, or an infinity).
    """
    return _max_points(maps, [f"map {k}" for k in range(len(maps))], "max_points: maps")


def _max_points(maps: Sequence[torch.Tensor], names: Sequence[str], what: str = "pointing game: maps") -> torch.Tensor:
    """:func:`max_points`, an undefined maximum named by ``names[k]`` (which map of which sample)."""
    points = []
    for name, m in zip(names, maps):
        if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.numel() == 0:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"each map must be a non-empty (H, W) tensor, got {shape}")
        if m.is_complex():
            raise ValueError(f"{name} is complex ({m.dtype}); maps must be real")
        check_finite([m], what, names=[name],
                     hint="a saliency map must be finite (argmax would pick the first NaN)")
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
        ValueError: mismatched lengths, a mask that is not 2-D, a negative or infinite
            tolerance, points with NaN or infinite coordinates.
        TypeError: a tolerance that is not a real number (or is a bool), an ``inclusive`` that
            is not a bool.
    """
    points = torch.as_tensor(points, dtype=torch.float64).reshape(-1, 2)
    check_finite(points, "hits_at: points", item="point", hint="a point is (x, y) in pixels, finite")
    if len(masks) != points.shape[0]:
        raise ValueError(f"{points.shape[0]} points but {len(masks)} masks")
    _check_tolerance(tolerance)
    _check_inclusive(inclusive)
    out = []
    for (x, y), mask in zip(points.tolist(), masks):
        if not isinstance(mask, torch.Tensor) or mask.dim() != 2:
            raise ValueError("each mask must be a 2-D (H, W) tensor")
        out.append(_hit((x, y), mask, float(tolerance), inclusive))
    return torch.tensor(out, dtype=torch.bool)


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
    labels = labels.to(hits.device)
    classes, inverse = torch.unique(labels, return_inverse=True)
    sums = torch.zeros(len(classes), dtype=torch.float64, device=hits.device).index_add_(0, inverse, hits)
    counts = torch.zeros(len(classes), dtype=torch.float64, device=hits.device).index_add_(0, inverse, torch.ones_like(hits))
    return (sums / counts).mean()


def difficult(
    sample: _data.Sample,
    label: int | None = None,
    *,
    area_fraction: float = 0.25,
    other_class: bool | None = None,
    protocol: str | None = None,
) -> bool:
    """Whether an image/class pair is in the pointing game's "difficult" subset (Zhang et al. 2016).

    Zhang et al. 2016 (the pointing game's experiments) define the difficult images of the pointing game as those where
    the total area of the class's bounding boxes is less than 1/4 of the image and at least one
    other (distracting) class is present. TorchRay does not recompute the rule: its
    ``PointingGameBenchmark`` (``torchray/benchmark/pointing_game.py``) reads one flag per
    image and class from the files Zhang et al. made, ``pointing_game_ebp_voc07_difficult.txt``
    (4,952 VOC07 test images, 2,230 flagged image/class pairs; the COCO14 file
    ``pointing_game_ebp_coco_difficult.txt`` was not in the snapshot we read) and keeps a pair of
    the difficult subset when its image is absent from the file. We recompute the rule:

    - ``protocol="torchray"``: the area of the **union of the class's bounding boxes**
      (:func:`lib.data.object_mask` with ``use_segments=False``; VOC ``difficult`` and COCO
      crowd boxes included) below ``area_fraction`` of the image, and another class among the
      image's objects (any object, flagged or not). Where this may differ from the shipped
      lists: "total area" may have been the sum of box areas (the sum is never smaller than the
      union, so a sum rule flags a subset of our pairs); whether VOC ``difficult`` objects
      counted, as area or as distractors, is not documented; COCO128's YOLO labels lack crowd
      objects (ultralytics' converter drops ``iscrowd`` annotations), COCO14's crowd objects
      count here.
    - ``protocol="crop"`` (the rule of the crop protocol): the union of the class's
      **segments** where the sample has them, else its boxes (:func:`lib.data.object_mask`).

    Args:
        sample: the image and its annotation.
        label: the class (default ``sample.label``).
        area_fraction: the area threshold (1/4).
        other_class: require another class in the image. None: required, except for
            single-class datasets (``sample.source`` starting with ``imagenet`` or
            ``embedded``), where only the area rule is applied (an ImageNet validation image
            is annotated with one class, so the rule could never hold).
        protocol: ``"torchray"``, ``"crop"`` or None (by the sample: ``"crop"`` for
            ImageNet/embedded, else ``"torchray"``).

    Raises:
        ValueError: an unknown protocol, an ``area_fraction`` outside (0, 1].
    """
    _check_area_fraction(area_fraction)
    protocol = _protocol(protocol, [sample])
    label = sample.label if label is None else int(label)
    if other_class is None:
        other_class = not _is_single_class(sample)
    mask = _data.object_mask(sample, label, use_segments=protocol == "crop")
    # The mask's mean, exactly (counted with numpy: a torch reduction of a full-size mask is slow under load).
    small = int(np.count_nonzero(mask.cpu().numpy())) / max(mask.numel(), 1) < area_fraction
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
        """Join the results of several batches (points keep their dtype when all share it, else float64)."""
        if not results:
            raise ValueError("no results to join")
        same = len({r.points.dtype for r in results}) == 1
        return PointingResult.from_hits(
            torch.cat([r.hits for r in results]),
            torch.cat([r.labels for r in results]),
            torch.cat([r.difficult for r in results]),
            torch.cat([r.points if same else r.points.to(torch.float64) for r in results]),
        )

    def copy(self) -> "PointingResult":
        """A copy that shares no tensor with this result."""
        return replace(self, hits=self.hits.clone(), labels=self.labels.clone(), difficult=self.difficult.clone(),
                       points=self.points.clone())

    def interval(self, subset: str = "all", **kwargs) -> Interval:
        """95% bootstrap interval of the class-averaged accuracy (see :func:`pointing_interval`)."""
        return pointing_interval(self, subset=subset, **kwargs)

    def class_weights(self, subset: str = "all") -> torch.Tensor:
        r"""Per-pair weights of the class-mean accuracy: float64 ``(N,)``, ``(w * hits).sum() == accuracy``.

        The class-mean accuracy (TorchRay's ``PointingGame.accuracy`` over the classes present,
        :func:`class_mean_accuracy`) is linear in the hits:
        :math:`\mathrm{acc} = \sum_i w_i\,\mathrm{hit}_i` with
        :math:`w_i = 1 / (C\, n_{c(i)})` for the pairs of the subset (``C`` classes present in
        it, ``n_c`` pairs of class ``c``) and :math:`w_i = 0` outside it. For two methods on
        the same pairs, :math:`\sum_i w_i (\mathrm{hit}^A_i - \mathrm{hit}^B_i)` is the
        difference of their accuracies, a sum a paired sign-flip test can permute.

        Args:
            subset: ``"all"`` or ``"difficult"``.

        Returns:
            float64 ``(N,)``, summing to 1 over the subset (all zeros for an empty subset,
            whose accuracy is ``nan``).

        Raises:
            ValueError: an unknown subset.
        """
        if subset not in ("all", "difficult"):
            raise ValueError(f"subset must be 'all' or 'difficult', got {subset!r}")
        keep = torch.ones_like(self.hits, dtype=torch.bool) if subset == "all" else self.difficult.to(torch.bool)
        weights = torch.zeros(self.hits.numel(), dtype=torch.float64, device=self.hits.device)
        if bool(keep.any()):
            classes, inverse, counts = torch.unique(self.labels[keep], return_inverse=True, return_counts=True)
            weights[keep] = 1.0 / (len(classes) * counts[inverse].to(torch.float64))
        return weights


def _check_area_fraction(area_fraction) -> None:
    if isinstance(area_fraction, (bool, np.bool_)) or not isinstance(area_fraction, numbers.Real):
        raise TypeError(f"area_fraction must be a number in (0, 1] (a fraction of the image), "
                        f"got {area_fraction!r} ({type(area_fraction).__name__})")
    if not 0 < area_fraction <= 1:
        raise ValueError(f"area_fraction must be in (0, 1] (a fraction of the image), got {area_fraction}")


def _category(value, what: str) -> int:
    """One class or sample index: an integer (Python, NumPy or a one-element integer tensor), not a bool or a float."""
    if isinstance(value, (torch.Tensor, np.ndarray)) and value.dtype in (torch.bool, np.bool_):
        raise ValueError(f"{what} must be an integer, got a boolean {type(value).__name__}")
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point() and value.dtype != torch.bool:
        return int(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point():
        value = float(value)
    if isinstance(value, (float, np.floating)) and float(value).is_integer():  # an integer stored as a float
        return int(value)
    if isinstance(value, bool) or isinstance(value, (float, np.floating)):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def _targets(samples: Sequence[_data.Sample], targets) -> list[int]:
    if targets is None:
        labels = [int(s.label) for s in samples]
    elif isinstance(targets, (numbers.Integral, np.integer)) and not isinstance(targets, bool) or (
            isinstance(targets, torch.Tensor) and targets.dim() == 0):
        labels = [_category(targets, "target")] * len(samples)
    else:
        if isinstance(targets, (str, bytes)) or not isinstance(targets, (Sequence, np.ndarray, torch.Tensor)):
            raise ValueError(f"targets must be None, an int or one int per sample, got {type(targets).__name__}")
        if isinstance(targets, (np.ndarray, torch.Tensor)) and targets.dtype in (torch.bool, np.bool_):
            raise ValueError(f"targets must be None, an int or one int per sample (class indices), "
                             f"got a boolean {type(targets).__name__}")
        items = list(targets.reshape(-1)) if isinstance(targets, (np.ndarray, torch.Tensor)) else list(targets)
        if len(items) != len(samples):
            raise ValueError(f"{len(items)} targets for {len(samples)} samples")
        labels = [_category(t, "each target") for t in items]
    for i, (sample, label) in enumerate(zip(samples, labels)):
        if not bool((torch.as_tensor(sample.box_labels).reshape(-1) == label).any()):
            raise ValueError(f"sample {i} ({sample.id!r}) has no object of class {label}: a pair's target must be a class "
                             "present in the image (lib.metrics.pointing.pairs lists them)")
    return labels


def _map_list(maps, count: int, what: str) -> list[torch.Tensor]:
    """``(B, h, w)`` tensor or ``B`` tensors ``(h_i, w_i)`` -> list of 2-D tensors (detached), checked."""
    if isinstance(maps, torch.Tensor):
        if maps.dim() != 3:
            raise ValueError(f"{what} must be a (B, h, w) tensor or a list of (h, w) tensors, got {tuple(maps.shape)}")
        items = list(maps.detach())
    elif isinstance(maps, Sequence):
        items = list(maps)
        for m in items:
            if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.numel() == 0:
                shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
                raise ValueError(f"{what}: each map must be a non-empty (h, w) tensor, got {shape}")
        items = [m.detach() for m in items]
    else:
        raise ValueError(f"{what} must be a (B, h, w) tensor or a list of (h, w) tensors, got {type(maps).__name__}")
    if len(items) != count:
        raise ValueError(f"{what}: {len(items)} maps for {count} samples")
    if any(m.is_complex() for m in items):
        raise ValueError(f"{what}: complex maps; maps must be real")
    check_finite(items, f"pointing game: {what}", item="map")
    return items


def _check_crop(input_size, crop_fraction, what: str = "PointingGame") -> None:
    """The crop protocol's geometry: ``input_size`` None or an int >= 1, ``crop_fraction`` in (0, 1]."""
    if input_size is not None:
        try:
            check_int(input_size, f"{what}: input_size (the side of the network's centre crop, or None)", 1)
        except TypeError:
            raise TypeError(f"{what}: input_size must be None or an integer >= 1 (the side of the network's centre "
                            f"crop, in pixels), got {type(input_size).__name__} {input_size!r}") from None
    check_real(crop_fraction, f"{what}: crop_fraction (the centre crop's share of the resized image's side)",
               low=0, high=1, low_open=True)


def _crop_input_size(input_size) -> int:
    if input_size is None:
        raise ValueError("protocol 'crop' needs input_size (the side of the network's centre crop)")
    return input_size


def _crop_maps(maps, count: int, what: str) -> torch.Tensor:
    """The crop protocol's maps: one ``(B, h, w)`` tensor (detached), checked."""
    if not isinstance(maps, torch.Tensor) or maps.dim() != 3:
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"{what} must be a (B, h, w) tensor under protocol 'crop', got {shape}")
    if maps.shape[0] != count:
        raise ValueError(f"{what}: {maps.shape[0]} maps for {count} samples")
    if maps.is_complex():
        raise ValueError(f"{what}: complex maps; maps must be real")
    check_finite(maps, f"pointing game: {what}", item="map")
    return maps.detach()


class PointingGame:
    """The pointing game, accumulated batch by batch (TorchRay's ``PointingGame``: ``update``, then read).

    Each :meth:`update` scores one batch of maps for any number of keys (methods, layers, ...):
    every map is carried back to its original image (:func:`lib.data.whole_map_to_original` under
    ``"torchray"``, :func:`lib.data.map_to_original` under ``"crop"``; all the keys' maps of one
    image together), its first maximum taken (:func:`max_points`) and scored against the target
    class's segments/boxes (:func:`hits_at`, :func:`lib.data.object_mask`); masks and difficult
    flags (:func:`difficult`) are built once per batch for all keys. :meth:`results` joins the
    batches; :func:`pointing_game` is the one-call form for one set of maps.

    One game scores one set of pairs under one protocol and one label space, so that its keys
    can be compared side by side (:meth:`frame`) and pair by pair
    (:meth:`PointingResult.class_weights`):

    - the protocol and the label space (ImageNet's for ImageNet/embedded sources, VOC's, or
      COCO's) resolved at the first :meth:`update` hold for the game: an update that resolves
      to another is refused;
    - every :meth:`update` carries the keys of the first (a key left out would cover fewer
      pairs);
    - :meth:`add` files a result computed elsewhere under a key that no update fills, and
      :meth:`results` refuses a game whose keys cover different pairs (add a batch's centre
      baseline after that batch's update, or once over all the pairs at the end).

    Args:
        input_size, crop_fraction: the crop protocol's geometry (``input_size`` required there,
            unused under ``"torchray"``).
        tolerance, inclusive: see :func:`hits_at`.
        area_fraction: the difficult subset's area threshold (:func:`difficult`).
        protocol: ``"torchray"``, ``"crop"`` or None (by the data: ``"crop"`` when every
            sample is ImageNet/embedded, ``"torchray"`` when none is).

    Raises:
        ValueError: an unknown option or protocol, an ``area_fraction`` outside (0, 1], a
            negative or infinite ``tolerance``, an ``input_size`` below 1, a ``crop_fraction``
            outside (0, 1] or NaN (all checked here, not at the first update).
        TypeError: a ``tolerance``, ``area_fraction`` or ``crop_fraction`` that is not a real
            number (or is a bool), an ``input_size`` that is neither None nor an integer
            (``224.0``, ``"224"``), an ``inclusive`` that is not a bool.

    Example::

        game = PointingGame(input_size=224)
        for batch_samples, maps in ...:        # maps: {key: (B, S, S)}
            game.update(maps, batch_samples)
        results = game.results()               # {key: PointingResult}
        frame = game.frame(names=("method", "layer"))
    """

    def __init__(
        self,
        *,
        input_size: int | None = None,
        crop_fraction: float = 0.875,
        tolerance: float = 15,
        inclusive: bool = False,
        area_fraction: float = 0.25,
        protocol: str | None = None,
        **unknown,
    ):
        if unknown:
            accepted = ["area_fraction", "crop_fraction", "inclusive", "input_size", "protocol", "tolerance"]
            raise ValueError(f"PointingGame: unknown options {sorted(unknown)}; accepted: {accepted}")
        _check_protocol(protocol)
        _check_tolerance(tolerance)
        _check_inclusive(inclusive)
        _check_area_fraction(area_fraction)
        _check_crop(input_size, crop_fraction)
        self.input_size = None if input_size is None else operator.index(input_size)
        self.crop_fraction = float(crop_fraction)
        self.tolerance, self.inclusive = tolerance, inclusive
        self.area_fraction, self.protocol = area_fraction, protocol
        self._parts: dict = {}
        self._keys: tuple | None = None  # the first update's keys
        self._played: tuple[str, str | None] | None = None  # its (protocol, label space)

    def update(self, maps: Mapping, samples: Sequence[_data.Sample], targets=None) -> dict:
        """Score one batch: ``maps`` ``{key: (B, h, w)}`` of the ``B`` samples, each explaining ``targets``.

        Args:
            maps: ``{key: maps}`` on the network's input (any resolution, usually ``S x S``);
                under ``"torchray"`` also ``{key: B tensors (h_i, w_i)}`` of different sizes.
            samples: the ``B`` samples the maps were computed on (for sizes and annotations).
            targets: the class each map explains: None (each sample's label), an int, or ``(B,)``.
                For multi-class scenes pass one map per (image, class present) pair, repeating
                the sample (:func:`pairs`, :func:`play`).

        Returns:
            This batch's ``{key: PointingResult}``, a copy (changing it leaves :meth:`results`
            as it was).

        Raises:
            ValueError: maps that are not a dict, of the wrong shape or count, keys other than
                the first update's (or filled by :meth:`add`), a protocol or label space other
                than the first update's, a target class absent from its image, mixed data with
                no protocol, ``"crop"`` without ``input_size``.
            TypeError: samples that are not :class:`lib.data.Sample`.
        """
        if not isinstance(maps, Mapping):
            raise ValueError(f"maps must be a dict {{key: maps}}, got {type(maps).__name__} (one set of maps: pointing_game)")
        samples = _sample_list(samples)
        keys = tuple(maps)
        if self._keys is not None and set(keys) != set(self._keys):
            missing = [key for key in self._keys if key not in maps]
            extra = [key for key in keys if key not in self._keys]
            raise ValueError(f"update: every update must carry the keys of the first, {list(self._keys)}; "
                             f"this one lacks {missing} and adds {extra} (a key left out would cover fewer pairs)")
        added = [key for key in keys if self._keys is None and key in self._parts]
        if added:
            raise ValueError(f"update: keys {added} were filled by add(); give the maps other keys")
        protocol, space = _protocol(self.protocol, samples), _label_space(samples)
        if self._played is not None:
            first_protocol, first_space = self._played
            if protocol != first_protocol or space != first_space and None not in (space, first_space):
                raise ValueError(
                    f"update: this batch resolves to protocol {protocol!r} on {space} labels, but the game's first "
                    f"update played protocol {first_protocol!r} on {first_space} labels; one game joins one protocol "
                    "and one label space (start another PointingGame)"
                )
            space = space if first_space is None else first_space  # a first update without samples named none
        batch = self._score(maps, samples, targets, lambda key: f"maps[{key!r}]")
        if self._keys is None:
            self._keys = keys
        self._played = (protocol, space)
        for key, result in batch.items():
            self._parts.setdefault(key, []).append(result)
        return {key: result.copy() for key, result in batch.items()}

    def add(self, key, result: PointingResult) -> None:
        """Add a result computed elsewhere (e.g. :func:`centre_baseline`) under ``key`` (a copy is kept).

        Adding to a key more than once joins the results, like updates. ``key`` must not be
        one that :meth:`update` fills, and when the game is read every key must cover the
        same pairs (:meth:`results`).

        Raises:
            TypeError: ``result`` that is not a :class:`PointingResult`.
            ValueError: a key that :meth:`update` fills.
        """
        if not isinstance(result, PointingResult):
            raise TypeError(f"add: result must be a PointingResult (e.g. from centre_baseline or pointing_game), "
                            f"got {type(result).__name__}")
        if self._keys is not None and key in self._keys:
            raise ValueError(f"add: key {key!r} is filled by update(); adding to it would join other pairs to its "
                             "maps' pairs (file the result under another key)")
        self._parts.setdefault(key, []).append(result.copy())

    def results(self) -> dict:
        """``{key: PointingResult}`` of every batch so far, in the order of the updates.

        Raises:
            ValueError: keys that cover different pairs (another number of pairs, or other
                classes in the same positions), e.g. a result added for some batches only.
        """
        joined = {key: PointingResult.cat(parts) for key, parts in self._parts.items()}
        if joined:
            first, reference = next(iter(joined.items()))
            for key, result in joined.items():
                if not torch.equal(result.labels, reference.labels):
                    counts = {k: len(r.hits) for k, r in joined.items()}
                    raise ValueError(f"results: key {key!r} covers other pairs than key {first!r} (pairs per key: "
                                     f"{counts}); every key must score the same pairs, in the same order")
        return joined

    def frame(self, names: Sequence[str] = ("key",)):
        """One row per key: the key's parts under ``names``, accuracy, accuracy_difficult, n, n_difficult.

        Raises:
            TypeError: ``names`` that is a string or not a sequence (one name: ``("method",)``).
            ValueError: a key with another number of parts than ``names``; keys that cover
                different pairs (:meth:`results`).
        """
        import pandas as pd

        if isinstance(names, (str, bytes)) or not isinstance(names, Sequence):
            raise TypeError(f"frame: names must be a sequence of column names such as ('method', 'layer'), "
                            f"got {names!r} ({type(names).__name__})")
        rows = []
        for key, r in self.results().items():
            parts = key if isinstance(key, tuple) else (key,)
            if len(parts) != len(names):
                raise ValueError(f"frame: key {key!r} has {len(parts)} parts but names {tuple(names)} has {len(names)}")
            row = dict(zip(names, parts))
            row.update(accuracy=r.accuracy, accuracy_difficult=r.accuracy_difficult,
                       n=len(r.hits), n_difficult=int(r.difficult.sum()))
            rows.append(row)
        return pd.DataFrame(rows)

    def _score(self, maps: Mapping, samples, targets, what) -> dict:
        """``{key: PointingResult}`` of one batch; ``what(key)`` names a key's maps in errors."""
        samples = _sample_list(samples)
        protocol = _protocol(self.protocol, samples)
        _label_space(samples)
        labels = _targets(samples, targets)
        keys = list(maps)
        if protocol == "crop":
            input_size = _crop_input_size(self.input_size)
            per_key = {key: _crop_maps(maps[key], len(samples), what(key)) for key in keys}
        else:
            per_key = {key: _map_list(maps[key], len(samples), what(key)) for key in keys}
        masks = [_data.object_mask(s, c) for s, c in zip(samples, labels)]
        hard = [difficult(s, c, area_fraction=self.area_fraction, protocol=protocol) for s, c in zip(samples, labels)]
        points = torch.zeros(len(keys), len(samples), 2, dtype=torch.int64)
        for i, sample in enumerate(samples):  # every key's map of one image carried back together
            if not keys:
                break
            of_image, sizes = [per_key[key][i] for key in keys], [sample.size] * len(keys)
            if protocol == "crop":
                originals = _data.map_to_original(of_image, sizes, input_size, self.crop_fraction)
            else:
                originals = _data.whole_map_to_original(of_image, sizes)
            points[:, i] = _max_points(originals, [f"{what(key)}, map {i}" for key in keys])
        hits = [hits_at(points[k], masks, self.tolerance, inclusive=self.inclusive) for k in range(len(keys))]
        return {key: PointingResult.from_hits(hits[k], labels, hard, points[k]) for k, key in enumerate(keys)}


def pointing_game(
    maps: torch.Tensor | Sequence[torch.Tensor],
    samples: Sequence[_data.Sample],
    targets=None,
    **options,
) -> PointingResult:
    """Play the pointing game with maps on the network's input (Zhang et al. 2016; TorchRay; Rebuffi et al. 2020).

    The one-call form of :class:`PointingGame` for one set of maps. Each map is carried back to
    its original image, its first maximum is taken, and it is a hit when it lies within
    ``tolerance`` px of the target class's segments/boxes (:func:`lib.data.object_mask`). How
    the map goes back depends on the protocol:

    - ``"torchray"`` (TorchRay's ``examples/attribution_benchmark.py``: the whole image is the
      input, the map is resized to ``image_size``): the map, of any resolution and aspect,
      is resized bilinearly to the original (:func:`lib.data.whole_map_to_original`).
    - ``"crop"``: the inverse of the resize + centre crop (:func:`lib.data.map_to_original`,
      zeros outside the crop).

    Args:
        maps: ``(B, h, w)`` saliency maps on the input (any resolution, usually ``S x S``);
            under ``"torchray"`` also ``B`` tensors ``(h_i, w_i)`` of different sizes.
        samples, targets: as :meth:`PointingGame.update`.
        options: ``input_size``, ``crop_fraction``, ``tolerance``, ``inclusive``,
            ``area_fraction``, ``protocol``: as :class:`PointingGame`, whose defaults apply.

    Returns:
        :class:`PointingResult`.

    Raises:
        ValueError: maps of the wrong shape or count, an unknown protocol, mixed data with no
            protocol, samples of two label spaces, ``"crop"`` without ``input_size``.
        TypeError: samples that are not :class:`lib.data.Sample`; see :class:`PointingGame`.
    """
    game = PointingGame(**options)
    return game._score({"maps": maps}, samples, targets, lambda key: "maps")["maps"]


def centre_baseline(
    samples: Sequence[_data.Sample],
    targets=None,
    *,
    tolerance: float = 15,
    inclusive: bool = False,
    area_fraction: float = 0.25,
    protocol: str | None = None,
) -> PointingResult:
    """Point at the centre ``(W / 2, H / 2)`` of every original image (TorchRay's ``center`` method).

    TorchRay's ``examples/attribution_benchmark.py`` (method ``"center"``) points at
    ``(w / 2, h / 2)`` of the original image, whatever the network sees; the point is the same
    under both protocols, which differ only in the difficult flags (:func:`difficult`). The
    baseline every method must beat; TorchRay's ``docs/pointing.csv`` and Rebuffi et al.
    Fig. 3 report 69.6% (all) and 42.4% (difficult) on VOC07, 27.8% and 19.5% on COCO14.

    Args:
        samples, targets: as :func:`pointing_game` (one sample per image/class pair).
        tolerance, inclusive, area_fraction, protocol: as :func:`pointing_game`.
    """
    _check_area_fraction(area_fraction)
    samples = _sample_list(samples)
    protocol = _protocol(protocol, samples)
    _label_space(samples)
    labels = _targets(samples, targets)
    points = torch.tensor([[s.size[0] / 2, s.size[1] / 2] for s in samples], dtype=torch.float64).reshape(-1, 2)
    masks = [_data.object_mask(s, c) for s, c in zip(samples, labels)]
    hits = hits_at(points, masks, tolerance, inclusive=inclusive)
    hard = [difficult(s, c, area_fraction=area_fraction, protocol=protocol) for s, c in zip(samples, labels)]
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


# --------------------------------------------------------------------------------------------
# Multi-object data: image/class pairs (TorchRay's loop over the classes of each image)
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pairs:
    """The image/class pairs of a pointing game on multi-object data (:func:`pairs`).

    Iterating gives ``(sample index, category)`` tuples; ``len`` is the number of pairs.

    Attributes:
        indices: int64 ``(P,)``, the index of each pair's sample in the dataset.
        categories: int64 ``(P,)``, each pair's class (the dataset's class index).
        images: how many images were looked at.
        empty_images: images without any object (no pair; TorchRay's ``coco_as_class_ids``
            returns ``[]`` for them).
        skipped_difficult: pairs dropped because every object of the class is flagged
            difficult (VOC; TorchRay's ``PointingGameBenchmark.evaluate`` returns 0 for them).
        skipped_unmapped: pairs dropped because their class is not in ``members``.
    """

    indices: torch.Tensor
    categories: torch.Tensor
    images: int
    empty_images: int = 0
    skipped_difficult: int = 0
    skipped_unmapped: int = 0

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __iter__(self):
        return iter(zip(self.indices.tolist(), self.categories.tolist()))

    def __getitem__(self, k: int) -> tuple[int, int]:
        return int(self.indices[k]), int(self.categories[k])

    @property
    def skipped(self) -> int:
        """Pairs dropped (difficult-only plus unmapped classes)."""
        return self.skipped_difficult + self.skipped_unmapped

    @property
    def classes(self) -> int:
        """Distinct classes among the pairs."""
        return int(torch.unique(self.categories).numel())

    def __str__(self) -> str:
        return (f"{len(self)} pairs ({self.classes} classes) from {self.images} images; "
                f"skipped {self.skipped_difficult} all-difficult and {self.skipped_unmapped} unmapped pairs, "
                f"{self.empty_images} images without objects")


def _members(members) -> set[int] | None:
    if members is None:
        return None
    if isinstance(members, (str, bytes)) or not isinstance(members, Iterable):
        raise ValueError(f"members must be None or a collection of category indices, not {type(members).__name__}")
    out = set()
    for m in members:
        try:
            if isinstance(m, bool):
                raise TypeError
            out.add(operator.index(m))
        except TypeError:
            raise ValueError(f"members must hold category indices (ints), got {m!r}") from None
    return out


def pairs(
    samples: Sequence[_data.Sample],
    members=None,
    *,
    skip_difficult: bool | None = None,
) -> Pairs:
    """Expand a multi-object dataset into the pointing game's (image, class) pairs.

    TorchRay's ``examples/attribution_benchmark.py`` computes one map per class present in an
    image (``class_ids = data.as_class_ids(label)``) and scores each
    (``PointingGameBenchmark.evaluate``, ``torchray/benchmark/pointing_game.py``):

    - COCO (``torchray/benchmark/datasets.py``, ``coco_as_class_ids``): every class among the
      image's annotations, **crowd annotations included** (and in the mask, ``coco_as_mask``).
      Our COCO128 (YOLO layout) has no crowd objects (ultralytics' COCO-to-YOLO converter
      skips ``iscrowd`` annotations);
      COCO 2014 samples flag them in ``difficult`` and they are kept.
    - VOC (``voc_as_class_ids``, then ``evaluate``): every class of the image, except those
      whose objects are **all** ``difficult`` (skipped, neither hit nor miss); a class with one
      non-difficult object is kept and its mask includes its difficult boxes (``voc_as_mask``).

    Pairs come in image order, classes sorted within an image (TorchRay iterates over a set;
    the order does not change a per-class score).

    Args:
        samples: a :class:`lib.data.Dataset` (annotations are read without opening an image,
            :meth:`lib.data.Dataset.objects`) or a sequence of :class:`lib.data.Sample`.
        members: the category indices to keep (a set, a list, a dict's keys), e.g. the COCO
            classes a classifier's labels map to; pairs of other classes are dropped and
            counted in ``skipped_unmapped``. None keeps every class.
        skip_difficult: drop the classes whose objects are all flagged ``difficult``. None:
            TorchRay's choice for the dataset (VOC, ``Sample.source`` starting with ``voc``:
            yes; COCO crowd flags: no).

    Returns:
        :class:`Pairs`.

    Raises:
        ValueError: ``members`` that is not a collection of ints.
    """
    keep = _members(members)
    if skip_difficult is not None and not isinstance(skip_difficult, (bool, np.bool_)):
        raise ValueError(f"skip_difficult must be True, False or None (by the dataset), got {skip_difficult!r}")
    is_dataset = isinstance(samples, _data.Dataset)
    if not is_dataset and not (isinstance(samples, Sequence) and all(isinstance(s, _data.Sample) for s in samples)):
        raise ValueError(f"samples must be a lib.data.Dataset or a sequence of lib.data.Sample, got {type(samples).__name__}")
    indices, categories = [], []
    empty = skipped_difficult = skipped_unmapped = 0
    for i in range(len(samples)):
        if is_dataset:
            box_labels, flags = samples.objects(i)
            source = samples.name
        else:
            sample = samples[i]
            box_labels, flags, source = sample.box_labels, sample.difficult, sample.source
        box_labels = torch.as_tensor(box_labels, dtype=torch.int64).reshape(-1)
        if box_labels.numel() == 0:
            empty += 1
            continue
        skip = str(source).startswith(VOC_SOURCES) if skip_difficult is None else bool(skip_difficult)
        flags = None if flags is None else torch.as_tensor(flags, dtype=torch.bool).reshape(-1)
        if flags is not None and flags.numel() != box_labels.numel():
            raise ValueError(f"sample {i}: {flags.numel()} difficult flags for {box_labels.numel()} objects")
        for c in sorted(set(box_labels.tolist())):
            if skip and flags is not None and bool(flags[box_labels == c].all()):
                skipped_difficult += 1
                continue
            if keep is not None and c not in keep:
                skipped_unmapped += 1
                continue
            indices.append(i)
            categories.append(c)
    return Pairs(
        torch.tensor(indices, dtype=torch.int64),
        torch.tensor(categories, dtype=torch.int64),
        len(samples),
        empty,
        skipped_difficult,
        skipped_unmapped,
    )


def _is_pair(p) -> bool:
    """``p`` holds two entries: a tuple or list of two, or a 1-D array or tensor of two."""
    if isinstance(p, (np.ndarray, torch.Tensor)):
        return p.ndim == 1 and len(p) == 2
    return isinstance(p, Sequence) and not isinstance(p, (str, bytes)) and len(p) == 2


def play(
    maps: dict,
    pairs: Pairs | Sequence[tuple[int, int]],
    samples: Sequence[_data.Sample],
    *,
    centre: bool | str = False,
    protocol: str | None = None,
    input_size: int | None = None,
    crop_fraction: float = 0.875,
    tolerance: float = 15,
    inclusive: bool = False,
    area_fraction: float = 0.25,
) -> dict:
    """Play the pointing game on image/class pairs for several methods (TorchRay's benchmark loop).

    TorchRay's ``ExperimentExecutor`` (``examples/attribution_benchmark.py``) loops over the
    images, computes one map per class present, and scores it with
    ``PointingGameBenchmark.evaluate`` for the full and the difficult subsets. Here the maps
    are computed by the caller (one per pair, in the order of ``pairs``); each image is opened
    once, its masks and difficult flags built once for all methods, and every map scored by one
    :class:`PointingGame`.

    Args:
        maps: ``{key: maps}``, each ``(P, h, w)`` or ``P`` tensors ``(h_i, w_i)`` aligned with
            ``pairs`` (whole-image maps under ``"torchray"``, crop maps under ``"crop"``).
        pairs: from :func:`pairs`, or any iterable of ``(sample index, category)`` pairs (a
            list, a generator, a ``(P, 2)`` array or tensor; read once).
        samples: the dataset the pairs index (a :class:`lib.data.Dataset` or a sequence of
            :class:`lib.data.Sample`).
        centre: also score TorchRay's centre baseline (:func:`centre_baseline`), under the key
            ``"centre"`` (or the string given).
        protocol: ``"torchray"``, ``"crop"`` or None (by the data, :func:`pointing_game`).
        input_size, crop_fraction, tolerance, inclusive, area_fraction: as :class:`PointingGame`.

    Returns:
        ``{key: PointingResult}``, the pairs in the order given (the same for every key, so
        results of two keys can be compared pair by pair, :meth:`PointingResult.class_weights`).

    Raises:
        ValueError: maps not aligned with the pairs, a pair that is not two integers, a pair
            index out of range, a key clash with the centre baseline's, samples of two label
            spaces (ImageNet's, VOC's, COCO's); bad options (:class:`PointingGame`).
        TypeError: ``pairs`` that is not an iterable (an int, a string, a dict), ``samples``
            that cannot be indexed (a generator); bad option types (:class:`PointingGame`).
    """
    _check_protocol(protocol)
    game = PointingGame(input_size=input_size, crop_fraction=crop_fraction, tolerance=tolerance,
                        inclusive=inclusive, area_fraction=area_fraction, protocol=protocol)  # checks the options first
    if not isinstance(maps, Mapping):
        raise ValueError(f"maps must be a dict {{key: maps aligned with the pairs}}, got {type(maps).__name__}")
    if centre == "":
        raise ValueError("centre must be True, False or the key to file the centre baseline under, got ''")
    if isinstance(pairs, Pairs):
        index, category = pairs.indices.tolist(), pairs.categories.tolist()
    else:
        if isinstance(pairs, (str, bytes, Mapping)) or not isinstance(pairs, (Iterable, torch.Tensor)):
            raise TypeError(f"play: pairs must be a Pairs (from pairs()) or an iterable of (sample index, category) "
                            f"tuples (a list, a generator, a (P, 2) array), got {type(pairs).__name__}")
        pairs = list(pairs)  # a generator is read once, here
        wrong = next((k for k, p in enumerate(pairs) if not _is_pair(p)), None)
        if wrong is not None:
            raise ValueError(f"pairs must be a Pairs or (sample index, category) tuples; pair {wrong} is "
                             f"{pairs[wrong]!r} ({type(pairs[wrong]).__name__})")
        index = [_category(p[0], "a pair's sample index") for p in pairs]
        category = [_category(p[1], "a pair's category") for p in pairs]
    if isinstance(samples, (str, bytes, Mapping)) or not (hasattr(samples, "__len__") and hasattr(samples, "__getitem__")):
        raise TypeError(f"play: samples must be the dataset the pairs index, a lib.data.Dataset or a sequence of "
                        f"lib.data.Sample (indexable, with a length), got {type(samples).__name__}")
    count = len(index)
    centre_key = ("centre" if centre is True else centre) if centre else None
    if centre_key is not None and centre_key in maps:
        raise ValueError(f"maps already has a key {centre_key!r}; pass centre='<another key>'")
    per_key = {key: _map_list(m, count, f"maps[{key!r}]") for key, m in maps.items()}
    if not per_key and centre_key is None:
        return {}
    n = len(samples)
    for i in index:
        if not 0 <= i < n:
            raise ValueError(f"pair index {i} out of range for {n} samples")
    # Pairs of one image are consecutive in pairs(); group any order by image, keep positions.
    groups: dict[int, list[int]] = {}
    for position, i in enumerate(index):
        groups.setdefault(i, []).append(position)
    order, resolved, first_sample = [], None, None
    for i, positions in groups.items():
        sample = samples[i]
        this = _protocol(protocol, [sample])
        if resolved is not None and this != resolved:
            raise ValueError(
                "samples mix single-class (ImageNet/embedded) and multi-object (COCO/VOC) sources: "
                "pass protocol='torchray' or protocol='crop'"
            )
        resolved = this
        first_sample = sample if first_sample is None else first_sample
        _label_space([first_sample, sample])  # one label space for every pair
        repeated = [sample] * len(positions)
        targets = [category[p] for p in positions]
        if per_key:
            chunk = {key: [per_key[key][p] for p in positions] for key in per_key}
            if resolved == "crop":
                chunk = {key: torch.stack(v) for key, v in chunk.items()}
            game.update(chunk, repeated, targets)
        if centre_key is not None:
            game.add(centre_key, centre_baseline(repeated, targets, tolerance=tolerance, inclusive=inclusive,
                                                 area_fraction=area_fraction, protocol=resolved))
        order.extend(positions)
    if not order:
        raise ValueError("no pairs to play")
    inverse = torch.empty(len(order), dtype=torch.int64)
    inverse[torch.tensor(order, dtype=torch.int64)] = torch.arange(len(order))
    return {
        key: PointingResult.from_hits(r.hits[inverse], r.labels[inverse], r.difficult[inverse], r.points[inverse])
        for key, r in game.results().items()
    }


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
        ValueError: fewer than ``tiles`` distinct classes, a ``count`` below 0, ``tiles`` below 1.
        TypeError: ``count``, ``tiles`` or ``seed`` that is not an integer (a float, a bool).
    """
    count, tiles = check_int(count, "grid_groups: count", 0), check_int(tiles, "grid_groups: tiles", 1)
    seed = check_int(seed, "grid_groups: seed")
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

    Raises:
        TypeError: images that are not a tensor, ``rows``, ``cols`` or ``tile_size`` that is
            not an integer.
        ValueError: images that are not ``(N, C, S, S)``, ``rows``, ``cols`` or ``tile_size``
            below 1, a count of images that does not fill whole grids.
    """
    check_tensor(images, "grid_images: images", "(G * rows * cols, 3, S, S)")
    if images.dim() != 4:
        raise ValueError(f"grid_images: images must be (G * rows * cols, 3, S, S), got shape {tuple(images.shape)}")
    rows, cols = check_int(rows, "grid_images: rows", 1), check_int(cols, "grid_images: cols", 1)
    if tile_size is not None:
        tile_size = check_int(tile_size, "grid_images: tile_size (pixels, or None)", 1)
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

    Raises:
        TypeError: maps that are not a real tensor, ``rows`` or ``cols`` that is not an integer.
        ValueError: maps that are not ``(G * T, H, W)`` of whole grids, maps with NaN or
            infinite values (any sign is accepted: the argmax and the positive mass are
            defined for it), ``rows`` or ``cols`` below 1.
    """
    check_tensor(maps, "grid_pointing: maps", "(G * T, H, W)")
    rows, cols = check_int(rows, "grid_pointing: rows", 1), check_int(cols, "grid_pointing: cols", 1)
    if maps.dim() != 3:
        raise ValueError(f"grid_pointing: maps must be (G * T, H, W), got shape {tuple(maps.shape)}")
    check_finite(maps, "grid_pointing: maps", item="map")
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
