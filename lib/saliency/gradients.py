"""Input-gradient methods: Gradient, SmoothGrad (and its squared and variance forms),
Integrated Gradients, Guided Backprop, DeConvNet, Gradient × input, Guided Grad-CAM.

All differentiate the target class's logit with respect to the input pixels and
reduce the (B, 3, H, W) attribution over colour channels (``aggregate``).  With
``aggregate=None`` and ``raw=True`` they return the signed attributions themselves.  The
gradient is that of the one layer pass (:func:`lib.saliency.passes.layer_passes`) at the
network input, ``with_input(model)``'s layer ``INPUT``.

For Integrated Gradients the module also gives the checks of its use: the completeness error of
attributions (:func:`completeness_error`, and ``completeness_tolerance``/``return_completeness`` of
:func:`integrated_gradients`), the baselines of Sturmfels et al. 2020 (:func:`ig_baseline`) and the
average over several baselines (:func:`averaged_baseline_ig`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import check_images, prepared, unwrap
from .passes import (AUTO, INPUT, aggregate_channels, auto_batch_size, check_baseline, check_batch_size, check_choice, check_count, check_flag,
                     check_logits, check_normalisation, check_randomness, check_real, chunks, finish, layer_pass, layer_passes,
                     resolve_targets, target_scores, upsample, with_input)

__all__ = ["gradient", "smoothgrad", "integrated_gradients", "completeness_error", "CompletenessWarning", "COMPLETENESS_EPS",
           "ig_baseline", "IG_BASELINES", "BLUR_SIGMA", "gaussian_blur", "averaged_baseline_ig", "guided_backprop", "gradient_x_input", "deconvnet",
           "guided_gradcam", "fullgrad", "fullgrad_terms", "bias_layers", "SMOOTHGRAD_VARIANTS", "FULLGRAD_RESCALINGS"]


def _input_gradients(tapped, images: torch.Tensor, targets, batch_size: int | None = None) -> torch.Tensor:
    """d score_target / d images: the gradient at the ``INPUT`` layer of ``tapped = with_input(model)``."""
    return layer_pass(tapped, images, targets, INPUT, batch_size=batch_size).gradients


AGGREGATIONS = ("max_abs", "sum_abs", "sum", "l2")


def _check_output(aggregate: str | None, raw: bool) -> None:
    """The settings of the output, checked before any pass is spent."""
    check_flag(raw, "raw")
    if aggregate is None:
        if not raw:
            raise ValueError("aggregate=None returns (B, 3, H, W) attributions and needs raw=True")
        return
    check_choice(aggregate, "aggregate", AGGREGATIONS)


def _reduce(attributions: torch.Tensor, images: torch.Tensor, aggregate: str | None, raw: bool) -> torch.Tensor:
    _check_output(aggregate, raw)
    if aggregate is None:
        finish(attributions.flatten(1, 2), images, raw=True)  # the finite check
        return attributions.detach()
    return finish(aggregate_channels(attributions, aggregate), images, raw)


def gradient(model, images, targets=None, *, aggregate: str | None = "max_abs", raw: bool = False, batch_size: int | None = None):
    r"""Vanilla gradient saliency.

    Simonyan, Vedaldi & Zisserman, "Deep Inside Convolutional Networks: Visualising Image
    Classification Models and Saliency Maps", ICLR workshop 2014, Sec. 3.1:
    :math:`M_{ij} = \max_c |\partial S_t / \partial x_{cij}|` with :math:`S_t` the
    target's logit.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the predicted class.
        aggregate: channel reduction (``max_abs`` as in the paper; see
            :func:`lib.saliency.passes.aggregate_channels`), or None with ``raw``.
        raw: return the unnormalised map.
        batch_size: images per pass.

    Returns:
        (B, H, W) maps in [0, 1] (or raw).

    Raises:
        ValueError: bad images or targets (as :func:`lib.saliency.gradcam`), an unknown
            ``aggregate``, ``aggregate=None`` without ``raw``, logits or maps that are not finite.
        TypeError: arguments of the wrong type.
    """
    _check_output(aggregate, raw)
    return _reduce(_input_gradients(with_input(model), images, targets, batch_size), images, aggregate, raw)


def smoothgrad(
    model,
    images,
    targets=None,
    *,
    n_samples: int = 50,
    noise_level: float = 0.15,
    aggregate: str | None = "max_abs",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    seed: int = 0,
    generator: torch.Generator | None = None,
    variant: str = "smoothgrad",
):
    r"""SmoothGrad: the gradient averaged over noisy copies of the image.

    Smilkov et al., "SmoothGrad: removing noise by adding noise", ICML workshop 2017,
    Eq. 2: :math:`\hat M(x) = \frac1n \sum_{i=1}^n \nabla_x S_t(x + \mathcal N(0, \sigma^2))`,
    with :math:`\sigma = \text{noise\_level} \cdot (x_{max} - x_{min})` per image
    (the paper recommends 10-20%; n = 50).  Signed gradients are averaged, then
    reduced over channels.  The target is fixed on the clean image.

    Args:
        n_samples: noisy copies per image.
        noise_level: standard deviation as a fraction of the image's value range.
        batch_size: noisy images per forward/backward pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
        seed, generator: the noise's randomness.  With ``seed`` every image gets the same
            noise draws, so a map does not depend on the batch it was computed in or on
            ``batch_size``; a ``generator`` is consumed image after image.
        variant: the statistic of the noisy gradients, per pixel and channel: ``"smoothgrad"``
            their mean (Eq. 2); ``"smoothgrad_sq"`` the mean of their squares (SmoothGrad-Squared,
            Hooker et al. 2019, Sec. 4.1); ``"vargrad"`` their variance (VarGrad, Adebayo et al.
            2018, Sec. 3), with 1/n as captum's ``NoiseTunnel`` (whose ``nt_type`` names these are).
    Other arguments, returns and errors as :func:`gradient`; also ValueError for ``n_samples < 1``
    or a ``noise_level`` that is negative, NaN or infinite.
    """
    check_images(images)
    _check_output(aggregate, raw)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    n_samples = check_count(n_samples, "n_samples")
    noise_level = check_real(noise_level, "noise_level", low=0.0)
    check_randomness(seed, generator, images.device)
    check_choice(variant, "variant", SMOOTHGRAD_VARIANTS)
    targets = resolve_targets(model, images, targets)
    total, squares = torch.zeros_like(images), torch.zeros_like(images)
    with prepared(model) as module:  # once: each pass below finds it prepared
        tapped = with_input(module)
        for b in range(images.shape[0]):
            rng = check_randomness(seed, generator, images.device)  # with a seed: the same draws for every image
            noise = torch.randn((n_samples, *images.shape[1:]), generator=rng, device=images.device, dtype=images.dtype)
            sigma = noise_level * (images[b].max() - images[b].min())
            for piece in chunks(n_samples, batch_size):
                noisy = images[b : b + 1] + sigma * noise[piece]
                grads = _input_gradients(tapped, noisy, targets[b].expand(noisy.shape[0]))
                total[b] += grads.sum(dim=0)
                if variant != "smoothgrad":
                    squares[b] += grads.pow(2).sum(dim=0)
    mean = total / n_samples
    statistic = {"smoothgrad": lambda: mean, "smoothgrad_sq": lambda: squares / n_samples,
                 "vargrad": lambda: (squares / n_samples - mean.pow(2)).clamp_min(0)}[variant]()
    return _reduce(statistic, images, aggregate, raw)


#: The statistics :func:`smoothgrad` can take of the noisy gradients (captum's ``nt_type`` names).
SMOOTHGRAD_VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


class CompletenessWarning(UserWarning):
    """Integrated Gradients' attributions miss completeness (Sundararajan et al. 2017, Prop. 1) by
    more than the asked tolerance: the quadrature needs more ``steps``."""


#: The smallest score difference :math:`|S_t(x) - S_t(x')|` :func:`completeness_error` divides by:
#: below it (a baseline the model scores as the image) the relative error is undefined, NaN.
COMPLETENESS_EPS = 1e-6


def _check_completeness_options(completeness_tolerance, return_completeness) -> float | None:
    check_flag(return_completeness, "return_completeness")
    if completeness_tolerance is None:
        return None
    return check_real(completeness_tolerance, "completeness_tolerance (a relative error)", low=0.0)


def _path_attributions(module: nn.Module, images: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor,
                       steps: int, batch_size: int | None) -> torch.Tensor:
    r"""Eq. 1's un-aggregated attributions (B, 3, H, W) by the trapezoidal rule on ``steps`` points,
    for a ``module`` already :func:`prepared`."""
    alphas = torch.linspace(0.0, 1.0, steps, device=images.device, dtype=images.dtype)
    weights = torch.full_like(alphas, 1.0 / (steps - 1))
    weights[0] = weights[-1] = 0.5 / (steps - 1)
    image_index = torch.arange(images.shape[0], device=images.device).repeat_interleave(steps)
    step_index = torch.arange(steps, device=images.device).repeat(images.shape[0])
    total = torch.zeros_like(images)
    tapped = with_input(module)
    for piece in chunks(image_index.numel(), batch_size):
        i, k = image_index[piece], step_index[piece]
        a = alphas[k].view(-1, 1, 1, 1)
        points = reference[i] + a * (images[i] - reference[i])
        grads = _input_gradients(tapped, points, targets[i])
        total.index_add_(0, i, grads * weights[k].view(-1, 1, 1, 1))
    return (images - reference) * total


def _score_gap(module: nn.Module, images: torch.Tensor, reference: torch.Tensor, targets: torch.Tensor,
               batch_size: int | None) -> torch.Tensor:
    r"""(B, 2) float64: :math:`S_t(x) - S_t(x')` per image (the target logit of a ``module`` already
    :func:`prepared`), and the rounding of that difference, :math:`\epsilon (|S_t(x)| + |S_t(x')|)` with
    :math:`\epsilon` the logits' machine epsilon."""
    gaps = []
    with torch.no_grad():
        for piece in chunks(images.shape[0], batch_size):
            count = piece.stop - piece.start
            logits = [check_logits(module(batch[piece]), count) for batch in (images, reference)]
            scores = [target_scores(z, targets[piece]).double() for z in logits]
            rounding = torch.finfo(logits[0].dtype).eps * (scores[0].abs() + scores[1].abs())
            gaps.append(torch.stack([scores[0] - scores[1], rounding], dim=1))
    return torch.cat(gaps)


