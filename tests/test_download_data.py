"""Tests of the ``coco128`` recipe of scripts/download_data.py and of its manifests.

``data/coco128.sha256`` pins the bytes of the 256 images, ``data/coco128-objects.csv`` what the
label files of the book's copy hold per image. The recipe downloads the images one by one,
derives the labels from COCO's ``instances_<split>.json`` and checks both against these files.
Everything here runs offline: downloads come from ``file://`` URLs. The tests that need the
book's copy of COCO128 look for ``coco128/`` under the data root (``SALIENCY_DATA``, else
``data/``; tests/_data.py) and are skipped when there is none. The other tests of the script are in tests/test_data.py.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from PIL import Image

from lib import data, paths


from _data import COCO128, HAS_COCO128, needs_coco128


@pytest.fixture(scope="module")
def dl():
    spec = importlib.util.spec_from_file_location("download_data", paths.REPO_ROOT / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["download_data"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("download_data", None)


def _categories(dl) -> list[dict]:
    return [{"id": c, "name": n, "supercategory": ""} for c, n in zip(dl.COCO_CATEGORY_IDS, dl.COCO_NAMES)]


def _jpeg(path: Path, size=(8, 6), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------
# (a) the manifests
# ---------------------------------------------------------------------------------------------


def test_manifests_list_the_256_images(dl):
    digests = dl.read_sha256_manifest()
    assert len(digests) == 256 and len(set(digests.values())) == 256
    for split in ("train2017", "val2017"):
        names = [p for p in digests if p.startswith(f"images/{split}/")]
        assert len(names) == 128 and names == sorted(names)
        assert all(len(Path(p).stem) == 12 and Path(p).stem.isdigit() and p.endswith(".jpg") for p in names)
    assert list(digests)[0] == "images/train2017/000000000009.jpg"
    assert list(digests)[128] == "images/val2017/000000000139.jpg"
    assert all(len(d) == 64 and set(d) <= set("0123456789abcdef") for d in digests.values())

    rows = dl.read_objects_manifest()
    assert [r.image for r in rows] == list(digests)  # same images, same order
    for r in rows:
        assert r.n_detection_lines is None or r.n_detection_lines == len(r.classes) > 0
        assert list(r.classes) == sorted(r.classes) and all(0 <= c < 80 for c in r.classes)
        assert 0 < r.width <= 640 and 0 < r.height <= 640
    # the book's copy: two train2017 images without objects (no detection file, an empty
    # segmentation file) and segmentation files for the first 100 images of each split only
    empty = [r.id for r in rows if r.n_detection_lines is None]
    assert empty == ["000000000250", "000000000508"]
    for split in ("train2017", "val2017"):
        with_segments = [r.n_segmentation_lines is not None for r in rows if r.split == split]
        assert with_segments == [True] * 100 + [False] * 28
    assert sum(r.n_detection_lines or 0 for r in rows) == 1827
    assert dl.COCO_CATEGORY_IDS == data.COCO_CATEGORY_IDS and len(dl.COCO_NAMES) == 80


def test_coco128_recipe_is_listed(dl, capsys):
    recipe = dl.RECIPES["coco128"]
    (archive,) = recipe.archives
    assert archive.url == "http://images.cocodataset.org/annotations/annotations_trainval2017.zip"
    assert archive.extract_to is None and archive.size == 252907541 and len(archive.sha256) == 64
    assert recipe.build is not None
    assert dl.main(["--list"]) == 0
    assert "coco128" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# (b) the book's copy passes the check a user's download must pass
# ---------------------------------------------------------------------------------------------


@needs_coco128
def test_real_copy_matches_the_manifests(dl):
    assert dl.check_coco128(COCO128, hashes=True, strict_segments=True) == []
    with open(COCO128 / "names.yaml", encoding="utf-8") as file:
        names = yaml.safe_load(file)["names"]
    assert tuple(names[i] for i in range(80)) == dl.COCO_NAMES
    sizes = {r.image: (r.width, r.height) for r in dl.read_objects_manifest()}
    for image in ("images/train2017/000000000009.jpg", "images/val2017/000000000139.jpg"):
        assert Image.open(COCO128 / image).size == sizes[image]  # jpeg_size agrees with PIL


def _tiny_tree(dl, root: Path) -> tuple[Path, Path]:
    """Two images with labels and their two manifests, written under ``root``."""
    digests = []
    for split, stem, size in (("train2017", "000000000009", (8, 6)), ("val2017", "000000000139", (5, 7))):
        content = _jpeg(root / "c" / "images" / split / f"{stem}.jpg", size)
        digests.append(f"{hashlib.sha256(content).hexdigest()}  images/{split}/{stem}.jpg\n")
    for sub, split, stem, text in (
        ("labels_detection", "train2017", "000000000009", "45 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n"),
        ("labels_segmentation", "train2017", "000000000009", "1 0.1 0.1 0.2 0.1 0.2 0.2\n51 0.5 0.5 0.6 0.5 0.6 0.6\n"),
        ("labels_detection", "val2017", "000000000139", "2 0.5 0.5 0.2 0.2\n"),
    ):
        path = root / "c" / sub / split / f"{stem}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    sha = root / "tiny.sha256"
    sha.write_text("".join(digests))
    objects = root / "tiny.csv"
    dl.write_objects_manifest(dl.summarise_coco128(root / "c"), objects)
    return sha, objects


def test_check_names_the_first_image_that_differs(dl, tmp_path):
    sha, objects = _tiny_tree(dl, tmp_path)
    assert objects.read_text().splitlines() == [
        "split,id,width,height,n_detection_lines,n_segmentation_lines,classes",
        "train2017,000000000009,8,6,2,2,0 45",
        "val2017,000000000139,5,7,1,,2",
    ]
    check = dict(manifest=objects, sha256_manifest=sha)
    assert dl.check_coco128(tmp_path / "c", **check) == []

    label = tmp_path / "c" / "labels_detection" / "val2017" / "000000000139.txt"
    label.write_text("2 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.1 0.1\n")
    with pytest.raises(dl.LabelMismatchError,
                       match="val2017/000000000139: n_detection_lines is 2, the manifest says 1"):
        dl.check_coco128(tmp_path / "c", **check)
    label.write_text("3 0.5 0.5 0.2 0.2\n")
    with pytest.raises(dl.LabelMismatchError, match=r"000000000139: detection classes is \(3,\)"):
        dl.check_coco128(tmp_path / "c", **check)
    label.write_text("2 0.5 0.5 0.2 0.2\n")

    seg = tmp_path / "c" / "labels_segmentation" / "train2017" / "000000000009.txt"
    seg.write_text(seg.read_text() + "1 0.3 0.3 0.4 0.3 0.4 0.4\n")  # a third polygon
    with pytest.raises(dl.LabelMismatchError, match="000000000009: n_segmentation_lines is 3, the manifest says 2"):
        dl.check_coco128(tmp_path / "c", **check)
    notes = dl.check_coco128(tmp_path / "c", strict_segments=False, **check)
    assert notes == ["coco128: train2017/000000000009: n_segmentation_lines is 3, the manifest says 2"]
    seg.write_text("1 0.1 0.1 0.2 0.1 0.2 0.2\n")  # person only: bowl (45) has no polygon
    with pytest.raises(dl.LabelMismatchError, match="segmentation classes"):
        dl.check_coco128(tmp_path / "c", strict_segments=False, **check)
    seg.write_text("1 0.1 0.1 0.2 0.1 0.2 0.2\n51 0.5 0.5 0.6 0.5 0.6 0.6\n")

    image = tmp_path / "c" / "images" / "val2017" / "000000000139.jpg"
    image.write_bytes(image.read_bytes()[:-1] + b"\x00")
    with pytest.raises(dl.LabelMismatchError, match="000000000139: sha256 mismatch"):
        dl.check_coco128(tmp_path / "c", **check)
    assert dl.check_coco128(tmp_path / "c", hashes=False, **check) == []
    _jpeg(tmp_path / "c" / "images" / "val2017" / "000000000285.jpg")
    with pytest.raises(dl.LabelMismatchError, match="000000000285.jpg is not in the manifest"):
        dl.check_coco128(tmp_path / "c", hashes=False, **check)


# ---------------------------------------------------------------------------------------------
# (c) the converter, by hand
# ---------------------------------------------------------------------------------------------


def _tiny_instances(dl) -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "000000000001.jpg", "width": 200, "height": 100},
            {"id": 2, "file_name": "000000000002.jpg", "width": 100, "height": 100},
            {"id": 3, "file_name": "000000000003.jpg", "width": 100, "height": 100},
        ],
        "annotations": [
            # a box and its polygon (a rectangle)
            {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0, "bbox": [20, 10, 60, 40],
             "segmentation": [[20, 10, 80, 10, 80, 50, 20, 50]]},
            # an object in two polygons (two 4 x 4 squares) and a degenerate one (2 points)
            {"id": 11, "image_id": 1, "category_id": 90, "iscrowd": 0, "bbox": [0, 0, 14, 4],
             "segmentation": [[0, 0, 4, 0, 4, 4, 0, 4], [10, 0, 14, 0, 14, 4, 10, 4], [5, 5, 6, 6]]},
            # a crowd object: RLE (column-major, zeros first) of the pixels x 2..3, y 5..7
            {"id": 12, "image_id": 1, "category_id": 62, "iscrowd": 1, "bbox": [2, 5, 2, 3],
             "segmentation": {"counts": [2 * 100 + 5, 3, 100 - 3, 3, 200 * 100 - 308], "size": [100, 200]}},
            None,  # what load_instances leaves for an annotation of another image
            {"id": 13, "image_id": 3, "category_id": 1, "iscrowd": 0, "bbox": [0, 0, 10, 10],
             "segmentation": [[0, 0, 10, 0, 10, 10]]},
        ],
        "categories": _categories(dl),
    }


def test_coco_to_yolo_by_hand(dl, tmp_path):
    sizes = dl.coco_to_yolo(_tiny_instances(dl), tmp_path, "val2017", ["000000000001.jpg", "000000000002.jpg"])
    assert sizes == {"000000000001.jpg": (200, 100), "000000000002.jpg": (100, 100)}
    detection = tmp_path / "labels_detection" / "val2017"
    segmentation = tmp_path / "labels_segmentation" / "val2017"
    # person (1 -> 0): cx = (20 + 60/2) / 200, cy = (10 + 40/2) / 100, w = 60/200, h = 40/100;
    # toothbrush (90 -> 79): cx = 7/200, cy = 2/100, w = 14/200, h = 4/100; the crowd chair: none
    assert (detection / "000000000001.txt").read_text() == "0 0.25 0.3 0.3 0.4\n79 0.035 0.02 0.07 0.04\n"
    assert (segmentation / "000000000001.txt").read_text().splitlines() == [
        # sorted by COCO category id: person (1), chair (62), toothbrush (90)
        "1 0.100000 0.100000 0.400000 0.100000 0.400000 0.500000 0.100000 0.500000",
        # the crowd mask's outline along pixel edges: corners (2, 5) (4, 5) (4, 8) (2, 8)
        "62 0.010000 0.050000 0.020000 0.050000 0.020000 0.080000 0.010000 0.080000",
        # both squares in one line, joined at their closest corners (4, 0)-(10, 0):
        # (0,0) (4,0) | (10,0) (14,0) (14,4) (10,4) (10,0) | (4,0) (4,4) (0,4)
        "90 0.000000 0.000000 0.020000 0.000000 0.050000 0.000000 0.070000 0.000000 0.070000 0.040000 "
        "0.050000 0.040000 0.050000 0.000000 0.020000 0.000000 0.020000 0.040000 0.000000 0.040000",
    ]
    assert not (detection / "000000000002.txt").exists()  # no object: no detection file ...
    assert (segmentation / "000000000002.txt").read_text() == ""  # ... and an empty segmentation file
    assert not (detection / "000000000003.txt").exists()  # not asked for

    # the loader reads what was written (class 79 = toothbrush; segments mapped to 0..79)
    for name in ("000000000001.jpg", "000000000002.jpg"):
        _jpeg(tmp_path / "images" / "val2017" / name, (200, 100) if name.endswith("1.jpg") else (100, 100))
    dl.write_names_yaml(_categories(dl), tmp_path)
    ds = data.coco(tmp_path, "val2017")
    assert ds.categories[79] == "toothbrush" and ds.categories[56] == "chair"
    first = ds[0]
    assert first.boxes.ravel().tolist() == pytest.approx([20, 10, 80, 50, 0, 0, 14, 4])
    assert first.box_labels.tolist() == [0, 79] and first.segment_labels.tolist() == [0, 56, 79]
    assert first.label == 0 and ds[1].label == -1

    # only the images named in segment_images get a segmentation file
    dl.coco_to_yolo(_tiny_instances(dl), tmp_path / "b", "val2017", ["000000000001.jpg", "000000000002.jpg"],
                    segment_images=["000000000001"])
    written = sorted(p.name for p in (tmp_path / "b" / "labels_segmentation" / "val2017").iterdir())
    assert written == ["000000000001.txt"]
    with pytest.raises(ValueError, match="not in the annotations"):
        dl.coco_to_yolo(_tiny_instances(dl), tmp_path / "c", "val2017", ["000000000004.jpg"])


def test_coco_to_yolo_gives_the_book_copys_lines_on_real_annotations(dl, tmp_path):
    """The boxes of two annotations of val2017 image 139 as COCO publishes them (quoted in
    detectron2's tests/test_coco_evaluation.py; their polygons shortened here) give exactly
    lines 8 and 9 of the book's label file."""
    instances = {
        "images": [{"id": 139, "file_name": "000000000139.jpg", "width": 640, "height": 426}],
        "annotations": [
            {"id": 230831, "image_id": 139, "category_id": 1, "iscrowd": 0, "bbox": [412.8, 157.61, 53.05, 138.01],
             "segmentation": [[428.19, 219.47, 430.94, 209.57, 412.8, 217.27, 440.29, 157.61, 465.85, 293.14]]},
            {"id": 233201, "image_id": 139, "category_id": 1, "iscrowd": 0, "bbox": [384.43, 172.21, 15.12, 35.74],
             "segmentation": [[384.98, 206.58, 384.43, 199.98, 399.55, 183.48]]},
        ],
        "categories": _categories(dl),
    }
    dl.coco_to_yolo(instances, tmp_path, "val2017")
    assert (tmp_path / "labels_detection" / "val2017" / "000000000139.txt").read_text() == (
        "0 0.686445 0.53196 0.0828906 0.323967\n0 0.612484 0.446197 0.023625 0.0838967\n")
    assert (tmp_path / "labels_segmentation" / "val2017" / "000000000139.txt").read_text().splitlines()[1] == (
        "1 0.601531 0.484930 0.600672 0.469437 0.624297 0.430704")
    if HAS_COCO128:
        lines = (COCO128 / "labels_detection" / "val2017" / "000000000139.txt").read_text().splitlines()
        assert lines[7:9] == ["0 0.686445 0.53196 0.0828906 0.323967", "0 0.612484 0.446197 0.023625 0.0838967"]


def test_rle_decoding_and_outlines(dl):
    # a compressed RLE from detectron2's tests (426 x 640): pycocotools gives area 53, bbox
    # [459, 159, 8, 9] (checked once with pycocotools 2.0.11)
    height, width, pixels = dl.rle_pixels({"size": [426, 640], "counts": "bSo54T=2N2O1001O006ImiW2"})
    xs, ys = [p[0] for p in pixels], [p[1] for p in pixels]
    assert (height, width, len(pixels)) == (426, 640, 53)
    assert (min(xs), min(ys), max(xs) - min(xs) + 1, max(ys) - min(ys) + 1) == (459, 159, 8, 9)
    with pytest.raises(ValueError, match="sum to"):
        dl.rle_pixels({"size": [2, 2], "counts": [1, 2]})
    # a ring (a hole in the middle) and a pixel touching it only at a corner: two outlines, no hole
    ring = {(x, y) for x in range(3) for y in range(3)} - {(1, 1)}
    outlines = dl.mask_outlines(ring | {(3, 3)})
    assert outlines == [[(0, 0), (3, 0), (3, 3), (0, 3)], [(3, 3), (4, 3), (4, 4), (3, 4)]]


# ---------------------------------------------------------------------------------------------
# (d) each downloaded image is verified against the manifest
# ---------------------------------------------------------------------------------------------


def test_image_download_is_verified(dl, tmp_path):
    server = tmp_path / "server"
    content = _jpeg(server / "train2017" / "000000000009.jpg")
    manifest = tmp_path / "one.sha256"
    manifest.write_text(f"{hashlib.sha256(content).hexdigest()}  images/train2017/000000000009.jpg\n")
    root = tmp_path / "root"
    (path,) = dl.fetch_coco128_images(root, manifest, base_url=server.as_uri(), quiet=True)
    assert path == root / "images" / "train2017" / "000000000009.jpg" and path.read_bytes() == content

    path.unlink()
    corrupted = bytearray(content)
    corrupted[len(corrupted) // 2] ^= 0x01  # one bit of one byte
    (server / "train2017" / "000000000009.jpg").write_bytes(bytes(corrupted))
    with pytest.raises(dl.ChecksumError, match="(?s)could not download a verified copy.*sha256 mismatch"):
        dl.fetch_coco128_images(root, manifest, base_url=server.as_uri(), quiet=True)
    assert not path.exists() and not path.with_name(path.name + ".part").exists()
    with pytest.raises(RuntimeError, match="could not download a verified copy"):  # unreachable: not a checksum error
        dl.fetch_coco128_images(root, manifest, base_url=(tmp_path / "nowhere").as_uri(), quiet=True)


@needs_coco128
def test_real_image_download_is_verified_against_the_manifest(dl, tmp_path):
    first = next(iter(dl.read_sha256_manifest().items()))
    manifest = tmp_path / "first.sha256"
    manifest.write_text(f"{first[1]}  {first[0]}\n")
    served = (COCO128 / "images").as_uri()  # stands for http://images.cocodataset.org
    (path,) = dl.fetch_coco128_images(tmp_path / "ok", manifest, base_url=served, quiet=True)
    assert dl.sha256_file(path) == first[1]

    server = tmp_path / "server" / "train2017"
    server.mkdir(parents=True)
    corrupted = bytearray((COCO128 / first[0]).read_bytes())
    corrupted[1000] ^= 0xFF
    (server / Path(first[0]).name).write_bytes(bytes(corrupted))
    with pytest.raises(dl.ChecksumError):
        dl.fetch_coco128_images(tmp_path / "bad", manifest, base_url=(tmp_path / "server").as_uri(), quiet=True)


# ---------------------------------------------------------------------------------------------
# the whole recipe, offline: images from the book's copy, annotations rebuilt from its labels
# ---------------------------------------------------------------------------------------------


def _instances_from_copy(dl, split: str, drop: str | None = None) -> dict:
    """An ``instances_<split>.json`` whose boxes are the book's detection lines (rectangles as
    polygons): converting it must give the manifest's counts and classes."""
    images, annotations = [], []
    for row in dl.read_objects_manifest():
        if row.split != split:
            continue
        images.append({"id": int(row.id), "file_name": f"{row.id}.jpg", "width": row.width, "height": row.height})
        label = COCO128 / "labels_detection" / split / f"{row.id}.txt"
        if row.n_detection_lines is None or row.id == drop:
            continue
        for line in label.read_text().splitlines():
            c, cx, cy, w, h = (float(v) for v in line.split())
            x, y, bw, bh = (cx - w / 2) * row.width, (cy - h / 2) * row.height, w * row.width, h * row.height
            annotations.append({"id": len(annotations) + 1, "image_id": int(row.id), "iscrowd": 0,
                                "category_id": dl.COCO_CATEGORY_IDS[int(c)], "bbox": [x, y, bw, bh],
                                "segmentation": [[x, y, x + bw, y, x + bw, y + bh, x, y + bh]]})
    return {"info": {}, "images": images, "annotations": annotations, "categories": _categories(dl)}


def _annotations_zip(dl, path: Path, drop: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for split in ("train2017", "val2017"):
            zf.writestr(f"annotations/instances_{split}.json", json.dumps(_instances_from_copy(dl, split, drop)))
    return path


@needs_coco128
def test_fetch_coco128_offline(dl, tmp_path, monkeypatch, capsys):
    archive = _annotations_zip(dl, tmp_path / "annotations_trainval2017.zip")
    recipe = dl.RECIPES["coco128"]
    local = dl.Archive(url=archive.as_uri(), sha256=dl.sha256_file(archive), extract_to=None)
    monkeypatch.setitem(dl.RECIPES, "coco128", type(recipe)(**{**recipe.__dict__, "archives": (local,)}))
    monkeypatch.setattr(dl, "COCO_IMAGES_URL", (COCO128 / "images").as_uri())
    root = tmp_path / "root"
    assert dl.main(["coco128", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "sha256 and objects per image as in coco128-objects.csv" in out
    folder = root / "coco128"
    assert not (folder / ".staging").exists() and (root / "downloads" / archive.name).is_file()
    dl.check_coco128(folder, strict_segments=False)
    for split in ("train2017", "val2017"):
        assert len(data.coco(folder, split)) == 128
    same = total = 0
    for path in (folder / "labels_detection").rglob("*.txt"):
        ours = path.read_text().splitlines()
        theirs = (COCO128 / path.relative_to(folder)).read_text().splitlines()
        assert len(ours) == len(theirs)
        same += sum(a == b for a, b in zip(ours, theirs))
        total += len(ours)
    assert total == 1827 and same > 0.95 * total  # boxes rebuilt from 6 digits: last digits may move

    # annotations that lack one image's objects: the recipe stops, naming that image, and
    # leaves the labels in place untouched
    before = (folder / "labels_detection" / "train2017" / "000000000071.txt").read_text()
    (tmp_path / "other").mkdir()
    archive = _annotations_zip(dl, tmp_path / "other" / "annotations_trainval2017.zip", drop="000000000071")
    local = dl.Archive(url=archive.as_uri(), sha256=dl.sha256_file(archive), extract_to=None)
    monkeypatch.setitem(dl.RECIPES, "coco128", type(recipe)(**{**recipe.__dict__, "archives": (local,)}))
    with pytest.raises(dl.LabelMismatchError,
                       match="train2017/000000000071: n_detection_lines is None, the manifest says 16"):
        dl.fetch("coco128", root, download_dir=tmp_path / "other-downloads", quiet=True)
    assert (folder / "labels_detection" / "train2017" / "000000000071.txt").read_text() == before
    assert (folder / ".staging" / "labels_detection").is_dir()


def test_a_misspelt_recipe_stops_before_anything_is_downloaded(dl, tmp_path, monkeypatch, capsys):
    fetched = []
    monkeypatch.setattr(dl, "download", lambda *args, **kwargs: fetched.append(args) or (_ for _ in ()).throw(OSError("offline")))
    assert dl.main(["coco128", "cocoo", "--root", str(tmp_path)]) == 2
    assert fetched == []  # coco128 used to be fetched first, then the typo reported
    assert "unknown recipe 'cocoo'; choose from" in capsys.readouterr().err
    a_file = tmp_path / "not-a-folder"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="is a file, not a folder"):
        dl.fetch("coco128", root=a_file, quiet=True)
    assert fetched == []
