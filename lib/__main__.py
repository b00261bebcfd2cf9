"""Explain one image from the command line.

    python -m lib explain IMAGE [--model efficientnet_lite0] [--method cameras]
                                [--target CLASS] [--layer last] [--out map.png]

Prints the model's top-5 classes and writes the image with the saliency map over it.
``--target`` is a class index (ASCII digits) or a (unique part of a) class name; by default
the predicted class.  ``--out`` is checked before any work is done:

- a file name with one of :data:`OUT_FORMATS` as extension is written as such;
- a name without extension gets ``.png`` (``--out overlay`` writes ``overlay.png``);
- an existing folder, or a name ending in ``/``, receives ``<image stem>.png``
  (``--out maps/`` with ``cat.jpg`` writes ``maps/cat.png``; missing folders are created);
- anything else (an unknown extension, a path under a file, in ``/proc``, ``/sys`` or ``/dev``,
  an existing non-regular file, a folder that cannot be written) is refused.

The path printed after ``wrote`` is the file actually written.  Every error (a bad argument,
an unreadable or oversized image, a layer that is not a feature map, an unwritable output)
is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import inspect
import os
import re
import sys
from pathlib import Path

#: Extensions ``--out`` accepts (matplotlib writes them; the raster ones through Pillow).
OUT_FORMATS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".pdf", ".svg")

#: Folders no overlay is written into (kernel interfaces and devices, not files).
_SPECIAL_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))


class UsageError(Exception):
    """A mistake of the caller, reported in one line."""


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (a :class:`UsageError`), not usage plus message."""

    def error(self, message: str):  # noqa: D401 - argparse's hook
        raise UsageError(f"{self.prog}: {message} (see {self.prog} --help)")


