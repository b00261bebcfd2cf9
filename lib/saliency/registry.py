"""The registry of saliency methods: one entry per method, everything that lists methods reads it.

An entry (:class:`Method`) is data about one plain function of the calling convention
(``fn(model, images, targets=None, **settings) -> (B, H, W)``): its display name, family, paper
(a key of the book's ``references.bib``) and equation, whether it takes a ``layer``, its light
settings for tests, the reduced work and the floor of the benchmark, its peer implementations
and, where it has one, its one-pass reduction of a layer's (activations, gradients).  Adding a
method is writing the function and registering it once::

    @register(display="Input x gradient", family="input gradient", floor=floors.input_passes())
    def input_x_gradient(model, images, targets=None, *, raw=False): ...

after which the reliability tests, the benchmark, :func:`resolve_method`, :data:`METHODS` and
the equation index of the API reference all see it; :func:`unregister` takes it out again.

Readers: :data:`METHODS` (name -> function), :data:`REGISTRY` (name -> :class:`Method`),
:data:`BASELINES`, :data:`REDUCTIONS`, :data:`WORK` are live, read-only views; :func:`get` and
:func:`resolve_method` look one name up; :func:`equation_index` renders the paper, equation,
function table of the book's API reference, the registered methods followed by the
:data:`TECHNIQUES` that are not methods (layer combination, meta-saliency).
"""

from __future__ import annotations

import difflib
import inspect
import keyword
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
import re
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from . import floors
from .cam import REDUCTIONS as CAM_REDUCTIONS
from .cam import ablationcam, eigencam, gradcam, gradcam_pp, hirescam, layercam, scorecam, xgradcam
from .multiscale import cameras
from .gradients import (deconvnet, fullgrad, gradient, gradient_x_input, guided_backprop, guided_gradcam, integrated_gradients,
                        smoothgrad)
from .excitation import contrastive_excitation_backprop, excitation_backprop
from .group_masking import groupcam
from .extract_and_aggregate import REDUCTIONS as TABLE_2_REDUCTIONS
from .extract_and_aggregate import layer_gradient, linear_approx, normgrad, normgrad_conv, selective_normgrad
from .perturbation import extremal_perturbation, occlusion, rise
from .regions import xrai

__all__ = ["FAMILIES", "PEER_LIBRARIES", "Peer", "Method", "register", "unregister", "get", "resolve_method", "METHODS", "REGISTRY",
           "BASELINES", "REDUCTIONS", "WORK", "Technique", "TECHNIQUES", "equation_index"]

#: The families of methods, in the order the book presents them.
FAMILIES = ("input gradient", "class activation map", "top-down excitation", "perturbation", "extract-aggregate")

#: Libraries whose implementations ``lib.benchmark`` can time beside ours.
PEER_LIBRARIES = ("pytorch-grad-cam", "captum", "torchcam")

Reduction = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Peer:
    """Another library's implementation of a method.

    Attributes:
        library: one of :data:`PEER_LIBRARIES`.
        name: the class in that library (``pytorch_grad_cam.<name>``, ``torchcam.methods.<name>``,
            ``captum.attr.<name>``; ``NoiseTunnel(Saliency)`` for captum's SmoothGrad).
        note: what differs from ours, shown after the library in the benchmark's tables.
    """

    library: str
    name: str
    note: str = ""

    @property
    def label(self) -> str:
        """The column label of the benchmark: the library, and the note in brackets."""
        return f"{self.library} ({self.note})" if self.note else self.library


@dataclass(frozen=True, repr=False)
class Method:
    """One registered saliency method (see :func:`register` for the meaning of each field)."""

    name: str
    function: Callable
    display: str
    family: str
    paper: str | None = None
    equation: str | None = None
    baseline: bool = False
    light: Mapping[str, object] = field(default_factory=dict)
    work: Mapping[str, object] = field(default_factory=dict)
    floor: floors.Floor | None = None
    peers: tuple[Peer, ...] = ()
    reduction: Reduction | None = None

    def __post_init__(self):
        for name in ("light", "work"):  # read-only copies: an entry is data
            object.__setattr__(self, name, MappingProxyType(dict(getattr(self, name))))
        object.__setattr__(self, "peers", tuple(self.peers))

    @property
    def takes_layer(self) -> bool:
        """Whether the function takes a ``layer`` (the layer's map is then its evidence)."""
        return "layer" in inspect.signature(self.function).parameters

    @property
    def defaults(self) -> dict[str, object]:
        """The function's own settings: every parameter after (model, images, targets) that has a default."""
        parameters = list(inspect.signature(self.function).parameters.values())[3:]
        return {p.name: p.default for p in parameters if p.default is not inspect.Parameter.empty}

    @property
    def qualified_name(self) -> str:
        """Where the function is defined, ``module.name``: the target of its API reference entry."""
        return _where(self.function)

    def __repr__(self) -> str:
        return f"Method({self.name!r}, {self.qualified_name})"