def _relative_error(attributions: torch.Tensor, gap_and_rounding: torch.Tensor) -> torch.Tensor:
    gap, rounding = gap_and_rounding.unbind(dim=1)
    error = (attributions.double().sum(dim=(1, 2, 3)) - gap).abs() / gap.abs().clamp_min(COMPLETENESS_EPS)
    undefined = gap.abs() < torch.maximum(torch.full_like(rounding, COMPLETENESS_EPS), 16 * rounding)
    return torch.where(undefined, torch.nan, error)


def _warn_incomplete(errors: torch.Tensor, tolerance: float | None, steps: int, what: str) -> None:
    if tolerance is None:
        return
    undefined = torch.nonzero(errors.isnan()).flatten().tolist()
    if undefined:
        listed = ", ".join(str(i) for i in undefined[:8]) + (f" and {len(undefined) - 8} more" if len(undefined) > 8 else "")
        warnings.warn(f"{what}: the baseline scores as the image (|S_t(x) - S_t(x')| below {COMPLETENESS_EPS:g} or its own rounding) for "
                      f"{len(undefined)} of {errors.numel()} images ({listed}): their relative completeness error is "
                      "undefined (NaN); choose a baseline the model scores differently", CompletenessWarning, stacklevel=3)
    failing = torch.nonzero(errors > tolerance).flatten().tolist()
    if failing:
        listed = ", ".join(f"image {i}: {errors[i].item():.3g}" for i in failing[:8])
        more = f" and {len(failing) - 8} more" if len(failing) > 8 else ""
        warnings.warn(f"{what}: completeness is missed by more than {tolerance:g} (relative error |sum of attributions - "
                      f"(S_t(x) - S_t(x'))| / |S_t(x) - S_t(x')|) for {len(failing)} of {errors.numel()} images ({listed}"
                      f"{more}); raise steps (now {steps}) until the error is below the tolerance",
                      CompletenessWarning, stacklevel=3)


