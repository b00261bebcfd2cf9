#!/usr/bin/env python3
"""Per-image insertion and deletion AUCs and pointing hits of one saliency method, sharded over processes.

    python scripts/sharded_eval.py --method gradcam --n-images 4 --out build/sharded_eval/gradcam.csv
    torchrun --standalone --nproc_per_node=2 scripts/sharded_eval.py --method gradcam --n-images 4 \\
        --out build/sharded_eval/gradcam.csv

Run as a plain script it is one process; under ``torchrun`` each process evaluates its
contiguous shard of the images (:func:`lib.distributed.shard`) and the per-image rows are
gathered (:func:`lib.distributed.map_images`). Rank 0 writes the CSV, one row per image
sorted by image id: ``image, label, insertion_auc, deletion_auc, pointing_hit, difficult,
point_x, point_y``. Each image is evaluated alone (a batch of one), so the table is the same,
to the last bit, whatever the number of processes (``tests/test_distributed.py``).

- Images (``--images``): ``embedded``, the six photographs of :func:`lib.data.embedded` (no
  data folder, whatever ``SALIENCY_DATA`` says), or ``image-set``, :func:`lib.data.image_set`
  (ImageNet val when ``SALIENCY_DATA`` holds it); ``--n-images`` keeps the first ``N``.
- Per image: the method's map for the image's label (:data:`lib.saliency.METHODS`); RISE's
  insertion and deletion games (Petsiuk et al. 2018, Sec. 4.1;
  :func:`lib.metrics.insertion_deletion.insertion_deletion`, blur substrates) and the
  pointing game (Zhang et al. 2016; :func:`lib.metrics.pointing.pointing_game`, crop
  protocol, 15 px).
- Profiles (``--profile``, this script's own, not the notebooks'): ``smoke`` uses the
  method's ``light`` settings of the registry and 16 steps per game; ``quick`` its ``work``
  settings and RISE's 224 pixels per step; ``full`` its defaults and 224 pixels per step.
  ``--step`` overrides the pixels per step.
- Devices (``--backend``): ``auto`` is NCCL with one GPU per process when CUDA is available,
  else gloo on the CPU; ``gloo`` keeps every process on the CPU.

Exit status 0 on success, 2 for a bad argument (one line on stderr).
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

import lib  # noqa: E402  (this checkout's lib, not an installed one)
from lib import distributed  # noqa: E402
from lib.metrics.insertion_deletion import RISE_STEP, insertion_deletion  # noqa: E402
from lib.metrics.pointing import pointing_game  # noqa: E402
from lib.saliency import registry  # noqa: E402

PROFILES = ("smoke", "quick", "full")
"""``--profile`` values: the method's registry settings ``light``, ``work`` or its defaults."""

SMOKE_STEPS = 16
"""Steps per insertion/deletion game in the smoke profile (RISE's protocol takes 224 at 224 x 224)."""

COLUMNS = ("image", "label", "insertion_auc", "deletion_auc", "pointing_hit", "difficult", "point_x", "point_y")


class UsageError(Exception):
    """A bad argument, reported in one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="sharded_eval.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--method", default="gradcam", help="a lib.saliency.METHODS name (default: gradcam)")
    parser.add_argument("--model", default="efficientnet_lite0", help="a lib.models.load name (default: efficientnet_lite0)")
    parser.add_argument("--images", choices=("embedded", "image-set"), default="embedded",
                        help="embedded photographs, or lib.data.image_set (ImageNet val via SALIENCY_DATA)")
    parser.add_argument("--n-images", type=int, default=None, help="evaluate the first N images (default: all)")
    parser.add_argument("--profile", choices=PROFILES, default="smoke", help="settings and steps (default: smoke)")
    parser.add_argument("--step", type=int, default=None, help="pixels per insertion/deletion step (default: the profile's)")
    parser.add_argument("--backend", choices=distributed.BACKENDS, default="auto",
                        help="process-group backend and device (default: auto, NCCL on GPUs, else gloo)")
    parser.add_argument("--out", required=True, help="the CSV file rank 0 writes")
    args = parser.parse_args(argv)
    if args.n_images is not None and args.n_images < 1:
        raise UsageError(f"--n-images must be at least 1, got {args.n_images}")
    if args.step is not None and args.step < 1:
        raise UsageError(f"--step must be a positive number of pixels, got {args.step}")
    out = Path(args.out)
    if out.is_dir() or out.suffix.lower() != ".csv":
        raise UsageError(f"--out must name a .csv file, got {args.out!r}")
    try:
        args.entry = registry.get(args.method)
    except (ValueError, TypeError) as error:
        raise UsageError(f"--method: {error}") from None
    return args


def method_settings(entry: registry.Method, profile: str) -> dict:
    """The method's keyword settings under a profile (smoke: ``light``, quick: ``work``, full: none)."""
    return {"smoke": dict(entry.light), "quick": dict(entry.work), "full": {}}[profile]


