"""Machinery shared by every saliency method: input checks, batching, the layer pass, finishing a map.

Every gradient method of the package reads one routine, :func:`layer_passes`: one forward
and one backward pass per chunk of images, recorded at named layers (the network input
included, through :func:`with_input`).  Grad-CAM and its kin, Extract & Aggregate, CAMERAS,
the layer combinations and the input-gradient methods differ only in what they do with the
recorded activations and gradients.
"""

from __future__ import annotations

import functools
import operator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..capture import capture, check_images, check_targets, layer_name, prepared, resolve_layer, unwrap

__all__ = [
    "normalise_maps",
    "constant_maps",
    "CONSTANT_ULPS",
    "finish",
    "check_flag",
    "check_count",
    "check_real",
    "check_choice",
    "check_randomness",
    "check_feature_map",
    "feature_layout",
    "as_feature_map",
    "as_layer_output",
    "CHANNELS_FIRST",
    "CHANNELS_LAST",
    "TOKENS",
    "check_baseline",
    "check_normalisation",
    "upsample",
    "chunks",
    "check_batch_size",
    "auto_batch_size",
    "AUTO",
    "target_scores",
    "slice_targets",
    "predict",
    "check_logits",
    "resolve_targets",
    "aggregate_channels",
    "LayerPass",
    "layer_passes",
    "layer_pass",
    "INPUT",
    "with_input",
    "PRECISIONS",
    "check_precision",
    "forward_in",
    "outside_autocast",
]


#: A map whose span (max - min) is at most this many units in the last place of its largest
#: magnitude is constant: resizing a constant map leaves differences of up to 15 ulp
#: (bilinear and bicubic, measured over 600 sizes and scales), which min-max normalisation
#: would otherwise stretch into a 0/1 pattern of rounding noise.
CONSTANT_ULPS = 16


def _bad_maps(maps: torch.Tensor) -> list[int]:
    return torch.nonzero(~torch.isfinite(maps.reshape(maps.shape[0], -1)).all(dim=1)).flatten().tolist()


def constant_maps(maps: torch.Tensor) -> torch.Tensor:
    """(B,) bool: which maps of a batch (B, ...) are constant by the rule of :func:`normalise_maps`: a span
    of at most :data:`CONSTANT_ULPS` units in the last place of the largest magnitude (an all-zero
    map included): such a map ranks no pixel."""
    flat = maps.reshape(maps.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True)
    flat = flat / scale.clamp_min(torch.finfo(flat.dtype).tiny)  # in [-1, 1] first: max - min cannot overflow
    span = flat.max(dim=1, keepdim=True).values - flat.min(dim=1, keepdim=True).values
    return ~((span > CONSTANT_ULPS * torch.finfo(flat.dtype).eps) & (scale > 0)).flatten()


def normalise_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of a batch (B, ...) to [0, 1]; a constant map becomes zeros.

    A map is constant when its span is at most :data:`CONSTANT_ULPS` units in the last place
    of its largest magnitude (``span <= 16 * eps * max|m|``), so rounding noise is not
    stretched into a pattern.

    Raises:
        ValueError: a map with NaN or infinite values (normalising would hide them).
    """
    if not isinstance(maps, torch.Tensor) or maps.dim() < 1 or not maps.is_floating_point():
        raise TypeError(f"normalise_maps: maps must be a floating-point tensor (B, ...), got {type(maps).__name__}")
    if maps.shape[0] == 0 or maps[0].numel() == 0:
        return maps.clone()
    bad = _bad_maps(maps)
    if bad:
        raise ValueError(f"normalise_maps: map(s) {bad[:8]} have NaN or infinite values; a saliency map must be finite")
    flat = maps.reshape(maps.shape[0], -1)
    scale = flat.abs().amax(dim=1, keepdim=True)
    flat = flat / scale.clamp_min(torch.finfo(flat.dtype).tiny)  # in [-1, 1] first: max - min cannot overflow
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    varies = ~constant_maps(maps).view(-1, 1)
    scaled = torch.where(varies, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, h, w) or (B, C, h, w) maps to ``size`` (bilinear, align_corners=False)."""
    squeeze = maps.dim() == 3
    x = maps.unsqueeze(1) if squeeze else maps
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False)
    return x.squeeze(1) if squeeze else x


