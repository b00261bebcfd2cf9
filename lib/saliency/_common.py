"""Machinery shared by every saliency method: input checks, batching, finishing a map."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..capture import capture, check_images, check_targets, prepared, resolve_layer

__all__ = [
    "normalize_maps",
    "finish",
    "upsample",
    "chunks",
    "auto_batch_size",
    "AUTO",
    "target_scores",
    "slice_targets",
    "predict",
    "resolve_targets",
    "LayerPass",
    "layer_pass",
    "aggregate_channels",
]


def normalize_maps(maps: torch.Tensor) -> torch.Tensor:
    """Min-max normalise each map of a batch (B, ...) to [0, 1]; a constant map becomes zeros."""
    flat = maps.reshape(maps.shape[0], -1)
    low = flat.min(dim=1, keepdim=True).values
    span = flat.max(dim=1, keepdim=True).values - low
    scaled = torch.where(span > 0, (flat - low) / span.clamp_min(torch.finfo(flat.dtype).tiny), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def upsample(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Resize (B, h, w) or (B, C, h, w) maps to ``size`` (bilinear, align_corners=False)."""
    squeeze = maps.dim() == 3
    x = maps.unsqueeze(1) if squeeze else maps
    if tuple(x.shape[-2:]) != tuple(size):
        x = F.interpolate(x, size=size, mode=mode, align_corners=False)
    return x.squeeze(1) if squeeze else x


def finish(maps: torch.Tensor, images: torch.Tensor, raw: bool) -> torch.Tensor:
    """The calling convention's output: raw maps as they are, else upsampled to the input and normalised."""
    maps = maps.detach()
    if raw:
        return maps
    return normalize_maps(upsample(maps, tuple(images.shape[-2:])))


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


def chunks(total: int, size: int | None):
    """Slices covering ``range(total)`` in pieces of at most ``size`` (all at once for None)."""
    if size is not None and size < 1:
        raise ValueError(f"batch_size must be a positive integer or None, got {size}")
    step = total if size is None else size
    for start in range(0, total, step):
        yield slice(start, min(start + step, total))


def slice_targets(targets, batch: int, piece: slice):
    """The targets of the images in ``piece``: None and ints pass through, per-image targets are sliced."""
    if targets is None or isinstance(targets, int):
        return targets
    targets = torch.as_tensor(targets)
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
        logits = module(images)
    return logits, check_targets(targets, logits, getattr(model, "categories", None))


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

    ``max_abs``: max over channels of |a| (Simonyan et al. 2014, Sec. 3.1);
    ``sum_abs``: sum of |a| over channels; ``sum``: signed sum (keeps IG's completeness);
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
        activations: (B, K, h, w) output of the layer.
        gradients: (B, K, h, w) gradient of the target score with respect to it.
        logits: (B, classes) of the forward pass.
        targets: (B,) the classes the gradients were taken for.
    """

    activations: torch.Tensor
    gradients: torch.Tensor
    logits: torch.Tensor
    targets: torch.Tensor


def layer_pass(
    model,
    images: torch.Tensor,
    targets=None,
    layer: str = "last",
    *,
    score: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = target_scores,
    batch_size: int | None = None,
) -> LayerPass:
    """Activations at ``layer`` and the gradient of the target score with respect to them.

    The gradient is ``torch.autograd.grad`` of the summed scores (images are independent
    in eval mode) with respect to the captured activation: the backward pass runs only
    through the layers after ``layer`` and computes no parameter gradient.

    Args:
        score: ``(logits, targets) -> (B,)`` scores to differentiate (default: the
            target's logit, as in Grad-CAM).
        batch_size: images per forward/backward pass (None: all at once).
    """
    check_images(images)
    resolve_layer(model, layer)
    parts: list[LayerPass] = []
    with prepared(model) as module:
        for piece in chunks(images.shape[0], batch_size):
            with capture(model, [layer]) as record, torch.enable_grad():
                logits = module(images[piece])
                chosen = check_targets(slice_targets(targets, images.shape[0], piece), logits, getattr(model, "categories", None))
                activation = record[layer]
                (gradient,) = torch.autograd.grad(score(logits, chosen).sum(), activation)
            parts.append(LayerPass(activation.detach(), gradient.detach(), logits.detach(), chosen))
    if len(parts) == 1:
        return parts[0]
    return LayerPass(*(torch.cat([getattr(p, f) for p in parts]) for f in ("activations", "gradients", "logits", "targets")))
