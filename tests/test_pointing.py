"""Pointing game (Zhang et al. 2016; TorchRay; Rebuffi et al. 2020 supp. A) on hand-made maps and boxes."""

import math

import pytest
import torch

from lib import data
from lib.metrics import pointing as pg


def sample(width=100, height=80, boxes=((40, 30, 49, 39),), box_labels=None, label=3, source="embedded"):
    from PIL import Image

    boxes = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    box_labels = torch.full((len(boxes),), label) if box_labels is None else torch.tensor(box_labels)
    return data.Sample(Image.new("RGB", (width, height)), label, boxes, box_labels, "s", source)


def box_mask(height, width, x0, y0, x1, y1):
    m = torch.zeros(height, width, dtype=torch.bool)
    m[y0:y1 + 1, x0:x1 + 1] = True
    return m


def peak(height, width, x, y):
    m = torch.zeros(height, width)
    m[y, x] = 1.0
    return m


def test_tolerance_boundary_strict_and_inclusive():
    # Mask: the single column x = 50; points on the row of a mask pixel, d px to its left.
    mask = box_mask(60, 120, 50, 10, 50, 40)
    dist = {d: peak(60, 120, 50 - d, 20) for d in (0, 14, 15, 16)}
    points = pg.max_points(list(dist.values()))
    strict = pg.hits_at(points, [mask] * 4, 15)
    inclusive = pg.hits_at(points, [mask] * 4, 15, inclusive=True)
    # TorchRay: d^2 < 15^2 (15 px is a miss); the paper's wording "within 15 px": 15 is a hit, 16 a miss.
    assert strict.tolist() == [True, True, False, False]
    assert inclusive.tolist() == [True, True, True, False]


def test_diagonal_distance_is_euclidean():
    mask = box_mask(100, 100, 50, 50, 60, 60)
    # (50 - 10, 50 - 11): distance sqrt(200 + 242) = 14.87 from the corner (50, 50) -> hit.
    # (50 - 11, 50 - 11): distance 15.56 -> miss, though each axis is within 15.
    maps = [peak(100, 100, 40, 39), peak(100, 100, 39, 39)]
    assert pg.hits_at(pg.max_points(maps), [mask, mask]).tolist() == [True, False]


def test_ties_take_first_maximum_row_major():
    m = torch.zeros(10, 10)
    m[7, 2] = 1
    m[3, 8] = 1  # earlier in row-major order
    assert pg.max_points([m]).tolist() == [[8, 3]]
    assert pg.max_points([torch.zeros(4, 5)]).tolist() == [[0, 0]]


def test_class_mean_accuracy_averages_per_class():
    hits = torch.tensor([1, 1, 1, 0, 0, 1], dtype=torch.bool)
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    # class 0: 3/4, class 1: 1/2 -> 0.625, whereas the pooled rate is 4/6.
    assert pg.class_mean_accuracy(hits, labels).item() == pytest.approx(0.625)
    assert math.isnan(pg.class_mean_accuracy(hits[:0], labels[:0]).item())


def test_hits_at_fractional_centre_point():
    mask = box_mask(80, 100, 0, 0, 10, 10)
    assert pg.hits_at([[50.0, 40.0]], [mask]).tolist() == [False]
    assert pg.hits_at([[20.0, 5.0]], [mask]).tolist() == [True]  # 10 px from column 10


def test_rescaled_boxes_and_crop_map_back_to_original():
    # An original 400 x 300 image: Resize(256) -> 341 x 256, CenterCrop(224): left 58, top 16.
    s = sample(400, 300, boxes=((200, 120, 239, 159),), label=7)
    g = data.crop_geometry(400, 300, 224, 0.875)
    assert (g.resized_width, g.resized_height, g.left, g.top) == (341, 256, 58, 16)
    # A peak at the box centre, expressed in input coordinates.
    cx, cy = (219.5 * g.scale_x - g.left), (139.5 * g.scale_y - g.top)
    maps = torch.zeros(2, 224, 224)
    maps[0, round(cy), round(cx)] = 1.0
    # A peak that lands ~40 original px left of the box: a miss.
    maps[1, round(cy), round((160 - 20) * g.scale_x - g.left)] = 1.0
    result = pg.pointing_game(maps, [s, s], input_size=224)
    assert result.hits.tolist() == [True, False]
    x, y = result.points[0].tolist()
    assert abs(x - 219.5) <= 2 and abs(y - 139.5) <= 2  # the maximum maps to the right original pixel
    assert result.labels.tolist() == [7, 7]
    assert result.accuracy == pytest.approx(0.5)


