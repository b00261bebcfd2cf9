"""Tests of lib.paths, lib.data and scripts/download_data.py.

Real data (ImageNet val, COCO128) is read from the data root (``$SALIENCY_DATA``, else
``./data``; tests/_data.py); those tests are skipped without it. Everything else runs on the embedded
images or on tiny fixture trees written into ``tmp_path``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import pickle
import shutil
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import transforms as T

from lib import data, paths

from _data import COCO128, DATA_ROOT, IMAGENET, needs_coco128, needs_imagenet


@pytest.fixture
def empty_data_root(tmp_path, monkeypatch):
    root = tmp_path / "no-data-here"
    root.mkdir()
    monkeypatch.setenv("SALIENCY_DATA", str(root))
    return root


# ---------------------------------------------------------------------------------------------
# lib.paths
# ---------------------------------------------------------------------------------------------


def test_paths_follow_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("SALIENCY_DATA", raising=False)
    assert paths.data_root() == paths.REPO_ROOT / "data"
    assert (paths.REPO_ROOT / "lib" / "paths.py").is_file()

    monkeypatch.setenv("SALIENCY_DATA", str(tmp_path))
    assert paths.data_root() == tmp_path.resolve()
    assert paths.imagenet_val_root() == tmp_path.resolve() / "imagenet-val"
    assert paths.coco128_root() == tmp_path.resolve() / "coco128"
    assert paths.voc2007_root() == tmp_path.resolve() / "VOCdevkit" / "VOC2007"
    assert paths.coco2014_root() == tmp_path.resolve() / "coco2014"
    assert paths.coco2014_root(tmp_path / "elsewhere") == (tmp_path / "elsewhere").resolve()

    # A relative value is relative to the repository, never to the working directory.
    monkeypatch.setenv("SALIENCY_DATA", "../elsewhere/data")
    monkeypatch.chdir(tmp_path)
    assert paths.data_root() == (paths.REPO_ROOT / ".." / "elsewhere" / "data").resolve()

    cache = tmp_path / "cache" / "nested"
    monkeypatch.setenv("SALIENCY_CACHE", str(cache))
    assert paths.cache_dir() == cache.resolve() and cache.is_dir()


# ---------------------------------------------------------------------------------------------
# Embedded images
# ---------------------------------------------------------------------------------------------


def test_embedded_needs_no_data_folder(empty_data_root):
    ds = data.embedded()
    assert len(ds) == 6 and len(ds.categories) == 1000
    assert ds.categories == data.imagenet_categories()
    assert data.imagenet_categories()[652] == "military uniform"
    assert ds.labels.tolist() == [281, 967, 872, 657, 665, 652]
    for sample in ds:
        assert sample.source == "embedded"
        assert sample.image.mode == "RGB"
        width, height = sample.size
        assert 0 <= sample.label < 1000
        assert sample.boxes.dtype == torch.float32 and sample.boxes.shape[1] == 4 and len(sample.boxes) >= 1
        assert sample.box_labels.tolist() == [sample.label] * len(sample.boxes)
        x0, y0, x1, y1 = sample.boxes.unbind(1)
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= width).all() and (y1 <= height).all()
        assert (x1 > x0).all() and (y1 > y0).all()


def test_greyscale_embedded_image_becomes_rgb(empty_data_root):
    ds = data.embedded()
    i = ds.ids.index("camera")
    with Image.open(ds.paths[i]) as raw:
        assert raw.mode == "L"
        grey = np.asarray(raw)
    rgb = np.asarray(ds[i].image)
    assert rgb.shape == grey.shape + (3,)
    assert all((rgb[..., c] == grey).all() for c in range(3))


def test_datasets_are_lazy(monkeypatch, empty_data_root):
    opened = []
    real_open = data._open_rgb
    monkeypatch.setattr(data, "_open_rgb", lambda path: opened.append(path) or real_open(path))
    ds = data.embedded()
    head = ds[:3]
    assert isinstance(head, data.Dataset) and len(head) == 3 and head.categories == ds.categories
    assert head.ids == ds.ids[:3] and ds.select([4, 0]).ids == [ds.ids[4], ds.ids[0]]
    assert ds.labels.shape == (6,)
    assert opened == []
    assert ds[-1].id == "grace_hopper" and ds[torch.tensor(0)].id == "chelsea" and len(opened) == 2
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(TypeError):
        ds["chelsea"]


# ---------------------------------------------------------------------------------------------
# ImageNet validation (real data)
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, ""])
def test_image_set_falls_back_to_the_embedded_images(tmp_path, monkeypatch, value):
    # Only the default data root (SALIENCY_DATA unset or empty, as the Makefile passes it) falls back.
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # ./data absent, as in a clean clone
    if value is None:
        monkeypatch.delenv("SALIENCY_DATA", raising=False)
    else:
        monkeypatch.setenv("SALIENCY_DATA", value)
    assert data.find_imagenet() is None and data.image_source() == "the embedded photographs"
    images = data.image_set(limit=2)
    assert images.name == "embedded" and images.ids == ["chelsea", "coffee"]


def test_an_empty_saliency_data_folder_is_an_error_not_a_fallback(empty_data_root):
    # A data root chosen on purpose that holds nothing: one clear error, not the embedded photographs.
    for call in (data.find_imagenet, data.image_source, data.image_set):
        with pytest.raises(FileNotFoundError, match=r"SALIENCY_DATA=.* is not a usable data root: .*the folder is empty"):
            call()
    with pytest.raises(FileNotFoundError, match="not a usable data root"):
        data.image_set(empty_data_root)


@needs_imagenet
def test_image_set_finds_imagenet_under_the_data_root(monkeypatch):
    monkeypatch.setenv("SALIENCY_DATA", str(DATA_ROOT))
    assert data.find_imagenet() == IMAGENET.resolve()
    assert data.image_source() == f"ImageNet val at {IMAGENET.resolve()}"
    assert data.image_set(limit=3).ids == data.imagenet_val(IMAGENET, limit=3).ids
    # Without the variable the repository's ./data is the root; it has no imagenet-val/ in a clean clone.
    monkeypatch.delenv("SALIENCY_DATA")
    assert data.find_imagenet() == (None if not (paths.REPO_ROOT / "data" / "imagenet-val").is_dir()
                                    else paths.REPO_ROOT / "data" / "imagenet-val")


def test_concat_keeps_order_and_refuses_other_classes(empty_data_root):
    embedded = data.embedded()
    joined = data.concat(embedded[:2], embedded[4:])
    assert joined.ids == ["chelsea", "coffee", "motorcycle", "grace_hopper"]
    assert joined.labels.tolist() == [281, 967, 665, 652] and joined[3].id == "grace_hopper"
    other = data.Dataset("other", [], ["a", "b"])
    with pytest.raises(ValueError, match="different classes"):
        data.concat(embedded, other)
    with pytest.raises(ValueError, match="at least one"):
        data.concat()


@needs_imagenet
def test_imagenet_matches_the_csv():
    ds = data.imagenet_val(IMAGENET, limit=40)
    assert len(ds) == 40 and ds.ids == sorted(ds.ids) and ds.ids[0] == "ILSVRC2012_val_00000001"
    assert len(ds.synsets) == 1000 and ds.synsets[65] == "n01751748"
    assert ds.categories[65] == "sea snake" and ds.descriptions[0] == "tench, Tinca tinca"
    assert ds.categories == data.embedded().categories  # one naming: the gallery concatenates them
    assert ds.categories[134] == "crane bird" and ds.descriptions[134].split(",")[0] == "crane"
    # CSV: "ILSVRC2012_val_00000001,n01751748 111 108 441 193"; n01751748 is line 66 -> class 65.
    first = ds[0]
    assert first.label == 65 and first.source == "imagenet-val"
    assert first.boxes.tolist() == [[111.0, 108.0, 441.0, 193.0]] and first.box_labels.tolist() == [65]
    assert first.size == (500, 375)
    # CSV: "ILSVRC2012_val_00000002,n09193705 45 49 499 162 n09193705 2 69 437 207"
    second = ds[1]
    alp = ds.synsets.index("n09193705")
    assert second.label == alp and second.box_labels.tolist() == [alp, alp]
    assert second.boxes.tolist() == [[45, 49, 499, 162], [2, 69, 437, 207]]
    assert ds.labels[:2].tolist() == [65, alp]


@needs_imagenet
def test_imagenet_greyscale_file_becomes_rgb():
    ds = data.imagenet_val(IMAGENET, limit=40)
    i = ds.ids.index("ILSVRC2012_val_00000034")
    with Image.open(ds.paths[i]) as raw:
        assert raw.mode == "L"
        size = raw.size
    sample = ds[i]
    assert sample.image.mode == "RGB" and sample.image.size == size


@needs_imagenet
def test_imagenet_verify(tmp_path):
    assert len(data.imagenet_val(IMAGENET, limit=10, verify=True)) == 10
    lines = data.IMAGENET_MANIFEST.read_text().splitlines()
    assert len(lines) == 1000 and lines[0].endswith("  images/ILSVRC2012_val_00000001.JPEG")

    # A copy whose first image lost a byte fails verification, naming the file.
    root = tmp_path / "imagenet-val"
    (root / "images").mkdir(parents=True)
    for name in ("LOC_val_solution.csv", "LOC_synset_mapping.txt"):
        shutil.copy(IMAGENET / name, root / name)
    original = (IMAGENET / "images" / "ILSVRC2012_val_00000001.JPEG").read_bytes()
    (root / "images" / "ILSVRC2012_val_00000001.JPEG").write_bytes(original[:-1])
    assert len(data.imagenet_val(root)) == 1
    with pytest.raises(ValueError, match="sha256 mismatch.*ILSVRC2012_val_00000001"):
        data.imagenet_val(root, verify=True)


# ---------------------------------------------------------------------------------------------
# COCO, YOLO layout
# ---------------------------------------------------------------------------------------------


def _write_yolo_tree(root: Path) -> None:
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "labels_detection" / "val2017").mkdir(parents=True)
    (root / "labels_segmentation" / "val2017").mkdir(parents=True)
    Image.new("RGB", (200, 100), (10, 20, 30)).save(root / "images" / "val2017" / "a.jpg")
    Image.new("L", (50, 40), 128).save(root / "images" / "val2017" / "b.jpg")  # greyscale, no labels
    (root / "labels_detection" / "val2017" / "a.txt").write_text(
        "2 0.5 0.5 0.2 0.4\n"  # 40x40 px: x 80..120, y 30..70
        "1 0.25 0.75 0.5 0.5\n"  # 100x50 px, the largest: x 0..100, y 50..100
    )
    (root / "labels_segmentation" / "val2017" / "a.txt").write_text("3 0.4 0.3 0.6 0.3 0.6 0.7\n")  # COCO id 3 = car
    (root / "names.yaml").write_text("names:\n  0: person\n  1: bicycle\n  2: car\n")


def test_coco_yolo_conversion_by_hand(tmp_path):
    _write_yolo_tree(tmp_path / "c")
    ds = data.coco(tmp_path / "c")
    assert ds.ids == ["a", "b"] and ds.categories == ["person", "bicycle", "car"] and ds.split == "val2017"
    assert ds.labels.tolist() == [1, -1]
    a, b = ds[0], ds[1]
    assert a.source == "c/val2017"
    torch.testing.assert_close(a.boxes, torch.tensor([[80.0, 30.0, 120.0, 70.0], [0.0, 50.0, 100.0, 100.0]]))
    assert a.box_labels.tolist() == [2, 1] and a.label == 1
    assert a.segment_labels.tolist() == [2]
    torch.testing.assert_close(a.segments[0], torch.tensor([[80.0, 30.0], [120.0, 30.0], [120.0, 70.0]]))
    assert b.image.mode == "RGB" and b.boxes.shape == (0, 4) and b.label == -1 and b.segments is None
    mask = data.object_mask(a, 2)
    assert mask.shape == (100, 200) and mask[40, 110] and not mask[60, 85]  # inside / outside the triangle
    box_mask = data.object_mask(a, 2, use_segments=False)
    assert box_mask.sum() == 41 * 41 and box_mask[30:71, 80:121].all()


@needs_coco128
def test_coco128_real_file_by_hand():
    ds = data.coco(COCO128, "val2017")
    assert len(ds) == 128 and len(ds.categories) == 80 and ds.categories[58] == "potted plant"
    sample = ds[ds.ids.index("000000000139")]
    assert sample.size == (640, 426)
    # labels_detection/val2017/000000000139.txt, line 1: "58 0.389578 0.416103 0.0385937 0.163146"
    cx, cy, w, h = 0.389578 * 640, 0.416103 * 426, 0.0385937 * 640, 0.163146 * 426
    expected = torch.tensor([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
    torch.testing.assert_close(sample.boxes[0], expected)  # 236.98, 142.51, 261.68, 212.01
    assert sample.box_labels[0] == 58
    # Segmentation files number classes by COCO id: first polygon of 139 is class 1 = person.
    assert sample.segment_labels[0] == 0 and ds.categories[0] == "person"
    train = data.coco(COCO128, "train2017")
    unlabelled = train[train.ids.index("000000000250")]
    assert unlabelled.label == -1 and unlabelled.boxes.shape == (0, 4)


# ---------------------------------------------------------------------------------------------
# VOC 2007 and COCO 2014 on fixture trees
# ---------------------------------------------------------------------------------------------


def _voc_object(name: str, box: tuple[int, int, int, int], difficult: int = 0) -> str:
    xmin, ymin, xmax, ymax = box
    return (
        f"<object><name>{name}</name><pose>Left</pose><truncated>0</truncated><difficult>{difficult}</difficult>"
        f"<bndbox><xmin>{xmin}</xmin><ymin>{ymin}</ymin><xmax>{xmax}</xmax><ymax>{ymax}</ymax></bndbox></object>"
    )


def _write_voc_tree(root: Path) -> None:
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000004\n")
    for image_id, size, objects in (
        ("000001", (60, 40), _voc_object("dog", (1, 1, 20, 10)) + _voc_object("person", (5, 5, 60, 40), 1)
         + _voc_object("cat", (30, 10, 50, 30))),
        ("000004", (30, 30), _voc_object("car", (2, 3, 10, 12), 1)),
    ):
        Image.new("RGB", size, (200, 0, 0)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"{objects}</annotation>"
        )


def test_voc2007_fixture(tmp_path, monkeypatch):
    monkeypatch.setenv("SALIENCY_DATA", str(tmp_path))
    _write_voc_tree(tmp_path / "VOCdevkit" / "VOC2007")
    ds = data.voc2007()
    assert ds.ids == ["000001", "000004"] and len(ds.categories) == 20 and ds.categories[11] == "dog"
    first = ds[0]
    assert first.source == "voc2007/test" and first.size == (60, 40)
    # XML indices are 1-based: minus one on all four.
    assert first.boxes.tolist() == [[0, 0, 19, 9], [4, 4, 59, 39], [29, 9, 49, 29]]
    assert first.box_labels.tolist() == [11, 14, 7] and first.difficult.tolist() == [False, True, False]
    assert first.label == 7  # cat: the largest non-difficult object (the person is difficult)
    second = ds[1]
    assert second.label == 6 and second.difficult.tolist() == [True]  # only difficult objects: use them
    assert ds.labels.tolist() == [7, 6]
    mask = data.object_mask(first, 11)
    assert mask.sum() == 20 * 10 and mask[:10, :20].all()  # TorchRay's voc_as_mask: xmin-1 .. xmax-1
    with pytest.raises(FileNotFoundError, match="trainval.txt"):
        data.voc2007(split="trainval")


def _write_coco2014_tree(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    Image.new("RGB", (64, 48)).save(root / "val2014" / "COCO_val2014_000000000042.jpg")
    Image.new("RGB", (32, 32)).save(root / "val2014" / "COCO_val2014_000000000007.jpg")
    content = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "width": 64, "height": 48},
            {"id": 7, "file_name": "COCO_val2014_000000000007.jpg", "width": 32, "height": 32},
        ],
        "categories": [  # deliberately out of order; contiguous order = sorted ids
            {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
            {"id": 1, "name": "person", "supercategory": "person"},
            {"id": 3, "name": "car", "supercategory": "vehicle"},
        ],
        "annotations": [
            {"id": 1, "image_id": 42, "category_id": 3, "bbox": [10.5, 4.0, 20.0, 10.0], "area": 200.0,
             "iscrowd": 0, "segmentation": [[10.5, 4.0, 30.5, 4.0, 30.5, 14.0]]},
            {"id": 2, "image_id": 42, "category_id": 90, "bbox": [0.0, 20.0, 8.0, 8.0], "area": 64.0,
             "iscrowd": 0, "segmentation": [[0, 20, 8, 20, 8, 28, 0, 28]]},
            {"id": 3, "image_id": 42, "category_id": 1, "bbox": [0.0, 0.0, 64.0, 48.0], "area": 3072.0,
             "iscrowd": 1, "segmentation": {"counts": [0, 2, 46, 2, 3022], "size": [48, 64]}},
        ],
    }
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps(content))


def test_coco2014_fixture(tmp_path):
    _write_coco2014_tree(tmp_path / "coco2014")
    ds = pickle.loads(pickle.dumps(data.coco2014(tmp_path / "coco2014")))  # picklable for DataLoader workers
    assert ds.categories == ["person", "car", "toothbrush"] and ds.category_ids == [1, 3, 90]
    assert ds.ids == ["COCO_val2014_000000000007", "COCO_val2014_000000000042"]
    empty, full = ds[0], ds[1]
    assert empty.label == -1 and empty.boxes.shape == (0, 4) and empty.source == "coco2014/val2014"
    assert full.boxes.tolist() == [[10.5, 4.0, 30.5, 14.0], [0.0, 20.0, 8.0, 28.0], [0.0, 0.0, 64.0, 48.0]]
    assert full.box_labels.tolist() == [1, 2, 0] and full.difficult.tolist() == [False, False, True]
    assert full.label == 1  # the car: the crowd box is larger but flagged
    assert full.segment_labels.tolist() == [1, 2] and full.extra["coco_image_id"] == 42
    # Crowd RLE (column-major): pixels (0..1, x=0) and (0..1, x=1) of the 48x64 image.
    crowd = data.object_mask(full, 0)
    assert crowd.sum() == 4 and crowd[:2, :2].all()
    assert data.object_mask(full, 2).sum() == 81  # 8x8 polygon drawn with its outline: 9x9 pixels


# ---------------------------------------------------------------------------------------------
# Geometry against torchvision
# ---------------------------------------------------------------------------------------------

SIZES = [(500, 375), (375, 500), (333, 517), (517, 333), (1001, 257), (257, 1001), (229, 230), (224, 224)]
SETTINGS = [(224, 0.875), (240, 0.875), (260, 0.875), (224, 1.0)]


def test_crop_geometry_known_case():
    # 500x375 -> Resize(256): 341x256 (int(256 * 500 / 375) = 341); crop offsets
    # round((341 - 224) / 2) = round(58.5) = 58 (to even) and (256 - 224) / 2 = 16.
    g = data.crop_geometry(500, 375, 224)
    assert (g.scale, g.left, g.top) == (256 / 375, 58, 16)
    assert (g.resized_width, g.resized_height) == (341, 256)


@pytest.mark.parametrize("width,height", SIZES)
def test_geometry_matches_torchvision(width, height):
    rng = np.random.default_rng(width * 7 + height)
    image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
    for size, fraction in SETTINGS:
        g = data.crop_geometry(width, height, size, fraction)
        resized = T.Resize(round(size / fraction))(image)
        assert resized.size == (g.resized_width, g.resized_height)
        cropped = T.CenterCrop(size)(resized)
        expected = resized.crop((g.left, g.top, g.left + size, g.top + size))
        assert np.array_equal(np.asarray(cropped), np.asarray(expected))


@pytest.mark.parametrize("width,height", SIZES)
def test_marked_pixel_lands_where_torchvision_puts_it(width, height):
    rng = np.random.default_rng(width + 13 * height)
    for size, fraction in SETTINGS:
        g = data.crop_geometry(width, height, size, fraction)
        transform = T.Compose([T.Resize(round(size / fraction)), T.CenterCrop(size)])
        # Points well inside the part of the original that the crop keeps.
        xs = rng.integers(int(g.left / g.scale_x) + 3, int((g.left + size) / g.scale_x) - 3, 3)
        ys = rng.integers(int(g.top / g.scale_y) + 3, int((g.top + size) / g.scale_y) - 3, 3)
        for x, y in zip(xs.tolist(), ys.tolist()):
            marked = np.zeros((height, width, 3), np.uint8)
            marked[y, x] = 255
            out = np.asarray(transform(Image.fromarray(marked)))[..., 0]
            iy, ix = np.unravel_index(out.argmax(), out.shape)
            box = data.boxes_to_input([[x, y, x + 1, y + 1]], width, height, size, fraction)[0]
            px, py = float(box[0] + box[2]) / 2 - 0.5, float(box[1] + box[3]) / 2 - 0.5  # pixel index
            assert abs(px - ix) <= 1 and abs(py - iy) <= 1, (size, fraction, x, y)

            # And back: a peak at that input pixel peaks at the marked pixel of the original
            # (within one input pixel, i.e. 1 / scale original pixels).
            peak = torch.zeros(1, size, size)
            peak[0, iy, ix] = 1.0
            back = data.map_to_original(peak, [(width, height)], size, fraction)[0]
            assert back.shape == (height, width)
            by, bx = np.unravel_index(back.numpy().argmax(), back.shape)
            tolerance = max(1.0, 1.0 / min(g.scale_x, g.scale_y))
            assert abs(bx - x) <= tolerance and abs(by - y) <= tolerance, (size, fraction, x, y, bx, by)


def test_map_to_original_is_zero_outside_the_crop():
    maps = torch.ones(2, 7, 7)  # low-resolution maps are resized to the crop first
    wide, tall = data.map_to_original(maps, [(500, 375), (375, 500)], 224)
    assert wide.shape == (375, 500) and tall.shape == (500, 375)
    # 500x375 -> 341x256, crop at left 58, top 16: it keeps columns ~85..413 (58 / s .. 282 / s,
    # s = 256 / 375) and rows ~23..351 (16 / s .. 240 / s) of the original.
    assert wide[:, :80].abs().max() == 0 and wide[:, 420:].abs().max() == 0
    assert wide[:20].abs().max() == 0 and wide[356:].abs().max() == 0
    torch.testing.assert_close(wide[30:345, 90:410], torch.ones(315, 320))
    assert tall[:80].abs().max() == 0 and tall[420:].abs().max() == 0 and tall[:, :20].abs().max() == 0
    with pytest.raises(ValueError, match=r"\(B, h, w\)"):
        data.map_to_original(torch.ones(7, 7), [(500, 375)], 224)
    with pytest.raises(ValueError, match="2 maps but 1"):
        data.map_to_original(maps, [(500, 375)], 224)


def test_boxes_to_input_clips_to_the_crop():
    # 500x375 at 224: scale_x = 341 / 500, left = 58.
    boxes = data.boxes_to_input(torch.tensor([[0.0, 0.0, 500.0, 375.0], [0.0, 0.0, 50.0, 50.0]]), 500, 375, 224)
    assert boxes.dtype == torch.float32
    torch.testing.assert_close(boxes[0], torch.tensor([0.0, 0.0, 224.0, 224.0]))
    assert boxes[1, 2] == 0  # left of the crop: empty but kept
    with pytest.raises(ValueError, match="crop_fraction"):
        data.crop_geometry(500, 375, 224, 1.5)


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def test_batch_of_embedded_samples(empty_data_root):
    preprocess = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    ds = data.embedded()
    b = data.batch(ds[:3], preprocess, 224)
    assert b.images.shape == (3, 3, 224, 224) and b.images.dtype == torch.float32 and len(b) == 3
    assert b.labels.tolist() == ds.labels[:3].tolist() and b.ids == ds.ids[:3]
    assert b.original_sizes == [(451, 300), (600, 400), (512, 512)]
    for boxes, sample_box_labels in zip(b.boxes, b.box_labels):
        assert boxes.shape == (len(sample_box_labels), 4) and (boxes >= 0).all() and (boxes <= 224).all()
    # coffee 600x400 -> 384x256, crop at left 80, top 16: (172, 17, 410, 307) * 0.64 - (80, 16, 80, 16)
    torch.testing.assert_close(b.boxes[1], torch.tensor([[30.08, 0.0, 182.4, 180.48]]))
    assert [m.shape for m in b.to_original(torch.rand(3, 224, 224))] == [(300, 451), (400, 600), (512, 512)]
    assert sum(len(x) for x in data.batches(ds, preprocess, 224, batch_size=4)) == 6
    with pytest.raises(ValueError, match=r"expected \(3, 240, 240\)"):
        data.batch(ds[:1], preprocess, 240)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_missing_root_names_path_contents_and_variable(empty_data_root):
    with pytest.raises(FileNotFoundError) as error:
        data.imagenet_val()
    message = str(error.value)
    assert str(empty_data_root / "imagenet-val") in message
    assert "LOC_val_solution.csv" in message and "SALIENCY_DATA" in message
    for loader, expected in ((data.coco, "labels_detection"), (data.voc2007, "Annotations"),
                             (data.coco2014, "instances_")):
        with pytest.raises(FileNotFoundError, match=expected):
            loader()
    with pytest.raises(FileNotFoundError, match="root="):
        data.coco(empty_data_root / "nowhere")


def test_argument_errors(tmp_path):
    _write_yolo_tree(tmp_path / "c")
    with pytest.raises(FileNotFoundError, match=r"splits found: \['val2017'\]"):
        data.coco(tmp_path / "c", split="test2017")
    with pytest.raises(ValueError, match="split"):
        data.coco(tmp_path / "c", split="../c")
    with pytest.raises(ValueError, match="segment_classes"):
        data.coco(tmp_path / "c", segment_classes="names")
    for bad, kind in ((0, ValueError), (-3, ValueError), (1.5, TypeError), (True, TypeError), ("5", TypeError)):
        with pytest.raises(kind, match="limit must be a positive int"):
            data.imagenet_val(tmp_path, limit=bad)


# ---------------------------------------------------------------------------------------------
# scripts/download_data.py (offline: local archives and file:// URLs)
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def downloader():
    spec = importlib.util.spec_from_file_location("download_data", paths.REPO_ROOT / "scripts" / "download_data.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["download_data"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("download_data", None)


def _tiny_tar(path: Path) -> None:
    with tarfile.open(path, "w") as tf:
        for name, content in (("VOCdevkit/VOC2007/ImageSets/Main/test.txt", b"000001\n"),
                              ("VOCdevkit/VOC2007/Annotations/000001.xml", b"<annotation/>")):
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tf.addfile(info, io.BytesIO(content))


def test_download_recipes_are_well_formed(downloader):
    assert set(downloader.RECIPES) >= {"voc2007-test", "coco2014-val", "imagenet-val"}
    for recipe in downloader.RECIPES.values():
        for archive in recipe.archives:
            assert archive.url.startswith("http") and len(archive.sha256) == 64
    assert downloader.default_root() == paths.data_root()


def test_verify_sha256_and_extract(downloader, tmp_path):
    archive = tmp_path / "tiny.tar"
    _tiny_tar(archive)
    digest = data.sha256_file(archive)
    assert downloader.verify_sha256(archive, digest.upper()) == digest
    with pytest.raises(downloader.ChecksumError, match=f"(?s)tiny.tar.*expected {'0' * 64}.*got      {digest}"):
        downloader.verify_sha256(archive, "0" * 64)
    with pytest.raises(FileNotFoundError):
        downloader.verify_sha256(tmp_path / "absent.tar", digest)

    names = downloader.extract(archive, tmp_path / "out")
    assert "VOCdevkit/VOC2007/ImageSets/Main/test.txt" in names
    assert (tmp_path / "out" / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").read_text() == "000001\n"

    zipped = tmp_path / "tiny.zip"
    with zipfile.ZipFile(zipped, "w") as zf:
        zf.writestr("annotations/instances_val2014.json", "{}")
    downloader.extract(zipped, tmp_path / "z")
    assert (tmp_path / "z" / "annotations" / "instances_val2014.json").read_text() == "{}"

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("../escaped.txt", "x")
    with pytest.raises(ValueError, match="outside"):
        downloader.extract(evil, tmp_path / "e")
    assert not (tmp_path / "escaped.txt").exists()


def test_fetch_from_a_local_url(downloader, tmp_path, monkeypatch):
    archive = tmp_path / "VOCtest.tar"
    _tiny_tar(archive)
    recipe = downloader.Recipe(
        name="tiny",
        description="test",
        archives=(downloader.Archive(url=archive.resolve().as_uri(), sha256=data.sha256_file(archive)),),
        produces=("VOCdevkit/VOC2007",),
    )
    monkeypatch.setitem(downloader.RECIPES, "tiny", recipe)
    root = tmp_path / "root"
    assert downloader.fetch("tiny", root, quiet=True) == root.resolve()
    assert (root / "VOCdevkit" / "VOC2007" / "Annotations" / "000001.xml").is_file()
    assert (root / "downloads" / "VOCtest.tar").is_file()
    archive.unlink()  # a second run finds the verified archive and does not download
    downloader.fetch("tiny", root, quiet=True)

    bad = downloader.Recipe(
        name="bad", description="test", produces=(),
        archives=(downloader.Archive(url=(tmp_path / "absent.tar").as_uri(), sha256="1" * 64),),
    )
    monkeypatch.setitem(downloader.RECIPES, "bad", bad)
    with pytest.raises(RuntimeError, match="could not download a verified copy"):
        downloader.fetch("bad", root, quiet=True)
    with pytest.raises(RuntimeError, match="image-net.org"):
        downloader.fetch("imagenet-val", root, quiet=True)


def test_whole_image_geometry_refuses_inputs_it_used_to_truncate_or_mix():
    from types import SimpleNamespace

    classifier = SimpleNamespace(input_size=32, mean=(0.5, 0.5, 0.5), std=(0.2, 0.2, 0.2))
    with pytest.raises(ValueError, match="std finite and positive"):  # std 0 gave inf pixels
        data.whole_image_preprocess(SimpleNamespace(input_size=32, mean=(0.5,) * 3, std=(0, 0, 0)))
    with pytest.raises(ValueError, match="width must be a positive int, not 40.7"):  # int(40.7) == 40
        data.whole_map_to_original(torch.rand(1, 7, 7), [(40.7, 20)])
    with pytest.raises(ValueError, match=r"a pair \(width, height\)"):  # an unpacking error
        data.whole_map_to_original(torch.rand(1, 7, 7), [(40, 20, 3)])
    square = data.Sample(Image.new("RGB", (40, 40)), 0, torch.tensor([[0.0, 0.0, 9.0, 9.0]]), torch.tensor([0]), "sq", "embedded")
    whole = data.whole_image_preprocess(classifier)
    with pytest.raises(ValueError, match="implements geometry 'whole' but geometry='crop'"):  # boxes mapped by the crop
        data.batch([square], whole, 32, geometry="crop")
    assert data.batch([square], whole, 32, geometry="whole").geometry == "whole"
    with pytest.raises(ValueError, match="expected a float tensor"):
        data.batch([square], lambda image: torch.zeros(3, 32, 32, dtype=torch.uint8), 32, geometry="whole")
    with pytest.raises(TypeError, match="integer sample index, got 1.0"):
        data.embedded().objects(1.0)


@pytest.mark.parametrize("size", [(400, 300), (300, 500), (224, 224), (150, 120)])
def test_maps_carried_back_together_equal_maps_carried_back_one_by_one(size):
    maps = torch.rand(3, 224, 224, generator=torch.Generator().manual_seed(1))
    together = data.map_to_original(maps, [size] * 3, 224, 0.875)
    for k in range(3):
        assert torch.allclose(together[k], data.map_to_original(maps[k:k + 1], [size], 224, 0.875)[0], atol=1e-6)
    small = torch.rand(2, 7, 7, generator=torch.Generator().manual_seed(2))
    mixed = data.map_to_original(small, [size, (97, 61)], 224)  # two original sizes: one interpolation each
    assert mixed[1].shape == (61, 97)
    assert torch.allclose(mixed[0], data.map_to_original(small[:1], [size], 224)[0], atol=1e-6)
    shapes = [small[0], maps[0], small[1]]  # whole-image maps of two shapes for one original size
    whole = data.whole_map_to_original(shapes, [size] * 3)
    for k in range(3):
        assert torch.allclose(whole[k], data.whole_map_to_original([shapes[k]], [size])[0], atol=1e-6)



def test_maps_going_back_to_the_original_must_be_real():
    complex_map = torch.rand(1, 7, 7, dtype=torch.complex64)  # interpolation would keep the real part only
    with pytest.raises(ValueError, match="maps must be real"):
        data.whole_map_to_original(complex_map, [(20, 10)])
    with pytest.raises(ValueError, match="maps must be real"):
        data.map_to_original(complex_map, [(20, 10)], 7)