def completeness_error(model, images, attributions, baseline: float | torch.Tensor = 0.0, targets=None, *,
                       batch_size: int | str | None = AUTO) -> torch.Tensor:
    r"""How far attributions are from completeness, per image.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017, Prop. 1
    (completeness of Eq. 1): :math:`\sum_i IG_i(x) = S_t(x) - S_t(x')`, summed over every pixel
    and channel, with :math:`S_t` the target's logit (the score every method of the library
    differentiates, :func:`lib.saliency.passes.target_scores`).  The error is

    .. math:: \frac{|\sum_i a_i - (S_t(x) - S_t(x'))|}{|S_t(x) - S_t(x')|}

    0 for exact attributions.  When :math:`|S_t(x) - S_t(x')|` is below :math:`10^{-6}`
    (:data:`COMPLETENESS_EPS`) or below 16 times its own rounding, :math:`16 \epsilon (|S_t(x)| + |S_t(x')|)`
    with :math:`\epsilon` the logits' machine epsilon (a baseline the model scores as the image, to
    the precision of its logits), the ratio is undefined and the error is NaN.  The
    trapezoidal rule of :func:`integrated_gradients` is exact for a model linear in its input and
    otherwise converges as the steps grow.  The paper recommends
    enough steps to bring the sum within 5% of the difference (Sec. 5).

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) normalised images, x.
        attributions: (B, 3, H, W) raw signed attributions, per pixel and channel
            (``integrated_gradients(..., aggregate=None, raw=True)``).
        baseline: x', as for :func:`integrated_gradients`.
        targets: (B,) class indices, an int, or None for the predicted class.
        batch_size: images per forward pass (``"auto"`` or None: see :func:`integrated_gradients`).

    Returns:
        (B,) float64 relative errors, NaN where the score difference is undefined (above).

    Raises:
        ValueError: bad images, targets or baseline; attributions of another shape than the images
            (aggregated maps included) or with NaN or infinite values.
        TypeError: attributions that are not a floating-point tensor.
    """
    check_images(images)
    if not isinstance(attributions, torch.Tensor) or not attributions.is_floating_point():
        raise TypeError(f"completeness_error: attributions must be a floating-point tensor (B, 3, H, W), got "
                        f"{type(attributions).__name__}{f' of dtype {attributions.dtype}' if isinstance(attributions, torch.Tensor) else ''}")
    if attributions.shape != images.shape:
        raise ValueError(f"completeness_error: attributions must be per pixel and channel, shaped as the images "
                         f"{tuple(images.shape)}, got {tuple(attributions.shape)}; compute them with "
                         "integrated_gradients(..., aggregate=None, raw=True)")
    if not torch.isfinite(attributions).all():
        raise ValueError("completeness_error: attributions contain NaN or infinite values")
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    reference = check_baseline(baseline, images)
    targets = resolve_targets(model, images, targets)
    with prepared(model) as module:
        gap = _score_gap(module, images, reference, targets, batch_size)
    return _relative_error(attributions.to(images.device), gap)