def test_crop_maximum_maps_to_the_right_original_pixel_on_tall_image():
    # Portrait 300 x 500: resized to 256 x 426, crop top = 101. Input pixel (112, 5) is near the top of the crop.
    g = data.crop_geometry(300, 500, 224, 0.875)
    maps = torch.zeros(1, 224, 224)
    maps[0, 5, 112] = 1.0
    original = data.map_to_original(maps, [(300, 500)], 224)[0]
    x, y = pg.max_points([original])[0].tolist()
    assert abs(x - (112 + 0.5 + g.left) / g.scale_x) <= 1.5
    assert abs(y - (5 + 0.5 + g.top) / g.scale_y) <= 1.5


def test_pointing_game_targets_and_multiclass():
    # Two classes in one image: class 1 on the left, class 2 on the right.
    s = sample(100, 100, boxes=((0, 0, 20, 20), (70, 70, 99, 99)), box_labels=(1, 2), label=1, source="voc2007")
    maps = torch.zeros(2, 100, 100)
    maps[0, 5, 5] = 1  # explains class 1: on it
    maps[1, 5, 5] = 1  # explains class 2: on class 1 -> miss
    result = pg.pointing_game(maps, [s, s], targets=torch.tensor([1, 2]), input_size=100, crop_fraction=1.0)
    assert result.hits.tolist() == [True, False]
    assert result.accuracy == pytest.approx(0.5)
    # Both objects are small (< 25%) and another class is present -> both difficult.
    assert result.difficult.tolist() == [True, True]


def test_difficult_rules():
    small_multi = sample(100, 100, boxes=((0, 0, 9, 9), (50, 50, 59, 59)), box_labels=(3, 4), source="voc2007")
    small_alone = sample(100, 100, boxes=((0, 0, 9, 9),), source="voc2007")
    big_multi = sample(100, 100, boxes=((0, 0, 59, 59), (70, 70, 79, 79)), box_labels=(3, 4), source="voc2007")
    small_imagenet = sample(100, 100, boxes=((0, 0, 9, 9),), source="imagenet-val")
    big_imagenet = sample(100, 100, boxes=((0, 0, 49, 49),), source="imagenet-val")  # exactly 25%: not < 25%
    assert pg.difficult(small_multi) is True
    assert pg.difficult(small_alone) is False
    assert pg.difficult(big_multi) is False
    assert pg.difficult(small_imagenet) is True  # single-class dataset: area rule alone
    assert pg.difficult(big_imagenet) is False
    assert pg.difficult(small_imagenet, other_class=True) is False


def test_centre_baseline_and_centre_maps():
    hit = sample(100, 80, boxes=((45, 35, 55, 45),), label=0)
    miss = sample(100, 80, boxes=((0, 0, 10, 10),), label=1)
    result = pg.centre_baseline([hit, miss])
    assert result.points.tolist() == [[50.0, 40.0], [50.0, 40.0]]
    assert result.hits.tolist() == [True, False]
    maps = pg.centre_maps(2, 9)
    assert maps.shape == (2, 9, 9) and pg.max_points(maps).tolist() == [[4, 4], [4, 4]]


def test_pointing_interval_and_paired_difference():
    labels = torch.arange(40) % 4
    better = pg.PointingResult.from_hits(torch.ones(40, dtype=torch.bool), labels, torch.zeros(40, dtype=torch.bool), torch.zeros(40, 2))
    worse = pg.PointingResult.from_hits(torch.arange(40) % 2 == 0, labels, torch.zeros(40, dtype=torch.bool), torch.zeros(40, 2))
    iv = worse.interval(resamples=300)
    assert iv.low <= 0.5 <= iv.high and iv.value == pytest.approx(0.5)
    diff = pg.pointing_interval(better, minus=worse, resamples=300)
    assert diff.value == pytest.approx(0.5) and diff.low > 0
    assert math.isnan(worse.interval("difficult").value)


def test_cat_joins_batches():
    a = pg.PointingResult.from_hits([True], [0], [False], torch.zeros(1, 2))
    b = pg.PointingResult.from_hits([False, False], [1, 1], [True, True], torch.zeros(2, 2))
    joined = pg.PointingResult.cat([a, b])
    assert joined.accuracy == pytest.approx(0.5) and joined.accuracy_difficult == 0.0


