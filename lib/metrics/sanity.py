r"""Sanity checks of saliency maps by model-parameter randomisation.

Adebayo et al., "Sanity Checks for Saliency Maps", NeurIPS 2018, Sec. 3.1: a map that
explains the *model* must change when the model's parameters are destroyed.  The
*cascading* test re-initialises the layers one after another from the logits down to the
input, cumulatively, and recomputes the map after every step; the *independent* test
re-initialises one layer at a time, the rest keeping their trained weights.  Similarity
to the map of the trained model is measured per image by

* Spearman's rank correlation of the two maps (Spearman 1904; ties get average ranks,
  as in ``scipy.stats.spearmanr``), and
* the structural similarity index SSIM (Wang et al., "Image Quality Assessment: From
  Error Visibility to Structural Similarity", IEEE TIP 2004, Eq. 13) with a Gaussian
  window of side 11 and :math:`\sigma = 1.5`, :math:`C_1 = (0.01 L)^2`,
  :math:`C_2 = (0.03 L)^2`, :math:`L = 1` (maps in [0, 1]), averaged over the valid
  positions of the window (the paper's reference implementation; equal to
  ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False, data_range=1)``).

Both work on a *copy* of the model: the caller's model stays bit-identical.  The targets
are fixed once, from the trained model's prediction (or as given), so every map of an
image explains the same class.

A map that is constant (every location equal: the gradient before global pooling, a
ReLU-filtered map that is all zero) has no ranking, so its correlation with another map is
undefined.  :func:`spearman` scores it 0 by default (``constant=0.0``, kept for backward
compatibility), which reads as "changed"; :attr:`RandomizationResult.defined_spearman` and
``spearman(..., constant=float("nan"))`` leave it out as NaN, and
:attr:`RandomizationResult.undefined` counts it.

Extensions used by the extract & aggregate chapter: a method that returns a (nested) dict
of maps (:func:`lib.saliency.extract_and_aggregate.framework_maps`) gets a dict of results, one
randomisation of the model serving every map; ``measures=("spearman",)`` skips SSIM; a
step of ``layers`` may be a tuple of module names randomised together (a coarser cascade
that reaches the same model states as the layer-by-layer one, seeds being drawn per layer).

The CAMERAS paper (Jalwana et al., CVPR 2021, Fig. 5.1 bottom) uses the cascading test.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import operator
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..capture import check_images, unwrap
from ..saliency.passes import predict
from ..saliency.registry import resolve_method
from ._checks import check_finite, check_int, check_real, check_tensor

__all__ = [
    "RandomizationResult",
    "cascading_randomization",
    "independent_randomization",
    "per_image_similarity",
    "undefined_steps",
    "join_steps",
    "default_layers",
    "spearman",
    "ssim",
]


# --------------------------------------------------------------------------- similarity


def _average_ranks(row: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n of a 1-D tensor, tied values sharing their average rank."""
    values, order = torch.sort(row)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(torch.float64)
    average = ends - (counts.to(torch.float64) - 1) / 2
    ranks = torch.empty_like(row, dtype=torch.float64)
    ranks[order] = average[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor, *, constant: float = 0.0) -> torch.Tensor:
    r"""Spearman's rank correlation of paired maps (B, ...) -> (B,).

    :math:`\rho = \mathrm{corr}(\mathrm{rank}(a), \mathrm{rank}(b))` with average ranks for
    ties.  A constant map carries no ranking: its pair gets ``constant``, 0 by default (no
    similarity); ``constant=float("nan")`` gives what ``scipy.stats.spearmanr`` gives, an
    undefined correlation.  Any real values are accepted (only the ranks count).

    Raises:
        TypeError: maps that are not real tensors.
        ValueError: maps of two shapes, or without a batch dimension (a single (H, W) map
            would be read as H maps), or with NaN or infinite values (NaN has no rank).
    """
    check_tensor(a, "spearman: a", "(B, ...)")
    check_tensor(b, "spearman: b", "(B, ...)")
    if a.shape != b.shape:
        raise ValueError(f"maps to compare must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dim() < 2:
        raise ValueError(f"spearman: maps must be a batch (B, H, W) (or (B, ...)), got shape {tuple(a.shape)}")
    check_finite(a, "spearman: maps a")
    check_finite(b, "spearman: maps b")
    a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
    out = torch.full((a.shape[0],), float(constant), dtype=torch.float64, device=a.device)
    for i in range(a.shape[0]):
        ra, rb = _average_ranks(a[i].double()), _average_ranks(b[i].double())
        ra, rb = ra - ra.mean(), rb - rb.mean()
        norm = ra.norm() * rb.norm()
        if norm > 0:
            out[i] = (ra * rb).sum() / norm
    return out.float()


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> torch.Tensor:
    r"""Mean structural similarity of paired maps (B, H, W) -> (B,).

    Wang et al. 2004, Eq. 13:
    :math:`\mathrm{SSIM} = \frac{(2\mu_a\mu_b + C_1)(2\sigma_{ab} + C_2)}{(\mu_a^2 + \mu_b^2 + C_1)(\sigma_a^2 + \sigma_b^2 + C_2)}`
    with local statistics under a normalised Gaussian window (side ``window``, ``sigma``),
    averaged over the positions where the window fits inside the map.

    Raises:
        ValueError: shapes differ, the maps are smaller than the window, maps with NaN or
            infinite values, a window below 1, a sigma or data range that is not a finite
            number > 0.
        TypeError: maps that are not real tensors, a window that is not an integer, a sigma
            or data range that is not a number.
    """
    check_tensor(a, "ssim: a", "(B, H, W)")
    check_tensor(b, "ssim: b", "(B, H, W)")
    window = check_int(window, "ssim: window (the Gaussian window's side)", 1)
    sigma = check_real(sigma, "ssim: sigma", low=0, low_open=True)
    data_range = check_real(data_range, "ssim: data_range (L, the maps' value range)", low=0, low_open=True)
    if a.shape != b.shape or a.dim() != 3:
        raise ValueError(f"ssim compares two (B, H, W) tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    if min(a.shape[-2:]) < window:
        raise ValueError(f"maps of size {tuple(a.shape[-2:])} are smaller than the {window}x{window} SSIM window")
    check_finite(a, "ssim: maps a")
    check_finite(b, "ssim: maps b")
    a, b = a.double().unsqueeze(1), b.double().unsqueeze(1)
    w = _gaussian_window(window, sigma, a.dtype, a.device)
    mu_a, mu_b = F.conv2d(a, w), F.conv2d(b, w)
    var_a = F.conv2d(a * a, w) - mu_a**2
    var_b = F.conv2d(b * b, w) - mu_b**2
    cov = F.conv2d(a * b, w) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return index.mean(dim=(1, 2, 3)).float()


# --------------------------------------------------------------------------- layers


def default_layers(model) -> list[str]:
    """Parametrised top-level blocks of a model, from the output towards the input.

    Top-level children that are plain containers (``nn.Sequential``/``nn.ModuleList``
    exactly, not subclasses) are opened one level.  EfficientNet-Lite gives
    ``classifier, head, blocks.15, ..., blocks.0, stem``; a torchvision VGG16
    ``classifier.6, classifier.3, classifier.0, features.28, ..., features.0``.
    """
    module, _ = unwrap(model)
    names: list[str] = []
    for name, child in module.named_children():
        if type(child) in (nn.Sequential, nn.ModuleList):
            names += [f"{name}.{sub}" for sub, grand in child.named_children() if any(True for _ in grand.parameters())]
        elif any(True for _ in child.parameters()):
            names.append(name)
    if not names:
        raise ValueError("the model has no parametrised layer to randomise")
    return names[::-1]


def _copy(model):
    """A deep copy of a Classifier (aliases kept) or of a module."""
    if isinstance(model, nn.Module):
        return copy.deepcopy(model)
    return dataclasses.replace(model, model=copy.deepcopy(model.model))


def _reinitialise(module: nn.Module, seed: int) -> None:
    r"""Re-initialise every parameter of ``module`` with PyTorch's default initialisers.

    Sub-modules with ``reset_parameters`` (convolutions, linear layers, batch norms: the
    latter also reset their running statistics) use it; a parameter owned by a module
    without one is drawn from :math:`\mathcal{N}(0, 0.01^2)` (Adebayo et al.'s scale).
    The draws come from ``seed``; the global random state is left untouched.
    """
    devices = sorted({p.device.index for p in module.parameters() if p.device.type == "cuda"})
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(seed)
        for sub in module.modules():
            if hasattr(sub, "reset_parameters") and callable(sub.reset_parameters):
                sub.reset_parameters()
            else:
                for p in sub.parameters(recurse=False):
                    p.normal_(0.0, 0.01)


# --------------------------------------------------------------------------- tests


@dataclass
class RandomizationResult:
    """Maps of a randomisation test and their similarity to the trained model's map.

    Attributes:
        layer_names: the layers re-initialised, in order (cascading: cumulative); a step
            that randomised several layers together is named ``"a + b"``.
        spearman: (B, L) rank correlation between the map after step l and the original
            (0 where a map is constant; see :attr:`defined_spearman`).
        ssim: (B, L) structural similarity, likewise (None when not measured).
        maps: (L+1, B, H, W); ``maps[0]`` is the trained model's map.
        targets: (B,) the classes explained.
        mode: ``"cascading"`` or ``"independent"``.
        constant: (L+1, B) bool, ``maps[l, i]`` is constant (None: not recorded).
        depths: (L,) layers random at each step (cascading: cumulative; None: one per step).
    """

    layer_names: list[str]
    spearman: torch.Tensor
    ssim: torch.Tensor | None
    maps: torch.Tensor
    targets: torch.Tensor
    mode: str
    constant: torch.Tensor | None = None
    depths: list[int] | None = None

    @property
    def undefined(self) -> torch.Tensor:
        """(B, L) bool: the step's map or the trained model's map is constant, so their correlation is undefined."""
        constant = _constant_maps(self.maps) if self.constant is None else self.constant
        return (constant[1:] | constant[:1]).T

    @property
    def defined_spearman(self) -> torch.Tensor:
        """(B, L) :attr:`spearman` with NaN where it is undefined (:attr:`undefined`): left out, not scored 0."""
        return self.spearman.masked_fill(self.undefined.to(self.spearman.device), float("nan"))

    def to_frame(self, method: str | None = None, *, undefined_as_nan: bool = False):
        """Long-form ``pandas.DataFrame`` (image, depth, layer, metric, value[, method]).

        ``depth`` is the step (1, 2, ...), or the layers random at that step when
        :attr:`depths` is set.  With ``undefined_as_nan`` the Spearman values are
        :attr:`defined_spearman` (NaN where a map is constant).
        """
        import pandas as pd

        rows = []
        depths = self.depths or list(range(1, len(self.layer_names) + 1))
        for metric in ("spearman", "ssim"):
            values = self.defined_spearman if metric == "spearman" and undefined_as_nan else getattr(self, metric)
            if values is None:
                continue
            values = values.detach().cpu()
            for i in range(values.shape[0]):
                for step, layer in enumerate(self.layer_names):
                    row = {"image": i, "depth": depths[step], "layer": layer, "metric": metric, "value": float(values[i, step])}
                    if method is not None:
                        row["method"] = method
                    rows.append(row)
        return pd.DataFrame(rows)


_MEASURES = ("spearman", "ssim")


def _constant_maps(maps: torch.Tensor) -> torch.Tensor:
    """(..., H, W) maps -> (...) bool: every value of the map equal."""
    flat = maps.flatten(start_dim=-2)
    return flat.amax(dim=-1) == flat.amin(dim=-1)


def _leaves(tree, path=()):
    """(path, tensor) pairs of a tensor or a (nested) dict of tensors."""
    if isinstance(tree, dict):
        for key, child in tree.items():
            yield from _leaves(child, path + (key,))
    else:
        yield path, tree


def _nest(pairs: dict):
    """{path: value} back into the nested dict of the paths (the value itself for the empty path)."""
    if () in pairs:
        return pairs[()]
    out: dict = {}
    for path, value in pairs.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def _result(names, depths, maps: list[torch.Tensor], chosen, cascading: bool, measures) -> RandomizationResult:
    original = maps[0]
    rho = torch.stack([spearman(m, original) for m in maps[1:]], dim=1)
    structure = torch.stack([ssim(m, original) for m in maps[1:]], dim=1) if "ssim" in measures else None
    stacked = torch.stack(maps)
    return RandomizationResult(names, rho, structure, stacked, chosen, "cascading" if cascading else "independent",
                               constant=_constant_maps(stacked), depths=depths)


def _run(model, method, images, targets, layers, seed, method_kwargs, cascading: bool, measures=_MEASURES):
    test = "cascading_randomization" if cascading else "independent_randomization"
    check_images(images)
    seed = check_int(seed, f"{test}: seed")
    if "spearman" not in measures or set(measures) - set(_MEASURES):
        raise ValueError(f"measures must include 'spearman' and may add 'ssim', got {tuple(measures)}")
    explain = resolve_method(method)
    kwargs = dict(method_kwargs or {})
    _, chosen = predict(model, images, targets)
    steps = [[step] if isinstance(step, str) else list(step) for step in (default_layers(model) if layers is None else layers)]
    if not steps or any(not step for step in steps):
        raise ValueError("layers is empty (or has an empty step); give at least one layer to randomise")
    twin = _copy(model)
    twin_module, _ = unwrap(twin)
    modules = dict(twin_module.named_modules())
    unknown = [n for step in steps for n in step if n not in modules or n == ""]
    if unknown:
        raise ValueError(f"unknown layer(s) {unknown}; module names look like {default_layers(model)[:6]}")
    grouped = any(len(step) > 1 for step in steps)
    original = {path: _checked_map(m, test, path, "of the trained model") for path, m in
                _leaves(explain(model, images, chosen, **kwargs))}
    maps = {path: [m] for path, m in original.items()}
    position = 0
    for step in steps:
        layers_now = [modules[name] for name in step]
        saved = None if cascading else [copy.deepcopy(layer.state_dict()) for layer in layers_now]
        for layer in layers_now:  # seeded by the layer's place in the flattened order
            _reinitialise(layer, seed * 100_003 + position)
            position += 1
        for path, m in _leaves(explain(twin, images, chosen, **kwargs)):
            maps[path].append(_checked_map(m, test, path, f"after step {' + '.join(step)!r}"))
        if saved is not None:
            for layer, state in zip(layers_now, saved):
                layer.load_state_dict(state)
    names = [" + ".join(step) for step in steps]
    sizes = [len(step) for step in steps]
    depths = (list(itertools.accumulate(sizes)) if cascading else sizes) if grouped else None
    return _nest({path: _result(names, depths, series, chosen, cascading, measures) for path, series in maps.items()})


def _checked_map(m, test: str, path: tuple, when: str) -> torch.Tensor:
    """One of the method's maps, detached; a map with NaN or infinite values named by its step (and key)."""
    key = f" {'/'.join(map(str, path))!r}" if path else ""
    check_tensor(m, f"{test}: the method's maps{key}", "(B, H, W), or a (nested) dict of them")
    check_finite(m, f"{test}: the method's maps{key} {when}")
    return m.detach()


def cascading_randomization(
    model,
    method,
    images: torch.Tensor,
    targets=None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    method_kwargs: dict | None = None,
    measures: Sequence[str] = _MEASURES,
) -> RandomizationResult:
    """Cascading model-parameter randomisation (Adebayo et al. 2018, Sec. 3.1, Fig. 2).

    On a copy of the model, re-initialise ``layers`` one after another, cumulatively
    (step l has layers 1..l random), and recompute the map after each step.

    Args:
        model: a ``lib.models.Classifier`` or ``nn.Module``; left bit-identical.
        method: a name of ``lib.saliency.METHODS`` or a function with the calling
            convention ``f(model, images, targets, **method_kwargs) -> (B, H, W)``.
        images: (B, 3, H, W) normalised images.
        targets: classes to explain; None fixes the trained model's prediction.
        layers: module names in the order to randomise (default:
            :func:`default_layers`, from the logits towards the input); a step may be a
            tuple of names randomised together.
        seed: the re-initialisation's randomness (the l-th layer of the flattened order uses
            a seed derived from it, so grouped steps reach the layer-by-layer states).
        method_kwargs: keywords for the method (``layer=``, ``batch_size=``, ...).
        measures: ``("spearman", "ssim")`` (default) or ``("spearman",)`` to skip SSIM.

    Returns:
        :class:`RandomizationResult` with ``maps`` (L+1, B, H, W), ``spearman`` and
        ``ssim`` (B, L) against ``maps[0]``; for a method returning a (nested) dict of
        maps, the same dict of results.

    Raises:
        ValueError: unknown method, layer names or measures; bad images or targets; a map of
            the method with NaN or infinite values (named by its step: its correlation would
            be a number made from NaN's sorting place).
        TypeError: a seed that is not an integer (``1.5`` was truncated), maps that are not tensors.
    """
    return _run(model, method, images, targets, layers, seed, method_kwargs, cascading=True, measures=measures)


def independent_randomization(
    model,
    method,
    images: torch.Tensor,
    targets=None,
    *,
    layers: Sequence[str] | None = None,
    seed: int = 0,
    method_kwargs: dict | None = None,
    measures: Sequence[str] = _MEASURES,
) -> RandomizationResult:
    """Independent model-parameter randomisation (Adebayo et al. 2018, Sec. 3.1).

    Like :func:`cascading_randomization`, but only one layer (or one tuple of layers) is
    random at each step; the others keep their trained parameters (and buffers).  Same
    arguments, result and errors.
    """
    return _run(model, method, images, targets, layers, seed, method_kwargs, cascading=False, measures=measures)


# --------------------------------------------------------------------------- per-image summaries


MODES = ("cascading", "independent")
"""The two randomisation tests of Adebayo et al. 2018, Sec. 3.1 (:attr:`RandomizationResult.mode`)."""


def _check_result(result, what: str, mode: bool = True) -> None:
    if not isinstance(result, RandomizationResult):
        hint = "; for a dict of results (a method returning several maps) take each entry" if isinstance(result, dict) else ""
        raise TypeError(f"{what}: expected a RandomizationResult, got {type(result).__name__}{hint}")
    if mode and result.mode not in MODES:
        raise ValueError(f"{what}: the result's mode must be one of {MODES}, got {result.mode!r}")


def per_image_similarity(result: RandomizationResult, steps: Sequence[int] | None = None) -> torch.Tensor:
    r"""Each image's Spearman correlation with the trained model's map, summarised over the steps of a test.

    Adebayo et al. 2018 (Sec. 3.1) read a test by how similar the randomised maps stay: after
    the **cascading** test has randomised every layer, the last step's :math:`\rho_{i,L}`;
    under the **independent** test, where every step randomises a different layer, the mean
    :math:`\frac{1}{|D_i|}\sum_{l \in D_i} \rho_{i,l}` over the steps :math:`D_i` whose
    correlation is defined (:attr:`RandomizationResult.defined_spearman`: a constant map has
    no ranking and is left out, not scored 0).  Given ``steps``, the mean over those steps
    (e.g. the area under a cascade's curve).

    Args:
        result: a :class:`RandomizationResult`.
        steps: 0-based step indices to average (or one index); None: the last step
            (cascading) or every step (independent).

    Returns:
        float64 ``(B,)``; NaN for an image with no defined correlation among the steps.

    Raises:
        ValueError: an empty ``steps``, a step outside ``[0, L)``, a step given twice, or a
            result whose ``mode`` is neither ``"cascading"`` nor ``"independent"``.
        TypeError: a step that is not an integer (``0.5``, ``True``, a string), or a
            ``result`` that is not a :class:`RandomizationResult`.
    """
    _check_result(result, "per_image_similarity")
    rho = result.defined_spearman.detach().to("cpu", torch.float64)
    if steps is None:
        return rho[:, -1] if result.mode == "cascading" else rho.nanmean(dim=1)
    wrong = f"steps must be a non-empty list of distinct step indices (integers) in [0, {rho.shape[1]}), got {steps!r}"
    if isinstance(steps, (str, bytes)):
        raise TypeError(wrong)
    if not isinstance(steps, Iterable) or (isinstance(steps, torch.Tensor) and steps.dim() == 0):
        steps = [steps]  # one step
    try:
        if any(isinstance(step, bool) for step in steps):
            raise TypeError
        steps = [operator.index(step) for step in steps]
    except TypeError:
        raise TypeError(wrong) from None
    if not steps or len(set(steps)) != len(steps) or any(not 0 <= step < rho.shape[1] for step in steps):
        raise ValueError(wrong)
    return rho[:, steps].nanmean(dim=1)


def undefined_steps(result: RandomizationResult) -> list[str]:
    """Names of the steps (:attr:`RandomizationResult.layer_names`) after which some image's correlation is undefined.

    A correlation is undefined where the step's map or the trained model's map is constant
    (:attr:`RandomizationResult.undefined`); the count of such maps is ``int(result.undefined.sum())``.
    """
    _check_result(result, "undefined_steps", mode=False)
    return [name for name, some in zip(result.layer_names, result.undefined.any(dim=0).tolist()) if some]


def join_steps(first: RandomizationResult, rest: RandomizationResult | None, *, mode: str = "independent") -> RandomizationResult:
    """The steps of ``first`` followed by those of ``rest``, on the same images and trained map.

    Randomising the first layer alone is both the cascading test's first step and the
    independent test's: ``join_steps(cascading_first_step, independent_on_the_other_layers)``
    gives the independent test for one fewer pass over the model.

    Args:
        first: a result whose **first** step is kept (only that step).
        rest: a result of the remaining steps, or None (then the result has one step).
        mode: the joined result's ``mode``.

    Raises:
        ValueError: maps of other sizes or other targets (other images), SSIM in only one of
            them, or a ``mode`` other than ``"cascading"`` and ``"independent"``.
        TypeError: an argument that is not a :class:`RandomizationResult` (for a dict of
            results, join each entry).
    """
    _check_result(first, "join_steps: first", mode=False)
    if mode not in MODES:
        raise ValueError(f"join_steps: mode must be one of {MODES}, got {mode!r}")
    if rest is not None:
        _check_result(rest, "join_steps: rest", mode=False)
        if rest.maps.shape[1:] != first.maps.shape[1:]:
            raise ValueError(f"join_steps: the results explain different images or targets "
                             f"(maps {tuple(first.maps.shape[1:])} vs {tuple(rest.maps.shape[1:])})")
        if not torch.equal(rest.targets, first.targets):
            raise ValueError(f"join_steps: the results explain different images or targets "
                             f"(targets {first.targets.tolist()[:8]} vs {rest.targets.tolist()[:8]})")
        if (rest.ssim is None) != (first.ssim is None):
            raise ValueError("join_steps: SSIM measured in one result only")
    spearman_steps = [first.spearman[:, :1]] + ([rest.spearman] if rest is not None else [])
    ssim_steps = None if first.ssim is None else [first.ssim[:, :1]] + ([rest.ssim] if rest is not None else [])
    maps = [first.maps[:2]] + ([rest.maps[1:]] if rest is not None else [])
    names = first.layer_names[:1] + (rest.layer_names if rest is not None else [])
    return RandomizationResult(names, torch.cat(spearman_steps, dim=1), None if ssim_steps is None else torch.cat(ssim_steps, dim=1),
                               torch.cat(maps), first.targets, mode)