def finish(maps: torch.Tensor, images: torch.Tensor, raw: bool) -> torch.Tensor:
    """The calling convention's output: raw maps as they are, else upsampled to the input and normalised.

    Half-precision maps are resized and normalised in float32 and returned in their dtype.

    Raises:
        ValueError: raw maps with NaN or infinite values (the model's scores or their gradients
            overflowed), in either case.
        TypeError: ``raw`` is not a bool.
    """
    raw = check_flag(raw, "raw")
    maps = maps.detach()
    if maps.dim() < 1 or maps.shape[0] != images.shape[0]:
        raise ValueError(f"finish: {tuple(maps.shape)} maps for {images.shape[0]} images; a method returns one map per image")
    bad = _bad_maps(maps)
    if bad:
        raise ValueError(
            f"the saliency maps of image(s) {bad[:8]} have NaN or infinite values: the model's scores or their gradients "
            "overflowed; are the images normalised for the model (values of order 1)?")
    if raw:
        return maps
    work = maps.float() if maps.dtype in (torch.float16, torch.bfloat16) else maps
    return normalise_maps(upsample(work, tuple(images.shape[-2:]))).to(maps.dtype)


def check_flag(value, what: str) -> bool:
    """``value`` as a bool: True, False (or numpy's); anything else, a truthy string included, is refused.

    Raises:
        TypeError: not a bool.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise TypeError(f"{what} must be True or False, got {type(value).__name__} {value!r}")


def check_count(value, what: str, low: int = 1) -> int:
    """``value`` as an int >= ``low``; bools, floats and strings are refused (``2.0`` is not a count).

    Raises:
        TypeError: not an integer.
        ValueError: below ``low``.
    """
    return _whole(value, what, low)


def check_real(value, what: str, *, low: float | None = None, high: float | None = None, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a finite float in the interval from ``low`` to ``high`` (open ends where asked).

    Raises:
        TypeError: not a real number (strings, bools, tensors of several values).
        ValueError: NaN, infinite, or outside the interval.
    """
    if isinstance(value, (bool, np.bool_, str, bytes, complex, np.complexfloating)) or (
            isinstance(value, torch.Tensor) and (value.dtype == torch.bool or value.is_complex())):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{what} must be a finite number, got {value!r} (beyond a float's range)") from None
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"{what} must be a real number, got {type(value).__name__} {value!r}") from None
    interval = f"{'(' if low_open else '['}{'-inf' if low is None else low}, {'inf' if high is None else high}{')' if high_open else ']'}"
    if not np.isfinite(number):
        raise ValueError(f"{what} must be a finite number in {interval}, got {number}")
    below = low is not None and (number <= low if low_open else number < low)
    above = high is not None and (number >= high if high_open else number > high)
    if below or above:
        raise ValueError(f"{what} must be in {interval}, got {number}")
    return number


def check_choice(value, what: str, accepted) -> str:
    """``value`` when it is one of the ``accepted`` names.

    Raises:
        TypeError: not a string.
        ValueError: an unknown name (the message lists the accepted ones).
    """
    accepted = tuple(accepted)
    if not isinstance(value, str):
        raise TypeError(f"{what} must be one of {', '.join(map(repr, accepted))}, got {type(value).__name__} {value!r}")
    if value not in accepted:
        raise ValueError(f"unknown {what} {value!r}; accepted: {', '.join(accepted)}")
    return value


#: The ``precision`` a forward-heavy method (RISE, Score-CAM, Group-CAM, insertion/deletion)
#: runs its masked forward passes in: float32 as given, or under :func:`torch.autocast` at
#: bfloat16 or float16 (the GPU's fast path; the scores leave the network as float32).
PRECISIONS = {"float32": None, "bfloat16": torch.bfloat16, "float16": torch.float16}


def check_precision(precision) -> str:
    """``precision`` when it is a name of :data:`PRECISIONS`.

    Raises:
        TypeError: not a string.
        ValueError: an unknown name.
    """
    return check_choice(precision, "precision", PRECISIONS)


def outside_autocast(function: Callable) -> Callable:
    """``function(model, images, ...)`` run with a caller's ``torch.autocast`` switched off, so that
    its ``precision`` argument alone decides the precision (float32 means float32; the
    :func:`forward_in` passes re-enable autocast where asked)."""

    @functools.wraps(function)
    def wrapper(model, images, *args, **kwargs):
        device = images.device.type if isinstance(images, torch.Tensor) else "cpu"
        if device not in ("cpu", "cuda", "xpu", "mps"):
            return function(model, images, *args, **kwargs)
        with torch.autocast(device_type=device, enabled=False):
            return function(model, images, *args, **kwargs)

    return wrapper