def test_grid_pointing():
    images = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 4, 4)
    grids = pg.grid_images(images)
    assert grids.shape == (2, 3, 8, 8)
    assert grids[0, 0, 0, 0] == 0 and grids[0, 0, 0, 4] == 1 and grids[0, 0, 4, 0] == 2 and grids[1, 0, 7, 7] == 7
    maps = torch.zeros(4, 8, 8)
    maps[0, 1, 1] = 1  # tile 0, max in tile 0: hit
    maps[1, 1, 1] = 1  # tile 1, max in tile 0: miss
    maps[2, 6, 1] = 1  # tile 2 (bottom left): hit
    maps[3] = 1.0  # uniform: first maximum in tile 0 -> miss; energy 1/4
    result = pg.grid_pointing(maps)
    assert result.hits.tolist() == [[True, False, True, False]]
    assert result.energy[0].tolist() == pytest.approx([1.0, 0.0, 1.0, 0.25])
    groups = pg.grid_groups(torch.tensor([0, 0, 1, 1, 2, 3, 3]), 5, seed=1)
    labels = torch.tensor([0, 0, 1, 1, 2, 3, 3])[groups]
    assert groups.shape == (5, 4) and all(len(set(row.tolist())) == 4 for row in labels)
    with pytest.raises(ValueError):
        pg.grid_groups(torch.tensor([0, 1, 1]), 1)


def test_bad_inputs():
    with pytest.raises(ValueError):
        pg.hits_at([[0, 0]], [torch.zeros(3, dtype=torch.bool)])  # a mask that is not (H, W)
    with pytest.raises(ValueError):
        pg.hits_at([[0, 0]], [])
    with pytest.raises(ValueError):
        pg.pointing_game(torch.zeros(2, 8, 8), [sample()], input_size=8)


def test_accumulated_game_matches_single_game():
    s1 = sample(100, 80, boxes=((10, 10, 30, 30),), label=0)
    s2 = sample(100, 80, boxes=((60, 40, 90, 70),), label=1)
    a = torch.zeros(2, 100, 100)
    a[0, 25, 20] = 1
    a[1, 25, 20] = 1
    b = torch.rand(2, 100, 100, generator=torch.Generator().manual_seed(0))
    games = pg.PointingGame(input_size=100).update({"a": a, "b": b}, [s1, s2])
    for key, maps in (("a", a), ("b", b)):
        single = pg.pointing_game(maps, [s1, s2], input_size=100)
        assert torch.equal(games[key].hits, single.hits) and games[key].accuracy == single.accuracy
    table = pg.PointingGame(input_size=100)
    table.update({("m", "l1"): a[:1]}, [s1])
    table.update({("m", "l1"): a[1:]}, [s2])
    table.add(("centre", "-"), pg.centre_baseline([s1, s2]))
    frame = table.frame(names=("method", "layer"))
    row = frame[frame.method == "m"].iloc[0]
    assert row.accuracy == pytest.approx(games["a"].accuracy) and row.n == 2


def test_max_points_refuses_maps_whose_maximum_is_undefined():
    m = torch.zeros(4, 5)
    m[2, 3] = float("nan")
    # argmax returned the NaN's position
    with pytest.raises(ValueError, match=r"max_points: maps contain NaN or infinite values \(map 0 has 1 NaN value\)"):
        pg.max_points([m])
    assert pg.max_points([torch.ones(4, 5, dtype=torch.int64)]).tolist() == [[0, 0]]  # integer maps still fine


# ---------------------------------------------------------------- the accumulator refuses what it cannot join


def _two_batches():
    """Two embedded-source samples (crop protocol) and two keys' maps on a 100 x 100 input."""
    s1 = sample(100, 80, boxes=((10, 10, 30, 30),), label=0)
    s2 = sample(100, 80, boxes=((60, 40, 90, 70),), label=1)
    a = torch.zeros(2, 100, 100)
    a[:, 25, 20] = 1  # on s1's box, off s2's
    b = torch.rand(2, 100, 100, generator=torch.Generator().manual_seed(0))
    return [s1, s2], a, b