def integrated_gradients(
    model,
    images,
    targets=None,
    *,
    baseline: float | torch.Tensor = 0.0,
    steps: int = 50,
    aggregate: str | None = "sum_abs",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    completeness_tolerance: float | None = None,
    return_completeness: bool = False,
):
    r"""Integrated Gradients with the trapezoidal rule.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
    Eq. 1: :math:`IG_i(x) = (x_i - x'_i) \int_0^1 \partial S_t(x' + \alpha (x - x')) / \partial x_i \, d\alpha`,
    approximated on ``steps`` equally spaced points of [0, 1] with trapezoid weights
    (exact for a linear model).  Completeness, :math:`\sum_i IG_i = S_t(x) - S_t(x')`,
    holds up to the quadrature error (``tests/test_parity.py`` checks 1% at 64 steps);
    :func:`completeness_error` measures it, and ``completeness_tolerance`` checks it on every call.

    Args:
        baseline: x', a float (filled everywhere) or a tensor broadcastable to the
            images, in the model's input space.  The default 0 is the normalised mean
            colour (mid-grey for EfficientNet-Lite); :func:`ig_baseline` makes the others.
        steps: quadrature points (>= 2).
        aggregate: channel reduction; ``sum_abs`` (default, as the paper's figures sum
            over colour channels) or ``sum`` to keep completeness in the map.
        batch_size: interpolated images per pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
        completeness_tolerance: when given, the relative completeness error of every image
            (:func:`completeness_error`, on the attributions before ``aggregate``; two more forward
            passes per image) is checked against it and a :class:`CompletenessWarning` names the
            images above it.  None (default): no check.
        return_completeness: also return those errors.

    Returns:
        (B, H, W) maps as :func:`gradient`; with ``return_completeness``, ``(maps, errors)``, the
        errors (B,) float64.

    Warns:
        CompletenessWarning: some image's completeness error exceeds ``completeness_tolerance``.
    Other arguments, returns and errors as :func:`gradient`; also ValueError for ``steps < 2``, a
    baseline that is not finite or does not broadcast to the images, or a negative tolerance.
    """
    check_images(images)
    _check_output(aggregate, raw)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    steps = check_count(steps, "steps (the trapezoidal rule's points)", 2)
    tolerance = _check_completeness_options(completeness_tolerance, return_completeness)
    checked = tolerance is not None or return_completeness
    reference = check_baseline(baseline, images)
    targets = resolve_targets(model, images, targets)
    with prepared(model) as module:  # once: each pass below finds it prepared
        attributions = _path_attributions(module, images, reference, targets, steps, batch_size)
        gap = _score_gap(module, images, reference, targets, batch_size) if checked else None
    maps = _reduce(attributions, images, aggregate, raw)
    if not checked:
        return maps
    errors = _relative_error(attributions, gap)
    _warn_incomplete(errors, tolerance, steps, "integrated_gradients")
    return (maps, errors) if return_completeness else maps


#: The baselines :func:`ig_baseline` makes.
IG_BASELINES = ("black", "mean", "blur", "noise")
#: The blurred baseline's default standard deviation in pixels: Sturmfels et al. 2020's
#: ``get_blurred_image(image, sigma=10)`` on 299 x 299 inputs (their figure varies it from 5 to 50).
BLUR_SIGMA = 10.0


def _reflected(count: int, radius: int, device) -> torch.Tensor:
    """Indices of ``range(-radius, count + radius)`` folded back into ``range(count)`` by mirroring at the edges
    with the edge sample repeated (``d c b a | a b c d | d c b a``, scipy.ndimage's ``mode="reflect"``), for any radius."""
    index = torch.arange(-radius, count + radius, device=device) % (2 * count)
    return torch.where(index >= count, 2 * count - 1 - index, index)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    r"""Each channel convolved with a Gaussian of standard deviation ``sigma`` pixels, separably.

    As ``scipy.ndimage.gaussian_filter(mode="reflect", truncate=4.0)``: the kernel
    :math:`\propto e^{-k^2 / 2\sigma^2}` for :math:`|k| \le \lfloor 4\sigma + 1/2 \rfloor`, normalised to sum 1,
    the image mirrored at its edges.  Computed in float64 and returned in the images' dtype, so a
    constant image comes back unchanged.  The kernel sums to 1, so blurring commutes with the
    per-channel normalisation: blurring normalised images is normalising blurred pixels.
    """
    check_images(images)
    sigma = check_real(sigma, "blur_sigma (pixels)", low=0.0, low_open=True)
    radius = int(4.0 * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, device=images.device, dtype=torch.float64)
    kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
    kernel = kernel / kernel.sum()
    out = images.double()
    channels = out.shape[1]
    for dim in (2, 3):
        padded = out.index_select(dim, _reflected(out.shape[dim], radius, images.device))
        shape = (1, 1, 2 * radius + 1, 1) if dim == 2 else (1, 1, 1, 2 * radius + 1)
        out = F.conv2d(padded, kernel.view(shape).expand(channels, -1, -1, -1).contiguous(), groups=channels)
    return out.to(images.dtype)


