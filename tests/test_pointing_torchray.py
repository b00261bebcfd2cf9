"""The pointing game as TorchRay plays it (whole image, pairs, difficult flags), checked by hand.

TorchRay's benchmark (``torchray/benchmark/pointing_game.py``, ``datasets.py``, ``models.py`` and
``examples/attribution_benchmark.py``): the whole image is the input (no centre crop), the map is
resized to the original, one pair per class present (VOC all-difficult classes skipped), a hit is a
ground-truth pixel at distance < 15 px of the maximum, the score a per-class mean.

COCO128 is read from ``$SALIENCY_DATA/coco128`` or, as in ``tests/test_data.py``, from the data
folder next to the repository; those tests are skipped when neither has it.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from lib import data, paths
from lib.metrics import pointing as pg


from _data import COCO128, needs_coco128


def sample(width=100, height=100, boxes=((0, 0, 9, 9),), box_labels=None, label=None, source="coco128/val2017",
           difficult=None, segments=None, segment_labels=None):
    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    box_labels = torch.zeros(len(boxes), dtype=torch.int64) if box_labels is None else torch.tensor(box_labels)
    label = int(box_labels[0]) if label is None and len(box_labels) else (-1 if label is None else label)
    return data.Sample(
        Image.new("RGB", (width, height)), label, boxes, box_labels, "s", source,
        difficult=None if difficult is None else torch.tensor(difficult, dtype=torch.bool),
        segments=None if segments is None else [torch.tensor(p, dtype=torch.float32) for p in segments],
        segment_labels=None if segment_labels is None else torch.tensor(segment_labels, dtype=torch.int64),
    )


def peak(height, width, x, y):
    m = torch.zeros(height, width)
    m[y, x] = 1.0
    return m


# ---------------------------------------------------------------------------------------------
# Geometry: the whole image, resized; maps resized back
# ---------------------------------------------------------------------------------------------


def test_whole_geometry_by_hand():
    # Square resize (ours, stackable) and TorchRay's get_transform: shorter side 224, longer int(224 * long / short).
    assert (data.whole_geometry(640, 480, 224).input_width, data.whole_geometry(640, 480, 224).input_height) == (224, 224)
    wide = data.whole_geometry(640, 480, 224, keep_aspect=True)
    assert (wide.input_width, wide.input_height) == (298, 224)  # int(224 * 640 / 480) = int(298.67)
    tall = data.whole_geometry(300, 500, 224, keep_aspect=True)
    assert (tall.input_width, tall.input_height) == (224, 373)  # int(224 * 500 / 300) = int(373.33)
    square = data.whole_geometry(500, 500, 224, keep_aspect=True)
    assert (square.input_width, square.input_height) == (224, 224)
    assert wide.scale_x == pytest.approx(298 / 640) and wide.scale_y == pytest.approx(224 / 480)
    boxes = data.boxes_to_whole_input([[320, 240, 640, 480]], 640, 480, 224)
    torch.testing.assert_close(boxes, torch.tensor([[112.0, 112.0, 224.0, 224.0]]))
    with pytest.raises(ValueError, match="input_size"):
        data.whole_geometry(640, 480, 0)


def test_whole_image_preprocess_keeps_the_border():
    clf = SimpleNamespace(input_size=32, mean=torch.tensor([0.5, 0.5, 0.5]), std=torch.tensor([0.25, 0.25, 0.25]))
    image = Image.new("RGB", (64, 48), (0, 0, 0))
    image.paste((255, 255, 255), (56, 0, 64, 48))  # a white band in the right border (cropped away by a centre crop)
    square = data.whole_image_preprocess(clf)
    x = square(image)
    assert x.shape == (3, 32, 32) and square.geometry == "whole"
    # TorchRay: ToTensor, F.interpolate(bilinear, align_corners=False) without antialias, then normalise.
    pixels = torch.from_numpy(__import__("numpy").array(image)).permute(2, 0, 1).float() / 255
    expected = (F.interpolate(pixels[None], size=(32, 32), mode="bilinear", align_corners=False)[0] - 0.5) / 0.25
    torch.testing.assert_close(x, expected)
    assert x[0, :, -1].min() == pytest.approx((1 - 0.5) / 0.25)  # the band is still in the input
    crop = data.crop_geometry(64, 48, 32, 0.875)  # Resize(37) -> 49 x 37, crop left 8: input x < 32 <-> original < 52
    assert (crop.left + 32) / crop.scale_x < 56
    shorter = data.whole_image_preprocess(clf, keep_aspect=True)
    assert shorter(image).shape == (3, 32, 42) and shorter.geometry == "shorter"  # int(32 * 64 / 48) = 42
    with pytest.raises(ValueError, match="Classifier"):
        data.whole_image_preprocess(object())


@pytest.mark.parametrize(
    "size, input_peak, expected",
    [
        # Wide 640 x 320 -> 224 x 224: x scale 0.35, y scale 0.7. Input pixel (100, 30) has its centre at
        # original ((100.5 / 0.35) - 0.5, (30.5 / 0.7) - 0.5) = (286.64, 43.07): the nearest pixel is (287, 43).
        ((640, 320), (100, 30), (287, 43)),
        # Tall 300 x 500: scales 224/300 and 0.448. (200, 180) -> (268.03, 402.40) -> (268, 402).
        ((300, 500), (200, 180), (268, 402)),
    ],
)
def test_whole_round_trip_by_hand(size, input_peak, expected):
    width, height = size
    g = data.whole_geometry(width, height, 224)
    x_in, y_in = input_peak
    back = data.whole_map_to_original(peak(224, 224, x_in, y_in)[None], [size])[0]
    assert back.shape == (height, width)
    point = pg.max_points([back])[0].tolist()
    assert point == list(expected)
    # The same by formula: pixel centres (i + 0.5) / scale - 0.5, rounded.
    assert point == [round((x_in + 0.5) / g.scale_x - 0.5), round((y_in + 0.5) / g.scale_y - 0.5)]
    # A box around that pixel: a hit under the torchray protocol.
    x, y = expected
    s = sample(width, height, boxes=((x - 2, y - 2, x + 2, y + 2),), box_labels=(4,))
    result = pg.pointing_game(peak(224, 224, x_in, y_in)[None], [s], protocol="torchray")
    assert result.hits.tolist() == [True] and result.points[0].tolist() == list(expected)


def test_shorter_side_round_trip_and_batches():
    # TorchRay's exact geometry: 640 x 320 -> 448 x 224 (scale 0.7 on both axes).
    back = data.whole_map_to_original([peak(224, 448, 100, 30)], [(640, 320)])[0]
    assert pg.max_points([back])[0].tolist() == [143, 43]  # (100.5 / 0.7 - 0.5, 30.5 / 0.7 - 0.5) = (143.07, 43.07)
    clf = SimpleNamespace(input_size=224, mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])
    wide, tall = sample(640, 320, boxes=((0, 0, 63, 31),)), sample(300, 500, boxes=((150, 250, 299, 499),))
    b = data.batch([wide, tall], data.whole_image_preprocess(clf), 224, geometry="whole")
    assert b.images.shape == (2, 3, 224, 224) and b.geometry == "whole"
    torch.testing.assert_close(b.boxes[0], torch.tensor([[0.0, 0.0, 63 * 0.35, 31 * 0.7]]))
    assert [m.shape for m in b.to_original(torch.rand(2, 7, 7))] == [(320, 640), (500, 300)]
    assert b.to("cpu").geometry == "whole"
    one = data.batch([wide], data.whole_image_preprocess(clf, keep_aspect=True), 224, geometry="shorter")
    assert one.images.shape == (1, 3, 224, 448)
    with pytest.raises(ValueError, match="batch_size=1 or geometry='whole'"):
        data.batch([wide, tall], data.whole_image_preprocess(clf, keep_aspect=True), 224, geometry="shorter")
    with pytest.raises(ValueError, match="geometry must be"):
        data.batch([wide], data.whole_image_preprocess(clf), 224, geometry="square")
    with pytest.raises(ValueError, match="expected \\(3, 224, 224\\)"):
        data.batch([wide], data.whole_image_preprocess(clf, keep_aspect=True), 224, geometry="whole")


def test_border_object_is_hit_only_without_crop():
    # Wide 640 x 320 with an object in the left border. The crop protocol (Resize(256) -> 512 x 256, crop at
    # left 144) never shows original x < 180 to the network; the whole image does.
    s = sample(640, 320, boxes=((0, 100, 40, 200),), box_labels=(2,))
    g = data.crop_geometry(640, 320, 224, 0.875)
    assert g.left / g.scale_x == 180
    m = peak(224, 224, 5, 100)[None]  # original (5.5 / 0.35 - 0.5, 100.5 / 0.7 - 0.5) = (15.2, 143.1)
    torchray = pg.pointing_game(m, [s], protocol="torchray")
    crop = pg.pointing_game(m, [s], protocol="crop", input_size=224)
    assert torchray.hits.tolist() == [True] and torchray.points[0].tolist() == [15, 143]
    assert crop.hits.tolist() == [False] and crop.points[0, 0] >= 180


# ---------------------------------------------------------------------------------------------
# The hit rule: < 15 px of a segmentation mask, on the original
# ---------------------------------------------------------------------------------------------


def test_hit_rule_at_15_px_with_a_segment():
    # Class 7's box is large (50..150) but its polygon is the square 100..110 (PIL fills the outline too).
    s = sample(200, 200, boxes=((50, 50, 150, 150),), box_labels=(7,),
               segments=[[(100, 100), (110, 100), (110, 110), (100, 110)]], segment_labels=[7])
    mask = data.object_mask(s, 7)
    assert mask[105, 110] and not mask[105, 111] and int(mask.sum()) == 11 * 11
    # Points on row 105, d px right of the polygon's last column (110): 14 -> hit, 15 -> miss (TorchRay's strict <).
    maps = torch.stack([peak(200, 200, 110 + d, 105) for d in (14, 15)])
    result = pg.pointing_game(maps, [s, s], protocol="torchray")  # a 200 x 200 map on a 200 x 200 image: identity
    assert result.points.tolist() == [[124, 105], [125, 105]]
    assert result.hits.tolist() == [True, False]
    inclusive = pg.pointing_game(maps, [s, s], protocol="torchray", inclusive=True)
    assert inclusive.hits.tolist() == [True, True]
    # With the box (no segments) both would be hits: the segment is what is scored.
    boxes_only = sample(200, 200, boxes=((50, 50, 150, 150),), box_labels=(7,))
    assert pg.pointing_game(maps, [boxes_only, boxes_only], protocol="torchray").hits.tolist() == [True, True]


# ---------------------------------------------------------------------------------------------
# Pairs
# ---------------------------------------------------------------------------------------------


def test_pairs_by_hand():
    coco = sample(boxes=((0, 0, 9, 9), (5, 5, 20, 20), (50, 50, 60, 60), (70, 70, 80, 80)), box_labels=(0, 0, 2, 5))
    voc = sample(boxes=((0, 0, 9, 9),) * 4, box_labels=(14, 11, 11, 8), source="voc2007/test",
                 difficult=(False, True, False, True))
    empty = sample(boxes=(), box_labels=())
    crowd = sample(boxes=((0, 0, 9, 9), (0, 0, 99, 99)), box_labels=(0, 3), source="coco2014/val2014",
                   difficult=(False, True))
    samples = [coco, voc, empty, crowd]
    found = pg.pairs(samples)
    # VOC class 8 has only difficult objects: skipped (TorchRay's evaluate returns 0); class 11 has one
    # non-difficult object: kept. The COCO 2014 crowd-only class 3 is kept (coco_as_class_ids counts crowds).
    assert list(found) == [(0, 0), (0, 2), (0, 5), (1, 11), (1, 14), (3, 0), (3, 3)]
    assert (found.images, found.empty_images, found.skipped_difficult, found.skipped_unmapped) == (4, 1, 1, 0)
    assert len(found) == 7 and found[3] == (1, 11) and found.classes == 6
    mapped = pg.pairs(samples, members={0, 11, 14})
    assert list(mapped) == [(0, 0), (1, 11), (1, 14), (3, 0)]
    assert mapped.skipped_unmapped == 3 and mapped.skipped_difficult == 1 and mapped.skipped == 4
    assert "4 pairs" in str(mapped)
    assert (1, 8) in list(pg.pairs(samples, skip_difficult=False))
    assert list(pg.pairs(samples, members={3: "anything"}.keys())) == [(3, 3)]
    with pytest.raises(ValueError, match="category indices"):
        pg.pairs(samples, members=[1.5])
    with pytest.raises(ValueError, match="collection of category indices"):
        pg.pairs(samples, members="person")


def _write_voc(root: Path) -> None:
    def obj(name, box, flag=0):
        x0, y0, x1, y1 = box
        return (f"<object><name>{name}</name><difficult>{flag}</difficult><bndbox><xmin>{x0}</xmin>"
                f"<ymin>{y0}</ymin><xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>")

    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (root / sub).mkdir(parents=True)
    (root / "ImageSets" / "Main" / "test.txt").write_text("000001\n000002\n")
    for image_id, objects in (("000001", obj("dog", (1, 1, 20, 10)) + obj("person", (5, 5, 60, 40), 1)),
                              ("000002", obj("car", (2, 3, 10, 12), 1))):
        Image.new("RGB", (60, 40)).save(root / "JPEGImages" / f"{image_id}.jpg")
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>60</width><height>40</height></size>"
            f"{objects}</annotation>")


def test_pairs_of_a_dataset_read_no_image(tmp_path):
    _write_voc(tmp_path / "VOC2007")
    ds = data.voc2007(tmp_path / "VOC2007")
    for path in ds.paths:
        path.unlink()  # pairs() must not open an image
    found = pg.pairs(ds)
    assert list(found) == [(0, 11)]  # person (all difficult) and the difficult-only car are skipped
    assert found.skipped_difficult == 2
    labels, flags = ds.objects(0)
    assert labels.tolist() == [11, 14] and flags.tolist() == [False, True]


# ---------------------------------------------------------------------------------------------
# Difficult flags (Zhang et al. 2016: class area < 1/4 and another class present)
# ---------------------------------------------------------------------------------------------


def test_difficult_flags_by_hand():
    s = sample(100, 100, boxes=((0, 0, 9, 9), (0, 0, 59, 59)), box_labels=(3, 4))
    assert pg.difficult(s, 3, protocol="torchray") is True  # 1% of the image, class 4 present
    assert pg.difficult(s, 4, protocol="torchray") is False  # 36%
    alone = sample(100, 100, boxes=((0, 0, 9, 9),), box_labels=(3,))
    assert pg.difficult(alone, 3, protocol="torchray") is False  # no distractor
    quarter = sample(100, 100, boxes=((0, 0, 49, 49), (90, 90, 99, 99)), box_labels=(3, 4))
    assert pg.difficult(quarter, 3, protocol="torchray") is False  # exactly 25%: not < 1/4
    # Overlapping boxes: the union is 1600 + 1600 - 900 = 2300 px (23%: difficult); their sum would be 32%.
    overlap = sample(100, 100, boxes=((0, 0, 39, 39), (10, 10, 49, 49), (90, 90, 99, 99)), box_labels=(3, 3, 4))
    assert pg.difficult(overlap, 3, protocol="torchray") is True
    # Boxes under torchray, segments under crop: a 36% box whose polygon covers 1.21%.
    segmented = sample(100, 100, boxes=((0, 0, 59, 59), (90, 90, 99, 99)), box_labels=(3, 4),
                       segments=[[(0, 0), (10, 0), (10, 10), (0, 10)]], segment_labels=[3])
    assert pg.difficult(segmented, 3, protocol="torchray") is False
    assert pg.difficult(segmented, 3, protocol="crop") is True
    assert pg.difficult(segmented, 3) is False  # COCO source: torchray by default
    # VOC: a difficult distractor still counts as another class.
    voc = sample(100, 100, boxes=((0, 0, 9, 9), (50, 50, 99, 99)), box_labels=(3, 4), source="voc2007/test",
                 difficult=(False, True))
    assert pg.difficult(voc, 3) is True
    with pytest.raises(ValueError, match="protocol must be"):
        pg.difficult(s, 3, protocol="whole")


# ---------------------------------------------------------------------------------------------
# Class weights for paired tests
# ---------------------------------------------------------------------------------------------


def test_class_weights_identity():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 7, (200,), generator=generator)
    hits_a = torch.rand(200, generator=generator) < 0.6
    hits_b = torch.rand(200, generator=generator) < 0.4
    hard = torch.rand(200, generator=generator) < 0.3
    a = pg.PointingResult.from_hits(hits_a, labels, hard, torch.zeros(200, 2))
    b = pg.PointingResult.from_hits(hits_b, labels, hard, torch.zeros(200, 2))
    for subset, value_a, value_b in (("all", a.accuracy, b.accuracy), ("difficult", a.accuracy_difficult, b.accuracy_difficult)):
        w = a.class_weights(subset)
        assert w.dtype == torch.float64 and w.shape == (200,)
        assert float((w * a.hits).sum()) == pytest.approx(value_a, abs=1e-12)
        assert float((w * (a.hits.double() - b.hits.double())).sum()) == pytest.approx(value_a - value_b, abs=1e-12)
        assert float(w.sum()) == pytest.approx(1.0, abs=1e-12)
        if subset == "difficult":
            assert (w[~hard] == 0).all() and (w[hard] > 0).all()
    # By hand: class 0 has 3 pairs, class 1 one pair -> weights 1/6, 1/6, 1/6, 1/2.
    small = pg.PointingResult.from_hits([True, False, False, True], [0, 0, 0, 1], [False] * 4, torch.zeros(4, 2))
    assert small.class_weights().tolist() == pytest.approx([1 / 6, 1 / 6, 1 / 6, 1 / 2])
    assert float((small.class_weights() * small.hits).sum()) == pytest.approx(small.accuracy)  # (1/3 + 1) / 2
    assert small.class_weights("difficult").tolist() == [0.0] * 4 and math.isnan(small.accuracy_difficult)
    with pytest.raises(ValueError, match="'all' or 'difficult'"):
        small.class_weights("hard")


# ---------------------------------------------------------------------------------------------
# Protocols: defaults, backward compatibility, play
# ---------------------------------------------------------------------------------------------


def _old_pointing_game(maps, samples, targets, input_size, crop_fraction=0.875):
    """The crop protocol as it was: map_to_original, first maximum, hits on object_mask, segment-area difficult."""
    originals = data.map_to_original(maps, [s.size for s in samples], input_size, crop_fraction)
    points = pg.max_points(originals)
    hits = pg.hits_at(points, [data.object_mask(s, c) for s, c in zip(samples, targets)])
    hard = []
    for s, c in zip(samples, targets):
        small = float(data.object_mask(s, c).double().mean()) < 0.25
        hard.append(small if str(s.source).startswith(("imagenet", "embedded")) else small and bool((s.box_labels != c).any()))
    return hits, torch.tensor(hard), points


def test_crop_protocol_equals_the_existing_functions():
    generator = torch.Generator().manual_seed(3)
    coco = sample(400, 300, boxes=((10, 10, 200, 150), (250, 100, 390, 290)), box_labels=(1, 2),
                  segments=[[(20, 20), (180, 30), (100, 140)], [(260, 120), (380, 110), (300, 280)]], segment_labels=[1, 2])
    tall = sample(300, 500, boxes=((100, 100, 140, 160), (0, 0, 299, 499)), box_labels=(3, 4))
    samples, targets = [coco, coco, tall, tall], [1, 2, 3, 4]
    maps = torch.rand(4, 224, 224, generator=generator)
    maps[0, 60, 40] = 5  # a few sure maxima
    old_hits, old_hard, old_points = _old_pointing_game(maps, samples, targets, 224)
    new = pg.pointing_game(maps, samples, torch.tensor(targets), input_size=224, protocol="crop")
    assert torch.equal(new.hits, old_hits) and torch.equal(new.difficult, old_hard) and torch.equal(new.points, old_points)
    games = pg.PointingGame(input_size=224, protocol="crop").update({"m": maps, "n": maps.flip(-1)}, samples, targets)
    assert torch.equal(games["m"].hits, old_hits) and games["m"].accuracy == new.accuracy
    table = pg.PointingGame(input_size=224, protocol="crop")
    table.update({"m": maps[:2]}, samples[:2], targets[:2])
    table.update({"m": maps[2:]}, samples[2:], targets[2:])
    assert table.results()["m"].accuracy == new.accuracy
    centre = pg.centre_baseline(samples, targets, protocol="crop")
    assert torch.equal(centre.difficult, old_hard)
    # Single-class data (ImageNet/embedded) defaults to the crop protocol, as before.
    imagenet = [sample(400, 300, boxes=((150, 100, 250, 200),), box_labels=(9,), source="imagenet-val")] * 2
    default = pg.pointing_game(maps[:2], imagenet, input_size=224)
    old_hits, old_hard, _ = _old_pointing_game(maps[:2], imagenet, [9, 9], 224)
    assert torch.equal(default.hits, old_hits) and torch.equal(default.difficult, old_hard)


def test_torchray_protocol_game_accumulated_and_play_agree():
    generator = torch.Generator().manual_seed(4)
    a = sample(640, 320, boxes=((0, 0, 300, 200), (400, 100, 630, 310)), box_labels=(0, 5))
    b = sample(300, 500, boxes=((50, 50, 250, 450),), box_labels=(2,))
    found = pg.pairs([a, b])
    assert list(found) == [(0, 0), (0, 5), (1, 2)]
    samples = [[a, b][i] for i, _ in found]
    targets = [c for _, c in found]
    cams = [torch.rand(7, 7, generator=generator) for _ in found]  # low-resolution maps
    full = [torch.rand(224, 224, generator=generator) for _ in found]
    single = {key: pg.pointing_game(m, samples, targets) for key, m in (("cam", cams), ("full", full))}  # torchray: default
    games = pg.PointingGame().update({"cam": cams, "full": full}, samples, targets)
    played = pg.play({"cam": cams, "full": torch.stack(full)}, found, [a, b], centre=True)
    table = pg.PointingGame()
    table.update({"cam": cams}, samples, targets)
    for key in ("cam", "full"):
        for other in (games[key], played[key]):
            assert torch.equal(other.hits, single[key].hits) and torch.equal(other.labels, single[key].labels)
            assert torch.equal(other.points.long(), single[key].points.long()) and other.accuracy == single[key].accuracy
    assert table.results()["cam"].accuracy == single["cam"].accuracy
    centre = pg.centre_baseline(samples, targets, protocol="torchray")
    assert torch.equal(played["centre"].hits, centre.hits) and played["centre"].points.tolist() == [[320, 160]] * 2 + [[150, 250]]
    # Pairs in any order come back in that order.
    reverse = pg.play({"cam": cams[::-1]}, list(found)[::-1], [a, b])["cam"]
    assert reverse.hits.tolist() == single["cam"].hits.tolist()[::-1]


def test_protocol_bad_inputs():
    coco = sample()
    imagenet = sample(source="imagenet-val")
    with pytest.raises(ValueError, match="protocol must be"):
        pg.pointing_game(torch.zeros(1, 8, 8), [coco], protocol="whole")
    with pytest.raises(ValueError, match="mix single-class"):
        pg.pointing_game(torch.zeros(2, 8, 8), [coco, imagenet], input_size=8)
    with pytest.raises(ValueError, match="needs input_size"):
        pg.pointing_game(torch.zeros(1, 8, 8), [imagenet])
    with pytest.raises(ValueError, match="1 samples"):
        pg.pointing_game(torch.zeros(2, 8, 8), [coco])
    with pytest.raises(ValueError, match=r"\(h, w\) tensor"):
        pg.pointing_game([torch.zeros(8)], [coco])
    with pytest.raises(ValueError, match="unknown options"):
        pg.PointingGame(protcol="torchray")
    with pytest.raises(ValueError, match="protocol must be"):
        pg.PointingGame(protocol="TorchRay")
    with pytest.raises(ValueError, match="out of range"):
        pg.play({"m": [torch.zeros(8, 8)]}, [(3, 0)], [coco])
    with pytest.raises(ValueError, match="1 maps for 2"):
        pg.play({"m": [torch.zeros(8, 8)]}, [(0, 0), (0, 1)], [coco])
    with pytest.raises(ValueError, match="already has a key"):
        pg.play({"centre": [torch.zeros(8, 8)]}, [(0, 0)], [coco], centre=True)
    with pytest.raises(ValueError, match="original sizes"):
        data.whole_map_to_original(torch.zeros(2, 4, 4), [(8, 8)])


# ---------------------------------------------------------------------------------------------
# COCO128: TorchRay's centre baseline
# ---------------------------------------------------------------------------------------------


@needs_coco128
def test_centre_baseline_on_coco128():
    ds = data.coco(COCO128, "val2017")
    found = pg.pairs(ds)
    assert found.images == 128 and found.skipped == 0 and len(found) > 128
    result = pg.play({}, found, ds, centre=True)["centre"]
    n_difficult = int(result.difficult.sum())
    print(f"\nCOCO128 val2017 centre baseline (torchray protocol): {100 * result.accuracy:.1f}% over {len(found)} pairs, "
          f"{found.classes} classes; difficult {100 * result.accuracy_difficult:.1f}% over {n_difficult} pairs "
          "(TorchRay COCO14: 27.8% / 19.5%)")
    assert len(result.hits) == len(found) and 0 < n_difficult < len(found)
    assert 0.15 < result.accuracy < 0.45  # TorchRay's centre on COCO14: 27.8%
    first = ds[int(found.indices[0])]
    assert result.points[0].tolist() == [first.size[0] / 2, first.size[1] / 2]
    # The same through centre_baseline on the repeated samples.
    some = [(i, c) for i, c in found if i < 10]
    direct = pg.centre_baseline([ds[i] for i, _ in some], [c for _, c in some])
    assert direct.hits.tolist() == result.hits[:len(some)].tolist()
    assert pg.pairs(ds).indices.tolist() == pg.pairs(list(ds)).indices.tolist()


# ---------------------------------------------------------------- bad input


def test_nan_maps_and_absent_targets_are_refused_not_scored():
    two = [sample(), sample(boxes=((50, 50, 60, 60),))]
    maps = torch.stack([peak(100, 100, 5, 5), peak(100, 100, 5, 5)])
    with pytest.raises(ValueError, match="map 0 has 10000 NaN values"):  # argmax took the first NaN: (0, 0), a hit
        pg.pointing_game(torch.full((2, 100, 100), float("nan")), two, protocol="torchray")
    with pytest.raises(ValueError, match="complex"):
        pg.pointing_game(maps.to(torch.complex64), two, protocol="torchray")
    for targets in (5, -1, [0, 7]):  # a class with no object was a silent miss (and 'difficult')
        with pytest.raises(ValueError, match="has no object of class"):
            pg.pointing_game(maps, two, targets, protocol="torchray")
    with pytest.raises(ValueError, match="each target must be an integer, got 0.7"):  # int(0.7) == 0
        pg.pointing_game(maps, two, [0.7, 0.2], protocol="torchray")
    with pytest.raises(ValueError, match="targets must be None, an int"):
        pg.pointing_game(maps, two, True, protocol="torchray")
    import numpy as np

    assert pg.pointing_game(maps, two, np.int64(0), protocol="torchray").hits.tolist() == [True, False]  # was '1 targets'
    with pytest.raises(ValueError, match="tolerance must be a finite number"):  # an OverflowError
        pg.pointing_game(maps, two, protocol="torchray", tolerance=float("inf"))
    with pytest.raises(ValueError, match=r"area_fraction must be in \(0, 1\]"):  # NaN made nothing difficult
        pg.centre_baseline(two, protocol="torchray", area_fraction=float("nan"))
    with pytest.raises(ValueError, match="no samples to tell the protocol by"):  # was 'crop needs input_size'
        pg.pointing_game(torch.zeros(0, 10, 10), [])


def test_pairs_play_and_tables_name_what_is_wrong():
    two = [sample(), sample(boxes=((50, 50, 60, 60),))]
    maps = torch.stack([peak(100, 100, 5, 5), peak(100, 100, 5, 5)])
    found = pg.pairs(two)
    with pytest.raises(ValueError, match="maps must be a dict"):  # a TypeError / AttributeError from inside
        pg.PointingGame(protocol="torchray").update([maps], two)
    with pytest.raises(ValueError, match="maps must be a dict"):
        pg.play([maps], found, two, protocol="torchray")
    with pytest.raises(ValueError, match="pairs must be a Pairs"):
        pg.play({"a": maps}, [0, 1], two, protocol="torchray")
    for bad, what in (([(0.9, 0), (1, 0)], "sample index"), ([(0, 0.5), (1, 0)], "category")):  # truncated to 0
        with pytest.raises(ValueError, match=f"a pair's {what} must be an integer"):
            pg.play({"a": maps}, bad, two, protocol="torchray")
    with pytest.raises(ValueError, match="has no object of class 7"):
        pg.play({"a": maps}, [(0, 7), (1, 0)], two, protocol="torchray")
    with pytest.raises(ValueError, match="skip_difficult must be"):  # 'no' was truthy
        pg.pairs(two, skip_difficult="no")
    with pytest.raises(ValueError, match="samples must be a lib.data.Dataset"):
        pg.pairs(torch.zeros(3))
    assert len(pg.pairs(two, members=[])) == 0  # no mapped class: every pair counted as unmapped
    table = pg.PointingGame(protocol="torchray")
    table.update({("gradcam", "last"): maps}, two)
    with pytest.raises(ValueError, match="has 2 parts but names"):  # the layer column was dropped
        table.frame(names=("method",))
    assert list(table.frame(names=("method", "layer"))["layer"]) == ["last"]


def test_game_keeps_the_protocol_and_label_space_of_its_first_update():
    coco = [sample(), sample(boxes=((50, 50, 60, 60),))]
    embedded = [sample(source="embedded", box_labels=(281,)), sample(source="embedded", box_labels=(281,))]
    voc = [sample(source="voc2007/test"), sample(source="voc2007/test")]
    maps = torch.stack([peak(100, 100, 5, 5), peak(100, 100, 5, 5)])
    game = pg.PointingGame(input_size=100)
    game.update({"a": maps}, embedded)  # resolves to the crop protocol
    # Then a COCO batch was scored under torchray and averaged with the crop batch.
    with pytest.raises(ValueError, match="protocol 'torchray' on COCO labels, but the game's first update played "
                                         "protocol 'crop' on ImageNet labels"):
        game.update({"a": maps}, coco)
    assert len(game.results()["a"].hits) == 2
    game.update({"a": maps}, embedded)  # the same protocol and labels: joined
    assert len(game.results()["a"].hits) == 4
    # One explicit protocol, two label spaces: ImageNet class 0 and COCO class 0 were averaged as one class.
    explicit = pg.PointingGame(protocol="torchray")
    explicit.update({"a": maps}, embedded)
    with pytest.raises(ValueError, match="on COCO labels, but .* protocol 'torchray' on ImageNet labels"):
        explicit.update({"a": maps}, coco)
    explicit = pg.PointingGame(protocol="torchray")
    explicit.update({"a": maps}, voc)
    with pytest.raises(ValueError, match="on COCO labels, but .* on VOC labels"):
        explicit.update({"a": maps}, coco)
    # The same in one call, and across the images of play().
    with pytest.raises(ValueError, match=r"labels of ImageNet \(source 'embedded'\), COCO \(source 'coco128/val2017'\)"):
        pg.pointing_game(maps, [embedded[0], coco[0]], protocol="torchray")
    with pytest.raises(ValueError, match="one label space"):
        pg.play({"a": maps}, [(0, 281), (1, 0)], [embedded[0], coco[0]], protocol="torchray")
    with pytest.raises(ValueError, match="one label space"):
        pg.play({}, [(0, 281), (1, 0)], [embedded[0], coco[0]], protocol="torchray", centre=True)
