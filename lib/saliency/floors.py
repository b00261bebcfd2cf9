"""Floors: the network passes a saliency method cannot avoid, timed alone by ``lib.benchmark``.

A floor is a function ``floor(model, images, targets, settings) -> run``.  ``settings`` are the
method's keyword arguments (its own defaults updated by the benchmark's work, see
:attr:`lib.saliency.registry.Method.defaults`); the floor prepares every input its passes see
(up-sampled images, copies of the images) and returns ``run()``, which makes only those passes, in
the method's own chunks of ``settings["batch_size"]``.  ``ours / floor`` in the benchmark's table is
then the overhead of everything else.  A method names its floor when it is registered
(:func:`lib.saliency.registry.register`); the builders below cover the methods of this library.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from ..capture import prepared
from .passes import _whole, auto_batch_size, chunks, layer_pass, resolve_targets
from .multiscale import scale_sizes
from .perturbation import check_areas

__all__ = ["Floor", "forwards", "input_passes", "forward_passes", "one_layer_pass", "one_forward", "input_and_layer_passes", "two_layer_passes", "occlusion_passes",
           "scorecam_passes", "cameras_passes",
           "groupcam_passes", "xrai_passes", "extremal_passes"]

#: ``(model, images, targets, settings) -> run``: see the module docstring.
Floor = Callable[[object, torch.Tensor, torch.Tensor, Mapping[str, object]], Callable[[], object]]


def _chunk(settings: Mapping[str, object], images: torch.Tensor) -> int | None:
    return auto_batch_size(settings.get("batch_size"), images)


def _setting(settings: Mapping[str, object], key: str):
    if key not in settings:
        raise KeyError(f"this floor needs the method's setting {key!r}; got settings {sorted(settings)}")
    return settings[key]


def _count(settings: Mapping[str, object], key: str) -> int:
    """``settings[key]``, a number of passes per image: an integer >= 1."""
    return _whole(_setting(settings, key), f"settings[{key!r}] (passes per image)", 1)


def forwards(module: torch.nn.Module, images: torch.Tensor, count: int, batch_size: int | None) -> None:
    """``count`` forward passes without gradient over copies of ``images`` (cycled), in chunks of ``batch_size``.

    Raises:
        TypeError, ValueError: ``count`` is not a whole number >= 0, or a bad ``batch_size``.
    """
    count = _whole(count, "count (forward passes)", 0)
    with torch.no_grad():
        for piece in chunks(count, batch_size):
            module(images[torch.arange(piece.start, piece.stop, device=images.device) % images.shape[0]])


def input_passes(count: str | None = None) -> Floor:
    """A floor of ``settings[count]`` forward and backward passes to the input per image (one without ``count``).

    The methods that back-propagate the target's score to the pixels: the gradient and guided
    backprop (one pass), SmoothGrad (``n_samples``), Integrated Gradients (``steps``).
    """

    def floor(model, images, targets, settings):
        n, batch_size = (1 if count is None else _count(settings, count)), _chunk(settings, images)
        targets = resolve_targets(model, images, targets)

        def run():
            with prepared(model) as module:
                for piece in chunks(n * images.shape[0], batch_size):
                    owner = torch.arange(piece.start, piece.stop, device=images.device) % images.shape[0]
                    x = images[owner].requires_grad_(True)
                    torch.autograd.grad(module(x).gather(1, targets[owner].view(-1, 1)).sum(), x)

        return run

    return floor


def forward_passes(count: str, plus: int = 0) -> Floor:
    """A floor of ``settings[count] + plus`` forward passes per image without gradient (RISE: ``n_masks``)."""

    def floor(model, images, targets, settings):
        return _counted_forwards(model, images, _count(settings, count) + plus, _chunk(settings, images))

    return floor


def _counted_forwards(model, images, per_image: int, batch_size: int | None) -> Callable[[], object]:
    def run():
        with prepared(model) as module:
            forwards(module, images, per_image * images.shape[0], batch_size)

    return run


def one_layer_pass(model, images, targets, settings) -> Callable[[], object]:
    """One forward pass to ``settings["layer"]`` and the backward from the target's score to it
    (Grad-CAM, Grad-CAM++, Layer-CAM and the extract-aggregate rows of Rebuffi et al.)."""
    layer, batch_size = _setting(settings, "layer"), _chunk(settings, images)
    return lambda: layer_pass(model, images, targets, layer, batch_size=batch_size)


def input_and_layer_passes(model, images, targets, settings) -> Callable[[], object]:
    """One pass to the input and back plus one to ``settings["layer"]`` (Guided Grad-CAM: guided
    backprop and Grad-CAM)."""
    to_input, to_layer = input_passes()(model, images, targets, settings), one_layer_pass(model, images, targets, settings)
    return lambda: (to_input(), to_layer())


def two_layer_passes(model, images, targets, settings) -> Callable[[], object]:
    """Two passes to ``settings["layer"]`` and back (contrastive Excitation Backprop: the dual's, then the target's)."""
    once = one_layer_pass(model, images, targets, settings)
    return lambda: (once(), once())


def occlusion_passes(model, images, targets, settings) -> Callable[[], object]:
    """Occlusion: the clean image and one occluded copy per position of the square."""
    height, width = images.shape[-2:]
    window, stride = _count(settings, "window"), _count(settings, "stride")
    positions = len(range(0, height - window + 1, stride)) * len(range(0, width - window + 1, stride))
    return _counted_forwards(model, images, positions + 1, _chunk(settings, images))


def one_forward(model, images, targets, settings) -> Callable[[], object]:
    """One forward pass per image without gradient (Eigen-CAM)."""
    return _counted_forwards(model, images, 1, _chunk(settings, images))


def scorecam_passes(model, images, targets, settings) -> Callable[[], object]:
    """The pass that gives the activations, then one forward per channel of the layer: Score-CAM
    (one masked image per channel) and Ablation-CAM (one ablated channel per pass)."""
    targets = resolve_targets(model, images, targets)
    channels = layer_pass(model, images[:1], targets[:1], _setting(settings, "layer")).activations.shape[1]
    return _counted_forwards(model, images, channels + 1, _chunk(settings, images))


def cameras_passes(model, images, targets, settings) -> Callable[[], object]:
    """CAMERAS: one forward and backward pass to the layer per scale, on images up-sampled beforehand."""
    sizes = scale_sizes(tuple(images.shape[-2:]), scales=settings.get("scales"), steps=_setting(settings, "steps"),
                        max_scale=_setting(settings, "max_scale"))
    scaled = [F.interpolate(images, size=s, mode="bicubic") for s in sizes]
    layer, batch_size = _setting(settings, "layer"), _chunk(settings, images)
    return lambda: [layer_pass(model, x, targets, layer, batch_size=batch_size) for x in scaled]


def groupcam_passes(model, images, targets, settings) -> Callable[[], object]:
    """Group-CAM: one pass to the layer and back, the blurred image and one masked image per group."""
    batch_size = _chunk(settings, images)
    masked = _counted_forwards(model, images, _count(settings, "groups") + 1, batch_size)
    layer = _setting(settings, "layer")
    return lambda: (layer_pass(model, images, targets, layer, batch_size=batch_size), masked())


def xrai_passes(model, images, targets, settings) -> Callable[[], object]:
    """XRAI: Integrated Gradients' ``steps`` passes to the input and back per image, for each of its ``baselines``
    (the segmentation and the region selection make no pass)."""
    count = _count(settings, "steps") * len(_setting(settings, "baselines"))
    return input_passes("passes")(model, images, targets, {**settings, "passes": count})


def extremal_passes(model, images, targets, settings) -> Callable[[], object]:
    """Extremal perturbation: ``max_iter - 1`` forward and backward passes to the input per mask (one
    mask per image and area; the dual variant sends two images per mask), ``batch_size`` masks at a
    time.  The last iteration's mask is made from the parameters alone, with no pass."""
    per_image = len(check_areas(_setting(settings, "areas")))
    steps = _count(settings, "max_iter") - 1
    copies = 2 if _setting(settings, "variant") == "dual" else 1
    batch_size = _chunk(settings, images)
    targets = resolve_targets(model, images, targets)
    owners = torch.arange(images.shape[0] * per_image, device=images.device) // per_image

    def run():
        with prepared(model) as module:
            for piece in chunks(owners.numel(), batch_size):
                chosen = targets[owners[piece]].repeat(copies).view(-1, 1)
                for _ in range(steps):
                    x = images[owners[piece]].repeat(copies, 1, 1, 1).requires_grad_(True)
                    torch.autograd.grad(module(x).gather(1, chosen).sum(), x)

    return run