def ig_baseline(images, kind: str, *, classifier=None, mean=None, std=None, blur_sigma: float = BLUR_SIGMA,
                seed: int = 0) -> torch.Tensor:
    r"""A baseline x' for :func:`integrated_gradients`, (B, 3, H, W) in the model's input space.

    Sundararajan et al. 2017 (Sec. 3) take "the black image" and mention noise; Sturmfels,
    Lundberg & Lee, "Visualizing the Impact of Feature Attribution Baselines", Distill 2020,
    compare constant, blurred and uniform-noise baselines (and averages over several, see
    :func:`averaged_baseline_ig`).  With the normalisation :math:`x = (p - \mu) / \sigma` of pixels
    :math:`p \in [0, 1]`:

    - ``"black"``: pixel 0, :math:`-\mu / \sigma` per channel (needs the normalisation).
    - ``"mean"``: the normalisation's mean colour :math:`p = \mu`, which is 0 in the input space (the
      default baseline of :func:`integrated_gradients`).  It is the data set's mean colour when the
      normalisation uses it (torchvision's ImageNet weights), mid-grey for EfficientNet-Lite
      (:math:`\mu = 127/255`).
    - ``"blur"``: the image blurred by a Gaussian of ``blur_sigma`` pixels (:func:`gaussian_blur`;
      Sturmfels et al.'s default, 10 pixels at 299 x 299).  Blurring commutes with the normalisation,
      so it is computed on the normalised images directly.
    - ``"noise"``: uniform noise over the pixel range, :math:`p \sim U[0, 1)` normalised (their
      "uniform" baseline; needs the normalisation).  One noise image drawn from ``seed`` serves every
      image of the batch, so a baseline does not depend on the batch it was made in; average over
      seeds with :func:`averaged_baseline_ig`.

    Args:
        images: (B, 3, H, W) normalised images (the baselines take their shape, dtype and device).
        kind: one of :data:`IG_BASELINES`.
        classifier: a ``lib.models.Classifier``, whose ``mean`` and ``std`` are the normalisation.
        mean, std: the normalisation's 3 per-channel values, instead of ``classifier``.
        blur_sigma: the blur's standard deviation in pixels (> 0).
        seed: the noise's seed.

    Returns:
        (B, 3, H, W) baselines, on the images' device and in their dtype.

    Raises:
        ValueError: bad images, an unknown kind, ``"black"`` or ``"noise"`` without the normalisation,
            bad normalisation statistics (:func:`lib.saliency.passes.check_normalisation`), a
            ``blur_sigma`` that is not positive and finite.
        TypeError: a kind that is not a string, a seed that is not an integer.
    """
    check_images(images)
    check_choice(kind, "ig_baseline kind", IG_BASELINES)
    stats = check_normalisation("ig_baseline", classifier=classifier, mean=mean, std=std)
    if kind == "mean":
        return torch.zeros_like(images)
    if kind == "blur":
        return gaussian_blur(images, blur_sigma)
    if stats is None:
        raise ValueError(f"ig_baseline: the {kind!r} baseline is defined on pixels and needs the normalisation: "
                         "pass classifier= (a lib.models.Classifier) or mean= and std=")
    mu, sigma = (s.to(images.device, images.dtype).view(1, 3, 1, 1) for s in stats)
    if kind == "black":
        return ((0.0 - mu) / sigma).expand_as(images).clone()
    rng = check_randomness(seed, None, images.device)
    pixels = torch.rand((1, *images.shape[1:]), generator=rng, device=images.device, dtype=images.dtype)
    return ((pixels - mu) / sigma).expand_as(images).clone()