def test_game_updates_must_carry_the_first_updates_keys():
    samples, a, b = _two_batches()
    game = pg.PointingGame(input_size=100)
    game.update({"a": a[:1], "b": b[:1]}, samples[:1])
    # Leaving "b" out made it cover half the pairs of "a" (a n=2, b n=1), listed side by side by frame().
    with pytest.raises(ValueError, match=r"lacks \['b'\] and adds \[\]"):
        game.update({"a": a[1:]}, samples[1:])
    with pytest.raises(ValueError, match=r"lacks \[\] and adds \['c'\]"):
        game.update({"a": a[1:], "b": b[1:], "c": b[1:]}, samples[1:])
    assert [len(r.hits) for r in game.results().values()] == [1, 1]  # the refused updates left nothing behind
    game.update({"b": b[1:], "a": a[1:]}, samples[1:])  # the same keys in another order are fine
    joined = game.results()
    for key, maps in (("a", a), ("b", b)):
        single = pg.pointing_game(maps, samples, input_size=100)
        assert torch.equal(joined[key].hits, single.hits) and joined[key].accuracy == single.accuracy


def test_game_add_takes_pointing_results_on_the_same_pairs():
    samples, a, _ = _two_batches()
    game = pg.PointingGame(input_size=100)
    game.update({"a": a[:1]}, samples[:1])
    with pytest.raises(TypeError, match="must be a PointingResult.*got dict"):  # was an AttributeError in results()
        game.add("centre", {"hits": 1})
    with pytest.raises(TypeError, match="got NoneType"):
        game.add("centre", None)
    with pytest.raises(ValueError, match="key 'a' is filled by update"):  # joined the centre's pairs to a's maps'
        game.add("a", pg.centre_baseline(samples))
    with pytest.raises(ValueError, match=r"keys \['a'\] were filled by add"):
        other = pg.PointingGame(input_size=100)
        other.add("a", pg.centre_baseline(samples[:1]))
        other.update({"a": a[:1]}, samples[:1])
    game.add("centre", pg.centre_baseline(samples[:1]))
    game.update({"a": a[1:]}, samples[1:])
    # The centre covers the first batch only: results() and frame() refuse to list it beside "a".
    with pytest.raises(ValueError, match=r"'centre' covers other pairs than key 'a' \(pairs per key: \{'a': 2, 'centre': 1\}"):
        game.results()
    with pytest.raises(ValueError, match="covers other pairs"):
        game.frame()
    game.add("centre", pg.centre_baseline(samples[1:]))  # after each batch's update, as play() does
    results = game.results()
    centre = pg.centre_baseline(samples)
    assert torch.equal(results["centre"].hits, centre.hits) and results["centre"].accuracy == centre.accuracy
    assert list(game.frame()["n"]) == [2, 2]


def test_game_options_are_checked_in_the_constructor():
    for tolerance in (True, "15", None):  # True was a tolerance of 1 px; "15", None a TypeError from a comparison
        with pytest.raises(TypeError, match="tolerance must be a finite number >= 0"):
            pg.PointingGame(input_size=100, tolerance=tolerance)
    with pytest.raises(ValueError, match="tolerance must be a finite number >= 0, got -1"):  # was accepted until an update
        pg.PointingGame(input_size=100, tolerance=-1)
    for inclusive in ("no", None, 2):  # "no" and 2 were truthy: inclusive
        with pytest.raises(TypeError, match="inclusive must be True or False"):
            pg.PointingGame(input_size=100, inclusive=inclusive)
    for area_fraction in ("x", None, True):  # True was an area fraction of 1
        with pytest.raises(TypeError, match=r"area_fraction must be a number in \(0, 1\]"):
            pg.PointingGame(input_size=100, area_fraction=area_fraction)
    with pytest.raises(TypeError, match="tolerance must be"):
        pg.hits_at([[0, 0]], [torch.ones(4, 4, dtype=torch.bool)], True)
    with pytest.raises(TypeError, match="inclusive must be"):
        pg.hits_at([[0, 0]], [torch.ones(4, 4, dtype=torch.bool)], inclusive="no")
    assert pg.PointingGame(input_size=100, tolerance=15.0, inclusive=True, area_fraction=1).tolerance == 15.0


