#!/usr/bin/env python
"""Download, verify and unpack the public datasets the book can use.

Standard library only (urllib, hashlib, tarfile, zipfile), so it runs before the environment
is built. Every archive is checked against its sha256 before it is unpacked; an archive already
present with the right checksum is not fetched again.

    python scripts/download_data.py --list
    python scripts/download_data.py voc2007-test            # into $SALIENCY_DATA (or ./data)
    python scripts/download_data.py coco2014-val --root /big/disk/data

Recipes (see data/README.md for licences and the resulting layout):

- ``voc2007-test``: PASCAL VOC 2007 test set (4,952 images, 451 MB) -> ``VOCdevkit/VOC2007``.
- ``coco2014-val``: COCO 2014 val images (40,504, 6.6 GB) and the 2014 train/val annotations
  (253 MB) -> ``coco2014/val2014`` and ``coco2014/annotations``.
- ``coco128``: the book's COCO evaluation set, the first 128 images of COCO train2017 and of
  val2017 (256 files, 42.5 MB, fetched one by one from ``images.cocodataset.org`` and each
  checked against ``data/coco128.sha256``) and the COCO 2017 train/val annotations (253 MB,
  read in place from the zip), converted to the YOLO layout of ``lib.data.coco`` ->
  ``coco128/images``, ``coco128/labels_detection``, ``coco128/labels_segmentation``,
  ``coco128/names.yaml``. The labels it derives are checked against
  ``data/coco128-objects.csv`` (objects per image of the book's copy) before they are put in
  place.
- ``imagenet-val``: cannot be downloaded by a script (ImageNet requires an account and
  acceptance of its terms); prints the manual steps.

Checksums: the sha256 values of the archives are those pinned by TensorFlow Datasets
(``tensorflow_datasets/url_checksums/{voc,coco}.txt``); the VOC md5 is the one torchvision
pins. The COCO128 images are pinned one by one by ``data/coco128.sha256``, computed from the
copy the book was built from. Sizes are in bytes.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import csv
import hashlib
import importlib.util
import json
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


class ChecksumError(ValueError):
    """A file's sha256 differs from the expected value."""


@dataclass(frozen=True)
class Archive:
    """One file to fetch: where from, its checksum and where its contents go."""

    url: str
    sha256: str
    size: int | None = None
    mirrors: tuple[str, ...] = ()
    extract_to: str | None = "."  # relative to the data root; None: kept as is, not unpacked
    md5: str | None = None  # informational (the value other tools pin)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    archives: tuple[Archive, ...] = ()
    produces: tuple[str, ...] = ()  # folders that exist under the data root when done
    manual: str | None = None  # instructions when the data cannot be fetched by a script
    licence: str = ""
    # A step run once the archives are downloaded and unpacked: build(root, archive_paths, quiet)
    # with the archives' local paths in the order of ``archives``. It fetches what is not an
    # archive and writes derived files (COCO128: the images one by one, the YOLO labels).
    build: Callable[[Path, list[Path], bool], None] | None = None
    extra_size: int = 0  # bytes the build step downloads besides the archives


IMAGENET_MANUAL = """\
ImageNet cannot be downloaded by a script: it needs an account and acceptance of the ImageNet
terms of access (non-commercial research and education).

1. Either register at https://image-net.org/download.php and download the ILSVRC 2012
   validation images and the localisation boxes, or join Kaggle's "ImageNet Object
   Localization Challenge" (https://www.kaggle.com/c/imagenet-object-localization-challenge/data)
   and download LOC_val_solution.csv, LOC_synset_mapping.txt and ILSVRC/Data/CLS-LOC/val/.
2. Arrange them as <data root>/imagenet-val/:
       images/ILSVRC2012_val_00000001.JPEG ...   (or keep Kaggle's ILSVRC/Data/CLS-LOC/val/)
       LOC_val_solution.csv
       LOC_synset_mapping.txt
3. Check the first 1,000 images against the manifest:
       cd <data root>/imagenet-val && sha256sum -c <repo>/data/imagenet-val-1000.sha256
   or load them with lib.data.imagenet_val(limit=1000, verify=True).
"""

