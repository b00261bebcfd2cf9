r"""Excitation Backprop and its contrastive variant (Zhang et al., ECCV 2016; IJCV 2018).

Excitation Backprop sends a probability down the network instead of a gradient: the
Marginal Winning Probability of a neuron :math:`a_j` is the share of the winning
probabilities of the neurons above it that its excitation earns,

.. math:: P(a_j) = \sum_i P(a_i)\, \frac{a_j w^+_{ji}}{\sum_{j'} a_{j'} w^+_{j'i}}

(Zhang et al. 2018, Sec. 3, with :math:`w^+` the positive part of the weights and no bias).
Starting from a one-hot probability at the target's logit, this rule replaces the gradient
of every convolution and linear layer, and of average pooling (uniform positive weights);
batch normalisation passes the signal unchanged and the ReLUs keep their gradient (the
winner-take-all of max pooling is the gradient too).  These are TorchRay's rules, against
which the module is tested; residual sums written as ``a + b`` in a model's ``forward``
pass the signal to both branches unchanged, as in TorchRay for any model it has not
rewritten (its ``eltwise_sum`` splits it in proportion to the summands).

Each rule is a forward hook on the module that routes its output through an autograd
function whose backward is the rule, so one :func:`lib.saliency.passes.layer_pass` computes
the probability at any layer; every hook is removed on exit and the model is not changed.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from ..capture import check_images, layer_name, prepared, resolve_layer, unwrap
from .passes import (auto_batch_size, check_batch_size, check_feature_map, check_flag, chunks, finish, layer_pass, layer_passes,
                     resolve_targets)

__all__ = ["excitation_backprop", "contrastive_excitation_backprop", "excitation_maps", "excitation_rules", "classifier_layer"]

#: Guard of the rule's division (TorchRay's value): a unit with no positive excitation passes nothing.
EXCITATION_EPS = 1e-20

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_POOLS = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _positive_twin(module: nn.Module, negate: bool) -> nn.Module:
    """A copy of a convolution or linear layer with :math:`w^+` (of :math:`-w` with ``negate``) and
    no bias, and without hooks: the :math:`f^+` of the rule, run inside the backward pass."""
    twin = copy.deepcopy(module)
    for hooks in (twin._forward_hooks, twin._forward_pre_hooks, twin._backward_hooks, twin._backward_pre_hooks):
        hooks.clear()
    weight = module.weight.detach()
    twin.weight = nn.Parameter((-weight if negate else weight).clamp(min=0), requires_grad=False)
    if getattr(module, "bias", None) is not None:
        twin.bias = nn.Parameter(torch.zeros_like(module.bias), requires_grad=False)
    return twin


class _WinningProbability(torch.autograd.Function):
    r"""Forward: the module's output as it was.  Backward: the rule of Sec. 3 through the module,
    :math:`P_{in} = x \odot f^{+\top}(P_{out} / f^+(x))` with :math:`f^+` the module without
    bias and with positive weights (average pooling as it is), run through its ``forward``
    (no hook fires inside the backward pass)."""

    @staticmethod
    def forward(ctx, x, output, positive):
        ctx.save_for_backward(x)
        ctx.positive = positive
        return output.clone()

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        with torch.enable_grad():
            inputs = x.detach().requires_grad_(True)
            excitation = ctx.positive.forward(inputs)
            (share,) = torch.autograd.grad(excitation, inputs, grad / (excitation + EXCITATION_EPS))
        return inputs.detach() * share, None, None


class _PassThrough(torch.autograd.Function):
    """Forward: the module's output.  Backward: the signal unchanged (batch normalisation's rule)."""

    @staticmethod
    def forward(ctx, x, output):
        return output.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad, None


def classifier_layer(model) -> str:
    """The name of the model's last convolution or linear layer (the one whose weights the
    contrastive variant negates), as TorchRay finds it.

    Raises:
        ValueError: the model has no convolution or linear layer.
    """
    module, _ = unwrap(model)
    found = [name for name, layer in module.named_modules() if name and isinstance(layer, _WEIGHTED)]
    if not found:
        raise ValueError("excitation backprop needs convolution or linear layers; the model has none")
    return found[-1]


@contextmanager
def excitation_rules(model, *, negate: str | None = None) -> Iterator[None]:
    """Inside the block, every backward pass through ``model`` follows Excitation Backprop's rules.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        negate: the name of a layer whose weights enter the rule negated (the contrastive
            variant's dual of the classifier), or None.

    Raises:
        ValueError: ``negate`` is not a convolution or linear layer of the model.
    """
    module, _ = unwrap(model)
    negated = resolve_layer(model, negate)[1] if negate is not None else None
    if negated is not None and not isinstance(negated, _WEIGHTED):
        raise ValueError(f"the layer to negate, {negate!r}, is a {type(negated).__name__}; give a convolution or linear layer")
    handles = []
    try:
        for layer in module.modules():
            if isinstance(layer, _WEIGHTED + _POOLS):
                positive = _positive_twin(layer, layer is negated) if isinstance(layer, _WEIGHTED) else layer
                handles.append(layer.register_forward_hook(
                    lambda _m, inputs, output, positive=positive: _WinningProbability.apply(inputs[0], output.detach(), positive)))
            elif isinstance(layer, _NORMS):
                handles.append(layer.register_forward_hook(
                    lambda m, inputs, output: _PassThrough.apply(inputs[0], output.detach())))
        yield
    finally:
        for handle in handles:
            handle.remove()


def _signal(model, images, targets, layer: str, method: str) -> torch.Tensor:
    """The winning probability at ``layer``'s output, (B, K, h, w), under the rules already in force."""
    record = layer_pass(model, images, targets, layer)
    return check_feature_map(record.gradients, layer, method)


