r"""Extract & Aggregate: NormGrad, selective NormGrad, linear approximation, virtual identity layers.

Rebuffi, Fong, Ji & Vedaldi, "There and Back Again: Revisiting Backpropagation Saliency
Methods", CVPR 2020, Sec. 3 (Algorithm 1, Tables 1-2, Eqs. 1-3).

A saliency map is read off the gradient of spatially shared weights.  That gradient is a
sum over spatial locations :math:`u` (Eqs. 2-3),

.. math:: \frac{dL}{d\mathbf W} = \sum_u g^{out}_u\, x^{in\;\top}_{u,N\times N}, \qquad
          \frac{dL}{d b} = \sum_u g^{out}_u, \qquad
          \frac{dL}{d \alpha} = \sum_u g^{out}_u \odot x^{in}_u,

so the method **extracts** the summand at each location (Table 1: a vector :math:`K'`
for a bias or scaling layer, a :math:`K' \times N^2K` matrix for an :math:`N\times N`
convolution) and **aggregates** it into one number (sum, max, norm, positive filter +
norm).  A *virtual identity layer* (Sec. 3.1.2) is a bias, scaling or convolution layer
set to the identity and imagined at any location, after a ReLU included; it changes
nothing in the network, its input is the location's activation :math:`x` and its output
gradient the gradient :math:`g` there, so its summands are :math:`g` (bias),
:math:`g \odot x` (scaling), :math:`g x^\top` (1x1 conv), :math:`g x_{3\times3}^\top`
(3x3 conv, zero-padded "same" patches as in the authors' standalone code) and, for a
*depthwise* 3x3 identity (each channel its own 3x3 kernel with the centre 1, the standalone
code's ``conv3x3_depthwise``), the K rows :math:`g_k x_{k,3\times3}^\top`: the block-diagonal
summand of a depthwise convolution, the identity that matches one
(:func:`identity_extraction`).

Extractions (``extract=``):

=================  =======================================================================================  ===============
name               summand at location u                                                                    size
=================  =======================================================================================  ===============
``bias``           virtual bias IDL at the layer's output: :math:`g_u`                                      K
``scaling``        virtual scaling IDL: :math:`g_u \odot x_u`                                               K
``conv1x1``        virtual 1x1 conv IDL: :math:`g_u x_u^\top`                                               K x K
``convNxN``        virtual NxN conv IDL (odd N): :math:`g_u x_{u,N\times N}^\top`                           K x N²K
``dwconvNxN``      virtual *depthwise* NxN conv IDL (odd N; ``dwconv3x3`` is the standalone code's          K x N²
                   ``conv3x3_depthwise``): channel k's own patch, :math:`g_{u,k}\, x_{u,k,N\times N}^\top`
``real_bias``      the layer's own bias: :math:`g^{out}_u`                                                  K'
``real_scaling``   a BatchNorm's own scale :math:`\gamma`: :math:`g^{out}_u\odot\hat x^{in}_u`              K
``real_conv``      the layer's own convolution (stride, padding, dilation, groups as the module has         K' x N²K/groups
                   them): :math:`g^{out}_u x^{in\top}_{u,N\times N}`
=================  =======================================================================================  ===============

Aggregations (``aggregate=``): ``sum`` (:math:`\sum_{ij} c_{ij}`, a vote), ``sum_positive``
(:math:`(\sum c)_+`, Grad-CAM's filter after the vote), ``max`` (:math:`\max c`, Table 2's
formula for gradient and the standalone code), ``max_abs`` (:math:`\max |c|`, the text of
Sec. 3.1.3 and Simonyan et al.), ``norm`` (:math:`\|c\|_2` or Frobenius: NormGrad) and
``filter_norm`` (:math:`\|(c)_+\|`, positive filtering + norm: selective NormGrad).

Matrices are never materialised.  The summand of a convolution is an outer product
:math:`g x^\top` (block-diagonal over groups), and every aggregation has a closed form in
:math:`g` and patch statistics of :math:`x`:

* :math:`\|g x^\top\|_F = \|g\|\,\|x\|` (the paper, Sec. 3.1.3);
* :math:`\|(g x^\top)_+\|_F^2 = \|g_+\|^2\|x_+\|^2 + \|g_-\|^2\|x_-\|^2` with
  :math:`v_\pm = \max(\pm v, 0)` (the positive entries are those where signs agree);
* :math:`\sum_{ij} g_i x_j = (\sum_i g_i)(\sum_j x_j)`;
* :math:`\max_{ij}|g_i x_j| = \max|g|\,\max|x|` and :math:`\max_{ij} g_i x_j` the largest of
  the four products of extremes.

Patch statistics of a *real* convolution are computed by running that very module (its
padding rule included, e.g. TensorFlow-"same" padding computed in ``forward``) on the
channel-summed statistic with an all-ones kernel of one channel per group; for a virtual
NxN identity they are NxN box sums with zero padding (per channel for a depthwise one, whose
channel k pairs only with its own patch: :math:`\|g_k x_{k,N\times N}^\top\|_F^2 = g_k^2
\|x_{k,N\times N}\|^2`, summed over k for the Frobenius norm).  Memory is that of one activation,
whatever :math:`K' \times N^2 K`: a 3x3 1024-channel convolution at 14x14 for 8 images
needs megabytes where the explicit matrices would take 59 GB.

Sign convention: :math:`g` is the gradient of the target's logit (the convention of every
method in this package and of the authors' code, which back-propagates the negated loss
:math:`-y_c`); the paper writes :math:`g = dh/dx` with the loss inside :math:`h`.  Only the
sign-sensitive aggregations (sum, max, filter) see the difference.

Selective NormGrad has two public definitions: the paper (Table 2 row 3, text of
Sec. 3.1.3) and TorchRay's ``norm_grad_selective`` clamp the *scaling* summand,
:math:`\|(g\odot x)_+\|`; the authors' standalone repository (``revisiting_saliency``) also
offers the ``filter_norm`` column on its ``conv1x1`` row, which clamps the *outer product*
:math:`\|(g x^\top)_+\|_F`.  They are different maps.  :func:`selective_normgrad` follows the
paper (``definition="scaling"``); ``definition="outer"`` gives the other.
"""

