r"""What the two learned layer weights of Rebuffi et al. read from a layer: its pooled features, their
spread and a linear probe on them (*There and back again: revisiting backpropagation saliency
methods*, CVPR 2020, Sec. 4.2, schemes 1 and 2).

With :math:`\bar x^i` the spatial mean of a layer's activation on image :math:`i` (a
:math:`K`-vector, :func:`pooled_features`):

1. **Feature spread.** :math:`\gamma_j = \frac1M \sum_i \lVert \bar x^i - \bar x^\mu \rVert`,
   :math:`\bar x^\mu = \frac1M\sum_i |\bar x^i|` (:func:`feature_spread`; each image's term is
   :func:`feature_deviations`). The paper writes a sum over positions while calling it a spatial
   mean, and :math:`|\cdot|` of a vector; we take the **mean** over positions (so the layer's
   resolution does not scale the weight) and the Euclidean norm over channels (``norm="l2"``;
   ``"l1"`` and ``"mean_abs"`` available).
2. **Classification accuracy.** A linear classifier :math:`\Psi` trained on the pooled features
   of labelled images; :math:`\gamma_j` its accuracy (:func:`probe_accuracy`; the classifier
   itself :func:`fit_probe`, each held-out image's outcome :func:`probe_hits`). The paper's
   formula averages over the same :math:`M` images the probe is fit on (training accuracy); we
   fit on one part of a probe set disjoint from the evaluation images (:func:`probe_split`) and
   report both the training and the **held-out** accuracy.

:func:`lib.saliency.combine.layer_weights` turns these into the weights of a combination.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..capture import capture, check_images, prepared, resolve_layer
from .passes import chunks

__all__ = [
    "pooled_features",
    "feature_deviations",
    "feature_spread",
    "ProbeResult",
    "probe_split",
    "fit_probe",
    "probe_accuracy",
    "probe_hits",
]

def pooled_features(model, images: torch.Tensor, layers: Sequence[str], *, batch_size: int | None = 32) -> dict[str, torch.Tensor]:
    r"""Spatially averaged activations :math:`\bar x^i` ``(N, K_j)`` of each layer (Sec. 4.2), one forward pass per batch.

    Args:
        model: ``Classifier`` or ``nn.Module``.
        images: ``(N, 3, H, W)`` normalised images.
        layers: layer aliases or module names.
        batch_size: images per forward pass.

    Returns:
        ``{layer: (N, K_j)}``; a layer whose output is already ``(N, K)`` is returned as it is.

    Raises:
        TypeError: ``layers`` given as one str (pass a list of names).
        ValueError: a layer named twice (its rows would be counted twice).
    """
    check_images(images)
    if isinstance(layers, str):
        raise TypeError(f"layers must be a sequence of layer names, got the str {layers!r}; pass [{layers!r}]")
    repeated = sorted({layer for layer in layers if list(layers).count(layer) > 1})
    if repeated:
        raise ValueError(f"layers must be distinct, got {repeated} more than once")
    for layer in layers:
        resolve_layer(model, layer)
    out: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
    with prepared(model) as module, torch.no_grad():
        for piece in chunks(images.shape[0], batch_size):
            with capture(model, list(layers), gradients=False) as record:
                module(images[piece])
                for layer in layers:
                    a = record[layer]
                    out[layer].append(a.mean(dim=tuple(range(2, a.dim()))) if a.dim() > 2 else a)
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def feature_deviations(features: torch.Tensor, *, norm: str = "l2") -> torch.Tensor:
    r"""Each image's term :math:`\lVert \bar x^i - \bar x^\mu \rVert` of the feature spread (Sec. 4.2, scheme 1): float64 ``(M,)``.

    Their mean is :func:`feature_spread`; per image, they are the units a test of "the spread
    increases with depth" can rest on.

    Args:
        features: ``(M, K)`` spatially pooled activations.
        norm: ``"l2"`` (Euclidean norm of the deviation), ``"l1"`` (sum of absolute
            deviations) or ``"mean_abs"`` (their mean over channels).

    Raises:
        ValueError: features that are not ``(M, K)`` with ``M > 0``, an unknown ``norm``.
    """
    x = torch.as_tensor(features, dtype=torch.float64)
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"features must be (M, K) with M > 0, got {tuple(x.shape)}")
    d = x - x.abs().mean(dim=0)
    if norm == "l2":
        return d.norm(dim=1)
    if norm == "l1":
        return d.abs().sum(dim=1)
    if norm == "mean_abs":
        return d.abs().mean(dim=1)
    raise ValueError(f"norm must be 'l2', 'l1' or 'mean_abs', got {norm!r}")


def feature_spread(features: torch.Tensor, *, norm: str = "l2") -> float:
    r"""Feature spread :math:`\frac1M \sum_i \lVert \bar x^i - \bar x^\mu \rVert`, :math:`\bar x^\mu = \frac1M \sum_i |\bar x^i|` (Sec. 4.2, scheme 1).

    Args:
        features: ``(M, K)`` spatially pooled activations of ``M`` images.
        norm: see :func:`feature_deviations`.
    """
    return float(feature_deviations(features, norm=norm).mean())


@dataclass
class ProbeResult:
    """A linear probe's accuracies (fractions) and the sizes it was fit on."""

    train_accuracy: float
    heldout_accuracy: float
    n_train: int
    n_heldout: int
    n_classes: int

    @property
    def chance(self) -> float:
        return 1.0 / max(self.n_classes, 1)


