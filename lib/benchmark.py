"""Time and peak memory of the saliency methods, beside peer libraries and floors.

What ``notebooks/06_benchmarks.ipynb`` and ``make bench`` (``benchmarks/run_all.py``)
measure, in one place so both print the same table.  For every registered method
(:mod:`lib.saliency.registry`, :func:`default_methods`) and a batch of B images:

* **ours**: the method's median wall time over repeats (one warm-up call first) and the
  peak memory the call added: CUDA ``max_memory_allocated``; CPU Linux's ``VmHWM`` after
  resetting it through ``/proc/self/clear_refs`` (resident memory after ``malloc_trim``, so it
  counts what the call touched, including the allocator's slack);
* **peers**: the implementations its registry entry names in pytorch-grad-cam, captum and
  torchcam (:class:`lib.saliency.registry.Peer`), doing the same work on a copy of the same
  network;
* **floor**: the forward and backward passes the method cannot avoid (its entry's floor, see
  :mod:`lib.saliency.floors`), timed alone on tensors prepared beforehand (CAMERAS: one pass
  to the layer per scale; Group-CAM: one pass to the layer and G + 1 forward passes per image;
  insertion/deletion: the forward passes of both curves).  ``ours / floor`` is the overhead of
  everything else.

Work that a profile reduces (samples, steps, masks, scales) is the same for us and the
peers: see :data:`WORK`, each method's registered work.
"""

from __future__ import annotations

import contextlib
import copy
import ctypes
import gc
import io
import math
import statistics
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from . import saliency
from .plot import significant
from .capture import prepared, resolve_layer
from .metrics import insertion_deletion as causal
from .saliency import registry
from .saliency.passes import AUTO, auto_batch_size
from .saliency.floors import forwards

__all__ = ["WORK", "REASONS", "NOISE", "default_methods", "slower_than_peers", "below_floor", "readable", "Measurement", "measure",
           "peers", "floor", "compare", "insertion_deletion_rows"]

#: Reduced work shared by us and the peers, so that a row compares like with like: name -> the
#: keyword arguments its registry entry gives (a live view of :data:`lib.saliency.registry.WORK`).
WORK = registry.WORK


def default_methods() -> list[str]:
    """The methods a run measures when none are named: every registered one, in registry order."""
    return list(registry.METHODS)


#: Why a peer is faster on a row, where there is a reason beyond noise: (method, peer) -> text.
REASONS = {
    ("guided_backprop", "captum (ReLU only)"): "not the same work: captum's guided backprop overrides nn.ReLU only, so on "
    "this ReLU6 network it computes the plain gradient; ours applies the guided rule at every ReLU6 (a backward hook each)",
}


#: Ratios up to this, for a method whose time is the network's passes, are run-to-run noise on a
#: shared 2-core CPU (repeated timings of the same call there spread by up to about 30%).
NOISE = 1.25


def slower_than_peers(frame, threshold: float = 1.1):
    """The rows of a :func:`compare` table where a peer is faster (``ours / peer`` above
    ``threshold``), each with its reason: a known one from :data:`REASONS`, noise up to
    :data:`NOISE`, otherwise "not explained: to be looked at"."""
    slower = frame[frame["ours / peer"] > threshold][["method", "batch", "peer", "ours ms/img", "peer ms/img", "ours / peer", "ours / floor"]]
    reasons = [REASONS.get((m, p), f"within the run-to-run noise (ratio <= {NOISE})" if r <= NOISE else "not explained: to be looked at")
               for m, p, r in zip(slower["method"], slower["peer"], slower["ours / peer"])]
    return slower.assign(reason=reasons)


def below_floor(frame, threshold: float = 1.0):
    """Whether each row's method ran faster than its own floor (``ours / floor`` below
    ``threshold``): a floor is work the method cannot avoid, so such a row is a measurement
    problem (run-to-run noise, the floor's chunking, a cache), not a result."""
    return _frame(frame)["ours / floor"] < threshold


def _frame(rows):
    """:func:`compare`'s rows (a list of dicts or a DataFrame) as a non-empty DataFrame with its columns."""
    import pandas as pd

    frame = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    missing = [c for c in ("method", "batch", "peer", "ours ms/img", "ours / floor") if c not in frame.columns]
    if frame.empty or missing:
        raise ValueError(f"expected the rows of lib.benchmark.compare (columns method, batch, peer, ours ms/img, ...), "
                         f"got {'no rows' if frame.empty else 'no column(s) ' + ', '.join(missing)}")
    return frame


