"""Explain one image from the command line.

    python -m lib explain IMAGE [--model efficientnet_lite0] [--method cameras]
                                [--target CLASS] [--layer last] [--out map.png]

Prints the model's top-5 classes and writes the image with the saliency map over it.
``--target`` is a class index or a (unique part of a) class name; by default the
predicted class.  Every error is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


class UsageError(Exception):
    """A mistake of the caller, reported in one line."""


def _target(value: str | None, categories: list[str]) -> int | None:
    if value is None:
        return None
    if value.isdigit():
        index = int(value)
        if not 0 <= index < len(categories):
            raise UsageError(f"target {index} is outside [0, {len(categories)})")
        return index
    matches = [i for i, name in enumerate(categories) if value.lower() in name.lower()]
    exact = [i for i in matches if categories[i].lower() == value.lower()]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise UsageError(f"no class name contains {value!r}")
    raise UsageError(f"{value!r} matches {len(matches)} classes ({', '.join(categories[i] for i in matches[:5])}, ...); give an index")


def explain(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from PIL import Image, UnidentifiedImageError

    from . import models, plot
    from .saliency import METHODS, resolve_method

    try:
        image = Image.open(args.image).convert("RGB")
    except (OSError, UnidentifiedImageError) as error:
        raise UsageError(f"cannot read image {args.image}: {error.__class__.__name__}: {error}") from error
    try:
        method = resolve_method(args.method)
    except ValueError as error:
        raise UsageError(str(error)) from error
    try:
        classifier = models.load(args.model, download=False)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    target = _target(args.target, classifier.categories)
    x = classifier.preprocess(image).unsqueeze(0)
    with torch.no_grad():
        probabilities = classifier(x).softmax(dim=1)[0]
    top = probabilities.topk(5)
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{p:7.2%}  {i:4d}  {classifier.categories[i]}")
    chosen = int(top.indices[0]) if target is None else target
    kwargs = {"layer": args.layer} if args.layer else {}
    try:
        saliency = method(classifier, x, torch.tensor([chosen]), **kwargs)[0]
    except (TypeError, ValueError) as error:
        raise UsageError(f"{args.method}: {error}") from error
    fig, ax = plt.subplots(figsize=(4, 4))
    plot.overlay(ax, classifier.denormalize(x)[0], saliency,
                 title=f"{args.method}: {classifier.categories[chosen]} ({float(probabilities[chosen]):.1%})")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=150, bbox_inches="tight")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lib", description="Saliency maps from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("explain", help="top-5 classes and a saliency overlay for one image")
    one.add_argument("image", help="path of an image file (JPEG, PNG, ...)")
    one.add_argument("--model", default="efficientnet_lite0", help="a lib.models.load name (default: efficientnet_lite0)")
    one.add_argument("--method", default="cameras", help="a lib.saliency.METHODS name (default: cameras)")
    one.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    one.add_argument("--layer", default=None, help="layer for CAM-type methods (default: the method's)")
    one.add_argument("--out", default="map.png", help="where to write the overlay (default: map.png)")
    args = parser.parse_args(argv)
    try:
        return explain(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
