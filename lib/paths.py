"""Every path the project uses, in one place.

Nothing here depends on the working directory: notebooks executed by papermill, tests and
scripts all resolve the same folders.

- ``REPO_ROOT``: the repository (the folder that holds ``lib/``).
- ``data_root()``: the environment variable ``SALIENCY_DATA`` when it is set and not empty,
  otherwise ``REPO_ROOT / "data"``. A relative value is taken relative to ``REPO_ROOT``
  (not to the working directory), so ``SALIENCY_DATA=../datasets`` means the same folder
  from anywhere.
- ``cache_dir()``: ``SALIENCY_CACHE`` or ``REPO_ROOT / ".cache"``, created on demand.
- One function per dataset gives its folder inside the data root (see ``data/README.md``).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = [
    "REPO_ROOT",
    "DATA_ENV",
    "CACHE_ENV",
    "data_root",
    "cache_dir",
    "imagenet_val_root",
    "coco128_root",
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
    """Folder holding the datasets: ``$SALIENCY_DATA`` or ``REPO_ROOT/data``."""
    return _from_env(DATA_ENV, REPO_ROOT / "data")


def cache_dir() -> Path:
    """Folder for caches (weights, computed tables): ``$SALIENCY_CACHE`` or ``REPO_ROOT/.cache``.

    Created on demand.
    """
    path = _from_env(CACHE_ENV, REPO_ROOT / ".cache")
    path.mkdir(parents=True, exist_ok=True)
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


def voc2007_root(root: str | os.PathLike | None = None) -> Path:
    """PASCAL VOC 2007 in the official devkit layout: ``<data root>/VOCdevkit/VOC2007``."""
    return _sub(root, "VOCdevkit", "VOC2007")


def coco2014_root(root: str | os.PathLike | None = None) -> Path:
    """COCO 2014 in the official layout: ``<data root>/coco2014``."""
    return _sub(root, "coco2014")
