r"""Insertion and deletion: the causal metrics of RISE.

Petsiuk, Das & Saenko, "RISE: Randomized Input Sampling for Explanation of Black-box
Models", BMVC 2018, Sec. 4.1.  Pixels are ranked by saliency, most salient first.
*Deletion* starts from the image and replaces ``step`` pixels per step, in that order, by a
substrate until none is left; *insertion* starts from the substrate (a blurred image) and
puts the image's pixels back in the same order.  The curve is the target's softmax
probability after each step, :math:`n = \lceil HW / \text{step} \rceil` steps plus the
start; its area is the trapezoid rule on a uniform grid over [0, 1] (RISE's ``auc``),
:math:`\mathrm{AUC} = \frac{1}{n}\big(\sum_{i=0}^{n} p_i - \frac{p_0 + p_n}{2}\big)`.
Group-CAM (Zhang et al. 2021, §4.3) adds the *over-all* score
:math:`\mathrm{AUC(insertion)} - \mathrm{AUC(deletion)}`.

Protocols (all exposed):

* step: RISE's protocol replaces 224 pixels per step at 224 x 224 (``RISE_STEP``, 225
  points a curve); Group-CAM's text says 1 % of the pixels (502); its evaluation script
  ``ins_del_gc.py`` uses 224 x 8 = 1,792 (29 points; 448 in an earlier commit)
  (``GROUPCAM_CODE_STEPS``).  The section notebook states which it uses.
* substrate: the blurred image for both games (Group-CAM's text, "replace ... with a
  highly blurred version"; default) or ``"zeros"``, the deletion substrate of both the RISE
  and the Group-CAM scripts (``torch.zeros_like`` of the *normalised* image: the dataset's
  mean colour).  The blur defaults to Group-CAM's Gaussian, kernel 51, σ 50; RISE's
  script blurs with kernel 11, σ 5.
* target: the given class, or the model's top-1 class on the unperturbed image (RISE).

Ties in a map are broken by pixel index (a stable sort), the same in the batched and the
reference implementation.

Inputs: only the order of a map's values counts, so maps of any sign and scale are accepted
(a signed gradient map ranks its most positive pixels first); a NaN or infinite value has no
place in that order and is refused (:func:`insertion_deletion` names the image).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..capture import check_images, check_targets, prepared
from ..saliency.passes import AUTO, auto_batch_size, check_batch_size, check_precision, chunks, forward_in, outside_autocast, slice_targets
from ..saliency.group_masking import gaussian_blur
from ._checks import check_finite, check_int, check_real, check_tensor

__all__ = [
    "RISE_STEP",
    "GROUPCAM_CODE_STEPS",
    "SUBSTRATES",
    "auc",
    "salient_order",
    "substrate",
    "causal_curves",
    "causal_curves_reference",
    "InsertionDeletion",
    "insertion_deletion",
]

RISE_STEP = 224
"""Pixels per step of RISE's protocol at 224 x 224 (Petsiuk et al. 2018)."""
GROUPCAM_CODE_STEPS = (448, 1792)
"""Pixels per step in Group-CAM's evaluation script (earlier and latest commits)."""
SUBSTRATES = ("blur", "zeros")
MODES = ("insertion", "deletion")


def auc(curves: torch.Tensor) -> torch.Tensor:
    """Trapezoid area under curves (..., n + 1) sampled uniformly on [0, 1] (RISE's ``auc``).

    Raises:
        TypeError: curves that are not a real tensor.
        ValueError: curves of fewer than two points, or with NaN or infinite values (an area
            over them would be NaN or infinite, not a score).
    """
    check_tensor(curves, "auc: curves", "(..., n + 1)")
    if curves.dim() == 0 or curves.shape[-1] < 2:
        raise ValueError(f"auc: a curve needs at least two points, got curves of shape {tuple(curves.shape)}")
    check_finite(curves, "auc: curves", item="curve", hint="a probability curve must be finite")
    return (curves.sum(dim=-1) - (curves[..., 0] + curves[..., -1]) / 2) / (curves.shape[-1] - 1)