def game_step(profile: str, input_size: int, step: int | None) -> int:
    """Pixels per insertion/deletion step: ``step`` if given, else the profile's."""
    if step is not None:
        return step
    return math.ceil(input_size * input_size / SMOKE_STEPS) if profile == "smoke" else RISE_STEP


def image_samples(kind: str, n_images: int | None) -> lib.data.Dataset:
    samples = lib.data.embedded() if kind == "embedded" else lib.data.image_set()
    if n_images is not None and n_images > len(samples):
        raise UsageError(f"--n-images {n_images}: the {samples.name} images number {len(samples)}")
    return samples if n_images is None else samples[:n_images]


def evaluate(classifier, method, settings: dict, step: int, sample, device: torch.device) -> dict:
    """One image's row: its map, both games' AUCs, and its pointing-game outcome."""
    batch = lib.data.batch([sample], classifier.preprocess, classifier.input_size, classifier.crop_fraction).to(device)
    maps = method(classifier, batch.images, batch.labels, **settings)
    scores = insertion_deletion(classifier, batch.images, maps, batch.labels, step=step)
    pointing = pointing_game(maps.detach().cpu(), [sample], input_size=classifier.input_size,
                             crop_fraction=classifier.crop_fraction)
    x, y = pointing.points[0].tolist()
    return {"image": sample.id, "label": int(sample.label), "insertion_auc": float(scores.insertion_auc[0]),
            "deletion_auc": float(scores.deletion_auc[0]), "pointing_hit": int(pointing.hits[0]),
            "difficult": int(pointing.difficult[0]), "point_x": int(x), "point_y": int(y)}


def write_table(rows: list[dict], out: Path) -> None:
    """The rows sorted by image id, floats written with ``repr`` (they read back exactly)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(COLUMNS)
        for row in sorted(rows, key=lambda r: r["image"]):
            writer.writerow([repr(row[c]) if isinstance(row[c], float) else row[c] for c in COLUMNS])


def run(args: argparse.Namespace) -> int:
    world = distributed.world(args.backend)
    try:
        samples = image_samples(args.images, args.n_images)
        classifier = lib.models.load(args.model, device=world.device)
        settings = method_settings(args.entry, args.profile)
        step = game_step(args.profile, classifier.input_size, args.step)
        rows = distributed.map_images(
            lambda sample: evaluate(classifier, args.entry.function, settings, step, sample, world.device),
            samples, world=world)
        if world.is_main:
            out = Path(args.out)
            write_table(rows, out)
            insertion = sum(r["insertion_auc"] for r in rows) / len(rows)
            deletion = sum(r["deletion_auc"] for r in rows) / len(rows)
            hits = sum(r["pointing_hit"] for r in rows)
            print(f"{args.method} on {len(rows)} {samples.name} images, {world.world_size} process(es) on "
                  f"{world.device.type}: insertion AUC {insertion:.4f}, deletion AUC {deletion:.4f}, "
                  f"pointing {hits}/{len(rows)}; wrote {out}")
    finally:
        distributed.shutdown()
    return 0


def main(argv: list[str] | None = None) -> int:
    try:
        return run(parse(argv))
    except UsageError as error:
        print(error, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