RECIPES: dict[str, Recipe] = {
    r.name: r
    for r in (
        Recipe(
            name="voc2007-test",
            description="PASCAL VOC 2007 test set: 4,952 images with boxes (451 MB)",
            archives=(
                Archive(
                    url="http://host.robots.ox.ac.uk/pascal/VOC/voc2007/VOCtest_06-Nov-2007.tar",
                    mirrors=("https://pjreddie.com/media/files/VOCtest_06-Nov-2007.tar",),
                    sha256="6836888e2e01dca84577a849d339fa4f73e1e4f135d312430c4856b5609b4892",
                    md5="b6e924de25625d8de591ea690078ad9f",
                    size=451020800,
                    extract_to=".",
                ),
            ),
            produces=("VOCdevkit/VOC2007",),
            licence="PASCAL VOC: images from Flickr under their owners' terms; annotations for research use.",
        ),
        Recipe(
            name="coco2014-val",
            description="COCO 2014 val images (40,504, 6.6 GB) and 2014 annotations (253 MB)",
            archives=(
                Archive(
                    url="http://images.cocodataset.org/annotations/annotations_trainval2014.zip",
                    sha256="031296bbc80c45a1d1f76bf9a90ead27e94e99ec629208449507a4917a3bf009",
                    size=252872794,
                    extract_to="coco2014",
                ),
                Archive(
                    url="http://images.cocodataset.org/zips/val2014.zip",
                    sha256="fe9be816052049c34717e077d9e34aa60814a55679f804cd043e3cbee3b9fde0",
                    size=6645013297,
                    extract_to="coco2014",
                ),
            ),
            produces=("coco2014/val2014", "coco2014/annotations"),
            licence="COCO: annotations CC BY 4.0; images under the Flickr terms of use.",
        ),
        Recipe(
            name="coco128",
            description="COCO128: 256 COCO 2017 images (42.5 MB), labels from the 2017 annotations (253 MB)",
            archives=(
                Archive(
                    url="http://images.cocodataset.org/annotations/annotations_trainval2017.zip",
                    sha256="113a836d90195ee1f884e704da6304dfaaecff1f023f49b6ca93c4aaae470268",
                    size=252907541,
                    extract_to=None,  # read in place: only instances_{train,val}2017.json are used
                ),
            ),
            produces=("coco128/images", "coco128/labels_detection", "coco128/labels_segmentation"),
            licence="COCO: annotations CC BY 4.0; images under the Flickr terms of use.",
            build=lambda root, archives, quiet: build_coco128(root, archives, quiet),  # defined below
            extra_size=42497328,
        ),
        Recipe(
            name="imagenet-val",
            description="ILSVRC 2012 validation images with localisation boxes (manual download)",
            manual=IMAGENET_MANUAL,
            produces=("imagenet-val",),
            licence="ImageNet terms of access: non-commercial research and education.",
        ),
    )
}


def _load_paths_module():
    """``lib/paths.py`` loaded on its own (without importing the ``lib`` package and torch)."""
    spec = importlib.util.spec_from_file_location("_saliency_paths", REPO_ROOT / "lib" / "paths.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_root() -> Path:
    """The data root of ``lib.paths.data_root()``: ``$SALIENCY_DATA`` or ``<repo>/data``."""
    return _load_paths_module().data_root()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for chunk in iter(lambda: file.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: str | os.PathLike, expected: str) -> str:
    """Check ``path`` against the hex digest ``expected``; return the digest.

    Raises:
        FileNotFoundError: the file does not exist.
        ChecksumError: (a ``ValueError``) the digest differs; the message names the file, both
            digests and what to do.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"cannot verify {path}: no such file")
    expected = expected.strip().lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ValueError(f"expected sha256 must be 64 hex digits, got {expected!r}")
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumError(
            f"sha256 mismatch for {path} ({path.stat().st_size} bytes):\n"
            f"  expected {expected}\n  got      {actual}\n"
            "The file is incomplete or not the published one: delete it and download again."
        )
    return actual


def download(url: str, dest: str | os.PathLike, sha256: str, mirrors: tuple[str, ...] = (),
             quiet: bool = False) -> Path:
    """Fetch ``url`` (then each mirror on failure) to ``dest`` and verify it.

    An existing ``dest`` with the right checksum is kept as is. The download goes to
    ``dest.part`` and is renamed only once verified, so an interrupted run leaves no file that
    looks complete.

    Raises:
        ChecksumError: every source served a file and none had the pinned sha256 (the
            published bytes differ from the pinned ones).
        RuntimeError: no verified copy, and at least one source could not be read.
    """
    dest = Path(dest)
    if dest.is_file():
        try:
            verify_sha256(dest, sha256)
            if not quiet:
                print(f"{dest.name}: present, checksum ok")
            return dest
        except ChecksumError:
            if not quiet:
                print(f"{dest.name}: present but checksum differs; downloading again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    errors = []
    mismatches = 0
    for source in (url, *mirrors):
        try:
            if not quiet:
                print(f"downloading {source}")
            with urllib.request.urlopen(source, timeout=60) as response, open(part, "wb") as out:
                total = int(response.headers.get("Content-Length") or 0)
                done = 0
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    done += len(chunk)
                    if not quiet and total:
                        print(f"\r  {done / 1e6:9.1f} / {total / 1e6:.1f} MB", end="", flush=True)
            if not quiet and total:
                print()
            verify_sha256(part, sha256)
            part.replace(dest)
            return dest
        except (OSError, ChecksumError) as error:  # URLError is an OSError
            errors.append(f"{source}: {error}")
            mismatches += isinstance(error, ChecksumError)
            part.unlink(missing_ok=True)
    message = "could not download a verified copy:\n  " + "\n  ".join(errors)
    if mismatches == len(errors):  # every source served a file, none with the pinned bytes
        raise ChecksumError(message)
    raise RuntimeError(message)


def _safe_target(dest: Path, name: str) -> Path:
    target = (dest / name).resolve()
    if target != dest and dest not in target.parents:
        raise ValueError(f"refusing to extract {name!r}: it would land outside {dest}")
    return target


def extract(archive: str | os.PathLike, dest: str | os.PathLike) -> list[str]:
    """Unpack a ``.tar`` (any compression) or ``.zip`` into ``dest``; return the member names.

    Members with absolute paths, ``..`` components or links pointing outside ``dest`` are
    refused (``ValueError``) before anything is written.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    dest = dest.resolve()
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            names = zf.namelist()
            for name in names:
                _safe_target(dest, name)
            zf.extractall(dest)
        return names
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            members = tf.getmembers()
            for member in members:
                _safe_target(dest, member.name)
                if member.issym() or member.islnk():
                    link = Path(member.linkname)
                    if link.is_absolute():
                        raise ValueError(f"refusing to extract {member.name!r}: it links to absolute {link}")
                    base = Path(member.name).parent if member.issym() else Path()
                    _safe_target(dest, str(base / link))
            if hasattr(tarfile, "data_filter"):
                tf.extractall(dest, filter="data")
            else:  # pragma: no cover - Python < 3.11.4
                tf.extractall(dest)
        return [m.name for m in members]
    raise ValueError(f"{archive} is neither a tar nor a zip archive")


# ---------------------------------------------------------------------------------------------
# COCO128: 256 COCO 2017 images fetched one by one, YOLO labels derived from the annotations
# ---------------------------------------------------------------------------------------------

COCO_IMAGES_URL = "http://images.cocodataset.org"
"""COCO serves each image at ``<COCO_IMAGES_URL>/<split>/<file name>``."""

COCO128_SHA256 = REPO_ROOT / "data" / "coco128.sha256"
"""sha256 of the 256 images, ``<sha256>  images/<split>/<file name>`` (relative to coco128/)."""

COCO128_OBJECTS = REPO_ROOT / "data" / "coco128-objects.csv"
"""Objects per image of the book's copy: ``split,id,width,height,n_detection_lines,
n_segmentation_lines,classes`` (an empty count: that label file does not exist)."""

COCO128_SPLITS = ("train2017", "val2017")
COCO128_DIR = "coco128"

COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28,
    31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55,
    56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84,
    85, 86, 87, 88, 89, 90,
)
"""The 80 COCO category ids in sorted order: position = contiguous class 0..79 (as ``lib.data``)."""