def forward_in(module: nn.Module, precision: str = "float32") -> Callable[[torch.Tensor], torch.Tensor]:
    """``module``'s forward pass at ``precision`` (:data:`PRECISIONS`), returning logits of at least float32.

    float32 runs the module as it is, with autocast switched off (a caller's ``torch.autocast``
    does not turn it into half precision).  The others run under ``torch.autocast`` on the input's
    device type (mixed precision: matrix products and convolutions in half precision, the
    reductions autocast keeps in float32), then cast the logits to float32 so that softmaxes
    and the small differences the methods take are not rounded in half precision.

    Raises:
        TypeError, ValueError: an unknown precision (:func:`check_precision`).
    """
    dtype = PRECISIONS[check_precision(precision)]

    def forward(inputs: torch.Tensor) -> torch.Tensor:
        if dtype is None:  # float32 means float32, also inside a caller's autocast
            with torch.autocast(device_type=inputs.device.type, enabled=False):
                logits = module(inputs)
        else:
            with torch.autocast(device_type=inputs.device.type, dtype=dtype):
                logits = module(inputs)
        return logits if logits.dtype in (torch.float32, torch.float64) else logits.float()

    return forward


def check_randomness(seed, generator, device: torch.device) -> torch.Generator:
    """The caller's ``generator``, or a fresh one on ``device`` seeded with ``seed``.

    Raises:
        TypeError: a seed that is not an integer, or a generator that is not a ``torch.Generator``.
        ValueError: a generator on another device than the images.
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an integer, got {type(seed).__name__} {seed!r}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise ValueError(f"seed must be an integer in [-2**63, 2**64), got {seed}")
    if generator is None:
        return torch.Generator(device=device).manual_seed(seed)
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__} {generator!r}")
    if generator.device.type != torch.device(device).type:
        raise ValueError(f"generator is on {generator.device} but the images are on {device}; create it with "
                         f"torch.Generator(device={str(device)!r})")
    return generator


def check_baseline(baseline, images: torch.Tensor) -> torch.Tensor:
    """A reference image (Integrated Gradients' x', occlusion's fill) broadcast to the images:
    a real number, or a tensor that broadcasts to (B, 3, H, W).

    Raises:
        TypeError: neither a real number nor a tensor.
        ValueError: NaN or infinite values, or a shape that does not broadcast to the images'.
    """
    if isinstance(baseline, torch.Tensor):
        if not (baseline.is_floating_point() or baseline.dtype in (torch.int32, torch.int64)):
            raise TypeError(f"baseline must be a real number or a real tensor, got dtype {baseline.dtype}")
        reference = baseline.to(dtype=images.dtype, device=images.device)
        try:
            reference = reference.expand_as(images)
        except RuntimeError:
            raise ValueError(f"baseline of shape {tuple(baseline.shape)} does not broadcast to the images' "
                             f"{tuple(images.shape)}; give a number, (3, 1, 1), (1, 3, H, W) or (B, 3, H, W)") from None
    else:
        reference = torch.full_like(images, check_real(baseline, "baseline"))
    if not torch.isfinite(reference).all():
        raise ValueError("baseline has NaN or infinite values; it must be a finite image in the model's input space")
    return reference


def check_normalisation(what: str, *, classifier=None, mean=None, std=None) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The per-channel normalisation of a model's input, ``x = (pixels - mean) / std``, for the checks
    that work on pixels in [0, 1]: a ``lib.models.Classifier``'s ``mean`` and ``std``, or both given.

    Args:
        what: the function asking, named in the errors.
        classifier: a ``lib.models.Classifier`` (anything with 3-element ``mean`` and ``std`` tensors).
        mean, std: 3-element per-channel statistics (tensors, lists or tuples) instead of a classifier.

    Returns:
        ``(mean, std)`` as float64 tensors (3,), or None when neither is given.

    Raises:
        ValueError: a classifier and statistics both, only one of mean and std, statistics that are
            not 3 finite numbers, or a std that is not positive.
        TypeError: a classifier without ``mean``/``std`` tensors, statistics that are not numbers.
    """
    if classifier is not None and (mean is not None or std is not None):
        raise ValueError(f"{what}: give the normalisation once, as classifier= or as mean= and std=, not both")
    if classifier is not None:
        if not all(isinstance(getattr(classifier, name, None), torch.Tensor) for name in ("mean", "std")):
            raise TypeError(f"{what}: classifier must be a lib.models.Classifier (with mean and std tensors), "
                            f"got {type(classifier).__name__}")
        mean, std = classifier.mean, classifier.std
    elif mean is None and std is None:
        return None
    elif mean is None or std is None:
        raise ValueError(f"{what}: the normalisation needs both mean= and std= (3 values each), got only "
                         f"{'mean' if std is None else 'std'}")
    stats = []
    for name, value in (("mean", mean), ("std", std)):
        if isinstance(value, (str, bytes, bool)):
            raise TypeError(f"{what}: {name} must be 3 per-channel numbers, got {type(value).__name__} {value!r}")
        try:
            tensor = torch.as_tensor(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"{what}: {name} must be 3 per-channel numbers, got {type(value).__name__} {value!r}") from None
        if tensor.numel() != 3 or not torch.isfinite(tensor).all():
            raise ValueError(f"{what}: {name} must be 3 finite per-channel numbers, got {tensor.tolist()}")
        stats.append(tensor.reshape(3))
    if (stats[1] <= 0).any():
        raise ValueError(f"{what}: std must be positive in every channel, got {stats[1].tolist()}")
    return stats[0], stats[1]


def check_feature_map(activations: torch.Tensor, layer, method: str) -> torch.Tensor:
    """A layer's output must be a feature map (B, C, h, w) for the methods that weight its channels
    (after :func:`as_feature_map`, which turns a transformer's tokens into one).

    Raises:
        ValueError: any other shape (a vector (B, C) of a linear layer, tokens (B, N, C) whose N is
            neither a square grid nor one plus a square grid).
    """
    if activations.dim() == 3:
        raise ValueError(f"{method} needs a layer whose output is a feature map (B, C, h, w); layer {layer!r} gives "
                         f"tokens {tuple(activations.shape)}, and {activations.shape[1]} tokens are neither a square grid "
                         "nor a class token plus a square grid. Choose a layer of the transformer's blocks")
    if activations.dim() != 4:
        raise ValueError(f"{method} needs a layer whose output is a feature map (B, C, h, w); layer {layer!r} gives "
                         f"shape {tuple(activations.shape)}. Choose a convolutional layer or block")
    return activations


# --------------------------------------------------------------------------------------------
# Transformers: tokens and channels-last outputs as feature maps
# --------------------------------------------------------------------------------------------

#: Layouts of a layer's output that :func:`as_feature_map` turns into (B, C, h, w).
CHANNELS_FIRST, CHANNELS_LAST, TOKENS = "channels_first", "channels_last", "tokens"
#: Layers of torchvision's Swin Transformer that are channels-first: the patch embedding's
#: convolution and everything after the final permutation; every other layer gives (B, h, w, C).
_SWIN_CHANNELS_FIRST = ("features.0.0", "permute", "avgpool", "flatten", "head")


def feature_layout(model, layer, output: torch.Tensor) -> str:
    """How ``layer``'s ``output`` lays out a feature map: :data:`TOKENS` for (B, N, C),
    :data:`CHANNELS_LAST` for (B, h, w, C) inside torchvision's Swin Transformer (its blocks and
    final norm), :data:`CHANNELS_FIRST` otherwise."""
    if output.dim() == 3:
        return TOKENS
    module, _ = unwrap(model)
    name, _ = resolve_layer(model, layer)
    swin = type(module).__name__ == "SwinTransformer" and type(module).__module__.startswith("torchvision")
    if output.dim() == 4 and swin and not any(name == n or name.startswith(n + ".") for n in _SWIN_CHANNELS_FIRST):
        return CHANNELS_LAST
    return CHANNELS_FIRST


def _token_grid(tokens: int) -> tuple[int, int] | None:
    """(class tokens, grid side) for ``tokens`` tokens: a square grid, or one class token before one; else None."""
    for leading in (0, 1):
        side = int(round(max(tokens - leading, 0) ** 0.5))
        if side > 0 and side * side == tokens - leading:
            return leading, side
    return None


def as_feature_map(output: torch.Tensor, layout: str) -> torch.Tensor:
    r"""A layer's output as a feature map (B, C, h, w), for the CAM and NormGrad methods.

    - :data:`TOKENS` (B, N, C), a vision transformer's: with N = h² the tokens are the grid in
      row-major order (torchvision's ViT flattens its patch grid so); with N = 1 + h² the first,
      the class token, is dropped, as pytorch-grad-cam's ``reshape_transform`` for ViT does.
      Other N are left as they are, for :func:`check_feature_map` to refuse.
    - :data:`CHANNELS_LAST` (B, h, w, C), Swin's: permuted to (B, C, h, w).
    - :data:`CHANNELS_FIRST`: unchanged.

    A method's gradient goes through the same reshape, so a CAM's channel weights average the
    gradient over the patch tokens only.
    """
    if layout == TOKENS and output.dim() == 3:
        grid = _token_grid(output.shape[1])
        if grid is None:
            return output
        leading, side = grid
        return output[:, leading:].transpose(1, 2).reshape(output.shape[0], output.shape[2], side, side)
    if layout == CHANNELS_LAST and output.dim() == 4:
        return output.permute(0, 3, 1, 2)
    return output


def as_layer_output(feature_map: torch.Tensor, layout: str, like: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`as_feature_map`: a (B, C, h, w) map back in the layout of the layer's
    output ``like`` (tokens take ``like``'s class token back), to replace that output in a forward pass."""
    if layout == TOKENS and like.dim() == 3:
        tokens = feature_map.flatten(2).transpose(1, 2)
        leading = like.shape[1] - tokens.shape[1]
        if leading:
            tokens = torch.cat([like[:, :leading].expand(tokens.shape[0], -1, -1), tokens], dim=1)
        return tokens
    if layout == CHANNELS_LAST and like.dim() == 4:
        return feature_map.permute(0, 2, 3, 1)
    return feature_map


#: ``batch_size="auto"``: a chunk that suits the device (see :func:`auto_batch_size`).
AUTO = "auto"
#: Input elements per chunk on a CPU: 4 images of 3 x 224 x 224.  Measured on EfficientNet-Lite0
#: with 2 cores, forward time per image is lowest at 2-4 images per pass (10 ms) and rises
#: with the chunk (15 ms at 1, 19 ms at 16, 35 ms at 64): big chunks fall out of the caches.
CPU_CHUNK_ELEMENTS = 4 * 3 * 224 * 224
GPU_CHUNK = 64


def auto_batch_size(batch_size: int | str | None, images: torch.Tensor) -> int | None:
    """``batch_size`` as given, or for ``"auto"``: 64 images per pass on a GPU and on a CPU
    as many as fit :data:`CPU_CHUNK_ELEMENTS` (4 at 224 x 224, at least 1, at most 64)."""
    if batch_size != AUTO:
        return batch_size
    if images.device.type != "cpu":
        return GPU_CHUNK
    return max(1, min(GPU_CHUNK, CPU_CHUNK_ELEMENTS // max(1, images[0].numel())))


def _whole(value, what: str, low: int) -> int:
    """``value`` as an int >= ``low``; bools, floats and strings are refused (``2.0`` is not a count)."""
    try:
        if isinstance(value, (bool, np.bool_)) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be an integer >= {low}, got {type(value).__name__} {value!r}") from None
    if number < low:
        raise ValueError(f"{what} must be an integer >= {low}, got {number}")
    return number


def check_batch_size(batch_size) -> int | None:
    """``batch_size`` as an int >= 1, or None (all at once).

    Raises:
        TypeError: not an integer (a float, a bool, a string: :data:`AUTO` is resolved by
            :func:`auto_batch_size` first).
        ValueError: an integer below 1.
    """
    if batch_size is None:
        return None
    try:
        return _whole(batch_size, "batch_size", 1)
    except TypeError:
        raise TypeError(f"batch_size must be a positive integer, {AUTO!r} or None, got {type(batch_size).__name__} "
                        f"{batch_size!r}") from None
    except ValueError:
        raise ValueError(f"batch_size must be a positive integer, {AUTO!r} or None, got {batch_size!r}") from None


def chunks(total: int, size: int | None):
    """Slices covering ``range(total)`` in pieces of at most ``size`` (all at once for None).

    Raises:
        TypeError, ValueError: ``total`` is not a whole number >= 0, or ``size`` not a
            positive integer or None (:func:`check_batch_size`).
    """
    total, size = _whole(total, "the number of items to split", 0), check_batch_size(size)
    step = max(total, 1) if size is None else size
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


def slice_targets(targets, batch: int, piece: slice):
    """The targets of the images in ``piece``: None and ints pass through, per-image targets are sliced."""
    if targets is None or (isinstance(targets, int) and not isinstance(targets, bool)):
        return targets
    if isinstance(targets, (str, bytes, bool)):
        raise TypeError(f"targets must be integer class indices (an int, or one per image), got {targets!r}")
    try:
        targets = torch.as_tensor(targets)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"targets must be integer class indices (an int, or one per image), got {targets!r} ({error})") from None
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices (an int, or one per image), got dtype {targets.dtype}")
    if targets.dim() == 0:
        return int(targets)
    if targets.numel() != batch:
        raise ValueError(f"targets must have one class index per image: got {targets.numel()} for a batch of {batch}")
    return targets.reshape(-1)[piece]


def target_scores(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The score of each image's target class, (B,)."""
    return logits.gather(1, targets.view(-1, 1)).squeeze(1)


def predict(model, images: torch.Tensor, targets=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits without gradients and validated targets (None -> the predicted class)."""
    check_images(images)
    with prepared(model) as module, torch.no_grad():
        logits = check_logits(module(images), images.shape[0])
    return logits, check_targets(targets, logits, getattr(model, "categories", None))


def check_logits(logits: torch.Tensor, batch: int | None = None) -> torch.Tensor:
    """The model's output must be (B, classes) floating-point logits without NaN or +inf (-inf marks
    an unmapped category), one row per image when ``batch`` is given.

    Raises:
        ValueError: another shape or batch, or logits that are not finite.
        TypeError: logits that are not floating-point.
    """
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or (batch is not None and logits.shape[0] != batch):
        got = f"shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return (B, classes) logits, one row per image"
                         f"{f' ({batch})' if batch is not None else ''}, got {got}")
    if not logits.is_floating_point():
        raise TypeError(f"the model must return floating-point logits, got dtype {logits.dtype}")
    values = logits.detach()
    bad = torch.nonzero((torch.isnan(values) | torch.isposinf(values)).any(dim=1)).flatten().tolist()
    if bad:
        raise ValueError(f"the model's logits are not finite (NaN or +inf) for image(s) {bad[:8]}; are the images "
                         "normalised for the model (values of order 1)?")
    return logits


def resolve_targets(model, images: torch.Tensor, targets=None) -> torch.Tensor:
    """Validated targets (None -> the predicted class), with a forward pass only when needed.

    A ``lib.models.Classifier`` knows its class count (``categories``), so given targets are
    checked against it without running the network (its ``unmapped`` categories are refused
    as their ``-inf`` logits would be); a bare module, or ``targets=None``, costs one forward
    pass (:func:`predict`).
    """
    categories = getattr(model, "categories", None)
    if targets is None or not categories:
        return predict(model, images, targets)[1]
    check_images(images)
    stand_in = images.new_zeros((images.shape[0], len(categories)))
    stand_in[:, list(getattr(model, "unmapped", ()))] = float("-inf")
    return check_targets(targets, stand_in, categories)


def aggregate_channels(attributions: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce input attributions (B, 3, H, W) to maps (B, H, W).

    ``max_abs``: max over channels of ``|a|`` (Simonyan et al. 2014, Sec. 3.1);
    ``sum_abs``: sum of ``|a|`` over channels; ``sum``: signed sum (keeps IG's completeness);
    ``l2``: Euclidean norm over channels.
    """
    if how == "max_abs":
        return attributions.abs().amax(dim=1)
    if how == "sum_abs":
        return attributions.abs().sum(dim=1)
    if how == "sum":
        return attributions.sum(dim=1)
    if how == "l2":
        return attributions.norm(dim=1)
    raise ValueError(f"unknown channel aggregation {how!r}; accepted: max_abs, sum_abs, sum, l2")


@dataclass
class LayerPass:
    """One forward and one backward pass recorded at a layer.

    Attributes:
        activations: (B, K, h, w) output of the layer (the image at :data:`INPUT`; a transformer's
            tokens and Swin's channels-last outputs as feature maps, :func:`as_feature_map`).
        gradients: (B, K, h, w) gradient of the target score with respect to that output.
        logits: (B, classes) of the forward pass.
        targets: (B,) the classes the gradients were taken for.
        inputs: (B, K_in, H_in, W_in) the layer's input with ``inputs=True`` (no gradient
            of its own: a real convolution's weight gradient pairs it with the output's), else None.
    """

    activations: torch.Tensor
    gradients: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor
    inputs: torch.Tensor | None = None


@contextmanager
def _layer_inputs(model, layers: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Record a copy of the first input of each layer at every forward; hooks removed on exit."""
    seen: dict[str, torch.Tensor] = {}
    handles = []

    def make_hook(layer: str):
        def hook(_module, inputs):
            seen[layer] = inputs[0].detach().clone()

        return hook

    try:
        for layer in layers:
            handles.append(resolve_layer(model, layer)[1].register_forward_pre_hook(make_hook(layer)))
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def _concatenate(parts: list):
    """Join per-chunk results along the batch: tensors, dicts, tuples and :class:`LayerPass` of them."""
    first = parts[0]
    if len(parts) == 1 or first is None:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(parts)
    if isinstance(first, LayerPass):
        return LayerPass(*(_concatenate([getattr(p, f.name) for p in parts]) for f in fields(LayerPass)))
    if isinstance(first, dict):
        return {key: _concatenate([p[key] for p in parts]) for key in first}
    if isinstance(first, tuple):
        return tuple(_concatenate(list(column)) for column in zip(*parts))
    raise TypeError(f"cannot join per-chunk results of type {type(first).__name__}; return tensors, dicts or tuples of them")


def _check_layers(model, layers) -> list[str]:
    """The layer names, once each, after checking that each resolves in ``model``."""
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    elif not isinstance(layers, (list, tuple)) or any(not isinstance(layer, (str, nn.Module)) for layer in layers):
        raise TypeError(f"layers must be a layer (a name, alias or submodule) or a list of layers, got {layers!r}")
    if not layers:
        raise ValueError("layer_passes needs at least one layer")
    names = []
    for layer in layers:
        try:
            names.append(layer_name(model, layer))
        except ValueError:
            if layer == INPUT and not isinstance(model, _Tapped):
                raise ValueError(f"layer {INPUT!r} (the network input) is a layer of with_input(model) only; "
                                 "pass with_input(model)") from None
            raise
    return list(dict.fromkeys(names))


def _recorded(record, layers: Sequence[str]) -> list[torch.Tensor]:
    missing = [layer for layer in layers if record.names[layer] not in record.activations]
    if missing:
        raise ValueError(f"layer(s) {missing} did not run in the forward pass, so they have no activations; "
                         "choose layers that the model's forward uses")
    return [record[layer] for layer in layers]


def _checked_scores(scores, logits: torch.Tensor, batch: int) -> torch.Tensor:
    if not isinstance(scores, torch.Tensor):
        raise TypeError(f"score must return a tensor of {batch} scores (B,), got {type(scores).__name__}")
    if tuple(scores.shape) != (batch,):
        raise ValueError(f"score must return one score per image, shape ({batch},), got {tuple(scores.shape)}")
    if not scores.is_floating_point():
        raise TypeError(f"score must return floating-point scores, got dtype {scores.dtype}")
    if not torch.isfinite(scores.detach()).all():
        raise ValueError("score returned NaN or infinite scores; the scores to differentiate must be finite")
    if not logits.requires_grad:
        raise ValueError("no requested layer lies before the logits (the logits have no gradient); choose layers "
                         "on the path from the input to the logits")
    if not scores.requires_grad:
        raise ValueError("score returned values that do not depend on the logits (no gradient); compute the scores "
                         "from the logits without detaching them")
    return scores


def _check_per_image(part, batch: int, where: str = "reduce's result") -> None:
    """``reduce`` results must be (B_chunk, ...) tensors, or dicts or tuples of them, to be joined along the batch."""
    if isinstance(part, torch.Tensor):
        if part.dim() == 0 or part.shape[0] != batch:
            raise ValueError(f"{where} must be per image, ({batch}, ...) for this chunk of {batch}, got shape {tuple(part.shape)}")
    elif isinstance(part, LayerPass):
        for f in fields(LayerPass):
            if getattr(part, f.name) is not None:
                _check_per_image(getattr(part, f.name), batch, f"{where}.{f.name}")
    elif isinstance(part, dict):
        for key, value in part.items():
            _check_per_image(value, batch, f"{where}[{key!r}]")
    elif isinstance(part, tuple):
        for i, value in enumerate(part):
            _check_per_image(value, batch, f"{where}[{i}]")
    else:
        raise TypeError(f"{where} must be a per-image tensor ({batch}, ...), or a dict or tuple of them, "
                        f"got {type(part).__name__}")


def layer_passes(
    model,
    images: torch.Tensor,
    targets=None,
    layers: Sequence[str] | str = ("last",),
    *,
    inputs: bool = False,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_scores,
    batch_size: int | None = None,
    reduce: Callable[[dict[str, LayerPass]], object] | None = None,
):
    r"""Activations at several layers and the gradient of the target score with respect to each.

    For each chunk of ``batch_size`` images: one forward pass recording every layer's output
    (:func:`lib.capture.capture`), then one ``torch.autograd.grad`` of the summed scores
    :math:`\sum_b s(f(x_b))_{t_b}` with respect to all recorded outputs at once.  Images are
    independent in eval mode, so each image's gradient is that of its own score; the backward
    pass stops at the shallowest layer and computes no parameter gradient.  The capture
    record is emptied as soon as its gradients are taken, and every hook is removed, whatever
    happens; the model comes back exactly as given (:func:`lib.capture.prepared`).

    The network input is a layer of ``with_input(model)`` named :data:`INPUT`, so the
    input-gradient methods are ``layer_passes(with_input(model), images, targets, [INPUT])``.

    Args:
        model: a ``lib.models.Classifier``, an ``nn.Module`` or :func:`with_input` of one.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for each chunk's predicted class.
        layers: layer aliases or module names (one name: a list of one).
        inputs: also record each layer's input (:attr:`LayerPass.inputs`).
        score: ``(logits, targets) -> (B,)`` scores to differentiate (default: the target's
            logit, as in Grad-CAM).
        batch_size: images per forward/backward pass (None: all at once; ``"auto"``:
            :func:`auto_batch_size`).
        reduce: applied, without gradients, to each chunk's ``{layer: LayerPass}`` as soon as
            its pass is done (so only one chunk's activations are alive at a time); it returns
            per-image results (B_chunk, ...) as a tensor, or a dict or tuple of them.

    Returns:
        ``{layer: LayerPass}`` over all images, or the chunks' ``reduce`` results joined
        along the batch.

    Raises:
        ValueError: bad images or targets, an unknown layer, no layer, a layer that does not
            run or does not reach the logits, scores that are not (B,) or do not depend on the
            logits, ``reduce`` results that are not per-image.
        TypeError: layers that are not names, a bad ``batch_size``, a ``score`` or ``reduce``
            that is not callable or does not return tensors.
    """
    check_images(images)
    layers = _check_layers(model, layers)
    if not callable(score):
        raise TypeError(f"score must be a function (logits, targets) -> (B,) scores, got {type(score).__name__}")
    if reduce is not None and not callable(reduce):
        raise TypeError(f"reduce must be a function {{layer: LayerPass}} -> per-image results, or None, got {type(reduce).__name__}")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    categories = getattr(model, "categories", None)
    parts = []
    with prepared(model) as network:
        for piece in chunks(images.shape[0], batch_size):
            with ExitStack() as hooks, torch.enable_grad():
                record = hooks.enter_context(capture(model, layers))
                seen = hooks.enter_context(_layer_inputs(model, layers)) if inputs else {}
                logits = check_logits(network(images[piece]), piece.stop - piece.start)
                chosen = check_targets(slice_targets(targets, images.shape[0], piece), logits, categories)
                activations = _recorded(record, layers)
                scores = _checked_scores(score(logits, chosen), logits, piece.stop - piece.start)
                gradients = torch.autograd.grad(scores.sum(), activations, allow_unused=True)
                unused = [layer for layer, g in zip(layers, gradients) if g is None]
                if unused:
                    raise ValueError(f"the score does not depend on layer(s) {unused}: their output does not reach the "
                                     "logits; choose layers on the path from the input to the logits")
                record.activations.clear()
                record.gradients.clear()
            logits = logits.detach()
            layouts = [feature_layout(model, layer, a) for layer, a in zip(layers, activations)]
            passes = {
                layer: LayerPass(as_feature_map(a.detach(), layout), as_feature_map(g.detach(), layout), logits, chosen,
                                 seen.get(layer))
                for layer, layout, a, g in zip(layers, layouts, activations, gradients)
            }
            del activations, gradients, record, seen, scores
            if reduce is None:
                parts.append(passes)
            else:
                with torch.no_grad():
                    part = reduce(passes)
                _check_per_image(part, piece.stop - piece.start)
                parts.append(part)
                del passes, part
    return _concatenate(parts)


def layer_pass(
    model,
    images: torch.Tensor,
    targets=None,
    layer: str = "last",
    *,
    inputs: bool = False,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_scores,
    batch_size: int | None = None,
) -> LayerPass:
    """:func:`layer_passes` at one layer: its activations and the gradient of the target score there."""
    if not isinstance(layer, (str, nn.Module)):
        raise TypeError(f"layer must be one layer (a name, an alias such as 'last', or a submodule of the model), "
                        f"got {type(layer).__name__} {layer!r}; for several layers use layer_passes")
    layer = layer_name(model, layer)
    return layer_passes(model, images, targets, [layer], inputs=inputs, score=score, batch_size=batch_size)[layer]


# --------------------------------------------------------------------------------------------
# The network input as a layer
# --------------------------------------------------------------------------------------------

INPUT = "input"
r"""The network input as a layer of :func:`with_input`: its "activation" is the image :math:`x`
and its gradient :math:`\partial S_t / \partial x`, so a reduction there is the input-gradient
method (``layer_gradient`` at the input is the vanilla gradient of Simonyan et al. 2014,
``linear_approx`` gradient :math:`\times` input)."""


class _InputTap(nn.Module):
    """The network behind an identity named ``input``: capturing ``input`` records the image and its gradient."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.input = nn.Identity()
        self.network = network
        self.training = network.training  # the wrapper is in the network's mode, not nn.Module's default
        self.input.training = network.training

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network(self.input(x))


@dataclass(eq=False)
class _Tapped:
    """A model seen through :class:`_InputTap`, with its layer names prefixed (what :func:`lib.capture.unwrap` reads)."""

    model: nn.Module
    layers: dict[str, str]


def with_input(model) -> _Tapped:
    """``model`` with its input as a capturable layer named :data:`INPUT`.

    The network is wrapped, not copied or changed: its modules keep their parameters and are
    reached under ``network.<name>``; its aliases (``"last"``, ``"stage3"``) and module names
    resolve as before.  A hook on :data:`INPUT` sees the image before the first layer, so one
    forward and one backward pass give the input gradient together with every other layer's
    (:func:`layer_passes`).
    """
    module, aliases = unwrap(model)
    layers = {name: f"network.{name}" for name, _ in module.named_modules() if name}
    layers.update({alias: f"network.{name}" for alias, name in aliases.items()})
    layers[INPUT] = "input"
    return _Tapped(_InputTap(module), layers)
