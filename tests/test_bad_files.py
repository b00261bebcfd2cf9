"""Bad input files get one clear error, never a silent wrong result (issue 17).

- 16-bit and float images are scaled to 8 bits by :func:`lib.data.rgb_image`, not clipped by
  Pillow's ``convert("RGB")``; values it cannot map are refused, naming the file.
- A ``$SALIENCY_DATA`` (or explicit data root) that is missing, a file or holds no dataset is an
  error, not a fallback to the embedded photographs; unset or empty keeps the default.
- A truncated image or a non-numeric box names the file (and the field).

Every file is written into ``tmp_path``; no real data is needed.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from lib import data, paths

RAMP16 = (np.arange(0, 65536, 257, dtype=np.uint16)[None].repeat(3, 0))  # 0, 257, ..., 65535: 3 x 256
RAMP8 = np.arange(256, dtype=np.uint8)[None].repeat(3, 0)


def _grey(image: Image.Image) -> np.ndarray:
    array = np.asarray(image)
    assert image.mode == "RGB" and (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    return array[..., 0].astype(int)


# ---------------------------------------------------------------------------------------------
# 16-bit and float images
# ---------------------------------------------------------------------------------------------


def _ramp_file(tmp_path, kind: str):
    """A 16-bit greyscale ramp (0..65535 in 256 steps) saved by Pillow, and its expected 8-bit values."""
    values = (np.arange(256) * 256 + np.arange(256)).astype(np.uint16)[None].repeat(3, 0)  # v = 257 * i
    if kind == "png I;16":
        path = tmp_path / "ramp16.png"
        Image.fromarray(values).save(path)
    elif kind == "png I;16B":
        path = tmp_path / "ramp16b.png"
        Image.frombytes("I;16B", (256, 3), values.astype(">u2").tobytes()).save(path)
    elif kind == "tiff I":
        path = tmp_path / "ramp32.tif"
        Image.fromarray(values.astype(np.int32)).save(path)
    else:  # a ramp that is not a multiple of 257: rounding
        values = np.linspace(0, 65535, 1000).round().astype(np.uint16)[None]
        path = tmp_path / "fine16.png"
        Image.fromarray(values).save(path)
    return path, np.round(values / 257.0).astype(int)


@pytest.mark.parametrize("kind", ["png I;16", "png I;16B", "tiff I", "png I;16 fine"])
def test_16_bit_ramp_gives_the_8_bit_ramp(tmp_path, kind):
    path, expected = _ramp_file(tmp_path, kind)
    with Image.open(path) as raw:
        assert raw.mode in ("I;16", "I;16B", "I;16L", "I")  # what Pillow reads; convert("RGB") clips it
    got = _grey(data.open_image(path))
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1
    assert got.min() == 0 and got.max() == 255  # the full range, not almost all white


def test_16_bit_png_in_a_dataset_is_scaled(tmp_path):
    root = tmp_path / "coco128"
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "names.yaml").write_text("names:\n  0: person\n")
    path, expected = _ramp_file(tmp_path, "png I;16")
    (root / "images" / "val2017" / "ramp.png").write_bytes(path.read_bytes())
    sample = data.coco(root)[0]
    assert np.abs(_grey(sample.image) - expected).max() <= 1


@pytest.mark.parametrize("scale", [1.0, 255.0])
def test_float_tiff_equals_the_8_bit_image_of_the_same_values(tmp_path, scale):
    path = tmp_path / "float.tif"
    Image.fromarray((RAMP8 / 255.0 * scale).astype(np.float32)).save(path)
    with Image.open(path) as raw:
        assert raw.mode == "F"
    eight_bit = tmp_path / "eight.png"
    Image.fromarray(RAMP8).save(eight_bit)
    got, want = _grey(data.open_image(path)), _grey(data.open_image(eight_bit))
    assert np.abs(got - want).max() <= 1 and got.max() == 255


@pytest.mark.parametrize(
    "values, what",
    [
        (np.array([[0.0, 0.5, np.nan]]), "NaN or infinite"),
        (np.array([[0.0, np.inf, 1.0]]), "NaN or infinite"),
        (np.array([[-0.5, 0.0, 1.0]]), "outside [0, 1] and outside [0, 255]"),
        (np.array([[0.0, 128.0, 300.0]]), "outside [0, 1] and outside [0, 255]"),
    ],
)
def test_float_images_outside_the_accepted_ranges_are_refused(tmp_path, values, what):
    path = tmp_path / "bad-float.tif"
    Image.fromarray(values.astype(np.float32)).save(path)
    with pytest.raises(ValueError) as error:
        data.open_image(path)
    message = str(error.value)
    assert str(path) in message and "mode 'F'" in message and what in message and "accepted:" in message


@pytest.mark.parametrize("values", [[[0, 1000, 70000]], [[-5, 0, 100]]])
def test_32_bit_integer_images_outside_16_bits_are_refused(tmp_path, values):
    path = tmp_path / "bad-int.tif"
    Image.fromarray(np.array(values, dtype=np.int32)).save(path)
    with pytest.raises(ValueError, match=r"bad-int\.tif.*16-bit range \[0, 65535\].*mode 'I'.*accepted:"):
        data.open_image(path)


def test_unknown_modes_are_refused_and_alpha_is_composited_on_white():
    with pytest.raises(ValueError, match=r"my picture: an image mode .*'HSV'.*accepted: 8-bit images"):
        data.rgb_image(Image.new("HSV", (4, 4)), "my picture")
    with pytest.raises(TypeError, match="expected a PIL image"):
        data.rgb_image(np.zeros((4, 4, 3)), "array")
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 0, 0))  # transparent: white, not black
    assert np.asarray(data.rgb_image(rgba, "x")).tolist() == [[[255, 0, 0], [255, 255, 255]]]
    rgb = Image.new("RGB", (2, 2))
    assert data.rgb_image(rgb, "x") is rgb


def test_whole_image_preprocess_and_overlay_scale_16_bit_images():
    from lib import plot

    wide = Image.fromarray(RAMP16)
    assert wide.mode == "I;16"
    narrow = Image.fromarray(RAMP8)
    preprocess = data.WholeImagePreprocess(32, [0.5] * 3, [0.25] * 3)
    torch.testing.assert_close(preprocess(wide), preprocess(narrow))
    np.testing.assert_allclose(plot.to_numpy_image(wide), plot.to_numpy_image(narrow))


# ---------------------------------------------------------------------------------------------
# Truncated images, non-numeric boxes
# ---------------------------------------------------------------------------------------------


def _truncated_jpeg(path):
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path, quality=95)
    content = path.read_bytes()
    path.write_bytes(content[: len(content) // 2])
    return path


def test_truncated_jpeg_names_the_file(tmp_path):
    path = _truncated_jpeg(tmp_path / "half.jpg")
    with pytest.raises(ValueError) as error:
        data.open_image(path)
    message = str(error.value)
    assert str(path) in message and "truncated or corrupt" in message and "accepted:" in message


def test_not_an_image_and_not_a_regular_file_name_the_file(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.jpg: not an image file Pillow can identify"):
        data.open_image(text)
    with pytest.raises(ValueError, match=r"is a folder; expected an image file"):
        data.open_image(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.png: no such image file"):
        data.open_image(tmp_path / "missing.png")


def test_decompression_bombs_are_refused(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("RGB", (100, 100)).save(path)
    for limit in (4000, 9000):  # above twice the limit Pillow raises, above the limit it only warns
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
        with pytest.raises(ValueError, match=rf"big\.png: too many pixels.*MAX_IMAGE_PIXELS = {limit}"):
            data.open_image(path)


def _imagenet_tree(root, box: str = "10 20 30 40"):
    (root / "images").mkdir(parents=True)
    (root / "LOC_synset_mapping.txt").write_text("".join(f"n{i:08d} class {i}\n" for i in range(1000)))
    (root / "LOC_val_solution.csv").write_text(f"ImageId,PredictionString\nILSVRC2012_val_00000001,n00000003 {box} \n")
    image = root / "images" / "ILSVRC2012_val_00000001.JPEG"
    Image.new("RGB", (64, 64), (1, 2, 3)).save(image)
    return image


def test_truncated_jpeg_in_a_dataset_names_the_file(tmp_path):
    image = _imagenet_tree(tmp_path / "imagenet-val")
    _truncated_jpeg(image)
    ds = data.imagenet_val(tmp_path / "imagenet-val")
    with pytest.raises(ValueError, match=r"ILSVRC2012_val_00000001\.JPEG: the image file is truncated"):
        ds[0]


def test_imagenet_box_abc_names_file_field_and_value(tmp_path):
    _imagenet_tree(tmp_path / "imagenet-val", box="10 abc 30 40")
    with pytest.raises(ValueError) as error:
        data.imagenet_val(tmp_path / "imagenet-val")
    message = str(error.value)
    assert "LOC_val_solution.csv" in message and "ILSVRC2012_val_00000001" in message
    assert "ymin is 'abc'" in message and "expected a finite number" in message


def test_voc_box_abc_names_file_field_and_value(tmp_path):
    root = tmp_path / "VOC2007"
    for folder in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / folder).mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n")
    Image.new("RGB", (60, 40)).save(root / "JPEGImages" / "000001.jpg")
    (root / "Annotations" / "000001.xml").write_text(
        "<annotation><size><width>60</width><height>40</height></size><object><name>dog</name>"
        "<difficult>0</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>abc</xmax><ymax>10</ymax></bndbox>"
        "</object></annotation>"
    )
    ds = data.voc2007(root)
    with pytest.raises(ValueError, match=r"000001\.xml, object 0 \(dog\): box field xmax is 'abc'; expected a finite"):
        ds.labels
    (root / "Annotations" / "000001.xml").write_text("<annotation><object>")
    with pytest.raises(ValueError, match=r"000001\.xml is not well-formed XML"):
        data.voc2007(root).labels


@pytest.mark.parametrize("bbox, field", [(["abc", 4.0, 20.0, 10.0], r"bbox\[0\] \(x\)"),
                                         ([10.0, 4.0, "20", 10.0], r"bbox\[2\] \(width\)"),
                                         ([10.0, 4.0, 20.0], "bbox")])
def test_coco2014_box_abc_names_file_field_and_value(tmp_path, bbox, field):
    root = tmp_path / "coco2014"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    Image.new("RGB", (64, 48)).save(root / "val2014" / "a.jpg")
    (root / "annotations" / "instances_val2014.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 3, "name": "car"}],
        "annotations": [{"id": 9, "image_id": 1, "category_id": 3, "bbox": bbox, "iscrowd": 0}],
    }))
    ds = data.coco2014(root)
    with pytest.raises(ValueError, match=rf"instances_val2014\.json, annotation 9 \(image 1\): {field}"):
        ds.labels  # before: "abc" + 20.0 raised a TypeError naming nothing; "20" was concatenated silently


def test_coco2014_broken_json_names_the_file(tmp_path):
    root = tmp_path / "coco2014"
    (root / "annotations").mkdir(parents=True)
    (root / "val2014").mkdir()
    (root / "annotations" / "instances_val2014.json").write_text('{"images": [')
    with pytest.raises(ValueError, match=r"instances_val2014\.json is not valid JSON"):
        data.coco2014(root)


@pytest.mark.parametrize("line, field", [("0 0.5 abc 0.2 0.2", "cy is 'abc'"), ("0 0.5 0.5 nan 0.2", "w is 'nan'"),
                                         ("0.5 0.5 0.5 0.2 0.2", "class is '0.5'")])
def test_yolo_box_abc_names_file_line_and_field(tmp_path, line, field):
    root = tmp_path / "coco128"
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "labels_detection" / "val2017").mkdir(parents=True)
    (root / "names.yaml").write_text("names:\n  0: person\n")
    Image.new("RGB", (20, 20)).save(root / "images" / "val2017" / "a.jpg")
    (root / "labels_detection" / "val2017" / "a.txt").write_text(line + "\n")
    with pytest.raises(ValueError, match=rf"a\.txt:1: .*{field}"):
        data.coco(root).labels


# ---------------------------------------------------------------------------------------------
# The data root
# ---------------------------------------------------------------------------------------------


def _coco128_tree(root):
    (root / "images" / "val2017").mkdir(parents=True)
    (root / "names.yaml").write_text("names:\n  0: person\n")
    Image.new("RGB", (20, 20)).save(root / "images" / "val2017" / "a.jpg")


@pytest.mark.parametrize("value", [None, "", "   "])
def test_unset_or_empty_saliency_data_keeps_the_default(tmp_path, monkeypatch, value):
    monkeypatch.setattr(paths, "REPO_ROOT", tmp_path)  # ./data of a clean clone: absent
    if value is None:
        monkeypatch.delenv(paths.DATA_ENV, raising=False)
    else:
        monkeypatch.setenv(paths.DATA_ENV, value)
    assert paths.data_root() == tmp_path / "data"
    assert data.find_imagenet() is None and data.image_source() == "the embedded photographs"
    assert data.image_set(limit=1).name == "embedded"


def _unusable(tmp_path, kind: str):
    if kind == "missing":
        return tmp_path / "no-such-folder", "does not exist"
    if kind == "file":
        path = tmp_path / "a-file"
        path.write_text("not a folder")
        return path, "is a file, not a folder"
    path = tmp_path / "root"
    path.mkdir()
    if kind == "empty":
        return path, "the folder is empty"
    if kind == "other files":
        (path / "holiday.jpg").write_bytes(b"")
        (path / "imagenet").mkdir()  # a near miss
        return path, "no dataset folder, only holiday.jpg, imagenet/"
    (path / "imagenet-val" / "images").mkdir(parents=True)  # incomplete
    return path, "imagenet-val/ without LOC_val_solution.csv, LOC_synset_mapping.txt"


@pytest.mark.parametrize("kind", ["missing", "file", "empty", "other files", "incomplete"])
def test_unusable_saliency_data_is_an_error_not_the_embedded_photographs(tmp_path, monkeypatch, kind):
    root, found = _unusable(tmp_path, kind)
    monkeypatch.setenv(paths.DATA_ENV, str(root))
    assert paths.data_root() == root.resolve()  # where it is: the downloader fills such a folder
    for call in (data.find_imagenet, data.image_source, lambda: data.image_set(limit=1)):
        with pytest.raises(FileNotFoundError) as error:
            call()
        message = str(error.value)
        assert f"$SALIENCY_DATA={str(root)!r} is not a usable data root" in message and found in message
        assert "LOC_val_solution.csv" in message and "coco128/" in message and "data/README.md" in message
        assert "unset it (or set it empty)" in message


@pytest.mark.parametrize("kind", ["missing", "file", "empty"])
def test_an_unusable_explicit_data_root_is_an_error(tmp_path, monkeypatch, kind):
    monkeypatch.delenv(paths.DATA_ENV, raising=False)
    root, found = _unusable(tmp_path, kind)
    for call in (data.find_imagenet, data.image_source, data.image_set):
        with pytest.raises(FileNotFoundError, match="data_root=.* is not a usable data root"):
            call(root)


def test_a_data_root_with_coco128_only_keeps_the_embedded_photographs(tmp_path, monkeypatch):
    _coco128_tree(tmp_path / "coco128")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert paths.usable_data_root() == tmp_path.resolve()
    assert data.find_imagenet() is None and data.image_source() == "the embedded photographs"
    assert data.image_set(limit=2).ids == ["chelsea", "coffee"]
    assert data.coco().ids == ["a"]
    with pytest.raises(FileNotFoundError, match="imagenet"):
        data.image_set(tmp_path)  # an explicit root must have imagenet-val/


def test_a_data_root_with_imagenet_is_found(tmp_path, monkeypatch):
    _imagenet_tree(tmp_path / "imagenet-val")
    monkeypatch.setenv(paths.DATA_ENV, str(tmp_path))
    assert data.find_imagenet() == tmp_path.resolve() / "imagenet-val"
    assert data.image_set().ids == ["ILSVRC2012_val_00000001"]
    assert data.find_imagenet(tmp_path) == tmp_path / "imagenet-val"
