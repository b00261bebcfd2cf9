"""Every path the project uses, in one place.

Nothing here depends on the working directory: notebooks executed by papermill, tests and
scripts all resolve the same folders.

- ``REPO_ROOT``: the repository (the folder that holds ``lib/``).
- ``data_root()``: the environment variable ``SALIENCY_DATA`` when it is set and not empty,
  otherwise ``REPO_ROOT / "data"``. A relative value is taken relative to ``REPO_ROOT``
  (not to the working directory), so ``SALIENCY_DATA=../datasets`` means the same folder
  from anywhere. It only says where the folder is (the downloader fills an empty one).
- ``usable_data_root()``: the same folder, checked when it was chosen on purpose (a non-empty
  ``SALIENCY_DATA`` or an explicit root): it must exist and hold at least one dataset in the
  layout of ``data/README.md``, else ``FileNotFoundError``. What decides between real data and
  the embedded photographs (``lib.data.find_imagenet``, ``image_set``, ``image_source``) uses it,
  so a mistyped ``SALIENCY_DATA`` is an error, never a silent fallback.
- ``cache_dir()``: ``SALIENCY_CACHE`` or ``REPO_ROOT / ".cache"``, created on demand.
- One function per dataset gives its folder inside the data root (see ``data/README.md``).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "DATA_ENV",
    "CACHE_ENV",
    "data_root",
    "data_root_is_set",
    "usable_data_root",
    "DATA_LAYOUT",
    "cache_dir",
    "write_text_atomically",
    "imagenet_val_root",
    "coco128_root",
    "coco128_in",
    "voc2007_root",
    "coco2014_root",
]

REPO_ROOT: Path = Path(__file__).resolve().parent.parent
"""The repository root (parent of ``lib/``)."""

DATA_ENV = "SALIENCY_DATA"
CACHE_ENV = "SALIENCY_CACHE"


def _from_env(name: str, default: Path) -> Path:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    path = Path(value).expanduser()
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path.resolve()


def data_root() -> Path:
    """Folder holding the datasets: ``$SALIENCY_DATA`` or ``REPO_ROOT/data``.

    Not checked (it may not exist yet: ``scripts/download_data.py`` downloads into it); see
    :func:`usable_data_root` for the checked folder.

    Returns:
        The absolute path of the data root.
    """
    return _from_env(DATA_ENV, REPO_ROOT / "data")


def data_root_is_set() -> bool:
    """Whether ``$SALIENCY_DATA`` chooses the data root (set and not empty, blanks aside)."""
    return bool(os.environ.get(DATA_ENV, "").strip())


DATA_LAYOUT = (
    "<data root>/imagenet-val/ (images/ILSVRC2012_val_*.JPEG or Kaggle's ILSVRC/Data/CLS-LOC/val/, "
    "LOC_val_solution.csv, LOC_synset_mapping.txt) and/or <data root>/coco128/ (images/<split>/*.jpg, "
    "labels_detection/<split>/<id>.txt, names.yaml); VOCdevkit/VOC2007/ and coco2014/ count too "
    "(see data/README.md)"
)
"""The layout a data root must have, in words (for error messages)."""


def _layout_problems(root: Path) -> dict[str, list[str]]:
    """``{dataset folder: what it lacks}`` for each dataset folder present under ``root``."""
    checks = {
        "imagenet-val": [
            ("images/ (or ILSVRC/Data/CLS-LOC/val/)",
             lambda d: (d / "images").is_dir() or (d / "ILSVRC" / "Data" / "CLS-LOC" / "val").is_dir()),
            ("LOC_val_solution.csv", lambda d: (d / "LOC_val_solution.csv").is_file()),
            ("LOC_synset_mapping.txt", lambda d: (d / "LOC_synset_mapping.txt").is_file()),
        ],
        "coco128": [
            ("images/<split>/", lambda d: (d / "images").is_dir() and any(p.is_dir() for p in (d / "images").iterdir())),
            ("names.yaml", lambda d: (d / "names.yaml").is_file()),
        ],
        "VOCdevkit/VOC2007": [
            (name, lambda d, name=name: (d / name).is_dir()) for name in ("Annotations", "ImageSets/Main", "JPEGImages")
        ],
        "coco2014": [
            ("annotations/instances_<split>.json",
             lambda d: (d / "annotations").is_dir() and any((d / "annotations").glob("instances_*.json"))),
        ],
    }
    found = {}
    for name, requirements in checks.items():
        folder = root / name
        if folder.is_dir():
            found[name] = [what for what, ok in requirements if not _safe(ok, folder)]
    return found


def _safe(check, folder: Path) -> bool:
    try:
        return bool(check(folder))
    except OSError:  # an unreadable folder holds nothing usable
        return False


def usable_data_root(root: str | os.PathLike | None = None) -> Path:
    """The data root, checked when it was chosen on purpose.

    With ``root`` None and ``$SALIENCY_DATA`` unset or empty, the default ``REPO_ROOT/data`` is
    returned unchecked: it may be absent or hold no dataset (callers then use the embedded
    photographs). A root chosen on purpose (``root``, or a non-empty ``$SALIENCY_DATA``) must be
    an existing folder holding at least one dataset folder in the expected layout
    (:data:`DATA_LAYOUT`); one complete dataset is enough (callers check for the others).

    Args:
        root: an explicit data root (a folder holding ``imagenet-val/``, ``coco128/``, ...),
            relative to the working directory; None: :func:`data_root`.

    Returns:
        The data root (``root`` with ``~`` expanded, else :func:`data_root`).

    Raises:
        FileNotFoundError: the root chosen does not exist, is not a folder, or holds no dataset
            in the expected layout; the message names the path, where it came from, what was
            found and the layout expected.
    """
    if root is None:
        path = data_root()
        if not data_root_is_set():
            return path
        origin = f"${DATA_ENV}={os.environ.get(DATA_ENV, '').strip()!r}"
        remedy = f"; fix ${DATA_ENV}, or unset it (or set it empty) to use ./data or the embedded photographs"
    else:
        path = Path(root).expanduser()
        origin = f"data_root={str(root)!r}"
        remedy = "; pass a data root holding a dataset, or None for the default"
    if not path.exists():
        problem = f"{path} does not exist"
    elif not path.is_dir():
        problem = f"{path} is a file, not a folder"
    else:
        found = _layout_problems(path)
        if any(not missing for missing in found.values()):
            return path
        if found:
            what = "; ".join(f"{name}/ without {', '.join(missing)}" for name, missing in found.items())
        else:
            try:
                entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(path))
            except OSError as error:
                entries = [f"(unreadable: {error.strerror or error})"]
            what = ("the folder is empty" if not entries else
                    "no dataset folder, only " + ", ".join(entries[:8]) + (f" and {len(entries) - 8} more" if len(entries) > 8 else ""))
        problem = f"{path} holds no dataset in the expected layout (found: {what})"
    raise FileNotFoundError(f"{origin} is not a usable data root: {problem}; expected {DATA_LAYOUT}{remedy}")


def cache_dir() -> Path:
    """Folder for caches (weights, computed tables): ``$SALIENCY_CACHE`` or ``REPO_ROOT/.cache``.

    Created on demand.
    """
    path = _from_env(CACHE_ENV, REPO_ROOT / ".cache")
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all.

    The text goes to a uniquely named temporary file beside ``path`` (flushed to disk), which
    then replaces ``path`` in one step (``os.replace``); any failure or interruption on the way
    removes the temporary file and leaves the old ``path`` as it was.

    Raises:
        OSError: the folder cannot be written.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def _sub(root: str | os.PathLike | None, *parts: str) -> Path:
    if root is not None:
        return Path(root).expanduser().resolve()
    return data_root().joinpath(*parts)


def imagenet_val_root(root: str | os.PathLike | None = None) -> Path:
    """ImageNet validation images and localisation CSV: ``<data root>/imagenet-val``."""
    return _sub(root, "imagenet-val")


def coco128_root(root: str | os.PathLike | None = None) -> Path:
    """COCO128 in YOLO layout: ``<data root>/coco128``."""
    return _sub(root, "coco128")


def coco128_in(data_root: str | os.PathLike | None = None) -> Path:
    """COCO128's folder inside a data root: ``<data_root>/coco128`` (None: the configured data root).

    :func:`coco128_root` takes the dataset's own folder; this takes the folder that holds it,
    as the notebooks' ``data_root`` parameter does.
    """
    return coco128_root() if data_root is None else Path(data_root).expanduser().resolve() / "coco128"


def voc2007_root(root: str | os.PathLike | None = None) -> Path:
    """PASCAL VOC 2007 in the official devkit layout: ``<data root>/VOCdevkit/VOC2007``."""
    return _sub(root, "VOCdevkit", "VOC2007")


def coco2014_root(root: str | os.PathLike | None = None) -> Path:
    """COCO 2014 in the official layout: ``<data root>/coco2014``."""
    return _sub(root, "coco2014")