def _where(function) -> str:
    return f"{getattr(function, '__module__', '?')}.{getattr(function, '__qualname__', type(function).__name__)}"


_ENTRIES: dict[str, Method] = {}


def _unknown(name) -> ValueError | TypeError:
    if not isinstance(name, str):
        return TypeError(f"a saliency method is named by a string (a key of METHODS) or given as a callable, "
                         f"got {type(name).__name__} {name!r}")
    close = difflib.get_close_matches(str(name), _ENTRIES, n=5, cutoff=0.4)
    return ValueError(f"unknown saliency method {name!r}; closest: {', '.join(close or sorted(_ENTRIES))}")


def _accepts(function: Callable, settings: Mapping[str, object], what: str) -> None:
    parameters = inspect.signature(function).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    unknown = sorted(set(settings) - set(list(parameters)[3:]))
    if unknown:
        raise ValueError(f"{what} {unknown} are not parameters of {function.__qualname__}; it accepts {list(parameters)[3:]}")


def _one_line(entry: Method, what: str, optional: bool) -> None:
    value = getattr(entry, what)
    if optional and value is None:
        return
    if not isinstance(value, str) or not value.strip() or "\n" in value or "\r" in value:
        accepted = "a non-empty string on one line" + (" or None" if optional else "")
        raise ValueError(f"{entry.name!r}: {what} must be {accepted}, got {value!r}")


def _check(entry: Method) -> None:
    if not isinstance(entry.name, str) or not entry.name.isidentifier() or keyword.iskeyword(entry.name):
        raise ValueError(f"a method's name must be a Python identifier (not a keyword), got {entry.name!r}")
    if entry.name in _ENTRIES:
        raise ValueError(f"{entry.name!r} is already registered (as {_ENTRIES[entry.name].qualified_name}); unregister it first")
    try:
        signature = inspect.signature(entry.function)
    except (TypeError, ValueError):
        raise TypeError(f"{entry.name!r}: the method must be a function fn(model, images, targets=None, **settings), "
                        f"got {type(entry.function).__name__} {entry.function!r} (no signature)") from None
    positional = [p for p in signature.parameters.values()
                  if p.kind in (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)]
    if len(positional) < 3:
        raise TypeError(f"{entry.name!r}: the method must take (model, images, targets) first, got {signature}")
    _one_line(entry, "display", optional=False)
    _one_line(entry, "equation", optional=True)
    if entry.paper is not None and (not isinstance(entry.paper, str) or not re.fullmatch(r"[A-Za-z0-9_:.+-]+", entry.paper)):
        raise ValueError(f"{entry.name!r}: paper must be a citation key of references.bib (letters, digits, _:.+-) or None, "
                         f"got {entry.paper!r}")
    if not isinstance(entry.baseline, bool):
        raise TypeError(f"{entry.name!r}: baseline must be True or False, got {entry.baseline!r}")
    if entry.family not in FAMILIES:
        raise ValueError(f"{entry.name!r}: family must be one of {FAMILIES}, got {entry.family!r}")
    _accepts(entry.function, entry.light, f"{entry.name!r}: light settings")
    _accepts(entry.function, entry.work, f"{entry.name!r}: work settings")
    for what in ("floor", "reduction"):
        if getattr(entry, what) is not None and not callable(getattr(entry, what)):
            raise TypeError(f"{entry.name!r}: {what} must be callable or None, got {type(getattr(entry, what)).__name__}")
    for peer in entry.peers:
        if not isinstance(peer, Peer) or peer.library not in PEER_LIBRARIES:
            raise ValueError(f"{entry.name!r}: peers must be Peer entries of {PEER_LIBRARIES}, got {peer!r}")


