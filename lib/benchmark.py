"""Time and peak memory of the saliency methods, beside peer libraries and floors.

What ``notebooks/06_benchmarks.ipynb`` and ``make bench`` (``benchmarks/run_all.py``)
measure, in one place so both print the same table.  For every method of
``lib.saliency.METHODS`` and a batch of B images:

* **ours**: the method's median wall time over repeats (one warm-up call first) and the
  peak memory the call added: CUDA ``max_memory_allocated``; CPU Linux's ``VmHWM`` after
  resetting it through ``/proc/self/clear_refs`` (resident memory after ``malloc_trim``, so it
  counts what the call touched, including the allocator's slack);
* **peers**: pytorch-grad-cam (Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM), captum
  (Gradient, SmoothGrad, Integrated Gradients, Guided Backprop) and torchcam (Grad-CAM,
  Grad-CAM++, Layer-CAM) doing the same work on a copy of the same network;
* **floor**: the forward and backward passes the method cannot avoid, timed alone on
  tensors prepared beforehand (CAMERAS: one pass to the layer per scale; Group-CAM: one
  pass to the layer and G + 1 forward passes per image; insertion/deletion: the forward
  passes of both curves).  ``ours / floor`` is the overhead of everything else.

Work that a profile reduces (samples, steps, masks, scales) is the same for us and the
peers: see :data:`WORK`.
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
from .capture import prepared, resolve_layer
from .metrics import insertion_deletion as causal
from .saliency._common import AUTO, auto_batch_size, chunks, layer_pass

__all__ = ["WORK", "REASONS", "NOISE", "slower_than_peers", "Measurement", "measure", "peers", "floor", "compare", "insertion_deletion_rows"]

#: Reduced work shared by us and the peers, so that a row compares like with like.
WORK = {
    "smoothgrad": {"n_samples": 16},
    "integrated_gradients": {"steps": 16},
    "rise": {"n_masks": 500},
    "scorecam": {"layer": "stage7"},  # 320 channels (one masked forward each) instead of 1,280
    "cameras": {"steps": 7, "max_scale": 1000},
    "groupcam": {"groups": 32},
}


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


@dataclass(frozen=True)
class Measurement:
    """Median seconds of a call (for the whole batch) and the peak MiB it added."""

    seconds: float
    peak_mib: float


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
    """Median time and peak memory of ``fn()`` over ``repeats`` calls after one warm-up call.

    A warm-up slower than ``budget`` seconds is itself the measurement (warming matters
    little for a call that long, and repeating it would dominate the run).

    Raises:
        ValueError: ``repeats < 1``.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    device = torch.device(device)
    first = _one_call(fn, device)
    if first[0] > budget:
        return Measurement(*first)
    calls = [_one_call(fn, device) for _ in range(repeats)]
    return Measurement(statistics.median(c[0] for c in calls), statistics.median(c[1] for c in calls))


def _forwards(module: torch.nn.Module, images: torch.Tensor, count: int, batch_size: int | None) -> None:
    """``count`` forward passes over copies of ``images`` in chunks of ``batch_size``."""
    with torch.no_grad():
        for piece in chunks(count, batch_size):
            module(images[torch.arange(piece.start, piece.stop, device=images.device) % images.shape[0]])


def floor(classifier, images: torch.Tensor, targets: torch.Tensor, method: str, work: dict | None = None) -> Callable[[], object] | None:
    """A callable making only the passes ``method`` must make on ``images``, or None.

    The inputs those passes see (upsampled images, masked copies) are prepared here, out
    of the timed call; the passes run in the method's own chunk sizes.
    """
    work = dict(WORK.get(method, {}) if work is None else work)
    layer = work.get("layer", "last")
    count = images.shape[0]

    def input_passes(n: int, batch_size: int | None):
        def run():
            with prepared(classifier) as module:
                for piece in chunks(n * count, batch_size):
                    owner = torch.arange(piece.start, piece.stop, device=images.device) % count
                    x = images[owner].requires_grad_(True)
                    torch.autograd.grad(module(x).gather(1, targets[owner].view(-1, 1)).sum(), x)
        return run

    def forward_only(n: int, batch_size: int | None):
        def run():
            with prepared(classifier) as module:
                _forwards(module, images, n * count, batch_size)
        return run

    if method in ("gradient", "guided_backprop"):
        return input_passes(1, None)
    chunk = auto_batch_size(work.get("batch_size", AUTO), images)  # the methods' default
    if method == "smoothgrad":
        return input_passes(work.get("n_samples", 50), chunk)
    if method == "integrated_gradients":
        return input_passes(work.get("steps", 50), chunk)
    if method in ("gradcam", "gradcam_pp", "layercam", "normgrad", "selective_normgrad", "linear_approx", "layer_gradient",
                  "normgrad_conv"):
        return lambda: layer_pass(classifier, images, targets, layer)
    if method == "scorecam":
        channels = layer_pass(classifier, images[:1], targets[:1], layer).activations.shape[1]
        return forward_only(channels + 1, chunk)  # the activations, then one masked image per channel
    if method == "rise":
        return forward_only(work.get("n_masks", 8000), chunk)
    if method == "cameras":
        from .saliency.cameras import scale_sizes

        sizes = scale_sizes(tuple(images.shape[-2:]), scales=work.get("scales"), steps=work.get("steps", 7),
                            max_scale=work.get("max_scale", 1000))
        scaled = [torch.nn.functional.interpolate(images, size=s, mode="bicubic") for s in sizes]
        batch_size = work.get("batch_size", 8)
        return lambda: [layer_pass(classifier, x, targets, layer, batch_size=batch_size) for x in scaled]
    if method == "groupcam":
        passes = forward_only(work.get("groups", 32) + 1, chunk)
        return lambda: (layer_pass(classifier, images, targets, layer, batch_size=chunk), passes())
    return None