def readable(frame, display_names: dict[str, str] | None = None):
    """The rows of :func:`compare` for a reader: display names, times as ``median (IQR)`` in
    ms per image to three significant figures, "—" where there is no peer or floor, and a
    ``check`` column flagging rows faster than their own floor (:func:`below_floor`), whose
    ``ours / floor`` is then not shown as a result."""
    import pandas as pd

    frame = _frame(frame)
    names = display_names if display_names is not None else {m: registry.get(m).display for m in registry.METHODS}
    flagged = below_floor(frame)
    nan = float("nan")

    def with_spread(median, iqr, calls):  # one timed call (the warm-up over budget) has no spread to show
        return "—" if math.isnan(median) else f"{significant(median)} ({significant(iqr, 2) if calls > 1 else '1 call'})"

    column = lambda name, default: frame[name] if name in frame.columns else [default] * len(frame)
    return pd.DataFrame({
        "method": [names.get(m, m) for m in frame["method"]],
        "batch": frame["batch"].astype(int),
        "ours ms/img (IQR)": [with_spread(m, i, c) for m, i, c in
                              zip(frame["ours ms/img"], column("ours IQR ms/img", nan), column("ours calls", 1))],
        "floor ms/img": [significant(v) for v in column("floor ms/img", nan)],
        "ours / floor": ["—" if f else significant(v) for v, f in zip(frame["ours / floor"], flagged)],
        "peer": frame["peer"].replace("-", "—"),
        "peer ms/img (IQR)": [with_spread(m, i, c) for m, i, c in
                              zip(column("peer ms/img", nan), column("peer IQR ms/img", nan), column("peer calls", 1))],
        "ours / peer": [significant(v) for v in column("ours / peer", nan)],
        "ours peak MiB": [significant(v) for v in column("ours peak MiB", nan)],
        "check": [f"faster than its floor (x{significant(v, 2)}): a measurement problem, not a result" if f else ""
                  for v, f in zip(frame["ours / floor"], flagged)],
    })


@dataclass(frozen=True)
class Measurement:
    """Median seconds of a call (for the whole batch), the peak MiB it added, and the spread.

    Attributes:
        seconds: median wall time of the timed calls.
        peak_mib: median peak memory the calls added.
        iqr_seconds: interquartile range of the timed calls' wall times (0 with one call).
        calls: how many calls were timed (1 when the warm-up exceeded the budget).
    """

    seconds: float
    peak_mib: float
    iqr_seconds: float = 0.0
    calls: int = 1


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _one_call(fn: Callable[[], object], device: torch.device) -> tuple[float, float]:
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    else:
        gc.collect()
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed blocks back, so the baseline is what is live
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:  # not Linux (glibc): time only
            pass
        base = _rss_kib("VmRSS") * 1024
    start = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base
    else:
        peak = _rss_kib("VmHWM") * 1024 - base
    return time.perf_counter() - start, max(peak, 0) / 2**20


def measure(fn: Callable[[], object], device: torch.device | str = "cpu", repeats: int = 3, budget: float = 30.0) -> Measurement:
    """Median time, its interquartile range and the peak memory of ``fn()`` over ``repeats``
    calls after one warm-up call (the warm-up is never counted: its caches and allocations
    would bias the first method measured, see the gallery's timings).

    A warm-up slower than ``budget`` seconds is itself the measurement (warming matters
    little for a call that long, and repeating it would dominate the run).

    Raises:
        ValueError: ``repeats < 1``.
    """
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an integer of at least 1, got {repeats!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget <= 0:
        raise ValueError(f"budget must be a positive number of seconds, got {budget!r}")
    device = torch.device(device)
    first = _one_call(fn, device)
    if first[0] > budget:
        return Measurement(*first)
    calls = [_one_call(fn, device) for _ in range(repeats)]
    times = [c[0] for c in calls]
    quartiles = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else [times[0]] * 3
    return Measurement(statistics.median(times), statistics.median(c[1] for c in calls), quartiles[2] - quartiles[0], len(times))


def floor(classifier, images: torch.Tensor, targets: torch.Tensor, method: str, work: dict | None = None) -> Callable[[], object] | None:
    """A callable making only the passes ``method`` must make on ``images``, or None (a name
    without a registered floor).

    The method's registered floor (:mod:`lib.saliency.floors`) sees the method's own defaults
    updated by ``work`` (default: its registered work), so the passes run in the method's
    own chunk sizes; the inputs they see (upsampled images, masked copies) are prepared
    here, out of the timed call.
    """
    entry = registry.REGISTRY.get(method)
    if entry is None or entry.floor is None:
        return None
    return entry.floor(classifier, images, targets, {**entry.defaults, **(entry.work if work is None else work)})


def _pytorch_grad_cam(name: str, module, layer_name: str | None, images, targets, settings: dict, chunk: int):
    with warnings.catch_warnings():  # its import of tqdm.auto warns outside Jupyter widgets
        warnings.simplefilter("ignore")
        import pytorch_grad_cam
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cls = getattr(pytorch_grad_cam, name)
    layers = [] if layer_name is None else [dict(module.named_modules())[layer_name]]  # FullGrad takes no layer

    def run():
        quiet = contextlib.redirect_stderr(io.StringIO())  # its Score-CAM draws a progress bar per image
        with quiet, cls(model=module, target_layers=layers) as cam:
            cam.batch_size = chunk  # Score-CAM's masked images per pass, as ours
            cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])

    return run


