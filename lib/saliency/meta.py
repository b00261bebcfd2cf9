r"""Meta-saliency: one inner SGD step on a copy of the model, then any saliency method.

Rebuffi, Fong, Ji & Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020, Sec. 4.4, Eqs. 4-6.  The saliency of the *meta* loss

.. math:: L(\theta, x) = \ell(\theta - \epsilon \nabla_\theta \ell(\theta, x), x)
          \approx \ell(\theta, x) - \epsilon \|\nabla_\theta \ell(\theta, x)\|^2  \quad (4, 5)

has gradient :math:`\nabla_\theta L \approx \nabla_\theta\ell - 2\epsilon
\nabla^2_\theta\ell\,\nabla_\theta\ell` (Eq. 6); a backward finite difference of step
:math:`h = 2\epsilon` for the Hessian-vector product makes two terms cancel, leaving
:math:`\nabla_\theta L \approx \nabla_{\theta'}\ell(\theta', x)` with
:math:`\theta' = \theta - 2\epsilon\nabla_\theta\ell(\theta, x)`: one SGD step of learning rate
:math:`2\epsilon` on the image's own cross-entropy loss for the explained class, after which
any saliency method is run on the updated network.  The *negative* variant (gradient ascent
on the loss, highlighting what degrades the prediction) uses
:math:`\theta' = \theta + 2\epsilon\nabla_\theta\ell`.

The step is taken per image (the paper's :math:`\ell(\theta, x)` is one image's loss; a
batch-mean step would couple the images of a batch) on one copy of the network made per
call, whose parameters are reset from the caller's before each image.  The caller's model
is never written to.  Batch-norm layers stay in eval mode: their affine parameters take the
step, their running statistics do not change.

Paper and code: the paper's sentence "We use a learning rate :math:`\epsilon = 0.001`" (Sec. 4.4)
names the same number both a learning rate and :math:`\epsilon`; we read it as
:math:`\epsilon = 10^{-3}` (learning rate :math:`2\epsilon = 2\cdot10^{-3}`), and the other
reading (learning rate :math:`10^{-3}`) is ``epsilon=5e-4``.  TorchRay's ``meta_saliency`` takes a
learning rate ``lr=1e-4`` by default and steps on the batch-mean cross-entropy.  Here
``epsilon`` is the paper's :math:`\epsilon`; pass ``epsilon=lr/2`` to match a given learning
rate.
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import check_images, prepared
from .passes import resolve_targets

__all__ = ["meta_saliency", "inner_step", "DIRECTIONS"]

DIRECTIONS = ("positive", "negative")


def _method(method) -> Callable:
    from . import resolve_method  # late import: the package imports this module before its registry

    return resolve_method(method)


def _with_module(model, module: nn.Module):
    """``model`` with its network replaced by ``module`` (a Classifier keeps its aliases)."""
    if isinstance(model, nn.Module):
        return module
    clone = copy.copy(model)
    clone.model = module
    return clone


@torch.no_grad()
def _reset(copy_module: nn.Module, source: nn.Module) -> None:
    for target, original in zip(copy_module.parameters(), source.parameters()):
        target.copy_(original)


def inner_step(copy_module: nn.Module, images: torch.Tensor, targets: torch.Tensor, epsilon: float, direction: str = "positive") -> None:
    r"""One SGD step of learning rate :math:`2\epsilon` on ``copy_module`` in place (Eq. 6).

    :math:`\theta \leftarrow \theta \mp 2\epsilon \nabla_\theta \ell(\theta, x)` with
    :math:`\ell` the cross-entropy of ``targets`` summed over the given images (pass one
    image for the paper's per-image step); ``-`` for ``positive``, ``+`` for ``negative``.

    Args:
        copy_module: a network in eval mode whose parameters may be overwritten.
        images: (B, 3, H, W) normalised images.
        targets: (B,) class indices.
        epsilon: the paper's :math:`\epsilon` (step = 2 epsilon).
        direction: ``positive`` (descent) or ``negative`` (ascent).
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown meta-saliency direction {direction!r}; accepted: {', '.join(DIRECTIONS)}")
    params = [p for p in copy_module.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    try:
        with torch.enable_grad():
            loss = F.cross_entropy(copy_module(images), targets, reduction="sum")
            grads = torch.autograd.grad(loss, params, allow_unused=True)
    finally:
        for p in params:
            p.requires_grad_(False)
    sign = -1.0 if direction == "positive" else 1.0
    with torch.no_grad():
        for p, g in zip(params, grads):
            if g is not None:
                p.add_(g, alpha=sign * 2.0 * epsilon)


def meta_saliency(
    model,
    images,
    targets=None,
    *,
    method: str | Callable = "selective_normgrad",
    epsilon: float = 1e-3,
    direction: str = "positive",
    raw: bool = False,
    **method_kwargs,
):
    r"""Meta-saliency (Rebuffi et al. 2020, Sec. 4.4, Eqs. 4-6) of any saliency method.

    For each image, one SGD step of learning rate :math:`2\epsilon` on its cross-entropy loss
    for its target class (descent for ``positive``, ascent for ``negative``) is applied to a
    copy of the network, then ``method`` computes the map on the updated copy for the same
    target.  ``epsilon=0`` gives the base method's map exactly.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``; never modified.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the class the *original* model
            predicts.
        method: a name in ``lib.saliency.METHODS`` or a function with the calling convention.
        epsilon: the paper's :math:`\epsilon` (1e-3, Sec. 4.4); the learning rate is 2 epsilon.
        direction: ``positive`` or ``negative``.
        raw: passed to the method; with ``raw=False`` the maps are (B, H, W) in [0, 1].
        method_kwargs: further keyword arguments of the method (``layer=``, ...).

    Returns:
        The method's maps, one image at a time, concatenated: (B, H, W) (a method that returns
        a dict of maps, like :func:`lib.saliency.extract_and_aggregate.framework_maps`, gives the same dict
        with each entry concatenated).

    Raises:
        ValueError: unknown method or direction, negative epsilon, bad images or targets.
    """
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown meta-saliency direction {direction!r}; accepted: {', '.join(DIRECTIONS)}")
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    function = _method(method)
    check_images(images)
    chosen = resolve_targets(model, images, targets)
    maps = []
    with prepared(model) as frozen:
        clone = copy.deepcopy(frozen)  # eval mode, parameters frozen: the state the step needs
        stepped = _with_module(model, clone)
        for b in range(images.shape[0]):
            _reset(clone, frozen)
            inner_step(clone, images[b : b + 1], chosen[b : b + 1], epsilon, direction)
            maps.append(function(stepped, images[b : b + 1], chosen[b : b + 1], raw=raw, **method_kwargs))
    return _concat(maps)


def _concat(parts: list):
    """Concatenate per-image results: tensors, or (nested) dicts of tensors leaf by leaf."""
    if isinstance(parts[0], dict):
        return {key: _concat([p[key] for p in parts]) for key in parts[0]}
    return torch.cat(parts)