def averaged_baseline_ig(
    model,
    images,
    targets=None,
    *,
    baselines,
    steps: int = 50,
    aggregate: str | None = "sum_abs",
    raw: bool = False,
    batch_size: int | str | None = AUTO,
    completeness_tolerance: float | None = None,
    return_completeness: bool = False,
):
    r"""Integrated Gradients averaged over several baselines.

    Sturmfels, Lundberg & Lee, Distill 2020 ("Averaging over multiple baselines"; Erion et al.'s
    expected gradients samples them): :math:`\overline{IG}_i(x) = \frac1K \sum_{k=1}^K IG_i(x; x'_k)`
    with Eq. 1 of Sundararajan et al. 2017 for each baseline :math:`x'_k`.  The signed attributions
    (B, 3, H, W) are averaged before ``aggregate``, so completeness holds for the average:
    :math:`\sum_i \overline{IG}_i = S_t(x) - \frac1K \sum_k S_t(x'_k)`.  For the averaged noise
    baseline: ``baselines=[ig_baseline(images, "noise", classifier=c, seed=s) for s in range(K)]``.

    Args:
        baselines: a list or tuple of K >= 1 baselines, each as ``baseline`` of
            :func:`integrated_gradients` (a number, or a tensor that broadcasts to the images).
        steps, aggregate, raw, batch_size: as :func:`integrated_gradients`, for every baseline.
        completeness_tolerance, return_completeness: as :func:`integrated_gradients`, with the
            averaged difference of scores above.

    Returns:
        (B, H, W) maps (or raw attributions, as :func:`integrated_gradients`); with
        ``return_completeness``, ``(maps, errors)``.

    Raises:
        TypeError: ``baselines`` not a list or tuple (a single tensor would be read as a list of its rows).
        ValueError: no baselines, a bad baseline (the message gives its position); the errors of
            :func:`integrated_gradients`.
    Warns:
        CompletenessWarning: as :func:`integrated_gradients`.
    """
    check_images(images)
    _check_output(aggregate, raw)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    steps = check_count(steps, "steps (the trapezoidal rule's points)", 2)
    tolerance = _check_completeness_options(completeness_tolerance, return_completeness)
    if not isinstance(baselines, (list, tuple)):
        raise TypeError(f"averaged_baseline_ig: baselines must be a list or tuple of baselines (numbers or tensors that "
                        f"broadcast to the images), got {type(baselines).__name__}")
    if not baselines:
        raise ValueError("averaged_baseline_ig: baselines is empty; give at least one baseline")
    references = []
    for k, baseline in enumerate(baselines):
        try:
            references.append(check_baseline(baseline, images))
        except (TypeError, ValueError) as error:
            raise type(error)(f"averaged_baseline_ig: baselines[{k}]: {error}") from None
    targets = resolve_targets(model, images, targets)
    total = torch.zeros_like(images)
    gap = torch.zeros(images.shape[0], 2, dtype=torch.float64, device=images.device)
    with prepared(model) as module:
        for reference in references:
            total += _path_attributions(module, images, reference, targets, steps, batch_size)
            if tolerance is not None or return_completeness:
                gap += _score_gap(module, images, reference, targets, batch_size)
    attributions = total / len(references)
    maps = _reduce(attributions, images, aggregate, raw)
    if tolerance is None and not return_completeness:
        return maps
    errors = _relative_error(attributions, gap / len(references))
    _warn_incomplete(errors, tolerance, steps, "averaged_baseline_ig")
    return (maps, errors) if return_completeness else maps


class _PositiveGradient(torch.autograd.Function):
    """Identity forward; backward passes only positive gradients (the "guided" rule)."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0)


_GUIDED_ACTIVATIONS = (nn.ReLU, nn.ReLU6)
#: Activations the guided rule does not cover (warned about when the model has them).
_OTHER_ACTIVATIONS = (nn.Hardswish, nn.Hardsigmoid, nn.SiLU, nn.GELU, nn.Mish, nn.ELU, nn.SELU, nn.CELU, nn.LeakyReLU,
                      nn.PReLU, nn.RReLU, nn.Softplus, nn.Sigmoid, nn.Tanh, nn.Hardtanh)


def guided_backprop(model, images, targets=None, *, aggregate: str | None = "max_abs", raw: bool = False, batch_size: int | None = None):
    r"""Guided Backpropagation.

    Springenberg et al., "Striving for Simplicity: The All Convolutional Net", ICLR
    workshop 2015, Sec. 3.4: at every ReLU the backward signal is
    :math:`R_l = \mathbb 1[f_l > 0] \cdot \mathbb 1[R_{l+1} > 0] \cdot R_{l+1}`: the usual
    ReLU mask and, in addition, only positive gradients.  Implemented by a forward hook on
    every ``nn.ReLU``/``nn.ReLU6`` module that routes its output through an identity whose
    backward clamps the gradient at zero; the ReLU's own backward adds the mask (for ReLU6
    the mask is 0 < f < 6).  Works with in-place ReLUs; every hook is removed on exit.

    Known failure: the map barely changes when the network's weights are randomised
    (Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018): it reconstructs
    the image more than it explains the class.

    Raises:
        ValueError: the model has no ReLU modules (a functional ``F.relu`` cannot be guided).
    Warns:
        UserWarning: the model also has other activation modules (Hardswish, SiLU, GELU...),
            which the rule does not guide.
    Other arguments and returns as :func:`gradient`.
    """
    module, _ = unwrap(model)
    _check_output(aggregate, raw)
    handles = _rectified(module, lambda _m, _i, out: _PositiveGradient.apply(out), "guided_backprop")
    try:
        return gradient(model, images, targets, aggregate=aggregate, raw=raw, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()


def gradient_x_input(model, images, targets=None, *, aggregate: str | None = "sum_abs", raw: bool = False,
                     batch_size: int | None = None):
    r"""Gradient × input.

    Shrikumar et al., "Not Just a Black Box: Learning Important Features Through Propagating
    Activation Differences", arXiv 2016, Sec. 2 ("gradient * input"):
    :math:`a_{cij} = x_{cij}\, \partial S_t / \partial x_{cij}`, the first-order Taylor term of the
    score at the input (Integrated Gradients with one step from a zero baseline).  Reduced over
    channels by ``aggregate`` (``sum_abs`` by default, as Integrated Gradients; ``sum`` keeps the
    sign).  Other arguments, returns and errors as :func:`gradient`.
    """
    check_images(images)
    _check_output(aggregate, raw)
    gradients = _input_gradients(with_input(model), images, targets, batch_size)
    return _reduce(images * gradients, images, aggregate, raw)


class _DeconvReLU(torch.autograd.Function):
    """ReLU forward; backward passes the positive part of the incoming gradient, whatever the input's sign."""

    @staticmethod
    def forward(ctx, x, upper):
        return x.clamp(min=0) if upper is None else x.clamp(0, upper)

    @staticmethod
    def backward(ctx, grad):
        return grad.clamp(min=0), None