def _torchcam(name: str, module, layer_name: str | None, images, targets, settings: dict, chunk: int):
    from torchcam import methods

    cls = getattr(methods, name)

    def run():
        with cls(module, target_layer=layer_name) as extractor:
            extractor(class_idx=targets.tolist(), scores=module(images))

    return run


def _captum(name: str, module, layer_name: str | None, images, targets, settings: dict, chunk: int):
    from captum import attr

    with_grad = lambda: images.clone().requires_grad_(True)
    if name == "Saliency":
        return lambda: attr.Saliency(module).attribute(with_grad(), target=targets, abs=True)
    if name == "NoiseTunnel(Saliency)":
        spread = settings["noise_level"] * float(images.max() - images.min())
        return lambda: attr.NoiseTunnel(attr.Saliency(module)).attribute(
            with_grad(), nt_type="smoothgrad", nt_samples=settings["n_samples"], nt_samples_batch_size=chunk,
            stdevs=spread, target=targets, abs=False)
    if name == "IntegratedGradients":
        return lambda: attr.IntegratedGradients(module).attribute(
            images.clone(), baselines=0.0, target=targets, n_steps=settings["steps"], method="riemann_trapezoid",
            internal_batch_size=chunk)
    if name in ("GuidedBackprop", "InputXGradient", "Deconvolution"):
        return lambda: getattr(attr, name)(module).attribute(with_grad(), target=targets)
    if name == "GuidedGradCam":
        layer = dict(module.named_modules())[layer_name]
        return lambda: attr.GuidedGradCam(module, layer).attribute(with_grad(), target=targets, interpolate_mode="bilinear")
    if name == "Occlusion":
        window, stride = settings["window"], settings["stride"]
        return lambda: attr.Occlusion(module).attribute(images.clone(), sliding_window_shapes=(3, window, window),
                                                        strides=(3, stride, stride), baselines=settings["baseline"],
                                                        target=targets, perturbations_per_eval=chunk)
    raise ValueError(f"no runner for captum's {name!r}; known: Saliency, NoiseTunnel(Saliency), IntegratedGradients, "
                     "GuidedBackprop, InputXGradient, Deconvolution, GuidedGradCam, Occlusion")


#: Library -> ``(name, module, layer_name, images, targets, settings, chunk) -> run``.
_PEER_RUNNERS = {"pytorch-grad-cam": _pytorch_grad_cam, "captum": _captum, "torchcam": _torchcam}


def peers(classifier, images: torch.Tensor, targets: torch.Tensor, method: str, work: dict | None = None) -> dict[str, Callable[[], object]]:
    """Callables of the installed peer libraries doing ``method``'s work, keyed by a label.

    The peers are those of the method's registry entry (:class:`lib.saliency.registry.Peer`);
    a library that is not installed is left out, as is a name without a registered entry.
    Peers get a copy of the network with trainable parameters, as a user's model comes
    (pytorch-grad-cam back-propagates to whatever requires grad), and the method's own
    settings (its defaults updated by ``work``, default its registered work).
    """
    entry = registry.REGISTRY.get(method)
    if entry is None or not entry.peers:
        return {}
    settings = {**entry.defaults, **(entry.work if work is None else work)}
    module = copy.deepcopy(classifier.model).requires_grad_(True)
    layer_name = resolve_layer(classifier, settings["layer"])[0] if entry.takes_layer else None
    chunk = auto_batch_size(settings.get("batch_size", AUTO), images) or images.shape[0]  # ours, given to the peers too
    found: dict[str, Callable[[], object]] = {}
    for peer in entry.peers:
        try:
            found[peer.label] = _PEER_RUNNERS[peer.library](peer.name, module, layer_name, images, targets, settings, chunk)
        except ImportError:
            pass
    return found