from __future__ import annotations

import re
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import check_images, resolve_layer, unwrap
from .passes import LayerPass, check_choice, check_feature_map, check_flag, finish, layer_passes

__all__ = [
    "EXTRACTIONS",
    "AGGREGATIONS",
    "TABLE_2",
    "FRAMEWORK",
    "extract_aggregate",
    "framework_maps",
    "reduction",
    "REDUCTIONS",
    "normgrad",
    "selective_normgrad",
    "linear_approx",
    "layer_gradient",
    "normgrad_conv",
    "aggregate_vector",
    "aggregate_outer",
    "aggregate_conv",
    "conv_for",
    "default_depths",
    "identity_trick_layers",
    "identity_extraction",
    "conv_kind",
    "IDENTITY_FOR",
]

VIRTUAL = ("bias", "scaling", "conv1x1", "conv3x3", "dwconv3x3")
REAL = ("real_bias", "real_scaling", "real_conv")
EXTRACTIONS = VIRTUAL + ("convNxN", "dwconvNxN") + REAL
AGGREGATIONS = ("sum", "sum_positive", "max", "max_abs", "norm", "filter_norm")

# The five methods of Table 2 as (extract, aggregate): the one statement of each, which the
# registered methods below, framework_maps and the multi-layer maps of lib.saliency.combine
# read.  Gradient uses max_abs (the text of Sec. 3.1.3 and Simonyan et al.); Table 2 writes max
# without the absolute value.  Its method is registered as layer_gradient (gradient is the input's).
TABLE_2 = {
    "gradient": {"extract": "bias", "aggregate": "max_abs"},
    "linear_approx": {"extract": "scaling", "aggregate": "sum"},
    "selective_normgrad": {"extract": "scaling", "aggregate": "filter_norm"},
    "normgrad": {"extract": "conv1x1", "aggregate": "norm"},
    "normgrad_conv": {"extract": "real_conv", "aggregate": "norm"},
}

# Table 2 plus Grad-CAM (scaling IDL, spatially averaged gradient, sum, positive filter):
# what :func:`framework_maps` computes by default.
FRAMEWORK = {**TABLE_2, "gradcam": {"extract": "scaling", "aggregate": "sum_positive", "average_gradient": True}}

_CONV = re.compile(r"^(dw)?conv(\d+)x(\d+)$")


# --------------------------------------------------------------------------- aggregations


def _check_aggregate(how: str) -> None:
    if not isinstance(how, str) or how not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {how!r}; accepted: {', '.join(AGGREGATIONS)}")


