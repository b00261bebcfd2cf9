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
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..capture import check_images, check_targets, prepared
from ..saliency.passes import AUTO, auto_batch_size, chunks, slice_targets
from ..saliency.group_masking import gaussian_blur

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
    """Trapezoid area under curves (..., n + 1) sampled uniformly on [0, 1] (RISE's ``auc``)."""
    if curves.shape[-1] < 2:
        raise ValueError("a curve needs at least two points")
    return (curves.sum(dim=-1) - (curves[..., 0] + curves[..., -1]) / 2) / (curves.shape[-1] - 1)


def salient_order(maps: torch.Tensor) -> torch.Tensor:
    """Pixel indices (B, H*W) by decreasing saliency; ties in index order (stable)."""
    return torch.argsort(maps.flatten(1), dim=1, descending=True, stable=True)


def substrate(images: torch.Tensor, kind: str = "blur", *, blur_kernel: int = 51, blur_sigma: float = 50.0) -> torch.Tensor:
    """The image the pixels are taken from (insertion) or replaced by (deletion)."""
    if kind == "blur":
        return gaussian_blur(images, blur_kernel, blur_sigma)
    if kind == "zeros":
        return torch.zeros_like(images)
    raise ValueError(f"unknown substrate {kind!r}; accepted: {', '.join(SUBSTRATES)}")


def _check(images, maps, mode, step):
    check_images(images)
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; accepted: {', '.join(MODES)}")
    if not isinstance(maps, torch.Tensor) or maps.shape != (images.shape[0], *images.shape[-2:]):
        shape = tuple(maps.shape) if isinstance(maps, torch.Tensor) else type(maps).__name__
        raise ValueError(f"maps must have shape (B, H, W) = {(images.shape[0], *images.shape[-2:])}, got {shape}")
    if not isinstance(step, int) or step < 1:
        raise ValueError(f"step must be a positive number of pixels, got {step!r}")


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
) -> torch.Tensor:
    """Insertion or deletion curves of a batch, batched over images *and* steps.

    Pixels are ranked once per image; the image after step i keeps the pixels of rank
    below ``i * step`` from the finish image and the rest from the start image, so every
    (image, step) pair is built independently and ``batch_size`` of them go through the
    network at a time.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) normalised for the model.
        maps: (B, H, W) saliency maps (any scale; only the order counts).
        targets: (B,) classes, an int, or None for the top-1 class of each image.
        mode: ``"insertion"`` or ``"deletion"``.
        step: pixels per step (RISE: 224; Group-CAM's script: 1,792).
        substrate_kind: ``"blur"`` or ``"zeros"`` (see the module docstring).
        blur_kernel, blur_sigma: the Gaussian blur of the ``"blur"`` substrate.
        batch_size: perturbed images per forward pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).

    Returns:
        (B, n + 1) softmax probabilities of the target, n = ceil(H W / step).
    """
    _check(images, maps, mode, step)
    batch_size = auto_batch_size(batch_size, images)
    with prepared(model) as module:
        chosen = _targets(module, images, targets, batch_size)
        return _curves(module, images, maps, chosen, mode, step, substrate_kind, blur_kernel, blur_sigma, batch_size)


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
    return torch.cat(scores).view(count, steps + 1)


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
    """
    _check(images, maps, mode, step)
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
) -> InsertionDeletion:
    """Insertion and deletion curves and their AUCs (RISE, Sec. 4.1; Group-CAM §4.3).

    Arguments as :func:`causal_curves`; ``insertion_substrate`` is where insertion starts,
    ``deletion_substrate`` what deletion ends at (the RISE and Group-CAM scripts: blur and
    zeros; Group-CAM's text: blur for both, the default here).
    """
    _check(images, maps, "insertion", step)
    batch_size = auto_batch_size(batch_size, images)
    for kind in (insertion_substrate, deletion_substrate):
        if kind not in SUBSTRATES:
            raise ValueError(f"unknown substrate {kind!r}; accepted: {', '.join(SUBSTRATES)}")
    with prepared(model) as module:
        chosen = _targets(module, images, targets, batch_size)
        blur = (blur_kernel, blur_sigma, batch_size)
        insertion = _curves(module, images, maps, chosen, "insertion", step, insertion_substrate, *blur)
        deletion = _curves(module, images, maps, chosen, "deletion", step, deletion_substrate, *blur)
    pixels = images.shape[-2] * images.shape[-1]
    fractions = (torch.arange(insertion.shape[1], dtype=torch.float64) * step).clamp(max=pixels) / pixels
    return InsertionDeletion(insertion, deletion, fractions.float(), chosen, step)