def test_game_refuses_boolean_targets_and_samples_that_are_not_samples():
    samples, a, _ = _two_batches()
    s = sample(100, 80, boxes=((10, 10, 30, 30),), label=1)  # class 1: torch.tensor(True) was read as 1
    for targets in (torch.tensor(True), torch.tensor([True, True])):
        with pytest.raises(ValueError, match="boolean Tensor"):
            pg.PointingGame(input_size=100).update({"a": a}, [s, s], targets)
    for bad, named in (([0, 1], "got int at position 0"), (None, "got NoneType"), (3, "got int")):
        with pytest.raises(TypeError, match=f"samples must be a lib.data.Dataset or a sequence of lib.data.Sample, {named}"):
            pg.PointingGame(input_size=100).update({"a": a}, bad)
    with pytest.raises(TypeError, match="sequence of lib.data.Sample"):
        pg.pointing_game(a, [0, 1], input_size=100)
    with pytest.raises(TypeError, match="sequence of lib.data.Sample"):
        pg.centre_baseline(None)
    assert pg.PointingGame(input_size=100).update({"a": a}, iter(samples))["a"].hits.tolist() == [True, False]


def test_game_frame_names_copies_and_points_dtype():
    samples, a, _ = _two_batches()
    game = pg.PointingGame(input_size=100)
    with pytest.raises(TypeError, match="names must be a sequence of column names"):  # "key" was split into k, e, y
        game.frame(names="key")
    batch = game.update({"a": a[:1]}, samples[:1])
    batch["a"].hits[:] = ~batch["a"].hits  # the returned result is a copy: the game keeps its own
    assert game.results()["a"].hits.tolist() == [True]
    centre = pg.centre_baseline(samples[:1])
    game.add("centre", centre)
    centre.hits[:] = ~centre.hits
    assert game.results()["centre"].hits.tolist() == [False]  # as scored, not as changed afterwards
    game.update({"a": a[1:]}, samples[1:])
    game.add("centre", pg.centre_baseline(samples[1:]))
    results = game.results()
    assert batch["a"].points.dtype == torch.int64 and results["a"].points.dtype == torch.int64  # was float64 once joined
    assert results["a"].points.tolist() == pg.pointing_game(a, samples, input_size=100).points.tolist()
    assert results["centre"].points.dtype == torch.float64 and results["centre"].points.tolist() == [[50.0, 40.0]] * 2


def test_crop_geometry_is_checked_in_the_constructor():
    # input_size and crop_fraction were read only at the first crop-protocol update.
    for input_size in (224.0, "224", True):
        with pytest.raises(TypeError, match=r"input_size must be None or an integer >= 1 \(the side of the network's centre crop"):
            pg.PointingGame(input_size=input_size)
    for input_size in (0, -224):
        with pytest.raises(ValueError, match=rf"input_size \(the side of the network's centre crop, or None\) must be an "
                                             rf"integer >= 1, got {input_size}"):
            pg.PointingGame(input_size=input_size)
    for crop_fraction in (0, 1.5, float("nan"), -0.875):
        with pytest.raises(ValueError, match=r"PointingGame: crop_fraction .* must be a finite number in \(0, 1\]"):
            pg.PointingGame(input_size=224, crop_fraction=crop_fraction)
    for crop_fraction in ("0.875", None, True):
        with pytest.raises(TypeError, match=r"PointingGame: crop_fraction .* must be a finite number in \(0, 1\]"):
            pg.PointingGame(input_size=224, crop_fraction=crop_fraction)
    with pytest.raises(ValueError, match="crop_fraction"):  # play builds its game before reading maps or samples
        pg.play({"a": torch.zeros(1, 8, 8)}, [(0, 3)], [sample()], crop_fraction=2)
    import numpy as np

    game = pg.PointingGame(input_size=np.int64(100), crop_fraction=1)
    assert game.input_size == 100 and type(game.input_size) is int and game.crop_fraction == 1.0
    assert pg.PointingGame(protocol="torchray").input_size is None  # unused under torchray: None is fine


def _coco_pair_samples():
    return [sample(100, 80, source="coco128/val2017"), sample(100, 80, boxes=((50, 50, 60, 60),), source="coco128/val2017")]


def test_play_reads_pairs_from_any_iterable():
    two = _coco_pair_samples()
    maps = torch.stack([peak(80, 100, 45, 35), peak(80, 100, 5, 5)])
    listed = pg.play({"a": maps}, [(0, 3), (1, 3)], two, protocol="torchray")["a"]
    assert listed.hits.tolist() == [True, False]
    for pairs in (((i, 3) for i in range(2)), iter([(0, 3), (1, 3)]), torch.tensor([[0, 3], [1, 3]]),
                  __import__("numpy").array([[0, 3], [1, 3]]), pg.pairs(two)):
        # a generator was consumed by the check of its items: "maps['a']: 2 maps for 0 samples"
        played = pg.play({"a": maps}, pairs, two, protocol="torchray")["a"]
        assert torch.equal(played.hits, listed.hits) and torch.equal(played.labels, listed.labels)