def _one_line(error: BaseException) -> str:
    """An exception's message on one line (lines joined with ``"; "``)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return "; ".join(lines) or error.__class__.__name__


def _target(value: str | None, categories: list[str]) -> int | None:
    """The class index ``--target`` names.

    Args:
        value: ASCII digits (an index, optionally signed), or a case-insensitive part of a class
            name; None for the predicted class.
        categories: the classifier's class names.

    Returns:
        The class index, or None.

    Raises:
        UsageError: an index outside ``[0, len(categories))``, a name matching no class or
            several.
    """
    if value is None:
        return None
    text = value.strip()
    if re.fullmatch(r"[+-]?[0-9]+", text):  # ASCII only: "²".isdigit() is true, int("²") fails
        try:
            index = int(text)
        except ValueError:  # more digits than Python converts
            raise UsageError(f"target {text[:20]}... has {len(text)} digits; give a class index 0..{len(categories) - 1}") from None
        if not 0 <= index < len(categories):
            raise UsageError(f"target {index} is outside [0, {len(categories)})")
        return index
    if not text:
        raise UsageError(f"target is empty; give a class index 0..{len(categories) - 1} or part of a class name")
    matches = [i for i, name in enumerate(categories) if text.lower() in name.lower()]
    exact = [i for i in matches if categories[i].lower() == text.lower()]
    if len(exact) == 1 or len(matches) == 1:
        return (exact or matches)[0]
    if not matches:
        raise UsageError(f"no class name contains {text!r}; give a class index 0..{len(categories) - 1} "
                         "(ASCII digits) or part of a class name")
    raise UsageError(f"{text!r} matches {len(matches)} classes ({', '.join(categories[i] for i in matches[:5])}, ...); give an index")


def _output_path(out: str, image: str) -> Path:
    """The file ``--out`` asks for, checked before any work is done (see the module docstring).

    Args:
        out: the ``--out`` argument.
        image: the input image's path (its stem names the file written into a folder).

    Returns:
        The path to write (with its extension).

    Raises:
        UsageError: an empty value, an unknown extension, a path under a file, in ``/proc``,
            ``/sys`` or ``/dev``, an existing folder or non-regular file under an extension, a
            folder without write permission.
    """
    if not out.strip():
        raise UsageError("--out is empty; give a file name such as map.png or a folder")
    path = Path(out).expanduser()
    if out.endswith(("/", os.sep)) or path.is_dir():
        path = path / f"{Path(image).stem}.png"
    elif not path.suffix:
        path = path.with_name(path.name + ".png")
    formats = ", ".join(OUT_FORMATS)
    if path.suffix.lower() not in OUT_FORMATS:
        raise UsageError(f"--out {out}: unknown extension {path.suffix!r}; the overlay can be written as {formats} "
                         "(no extension: .png; a folder: <image stem>.png inside it)")
    resolved = path.resolve()
    for special in _SPECIAL_FOLDERS:
        if resolved == special or special in resolved.parents:
            raise UsageError(f"--out {out}: {resolved} is under {special}, which holds no regular files; "
                             "write the overlay into an ordinary folder")
    if resolved.exists() and not resolved.is_file():
        raise UsageError(f"--out {out}: {resolved} exists and is not a regular file; give a new or regular file name")
    ancestor = resolved.parent
    while not ancestor.exists() and ancestor != ancestor.parent:
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise UsageError(f"--out {out}: {ancestor} is a file, not a folder, so {resolved} cannot be created")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise UsageError(f"--out {out}: cannot write in {ancestor} (permission denied)")
    return path


def _check_layer(method, name: str, classifier, layer: str) -> None:
    """Refuse a ``--layer`` the method cannot use, before computing any map.

    A layer that exists but is not a feature map (``classifier``) is refused by the method
    itself, as one line.

    Raises:
        UsageError: the method takes no layer, or the layer is unknown.
    """
    from .capture import resolve_layer
    from .saliency import REGISTRY

    try:
        takes = "layer" in inspect.signature(method).parameters
    except (TypeError, ValueError):  # a callable without a signature: let the method decide
        return
    if not takes:
        layered = ", ".join(n for n, entry in REGISTRY.items() if entry.takes_layer)
        raise UsageError(f"{name} takes no --layer; the methods that do: {layered}")
    try:
        resolve_layer(classifier, layer)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--layer {layer}: {_one_line(error)}") from error


def explain(args: argparse.Namespace) -> int:
    """Run ``explain`` (see the module docstring).

    Returns:
        0 once the overlay is written.

    Raises:
        UsageError: any bad input, as one line.
    """
    try:
        out = _output_path(args.out, args.image)  # before any work: a bad --out fails at once
    except (OSError, RuntimeError) as error:  # a name too long for the file system, a symlink loop
        raise UsageError(f"--out {args.out}: {_one_line(error)}") from error

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from . import data, models, plot
    from .saliency import resolve_method

    try:
        image = data.open_image(args.image)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read image: {_one_line(error)}") from error  # the message names the file
    try:
        method = resolve_method(args.method)
    except (TypeError, ValueError) as error:
        raise UsageError(_one_line(error)) from error
    try:
        classifier = models.load(args.model, download=False)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    target = _target(args.target, classifier.categories)
    x = classifier.preprocess(image).unsqueeze(0)
    if args.layer is not None:
        _check_layer(method, args.method, classifier, args.layer)
    with torch.no_grad():
        probabilities = classifier(x).softmax(dim=1)[0]
    top = probabilities.topk(5)
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{p:7.2%}  {i:4d}  {classifier.categories[i]}")
    chosen = int(top.indices[0]) if target is None else target
    kwargs = {"layer": args.layer} if args.layer is not None else {}
    try:
        saliency = method(classifier, x, torch.tensor([chosen]), **kwargs)[0]
    except (TypeError, ValueError) as error:
        raise UsageError(f"{args.method}: {_one_line(error)}") from error
    fig, ax = plt.subplots(figsize=(4, 4))
    try:
        plot.overlay(ax, classifier.denormalize(x)[0], saliency,
                     title=f"{args.method}: {classifier.categories[chosen]} ({float(probabilities[chosen]):.1%})")
        try:
            out.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(out, dpi=150, bbox_inches="tight")
        except (OSError, ValueError) as error:
            raise UsageError(f"cannot write {out}: {_one_line(error)}") from error
    finally:
        plt.close(fig)
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after a one-line error on stderr)."""
    parser = _Parser(prog="python -m lib", description="Saliency maps from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("explain", help="top-5 classes and a saliency overlay for one image")
    one.add_argument("image", help="path of an image file (JPEG, PNG, 16-bit PNG, float TIFF, ...)")
    one.add_argument("--model", default="efficientnet_lite0", help="a lib.models.load name (default: efficientnet_lite0)")
    one.add_argument("--method", default="cameras", help="a lib.saliency.METHODS name (default: cameras)")
    one.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    one.add_argument("--layer", default=None, help="layer for CAM-type methods (default: the method's)")
    one.add_argument("--out", default="map.png",
                     help=f"file to write ({', '.join(OUT_FORMATS)}; no extension: .png) or a folder, which "
                          "receives <image stem>.png (default: map.png)")
    try:
        args = parser.parse_args(argv)
        return explain(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