def excitation_backprop(model, images, targets=None, *, layer: str = "last", raw: bool = False,
                        batch_size: int | str | None = None):
    r"""Excitation Backprop (Marginal Winning Probability).

    Zhang, Bargal, Lin, Brandt, Shen & Sclaroff, "Top-down Neural Attention by Excitation
    Backprop", IJCV 2018 (ECCV 2016), Sec. 3 (module docstring): the winning probability
    of the target, one-hot at its logit, sent down to ``layer`` and summed over its channels,
    as TorchRay's ``excitation_backprop``.

    Args:
        layer: where the probability is read (the paper reads it at intermediate layers such as
            GoogLeNet's pool2 and inception 4a-4e; default the last feature map).
        batch_size: images per pass (None: all; ``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).
    Other arguments, returns and errors as :func:`lib.saliency.gradcam`.
    """
    check_images(images)
    check_flag(raw, "raw")
    layer = layer_name(model, layer)
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    chosen = resolve_targets(model, images, targets)
    maps = []
    with prepared(model), excitation_rules(model):
        for piece in chunks(images.shape[0], batch_size):
            maps.append(_signal(model, images[piece], chosen[piece], layer, "excitation_backprop").sum(dim=1))
    return finish(torch.cat(maps), images, raw)


def contrastive_excitation_backprop(model, images, targets=None, *, layer: str = "last", contrast_layer: str | None = None,
                                    raw: bool = False, batch_size: int | str | None = None):
    r"""Contrastive Excitation Backprop (c-MWP).

    Zhang et al., IJCV 2018, Sec. 3 (contrastive top-down attention): the winning probability of the target minus that of its
    dual, the unit whose classifier weights are negated (:func:`classifier_layer`), so that what
    the other classes share cancels.  Both are sent from the top to ``contrast_layer``; their
    difference then goes on down to ``layer``, where its sum over channels, clipped at zero, is
    the map, as TorchRay's ``contrastive_excitation_backprop``.

    Args:
        layer: where the map is read; at ``contrast_layer`` or below it.
        contrast_layer: where the two signals are subtracted (TorchRay's examples: the last
            pooling of VGG16); None: at ``layer`` itself, the difference of the two signals there.
        batch_size: images per pass (None: all; ``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).
    Other arguments, returns and errors as :func:`lib.saliency.gradcam`.
    """
    check_images(images)
    check_flag(raw, "raw")
    layer = layer_name(model, layer)
    try:
        contrast_layer = layer if contrast_layer is None else layer_name(model, contrast_layer)
    except (TypeError, ValueError) as error:
        raise type(error)(f"contrast_layer: {error}") from None
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    chosen = resolve_targets(model, images, targets)
    top = classifier_layer(model)
    _, contrast_module = resolve_layer(model, contrast_layer)
    maps = []
    with prepared(model):
        for piece in chunks(images.shape[0], batch_size):
            x, t = images[piece], chosen[piece]
            with excitation_rules(model, negate=top):
                dual = _signal(model, x, t, contrast_layer, "contrastive_excitation_backprop")
            with excitation_rules(model):
                if layer == contrast_layer:
                    target = _signal(model, x, t, layer, "contrastive_excitation_backprop")
                    signal, scale = target - dual, target.abs() + dual.abs()
                else:
                    signal = _below_the_contrast(model, x, t, layer, contrast_module, dual)
                    scale = signal.abs()
            maps.append(_sum_above_rounding(signal, scale).clamp(min=0))
    return finish(torch.cat(maps), images, raw)