def salient_order(maps: torch.Tensor) -> torch.Tensor:
    """Pixel indices (B, H*W) by decreasing saliency; ties in index order (stable).

    Raises:
        TypeError: maps that are not a real tensor.
        ValueError: maps that are not (B, H, W), or with NaN or infinite values (NaN sorts as
            the most salient pixel).
    """
    check_tensor(maps, "salient_order: maps", "(B, H, W)")
    if maps.dim() != 3:
        raise ValueError(f"salient_order: maps must be (B, H, W), got shape {tuple(maps.shape)}")
    check_finite(maps, "salient_order: maps")
    return torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)


def substrate(images: torch.Tensor, kind: str = "blur", *, blur_kernel: int = 51, blur_sigma: float = 50.0) -> torch.Tensor:
    """The image the pixels are taken from (insertion) or replaced by (deletion).

    Raises:
        ValueError: an unknown ``kind``, a ``blur_kernel`` that is not a positive odd
            integer, a ``blur_sigma`` that is not a finite number > 0.
        TypeError: a ``blur_kernel`` that is not an integer, a ``blur_sigma`` that is not a number.
    """
    _check_substrate(kind, blur_kernel, blur_sigma, "substrate")
    if kind == "blur":
        return gaussian_blur(images, blur_kernel, blur_sigma)
    if kind == "zeros":
        return torch.zeros_like(images)
    raise ValueError(f"unknown substrate {kind!r}; accepted: {', '.join(SUBSTRATES)}")


def _check_substrate(kind, blur_kernel, blur_sigma, what: str) -> None:
    """A known substrate and, for ``"blur"``, a usable Gaussian (a NaN sigma blurred every image to NaN)."""
    if kind not in SUBSTRATES:
        raise ValueError(f"{what}: unknown substrate {kind!r}; accepted: {', '.join(SUBSTRATES)}")
    if kind == "blur":
        if check_int(blur_kernel, f"{what}: blur_kernel", 1) % 2 == 0:
            raise ValueError(f"{what}: blur_kernel must be a positive odd integer (pixels), got {blur_kernel}")
        check_real(blur_sigma, f"{what}: blur_sigma", low=0, low_open=True)


def _check(images, maps, mode, step, what: str) -> int:
    """Check the arguments every game shares; ``step`` as an int.

    Raises:
        TypeError: maps that are not a real tensor, a step that is not an integer.
        ValueError: an unknown mode, maps of another shape than (B, H, W) of the images or
            with NaN or infinite values, a step below 1.
    """
    check_images(images)
    if mode not in MODES:
        raise ValueError(f"{what}: unknown mode {mode!r}; accepted: {', '.join(MODES)}")
    check_tensor(maps, f"{what}: maps", f"(B, H, W) = {(images.shape[0], *images.shape[-2:])}")
    if maps.shape != (images.shape[0], *images.shape[-2:]):
        raise ValueError(f"{what}: maps must have shape (B, H, W) = {(images.shape[0], *images.shape[-2:])}, "
                         f"got {tuple(maps.shape)}")
    check_finite(maps, f"{what}: maps", hint="a saliency map must be finite (any sign and scale: only its order counts)")
    try:
        return check_int(step, f"{what}: step (pixels per step)", 1)
    except ValueError:
        raise ValueError(f"{what}: step must be a positive number of pixels, got {step!r}") from None


def _ends(images, mode, kind, blur_kernel, blur_sigma):
    """(start, finish) images of a game."""
    other = substrate(images, kind, blur_kernel=blur_kernel, blur_sigma=blur_sigma)
    return (other, images) if mode == "insertion" else (images, other)


def _targets(module, images, targets, batch_size):
    if targets is not None and not isinstance(targets, int):
        targets = slice_targets(targets, images.shape[0], slice(None))
    with torch.no_grad():
        logits = torch.cat([module(images[p]) for p in chunks(images.shape[0], batch_size)])
    return check_targets(targets, logits)