def test_play_refuses_pairs_and_samples_it_cannot_read():
    two = _coco_pair_samples()
    maps = torch.stack([peak(80, 100, 45, 35), peak(80, 100, 5, 5)])
    for pairs in (5, "03", {0: 3}):
        with pytest.raises(TypeError, match=r"play: pairs must be a Pairs \(from pairs\(\)\) or an iterable of "
                                            rf"\(sample index, category\) tuples .*, got {type(pairs).__name__}"):
            pg.play({"a": maps}, pairs, two, protocol="torchray")
    with pytest.raises(ValueError, match=r"pairs must be a Pairs or \(sample index, category\) tuples; pair 0 is "
                                         r"tensor\(0\)"):
        pg.play({"a": maps}, torch.tensor([0, 1]), two, protocol="torchray")  # was a TypeError from len()
    with pytest.raises(TypeError, match="play: samples must be the dataset the pairs index"):
        pg.play({"a": maps}, [(0, 3), (1, 3)], iter(two), protocol="torchray")


@pytest.mark.parametrize("bad,what", [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value"),
                                      (-float("inf"), "1 infinite value")])
def test_non_finite_maps_are_refused_under_both_protocols(bad, what):
    # An infinite value was a "maximum" like any other; NaN was refused only after being carried back.
    crop = [sample(100, 80, boxes=((10, 10, 30, 30),), label=0), sample(100, 80, label=0)]
    maps = torch.rand(2, 100, 100, generator=torch.Generator().manual_seed(3))
    maps[1, 4, 4] = bad
    message = rf"pointing game: maps contain NaN or infinite values \(map 1 has {what}\); a saliency map must be finite"
    with pytest.raises(ValueError, match=message):
        pg.pointing_game(maps, crop, input_size=100)
    with pytest.raises(ValueError, match=message.replace("maps contain", r"maps\['m'\] contain")):
        pg.PointingGame(protocol="torchray").update({"m": list(maps)}, _coco_pair_samples())
    with pytest.raises(ValueError, match=r"max_points: maps contain NaN or infinite values \(map 1 has"):
        pg.max_points(maps)


def test_hits_at_refuses_non_finite_points():
    mask = torch.ones(4, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"hits_at: points contain NaN or infinite values \(point 1 has 1 NaN value\)"):
        pg.hits_at([[0, 0], [float("nan"), 1]], [mask, mask])  # was "cannot convert float NaN to integer"


def test_grid_functions_check_their_grid_and_maps():
    maps = torch.zeros(4, 8, 8)
    for rows, cols in ((0, 2), (2, -1)):  # rows * cols = 0 was a ZeroDivisionError
        with pytest.raises(ValueError, match=r"grid_pointing: (rows|cols) must be an integer >= 1"):
            pg.grid_pointing(maps, rows=rows, cols=cols)
        with pytest.raises(ValueError, match=r"grid_images: (rows|cols) must be an integer >= 1"):
            pg.grid_images(torch.zeros(4, 3, 4, 4), rows=rows, cols=cols)
    with pytest.raises(ValueError, match="grid_groups: tiles must be an integer >= 1, got 0"):
        pg.grid_groups(torch.tensor([0, 1, 2]), 2, tiles=0)  # was a reshape error after grouping every image
    with pytest.raises(TypeError, match="grid_groups: count must be an integer >= 0, got float 2.5"):
        pg.grid_groups(torch.tensor([0, 1, 2, 3]), 2.5)  # three groups were drawn, then a reshape error
    with pytest.raises(TypeError, match="grid_pointing: rows must be an integer >= 1, got float 2.0"):
        pg.grid_pointing(maps, rows=2.0)
    with pytest.raises(TypeError, match="grid_images: tile_size .* must be an integer >= 1, got float 8.5"):
        pg.grid_images(torch.zeros(4, 3, 4, 4), tile_size=8.5)
    maps[3, 0, 0] = float("nan")  # its localisation energy was NaN, and so the mean
    with pytest.raises(ValueError, match=r"grid_pointing: maps contain NaN or infinite values \(map 3 has 1 NaN value\)"):
        pg.grid_pointing(maps)
    signed = torch.zeros(4, 8, 8) - 1.0
    signed[0, 1, 1] = 2.0
    assert pg.grid_pointing(signed).hits[0, 0]  # negative values are fine: argmax and positive mass