def peers(classifier, images: torch.Tensor, targets: torch.Tensor, method: str, work: dict | None = None) -> dict[str, Callable[[], object]]:
    """Callables of the installed peer libraries doing ``method``'s work, keyed by a label.

    Peers get a copy of the network with trainable parameters, as a user's model comes
    (pytorch-grad-cam back-propagates to whatever requires grad).
    """
    work = dict(WORK.get(method, {}) if work is None else work)
    module = copy.deepcopy(classifier.model).requires_grad_(True)
    layer_name, _ = resolve_layer(classifier, work.get("layer", "last"))
    layer = dict(module.named_modules())[layer_name]
    chunk = auto_batch_size(work.get("batch_size", AUTO), images) or images.shape[0]  # ours, given to the peers too
    found: dict[str, Callable[[], object]] = {}
    try:
        with warnings.catch_warnings():  # its import of tqdm.auto warns outside Jupyter widgets
            warnings.simplefilter("ignore")
            from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
            from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cams = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "layercam": LayerCAM, "scorecam": ScoreCAM}
        if method in cams:
            def run_grad_cam(cls=cams[method]):
                quiet = contextlib.redirect_stderr(io.StringIO())  # its Score-CAM draws a progress bar per image
                with quiet, cls(model=module, target_layers=[layer]) as cam:
                    cam.batch_size = chunk  # Score-CAM's masked images per pass, as ours
                    cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            found["pytorch-grad-cam"] = run_grad_cam
    except ImportError:
        pass
    try:
        from captum import attr

        with_grad = lambda: images.clone().requires_grad_(True)
        if method == "gradient":
            found["captum"] = lambda: attr.Saliency(module).attribute(with_grad(), target=targets, abs=True)
        elif method == "smoothgrad":
            span = float(images.max() - images.min())
            found["captum"] = lambda: attr.NoiseTunnel(attr.Saliency(module)).attribute(
                with_grad(), nt_type="smoothgrad", nt_samples=work.get("n_samples", 50), nt_samples_batch_size=chunk,
                stdevs=0.15 * span, target=targets, abs=False)
        elif method == "integrated_gradients":
            found["captum"] = lambda: attr.IntegratedGradients(module).attribute(
                images.clone(), baselines=0.0, target=targets, n_steps=work.get("steps", 50),
                method="riemann_trapezoid", internal_batch_size=chunk)
        elif method == "guided_backprop":
            # captum overrides nn.ReLU only; on a ReLU6 network it computes a plain gradient.
            found["captum (ReLU only)"] = lambda: attr.GuidedBackprop(module).attribute(with_grad(), target=targets)
    except ImportError:
        pass
    try:
        from torchcam import methods as torchcam

        # torchcam's ScoreCAM is left out: 2 images at stage7 (320 channels) took 423 s here, beyond any budget.
        cams = {"gradcam": torchcam.GradCAM, "gradcam_pp": torchcam.GradCAMpp, "layercam": torchcam.LayerCAM}
        if method in cams:
            def run_torchcam(cls=cams[method]):
                with cls(module, target_layer=layer_name) as extractor:
                    extractor(class_idx=targets.tolist(), scores=module(images))
            found["torchcam"] = run_torchcam
    except ImportError:
        pass
    return found


def _row(method: str, batch: int, label: str, ours: Measurement, floor_: Measurement | None, theirs: Measurement | None) -> dict:
    nan = float("nan")
    return {
        "method": method,
        "batch": batch,
        "ours ms/img": 1000 * ours.seconds / batch,
        "ours peak MiB": ours.peak_mib,
        "floor ms/img": 1000 * floor_.seconds / batch if floor_ else nan,
        "ours / floor": ours.seconds / floor_.seconds if floor_ else nan,
        "peer": label,
        "peer ms/img": 1000 * theirs.seconds / batch if theirs else nan,
        "peer peak MiB": theirs.peak_mib if theirs else nan,
        "ours / peer": ours.seconds / theirs.seconds if theirs else nan,
    }


def compare(classifier, methods, batches=(1, 16), *, work: dict | None = None, repeats: int = 3, budget: float = 30.0,
            seed: int = 0, progress: Callable | None = None) -> list[dict]:
    """One row per (method, batch, peer) with our time, the floor and the peer's time.

    Args:
        classifier: a ``lib.models.Classifier``.
        methods: names in ``lib.saliency.METHODS``.
        batches: batch sizes; the images are seeded noise at the model's input size and
            the targets the model's predictions for them.
        work: per-method keyword arguments for us and the peers (default :data:`WORK`).
        progress: wraps the loop over (batch, method) pairs, e.g. ``lib.progress.track``.

    Returns:
        Rows with the columns of :func:`_row` (ratios are NaN without a floor or a peer).
    """
    work = WORK if work is None else work
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

        def forwards():
            with prepared(classifier) as module:
                _forwards(module, images, passes, auto_batch_size(batch_size, images))

        rows.append(_row(f"insertion+deletion (step {step})", batch, "RISE-style loop", ours,
                         measure(forwards, device, repeats, budget), measure(reference, device, repeats, budget)))
    return rows
