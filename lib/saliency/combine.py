r"""Combining saliency maps across layers (Rebuffi et al., *There and back again: revisiting
backpropagation saliency methods*, CVPR 2020, Sec. 4.2 and supplementary C).

A method's maps :math:`m_j` at layers :math:`j = 1..J` (each min-max normalised to [0, 1] at the
input resolution) are combined with normalised layer weights :math:`\gamma_j`
(:math:`\sum_j \gamma_j = 1`) either additively or as a weighted geometric product:

.. math::
    M_{+} = \sum_{j} \gamma_j\, m_j, \qquad M_{\times} = \prod_{j} m_j^{\gamma_j}.

The four weighting schemes of Sec. 4.2:

1. **Feature spread.** :math:`\gamma_j` the mean distance of the images' pooled activations
   from their centre (:func:`lib.saliency.probe.feature_spread`).
2. **Classification accuracy.** :math:`\gamma_j` the accuracy of a linear probe on the pooled
   activations (:func:`lib.saliency.probe.probe_accuracy`), held out by default
   (``probe_weight="heldout"``). :mod:`lib.saliency.probe` states the choices the paper leaves
   open for both.
3. **Linear.** :math:`\gamma_j = j / J`, layers numbered from 1 (a zero weight for the first
   layer would silently drop it).
4. **Uniform.** :math:`\gamma_j = 1 / J`.

The authors' public code (``srebuffi/revisiting_saliency``) multiplies the normalised maps
without exponents; for the argmax (the pointing game) that equals the uniform product, since
:math:`\prod_j m_j^{1/J}` is a monotone function of :math:`\prod_j m_j`.

Weights are computed once per model and layer set and cached as JSON under
``lib.paths.cache_dir() / "layer_weights"`` (:func:`layer_weights`, :mod:`lib.cache`).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch

from .. import cache
from .excitation import excitation_maps
from .passes import INPUT, finish, layer_passes, normalise_maps, with_input
from . import registry
from .probe import _class_labels, _positive_int, feature_spread, pooled_features, probe_accuracy, probe_split
from .registry import REDUCTIONS  # name -> (activations, gradients) -> raw map, the one-pass methods of depth_maps

__all__ = [
    "SCHEMES",
    "COMBINATIONS",
    "linear_weights",
    "uniform_weights",
    "normalise_weights",
    "combine",
    "LayerWeights",
    "layer_weights",
    "combinations",
    "depth_maps",
    "image_halves",
    "best_candidate",
]

SCHEMES = ("accuracy", "spread", "linear", "uniform")
"""The four weighting schemes of Rebuffi et al. Sec. 4.2."""

COMBINATIONS = ("sum", "product")
"""Weighted sum and weighted (geometric) product."""


# --------------------------------------------------------------------------------------------
# Weights and combination
# --------------------------------------------------------------------------------------------


def linear_weights(count: int) -> torch.Tensor:
    r"""Linear interpolation :math:`\gamma_j = j / J`, ``j = 1..J`` (Sec. 4.2, scheme 3), unnormalised."""
    if count < 1:
        raise ValueError("need at least one layer")
    return torch.arange(1, count + 1, dtype=torch.float64) / count


def uniform_weights(count: int) -> torch.Tensor:
    r"""Uniform :math:`\gamma_j = 1 / J` (Sec. 4.2, scheme 4)."""
    if count < 1:
        raise ValueError("need at least one layer")
    return torch.full((count,), 1.0 / count, dtype=torch.float64)


def normalise_weights(weights) -> torch.Tensor:
    """Weights divided by their sum (Sec. 4.2: "the weights are normalised").

    Raises:
        ValueError: a negative or non-finite weight, or all zero.
    """
    w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"weights must be finite and non-negative, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError("weights sum to zero")
    return w / w.sum()


def combine(maps, weights, how: str = "product", *, normalize: bool = True) -> torch.Tensor:
    r"""Weighted sum :math:`\sum_j \gamma_j m_j` or product :math:`\prod_j m_j^{\gamma_j}` of layer maps.

    Rebuffi et al. 2020, Sec. 4.2.

    Args:
        maps: ``(J, B, H, W)`` tensor or ``J`` tensors ``(B, H, W)``, each map min-max
            normalised to [0, 1] at a common resolution (the calling convention's output).
        weights: ``(J,)`` non-negative weights; normalised to sum to 1 here.
        how: ``"sum"`` or ``"product"``.
        normalize: min-max normalise the combined maps (does not move their maximum).

    Returns:
        ``(B, H, W)``.

    Raises:
        ValueError: unknown ``how``, a weight count that differs from the layer count, maps
            outside [0, 1] for the product (a negative base has no real power), no maps or
            maps of different shapes, maps that are not floating point or not finite.
    """
    if not isinstance(maps, torch.Tensor):
        maps = list(maps)
        if not maps or any(not isinstance(m, torch.Tensor) or m.shape != maps[0].shape for m in maps):
            raise ValueError("maps must be J >= 1 tensors (B, H, W) of one shape, got "
                             + (str([tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__ for m in maps]) or "none"))
        maps = torch.stack(maps)
    if maps.dim() != 4:
        raise ValueError(f"maps must be (J, B, H, W), got {tuple(maps.shape)}")
    if not maps.is_floating_point():
        raise ValueError(f"maps must be floating point in [0, 1], got {maps.dtype}")
    if not bool(torch.isfinite(maps).all()):  # normalising a NaN map would silently give zeros
        raise ValueError(f"maps have {int((~torch.isfinite(maps)).sum())} NaN or infinite values; combine takes finite maps in [0, 1]")
    w = normalise_weights(weights)
    if w.numel() != maps.shape[0]:
        raise ValueError(f"{w.numel()} weights for {maps.shape[0]} layers")
    w = w.to(maps.device, maps.dtype).view(-1, 1, 1, 1)
    if how == "sum":
        out = (w * maps).sum(dim=0)
    elif how == "product":
        if (maps < 0).any():
            raise ValueError("the product combination needs maps in [0, 1] (normalise them first)")
        out = torch.pow(maps, w).prod(dim=0)  # 0 ** 0 == 1: a zero-weight layer is neutral
    else:
        raise ValueError(f"how must be one of {COMBINATIONS}, got {how!r}")
    return normalise_maps(out) if normalize else out


@dataclass
class LayerWeights:
    """The four schemes' raw weights for one model and layer set (before normalisation).

    Attributes:
        model: the model's name; layers: the layers, shallow to deep.
        spread: feature spread per layer; accuracy: the probe's held-out accuracy per layer
            (``None`` when no probe could be trained, see ``note``); train_accuracy: its
            training accuracy; linear, uniform: the fixed schemes.
        probe: sizes of the probe (``n_train``, ``n_heldout``, ``n_classes``, ``chance``).
        note: why the accuracy scheme is missing, or where the probe images came from.
    """

    model: str
    layers: list[str]
    spread: list[float]
    accuracy: list[float] | None
    train_accuracy: list[float] | None
    linear: list[float]
    uniform: list[float]
    probe: dict = field(default_factory=dict)
    note: str = ""

    def scheme(self, name: str) -> torch.Tensor:
        """Normalised weights ``(J,)`` of ``"accuracy"``, ``"spread"``, ``"linear"`` or ``"uniform"``."""
        if name not in SCHEMES:
            raise ValueError(f"scheme must be one of {SCHEMES}, got {name!r}")
        values = getattr(self, name)
        if values is None:
            raise ValueError(f"no {name!r} weights for {self.model}: {self.note}")
        return normalise_weights(values)

    @property
    def available(self) -> tuple[str, ...]:
        """The schemes that have weights."""
        return tuple(s for s in SCHEMES if getattr(self, s) is not None)

    def frame(self):
        """A long pandas DataFrame (layer, depth, scheme, weight), weights normalised."""
        import pandas as pd

        rows = []
        for s in self.available:
            for j, (layer, w) in enumerate(zip(self.layers, self.scheme(s).tolist())):
                rows.append({"layer": layer, "depth": j, "scheme": s, "weight": w})
        return pd.DataFrame(rows)


def _stored_weights(stored, name: str, layers: list[str]) -> LayerWeights | None:
    """A cached value as :class:`LayerWeights`, or None (a miss) when it is not one for this model and these layers."""
    if not isinstance(stored, dict) or set(stored) != {f.name for f in fields(LayerWeights)}:
        return None
    if stored["model"] != name or stored["layers"] != layers:
        return None
    per_layer = (stored[s] for s in ("spread", "accuracy", "train_accuracy", "linear", "uniform"))
    if any(v is not None and (not isinstance(v, list) or len(v) != len(layers)) for v in per_layer):
        return None
    return LayerWeights(**stored)


def layer_weights(
    model,
    layers: Sequence[str],
    spread_images: torch.Tensor,
    probe_images: torch.Tensor | None = None,
    probe_labels=None,
    *,
    model_name: str | None = None,
    cache_key: str = "",
    use_cache: bool = True,
    probe_weight: str = "heldout",
    spread_norm: str = "l2",
    heldout_per_class: int = 1,
    min_per_class: int = 2,
    probe_steps: int = 300,
    batch_size: int | None = 32,
    seed: int = 0,
) -> LayerWeights:
    """The four schemes' weights for a model and layer set (Rebuffi et al. 2020, Sec. 4.2), computed once and cached.

    Args:
        model: ``Classifier`` or ``nn.Module``.
        layers: the layers whose maps will be combined, shallow to deep.
        spread_images: ``(M, 3, H, W)`` images for the feature spread (the paper samples them
            uniformly across classes), or a zero-argument callable returning them (called only
            on a cache miss; then ``cache_key`` must identify the images).
        probe_images, probe_labels: labelled images (tensor or callable) for the linear probe,
            **disjoint from the images the combination is evaluated on**; None: no accuracy
            scheme.
        model_name: name in the cache key (default ``model.name`` or the class name).  The key
            also holds a digest of the model's parameters and buffers, of the probe labels and,
            for tensors, of the images themselves.
        cache_key: anything else that identifies the images (e.g. their ids); part of the key.
        use_cache: read/write ``cache_dir()/layer_weights/<model>-<hash>.json``.
        probe_weight: ``"heldout"`` (default) or ``"train"`` accuracy as the weight.
        spread_norm: see :func:`lib.saliency.probe.feature_spread`.
        heldout_per_class, min_per_class: see :func:`lib.saliency.probe.probe_split`.
        probe_steps: optimisation steps of the probe.

    Returns:
        :class:`LayerWeights`. A probe set whose split leaves fewer than two classes gives no
        accuracy scheme (``accuracy`` None, ``note`` says why).

    Raises:
        ValueError: probe labels of another length than the probe images, or of one class only
            (the probe's accuracy would be meaningless); ``heldout_per_class`` or
            ``probe_steps`` below 1; an unknown ``probe_weight``.
        TypeError: probe labels that are not integers; ``layers`` given as one str.
    """
    if probe_weight not in ("heldout", "train"):
        raise ValueError("probe_weight must be 'heldout' or 'train'")
    heldout_per_class = _positive_int(heldout_per_class, "heldout_per_class")
    probe_steps = _positive_int(probe_steps, "probe_steps")
    labels = None if probe_labels is None else _class_labels(probe_labels, "probe_labels")
    if labels is not None and len(torch.unique(labels)) < 2:
        raise ValueError(f"the probe labels hold the classes {torch.unique(labels).tolist()}; a probe's accuracy needs at least two")
    lazy = callable(spread_images) or callable(probe_images)
    if lazy and not cache_key:
        raise ValueError("image loaders (callables) need a cache_key that identifies their images")
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}; pass [{layers!r}]")
    layers = list(layers)
    name = model_name or getattr(model, "name", None) or type(getattr(model, "model", model)).__name__
    key = {
        "model": name, "layers": layers, "cache_key": cache_key, "probe_weight": probe_weight,
        "spread_norm": spread_norm, "heldout_per_class": heldout_per_class, "min_per_class": min_per_class,
        "probe_steps": probe_steps, "seed": seed,
    }
    module = getattr(model, "model", model)
    key["weights"] = cache.tensor_digest(*module.state_dict().values())
    key["probe_labels"] = None if labels is None else cache.tensor_digest(labels)
    if not lazy:
        key["spread_images"] = cache.tensor_digest(spread_images)
        key["probe_images"] = None if probe_images is None else cache.tensor_digest(probe_images)
    stored = _stored_weights(cache.read("layer_weights", name, key), name, layers) if use_cache else None
    if stored is not None:
        return stored
    same = probe_images is spread_images  # one set of images for both: load and pool them once
    if callable(spread_images):
        spread_images = spread_images()
    probe_images = spread_images if same else (probe_images() if callable(probe_images) else probe_images)
    if labels is not None and isinstance(probe_images, torch.Tensor) and probe_images.shape[0] != len(labels):
        raise ValueError(f"{probe_images.shape[0]} probe images but {len(labels)} probe labels; give one label per image")
    spread_feats = pooled_features(model, spread_images, layers, batch_size=batch_size)
    spread = [feature_spread(spread_feats[layer], norm=spread_norm) for layer in layers]
    accuracy = train_accuracy = None
    probe, note = {}, "no labelled probe images disjoint from the evaluation images"
    if probe_images is not None and labels is not None:
        train, held = probe_split(labels, heldout_per_class=heldout_per_class, min_per_class=min_per_class, seed=seed)
        if len(train) == 0 or (probe_weight == "heldout" and len(held) == 0):
            note = f"the probe set has no class with {min_per_class} or more images"
        elif len(torch.unique(labels[train])) < 2:
            note = f"the probe set has one class with {min_per_class} or more images; a probe's accuracy needs two"
        else:
            feats = spread_feats if same else pooled_features(model, probe_images, layers, batch_size=batch_size)
            results = [
                probe_accuracy(feats[l][train], labels[train], feats[l][held], labels[held], steps=probe_steps, seed=seed)
                for l in layers
            ]
            train_accuracy = [r.train_accuracy for r in results]
            accuracy = [r.heldout_accuracy if probe_weight == "heldout" else r.train_accuracy for r in results]
            probe = {"n_train": results[0].n_train, "n_heldout": results[0].n_heldout,
                     "n_classes": results[0].n_classes, "chance": results[0].chance}
            note = f"probe fit on {len(train)} images of {results[0].n_classes} classes, {probe_weight} accuracy on {len(held)}"
            if max(accuracy) <= 0:
                accuracy, note = None, note + "; every layer scored 0, no accuracy weights"
    weights = LayerWeights(
        name, layers, spread, accuracy, train_accuracy,
        linear_weights(len(layers)).tolist(), uniform_weights(len(layers)).tolist(), probe, note,
    )
    if use_cache:
        cache.write("layer_weights", name, key, asdict(weights))
    return weights


# --------------------------------------------------------------------------------------------
# Maps at several layers
# --------------------------------------------------------------------------------------------


def combinations(
    maps: dict[tuple[str, str], torch.Tensor],
    weights: "LayerWeights",
    methods: Sequence[str],
    *,
    schemes: Sequence[str] | None = None,
    hows: Sequence[str] = COMBINATIONS,
) -> dict[tuple[str, str, str], torch.Tensor]:
    """Every scheme x combination of each method's layer maps: ``{(method, scheme, how): (B, H, W)}``.

    Args:
        maps: ``{(method, layer): (B, H, W)}`` (e.g. :func:`depth_maps`) holding every layer of
            ``weights.layers``.
        weights: :class:`LayerWeights`; schemes default to ``weights.available``.
    """
    schemes = weights.available if schemes is None else schemes
    out = {}
    for m in methods:
        stack = torch.stack([maps[(m, l)] for l in weights.layers])
        for s in schemes:
            w = weights.scheme(s)
            for how in hows:
                out[(m, s, how)] = combine(stack, w, how)
    return out


# --------------------------------------------------------------------------------------------
# Every depth, the network input included (Rebuffi et al. supp. Table 5: "input" is a layer,
# :data:`INPUT` of :func:`with_input`)
# --------------------------------------------------------------------------------------------


def depth_maps(
    methods: Sequence[str],
    model,
    images: torch.Tensor,
    targets=None,
    layers: Sequence[str] = ("last",),
    *,
    batch_size: int | None = None,
) -> dict[tuple[str, str], torch.Tensor]:
    """Maps ``(B, H, W)`` of several methods at several depths, the input (:data:`INPUT`) allowed among them.

    Methods with a one-pass reduction (:data:`REDUCTIONS`) share ONE forward and ONE backward
    pass per batch (:func:`lib.saliency.passes.layer_passes`, the input tapped by
    :func:`with_input` when asked for, each batch reduced as soon as its pass is done); Excitation
    Backprop and its contrastive variant (contrast at each layer itself) take one pass, and two,
    for all layers (:func:`lib.saliency.excitation.excitation_maps`); any other method of
    :data:`lib.saliency.METHODS` that takes a ``layer`` is called once per layer.  This
    is the multi-layer API of the package's method names (:func:`lib.saliency.extract_and_aggregate.framework_maps`
    is its counterpart for Extract & Aggregate settings).

    Args:
        methods: method names (:data:`REDUCTIONS` or :data:`lib.saliency.METHODS`).
        layers: layer aliases, module names or :data:`INPUT`.

    Returns:
        ``{(method, layer): maps}`` in the order of ``methods`` then ``layers``, each map
        normalised to [0, 1] at the input resolution.

    Raises:
        ValueError: an unknown method, or a registered method without a ``layer`` argument.
    """
    layers = list(layers)
    seen = with_input(model) if INPUT in layers else model
    one_pass = [m for m in methods if m in REDUCTIONS]
    out = {}
    if one_pass:

        def reduce(passes):
            return {(m, l): REDUCTIONS[m](passes[l].activations, passes[l].gradients) for m in one_pass for l in layers}

        maps = layer_passes(seen, images, targets, layers, batch_size=batch_size, reduce=reduce)
        out = {key: finish(m, images, False) for key, m in maps.items()}
    for contrastive, name in enumerate(("excitation_backprop", "contrastive_excitation_backprop")):
        if name in methods:  # the winning probability at every layer from one backward pass under the rules
            maps = excitation_maps(seen, images, targets, layers, contrastive=bool(contrastive), batch_size=batch_size)
            out.update({(name, layer): finish(m, images, False) for layer, m in maps.items()})
    for name in methods:
        if name in REDUCTIONS or (name, layers[0]) in out:
            continue
        entry = registry.get(name)
        method = entry.function
        parameters = inspect.signature(method).parameters
        if not entry.takes_layer:
            raise ValueError(f"{name!r} has no one-pass reduction and takes no layer: it has no map at a depth")
        extra = {"batch_size": batch_size} if "batch_size" in parameters else {}
        for layer in layers:
            out[(name, layer)] = method(seen, images, targets, layer=layer, **extra)
    return {(m, l): out[(m, l)] for m in methods for l in layers}


# --------------------------------------------------------------------------------------------
# Choosing a configuration on one half of the images, testing it on the other
# --------------------------------------------------------------------------------------------


def image_halves(images: Sequence, *, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split units into two halves **by image**, seeded: bool masks ``(choose, test)``, ``(N,)`` each.

    Every unit of one image (its image-category pairs) lands in the same half, so the two
    halves are independent. The ``floor(n / 2)`` images of a seeded permutation of the distinct
    image ids (sorted first, so the split does not depend on the units' order) choose; the rest
    test. Best-of-k choices made and tested on the same units favour the chosen configuration
    (a selection effect); chosen on one half and tested on the other they do not.

    Args:
        images: ``N`` image ids, one per unit (repeated for an image's several pairs).
    """
    ids = [str(i) for i in images]
    distinct = sorted(set(ids))
    order = torch.randperm(len(distinct), generator=torch.Generator().manual_seed(seed)).tolist()
    chooser = {distinct[i] for i in order[: len(distinct) // 2]}
    choose = torch.tensor([i in chooser for i in ids], dtype=torch.bool)
    return choose, ~choose


def best_candidate(values: Mapping, weights, candidates: Sequence):
    r"""The candidate with the highest weighted mean :math:`\sum_i w_i v_i` (e.g. class-mean pointing accuracy).

    Ties go to the candidate listed first, so list them in an order that favours no side of the
    later test (a choice made on one half, :func:`image_halves`, tested on the other).

    Args:
        values: ``{candidate: (N,) per-unit values}`` (hits), the same units for every candidate.
        weights: ``(N,)`` unit weights (e.g. ``PointingResult.class_weights()``).
        candidates: the keys to choose among, in tie-breaking order.

    Raises:
        ValueError: no candidates.
    """
    if not candidates:
        raise ValueError("best_candidate: no candidates")
    w = torch.as_tensor(weights, dtype=torch.float64, device="cpu").reshape(-1)
    score = {c: float((w * torch.as_tensor(values[c], dtype=torch.float64, device="cpu").reshape(-1)).sum()) for c in candidates}
    return max(candidates, key=lambda c: score[c])  # max keeps the first of equal scores
