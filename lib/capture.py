"""Activations and gradients at named layers, with every hook removed on any exit.

Two context managers carry every method in :mod:`lib.saliency`:

* :func:`prepared` puts a model into the state a saliency method needs (eval mode,
  parameters frozen) and gives it back exactly as it came (each module's ``training``
  flag and each parameter's ``requires_grad``), whatever happens inside.
* :func:`capture` records the output of named modules during a forward pass.  The
  recorded tensor is the one in the autograd graph, so the gradient of a score with
  respect to a layer is ``torch.autograd.grad(score, cap.activations[name])``: the
  backward pass then stops at that layer and no parameter gradient is computed.

In-place operations after a captured layer (``nn.ReLU(inplace=True)`` in torchvision's
VGG and ResNet) would overwrite the recorded activation and re-route its gradient.  The
forward hook therefore hands the rest of the network a copy of the output; the recorded
tensor keeps the layer's true values and receives the true gradient.
"""

from __future__ import annotations

import difflib
import functools
import itertools
import warnings
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterable, Iterator

import numpy as np
import torch
from torch import nn

__all__ = ["Capture", "capture", "prepared", "unwrap", "resolve_layer", "layer_name", "check_model_input", "check_images", "check_targets", "least_likely_labels"]


def unwrap(model) -> tuple[nn.Module, dict[str, str]]:
    """Return ``(module, aliases)`` for a :class:`lib.models.Classifier` or a plain module."""
    if isinstance(model, nn.Module):
        return model, {}
    module = getattr(model, "model", None)
    if not isinstance(module, nn.Module):
        raise TypeError(f"expected an nn.Module or a lib.models.Classifier, got {type(model).__name__}")
    return module, dict(getattr(model, "layers", {}))


def resolve_layer(model, layer: str | nn.Module) -> tuple[str, nn.Module]:
    """Find a layer by alias (``"last"``), module name (``"blocks.3"``) or the module itself.

    Raises:
        ValueError: the name is unknown (the message lists the closest existing names), or
            the module is not one of the model's.
        TypeError: ``layer`` is neither a string nor an ``nn.Module``.
    """
    module, aliases = unwrap(model)
    named = dict(module.named_modules())
    if isinstance(layer, nn.Module):
        for name, candidate in named.items():
            if candidate is layer and name:
                return name, candidate
        raise ValueError(f"the given layer module {type(layer).__name__} is not part of the model (or is the whole "
                         "model); give one of its submodules, or a layer name")
    if not isinstance(layer, str):
        raise TypeError(f"layer must be a layer name (an alias such as 'last', or a module name such as 'blocks.3') "
                        f"or a submodule of the model, got {type(layer).__name__} {layer!r}")
    name = aliases.get(layer, layer)
    if name in named and name != "":
        return name, named[name]
    choices = list(aliases) + [n for n in named if n]
    close = difflib.get_close_matches(str(layer), choices, n=6, cutoff=0.4)
    hint = ", ".join(close) if close else ", ".join(choices[:12]) + ", ..."
    raise ValueError(f"unknown layer {layer!r}; closest names: {hint}")


def layer_name(model, layer: str | nn.Module) -> str:
    """The name under which ``layer`` is recorded: a string as given (after checking it
    resolves), a submodule by its module name.  Raises as :func:`resolve_layer`."""
    name, _ = resolve_layer(model, layer)
    return layer if isinstance(layer, str) else name


