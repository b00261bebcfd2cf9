r"""Class sensitivity of a saliency method: do the maps change with the class explained?

Rebuffi, Fong, Ji & Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020, Sec. 4.3 (Figs. 6-7): for each image, the Spearman rank correlation
between the map for the class the model predicts with the *highest* confidence and the map
for the class it predicts with the *lowest* confidence, both upsampled to the input
resolution.  The min class is not in the image, so its map should carry no information:
a class-sensitive method scores near 0.  Scores near 1 mean the map ignores the class
(the paper finds this for guided backprop and excitation backprop); negative scores come
from sum aggregations, whose votes flip sign between anti-correlated classes.

Ties (the zeros of ReLU-filtered maps) get average ranks.  A constant map (the gradient at
a layer followed by global average pooling, for one) has no ranking: its score is NaN, as in
``scipy.stats.spearmanr``, since 0 would read as the class-sensitive ideal.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..capture import check_images, least_likely_labels
from ..saliency.passes import predict
from ..saliency.registry import resolve_method
from ._checks import check_finite, check_tensor
from .sanity import spearman

__all__ = ["ClassSensitivity", "extreme_classes", "class_sensitivity", "max_min_correlation", "records"]


@dataclass
class ClassSensitivity:
    """Maps for the most and least likely class of each image and their correlation.

    Attributes:
        correlation: (B,) Spearman correlation between ``maps_max`` and ``maps_min``.
        max_class, min_class: (B,) the classes explained.
        maps_max, maps_min: (B, H, W) the maps.
    """

    correlation: torch.Tensor
    max_class: torch.Tensor
    min_class: torch.Tensor
    maps_max: torch.Tensor
    maps_min: torch.Tensor


def extreme_classes(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The most and least likely class of each row of (B, classes) logits (an unscored ``-inf`` class is never the least)."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (B, classes), got {tuple(logits.shape)}")
    return logits.argmax(dim=1), least_likely_labels(logits)


def max_min_correlation(maps_max: torch.Tensor, maps_min: torch.Tensor) -> torch.Tensor:
    """Spearman correlation of paired maps (B, H, W) -> (B,) (Sec. 4.3); NaN where a map is constant.

    Any real values are accepted (only the ranks count); NaN has no rank.

    Raises:
        TypeError: maps that are not real tensors.
        ValueError: maps of two shapes or without a batch dimension ((B, H, W), or any
            (B, ...)), or with NaN or infinite values.
    """
    return _correlation(maps_max, maps_min, "max_min_correlation")


def _correlation(maps_max, maps_min, what: str) -> torch.Tensor:
    """:func:`max_min_correlation`, its errors headed by ``what``."""
    for name, maps in (("maps_max", maps_max), ("maps_min", maps_min)):
        check_tensor(maps, f"{what}: {name}", "(B, H, W)")
    if maps_max.shape != maps_min.shape or maps_max.dim() < 2:
        raise ValueError(f"{what}: maps_max and maps_min must be batches (B, H, W) (or (B, ...)) of one shape, "
                         f"got {tuple(maps_max.shape)} and {tuple(maps_min.shape)}")
    check_finite(maps_max, f"{what}: the maps for the most likely class")
    check_finite(maps_min, f"{what}: the maps for the least likely class")
    correlation = spearman(maps_max, maps_min)
    constant = lambda maps: maps.flatten(1).amax(1) == maps.flatten(1).amin(1)
    return correlation.masked_fill(constant(maps_max) | constant(maps_min), float("nan"))


def _pair(maps_max, maps_min, top, bottom):
    """ClassSensitivity leaf by leaf for (nested) dicts of maps."""
    if isinstance(maps_max, dict):
        return {key: _pair(maps_max[key], maps_min[key], top, bottom) for key in maps_max}
    check_tensor(maps_max, "class_sensitivity: the method's maps", "(B, H, W), or a (nested) dict of them")
    check_tensor(maps_min, "class_sensitivity: the method's maps", "(B, H, W), or a (nested) dict of them")
    maps_max, maps_min = maps_max.detach(), maps_min.detach()
    return ClassSensitivity(_correlation(maps_max, maps_min, "class_sensitivity"), top, bottom, maps_max, maps_min)


def records(result, **labels) -> list[dict]:
    """Long-form rows (one per image) of a :class:`ClassSensitivity` or a nested dict of them.

    Nested keys become ``key0``, ``key1``... unless ``keys=("method", "layer")`` names them;
    every other keyword is copied into each row.  ``pandas.DataFrame(records(...))`` plots.
    """
    names = tuple(labels.pop("keys", ()))

    def walk(node, path):
        if isinstance(node, dict):
            for key, child in node.items():
                yield from walk(child, path + (key,))
            return
        keyed = {(names[i] if i < len(names) else f"key{i}"): k for i, k in enumerate(path)}
        for image, rho in enumerate(node.correlation.tolist()):
            yield {**labels, **keyed, "image": image, "spearman": rho}

    return list(walk(result, ()))


def class_sensitivity(model, method, images: torch.Tensor, *, method_kwargs: dict | None = None):
    """Class sensitivity (Rebuffi et al. 2020, Sec. 4.3) of a method on a batch of images.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        method: a name of ``lib.saliency.METHODS`` or a function with the calling convention
            (``lib.saliency.meta_saliency`` with ``method_kwargs={"method": ...}`` for the
            meta variant of Fig. 7).
        images: (B, 3, H, W) normalised images.
        method_kwargs: keywords for the method (``layer=``, ``batch_size=``, ...).

    Returns:
        :class:`ClassSensitivity`; ``correlation`` near 0 is class sensitive.  A method that
        returns a (nested) dict of maps, such as
        :func:`lib.saliency.extract_and_aggregate.framework_maps` (every method at every layer from one
        pass), gives the same dict with a :class:`ClassSensitivity` per entry.

    Raises:
        ValueError: bad images, an unknown method, maps that are not (B, H, W) or have NaN or
            infinite values (the message names the class they explain).
        TypeError: a method that returns something other than tensors or a (nested) dict of them.
    """
    check_images(images)
    explain = resolve_method(method)
    kwargs = dict(method_kwargs or {})
    logits, _ = predict(model, images)
    top, bottom = extreme_classes(logits)
    return _pair(explain(model, images, top, **kwargs), explain(model, images, bottom, **kwargs), top, bottom)
