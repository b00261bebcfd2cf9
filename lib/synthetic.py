r"""A generated image set with known relevant pixels, a small CNN, and the retraining experiments built on them.

The practitioner's audit (chapter 07) needs models trained in seconds on a CPU, offline, on data whose relevant pixels
are known: the data-randomisation test (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3.2),
ROAR (Hooker et al., "A Benchmark for Interpretability Methods in Deep Neural Networks", NeurIPS 2019, Sec. 3) and a
planted shortcut (the tutorial's watermark story).  No packaged data set (MNIST, CIFAR) ships with torch or
torchvision, and downloading is not an option offline, so the images are generated:

* **Shapes.** Each image (``size`` x ``size``, default 32) is Gaussian noise (σ = ``noise``) with one 7 x 7 shape of
  intensity +1 in every channel at a random position; the class is the shape (:data:`SHAPES`: filled square, plus,
  cross, ring).  The shape's pixels are the *relevant* mask: nothing else carries the label.
* **Shortcut.** With ``shortcut=True`` a 3 x 3 watermark in the top-left corner encodes the label by colour (one
  channel at +2, or all channels at -2 for the fourth class): a constant, high-contrast, fixed-position cue that
  a small CNN learns faster than the shapes, as the photo-service logo in the tutorial's story.
  :func:`remove_watermark` paints fresh background noise over it.

The images are already in the model's input space (zero-mean noise, no normalisation).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SHAPES", "ShapesData", "shapes_dataset", "remove_watermark", "small_cnn", "CAM_LAYER", "train", "accuracy",
           "correct", "shuffled_labels", "remove_top", "roar", "edge_maps", "random_maps", "mass_inside"]

_PATTERNS = {
    "square": np.ones((7, 7)),
    "plus": np.pad(np.ones((7, 3)), ((0, 0), (2, 2))) + np.pad(np.ones((3, 7)), ((2, 2), (0, 0))),
    "cross": np.eye(7) + np.fliplr(np.eye(7)),
    "ring": np.pad(np.zeros((5, 5)), 1, constant_values=1),
}
SHAPES = tuple(_PATTERNS)
"""The classes, in label order."""
WATERMARK = 3
"""Side of the shortcut's watermark, in pixels, in the top-left corner."""


@dataclass(frozen=True)
class ShapesData:
    """Images, labels and the masks of the pixels that carry the label.

    Attributes:
        images: (n, 3, size, size) float32.
        labels: (n,) int64 class indices into :data:`SHAPES`.
        relevant: (n, size, size) bool, the shape's pixels.
        watermark: (n, size, size) bool, the watermark's pixels (all False without a shortcut).
        seed: the seed the set was drawn with (:func:`remove_watermark` derives its noise from it).
    """

    images: torch.Tensor
    labels: torch.Tensor
    relevant: torch.Tensor
    watermark: torch.Tensor
    seed: int

    def __len__(self) -> int:
        return int(self.labels.numel())

    def __getitem__(self, index) -> "ShapesData":
        """The subset at ``index`` (a slice or an index tensor)."""
        return replace(self, images=self.images[index], labels=self.labels[index], relevant=self.relevant[index],
                       watermark=self.watermark[index])


#: The largest seed: torch's generators take a signed 64-bit value, and remove_watermark uses seed + 1.
MAX_SEED = 2**63 - 2


def _check_whole(value, what: str, low: int, high: int | None = None) -> int:
    if (isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral) or value < low
            or (high is not None and value > high)):
        bound = f" and <= {high}" if high is not None else ""
        raise ValueError(f"{what} must be a whole number >= {low}{bound}, got {value!r}")
    return int(value)


def _check_seed(value, what: str) -> int:
    return _check_whole(value, what, 0, MAX_SEED)