def _row(method: str, batch: int, label: str, ours: Measurement, floor_: Measurement | None, theirs: Measurement | None) -> dict:
    nan = float("nan")
    return {
        "method": method,
        "batch": batch,
        "ours ms/img": 1000 * ours.seconds / batch,
        "ours IQR ms/img": 1000 * ours.iqr_seconds / batch,
        "ours calls": ours.calls,
        "ours peak MiB": ours.peak_mib,
        "floor ms/img": 1000 * floor_.seconds / batch if floor_ else nan,
        "ours / floor": ours.seconds / floor_.seconds if floor_ else nan,
        "peer": label,
        "peer ms/img": 1000 * theirs.seconds / batch if theirs else nan,
        "peer IQR ms/img": 1000 * theirs.iqr_seconds / batch if theirs else nan,
        "peer calls": theirs.calls if theirs else 0,
        "peer peak MiB": theirs.peak_mib if theirs else nan,
        "ours / peer": ours.seconds / theirs.seconds if theirs else nan,
    }


def compare(classifier, methods=None, batches=(1, 16), *, work: dict | None = None, repeats: int = 3, budget: float = 30.0,
            seed: int = 0, progress: Callable | None = None) -> list[dict]:
    """One row per (method, batch, peer) with our time, the floor and the peer's time.

    Args:
        classifier: a ``lib.models.Classifier``.
        methods: registered method names (default :func:`default_methods`: all of them).
        batches: batch sizes; the images are seeded noise at the model's input size and
            the targets the model's predictions for them.
        work: per-method keyword arguments for us and the peers (default :data:`WORK`).
        progress: wraps the loop over (batch, method) pairs, e.g. ``lib.progress.track``.

    Returns:
        Rows with the columns of :func:`_row` (ratios are NaN without a floor or a peer).
    """
    work = WORK if work is None else work
    methods = default_methods() if methods is None else methods
    device = next(classifier.model.parameters()).device
    size = classifier.input_size
    pairs = [(b, m) for b in batches for m in methods]
    rows, inputs = [], {}
    for batch, name in (progress or (lambda x, **_: x))(pairs, desc="methods"):
        if batch not in inputs:
            images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed + batch)).to(device)
            with torch.no_grad():
                inputs[batch] = images, classifier(images).argmax(dim=1)
        images, targets = inputs[batch]
        method, kwargs = saliency.resolve_method(name), work.get(name, {})
        ours = measure(lambda: method(classifier, images, targets, **kwargs), device, repeats, budget)
        passes = floor(classifier, images, targets, name, kwargs)
        floor_ = measure(passes, device, repeats, budget) if passes else None
        found = peers(classifier, images, targets, name, kwargs)
        for label, fn in found.items():
            rows.append(_row(name, batch, label, ours, floor_, measure(fn, device, repeats, budget)))
        if not found:
            rows.append(_row(name, batch, "-", ours, floor_, None))
    return rows


def insertion_deletion_rows(classifier, batches=(1, 16), *, step: int = causal.RISE_STEP, repeats: int = 3,
                            budget: float = 30.0, seed: int = 0, batch_size: int | str | None = AUTO) -> list[dict]:
    """Insertion and deletion of one map per image: ours (batched over images and steps),
    the one-image, one-step-at-a-time loop of the RISE code (``causal_curves_reference``)
    as the peer, and the floor (the same number of forward passes in chunks of ``batch_size``).
    """
    device = next(classifier.model.parameters()).device
    size = classifier.input_size
    rows = []
    for batch in batches:
        generator = torch.Generator().manual_seed(seed + batch)
        images = torch.randn(batch, 3, size, size, generator=generator).to(device)
        maps = torch.rand(batch, size, size, generator=generator).to(device)
        passes = 2 * (math.ceil(size * size / step) + 1) * batch + batch
        ours = measure(lambda: causal.insertion_deletion(classifier, images, maps, step=step, batch_size=batch_size),
                       device, repeats, budget)

        def reference():
            for mode in ("insertion", "deletion"):
                causal.causal_curves_reference(classifier, images, maps, mode=mode, step=step)

        def floor():
            with prepared(classifier) as module:
                forwards(module, images, passes, auto_batch_size(batch_size, images))

        rows.append(_row(f"insertion+deletion (step {step})", batch, "RISE-style loop", ours,
                         measure(floor, device, repeats, budget), measure(reference, device, repeats, budget)))
    return rows