def check_images(images) -> torch.Tensor:
    """Images must be a non-empty float tensor (B, 3, H, W) of finite values."""
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"images must be a torch.Tensor (B, 3, H, W), got {type(images).__name__}")
    if images.dim() != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W); got {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch (B = 0); pass at least one image")
    if images.shape[2] == 0 or images.shape[3] == 0:
        raise ValueError(f"images have no pixels (H x W = {images.shape[2]} x {images.shape[3]}); pass images of at least 1 x 1")
    if not images.is_floating_point():
        raise TypeError(f"images must be a floating-point tensor normalised for the model, got dtype {images.dtype}")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")
    return images


def check_targets(targets, logits: torch.Tensor, categories=None) -> torch.Tensor:
    """Targets: None (the predicted class), an int, or an int tensor (B,) in [0, classes).

    A target whose logit is ``-inf`` is refused: that is how a pooled label space marks a
    category with no ImageNet member (``lib.models.load(..., labels="coco")``), which has no
    score to explain.  ``categories`` (output names) only makes the message name it.
    """
    _check_logits(logits, "check_targets")
    batch, classes = logits.shape
    if targets is None:
        if torch.isnan(logits.detach()).any():
            raise ValueError("check_targets: the logits have NaN values, so the predicted class is undefined")
        predicted = logits.argmax(dim=1)
        if torch.isneginf(logits.detach().gather(1, predicted.view(-1, 1))).any():
            raise ValueError("check_targets: an image has no scored category (every logit is -inf, every category "
                             "unmapped), so there is no predicted class to explain")
        return predicted
    if isinstance(targets, (bool, np.bool_)) or isinstance(targets, (str, bytes)):
        raise TypeError(f"targets must be integer class indices, got {targets!r}")
    if isinstance(targets, (int, np.integer)):
        if not -(2**63) <= int(targets) < 2**63:
            raise ValueError(f"target {int(targets)} is outside [0, {classes}) for this model")
        targets = torch.full((batch,), int(targets), dtype=torch.long)
    try:
        targets = torch.as_tensor(targets, device=logits.device)
    except (TypeError, ValueError, RuntimeError, OverflowError) as error:
        raise TypeError(f"targets must be integer class indices (an int, or one per image), got "
                        f"{type(targets).__name__} {targets!r} ({error})") from None
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise TypeError(f"targets must be integer class indices, got dtype {targets.dtype}")
    if targets.dim() == 0:  # one class for every image
        targets = targets.expand(batch)
    targets = targets.long().reshape(-1)
    if targets.numel() != batch:
        raise ValueError(f"targets must have one class index per image: got {targets.numel()} for a batch of {batch}")
    bad = (targets < 0) | (targets >= classes)
    if bad.any():
        raise ValueError(f"target {targets[bad][0].item()} is outside [0, {classes}) for this model")
    unscored = torch.isneginf(logits.detach().gather(1, targets.view(-1, 1))).squeeze(1)
    if unscored.any():
        target = targets[unscored][0].item()
        named = f" ({categories[target]!r})" if categories is not None and target < len(categories) else ""
        raise ValueError(
            f"target {target}{named} is an unmapped category: no ImageNet class pools into it, so its logit is -inf "
            "and there is no score to explain; choose a target among the classifier's mapped categories"
        )
    return targets


def least_likely_labels(logits: torch.Tensor) -> torch.Tensor:
    """(B,) the least-likely scored class of each row of (B, classes) logits.

    A ``-inf`` logit marks a category with no score (an unmapped category of a pooled label
    space, see :func:`check_targets`); it is not a candidate, so the least likely class is the
    lowest finite logit.
    """
    _check_logits(logits, "least_likely_labels")
    scores = logits.detach()
    scores = scores if scores.is_floating_point() else scores.to(torch.float64)
    if torch.isnan(scores).any():
        raise ValueError("least_likely_labels: the logits have NaN values, so the least likely class is undefined")
    unscored = torch.isneginf(scores)
    if unscored.all(dim=1).any():
        raise ValueError("least_likely_labels: an image has no scored category (every logit is -inf, every category "
                         "unmapped)")
    return scores.masked_fill(unscored, float("inf")).argmin(dim=1)


def _check_logits(logits, what: str) -> None:
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        got = f"a tensor of shape {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{what}: logits must be a (B, classes) tensor, got {got}")


@contextmanager
def prepared(model, *, eval_mode: bool = True, freeze: bool = True) -> Iterator[nn.Module]:
    """Put a model in eval mode with frozen parameters; restore it exactly on exit.

    A model given in training mode is switched to eval mode for the computation (with a
    warning, since dropout and batch statistics would make the map random) and switched
    back afterwards.

    Inside the block every forward pass of the module first checks its input against the
    model (:func:`check_model_input`: dtype and device) and hands the network a copy of it,
    so a model whose first operation works in place (``x.sub_(mean)``) cannot change the
    caller's images.

    Yields:
        The ``nn.Module`` (unwrapped from a ``Classifier``).
    """
    module, _ = unwrap(model)
    modes = [(m, m.training) for m in module.modules()]
    grads = [(p, p.requires_grad) for p in module.parameters()]
    if eval_mode and module.training:
        warnings.warn(
            "the model is in training mode; the saliency map is computed in eval mode and the mode is restored afterwards",
            stacklevel=3,
        )
    reference = next((t for t in itertools.chain(module.parameters(), module.buffers()) if t.is_floating_point()), None)

    def guard(_module, inputs):
        if inputs and isinstance(inputs[0], torch.Tensor):
            check_model_input(inputs[0], reference)
            return (inputs[0].clone(), *inputs[1:])
        return None

    handle = module.register_forward_pre_hook(guard)
    try:
        if eval_mode:
            module.eval()
        if freeze:
            module.requires_grad_(False)
        yield module
    finally:
        handle.remove()
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def check_model_input(images: torch.Tensor, reference: torch.Tensor | None) -> None:
    """Images must have the dtype and device of the model's floating-point weights (``reference``).

    Raises:
        TypeError: a floating-point dtype other than the model's.
        ValueError: a device other than the model's.
    """
    if reference is None:
        return
    if images.device != reference.device:
        raise ValueError(f"images are on {images.device} but the model is on {reference.device}; "
                         f"move them with images.to({str(reference.device)!r})")
    if reference.is_floating_point() and images.is_floating_point() and images.dtype != reference.dtype:
        raise TypeError(f"images are {images.dtype} but the model's weights are {reference.dtype}; "
                        f"convert them with images.to({reference.dtype})")


