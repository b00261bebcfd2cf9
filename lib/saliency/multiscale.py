r"""CAMERAS: enhanced-resolution, sanity-preserving class activation mapping.

Jalwana, Akhtar, Bennamoun & Mian, "CAMERAS: Enhanced Resolution And Sanity preserving
Class Activation Mapping for image saliency", CVPR 2021 (book chapter 5, §5.3.4).

The map is (Eq. 5.2, Algorithm 6 line 14)

.. math:: \Psi = f\Big(\mathrm{ReLU}\big(\textstyle\sum_k \overset{*}{W}_k \odot \overset{*}{A}_k\big)\Big),

with the multi-scale averages of Eq. 5.3 over the scales :math:`t` whose prediction is the
label :math:`\ell` (Algorithm 6, line 6)

.. math:: \overset{*}{W}_k = \mathbb{E}_t\big[\varphi\big(W_k(\varphi(I, \zeta_t)), \zeta_o\big)\big],\qquad
          \overset{*}{A}_k = \mathbb{E}_t\big[\varphi\big(A_k(\varphi(I, \zeta_t)), \zeta_o\big)\big],

where :math:`A_k(\cdot)` is channel k of layer :math:`\kappa` for the input up-sampled to
:math:`\zeta_t`, :math:`W_k^{(i,j)} = \partial y^\ell / \partial A_k^{(i,j)}` its
per-coefficient gradient (not pooled, unlike Grad-CAM's Eq. 5.1), :math:`\varphi(\cdot,
\zeta_o)` bilinear resizing to the input grid :math:`\zeta_o = (h, w)`, and :math:`f`
min-max normalisation.  :math:`y^\ell` is the pre-softmax score (the public code
back-propagates a one-hot vector through the logits).

**Scales.**  Algorithm 6, line 4 reads :math:`\zeta_t = \zeta_{t-1} + \lfloor \zeta_m / N
\rfloor (t - 1)` with the loop running N+1 times; taken literally it grows quadratically
and overshoots :math:`\zeta_m` (224, 366, 650, 1076, ... for :math:`\zeta_m = 1000`,
N = 7).  The text relates the parameters as :math:`\zeta_m = c N \zeta_o` with a step size
c, and the public code steps linearly.  We therefore take N sizes spaced linearly from the
input size to :math:`\zeta_m` inclusive (``steps=7, max_scale=1000``: 224, 353, 483,
612, 741, 871, 1000 for a 224 input); ``scales=`` gives the sizes explicitly.  A size is
the height of the up-sampled input; the width follows the image's aspect ratio.

**Paper vs public code** (github.com/VisMIL/CAMERAS, ``CAMERAS.py``):

* the paper fixes bilinear :math:`\varphi` (§5.3.4, "we choose to fix bi-linear
  interpolation"); the code up-samples the *input* bicubically (activations and
  gradients bilinearly): ``upsample="bilinear"`` (default) or ``"bicubic"``;
* the code's default is 8 sizes 224, 324, ..., 924 (``scales=range(224, 1000, 100)``),
  the paper reports :math:`\zeta_m = 1000`, N = 7 (our default);
* class gating: the paper drops a scale whose prediction is not the label
  (``gating="label"``, default); the code drops a scale only when no class of interest is
  given and the scale's top-1 differs from the top-1 at the first size; with a class given
  every scale counts (``gating="top1"``); ``gating="none"`` keeps every scale.  With
  ``targets=None`` the label is the prediction at the input size (Algorithm 6, line 1),
  and ``"label"`` and ``"top1"`` coincide.  When no scale of an image passes the gate
  (the average of Algorithm 6, lines 12-13 would be 0/0) every scale is kept for that image,
  with a :class:`GateFallbackWarning` (its ``count`` says for how many images).

:data:`PUBLIC_CODE` holds the public code's settings: ``cameras(..., **PUBLIC_CODE)``.

**Cost.**  For each scale, one forward and one backward pass for a whole batch of images;
the backward pass is ``torch.autograd.grad`` of the target scores with respect to the
captured activation, so it runs only through the layers after :math:`\kappa` and computes
no parameter gradient (the public code back-propagates to every parameter).  The fusion of
Eq. 5.2 never materialises the K up-sampled maps of every scale when that is the expensive
way: bilinear resizing is a product of two interpolation matrices,
:math:`\varphi(X) = U X V^\top`, so
:math:`\sum_k \overset{*}{W}_k \odot \overset{*}{A}_k` is evaluated column by column as
:math:`\mathrm{diag}(\bar U\, P_x^\top Q_x\, \bar U^\top)` with :math:`\bar U = [c_1 U_1,
\dots, c_T U_T]` and :math:`P_x, Q_x` the gradients and activations resized along the
width only (``fusion="gram"``); ``fusion="direct"`` resizes every channel with
``F.interpolate`` in chunks; ``"auto"`` picks the cheaper by an operation count.  Both give
the same map (tested).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
import torch.nn.functional as F

from ..capture import check_images, layer_name, prepared, resolve_layer
from .passes import (AUTO, auto_batch_size, check_batch_size, check_choice, check_count, check_feature_map, check_flag, chunks, finish, layer_pass,
                     predict, slice_targets)

__all__ = ["cameras", "cameras_scales", "GateFallbackWarning", "fuse", "scale_sizes", "ScaleRecord", "PUBLIC_CODE", "interpolation_matrix", "interpolation_error", "subset_weights",
           "pooled_gradients", "multiscale_gradcam", "cameras_variants", "VARIANTS"]

#: Settings of the authors' public code (VisMIL/CAMERAS, ``CAMERAS.py``).
PUBLIC_CODE = {"scales": tuple(range(224, 1000, 100)), "upsample": "bicubic", "gating": "top1"}

_GATINGS = ("label", "top1", "none")


class GateFallbackWarning(UserWarning):
    """No scale of ``count`` image(s) passed the class gate, so every scale was kept for them."""

    def __init__(self, message: str, count: int):
        super().__init__(message)
        self.count = count

_UPSAMPLINGS = ("bilinear", "bicubic")
_FUSIONS = ("auto", "gram", "direct")


def scale_sizes(input_size: tuple[int, int], *, scales=None, steps: int = 7, max_scale: int = 1000) -> list[tuple[int, int]]:
    r"""The (height, width) of each up-sampled input :math:`\zeta_1..\zeta_N`.

    ``scales`` (heights) when given, else ``steps`` heights spaced linearly from the input's
    height to ``max_scale`` inclusive.  Widths keep the input's aspect ratio.

    Raises:
        ValueError: no scale, a non-positive size or ``steps < 1``.
    """
    h, w = input_size
    steps = check_count(steps, "steps (N, the number of scales)")
    max_scale = check_count(max_scale, "max_scale (the largest height)")
    if scales is None:
        heights = [h] if steps == 1 else [int(round(h + (max_scale - h) * t / (steps - 1))) for t in range(steps)]
    else:
        if isinstance(scales, (str, bytes)) or not isinstance(scales, Sequence):
            raise TypeError(f"scales must be a sequence of heights (a list, tuple or range of positive integers) or None, "
                            f"got {type(scales).__name__} {scales!r}")
        heights = [check_count(s, "each of scales (a height)") for s in scales]
        if not heights:
            raise ValueError("scales is empty; give at least one input size")
    return [(s, max(1, int(round(s * w / h)))) for s in heights]


def interpolation_matrix(size_in: int, size_out: int, *, dtype=torch.float32, device=None) -> torch.Tensor:
    """(size_out, size_in) matrix of 1-D linear resizing, ``align_corners=False``.

    ``F.interpolate(x, mode="bilinear", align_corners=False)`` of an (h, w) map equals
    ``U @ x @ V.T`` with ``U = interpolation_matrix(h, H)``, ``V = interpolation_matrix(w, W)``.
    """
    eye = torch.eye(size_in, dtype=dtype, device=device)[None]  # (1, in, in): rows are unit signals
    return F.interpolate(eye, size=size_out, mode="linear", align_corners=False)[0].T.contiguous()


@dataclass
class ScaleRecord:
    """What CAMERAS extracts at each scale (Algorithm 6, lines 2-11), before fusion.

    Attributes:
        sizes: (height, width) of the up-sampled input at each of the T scales.
        activations: T tensors (B, K, h_t, w_t), layer :math:`\\kappa` at each scale.
        gradients: T tensors (B, K, h_t, w_t), :math:`\\partial y^\\ell / \\partial A`.
        logits: (T, B, classes) of each scale.
        targets: (B,) the label :math:`\\ell` explained.
        kept: (B, T) bool, the scales that pass the class gate (after the fallback).
        input_size: :math:`\\zeta_o = (h, w)`.
    """

    sizes: list[tuple[int, int]]
    activations: list[torch.Tensor]
    gradients: list[torch.Tensor]
    logits: torch.Tensor
    targets: torch.Tensor
    kept: torch.Tensor
    input_size: tuple[int, int]

    def weights(self) -> torch.Tensor:
        """(B, T) averaging weights of Eq. 5.3: 1/t_m on the kept scales, 0 elsewhere."""
        kept = self.kept.to(self.activations[0].dtype)
        return kept / kept.sum(dim=1, keepdim=True)


def _gate(logits: torch.Tensor, targets: torch.Tensor, label_at_input: torch.Tensor, gating: str, given: bool) -> torch.Tensor:
    predictions = logits.argmax(dim=2).T  # (B, T)
    if gating == "none" or (gating == "top1" and given):
        kept = torch.ones_like(predictions, dtype=torch.bool)
    elif gating == "top1":
        kept = predictions == label_at_input[:, None]
    else:
        kept = predictions == targets[:, None]
    empty = ~kept.any(dim=1)
    if empty.any():
        count = int(empty.sum())
        warnings.warn(
            GateFallbackWarning(
                f"CAMERAS: for {count} image(s) no scale predicts the label (gating={gating!r}); every scale is kept for them",
                count,
            ),
            stacklevel=3,
        )
        kept = kept | empty[:, None]
    return kept


def cameras_scales(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    layer: str = "last",
    scales: Sequence[int] | None = None,
    steps: int = 7,
    max_scale: int = 1000,
    upsample: str = "bilinear",
    gating: str = "label",
) -> ScaleRecord:
    """Activations, per-coefficient gradients and predictions of layer ``layer`` at every scale.

    Algorithm 6, lines 1-11 without the accumulation: one forward and one backward pass per
    scale for the whole batch (gradient with respect to the captured activation only).
    Arguments as :func:`cameras`; the whole batch is processed at once.
    """
    check_images(images)
    layer = layer_name(model, layer)
    check_choice(gating, "gating", _GATINGS)
    check_choice(upsample, "upsample", _UPSAMPLINGS)
    size = tuple(images.shape[-2:])
    sizes = scale_sizes(size, scales=scales, steps=steps, max_scale=max_scale)
    given = targets is not None
    # The label l = K(I) (line 1) comes from the input size; reuse that scale's pass if present.
    order = sorted(range(len(sizes)), key=lambda t: sizes[t] != size)
    passes = [None] * len(sizes)
    with prepared(model):  # once: each pass below finds it prepared
        label = predict(model, images)[0].argmax(dim=1) if sizes[order[0]] != size else None
        chosen = targets if given else label
        for t in order:
            x = images if sizes[t] == size else F.interpolate(images, size=sizes[t], mode=upsample, align_corners=False)
            passes[t] = layer_pass(model, x, chosen, layer)
            check_feature_map(passes[t].activations, layer, "cameras")
            if label is None:
                label = passes[t].logits.argmax(dim=1)
            chosen = passes[t].targets
    acts, grads, logits = ([getattr(p, field) for p in passes] for field in ("activations", "gradients", "logits"))
    stacked = torch.stack(logits)
    kept = _gate(stacked, chosen, label, gating, given)
    return ScaleRecord(sizes, acts, grads, stacked, chosen, kept, size)


def _fusion_costs(record: ScaleRecord) -> tuple[float, float]:
    (height, width), k = record.input_size, record.activations[0].shape[1]
    rows = sum(a.shape[-2] for a in record.activations)
    cells = sum(a.shape[-2] * a.shape[-1] for a in record.activations)
    gram = (k + height) * rows * rows * width + 2 * k * cells * width
    direct = 2 * len(record.sizes) * k * height * width * 50  # interpolation is memory bound (~50 MACs/element, CPU)
    return gram, direct


def fuse(record: ScaleRecord, weights: torch.Tensor | None = None, *, fusion: str = "auto", chunk_elements: int = 2**24) -> torch.Tensor:
    r"""Eq. 5.2 before normalisation: :math:`\mathrm{ReLU}(\sum_k \overset{*}{W}_k \odot \overset{*}{A}_k)`.

    Args:
        record: the per-scale signals of :func:`cameras_scales`.
        weights: (B, T) weights of the scales in the averages of Eq. 5.3 (default:
            :meth:`ScaleRecord.weights`, the class-gated mean); a one-hot row gives the map of
            a single scale.
        fusion: ``"gram"``, ``"direct"`` or ``"auto"`` (see the module docstring).
        chunk_elements: bound on the elements of the intermediate tensors (memory).

    Returns:
        (B, h, w) maps on the input grid :math:`\zeta_o`, unnormalised.
    """
    check_choice(fusion, "fusion", _FUSIONS)
    c = record.weights() if weights is None else weights.to(record.activations[0])
    active = (c != 0).any(dim=0).tolist()
    if not all(active):  # scales no image uses cost nothing (e.g. one extraction serving several scale sets)
        index = [t for t, used in enumerate(active) if used]
        record = ScaleRecord([record.sizes[t] for t in index], [record.activations[t] for t in index],
                             [record.gradients[t] for t in index], record.logits[index], record.targets,
                             record.kept[:, index], record.input_size)
        c = c[:, index]
    if fusion == "auto":
        gram, direct = _fusion_costs(record)
        fusion = "gram" if gram <= direct else "direct"
    return F.relu(_fuse_gram(record, c, chunk_elements) if fusion == "gram" else _fuse_direct(record, c, chunk_elements))


def _fuse_direct(record: ScaleRecord, c: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    """Resize every channel to the input grid (bilinear), average, multiply, sum."""
    batch, k = record.activations[0].shape[:2]
    size = record.input_size
    per_channel = batch * size[0] * size[1]
    step = max(1, chunk_elements // max(1, 2 * per_channel))
    out = torch.zeros(batch, *size, dtype=c.dtype, device=c.device)
    for part in chunks(k, step):
        a_star = w_star = 0
        for t, (a, g) in enumerate(zip(record.activations, record.gradients)):
            weight = c[:, t, None, None, None]
            a_star = a_star + weight * F.interpolate(a[:, part], size=size, mode="bilinear", align_corners=False)
            w_star = w_star + weight * F.interpolate(g[:, part], size=size, mode="bilinear", align_corners=False)
        out += (a_star * w_star).sum(dim=1)
    return out


def _fuse_gram(record: ScaleRecord, c: torch.Tensor, chunk_elements: int) -> torch.Tensor:
    r"""Separable evaluation: column x of the map is :math:`\mathrm{diag}(\bar U P_x^\top Q_x \bar U^\top)`."""
    acts, grads = record.activations, record.gradients
    batch, k = acts[0].shape[:2]
    height, width = record.input_size
    dtype, device = acts[0].dtype, acts[0].device
    rows_u = [interpolation_matrix(a.shape[-2], height, dtype=dtype, device=device) for a in acts]  # (H, h_t)
    cols_v = [interpolation_matrix(a.shape[-1], width, dtype=dtype, device=device).T for a in acts]  # (w_t, W)
    rows = sum(a.shape[-2] for a in acts)
    # U_bar per image: the gate and 1/t_m folded into the row-interpolation matrices.
    u_bar = torch.cat([c[:, t, None, None] * u for t, u in enumerate(rows_u)], dim=2)  # (B, H, R)
    gram = torch.zeros(batch, width, rows, rows, dtype=dtype, device=device)
    step = max(1, chunk_elements // max(1, 2 * batch * rows * width))
    for part in chunks(k, step):
        p = torch.cat([g[:, part] @ v for g, v in zip(grads, cols_v)], dim=2)  # (B, C, R, W)
        q = torch.cat([a[:, part] @ v for a, v in zip(acts, cols_v)], dim=2)
        gram += p.permute(0, 3, 2, 1) @ q.permute(0, 3, 1, 2)  # (B, W, R, R)
    left = u_bar[:, None] @ gram  # (B, W, H, R)
    return (left * u_bar[:, None]).sum(dim=-1).transpose(1, 2)  # (B, H, W)


def cameras(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    layer: str = "last",
    scales: Sequence[int] | None = None,
    steps: int = 7,
    max_scale: int = 1000,
    upsample: str = "bilinear",
    gating: str = "label",
    fusion: str = "auto",
    raw: bool = False,
    batch_size: int | str | None = 8,
) -> torch.Tensor:
    r"""CAMERAS saliency maps (Jalwana et al., CVPR 2021, Eqs. 5.2-5.3, Algorithm 6).

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the prediction at the input size.
        layer: :math:`\kappa`, a layer alias or module name (the paper: the last
            convolutional layer, ``"last"``).
        scales: explicit heights of the up-sampled inputs (e.g. ``range(224, 1000, 100)``,
            the public code's); overrides ``steps`` and ``max_scale``.
        steps: N, the number of scales (paper: 7).
        max_scale: :math:`\zeta_m`, the largest height (paper: 1000).
        upsample: :math:`\varphi` for the input, ``"bilinear"`` (paper) or ``"bicubic"``
            (public code); activations and gradients are always resized bilinearly.
        gating: ``"label"`` (paper), ``"top1"`` (public code) or ``"none"``.
        fusion: ``"auto"``, ``"gram"`` or ``"direct"`` (same result, different cost).
        raw: return the unnormalised :math:`\mathrm{ReLU}(\sum_k \overset{*}{W}_k \odot
            \overset{*}{A}_k)` on the input grid (CAMERAS's native resolution).
        batch_size: images per forward/backward pass (None: all; ``"auto"``: the device's chunk
            at the input size, :func:`lib.saliency.passes.auto_batch_size`, shrunk by the ratio
            of the input's area to the largest scale's); memory grows with it.

    Returns:
        (B, H, W) maps in [0, 1] on the images' device.

    Raises:
        ValueError: bad images, targets, layer, scales, ``upsample`` or ``gating``.
    """
    return cameras_variants(model, images, targets, variants=("cameras",), layer=layer, scales=scales, steps=steps,
                            max_scale=max_scale, upsample=upsample, gating=gating, fusion=fusion, raw=raw,
                            batch_size=batch_size)["cameras"]


def interpolation_error(x_star: torch.Tensor, size: tuple[int, int], *, antialias: bool = True) -> torch.Tensor:
    r"""Relative error of a map re-built from an m x n version: the quantity of Lemmas 5.1-5.2.

    :math:`\|X^* - \tilde X\|_F / \|X^*\|_F` with :math:`\tilde X = \varphi(X, (h, w))`, X the
    m x n resampling of :math:`X^*` (antialiased bilinear, i.e. an area-weighted average, by
    default) and :math:`\varphi` bilinear interpolation back to :math:`X^*`'s grid.

    Args:
        x_star: (B, h, w) or (B, C, h, w) high-resolution maps.
        size: (m, n).

    Returns:
        (B,) relative errors (over all channels).
    """
    x = x_star if x_star.dim() == 4 else x_star.unsqueeze(1)
    low = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=antialias)
    back = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
    return (x - back).flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1).clamp_min(1e-12)


def subset_weights(record: ScaleRecord, heights: Sequence[int]) -> torch.Tensor:
    """(B, T) weights that make :func:`fuse` on ``record`` equal CAMERAS run with ``scales=heights``.

    Lets one extraction over the union of several scale sets serve them all (Table 5.4's
    N x N comparison): the class gate and its fallback are applied within the subset.
    """
    wanted = {int(h) for h in heights}
    missing = wanted - {s[0] for s in record.sizes}
    if missing:
        raise ValueError(f"heights {sorted(missing)} were not extracted; record has {[s[0] for s in record.sizes]}")
    member = torch.tensor([s[0] in wanted for s in record.sizes], device=record.kept.device)
    gated = record.kept & member
    chosen = torch.where(gated.any(dim=1, keepdim=True), gated, member.expand_as(gated))
    weights = chosen.to(record.activations[0].dtype)
    return weights / weights.sum(dim=1, keepdim=True)


# --------------------------------------------------------------------------------------------
# The multi-scale Grad-CAM ablation: CAMERAS with Grad-CAM's channel-mean gradients
# --------------------------------------------------------------------------------------------

VARIANTS = ("cameras", "multiscale_gradcam")
"""What :func:`cameras_variants` can fuse from one extraction."""


def pooled_gradients(record: ScaleRecord) -> ScaleRecord:
    r"""``record`` with each scale's gradient replaced by its mean over positions, per channel.

    The mean is Grad-CAM's channel weight (Selvaraju et al. 2017, Eq. 1; Jalwana et al. 2021,
    Eq. 5.1) at that scale, :math:`\bar w_{t,k} = \frac{1}{h_t w_t}\sum_{ij} W_k^{(i,j)}(\varphi(I,
    \zeta_t))`, broadcast back over the grid.  :func:`fuse` of the result is the multi-scale
    Grad-CAM ablation :math:`\mathrm{ReLU}(\sum_k \mathbb{E}_t[\bar w_{t,k}]\,\overset{*}{A}_k)`:
    CAMERAS's accumulation of Eq. 5.3 with the per-coefficient gradients pooled away.  When a
    global average pool follows the layer (``"last"`` of a CNN classifier) the gradient is
    already constant over positions, the record is unchanged and the two maps coincide.
    """
    return dataclasses.replace(record, gradients=[g.mean(dim=(2, 3), keepdim=True).expand_as(g) for g in record.gradients])


def cameras_variants(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    variants: Sequence[str] = VARIANTS,
    layer: str = "last",
    scales: Sequence[int] | None = None,
    steps: int = 7,
    max_scale: int = 1000,
    upsample: str = "bilinear",
    gating: str = "label",
    fusion: str = "auto",
    raw: bool = False,
    batch_size: int | str | None = 8,
) -> dict[str, torch.Tensor]:
    r"""CAMERAS and its multi-scale Grad-CAM ablation from ONE extraction per batch.

    ``"cameras"`` is :func:`cameras` (Eq. 5.2); ``"multiscale_gradcam"`` fuses the same
    activations with each scale's gradient pooled to Grad-CAM's channel weight
    (:func:`pooled_gradients`), i.e. :math:`\mathrm{ReLU}(\sum_k \mathbb{E}_t[\bar w_{t,k}]\,
    \mathbb{E}_t[\varphi(A_k(\varphi(I, \zeta_t)), \zeta_o)])` over the same class-gated scales.
    With one scale equal to the input size it is Grad-CAM with the ReLU taken after the
    bilinear up-sampling instead of before (equal to Grad-CAM wherever Grad-CAM's weighted sum
    has no negative cell).  Both share the forward and backward passes, which dominate the cost.
    The other arguments are those of :func:`cameras`.

    Args:
        variants: names from :data:`VARIANTS`.

    Returns:
        ``{variant: (B, H, W)}`` maps in [0, 1] (unnormalised on the input grid with ``raw``).

    Raises:
        ValueError: an unknown variant; otherwise as :func:`cameras`.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown or not variants:
        raise ValueError(f"unknown CAMERAS variant(s) {unknown or variants!r}; accepted: {', '.join(VARIANTS)}")
    check_images(images)
    check_flag(raw, "raw")
    check_choice(fusion, "fusion", _FUSIONS)
    layer = layer_name(model, layer)
    check_choice(gating, "gating", _GATINGS)
    check_choice(upsample, "upsample", _UPSAMPLINGS)
    sizes = scale_sizes(tuple(images.shape[-2:]), scales=scales, steps=steps, max_scale=max_scale)  # checked before any pass
    if batch_size == AUTO:  # the device's chunk at the input size, shrunk by the largest scale's area
        largest = max(h * w for h, w in sizes)
        batch_size = max(1, auto_batch_size(AUTO, images) * images.shape[-2] * images.shape[-1] // largest)
    batch_size = check_batch_size(batch_size)
    options = dict(layer=layer, scales=scales, steps=steps, max_scale=max_scale, upsample=upsample, gating=gating)
    maps: dict[str, list[torch.Tensor]] = {v: [] for v in variants}
    for piece in chunks(images.shape[0], batch_size):
        record = cameras_scales(model, images[piece], slice_targets(targets, images.shape[0], piece), **options)
        for variant in variants:
            source = record if variant == "cameras" else pooled_gradients(record)
            maps[variant].append(fuse(source, fusion=fusion))
        del record
    return {v: finish(torch.cat(m), images, raw) for v, m in maps.items()}


def multiscale_gradcam(
    model,
    images: torch.Tensor,
    targets=None,
    *,
    layer: str = "last",
    scales: Sequence[int] | None = None,
    steps: int = 7,
    max_scale: int = 1000,
    upsample: str = "bilinear",
    gating: str = "label",
    fusion: str = "auto",
    raw: bool = False,
    batch_size: int | str | None = 8,
) -> torch.Tensor:
    r"""Multi-scale Grad-CAM: CAMERAS's accumulation over scales with Grad-CAM's pooled gradients.

    The ablation of Jalwana et al. 2021 that keeps Eq. 5.3's multi-scale averages and drops the
    per-coefficient gradients of Eq. 5.2 (:func:`cameras_variants`, ``"multiscale_gradcam"``);
    it is what CAMERAS reduces to at a layer followed by global average pooling.
    Arguments and returns as :func:`cameras`.
    """
    return cameras_variants(model, images, targets, variants=("multiscale_gradcam",), layer=layer, scales=scales,
                            steps=steps, max_scale=max_scale, upsample=upsample, gating=gating, fusion=fusion,
                            raw=raw, batch_size=batch_size)["multiscale_gradcam"]