@outside_autocast
def causal_curves(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets=None,
    *,
    mode: str = "deletion",
    step: int = RISE_STEP,
    substrate_kind: str = "blur",
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    batch_size: int | str | None = AUTO,
    precision: str = "float32",
) -> torch.Tensor:
    """Insertion or deletion curves of a batch, batched over images *and* steps.

    Pixels are ranked once per image; the image after step i keeps the pixels of rank
    below ``i * step`` from the finish image and the rest from the start image, so every
    (image, step) pair is built independently and ``batch_size`` of them go through the
    network at a time.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) normalised for the model.
        maps: (B, H, W) saliency maps (any sign and scale, finite; only the order counts).
        targets: (B,) classes, an int, or None for the top-1 class of each image.
        mode: ``"insertion"`` or ``"deletion"``.
        step: pixels per step (RISE: 224; Group-CAM's script: 1,792).
        substrate_kind: ``"blur"`` or ``"zeros"`` (see the module docstring).
        blur_kernel, blur_sigma: the Gaussian blur of the ``"blur"`` substrate.
        batch_size: perturbed images per forward pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
        precision: the perturbed images' forward passes in ``"float32"``, ``"bfloat16"`` or
            ``"float16"`` (``lib.saliency.passes.forward_in``: autocast, the GPU's fast path);
            the targets are chosen in float32.

    Returns:
        (B, n + 1) softmax probabilities of the target, n = ceil(H W / step).

    Raises:
        ValueError: bad images (``lib.capture.check_images``), maps that are not (B, H, W) on
            the images' grid or have NaN or infinite values (any sign and scale is accepted:
            only the order counts), a step below 1, an unknown mode or substrate, a blur
            kernel that is not a positive odd integer, a blur sigma that is not a finite
            number > 0, a batch size below 1, targets out of range.
        TypeError: maps that are not a real tensor, a step, blur kernel or batch size that is
            not an integer (``2.0``, ``True``), a blur sigma that is not a number.
    """
    step = _check(images, maps, mode, step, "causal_curves")
    _check_substrate(substrate_kind, blur_kernel, blur_sigma, "causal_curves")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    check_precision(precision)
    with prepared(model) as module:
        chosen = _targets(module, images, targets, batch_size)
        return _curves(forward_in(module, precision), images, maps, chosen, mode, step, substrate_kind, blur_kernel,
                       blur_sigma, batch_size)


def _curves(module, images, maps, chosen, mode, step, substrate_kind, blur_kernel, blur_sigma, batch_size):
    """:func:`causal_curves` for a prepared module and validated targets."""
    count, pixels = images.shape[0], images.shape[-2] * images.shape[-1]
    steps = math.ceil(pixels / step)
    order = salient_order(maps)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(pixels, device=order.device).expand(count, -1))
    start, finish = _ends(images, mode, substrate_kind, blur_kernel, blur_sigma)
    owner = torch.arange(count, device=images.device).repeat_interleave(steps + 1)
    revealed = (torch.arange(steps + 1, device=images.device) * step).repeat(count)
    with torch.no_grad():
        scores = []
        for piece in chunks(owner.numel(), batch_size):
            b = owner[piece]
            keep = (rank[b] < revealed[piece, None]).view(-1, 1, *images.shape[-2:])
            perturbed = torch.where(keep, finish[b], start[b])
            scores.append(module(perturbed).softmax(dim=1).gather(1, chosen[b].view(-1, 1)).squeeze(1))
    curves = torch.cat(scores).view(count, steps + 1)
    check_finite(curves, "insertion/deletion: the model's probabilities on the perturbed images",
                 hint="the model returned NaN or infinite logits for some perturbed image")
    return curves


def causal_curves_reference(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets=None,
    *,
    mode: str = "deletion",
    step: int = RISE_STEP,
    substrate_kind: str = "blur",
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
) -> torch.Tensor:
    """The same curves as :func:`causal_curves`, one image and one step at a time.

    A transcription of RISE's ``CausalMetric.evaluate`` loop (copy the next ``step``
    pixels of the order from the finish image into the running image, score, repeat),
    kept as the reference the batched version is tested against.  Slow; not for use.

    Raises:
        ValueError, TypeError: as :func:`causal_curves`.
    """
    step = _check(images, maps, mode, step, "causal_curves_reference")
    _check_substrate(substrate_kind, blur_kernel, blur_sigma, "causal_curves_reference")
    height, width = images.shape[-2:]
    steps = math.ceil(height * width / step)
    start, finish = _ends(images, mode, substrate_kind, blur_kernel, blur_sigma)
    curves = torch.empty(images.shape[0], steps + 1, device=images.device)
    with prepared(model) as module, torch.no_grad():
        chosen = _targets(module, images, targets, 1)
        for b in range(images.shape[0]):
            order = salient_order(maps[b : b + 1])[0]
            current = start[b].clone().view(3, -1)
            source = finish[b].reshape(3, -1)
            for i in range(steps + 1):
                probabilities = module(current.view(1, 3, height, width)).softmax(dim=1)
                curves[b, i] = probabilities[0, chosen[b]]
                coords = order[i * step : (i + 1) * step]
                current[:, coords] = source[:, coords]
    return curves