def _sum_above_rounding(signal: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The channel sum of a difference of two probability signals, (B, h, w), with 0 where it lies within the
    rounding error of summing its terms (K eps times the sum of their magnitudes).

    The two signals each carry the whole probability, so where they agree the exact difference is 0 and the
    computed one is rounding noise that min-max normalisation would stretch to a full map.
    """
    total = signal.sum(dim=1)
    tolerance = signal.shape[1] * torch.finfo(signal.dtype).eps * scale.sum(dim=1)
    return torch.where(total.abs() > tolerance, total, torch.zeros_like(total))


def _below_the_contrast(model, images, targets, layer: str, contrast_module: nn.Module, dual: torch.Tensor) -> torch.Tensor:
    """The signal at ``layer`` when the dual's is subtracted on the way down, at ``contrast_module``'s output.

    Raises:
        ValueError: the backward pass to ``layer`` does not go through the contrast layer (it lies above ``layer``).
    """
    subtracted = []

    def subtract(_module, _inputs, output):
        if output.requires_grad:
            output.register_hook(lambda grad: subtracted.append(True) or grad - dual)

    handle = contrast_module.register_forward_hook(subtract)  # after the rules' hooks: on the output passed on
    try:
        signal = _signal(model, images, targets, layer, "contrastive_excitation_backprop")
    finally:
        handle.remove()
    if not subtracted:
        raise ValueError(f"contrastive_excitation_backprop: layer {layer!r} must lie below contrast_layer (the signal "
                         "reaches it without passing the contrast layer); choose an earlier layer or a later contrast layer")
    return signal


def excitation_maps(model, images, targets=None, layers=("last",), *, contrastive: bool = False,
                    batch_size: int | str | None = None) -> dict[str, torch.Tensor]:
    """Excitation Backprop, or its contrastive variant with the contrast at each layer itself, at several
    layers from one pass per chunk of images (two for the contrastive variant): the raw (B, h, w) map of each.

    The winning probability at every layer comes out of the same backward pass under the rules, so
    each map equals :func:`excitation_backprop` (or :func:`contrastive_excitation_backprop` with
    ``contrast_layer=None``) at that layer with ``raw=True`` (tested); this is what
    :func:`lib.saliency.combine.depth_maps` uses for both.

    Args:
        model: a ``lib.models.Classifier``, an ``nn.Module`` or ``with_input`` of one.
        layers: layer aliases or module names.
        contrastive: the contrastive variant.
        batch_size: images per pass (None: all; ``"auto"``: :func:`lib.saliency.passes.auto_batch_size`).

    Returns:
        ``{layer: (B, h, w)}`` in the order of ``layers``.

    Raises:
        As :func:`excitation_backprop`, for every layer.
    """
    check_images(images)
    check_flag(contrastive, "contrastive")
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers:
        raise TypeError(f"layers must be a layer or a non-empty list of layers (names, aliases or submodules), got {layers!r}")
    names = list(dict.fromkeys(layer_name(model, layer) for layer in layers))
    batch_size = check_batch_size(auto_batch_size(batch_size, images))
    chosen = resolve_targets(model, images, targets)
    method = "contrastive_excitation_backprop" if contrastive else "excitation_backprop"
    top = classifier_layer(model) if contrastive else None
    parts: dict[str, list[torch.Tensor]] = {}
    with prepared(model):
        for piece in chunks(images.shape[0], batch_size):
            x, t = images[piece], chosen[piece]
            with excitation_rules(model):
                signals = layer_passes(model, x, t, names)
            if contrastive:
                with excitation_rules(model, negate=top):
                    duals = layer_passes(model, x, t, names)
            for name in names:
                signal = check_feature_map(signals[name].gradients, name, method)
                if contrastive:
                    dual = duals[name].gradients
                    value = _sum_above_rounding(signal - dual, signal.abs() + dual.abs()).clamp(min=0)
                else:
                    value = signal.sum(dim=1)
                parts.setdefault(name, []).append(value)
    return {name: torch.cat(parts[name]) for name in names}