def _rectified(module: nn.Module, rule, method: str) -> list:
    """Forward hooks ``rule(relu, inputs, output)`` on every ReLU/ReLU6 module, for the methods that
    change the rectifiers' backward rule (guided backprop, DeConvNet).

    Raises:
        ValueError: the model has no ReLU modules (a functional ``F.relu`` cannot be changed).
    Warns:
        UserWarning: the model also has other activation modules, which keep their plain gradient.
    """
    relus = [m for m in module.modules() if isinstance(m, _GUIDED_ACTIVATIONS)]
    if not relus:
        raise ValueError(f"{method} needs nn.ReLU or nn.ReLU6 modules in the model; functional activations cannot be guided")
    unguided = sorted({type(m).__name__ for m in module.modules()  # ReLU6 is a Hardtanh: guided, not other
                       if isinstance(m, _OTHER_ACTIVATIONS) and not isinstance(m, _GUIDED_ACTIVATIONS)})
    if unguided:
        warnings.warn(f"{method} guides only the model's ReLU and ReLU6 modules; its {', '.join(unguided)} "
                      "activations pass the plain gradient, so the map is only partly guided", stacklevel=3)
    return [m.register_forward_hook(rule) for m in relus]


def deconvnet(model, images, targets=None, *, aggregate: str | None = "max_abs", raw: bool = False,
              batch_size: int | None = None):
    r"""DeConvNet.

    Zeiler & Fergus, "Visualizing and Understanding Convolutional Networks", ECCV 2014,
    Sec. 2.1: the signal goes back through each rectifier as :math:`R_l = \mathrm{ReLU}(R_{l+1})`,
    rectified itself and not masked by the forward activation (Springenberg et al. 2015, Fig. 1
    set it beside the gradient and guided backprop); the other layers pass the transposed
    filters, as the gradient does.  Each ``nn.ReLU``/``nn.ReLU6`` module is bypassed by a function
    with its forward and this backward (an in-place ReLU is computed out of place for the call and
    left as it was).  As captum's ``Deconvolution``, against which it is tested.

    Raises:
        ValueError: the model has no ReLU modules.
    Other arguments, returns and errors as :func:`gradient`.
    """
    module, _ = unwrap(model)
    _check_output(aggregate, raw)
    inplace = [(m, m.inplace) for m in module.modules() if isinstance(m, _GUIDED_ACTIVATIONS)]

    def rule(relu, inputs, _output):
        return _DeconvReLU.apply(inputs[0], 6.0 if isinstance(relu, nn.ReLU6) else None)

    handles = _rectified(module, rule, "deconvnet")
    try:
        for relu, _ in inplace:
            relu.inplace = False  # an in-place ReLU would overwrite the input the rule reads
        return gradient(model, images, targets, aggregate=aggregate, raw=raw, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()
        for relu, flag in inplace:
            relu.inplace = flag


def guided_gradcam(model, images, targets=None, *, layer: str = "last", aggregate: str | None = "max_abs",
                   raw: bool = False, batch_size: int | None = None):
    r"""Guided Grad-CAM.

    Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
    Localization", ICCV 2017, Sec. 3.1: Guided Backpropagation's attributions (B, 3, H, W)
    multiplied point-wise by the Grad-CAM map bilinearly up-sampled to the input,
    :math:`G \odot \mathrm{Up}(L^c_{\text{Grad-CAM}})`, then reduced over channels.  The Grad-CAM
    factor is the raw map (not normalised), as in captum's ``GuidedGradCam`` (tested with its
    ``interpolate_mode="bilinear"``; its default is nearest).

    Args:
        layer: Grad-CAM's layer.
    Other arguments, returns and errors as :func:`guided_backprop` and :func:`lib.saliency.gradcam`.
    """
    from .cam import gradcam

    check_images(images)
    _check_output(aggregate, raw)
    targets = resolve_targets(model, images, targets)
    cam = gradcam(model, images, targets, layer=layer, raw=True, batch_size=batch_size)
    guided = guided_backprop(model, images, targets, aggregate=None, raw=True, batch_size=batch_size)
    return _reduce(guided * upsample(cam, tuple(images.shape[-2:])).unsqueeze(1), images, aggregate, raw)


#: How :func:`fullgrad` rescales each term to [0, 1]: over the whole (C, h, w) tensor of an image
#: (the authors' code) or each channel's map alone (pytorch-grad-cam).
FULLGRAD_RESCALINGS = ("image", "channel")


def bias_layers(model) -> dict[str, torch.Tensor]:
    r"""FullGrad's bias layers: module name -> the bias :math:`b` added at its output, (K,).

    Every ``nn.Conv2d`` with a bias and every ``nn.BatchNorm2d``, whose bias in eval mode is
    :math:`\beta - \mu \gamma / \sqrt{\sigma^2 + \epsilon}` (Srinivas & Fleuret 2019, Sec. 3.1).
    Linear layers' biases are constants of the score, not maps, and are left out.
    """
    module, _ = unwrap(model)
    found = {}
    for name, layer in module.named_modules():
        if isinstance(layer, nn.Conv2d) and layer.bias is not None:
            found[name] = layer.bias.detach()
        elif isinstance(layer, nn.BatchNorm2d):
            if layer.running_mean is None or layer.running_var is None:
                raise ValueError(f"fullgrad: BatchNorm2d {name!r} has no running statistics, so its bias is undefined in eval mode")
            gamma = layer.weight.detach() if layer.weight is not None else torch.ones_like(layer.running_mean)
            beta = layer.bias.detach() if layer.bias is not None else torch.zeros_like(layer.running_mean)
            found[name] = beta - layer.running_mean * gamma / torch.sqrt(layer.running_var + layer.eps)
    return found


def fullgrad_terms(model, images, targets=None, *, batch_size: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""FullGrad's decomposition before post-processing (Srinivas & Fleuret 2019, Eq. 2):
    the input-gradient term :math:`\nabla_x f \odot x`, (B, 3, H, W), and for each bias layer
    (:func:`bias_layers`) the bias-gradient term :math:`\nabla_b f \odot b`, (B, K, h, w), one
    forward and one backward pass for all of them.  For a network of ReLUs, convolutions, batch
    norms in eval mode, average pooling and linear layers the terms sum to the score exactly,
    :math:`f(x) = \sum \nabla_x f \odot x + \sum_l \sum \nabla_{b_l} f \odot b_l` plus the linear layers'
    biases (completeness, their Eq. 2).
    """
    biases = bias_layers(model)
    passes = layer_passes(with_input(model), images, targets, [INPUT, *(f"network.{name}" for name in biases)],
                          batch_size=batch_size)
    inputs = passes[INPUT].activations * passes[INPUT].gradients
    terms = {name: passes[f"network.{name}"].gradients * bias.to(images)[None, :, None, None] for name, bias in biases.items()}
    return inputs, terms


def _rescale(terms: torch.Tensor, how: str) -> torch.Tensor:
    """|terms| rescaled to [0, 1] per image over (C, h, w), or per channel map (FullGrad's ψ)."""
    values = terms.abs()
    flat = values.flatten(1) if how == "image" else values.flatten(2)
    low, high = flat.amin(dim=-1, keepdim=True), flat.amax(dim=-1, keepdim=True)
    return ((flat - low) / (high - low).clamp_min(1e-12)).view_as(values)  # the reference code adds 1e-6 to the max


def fullgrad(model, images, targets=None, *, rescale: str = "image", raw: bool = False, batch_size: int | None = None):
    r"""FullGrad.

    Srinivas & Fleuret, "Full-Gradient Representation for Neural Network Visualization",
    NeurIPS 2019, Eq. 4: :math:`S(x) = \psi(\nabla_x f \odot x) + \sum_l \sum_{c} \psi(\nabla_{b_l} f \odot b_l)_c`,
    where :math:`\psi` takes the absolute value, rescales it to [0, 1] and bilinearly up-samples it
    to the input (:func:`fullgrad_terms` gives the terms, :func:`bias_layers` the layers).
    ``rescale="image"`` rescales each term over all its channels at once, as the authors' code
    does; ``"channel"`` rescales every channel's map alone before the sum over channels, as
    pytorch-grad-cam does (against which that setting is tested).  The sum over layers is the map.

    Args:
        rescale: one of :data:`FULLGRAD_RESCALINGS`.
    Other arguments, returns and errors as :func:`gradient`.

    Raises:
        ValueError: the model has no bias layer (no convolution with a bias, no batch norm).
    """
    check_images(images)
    check_flag(raw, "raw")
    check_choice(rescale, "rescale", FULLGRAD_RESCALINGS)
    inputs, terms = fullgrad_terms(model, images, targets, batch_size=batch_size)
    if not terms:
        raise ValueError("fullgrad needs bias layers (nn.Conv2d with a bias, or nn.BatchNorm2d); the model has none")
    size = tuple(images.shape[-2:])
    total = _rescale(inputs, rescale).sum(dim=1)
    for term in terms.values():
        total = total + F.interpolate(_rescale(term, rescale), size=size, mode="bilinear", align_corners=False).sum(dim=1)
    return finish(total, images, raw)