class _CopyForward(torch.autograd.Function):
    """Identity whose output is a fresh tensor, so in-place ops downstream cannot touch the input."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad


@dataclass
class Capture:
    """What :func:`capture` recorded during the last forward pass.

    Attributes:
        activations: layer name -> output tensor (in the autograd graph).
        gradients: layer name -> gradient of whatever was back-propagated through it
            (filled by tensor hooks during ``backward`` or ``autograd.grad``).
        names: the requested layer names, as given, mapped to module names.
    """

    names: dict[str, str]
    activations: dict[str, torch.Tensor] = field(default_factory=dict)
    gradients: dict[str, torch.Tensor] = field(default_factory=dict)
    calls: dict[str, int] = field(default_factory=dict, repr=False)  # uses of each layer in the running forward pass
    running: bool = field(default=False, repr=False)  # a forward pass of the whole model is under way

    def __getitem__(self, layer: str) -> torch.Tensor:
        """The recorded output of ``layer``.

        Raises:
            ValueError: the layer did not run in the forward pass (no output was recorded).
        """
        name = self.names.get(layer, layer)
        if name not in self.activations:
            raise ValueError(f"layer {layer!r} did not run in the forward pass, so it has no activations; "
                             "choose a layer that the model's forward uses")
        return self.activations[name]

    def gradient(self, layer: str) -> torch.Tensor:
        return self.gradients[self.names.get(layer, layer)]


def _store_gradient(record: "weakref.ref[Capture]", name: str, grad: torch.Tensor) -> None:
    """Tensor hook: keep ``grad`` in the record, if it is still alive.

    The hook lives on the captured tensor's ``grad_fn``, which the record holds through that
    tensor; a strong reference back to the record would make a cycle through autograd's C++
    nodes that the garbage collector cannot see, and every capture's activations would stay
    alive.
    """
    alive = record()
    if alive is not None:
        alive.gradients[name] = grad


@contextmanager
def capture(model, layers: Iterable[str | nn.Module] | str, *, gradients: bool = True) -> Iterator[Capture]:
    """Record the outputs (and, with ``gradients``, their gradients) of named layers.

    Args:
        model: a ``Classifier`` or ``nn.Module``.
        layers: one name/alias or several.
        gradients: also record gradients flowing back through those outputs.

    Yields:
        A :class:`Capture`; its tensors are overwritten by each forward pass inside the
        block.  All hooks are removed when the block exits, exceptions included.

    Raises:
        ValueError: an unknown layer; during a forward pass of the model, a captured layer
            that runs more than once (its record would explain only its last use).
        TypeError: a layer that is neither a name nor a submodule, or whose output is not a tensor.
    """
    if isinstance(layers, (str, nn.Module)):
        layers = [layers]
    resolved = {}
    for layer in layers:
        name, module = resolve_layer(model, layer)
        resolved[layer if isinstance(layer, str) else name] = (name, module)
    record = Capture(names={k: v[0] for k, v in resolved.items()})
    handles = []

    def make_hook(name: str):
        def hook(_module, _inputs, output):
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"layer {name!r} returns {type(output).__name__}; only tensor outputs can be captured")
            if record.running:
                record.calls[name] = record.calls.get(name, 0) + 1
                if record.calls[name] > 1:
                    raise ValueError(
                        f"layer {name!r} runs {record.calls[name]} times in one forward pass (one module used at several "
                        "places, like the ReLU of torchvision's BasicBlock); its record would hold only its last use. "
                        "Choose a layer that runs once, such as the block that contains it")
            if not gradients:
                # A copy for the rest of the network: an in-place op downstream (ReLU(inplace=True),
                # a residual +=) would otherwise overwrite the recorded output.
                record.activations[name] = output
                return output.clone()
            if not output.requires_grad:
                # Nothing before this layer needs a gradient: make its output a leaf so the
                # backward pass stops here.
                output = output.detach().requires_grad_(True)
            record.activations[name] = output
            output.register_hook(functools.partial(_store_gradient, weakref.ref(record), name))
            return _CopyForward.apply(output)

        return hook

    def start(_module, _inputs):
        record.calls.clear()
        record.running = True

    def stop(_module, _inputs, _output):
        record.running = False

    try:
        root, _ = unwrap(model)
        handles.append(root.register_forward_pre_hook(start))
        handles.append(root.register_forward_hook(stop))
        seen = set()
        for name, module in resolved.values():
            if name not in seen:
                seen.add(name)
                handles.append(module.register_forward_hook(make_hook(name)))
        yield record
    finally:
        for handle in handles:
            handle.remove()