def aggregate_vector(contribution: torch.Tensor, how: str) -> torch.Tensor:
    """Aggregate vector summands (B, K, h, w) of a bias or scaling layer into maps (B, h, w).

    Sec. 3.1.3 of Rebuffi et al. 2020: ``sum``, ``sum_positive`` (ReLU of the sum),
    ``max``, ``max_abs``, ``norm`` (L2) and ``filter_norm`` (L2 of the positive part).
    """
    _check_aggregate(how)
    if how == "sum":
        return contribution.sum(dim=1)
    if how == "sum_positive":
        return F.relu(contribution.sum(dim=1))
    if how == "max":
        return contribution.amax(dim=1)
    if how == "max_abs":
        return contribution.abs().amax(dim=1)
    if how == "norm":
        return contribution.norm(dim=1)
    return F.relu(contribution).norm(dim=1)


def _outer_closed_form(
    how: str,
    g: torch.Tensor,
    sums: Callable[[torch.Tensor], torch.Tensor],
    extremes: Callable[[torch.Tensor, bool], torch.Tensor] | None,
    x: torch.Tensor,
) -> torch.Tensor:
    """Aggregate summands g_o x_j^T over output channels o (dim 1 of g) and patch entries j.

    ``sums(values)`` returns, per output channel and location, the sum of ``values`` over
    the patch entries paired with that channel (shape of g); ``extremes(x, largest)`` the
    max (or min) over them.  Every term is a product of a channel statistic of g and a patch
    statistic of x (see the module docstring).
    """
    if how in ("sum", "sum_positive"):
        total = (g * sums(x)).sum(dim=1)
        return F.relu(total) if how == "sum_positive" else total
    if how == "norm":
        return (g.pow(2) * sums(x.pow(2))).sum(dim=1).clamp_min(0).sqrt()
    if how == "filter_norm":
        gp, gm = F.relu(g), F.relu(-g)
        square = gp.pow(2) * sums(F.relu(x).pow(2)) + gm.pow(2) * sums(F.relu(-x).pow(2))
        return square.sum(dim=1).clamp_min(0).sqrt()
    if extremes is None:
        raise ValueError(f"aggregation {how!r} has no closed form for a real convolution; use sum, sum_positive, norm or filter_norm")
    if how == "max_abs":
        return (g.abs() * extremes(x.abs(), True)).amax(dim=1)
    high, low = extremes(x, True), extremes(x, False)
    products = torch.stack([g * high, g * low])
    return products.amax(dim=0).amax(dim=1)


def aggregate_outer(g: torch.Tensor, x: torch.Tensor, how: str, kernel: int = 1, depthwise: bool = False) -> torch.Tensor:
    r"""Aggregate the summands :math:`g_u x_{u,N\times N}^\top` of a virtual NxN identity convolution.

    Rebuffi et al. 2020, Sec. 3.1.2 (identity convolution, :math:`w_{kk'ij} =
    \delta_{kk'}\delta_{i0}\delta_{j0}`) and Table 2 row 4 (``kernel=1``, ``norm``:
    :math:`\|g\|\|x\|`).  Patches are zero-padded "same" NxN windows of x (as ``F.unfold``
    with padding (N-1)/2 in the authors' code); nothing of size K x N²K is formed.

    With ``depthwise`` the identity is a depthwise convolution (``groups = K``, each
    channel's own NxN kernel with the centre 1: the standalone code's ``conv3x3_depthwise``
    for N = 3): channel k's summand is the row :math:`g_k x_{k,N\times N}^\top` (K x N²
    entries in all), so ``norm`` is :math:`\sqrt{\sum_k g_k^2 \|x_{k,N\times N}\|^2}`; with
    N = 1 it is the scaling identity :math:`g \odot x`.

    Args:
        g, x: (B, K, h, w) gradient and activation at the identity's location.
        how: one of :data:`AGGREGATIONS`.
        kernel: odd patch size N.
        depthwise: a depthwise (one channel per group) identity instead of a dense one.

    Returns:
        (B, h, w) maps.
    """
    _check_aggregate(how)
    if kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"a virtual identity convolution needs an odd kernel size, got {kernel}")
    pad = kernel // 2

    def sums(values: torch.Tensor) -> torch.Tensor:
        total = values if depthwise else values.sum(dim=1, keepdim=True)
        if kernel > 1:
            channels = total.shape[1]
            ones = torch.ones(channels, 1, kernel, kernel, dtype=total.dtype, device=total.device)
            total = F.conv2d(total, ones, padding=pad, groups=channels)
        return total

    def extremes(values: torch.Tensor, largest: bool) -> torch.Tensor:
        sign = 1.0 if largest else -1.0
        best = sign * values if depthwise else (sign * values).amax(dim=1, keepdim=True)
        if kernel > 1:
            # Out-of-image entries of a zero-padded patch are zeros, and compete as such.
            best = F.max_pool2d(F.pad(best, (pad, pad, pad, pad), value=0.0), kernel, stride=1)
        return sign * best

    return _outer_closed_form(how, g, sums, extremes, x)