def _check_level(value, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_fraction(value, what: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{what} must be a number in [0, 1], got {value!r}")
    return float(value)


def shapes_dataset(n: int, *, size: int = 32, seed: int = 0, shortcut: bool = False, noise: float = 0.5,
                   contrast: float = 1.0) -> ShapesData:
    """``n`` generated images of the four shapes, balanced classes in random order (see the module docstring).

    Raises:
        ValueError: ``n`` < 1, ``size`` < 12 (the shape and the watermark must fit apart), a noise level that is
            not a finite number >= 0.
    """
    n = _check_whole(n, "shapes_dataset: n", 1)
    size = _check_whole(size, "shapes_dataset: size", 12)
    noise = _check_level(noise, "shapes_dataset: noise")
    contrast = _check_level(contrast, "shapes_dataset: contrast")
    if not isinstance(shortcut, bool):
        raise TypeError(f"shapes_dataset: shortcut must be True or False, got {shortcut!r}")
    seed = _check_seed(seed, "shapes_dataset: seed")
    generator = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(SHAPES)
    labels = labels[torch.randperm(n, generator=generator)]
    images = torch.randn(n, 3, size, size, generator=generator) * noise
    relevant = torch.zeros(n, size, size, dtype=torch.bool)
    low = WATERMARK + 1  # the shape never touches the watermark's corner
    rows = torch.randint(low, size - 7 + 1, (n,), generator=generator)
    cols = torch.randint(low, size - 7 + 1, (n,), generator=generator)
    patterns = torch.tensor(np.stack([(_PATTERNS[s] > 0) for s in SHAPES]), dtype=torch.bool)
    for i in range(n):
        r, c = int(rows[i]), int(cols[i])
        relevant[i, r:r + 7, c:c + 7] = patterns[labels[i]]
    images = torch.where(relevant[:, None], torch.full_like(images, float(contrast)), images)
    watermark = torch.zeros_like(relevant)
    if shortcut:
        watermark[:, :WATERMARK, :WATERMARK] = True
        code = torch.zeros(n, 3)
        code[labels < 3, labels[labels < 3]] = 2.0
        code[labels == 3] = -2.0
        images = torch.where(watermark[:, None], code[:, :, None, None].expand_as(images), images)
    return ShapesData(images.float(), labels.long(), relevant, watermark, int(seed))


def remove_watermark(data: ShapesData, *, noise: float = 0.5) -> ShapesData:
    """The same images with the watermark painted over by fresh background noise (seeded from the set's seed)."""
    if not isinstance(data, ShapesData):
        raise TypeError(f"remove_watermark: expected ShapesData, got {type(data).__name__}")
    noise = _check_level(noise, "remove_watermark: noise")
    fresh = torch.randn(data.images.shape, generator=torch.Generator().manual_seed(data.seed + 1)) * noise
    images = torch.where(data.watermark[:, None], fresh, data.images)
    return replace(data, images=images, watermark=torch.zeros_like(data.watermark))


CAM_LAYER = "features.5"
"""The layer of :func:`small_cnn` that CAM methods take: the output of its last convolution's ReLU (8 x 8 at 32 px)."""


def small_cnn(classes: int = len(SHAPES), *, width: int = 16, seed: int = 0) -> nn.Module:
    """Three 3 x 3 convolutions with ReLU (the second with stride 2, the third with stride 2), global average pooling
    and a linear classifier; parameters drawn from ``seed``, the global random state untouched.

    Its modules: ``features`` (``features.0`` ... ``features.5``; :data:`CAM_LAYER` is the last ReLU), ``pool``,
    ``flatten``, ``classifier``.
    """
    classes = _check_whole(classes, "small_cnn: classes", 2)
    width = _check_whole(width, "small_cnn: width", 1)
    seed = _check_seed(seed, "small_cnn: seed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = nn.Sequential()
        model.add_module("features", nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), nn.ReLU()))
        model.add_module("pool", nn.AdaptiveAvgPool2d(1))
        model.add_module("flatten", nn.Flatten())
        model.add_module("classifier", nn.Linear(2 * width, classes))
    return model.eval()


def _check_set(images, labels, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(f"{what}: images must be a float (n, C, H, W) tensor, got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    if not isinstance(labels, torch.Tensor) or labels.shape != images.shape[:1] or labels.is_floating_point():
        raise ValueError(f"{what}: labels must be an integer tensor of shape ({images.shape[0]},), got "
                         f"{tuple(labels.shape) if isinstance(labels, torch.Tensor) else type(labels).__name__}")
    if labels.dtype == torch.bool or len(labels) == 0 or (labels < 0).any():
        raise ValueError(f"{what}: labels must be at least one non-negative integer class index (not bool), got "
                         f"{labels.dtype} of length {len(labels)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{what}: images with NaN or infinite values")
    return images, labels


def train(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 6, batch_size: int = 64,
          lr: float = 3e-3, seed: int = 0) -> list[float]:
    """Train ``model`` in place with Adam and cross-entropy, mini-batches in a seeded order; returns the training
    accuracy of each epoch.  The model is left in eval mode (every saliency method requires it).

    Raises:
        ValueError: images or labels of the wrong shape or type, non-finite images, counts below 1, a learning rate
            that is not a positive number.
    """
    images, labels = _check_set(images, labels, "train")
    epochs = _check_whole(epochs, "train: epochs", 1)
    batch_size = _check_whole(batch_size, "train: batch_size", 1)
    if isinstance(lr, (bool, np.bool_)) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or lr <= 0:
        raise ValueError(f"train: lr must be a finite number > 0, got {lr!r}")
    seed = _check_seed(seed, "train: seed")
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    history = []
    model.train()
    try:
        for _ in range(epochs):
            right = 0
            for piece in torch.randperm(len(labels), generator=generator).split(batch_size):
                x, y = images[piece], labels[piece].to(images.device)
                logits = model(x)
                loss = F.cross_entropy(logits, y)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                right += int((logits.argmax(1) == y).sum())
            history.append(right / len(labels))
    finally:
        model.eval()
    return history


def correct(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """(n,) bool: the model's top-1 equals the label, per image, in eval mode (a model in training mode is switched
    for the call, with a warning, and restored exactly: ``lib.capture.prepared``)."""
    from .capture import prepared

    images, labels = _check_set(images, labels, "correct")
    batch_size = _check_whole(batch_size, "correct: batch_size", 1)
    with prepared(model) as module, torch.no_grad():
        logits = [module(images[piece]) for piece in torch.arange(len(labels)).split(batch_size)]
    classes = logits[0].shape[1]
    if labels.min() < 0 or labels.max() >= classes:
        raise ValueError(f"correct: labels must be class indices in [0, {classes - 1}] (the model has {classes} outputs), "
                         f"got values from {int(labels.min())} to {int(labels.max())}")
    return torch.cat([z.argmax(1).cpu() for z in logits]) == labels.cpu()


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` on the images."""
    return float(correct(model, images, labels, batch_size).float().mean())


def shuffled_labels(labels: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """The labels in a seeded random permutation (Adebayo et al. 2018, Sec. 3.2: the same label counts, no link to
    the images)."""
    if not isinstance(labels, torch.Tensor) or labels.ndim != 1:
        raise ValueError(f"shuffled_labels: labels must be a 1-D tensor, got {labels!r}")
    seed = _check_seed(seed, "shuffled_labels: seed")
    return labels[torch.randperm(labels.numel(), generator=torch.Generator().manual_seed(seed))]


def _check_maps(images: torch.Tensor, maps, what: str) -> torch.Tensor:
    if not isinstance(maps, torch.Tensor) or maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"{what}: maps must be ({images.shape[0]}, {images.shape[-2]}, {images.shape[-1]}), one per "
                         f"image, got {tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__}")
    if not torch.isfinite(maps).all():
        raise ValueError(f"{what}: maps with NaN or infinite values")
    return maps


def remove_top(images: torch.Tensor, maps: torch.Tensor, fraction: float, fill: torch.Tensor | None = None) -> torch.Tensor:
    """The images with the ``round(fraction * H * W)`` pixels of highest map value replaced by ``fill`` (Hooker et
    al. 2019, Sec. 3: the per-channel mean of the data set; default: the mean of ``images``).  Ties are broken by
    position (``torch.sort`` is stable), so exactly that many pixels go per image.

    Raises:
        ValueError: maps not (n, H, W) finite values, a fraction outside [0, 1], a fill that is not (C,).
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point() or not torch.isfinite(images).all():
        raise ValueError("remove_top: images must be a finite float (n, C, H, W) tensor")
    maps = _check_maps(images, maps, "remove_top")
    fraction = _check_fraction(fraction, "remove_top: fraction")
    fill = images.mean(dim=(0, 2, 3)) if fill is None else fill
    if not isinstance(fill, torch.Tensor) or fill.shape != images.shape[1:2] or not torch.isfinite(fill).all():
        raise ValueError(f"remove_top: fill must be one value per channel, shape ({images.shape[1]},), got {fill!r}")
    n, pixels = maps.shape[0], maps.shape[1] * maps.shape[2]
    k = round(fraction * pixels)
    order = torch.sort(maps.reshape(n, pixels), dim=1, descending=True, stable=True).indices[:, :k]
    removed = torch.zeros(n, pixels, dtype=torch.bool, device=maps.device).scatter_(1, order, True)
    removed = removed.view(n, 1, *maps.shape[1:]).to(images.device)
    return torch.where(removed, fill.to(images)[None, :, None, None], images)


def roar(make_model: Callable[[int], nn.Module], train_data: ShapesData, test_data: ShapesData,
         train_maps: torch.Tensor, test_maps: torch.Tensor, *, fractions: Sequence[float] = (0.1, 0.3, 0.5),
         seeds: Sequence[int] = (0, 1), epochs: int = 6) -> "pandas.DataFrame":
    """RemOve And Retrain (Hooker et al. 2019, Sec. 3): for each fraction, remove the top pixels of every training and
    test image by its map (:func:`remove_top`, the training set's channel mean as fill), train a fresh model
    (``make_model(seed)``) on the degraded training set and score it on the degraded test set.

    Returns:
        A frame with columns ``fraction``, ``seed``, ``accuracy`` and ``correct`` (the (n_test,) bool tensor of
        per-image correctness, for paired comparisons between maps).

    Raises:
        ValueError: maps that do not match the sets, fractions outside [0, 1], no seeds.
    """
    import pandas as pd

    train_maps = _check_maps(train_data.images, train_maps, "roar: train_maps")
    test_maps = _check_maps(test_data.images, test_maps, "roar: test_maps")
    if not isinstance(train_data, ShapesData) or not isinstance(test_data, ShapesData):
        raise TypeError("roar: train_data and test_data must be ShapesData (lib.synthetic.shapes_dataset)")
    if not isinstance(fractions, Sequence) or not fractions:
        raise ValueError(f"roar: fractions must be a non-empty list of shares in [0, 1], got {fractions!r}")
    fractions = [_check_fraction(f, "roar: fraction") for f in fractions]
    if not isinstance(seeds, Sequence) or not seeds:
        raise ValueError(f"roar: seeds must be a non-empty list of whole numbers, got {seeds!r}")
    seeds = [_check_seed(seed, "roar: seed") for seed in seeds]
    epochs = _check_whole(epochs, "roar: epochs", 1)
    fill = train_data.images.mean(dim=(0, 2, 3))
    rows = []
    for fraction in fractions:
        train_images = remove_top(train_data.images, train_maps, fraction, fill)
        test_images = remove_top(test_data.images, test_maps, fraction, fill)
        for seed in seeds:
            model = make_model(seed)
            train(model, train_images, train_data.labels, epochs=epochs, seed=seed)
            right = correct(model, test_images, test_data.labels)
            rows.append({"fraction": fraction, "seed": seed, "accuracy": float(right.float().mean()), "correct": right})
    return pd.DataFrame(rows)


def edge_maps(images: torch.Tensor) -> torch.Tensor:
    """(n, H, W) Sobel gradient magnitude of the channel-mean image: the model-free edge detector Hooker et al. and
    Adebayo et al. compare saliency maps with."""
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError(f"edge_maps: images must be (n, C, H, W), got {images!r}")
    grey = images.mean(dim=1, keepdim=True)
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=images.dtype, device=images.device)
    kernels = torch.stack([kx, kx.T])[:, None]
    g = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), kernels)
    return g.pow(2).sum(dim=1).sqrt()


def random_maps(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """(n, size, size) uniform random maps: the ROAR control that ranks pixels at random."""
    n, size = _check_whole(n, "random_maps: n", 1), _check_whole(size, "random_maps: size", 1)
    seed = _check_seed(seed, "random_maps: seed")
    return torch.rand(n, size, size, generator=torch.Generator().manual_seed(seed))


def mass_inside(maps: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """(n,) share of each map's mass inside its mask, :math:`\\sum_{p \\in M} s_p / \\sum_p s_p`, for maps >= 0; an
    all-zero map has no mass to share and gives NaN.

    Raises:
        ValueError: shapes that differ, negative or non-finite maps, masks that are not boolean.
    """
    if not isinstance(maps, torch.Tensor) or not isinstance(masks, torch.Tensor) or maps.shape != masks.shape or maps.ndim != 3:
        raise ValueError(f"mass_inside: maps and masks must both be (n, H, W) tensors of one shape, got "
                         f"{getattr(maps, 'shape', maps)} and {getattr(masks, 'shape', masks)}")
    if masks.dtype != torch.bool:
        raise ValueError(f"mass_inside: masks must be boolean, got {masks.dtype}")
    if not torch.isfinite(maps).all() or (maps < 0).any():
        raise ValueError("mass_inside: maps must be finite and >= 0 (normalised saliency maps)")
    total = maps.double().flatten(1).sum(1)  # in float64: a float16 map's sum overflows
    inside = (maps.double() * masks).flatten(1).sum(1)
    return torch.where(total > 0, inside / total.clamp_min(1e-300), torch.full_like(total, float("nan"))).float()