def _positive_int(value, what: str) -> int:
    """``value`` when it is an integer >= 1 (not a bool); else one clear error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what} must be an integer >= 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {value}")
    return int(value)


def _class_labels(labels, what: str) -> torch.Tensor:
    """``labels`` as int64 ``(N,)`` on the CPU: integer class labels, one per image (float and bool refused, not truncated)."""
    try:
        y = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"{what} must be integer class labels (N,), got {type(labels).__name__}") from error
    if y.numel() and (y.dtype == torch.bool or y.is_floating_point() or y.is_complex()):
        raise TypeError(f"{what} must be integer class labels, got dtype {y.dtype}")
    if y.dim() != 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {tuple(y.shape)}")
    return y.long().cpu()


def _features(features, what: str) -> torch.Tensor:
    """``features`` as float32 ``(N, K)``, detached, on the CPU (the probe is small: fit there, it is the same
    whatever device pooled the features); NaN or infinite values refused."""
    x = torch.as_tensor(features, dtype=torch.float32).detach().cpu()
    if x.dim() != 2:
        raise ValueError(f"{what} must be (N, K) pooled features, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{what} contains NaN or infinite values; the probe needs finite features")
    return x


def _test_set(test_x, test_y) -> tuple[torch.Tensor, torch.Tensor]:
    """Checked held-out features ``(N, K)`` and labels ``(N,)``: one label per row, no broadcasting."""
    x, y = _features(test_x, "test_x"), _class_labels(test_y, "test_y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"test_x has {x.shape[0]} rows but test_y {y.shape[0]} labels; they must match")
    return x, y


def probe_split(labels, *, heldout_per_class: int = 1, min_per_class: int = 2, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Stratified split of a probe set: ``heldout_per_class`` random images of each class held out.

    Only classes with at least ``min_per_class`` images (and more than ``heldout_per_class``)
    are used. Returns ``(train_indices, heldout_indices)``, int64.

    Raises:
        TypeError: labels that are not integers; a ``heldout_per_class`` that is not an integer.
        ValueError: labels that are not 1-D; ``heldout_per_class < 1``.
    """
    labels = _class_labels(labels, "labels")
    heldout_per_class = _positive_int(heldout_per_class, "heldout_per_class")
    generator = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in torch.unique(labels).tolist():
        idx = torch.nonzero(labels == c).flatten()
        if len(idx) < max(min_per_class, heldout_per_class + 1):
            continue
        idx = idx[torch.randperm(len(idx), generator=generator)]
        held.extend(idx[:heldout_per_class].tolist())
        train.extend(idx[heldout_per_class:].tolist())
    return torch.tensor(sorted(train), dtype=torch.int64), torch.tensor(sorted(held), dtype=torch.int64)