def register(function: Callable | None = None, /, *, name: str | None = None, display: str, family: str,
             paper: str | None = None, equation: str | None = None, baseline: bool = False,
             light: Mapping[str, object] | None = None, work: Mapping[str, object] | None = None,
             floor: floors.Floor | None = None, peers: Sequence[Peer] = (), reduction: Reduction | None = None):
    """Register a saliency method; with no ``function``, a decorator that registers the function it decorates.

    Args:
        function: ``fn(model, images, targets=None, **settings)`` returning (B, H, W) maps in [0, 1].
        name: the registry name (default: the function's name), a Python identifier.
        display: the name in tables and figures (``"Grad-CAM"``).
        family: one of :data:`FAMILIES`.
        paper: the citation key in the book's ``references.bib``.
        equation: the equation, algorithm or section of that paper the function implements, as its
            docstring states it (``"Eqs. 1-2"``).
        baseline: one of the classical methods the studied papers compare against (:data:`BASELINES`,
            the methods gallery).
        light: settings that make a call cheap on the tests' tiny networks (16 x 16 images).
        work: the benchmark's reduced work, the same for us and the peers (:data:`WORK`).
        floor: the passes the method cannot avoid (:mod:`lib.saliency.floors`), or None.
        peers: implementations in other libraries that the benchmark times beside ours.
        reduction: ``(activations, gradients) -> (B, h, w)`` raw map when the method is one
            reduction of a single layer pass (:data:`REDUCTIONS`, the one-pass layer combination).

    Returns:
        ``function`` unchanged (or the decorator).

    Raises:
        ValueError: a name already registered or not an identifier, an unknown family or peer
            library, light/work settings the function does not take, a display name or
            equation that is empty or not one line, or a paper that is not a citation key.
        TypeError: a function that is not callable or does not take (model, images, targets);
            light/work that are not mappings, peers that are not a list, a baseline that is not a bool.
    """
    if function is None:
        return lambda fn: register(fn, name=name, display=display, family=family, paper=paper, equation=equation,
                                   baseline=baseline, light=light, work=work, floor=floor, peers=peers, reduction=reduction)
    if not callable(function):
        hint = "; pass the name as name=..." if isinstance(function, str) else ""
        raise TypeError(f"register: the method must be a callable fn(model, images, targets=None, **settings), "
                        f"got {type(function).__name__} {function!r}{hint}")
    for what, settings in (("light", light), ("work", work)):
        if settings is not None and not isinstance(settings, Mapping):
            raise TypeError(f"register: {what} must be a mapping of setting names to values or None, "
                            f"got {type(settings).__name__} {settings!r}")
    if isinstance(peers, (str, Peer, Mapping)) or not isinstance(peers, Iterable):
        raise TypeError(f"register: peers must be a list of Peer entries, got {type(peers).__name__} {peers!r}")
    entry = Method(getattr(function, "__name__", "") if name is None else name, function, display, family, paper, equation,
                   baseline, light or {}, work or {}, floor, tuple(peers), reduction)
    _check(entry)
    _ENTRIES[entry.name] = entry
    return function