@dataclass
class InsertionDeletion:
    """Both games for a batch.

    Attributes:
        insertion, deletion: (B, n + 1) probability curves.
        fractions: (n + 1,) fraction of the pixels inserted/deleted at each point.
        targets: (B,) the classes scored.
        step: pixels per step.
    """

    insertion: torch.Tensor
    deletion: torch.Tensor
    fractions: torch.Tensor
    targets: torch.Tensor
    step: int

    @property
    def insertion_auc(self) -> torch.Tensor:
        """(B,) area under the insertion curves (higher is better)."""
        return auc(self.insertion)

    @property
    def deletion_auc(self) -> torch.Tensor:
        """(B,) area under the deletion curves (lower is better)."""
        return auc(self.deletion)

    @property
    def overall(self) -> torch.Tensor:
        """(B,) Group-CAM's over-all score, AUC(insertion) - AUC(deletion)."""
        return self.insertion_auc - self.deletion_auc

    def to_frame(self, **columns):
        """Long-form ``pandas.DataFrame``: image, metric (insertion/deletion/over-all), value
        (AUC in %, as Group-CAM's tables), plus constant ``columns`` (method=..., G=...)."""
        import pandas as pd

        rows = []
        for metric, values in (("insertion", self.insertion_auc), ("deletion", self.deletion_auc), ("over-all", self.overall)):
            for image, value in enumerate(values.detach().cpu().tolist()):
                rows.append({**columns, "image": image, "metric": metric, "value": 100 * value})
        return pd.DataFrame(rows)


@outside_autocast
def insertion_deletion(
    model,
    images: torch.Tensor,
    maps: torch.Tensor,
    targets=None,
    *,
    step: int = RISE_STEP,
    insertion_substrate: str = "blur",
    deletion_substrate: str = "blur",
    blur_kernel: int = 51,
    blur_sigma: float = 50.0,
    batch_size: int | str | None = AUTO,
    precision: str = "float32",
) -> InsertionDeletion:
    """Insertion and deletion curves and their AUCs (RISE, Sec. 4.1; Group-CAM §4.3).

    Arguments as :func:`causal_curves` (``precision`` included); ``insertion_substrate`` is where insertion starts,
    ``deletion_substrate`` what deletion ends at (the RISE and Group-CAM scripts: blur and
    zeros; Group-CAM's text: blur for both, the default here).

    Raises:
        ValueError: bad images (``lib.capture.check_images``), maps that are not (B, H, W) on
            the images' grid or have NaN or infinite values (any sign and scale is accepted:
            only the order counts), a step below 1, an unknown substrate, a blur kernel that
            is not a positive odd integer, a blur sigma that is not a finite number > 0 (both
            checked only when a substrate is ``"blur"``), a batch size below 1, targets out of
            range.
        TypeError: maps that are not a real tensor, a step, blur kernel or batch size that is
            not an integer (``2.0``, ``True``), a blur sigma that is not a number.
    """
    step = _check(images, maps, "insertion", step, "insertion_deletion")
    for kind in (insertion_substrate, deletion_substrate):
        _check_substrate(kind, blur_kernel, blur_sigma, "insertion_deletion")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    check_precision(precision)
    with prepared(model) as module:
        chosen = _targets(module, images, targets, batch_size)
        blur = (blur_kernel, blur_sigma, batch_size)
        module = forward_in(module, precision)
        insertion = _curves(module, images, maps, chosen, "insertion", step, insertion_substrate, *blur)
        deletion = _curves(module, images, maps, chosen, "deletion", step, deletion_substrate, *blur)
    pixels = images.shape[-2] * images.shape[-1]
    fractions = (torch.arange(insertion.shape[1], dtype=torch.float64) * step).clamp(max=pixels) / pixels
    return InsertionDeletion(insertion, deletion, fractions.float(), chosen, step)