def _fit(train_x, train_y, *, steps: int, lr: float, weight_decay: float, seed: int):
    """The probe's fit: its predictor and the training classes (see :func:`fit_probe`)."""
    steps = _positive_int(steps, "steps")
    x = _features(train_x, "train_x")
    classes, y = torch.unique(_class_labels(train_y, "train_y"), return_inverse=True)
    if x.shape[0] != y.shape[0] or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"train_x (N, K) and train_y (N,) must match with N, K > 0, got {tuple(x.shape)} and {tuple(y.shape)}")
    mean, std = x.mean(0), x.std(0, unbiased=False).clamp_min(1e-6)
    generator = torch.Generator().manual_seed(seed)
    weight = (torch.randn(x.shape[1], len(classes), generator=generator) * 0.01).requires_grad_(True)
    bias = torch.zeros(len(classes), requires_grad=True)
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    z = (x - mean) / std
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(z @ weight + bias, y) + weight_decay * weight.pow(2).sum()
            loss.backward()
            optimiser.step()
    weight, bias = weight.detach(), bias.detach()
    n_columns = x.shape[1]

    def predict(features: torch.Tensor) -> torch.Tensor:
        f = _features(features, "features")
        if f.shape[1] != n_columns:
            raise ValueError(f"features must have the training features' {n_columns} columns, got {tuple(f.shape)}")
        with torch.no_grad():
            tz = (f - mean) / std
            return classes[(tz @ weight + bias).argmax(1)]

    return predict, classes


def fit_probe(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    *,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> Callable[[torch.Tensor], torch.Tensor]:
    r"""The linear probe :math:`\Psi` (Sec. 4.2, scheme 2): a multinomial logistic regression on pooled features.

    Features are standardised with the training set's mean and standard deviation; the
    classifier (classes = the training labels present, re-indexed) is fit full-batch with Adam
    for ``steps`` steps on the cross-entropy plus ``weight_decay`` times the squared weights,
    from an initialisation fixed by ``seed``. The paper does not state the optimiser,
    regularisation or split; these are ours.

    Returns:
        A function from ``(N, K)`` features to predicted labels ``(N,)`` in the training labels' values
        (it refuses features with another ``K`` or with NaN or infinite values).

    Raises:
        ValueError: ``train_x`` that is not ``(N, K)`` with one label per row, or holds NaN or
            infinite values; labels that are not 1-D; ``steps < 1``.
        TypeError: labels that are not integers (float or bool); a ``steps`` that is not an integer.
    """
    predict, _ = _fit(train_x, train_y, steps=steps, lr=lr, weight_decay=weight_decay, seed=seed)
    return predict


def probe_accuracy(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor | None = None,
    test_y: torch.Tensor | None = None,
    *,
    steps: int = 300,
    lr: float = 0.05,
    weight_decay: float = 1e-3,
    seed: int = 0,
) -> ProbeResult:
    r"""Accuracy of the linear probe :math:`\Psi` (:func:`fit_probe`) on pooled features (Sec. 4.2, scheme 2).

    Returns:
        :class:`ProbeResult` (``heldout_accuracy`` is ``nan`` without a test set; test images of
        classes unseen in training count as errors).

    Raises:
        ValueError, TypeError: as :func:`fit_probe`, for the training and the test set alike; a
            ``test_x`` whose row count differs from ``test_y``'s, or one given without the other.
    """
    if (test_x is None) != (test_y is None):
        raise ValueError("test_x and test_y go together: give both or neither")
    test = _test_set(test_x, test_y) if test_x is not None else None
    predict, classes = _fit(train_x, train_y, steps=steps, lr=lr, weight_decay=weight_decay, seed=seed)
    train_labels = _class_labels(train_y, "train_y")
    train_acc = float((predict(train_x) == train_labels).float().mean())
    held, n_held = float("nan"), 0
    if test is not None and len(test[1]) > 0:
        held = float((predict(test[0]) == test[1]).float().mean())
        n_held = len(test[1])
    return ProbeResult(train_acc, held, len(train_labels), n_held, len(classes))


def probe_hits(train_x, train_y, test_x, test_y, **options) -> torch.Tensor:
    """Whether the probe (:func:`fit_probe`) classifies each held-out image correctly: bool ``(N_test,)``.

    Their mean is :func:`probe_accuracy`'s ``heldout_accuracy`` (with the same ``options``).

    Raises:
        ValueError, TypeError: as :func:`probe_accuracy`.
    """
    test_x, test_y = _test_set(test_x, test_y)
    predict = fit_probe(train_x, train_y, **options)
    return predict(test_x) == test_y
