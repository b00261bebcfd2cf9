"""Speed and memory of every baseline beside its peers, in one run; writes a table.

For each method of ``lib.saliency.BASELINES`` on EfficientNet-Lite0 at batch 1 and 16:
median milliseconds per image over repeats, and the peak resident memory the call added
(CPU: Linux's VmHWM after resetting it through /proc/self/clear_refs; CUDA:
``torch.cuda.max_memory_allocated``), beside pytorch-grad-cam (Grad-CAM, Grad-CAM++,
Score-CAM, Layer-CAM), captum (Gradient, SmoothGrad, IG, Guided Backprop) and torchcam
doing the same work.  Not a test: run it with ``make bench``.

    python benchmarks/run_all.py --out benchmarks/results [--batches 1 16] [--repeats 3]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lib  # noqa: E402
from lib import models, provenance  # noqa: E402

# The same reduced work for us and the peers, so a row compares like with like.
WORK = {
    "smoothgrad": {"n_samples": 16},
    "integrated_gradients": {"steps": 16},
    "rise": {"n_masks": 500},
    "scorecam": {"layer": "stage7"},  # 320 channels (one masked forward each) instead of 1,280
}


def _rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def measure(fn, device: torch.device, repeats: int, budget: float = 30.0) -> tuple[float, float]:
    """(median seconds, peak MiB added) of ``fn()`` after one warm-up call; a call slower than
    ``budget`` seconds is measured once."""
    start = time.perf_counter()
    fn()
    if time.perf_counter() - start > budget:
        repeats = 1
    times, peaks = [], []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            base = _rss_kib("VmRSS") * 1024
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        else:
            peak = _rss_kib("VmHWM") * 1024 - base
        times.append(time.perf_counter() - start)
        peaks.append(max(peak, 0) / 2**20)
    return statistics.median(times), statistics.median(peaks)


def peers(classifier, images, targets, name):
    """Callables of peer libraries doing ``name``'s work, keyed by a label; empty when none.

    Peers get a copy of the network with trainable parameters, as a user's model comes
    (pytorch-grad-cam needs it: it back-propagates a loss to whatever requires grad).
    """
    import copy

    from lib.capture import resolve_layer

    module = copy.deepcopy(classifier.model).requires_grad_(True)
    work = WORK.get(name, {})
    layer_name, _ = resolve_layer(classifier, work.get("layer", "last"))
    layer = dict(module.named_modules())[layer_name]
    found = {}
    try:
        from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM, ScoreCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        cams = {"gradcam": GradCAM, "gradcam_pp": GradCAMPlusPlus, "layercam": LayerCAM, "scorecam": ScoreCAM}
        if name in cams:
            def run(cls=cams[name]):
                with cls(model=module, target_layers=[layer]) as cam:
                    if name == "scorecam":
                        cam.batch_size = 64
                    cam(input_tensor=images, targets=[ClassifierOutputTarget(int(t)) for t in targets])
            found["pytorch-grad-cam"] = run
    except ImportError:
        pass
    try:
        from captum import attr

        if name == "gradient":
            found["captum"] = lambda: attr.Saliency(module).attribute(images.clone().requires_grad_(), target=targets, abs=True)
        elif name == "smoothgrad":
            def run():
                span = float(images.max() - images.min())
                attr.NoiseTunnel(attr.Saliency(module)).attribute(
                    images.clone().requires_grad_(), nt_type="smoothgrad", nt_samples=work["n_samples"],
                    nt_samples_batch_size=32, stdevs=0.15 * span, target=targets, abs=False)
            found["captum"] = run
        elif name == "integrated_gradients":
            found["captum"] = lambda: attr.IntegratedGradients(module).attribute(
                images.clone(), baselines=0.0, target=targets, n_steps=work["steps"],
                method="riemann_trapezoid", internal_batch_size=32)
        elif name == "guided_backprop":
            # captum overrides nn.ReLU only; on this ReLU6 network it computes a plain gradient.
            found["captum (ReLU only)"] = lambda: attr.GuidedBackprop(module).attribute(images.clone().requires_grad_(), target=targets)
    except ImportError:
        pass
    try:
        from torchcam import methods as tc

        cams = {"gradcam": tc.GradCAM, "gradcam_pp": tc.GradCAMpp, "layercam": tc.LayerCAM}
        if name in cams:
            def run(cls=cams[name]):
                with cls(module, target_layer=layer_name) as extractor:
                    scores = module(images)
                    extractor(class_idx=targets.tolist(), scores=scores)
            found["torchcam"] = run
    except ImportError:
        pass
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--model", default="efficientnet_lite0")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=list(lib.saliency.BASELINES))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    device = torch.device(args.device)
    classifier = models.load(args.model, device=device)
    size = classifier.input_size
    rows = []
    for batch in args.batches:
        images = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.no_grad():
            targets = classifier(images).argmax(dim=1)
        for name in args.methods:
            method = lib.saliency.METHODS[name]
            ours = measure(lambda: method(classifier, images, targets, **WORK.get(name, {})), device, args.repeats)
            row = {"method": name, "batch": batch, "ours ms/img": 1000 * ours[0] / batch, "ours peak MiB": ours[1]}
            for label, fn in peers(classifier, images, targets, name).items():
                theirs = measure(fn, device, args.repeats)
                rows.append(row | {"peer": label, "peer ms/img": 1000 * theirs[0] / batch, "peer peak MiB": theirs[1],
                                   "time ratio (ours/peer)": ours[0] / theirs[0]})
                print(rows[-1], flush=True)
            if not any(r["method"] == name and r["batch"] == batch for r in rows):
                rows.append(row | {"peer": "-", "peer ms/img": float("nan"), "peer peak MiB": float("nan"), "time ratio (ours/peer)": float("nan")})
                print(rows[-1], flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    with open(args.out / "baselines.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    fmt = lambda v: f"{v:.1f}" if isinstance(v, float) and v == v and abs(v) >= 10 else f"{v:.2f}" if isinstance(v, float) and v == v else ("-" if isinstance(v, float) else str(v))
    lines = [
        f"# Baselines: time and memory beside peers ({args.model})",
        "",
        "```",
        provenance.summary(model=args.model, batches=args.batches, repeats=args.repeats, work=WORK),
        "```",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
        *("| " + " | ".join(fmt(r[c]) for c in columns) + " |" for r in rows),
    ]
    (args.out / "baselines.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out / 'baselines.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
