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
- ``imagenet-val``: cannot be downloaded by a script (ImageNet requires an account and
  acceptance of its terms); prints the manual steps.

Checksums: the sha256 values are those pinned by TensorFlow Datasets
(``tensorflow_datasets/url_checksums/{voc,coco}.txt``); the VOC md5 is the one torchvision
pins. Sizes are in bytes.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import os
import shutil
import sys
import tarfile
import urllib.request
import zipfile
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
    extract_to: str = "."  # relative to the data root
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
            part.unlink(missing_ok=True)
    raise RuntimeError("could not download a verified copy:\n  " + "\n  ".join(errors))


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
    if recipe.manual:
        raise RuntimeError(f"{name} cannot be downloaded automatically:\n{recipe.manual}")
    downloads = Path(download_dir) if download_dir is not None else root / "downloads"
    for archive in recipe.archives:
        if archive.size is not None and not quiet:
            existing = next(p for p in (root, *root.parents) if p.exists())
            free = shutil.disk_usage(existing).free
            if free < 2.2 * archive.size:
                print(f"warning: {free / 1e9:.1f} GB free, {archive.filename} needs about "
                      f"{2.2 * archive.size / 1e9:.1f} GB to download and unpack")
        path = download(archive.url, downloads / archive.filename, archive.sha256, archive.mirrors, quiet)
        if not quiet:
            print(f"unpacking {path.name} into {root / archive.extract_to}")
        extract(path, root / archive.extract_to)
        if not keep_archives:
            path.unlink()
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
            size = sum(a.size or 0 for a in recipe.archives)
            extra = f", {size / 1e9:.2f} GB" if size else " (manual)"
            print(f"{recipe.name:14s} {recipe.description}{extra}\n{'':14s} -> {', '.join(recipe.produces)}")
        return 0
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