def unregister(name: str) -> Method:
    """Remove a method from the registry and return its entry.

    Raises:
        ValueError: ``name`` is not registered (the message lists the closest names).
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, str) or name not in _ENTRIES:
        raise _unknown(name)
    return _ENTRIES.pop(name)


def get(name: str) -> Method:
    """The entry of a registered method.

    Raises:
        ValueError: unknown name; the message lists the closest registered names.
        TypeError: ``name`` is not a string.
    """
    if not isinstance(name, str) or name not in _ENTRIES:
        raise _unknown(name)
    return _ENTRIES[name]


def resolve_method(method: str | Callable) -> Callable:
    """A registered method by name (or a callable, returned as is).

    Raises:
        ValueError: unknown name; the message lists the closest registered names.
        TypeError: neither a string nor a callable.
    """
    return method if callable(method) else get(method).function


class _View(Mapping):
    """A live, read-only view of the registry: name -> ``pick(entry)`` for the entries where it is not None."""

    def __init__(self, pick: Callable[[Method], object], what: str):
        self._pick, self._what = pick, what

    def __getitem__(self, name):
        value = self._pick(_ENTRIES[name]) if name in _ENTRIES else None
        if value is None:
            raise KeyError(f"{name!r} has no {self._what} in the registry")
        return value

    def __iter__(self) -> Iterator[str]:
        return (name for name, entry in list(_ENTRIES.items()) if self._pick(entry) is not None)

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __repr__(self) -> str:  # functions by where they are defined, so the text is the same on every run
        show = lambda value: _where(value) if callable(value) else repr(value)
        return "{" + ", ".join(f"{name!r}: {show(value)}" for name, value in self.items()) + "}"


class _Names(Sequence):
    """A live, read-only tuple of the registered names whose entries pass ``keep``."""

    def __init__(self, keep: Callable[[Method], bool]):
        self._keep = keep

    def _names(self) -> tuple[str, ...]:
        return tuple(name for name, entry in _ENTRIES.items() if self._keep(entry))

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(self._names())

    def __eq__(self, other) -> bool:
        return isinstance(other, Sequence) and tuple(self) == tuple(other)

    def __repr__(self) -> str:
        return repr(self._names())


#: Name -> function of every registered method, in the order of registration.
METHODS: Mapping[str, Callable] = _View(lambda entry: entry.function, "function")
#: Name -> :class:`Method` of every registered method.
REGISTRY: Mapping[str, Method] = _View(lambda entry: entry, "entry")
#: The classical methods the studied papers compare against (the methods gallery's).
BASELINES: Sequence[str] = _Names(lambda entry: entry.baseline)
#: Name -> ``(activations, gradients) -> (B, h, w)`` raw map of the methods that are one reduction of a layer pass.
REDUCTIONS: Mapping[str, Reduction] = _View(lambda entry: entry.reduction, "one-pass reduction")
#: Name -> the benchmark's reduced work (a fresh dict) of the methods that have one.
WORK: Mapping[str, dict] = _View(lambda entry: dict(entry.work) if entry.work else None, "reduced work")


@dataclass(frozen=True)
class Technique:
    """A paper's equation whose function is not a method of the calling convention: it runs a method
    (meta-saliency) or combines the maps of several layers.  A row of :func:`equation_index` after
    the methods; ``function`` is the function's qualified name, a string because
    :mod:`lib.saliency.combine` imports this module.
    """

    display: str
    family: str
    paper: str
    equation: str
    function: str


#: The rows of the equation index that are not registered methods, in the order the book presents them.
TECHNIQUES = (
    Technique("Layer combination (weighted sum, weighted product)", "layer combination", "rebuffi2020there",
              "Sec. 4.2", "lib.saliency.combine.combine"),
    Technique("Layer weights (feature spread, probe accuracy, linear, uniform)", "layer combination", "rebuffi2020there",
              "Sec. 4.2", "lib.saliency.combine.layer_weights"),
    Technique("Meta-saliency", "meta-saliency", "rebuffi2020there", "Sec. 4.4, Eqs. 4-6", "lib.saliency.meta.meta_saliency"),
)


def equation_index(*, roles: bool = True) -> str:
    """The paper, equation, function index of the registered methods and :data:`TECHNIQUES` as a Markdown table.

    One row per method in registry order, then one per technique: its display name, family,
    paper, equation or section, and function.  With ``roles`` (MyST, for the book) the paper is a
    ``{cite:t}`` citation and the function a ``{py:func}`` link to its API entry; without,
    plain text.
    """
    cell = lambda text: str(text).replace("|", "\\|")
    rows = [(entry.display, entry.family, entry.paper, entry.equation, entry.qualified_name) for entry in _ENTRIES.values()]
    rows += [(t.display, t.family, t.paper, t.equation, t.function) for t in TECHNIQUES]
    lines = ["| Method | Family | Paper | Equation or section | Function |", "|---|---|---|---|---|"]
    for display, family, paper, equation, function in rows:
        if roles:
            paper = f"{{cite:t}}`{paper}`" if paper else "–"
            function = f"{{py:func}}`{function}`"
        else:
            paper, function = paper or "–", f"`{function}`"
        lines.append(f"| {cell(display)} | {family} | {paper} | {cell(equation or '–')} | {function} |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# The methods of this library
# --------------------------------------------------------------------------------------------

_GRADIENT = dict(family="input gradient", baseline=True)
register(gradient, display="Gradient", paper="simonyan2014deep", equation="Sec. 3.1", **_GRADIENT,
         floor=floors.input_passes(), peers=[Peer("captum", "Saliency")])
register(smoothgrad, display="SmoothGrad", paper="smilkov2017smoothgrad", equation="Eq. 2", **_GRADIENT,
         light={"n_samples": 2}, work={"n_samples": 16}, floor=floors.input_passes("n_samples"),
         peers=[Peer("captum", "NoiseTunnel(Saliency)")])
register(integrated_gradients, display="Integrated Gradients", paper="sundararajan2017axiomatic", equation="Eq. 1", **_GRADIENT,
         light={"steps": 3}, work={"steps": 16}, floor=floors.input_passes("steps"),
         peers=[Peer("captum", "IntegratedGradients")])
# captum overrides nn.ReLU only: on a ReLU6 network its guided backprop is the plain gradient.
register(guided_backprop, display="Guided Backprop", paper="springenberg2015striving", equation="Sec. 3.4", **_GRADIENT,
         floor=floors.input_passes(), peers=[Peer("captum", "GuidedBackprop", note="ReLU only")])
register(gradient_x_input, display="Gradient x input", paper="shrikumar2016not", equation="Sec. 2", family="input gradient",
         floor=floors.input_passes(), peers=[Peer("captum", "InputXGradient")])
register(deconvnet, display="DeConvNet", paper="zeiler2014visualizing", equation="Sec. 2.1", family="input gradient",
         floor=floors.input_passes(), peers=[Peer("captum", "Deconvolution", note="ReLU only")])
register(guided_gradcam, display="Guided Grad-CAM", paper="selvaraju2017gradcam", equation="Sec. 3.1",
         family="input gradient", floor=floors.input_and_layer_passes,
         peers=[Peer("captum", "GuidedGradCam", note="ReLU only")])
register(fullgrad, display="FullGrad", paper="srinivas2019full", equation="Eq. 4", family="input gradient",
         floor=floors.input_passes(), peers=[Peer("pytorch-grad-cam", "FullGrad", note="rescaled per channel")])
# XRAI's evidence is Integrated Gradients' (input gradients); its regions cost no network pass.  The light
# settings segment a 32 x 32 copy at two scales with small segments, dilations and differences.
register(xrai, display="XRAI", paper="kapishnikov2019xrai", equation="Sec. 3, Algorithm 1", family="input gradient",
         light={"steps": 2, "scales": (50, 250), "segment_size": 32, "min_segment_size": 16, "dilation_radius": 1,
                "min_pixel_diff": 4},
         work={"steps": 16}, floor=floors.xrai_passes)

# The CAMs' reductions are lib.saliency.cam's (each CAM's weights, then weighted_sum).
_CAM = dict(family="class activation map")
register(gradcam, display="Grad-CAM", paper="selvaraju2017gradcam", equation="Eqs. 1-2", **_CAM, baseline=True,
         floor=floors.one_layer_pass, peers=[Peer("pytorch-grad-cam", "GradCAM"), Peer("torchcam", "GradCAM")],
         reduction=CAM_REDUCTIONS["gradcam"])
register(gradcam_pp, display="Grad-CAM++", paper="chattopadhay2018gradcampp", equation="Eq. 19", **_CAM, baseline=True,
         floor=floors.one_layer_pass, peers=[Peer("pytorch-grad-cam", "GradCAMPlusPlus"), Peer("torchcam", "GradCAMpp")],
         reduction=CAM_REDUCTIONS["gradcam_pp"])
# torchcam's ScoreCAM is not timed: 2 images at stage7 (320 channels) took 423 s here, beyond any budget.
register(scorecam, display="Score-CAM", paper="wang2020scorecam", equation="Algorithm 1", **_CAM, baseline=True,
         work={"layer": "stage7"},  # 320 channels (one masked forward each) instead of 1,280
         floor=floors.scorecam_passes, peers=[Peer("pytorch-grad-cam", "ScoreCAM")])
register(layercam, display="Layer-CAM", paper="jiang2021layercam", equation="Eqs. 5-6", **_CAM, baseline=True,
         floor=floors.one_layer_pass, peers=[Peer("pytorch-grad-cam", "LayerCAM"), Peer("torchcam", "LayerCAM")],
         reduction=CAM_REDUCTIONS["layercam"])
register(hirescam, display="HiResCAM", paper="draelos2020hirescam", equation="Eq. 5", **_CAM, floor=floors.one_layer_pass,
         peers=[Peer("pytorch-grad-cam", "HiResCAM")], reduction=CAM_REDUCTIONS["hirescam"])
register(xgradcam, display="XGrad-CAM", paper="fu2020axiom", equation="Eq. 11", **_CAM, floor=floors.one_layer_pass,
         peers=[Peer("pytorch-grad-cam", "XGradCAM"), Peer("torchcam", "XGradCAM")], reduction=CAM_REDUCTIONS["xgradcam"])
register(eigencam, display="Eigen-CAM", paper="muhammad2020eigencam", equation="Eqs. 5-6", **_CAM, floor=floors.one_forward,
         peers=[Peer("pytorch-grad-cam", "EigenCAM", note="sign not fixed")])
register(ablationcam, display="Ablation-CAM", paper="desai2020ablationcam", equation="Eq. 3", **_CAM,
         work={"layer": "stage7"}, floor=floors.scorecam_passes, peers=[Peer("pytorch-grad-cam", "AblationCAM")])
# TorchRay's rules (lib.saliency.excitation), against which both are tested.
register(excitation_backprop, display="Excitation Backprop", paper="zhang2018excitation", equation="Sec. 3",
         family="top-down excitation", floor=floors.one_layer_pass)
register(contrastive_excitation_backprop, display="Contrastive Excitation Backprop", paper="zhang2018excitation",
         equation="Sec. 3", family="top-down excitation", floor=floors.two_layer_passes)
register(rise, display="RISE", paper="petsiuk2018rise", equation="Eq. 6", family="perturbation", baseline=True,
         light={"n_masks": 4}, work={"n_masks": 500}, floor=floors.forward_passes("n_masks"))
register(occlusion, display="Occlusion", paper="zeiler2014visualizing", equation="Sec. 4.2", family="perturbation",
         light={"window": 8, "stride": 8}, work={"window": 56, "stride": 56}, floor=floors.occlusion_passes,
         peers=[Peer("captum", "Occlusion")])
# TorchRay's extremal_perturbation, against which it is tested; light: a grid fine enough for 16 x 16 images.
register(extremal_perturbation, display="Extremal perturbation", paper="fong2019understanding", equation="Sec. 3, Eqs. 3-8",
         family="perturbation", light={"max_iter": 10, "step": 2, "sigma": 4.0},
         work={"max_iter": 100},  # an eighth of the 800 iterations
         floor=floors.extremal_passes)
register(cameras, display="CAMERAS", paper="jalwana2021cameras", equation="Eqs. 5.2-5.3, Algorithm 6", **_CAM,
         light={"scales": (16, 24)}, work={"steps": 7, "max_scale": 1000}, floor=floors.cameras_passes)
register(groupcam, display="Group-CAM", paper="zhang2021groupcam", equation="Algorithm 1, Eqs. 1-7", **_CAM,
         light={"groups": 4}, work={"groups": 32}, floor=floors.groupcam_passes)

# Rebuffi et al. 2020, Table 2: extract (a virtual identity layer) then aggregate; the reductions are
# lib.saliency.extract_and_aggregate's (all rows but the real convolution's, which needs the layer's input).
_TABLE2 = dict(family="extract-aggregate", paper="rebuffi2020there", floor=floors.one_layer_pass)
register(layer_gradient, display="Layer gradient", equation="Table 2 row 1", **_TABLE2,
         reduction=TABLE_2_REDUCTIONS["layer_gradient"])
register(linear_approx, display="Linear approximation", equation="Table 2 row 2", **_TABLE2,
         reduction=TABLE_2_REDUCTIONS["linear_approx"])
register(selective_normgrad, display="Selective NormGrad", equation="Sec. 3.1.3 and Table 2 row 3", **_TABLE2,
         reduction=TABLE_2_REDUCTIONS["selective_normgrad"])
register(normgrad, display="NormGrad", equation="Sec. 3.1.3 and Table 2 row 4", **_TABLE2,
         reduction=TABLE_2_REDUCTIONS["normgrad"])
register(normgrad_conv, display="NormGrad (convolution)", equation="Eq. 2 and Table 2 row 5", **_TABLE2)
