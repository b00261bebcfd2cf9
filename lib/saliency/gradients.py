"""Input-gradient methods: Gradient, SmoothGrad, Integrated Gradients, Guided Backprop.

All four differentiate the target class's logit with respect to the input pixels and
reduce the (B, 3, H, W) attribution over colour channels (``aggregate``).  With
``aggregate=None`` and ``raw=True`` they return the signed attributions themselves.  The
gradient is that of the one layer pass (:func:`lib.saliency.passes.layer_passes`) at the
network input, ``with_input(model)``'s layer ``INPUT``.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from ..capture import check_images, prepared, unwrap
from .passes import (AUTO, INPUT, aggregate_channels, auto_batch_size, check_batch_size, check_choice, check_count, check_flag,
                     check_randomness, check_real, chunks, finish, layer_pass, resolve_targets, with_input)

__all__ = ["gradient", "smoothgrad", "integrated_gradients", "guided_backprop"]


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
    Other arguments, returns and errors as :func:`gradient`; also ValueError for ``n_samples < 1``
    or a ``noise_level`` that is negative, NaN or infinite.
    """
    check_images(images)
    _check_output(aggregate, raw)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    n_samples = check_count(n_samples, "n_samples")
    noise_level = check_real(noise_level, "noise_level", low=0.0)
    check_randomness(seed, generator, images.device)
    targets = resolve_targets(model, images, targets)
    total = torch.zeros_like(images)
    with prepared(model) as module:  # once: each pass below finds it prepared
        tapped = with_input(module)
        for b in range(images.shape[0]):
            rng = check_randomness(seed, generator, images.device)  # with a seed: the same draws for every image
            noise = torch.randn((n_samples, *images.shape[1:]), generator=rng, device=images.device, dtype=images.dtype)
            sigma = noise_level * (images[b].max() - images[b].min())
            for piece in chunks(n_samples, batch_size):
                noisy = images[b : b + 1] + sigma * noise[piece]
                total[b] += _input_gradients(tapped, noisy, targets[b].expand(noisy.shape[0])).sum(dim=0)
    return _reduce(total / n_samples, images, aggregate, raw)


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
):
    r"""Integrated Gradients with the trapezoidal rule.

    Sundararajan, Taly & Yan, "Axiomatic Attribution for Deep Networks", ICML 2017,
    Eq. 1: :math:`IG_i(x) = (x_i - x'_i) \int_0^1 \partial S_t(x' + \alpha (x - x')) / \partial x_i \, d\alpha`,
    approximated on ``steps`` equally spaced points of [0, 1] with trapezoid weights
    (exact for a linear model).  Completeness, :math:`\sum_i IG_i = S_t(x) - S_t(x')`,
    holds up to the quadrature error (``tests/test_parity.py`` checks 1% at 64 steps).

    Args:
        baseline: x', a float (filled everywhere) or a tensor broadcastable to the
            images, in the model's input space.  The default 0 is the normalised mean
            colour (mid-grey for EfficientNet-Lite).
        steps: quadrature points (>= 2).
        aggregate: channel reduction; ``sum_abs`` (default, as the paper's figures sum
            over colour channels) or ``sum`` to keep completeness in the map.
        batch_size: interpolated images per pass (``"auto"``: a chunk that suits the device, see ``lib.saliency.passes.auto_batch_size``; None: all at once).
    Other arguments, returns and errors as :func:`gradient`; also ValueError for ``steps < 2`` or a
    baseline that is not finite or does not broadcast to the images.
    """
    check_images(images)
    _check_output(aggregate, raw)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    steps = check_count(steps, "steps (the trapezoidal rule's points)", 2)
    reference = _baseline(baseline, images)
    targets = resolve_targets(model, images, targets)
    alphas = torch.linspace(0.0, 1.0, steps, device=images.device, dtype=images.dtype)
    weights = torch.full_like(alphas, 1.0 / (steps - 1))
    weights[0] = weights[-1] = 0.5 / (steps - 1)
    image_index = torch.arange(images.shape[0], device=images.device).repeat_interleave(steps)
    step_index = torch.arange(steps, device=images.device).repeat(images.shape[0])
    total = torch.zeros_like(images)
    with prepared(model) as module:  # once: each pass below finds it prepared
        tapped = with_input(module)
        for piece in chunks(image_index.numel(), batch_size):
            i, k = image_index[piece], step_index[piece]
            a = alphas[k].view(-1, 1, 1, 1)
            points = reference[i] + a * (images[i] - reference[i])
            grads = _input_gradients(tapped, points, targets[i])
            total.index_add_(0, i, grads * weights[k].view(-1, 1, 1, 1))
    return _reduce((images - reference) * total, images, aggregate, raw)


def _baseline(baseline, images: torch.Tensor) -> torch.Tensor:
    """IG's x' broadcast to the images.

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
    relus = [m for m in module.modules() if isinstance(m, _GUIDED_ACTIVATIONS)]
    if not relus:
        raise ValueError("guided_backprop needs nn.ReLU or nn.ReLU6 modules in the model; functional activations cannot be guided")
    unguided = sorted({type(m).__name__ for m in module.modules()  # ReLU6 is a Hardtanh: guided, not other
                       if isinstance(m, _OTHER_ACTIVATIONS) and not isinstance(m, _GUIDED_ACTIVATIONS)})
    if unguided:
        warnings.warn(f"guided_backprop guides only the model's ReLU and ReLU6 modules; its {', '.join(unguided)} "
                      "activations pass the plain gradient, so the map is only partly guided", stacklevel=2)
    handles = [m.register_forward_hook(lambda _m, _i, out: _PositiveGradient.apply(out)) for m in relus]
    try:
        return gradient(model, images, targets, aggregate=aggregate, raw=raw, batch_size=batch_size)
    finally:
        for handle in handles:
            handle.remove()