def aggregate_conv(conv: nn.Module, g: torch.Tensor, x_in: torch.Tensor, how: str) -> torch.Tensor:
    r"""Aggregate the summands :math:`g^{out}_u x^{in\,\top}_{u,N\times N}` of a real convolution (Eq. 2).

    Rebuffi et al. 2020, Eqs. 1-2 and Table 2 row 5 (``norm``: :math:`\|g^{out}\|\,
    \|x^{in}_{3\times3}\|`).  With ``groups`` > 1 (a depthwise convolution) the summand is
    block-diagonal: output channel o pairs only with its group's input channels, and its
    patch statistics are those of its group.  Patch statistics are obtained by running
    ``conv`` itself, with a ones kernel of one channel per group and no bias, on the
    per-group channel sum of the statistic, so its stride, dilation, padding mode and any
    padding computed in ``forward`` are honoured exactly.

    Args:
        conv: the ``nn.Conv2d`` (or subclass); it is not modified.
        g: (B, K', h', w') gradient at the convolution's output.
        x_in: (B, K, H, W) the convolution's input.
        how: ``sum``, ``sum_positive``, ``norm`` or ``filter_norm``.

    Returns:
        (B, h', w') maps at the output's resolution.
    """
    _check_aggregate(how)
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"real_conv needs an nn.Conv2d, got {type(conv).__name__}")
    groups = conv.groups
    batch, channels = x_in.shape[:2]
    if channels != conv.in_channels or g.shape[1] != conv.out_channels:
        raise ValueError(
            f"shapes do not match the convolution: input {tuple(x_in.shape)}, gradient {tuple(g.shape)}, "
            f"conv {conv.in_channels}->{conv.out_channels}"
        )
    per_group = conv.out_channels // groups
    params = {"weight": torch.ones(groups, 1, *conv.kernel_size, dtype=x_in.dtype, device=x_in.device)}
    if conv.bias is not None:
        params["bias"] = torch.zeros(groups, dtype=x_in.dtype, device=x_in.device)

    def sums(values: torch.Tensor) -> torch.Tensor:
        reduced = values.reshape(batch, groups, channels // groups, *values.shape[2:]).sum(dim=2)
        patch = torch.func.functional_call(conv, params, (reduced,))  # (B, groups, h', w')
        return patch.repeat_interleave(per_group, dim=1)

    return _outer_closed_form(how, g, sums, None, x_in)


# --------------------------------------------------------------------------- extraction


def conv_for(model, layer: str | nn.Module) -> tuple[str, nn.Conv2d]:
    """The real convolution a layer name stands for.

    A convolution stands for itself; a module containing convolutions (a block, ``"last"``
    of EfficientNet-Lite = ``head``) for the last one registered inside it; any other
    module (a ReLU, a BatchNorm) for the closest convolution registered before it.

    Raises:
        ValueError: unknown layer, or no convolution at or before it.
    """
    name, module = resolve_layer(model, layer)
    if isinstance(module, nn.Conv2d):
        return name, module
    inner = [(f"{name}.{n}", m) for n, m in module.named_modules() if n and isinstance(m, nn.Conv2d)]
    if inner:
        return inner[-1]
    root, _ = unwrap(model)
    before = None
    for candidate, m in root.named_modules():
        if candidate == name:
            break
        if isinstance(m, nn.Conv2d):
            before = (candidate, m)
    if before is None:
        raise ValueError(f"layer {name!r} is not a convolution and no convolution precedes it; real_conv needs one")
    return before


def _conv_kernel(extract: str) -> int | None:
    """N of a virtual ``convNxN`` or ``dwconvNxN`` extraction, else None."""
    match = _CONV.match(extract)
    if not match:
        return None
    n, m = int(match.group(2)), int(match.group(3))
    if n != m or n % 2 == 0:
        raise ValueError(
            f"virtual identity convolution {extract!r}: the kernel must be square and odd (conv1x1, conv3x3, dwconv3x3, ...)"
        )
    return n


def _check_extract(extract: str) -> None:
    if not isinstance(extract, str):
        raise TypeError(f"extract must be the name of an extraction ({', '.join(EXTRACTIONS)}), got {extract!r}")
    if extract in EXTRACTIONS and extract not in ("convNxN", "dwconvNxN"):
        return
    if _conv_kernel(extract) is not None:
        return
    raise ValueError(
        f"unknown extraction {extract!r}; accepted: {', '.join(EXTRACTIONS)} (convNxN: conv5x5, ...; dwconvNxN: dwconv5x5, ...)"
    )


def _scaling_input(module: nn.Module, x_in: torch.Tensor) -> torch.Tensor:
    r"""The input of a BatchNorm's scale :math:`\gamma`: :math:`\hat x = (x - \mu)/\sqrt{\sigma^2+\epsilon}` (eval)."""
    if not isinstance(module, nn.modules.batchnorm._BatchNorm) or module.weight is None:
        raise TypeError(
            f"real_scaling needs an affine BatchNorm layer, got {type(module).__name__}; "
            "use extract='scaling' for a virtual scaling identity at this location"
        )
    if module.running_mean is None:
        raise ValueError("real_scaling needs a BatchNorm with running statistics (track_running_stats=True)")
    shape = (1, -1) + (1,) * (x_in.dim() - 2)
    return (x_in - module.running_mean.view(shape)) / (module.running_var.view(shape) + module.eps).sqrt()


def _virtual_map(extract: str, how: str, g: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
    """Aggregated summands of a virtual identity (or the real bias) at a layer's output, (B, h, w)."""
    if extract in ("bias", "real_bias"):
        return aggregate_vector(g, how)
    if extract == "scaling":
        return aggregate_vector(g * x_out, how)
    return aggregate_outer(g, x_out, how, kernel=_conv_kernel(extract), depthwise=extract.startswith("dw"))


def _average(g: torch.Tensor) -> torch.Tensor:
    return g.mean(dim=(2, 3), keepdim=True).expand_as(g)


def _maps(extract: str, how: str, module: nn.Module, record: LayerPass, average_gradient: bool, layer: str = "") -> torch.Tensor:
    """Aggregated summands for one chunk's pass at the layer, (B, h, w)."""
    check_feature_map(record.activations, layer, "Extract & Aggregate")
    g = _average(record.gradients) if average_gradient else record.gradients
    if extract == "real_scaling":
        return aggregate_vector(g * _scaling_input(module, record.inputs), how)
    if extract == "real_conv":
        return aggregate_conv(module, g, record.inputs, how)
    return _virtual_map(extract, how, g, record.activations)


def reduction(extract: str = "conv1x1", aggregate: str = "norm", average_gradient: bool = False) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """An Extract & Aggregate method at a virtual identity as ``(activations, gradients) -> (B, h, w)`` raw map.

    The same computation as :func:`extract_aggregate` after its pass, for the extractions
    that need only a layer's output and its gradient (every virtual identity and
    ``real_bias``); ``real_scaling`` and ``real_conv`` also need the layer's input.

    Raises:
        ValueError: an unknown extraction or aggregation, or one that needs the layer's input.
    """
    _check_extract(extract)
    _check_aggregate(aggregate)
    if extract in ("real_scaling", "real_conv"):
        raise ValueError(f"extract={extract!r} needs the layer's input and module; use extract_aggregate or framework_maps")

    def reduce(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
        return _virtual_map(extract, aggregate, _average(gradients) if average_gradient else gradients, activations)

    return reduce


#: Registered name of each Table 2 row (the gradient at a layer is ``layer_gradient``; ``gradient`` is the input's).
_REGISTERED = {"gradient": "layer_gradient"}

REDUCTIONS = {
    _REGISTERED.get(row, row): reduction(**spec)
    for row, spec in TABLE_2.items()
    if spec["extract"] not in ("real_scaling", "real_conv")
}
"""Registered name -> ``(activations, gradients) -> (B, h, w)`` raw map of the Table 2 rows that
need only a layer's output and gradient (all but ``normgrad_conv``), read from :data:`TABLE_2`."""


def extract_aggregate(
    model,
    images,
    targets=None,
    *,
    layer: str = "last",
    extract: str = "conv1x1",
    aggregate: str = "norm",
    average_gradient: bool = False,
    raw: bool = False,
    batch_size: int | None = None,
):
    r"""Extract & Aggregate (Rebuffi et al. 2020, Algorithm 1) at one layer.

    One forward pass and one backward pass stopped at the layer (``torch.autograd.grad`` of
    the target's logit with respect to the layer's output, no parameter gradient); the
    summands of Table 1 at each location are then aggregated in closed form (module
    docstring).  With ``average_gradient`` the gradient is replaced by its spatial mean
    before extraction: ``extract="scaling", aggregate="sum_positive",
    average_gradient=True`` *is* Grad-CAM, :math:`(\sum_k \bar g_k x_k)_+` (Sec. 3.1.3), and on a
    network whose layer is followed only by global average pooling and a linear layer
    :math:`g_u = \bar g` already, so no averaging is needed.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the predicted class.
        layer: alias or module name; a virtual identity sits at its output (after a ReLU
            if the layer is one).  For ``real_*`` extractions the layer itself (for
            ``real_conv`` see :func:`conv_for`).
        extract: one of :data:`EXTRACTIONS` (``conv5x5``, ``dwconv5x5``... for larger virtual kernels).
        aggregate: one of :data:`AGGREGATIONS`.
        average_gradient: spatially average the gradient first (Grad-CAM's weights).
        raw: return the unnormalised (B, h, w) map at the layer's resolution.
        batch_size: images per forward/backward pass (None: all).

    Returns:
        (B, H, W) maps in [0, 1] on the images' device (or raw maps).

    Raises:
        ValueError: unknown layer, extraction or aggregation; bad images or targets.
        TypeError: a ``real_*`` extraction at a layer without that parameter.
    """
    _check_extract(extract)
    _check_aggregate(aggregate)
    check_images(images)
    check_flag(raw, "raw")
    check_flag(average_gradient, "average_gradient")
    if extract == "real_conv":
        name, module = conv_for(model, layer)
    else:
        name, module = resolve_layer(model, layer)
        if extract == "real_bias" and getattr(module, "bias", None) is None:
            raise TypeError(f"layer {name!r} ({type(module).__name__}) has no bias; use extract='bias' for a virtual bias identity")
    maps = layer_passes(model, images, targets, [name], inputs=extract in ("real_conv", "real_scaling"), batch_size=batch_size,
                        reduce=lambda passes: _maps(extract, aggregate, module, passes[name], average_gradient, name))
    return finish(maps, images, raw)


def framework_maps(
    model,
    images,
    targets=None,
    *,
    layers=("last",),
    methods: dict | None = None,
    raw: bool = False,
    batch_size: int | None = None,
) -> dict[str, dict[str, torch.Tensor]]:
    """Several Extract & Aggregate methods at several layers from ONE forward and ONE backward pass.

    Every method of the framework needs only the activation (or a convolution's input) and
    the gradient at its layer, so all of them at all layers come from a single pass:
    ``torch.autograd.grad`` of the target logits with respect to every captured activation
    at once.  Each map equals ``extract_aggregate(model, images, targets, layer=layer,
    **methods[name])``.

    Args:
        model, images, targets, raw, batch_size: as :func:`extract_aggregate`.
        layers: aliases or module names.
        methods: name -> keyword arguments of :func:`extract_aggregate` (``extract``,
            ``aggregate``, ``average_gradient``); default :data:`FRAMEWORK` (Table 2 and Grad-CAM).

    Returns:
        ``maps[method][layer]``: (B, H, W) in [0, 1] (or raw).
    """
    methods = dict(FRAMEWORK if methods is None else methods)
    layers = [layers] if isinstance(layers, str) else list(layers)
    if not layers or not methods:
        raise ValueError("framework_maps needs at least one layer and one method")
    check_images(images)
    plan = {}
    for method, spec in methods.items():
        unknown = set(spec) - {"extract", "aggregate", "average_gradient"}
        if unknown:
            raise ValueError(f"method {method!r}: unknown keys {sorted(unknown)}; accepted: extract, aggregate, average_gradient")
        extract, how = spec.get("extract", "conv1x1"), spec.get("aggregate", "norm")
        _check_extract(extract)
        _check_aggregate(how)
        for layer in layers:
            name, module = conv_for(model, layer) if extract == "real_conv" else resolve_layer(model, layer)
            plan[method, layer] = (name, module, extract, how, bool(spec.get("average_gradient", False)))
    names = list(dict.fromkeys(name for name, *_ in plan.values()))

    def reduce(passes: dict[str, LayerPass]) -> dict:
        return {key: _maps(extract, how, module, passes[name], average, name)
                for key, (name, module, extract, how, average) in plan.items()}

    inputs = any(extract in ("real_conv", "real_scaling") for _, _, extract, *_ in plan.values())
    maps = layer_passes(model, images, targets, names, inputs=inputs, batch_size=batch_size, reduce=reduce)
    return {m: {layer: finish(maps[m, layer], images, raw) for layer in layers} for m in methods}


# --------------------------------------------------------------------------- registry methods


def normgrad(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""NormGrad: virtual 1x1 identity convolution + Frobenius norm.

    Rebuffi et al. 2020, Sec. 3.1.3 and Table 2 row 4: the summand of a 1x1 identity
    convolution at location u is the outer product :math:`g_u x_u^\top`; its Frobenius norm
    is :math:`\|g_u\|\,\|x_u\|` (TorchRay's ``norm_grad``).

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        images: (B, 3, H, W) float tensor normalised for the model.
        targets: (B,) class indices, an int, or None for the predicted class.
        layer: alias or module name (the identity sits at its output).
        raw: return the unnormalised (B, h, w) map at the layer's resolution.
        batch_size: images per forward/backward pass (None: all).

    Returns:
        (B, H, W) maps in [0, 1] on the images' device.
    """
    return extract_aggregate(model, images, targets, layer=layer, raw=raw, batch_size=batch_size, **TABLE_2["normgrad"])


def selective_normgrad(
    model,
    images,
    targets=None,
    *,
    layer: str = "last",
    definition: str = "scaling",
    raw: bool = False,
    batch_size: int | None = None,
):
    r"""Selective NormGrad: positive filtering + norm.

    Rebuffi et al. 2020, Sec. 3.1.3 and Table 2 row 3: ``definition="scaling"`` (default,
    the paper's text and table, TorchRay's ``norm_grad_selective``) is
    :math:`\|(g \odot x)_+\|` on a virtual scaling identity.  ``definition="outer"`` is
    :math:`\|(g x^\top)_+\|_F` on a virtual 1x1 identity convolution, the ``filter_norm``
    column of the ``conv1x1`` row in the authors' standalone code
    (closed form :math:`\sqrt{\|g_+\|^2\|x_+\|^2 + \|g_-\|^2\|x_-\|^2}`).  The two maps
    differ: the outer product also keeps pairs of channels whose signs agree across channels.

    Args:
        definition: ``scaling`` or ``outer``.
    Other arguments and returns as :func:`normgrad`.
    """
    definitions = {"scaling": TABLE_2["selective_normgrad"], "outer": {"extract": "conv1x1", "aggregate": "filter_norm"}}
    check_choice(definition, "definition (of selective NormGrad)", definitions)
    return extract_aggregate(model, images, targets, layer=layer, raw=raw, batch_size=batch_size, **definitions[definition])


def layer_gradient(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""The gradient at a layer: virtual bias identity + max-abs.

    Simonyan et al. 2014 as cast by Rebuffi et al. 2020, Table 2 row 1, at any depth:
    :math:`\max_k |g_k|` per location of the layer (``gradient`` is the same at the input,
    on the pixels).  At the last layer of a network ending in global average pooling every
    location gets the same gradient, so the map is constant there (Sec. 3).  Arguments and
    returns as :func:`normgrad`.
    """
    return extract_aggregate(model, images, targets, layer=layer, raw=raw, batch_size=batch_size, **TABLE_2["gradient"])


def linear_approx(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""Linear approximation (gradient x input at a layer): virtual scaling identity + sum.

    Kindermans et al. 2016 as cast by Rebuffi et al. 2020, Table 2 row 2:
    :math:`\sum_k g_k x_k`, signed (a vote of the channels).  Arguments and returns as
    :func:`normgrad`.
    """
    return extract_aggregate(model, images, targets, layer=layer, raw=raw, batch_size=batch_size, **TABLE_2["linear_approx"])


def normgrad_conv(model, images, targets=None, *, layer: str = "last", raw: bool = False, batch_size: int | None = None):
    r"""NormGrad on a real convolution, without the virtual identity trick.

    Rebuffi et al. 2020, Eq. 2 and Table 2 row 5: :math:`\|g^{out}\|\,\|x^{in}_{N\times N}\|`
    per output location, with the convolution's own stride, padding and dilation
    (block-diagonal over groups for a depthwise convolution).  ``layer`` names the
    convolution, or a module standing for one (:func:`conv_for`: a block's last
    convolution, or the closest convolution before a ReLU/BatchNorm).  The map has the
    convolution's output resolution.  A weight-gradient method: unlike input-gradient
    methods it is not constant on a network whose output ignores the input, because the
    weight gradient still depends on the patches :math:`x^{in}`.

    Arguments and returns as :func:`normgrad`.
    """
    return extract_aggregate(model, images, targets, layer=layer, raw=raw, batch_size=batch_size, **TABLE_2["normgrad_conv"])


# --------------------------------------------------------------------------- layers of the experiments

# Supplementary Table 4 of Rebuffi et al. 2020: the convolutions where NormGrad with and without
# the virtual identity trick were compared.
PAPER_IDENTITY_LAYERS = {
    "resnet50": ["layer1.0.conv1", "layer2.0.conv1", "layer3.0.conv1", "layer4.0.conv1"],
    "vgg16": ["features.2", "features.7", "features.14", "features.21", "features.28"],
}


def _named(model) -> tuple[str, dict[str, nn.Module], dict[str, str]]:
    root, aliases = unwrap(model)
    return getattr(model, "name", type(root).__name__), dict(root.named_modules()), aliases


def identity_trick_layers(model) -> list[str]:
    """Convolutions to compare NormGrad with and without the virtual identity trick (supp. B).

    ResNet-50 and VGG16: the layers of the paper's Table 4.  Other networks: the first
    convolution, then, for the last block of each stage alias (``stage1``...) of the
    model, its 1x1 expansion and its depthwise (3x3 or 5x5) convolution when it has them, then
    the convolution standing for ``"last"`` (EfficientNet-Lite: ``stem.conv``,
    ``blocks.i.expand_conv``, ``blocks.i.depthwise_conv``, ``head.conv``).
    """
    name, modules, aliases = _named(model)
    if name in PAPER_IDENTITY_LAYERS:
        return list(PAPER_IDENTITY_LAYERS[name])
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    chosen = convs[:1]
    for alias in sorted(a for a in aliases if re.fullmatch(r"stage\d+", a)):
        for part in ("expand_conv", "depthwise_conv"):
            candidate = f"{aliases[alias]}.{part}"
            if candidate in modules:
                chosen.append(candidate)
    if "last" in aliases or "last" in modules:
        chosen.append(conv_for(model, "last")[0])
    return list(dict.fromkeys(chosen))


def conv_kind(conv: nn.Module) -> str:
    """``"depthwise"`` for a convolution with one input channel per group (``groups == in_channels > 1``), else ``"dense"``.

    Other grouped convolutions (``1 < groups < in_channels``, ResNeXt) count as dense: their
    blocks mix channels like a dense convolution does.

    Raises:
        TypeError: not an ``nn.Conv2d``.
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv_kind needs an nn.Conv2d, got {type(conv).__name__}")
    return "depthwise" if conv.groups > 1 and conv.groups == conv.in_channels else "dense"


IDENTITY_FOR = {"dense": "conv1x1", "depthwise": "dwconv3x3"}
"""The virtual identity that stands in for a real convolution of each kind (supp. B; ``conv3x3_depthwise``)."""


def identity_extraction(model, layer: str | nn.Module) -> str:
    """The virtual identity extraction that matches the real convolution ``layer`` stands for.

    Rebuffi et al. 2020, Sec. 4.1 and supp. B compare NormGrad on a real convolution (Table 2
    row 5) with NormGrad on a virtual identity at its output (row 4, a dense 1x1 identity).
    A depthwise convolution's summand is block-diagonal (each channel with its own patch), so
    its counterpart is the virtual depthwise 3x3 identity (``dwconv3x3``, the authors'
    standalone ``conv3x3_depthwise``); a dense convolution's is the virtual 1x1 identity
    (``conv1x1``), whatever its kernel, as in the paper's VGG16 rows.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``.
        layer: a convolution, or a module standing for one (:func:`conv_for`).

    Returns:
        ``"conv1x1"`` or ``"dwconv3x3"`` (:data:`IDENTITY_FOR`).
    """
    return IDENTITY_FOR[conv_kind(conv_for(model, layer)[1])]


def default_depths(model) -> list[str]:
    """Several depths of a model for the framework figures: aliases from shallow to deep.

    EfficientNet-Lite: ``stage2`` (stride 4), ``stage3`` (8), ``stage5`` (16), ``last`` (32, the
    head's ReLU6 before pooling); ResNet: ``layer1``..``layer4``; VGG16: ``conv3_3``,
    ``conv4_3``, ``conv5_3``; otherwise ``["last"]``.
    """
    _, _, aliases = _named(model)
    for depths in (["stage2", "stage3", "stage5", "last"], ["layer1", "layer2", "layer3", "layer4"], ["conv3_3", "conv4_3", "conv5_3"]):
        if all(d in aliases for d in depths):
            return depths
    return ["last"]