COCO_NAMES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich", "orange",
    "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch", "potted plant",
    "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard", "cell phone",
    "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
"""The names of COCO 2017's categories in that order (``names.yaml`` of the book's copy)."""


class LabelMismatchError(ValueError):
    """Labels (or images) differ from the ``data/coco128-objects.csv`` manifest."""


@dataclass(frozen=True)
class ImageObjects:
    """One row of ``data/coco128-objects.csv``: an image and what its label files hold."""

    split: str
    id: str  # file name without ".jpg"
    width: int
    height: int
    n_detection_lines: int | None  # None: no labels_detection/<split>/<id>.txt
    n_segmentation_lines: int | None  # None: no labels_segmentation/<split>/<id>.txt
    classes: tuple[int, ...]  # the detection lines' classes (0..79), sorted, repeated as they occur
    segmentation_classes: tuple[int, ...] | None = None  # distinct, contiguous; not in the CSV

    @property
    def image(self) -> str:
        return f"images/{self.split}/{self.id}.jpg"


COCO128_FIELDS = ("split", "id", "width", "height", "n_detection_lines", "n_segmentation_lines", "classes")


def read_sha256_manifest(path: str | os.PathLike = COCO128_SHA256) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` file, in file order."""
    entries = {}
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            digest, sep, name = line.rstrip("\n").partition("  ")
            if not sep or len(digest) != 64:
                raise ValueError(f"{path}:{number}: expected '<sha256>  <path>', got {line.strip()!r}")
            entries[name] = digest.lower()
    return entries


def read_objects_manifest(path: str | os.PathLike = COCO128_OBJECTS) -> list[ImageObjects]:
    """The rows of ``data/coco128-objects.csv``."""

    def count(value: str) -> int | None:
        return int(value) if value.strip() else None

    with open(path, encoding="utf-8", newline="") as file:
        reader = csv.DictReader(file)
        if tuple(reader.fieldnames or ()) != COCO128_FIELDS:
            raise ValueError(f"{path}: expected the columns {','.join(COCO128_FIELDS)}")
        return [
            ImageObjects(row["split"], row["id"], int(row["width"]), int(row["height"]),
                         count(row["n_detection_lines"]), count(row["n_segmentation_lines"]),
                         tuple(int(c) for c in row["classes"].split()))
            for row in reader
        ]


def write_objects_manifest(entries: Iterable[ImageObjects], path: str | os.PathLike) -> None:
    """Write ``entries`` in the format :func:`read_objects_manifest` reads."""
    with open(path, "w", encoding="utf-8", newline="") as file:
        writer = csv.writer(file, lineterminator="\n")
        writer.writerow(COCO128_FIELDS)
        for e in entries:
            writer.writerow([e.split, e.id, e.width, e.height,
                             "" if e.n_detection_lines is None else e.n_detection_lines,
                             "" if e.n_segmentation_lines is None else e.n_segmentation_lines,
                             " ".join(str(c) for c in e.classes)])


_SOF_MARKERS = frozenset((0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_size(path: str | os.PathLike) -> tuple[int, int]:
    """``(width, height)`` of a JPEG file as stored (its frame header; EXIF orientation ignored)."""
    with open(path, "rb") as file:
        if file.read(2) != b"\xff\xd8":
            raise ValueError(f"{path}: not a JPEG file")
        while True:
            byte = file.read(1)
            while byte and byte != b"\xff":
                byte = file.read(1)
            while byte == b"\xff":
                byte = file.read(1)
            if not byte:
                raise ValueError(f"{path}: no JPEG frame header")
            marker = byte[0]
            if marker == 0x01 or 0xD0 <= marker <= 0xD8:
                continue  # markers without a length
            length = int.from_bytes(file.read(2), "big")
            if marker in _SOF_MARKERS:
                header = file.read(5)
                return int.from_bytes(header[3:5], "big"), int.from_bytes(header[1:3], "big")
            file.seek(length - 2, os.SEEK_CUR)


# --- masks and polygons (COCO's continuous coordinates: pixel (x, y) covers [x, x+1] x [y, y+1])


def rle_counts(segmentation: dict) -> list[int]:
    """Run lengths of a COCO RLE, uncompressed (``counts`` a list) or compressed (a string).

    The string form is decoded as pycocotools' ``rleFrString`` does (6 bits a character, offset
    48, continuation bit 0x20, sign bit 0x10; from the third run on, a run is stored as its
    difference to the run two before).
    """
    counts = segmentation["counts"]
    if isinstance(counts, list):
        return [int(c) for c in counts]
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    runs: list[int] = []
    position = 0
    while position < len(counts):
        value = shift = 0
        more = True
        while more:
            char = ord(counts[position]) - 48
            value |= (char & 0x1F) << shift
            more = bool(char & 0x20)
            position += 1
            shift += 5
            if not more and char & 0x10:
                value |= -1 << shift
        if len(runs) > 2:
            value += runs[-2]
        runs.append(value)
    return runs


def rle_pixels(segmentation: dict) -> tuple[int, int, set[tuple[int, int]]]:
    """``(height, width, {(x, y) of each pixel in the mask})`` of a COCO RLE (column-major runs,
    starting with a run of zeros)."""
    height, width = (int(v) for v in segmentation["size"])
    runs = rle_counts(segmentation)
    if sum(runs) != height * width:
        raise ValueError(f"RLE runs sum to {sum(runs)}, not height * width = {height * width}")
    pixels = set()
    index = 0
    for number, run in enumerate(runs):
        if number % 2:
            for i in range(index, index + run):
                pixels.add((i // height, i % height))
        index += run
    return height, width, pixels


_RIGHT_TURN = {(1, 0): (0, 1), (0, 1): (-1, 0), (-1, 0): (0, -1), (0, -1): (1, 0)}


def mask_outlines(pixels: set[tuple[int, int]]) -> list[list[tuple[int, int]]]:
    """Outer outlines of a pixel mask: one polygon per 4-connected piece, holes left out.

    Each polygon runs along pixel edges (vertices at pixel corners, clockwise on the image, the
    collinear ones dropped), starts at the top-left corner of its top-most, left-most pixel; the
    polygons come in the row-major order of those pixels. Two pixels touching only at a corner
    belong to different pieces (at such a corner the trace turns right, staying on its piece).
    """
    edges: dict[tuple[int, int], list[tuple[int, int]]] = {}  # vertex -> ends of its edges
    order = []
    for x, y in sorted(pixels, key=lambda p: (p[1], p[0])):
        for (nx, ny), start, end in (
            ((x, y - 1), (x, y), (x + 1, y)),  # top, walking right
            ((x + 1, y), (x + 1, y), (x + 1, y + 1)),  # right, walking down
            ((x, y + 1), (x + 1, y + 1), (x, y + 1)),  # bottom, walking left
            ((x - 1, y), (x, y + 1), (x, y)),  # left, walking up
        ):
            if (nx, ny) not in pixels:
                edges.setdefault(start, []).append(end)
                order.append((start, end))
    used = set()
    outlines = []
    for first in order:
        if first in used:
            continue
        loop = []
        edge = first
        while True:
            used.add(edge)
            start, end = edge
            loop.append(start)
            heading = (end[0] - start[0], end[1] - start[1])
            right = _RIGHT_TURN[heading]
            left = (-right[0], -right[1])
            ends = edges[end]
            for turn in (right, heading, left):
                following = (end[0] + turn[0], end[1] + turn[1])
                if following in ends:
                    break
            edge = (end, following)
            if edge == first:
                break
        area = sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(loop, loop[1:] + loop[:1]))
        if area > 0:  # clockwise on the image (y down): an outer outline; holes run the other way
            outlines.append(_drop_collinear(loop))
    return outlines


def _drop_collinear(loop: list[tuple[int, int]]) -> list[tuple[int, int]]:
    kept = []
    for i, (x, y) in enumerate(loop):
        px, py = loop[i - 1]
        nx, ny = loop[(i + 1) % len(loop)]
        if (x - px) * (ny - y) - (y - py) * (nx - x) != 0:
            kept.append((x, y))
    return kept


def merge_parts(parts: Sequence[Sequence[tuple[float, float]]]) -> list[tuple[float, float]]:
    """One polygon from several: each part is joined to the next by a two-way cut between
    their closest vertices (the first closest pair in vertex order), so that the outline goes
    round every part once, as Ultralytics' ``merge_multi_segment`` does for YOLO files (one
    line an object). A single part is returned as it is."""
    parts = [list(p) for p in parts]

    def tour(i: int, entry: int) -> list[tuple[float, float]]:
        part = parts[i]
        n = len(part)
        loop = [part[(entry + k) % n] for k in range(n + 1)]  # closed: ends where it starts
        if i + 1 < len(parts):
            best = None
            for a, (ax, ay) in enumerate(part):
                for b, (bx, by) in enumerate(parts[i + 1]):
                    d = (ax - bx) ** 2 + (ay - by) ** 2
                    if best is None or d < best[0]:
                        best = (d, a, b)
            _, a, b = best
            at = (a - entry) % n
            loop = loop[:at + 1] + tour(i + 1, b) + loop[at:]
        return loop

    merged = tour(0, 0)[:-1]
    return [p for k, p in enumerate(merged) if k == 0 or p != merged[k - 1]]


def _annotation_polygon(segmentation, width: int, height: int) -> list[tuple[float, float]] | None:
    """The polygon written for one annotation: its polygons (or its RLE mask's outlines) merged."""
    if isinstance(segmentation, dict):
        parts = mask_outlines(rle_pixels(segmentation)[2])
    else:
        parts = [list(zip(p[0::2], p[1::2])) for p in segmentation if len(p) >= 6]
    if not parts:
        return None
    return merge_parts(parts)


def _fmt(value: float) -> str:
    return f"{min(max(value, 0.0), 1.0):.6f}"


def coco_to_yolo(
    instances: dict,
    dest: str | os.PathLike,
    split: str,
    images: Iterable[str] | None = None,
    segment_images: Iterable[str] | None = None,
) -> dict[str, tuple[int, int]]:
    """Write COCO instances as the YOLO label files that ``lib.data.coco`` reads.

    Args:
        instances: a parsed ``instances_<split>.json`` (``images``, ``annotations``,
            ``categories``; entries that are ``None`` are skipped).
        dest: the dataset folder; writes ``labels_detection/<split>/<id>.txt`` and
            ``labels_segmentation/<split>/<id>.txt`` under it.
        images: file names to convert (default: every image of ``instances``).
        segment_images: ids (file names without extension) that get a segmentation file
            (default: all of ``images``).

    Detection lines ``class cx cy w h``: COCO's ``bbox [x, y, w, h]`` becomes
    ``(x + w/2)/W, (y + h/2)/H, w/W, h/H`` written with ``%g``, the class is the contiguous index
    0..79 of the category in sorted-id order; one line per annotation in the JSON's order,
    **crowd objects left out** (as in the book's copy and Ultralytics' converters), as are boxes
    of zero width or height. An image without such a line gets no detection file.

    Segmentation lines ``category_id x1 y1 ...``: numbered by **COCO category id** (as the book's
    copy; ``lib.data.coco``'s default ``segment_classes="coco_ids"``), coordinates divided by
    W, H, clipped to [0, 1], with 6 decimals, one line per annotation, **crowd objects
    included** (their RLE masks traced to outlines), sorted by category id (stably). An
    object drawn as several polygons (or a mask in several pieces) becomes one line
    (:func:`merge_parts`); polygons of fewer than 3 points are left out. An image in
    ``segment_images`` with no object gets an empty file.

    Returns:
        ``{file name: (width, height)}`` of the converted images, from the JSON.
    """
    dest = Path(dest)
    contiguous = {c: i for i, c in enumerate(sorted(int(c["id"]) for c in instances["categories"] if c))}
    by_name = {im["file_name"]: im for im in instances["images"] if im}
    names = list(images) if images is not None else sorted(by_name)
    absent = [n for n in names if n not in by_name]
    if absent:
        raise ValueError(f"{split}: {len(absent)} images are not in the annotations, e.g. {absent[0]}")
    wanted = {by_name[n]["id"] for n in names}
    objects: dict[int, list[dict]] = {i: [] for i in wanted}
    for annotation in instances["annotations"]:
        if annotation and annotation["image_id"] in wanted:
            objects[annotation["image_id"]].append(annotation)
    with_segments = None if segment_images is None else set(segment_images)
    detection_dir = dest / "labels_detection" / split
    segmentation_dir = dest / "labels_segmentation" / split
    detection_dir.mkdir(parents=True, exist_ok=True)
    segmentation_dir.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in names:
        image = by_name[name]
        width, height = int(image["width"]), int(image["height"])
        sizes[name] = (width, height)
        stem = name.rsplit(".", 1)[0]
        detection, segmentation = [], []
        for annotation in objects[image["id"]]:
            category = int(annotation["category_id"])
            if not annotation.get("iscrowd"):
                x, y, w, h = (float(v) for v in annotation["bbox"])
                if w > 0 and h > 0:
                    detection.append(f"{contiguous[category]} {(x + w / 2) / width:g} {(y + h / 2) / height:g} "
                                     f"{w / width:g} {h / height:g}\n")
            if with_segments is None or stem in with_segments:
                polygon = _annotation_polygon(annotation.get("segmentation") or [], width, height)
                if polygon is not None and len(polygon) >= 3:
                    values = " ".join(f"{_fmt(px / width)} {_fmt(py / height)}" for px, py in polygon)
                    segmentation.append((category, f"{category} {values}\n"))
        if detection:
            (detection_dir / f"{stem}.txt").write_text("".join(detection), encoding="utf-8")
        if with_segments is None or stem in with_segments:
            segmentation.sort(key=lambda item: item[0])
            (segmentation_dir / f"{stem}.txt").write_text("".join(line for _, line in segmentation), encoding="utf-8")
    return sizes


def write_names_yaml(categories: Sequence[dict], dest: str | os.PathLike) -> Path:
    """``names.yaml`` (``names: {0: person, ...}``, categories in sorted-id order) under ``dest``."""
    ordered = sorted((c for c in categories if c), key=lambda c: int(c["id"]))
    lines = ["# COCO128 in the YOLO layout, written by scripts/download_data.py", "path: .",
             "train: images/train2017", "val: images/val2017", "", "names:"]
    lines += [f"  {i}: {c['name']}" for i, c in enumerate(ordered)]
    path = Path(dest) / "names.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def load_instances(archive: str | os.PathLike, split: str, images: Iterable[str] | None = None) -> dict:
    """``annotations/instances_<split>.json`` read from the annotations zip without unpacking it.

    With ``images`` (file names), only their entries and annotations are kept while the JSON is
    parsed (the others become ``None``), so that train2017's 448 MB file fits in about 1.5 GB.
    """
    names = set(images) if images is not None else None
    ids = {int(n.split(".")[0]) for n in names if n.split(".")[0].isdigit()} if names is not None else set()

    def keep(obj: dict):
        if names is None:
            return obj
        if "image_id" in obj and "category_id" in obj:  # an annotation
            return obj if obj["image_id"] in ids else None
        if "file_name" in obj and "id" in obj:  # an image
            if obj["file_name"] not in names:
                return None
            ids.add(obj["id"])
        return obj

    with zipfile.ZipFile(archive) as zf:
        member = next((n for n in zf.namelist() if n.endswith(f"instances_{split}.json")), None)
        if member is None:
            raise ValueError(f"{archive}: no instances_{split}.json inside")
        text = zf.read(member).decode("utf-8")
    return json.loads(text, object_hook=keep)


def _read_label_file(path: Path) -> list[list[str]] | None:
    if not path.is_file():
        return None
    return [line.split() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def summarise_coco128(root: str | os.PathLike, labels_root: str | os.PathLike | None = None) -> list[ImageObjects]:
    """One :class:`ImageObjects` per image under ``<root>/images/<split>/`` (train2017, val2017),
    with the label files of ``labels_root`` (default ``root``): the rows of the manifest."""
    root = Path(root)
    labels_root = Path(labels_root) if labels_root is not None else root
    to_contiguous = {c: i for i, c in enumerate(COCO_CATEGORY_IDS)}
    rows = []
    for split in COCO128_SPLITS:
        folder = root / "images" / split
        names = sorted(p.name for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []
        for name in names:
            stem = name.rsplit(".", 1)[0]
            width, height = jpeg_size(folder / name)
            detection = _read_label_file(labels_root / "labels_detection" / split / f"{stem}.txt")
            segmentation = _read_label_file(labels_root / "labels_segmentation" / split / f"{stem}.txt")
            classes = tuple(sorted(int(line[0]) for line in detection)) if detection is not None else ()
            segmentation_classes = None
            if segmentation is not None:
                segmentation_classes = tuple(sorted({to_contiguous.get(int(line[0]), -1) for line in segmentation}))
            rows.append(ImageObjects(split, stem, width, height,
                                     None if detection is None else len(detection),
                                     None if segmentation is None else len(segmentation),
                                     classes, segmentation_classes))
    return rows


def check_coco128(
    root: str | os.PathLike,
    labels_root: str | os.PathLike | None = None,
    *,
    hashes: bool = True,
    strict_segments: bool = True,
    manifest: str | os.PathLike = COCO128_OBJECTS,
    sha256_manifest: str | os.PathLike = COCO128_SHA256,
) -> list[str]:
    """Check a COCO128 folder against the manifests; raise at the first image that differs.

    Checked for every image of ``manifest``, in its order: the image is there and no other is
    under ``images/train2017`` or ``images/val2017``; its sha256 (``hashes``); its width and
    height; whether each label file exists; the number of detection lines and their classes;
    that the segmentation lines name the same classes; their number (``strict_segments``;
    otherwise each difference is returned as a note).

    Raises:
        LabelMismatchError: (a ``ValueError``) naming the first image that differs, the field,
            both values and the manifest.
    """
    root = Path(root)
    expected = read_objects_manifest(manifest)
    found = {(e.split, e.id): e for e in summarise_coco128(root, labels_root)}
    digests = read_sha256_manifest(sha256_manifest) if hashes else {}
    where = f"(checked against {Path(manifest).name}; labels in {Path(labels_root or root)})"
    extra = sorted(set(found) - {(e.split, e.id) for e in expected})
    if extra:
        raise LabelMismatchError(f"coco128: {root}/images/{extra[0][0]}/{extra[0][1]}.jpg is not in the "
                                 f"manifest ({len(extra)} such images) {where}")
    notes = []
    for want in expected:
        name = f"{want.split}/{want.id}"
        have = found.get((want.split, want.id))
        if have is None:
            raise LabelMismatchError(f"coco128: {name}: image missing: {root / want.image} {where}")
        if hashes:
            if want.image not in digests:
                raise LabelMismatchError(f"coco128: {name}: not in {Path(sha256_manifest).name}")
            try:
                verify_sha256(root / want.image, digests[want.image])
            except ChecksumError as error:
                raise LabelMismatchError(f"coco128: {name}: {error}") from None
        for field, value, target in (
            ("width x height", (have.width, have.height), (want.width, want.height)),
            ("n_detection_lines", have.n_detection_lines, want.n_detection_lines),
            ("detection classes", have.classes, want.classes),
            ("segmentation file", have.n_segmentation_lines is not None, want.n_segmentation_lines is not None),
        ):
            if value != target:
                raise LabelMismatchError(f"coco128: {name}: {field} is {value}, the manifest says {target} {where}")
        if have.n_segmentation_lines is not None and have.segmentation_classes != tuple(sorted(set(want.classes))):
            raise LabelMismatchError(
                f"coco128: {name}: segmentation classes (0..79) are {list(have.segmentation_classes)}, "
                f"the detection classes of the manifest {sorted(set(want.classes))} {where}")
        if have.n_segmentation_lines != want.n_segmentation_lines:
            message = (f"coco128: {name}: n_segmentation_lines is {have.n_segmentation_lines}, "
                       f"the manifest says {want.n_segmentation_lines}")
            if strict_segments:
                raise LabelMismatchError(f"{message} {where}")
            notes.append(message)
    return notes


def fetch_coco128_images(
    root: str | os.PathLike,
    sha256_manifest: str | os.PathLike = COCO128_SHA256,
    base_url: str | None = None,
    workers: int = 8,
    quiet: bool = False,
) -> list[Path]:
    """Download each image of the manifest from ``<base_url>/<split>/<name>`` into
    ``<root>/images/<split>/`` (a present file with the right sha256 is kept), verifying it.

    Raises:
        ChecksumError: the served bytes of an image differ from the manifest's sha256.
        RuntimeError: an image could not be downloaded.
    """
    root = Path(root)
    base = (base_url if base_url is not None else COCO_IMAGES_URL).rstrip("/")
    entries = list(read_sha256_manifest(sha256_manifest).items())
    jobs = []
    for relative, digest in entries:
        parts = Path(relative).parts
        if len(parts) != 3 or parts[0] != "images":
            raise ValueError(f"{sha256_manifest}: expected images/<split>/<file>, got {relative}")
        jobs.append((f"{base}/{parts[1]}/{parts[2]}", root / relative, digest))
    done = []
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        futures = [pool.submit(download, url, dest, digest, (), True) for url, dest, digest in jobs]
        try:
            for number, future in enumerate(futures, 1):
                done.append(future.result())
                if not quiet:
                    print(f"\r  images: {number} / {len(futures)}", end="", flush=True)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
        finally:
            if not quiet and done:
                print()
    return done


def build_coco128(root: Path, archives: list[Path], quiet: bool = False) -> None:
    """The build step of the ``coco128`` recipe (``archives[0]``: annotations_trainval2017.zip).

    Downloads the images, converts the annotations into ``<root>/coco128/.staging``, checks
    images and labels against the manifests and only then moves the labels into place
    (replacing ``labels_detection/``, ``labels_segmentation/`` and ``names.yaml``).
    """
    folder = Path(root) / COCO128_DIR
    if not quiet:
        print(f"downloading the {len(read_sha256_manifest())} COCO128 images into {folder / 'images'}")
    fetch_coco128_images(folder, quiet=quiet)
    expected = read_objects_manifest()
    staging = folder / ".staging"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    categories = None
    for split in COCO128_SPLITS:
        rows = [e for e in expected if e.split == split]
        names = [f"{e.id}.jpg" for e in rows]
        if not quiet:
            print(f"reading instances_{split}.json from {archives[0].name}")
        instances = load_instances(archives[0], split, names)
        sizes = coco_to_yolo(instances, staging, split, names,
                             [e.id for e in rows if e.n_segmentation_lines is not None])
        for e in rows:
            if sizes[f"{e.id}.jpg"] != (e.width, e.height):
                raise LabelMismatchError(f"coco128: {split}/{e.id}: the annotations give the size "
                                         f"{sizes[e.id + '.jpg']}, the manifest {(e.width, e.height)}")
        categories = instances["categories"]
    names_yaml = write_names_yaml(categories, staging)
    found = [line.split(":", 1)[1].strip() for line in names_yaml.read_text().splitlines() if line.startswith("  ")]
    if tuple(found) != COCO_NAMES:
        raise LabelMismatchError(f"coco128: the annotations' categories {found} are not COCO 2017's 80")
    try:
        notes = check_coco128(folder, staging, strict_segments=False)
    except LabelMismatchError as error:
        raise LabelMismatchError(f"{error}\nThe derived labels are left in {staging} for inspection; "
                                 "nothing was put in place.") from None
    for sub in ("labels_detection", "labels_segmentation"):
        if (folder / sub).exists():
            shutil.rmtree(folder / sub)
        (staging / sub).rename(folder / sub)
    (staging / "names.yaml").replace(folder / "names.yaml")
    staging.rmdir()
    if not quiet:
        print(f"coco128: {len(expected)} images, sha256 and objects per image as in "
              f"{COCO128_OBJECTS.name}")
        if notes:
            print(f"note: {len(notes)} images have another number of polygons than the book's copy "
                  "(its polygons were traced from rasterised masks, where an object hidden under "
                  "another has none):\n  " + "\n  ".join(notes))


def fetch(name: str, root: str | os.PathLike | None = None, download_dir: str | os.PathLike | None = None,
          keep_archives: bool = True, quiet: bool = False) -> Path:
    """Run one recipe: download each archive, verify it, unpack it under the data root.

    Args:
        name: a key of :data:`RECIPES`.
        root: the data root (default: ``$SALIENCY_DATA`` or ``<repo>/data``).
        download_dir: where archives are kept (default ``<root>/downloads``).
        keep_archives: keep the archives after unpacking (so a re-run does not fetch again).

    Returns:
        The data root.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose from {', '.join(RECIPES)}")
    recipe = RECIPES[name]
    root = Path(root).expanduser().resolve() if root is not None else default_root()
    if root.exists() and not root.is_dir():
        raise ValueError(f"the data root {root} is a file, not a folder")
    if recipe.manual:
        raise RuntimeError(f"{name} cannot be downloaded automatically:\n{recipe.manual}")
    downloads = Path(download_dir) if download_dir is not None else root / "downloads"
    paths = []
    for archive in recipe.archives:
        if archive.size is not None and not quiet:
            existing = next(p for p in (root, *root.parents) if p.exists())
            free = shutil.disk_usage(existing).free
            needed = (1.1 if archive.extract_to is None else 2.2) * archive.size
            if free < needed:
                print(f"warning: {free / 1e9:.1f} GB free, {archive.filename} needs about "
                      f"{needed / 1e9:.1f} GB to download and unpack")
        path = download(archive.url, downloads / archive.filename, archive.sha256, archive.mirrors, quiet)
        if archive.extract_to is not None:
            if not quiet:
                print(f"unpacking {path.name} into {root / archive.extract_to}")
            extract(path, root / archive.extract_to)
        paths.append(path)
    if recipe.build is not None:
        recipe.build(root, paths, quiet)
    if not keep_archives:
        for path in paths:
            path.unlink(missing_ok=True)
    missing = [p for p in recipe.produces if not (root / p).is_dir()]
    if missing:
        raise RuntimeError(f"{name}: unpacked, but {', '.join(missing)} is missing under {root}")
    if not quiet:
        print(f"{name}: ready under {root}")
    return root


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("recipes", nargs="*", help="recipes to run (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--root", help="data root (default: $SALIENCY_DATA or <repo>/data)")
    parser.add_argument("--download-dir", help="where to keep archives (default: <root>/downloads)")
    parser.add_argument("--delete-archives", action="store_true", help="delete archives once unpacked")
    parser.add_argument("--verify", nargs=2, metavar=("FILE", "SHA256"), help="only check a file's sha256")
    args = parser.parse_args(argv)

    if args.verify:
        try:
            verify_sha256(args.verify[0], args.verify[1])
        except (ChecksumError, FileNotFoundError, ValueError) as error:
            print(error, file=sys.stderr)
            return 1
        print(f"{args.verify[0]}: OK")
        return 0
    if args.list or not args.recipes:
        for recipe in RECIPES.values():
            size = sum(a.size or 0 for a in recipe.archives) + recipe.extra_size
            extra = f", {size / 1e9:.2f} GB" if size else " (manual)"
            print(f"{recipe.name:14s} {recipe.description}{extra}\n{'':14s} -> {', '.join(recipe.produces)}")
        return 0
    unknown = [name for name in args.recipes if name not in RECIPES]
    if unknown:  # before anything is downloaded: a typo in the last name must not cost the first ones' downloads
        print(f"error: unknown recipe {', '.join(map(repr, unknown))}; choose from {', '.join(RECIPES)}", file=sys.stderr)
        return 2
    for name in args.recipes:
        if name in RECIPES and RECIPES[name].manual:
            print(RECIPES[name].manual)
            continue
        try:
            fetch(name, args.root, args.download_dir, keep_archives=not args.delete_archives)
        except (KeyError, RuntimeError, ChecksumError, ValueError, OSError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
