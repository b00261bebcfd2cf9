"""The multi-instance scores of lib.metrics.instances against hand computations on tiny maps."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from lib import data
from lib.metrics import instances

# A 4 x 6 image (height 4, width 6); two boxes of 2 x 2 pixels in opposite corners.
SIZE = (6, 4)
BOXES = [(0, 0, 1, 1), (4, 2, 5, 3)]


def corner_map():
    m = torch.zeros(4, 6)
    m[0, 0] = 4.0  # the maximum, inside the first box
    m[3, 5] = 1.0  # the second box's peak: 1/4 after normalisation
    return m


def test_weakest_peak_is_the_smaller_of_the_two_box_maxima():
    assert instances.weakest_instance_peak(corner_map(), BOXES, SIZE) == pytest.approx(0.25)
    assert instances.weakest_instance_peak(corner_map(), BOXES[::-1], SIZE) == pytest.approx(0.25)


def test_scores_are_invariant_to_a_positive_affine_change_of_the_map():
    m = corner_map()
    m[0, 3] = 2.0
    for score in (instances.weakest_instance_peak, instances.outside_share):
        assert score(3 * m + 1, BOXES, SIZE) == pytest.approx(score(m, BOXES, SIZE))


def test_a_dark_instance_scores_zero():
    m = torch.zeros(4, 6)
    m[1, 1] = 1.0
    assert instances.weakest_instance_peak(m, BOXES, SIZE) == 0.0


def test_outside_share_by_hand():
    m = corner_map()
    assert instances.outside_share(m, BOXES, SIZE) == pytest.approx(0.0)  # all mass (1 + 0.25) inside
    m[0, 3] = 2.0  # normalised 0.5, outside both boxes
    assert instances.outside_share(m, BOXES, SIZE) == pytest.approx(0.5 / (1 + 0.25 + 0.5))


def test_overlapping_boxes_count_their_union_once():
    m = torch.ones(4, 6)
    m[0, 0] = 2.0  # normalised: 1 at (0, 0), 0.5 at (3, 5), 0 elsewhere
    m[3, 5] = 1.5  # normalised 0.5, outside both boxes
    overlapping = [(0, 0, 1, 1), (1, 1, 2, 2)]  # union: 4 + 4 - 1 = 7 pixels, none of them (3, 5)
    assert instances.outside_share(m, overlapping, SIZE) == pytest.approx(0.5 / 1.5)
    assert instances.weakest_instance_peak(m, overlapping, SIZE) == pytest.approx(0.0)  # box 2 holds only zeros


def test_constant_maps_uniform_reference_and_empty_map():
    uniform = torch.full((4, 6), 0.3)
    assert instances.weakest_instance_peak(uniform, BOXES, SIZE) == 1.0
    assert instances.outside_share(uniform, BOXES, SIZE) == pytest.approx(16 / 24)  # 8 of 24 pixels in boxes
    empty = torch.zeros(4, 6)
    assert instances.weakest_instance_peak(empty, BOXES, SIZE) == 0.0
    assert instances.outside_share(empty, BOXES, SIZE) == 1.0


def test_box_pixels_follow_object_mask_including_the_last_pixel():
    # floor(x0) <= j <= floor(x1): (0.5, 0.5, 1.0, 1.0) covers rows and columns 0 and 1.
    m = torch.zeros(4, 6)
    m[1, 1] = 1.0
    assert instances.weakest_instance_peak(m, [(0.5, 0.5, 1.0, 1.0), (1, 1, 1.9, 1.9)], SIZE) == 1.0
    m = torch.zeros(4, 6)
    m[2, 2] = 1.0
    assert instances.weakest_instance_peak(m, [(0.5, 0.5, 1.0, 1.0), (2, 2, 3, 3)], SIZE) == 0.0
    boxes = [(0.2, 0.7, 2.5, 1.1), (3.9, 1.0, 6.0, 4.0), (5.0, 0.0, 5.0, 0.0)]  # the last box at the edge, one pixel
    sample = data.Sample(Image.new("RGB", SIZE), 0, torch.tensor(boxes), torch.zeros(3, dtype=torch.int64), "s", "test")
    union = instances.box_masks(boxes, SIZE).any(dim=0)
    assert torch.equal(union, data.object_mask(sample, 0, use_segments=False))


def test_boxes_at_the_image_edge_are_accepted():
    # COCO's x + w may equal the width; floor(6) = 6 is clipped to the last column.
    masks = instances.box_masks([(0, 0, 6, 4), (5, 3, 6.0003, 4.0003)], SIZE)
    assert masks[0].all() and masks[1].sum() == 1 and masks[1, 3, 5]


@pytest.mark.parametrize("saliency_map, boxes, message", [
    (torch.zeros(4, 6), torch.zeros(0, 4), "no boxes"),
    (torch.zeros(4, 6), [], "no boxes"),
    (torch.zeros(4, 6), [(0, 0, 1, 1)], "one instance"),
    (torch.zeros(4, 6), [(0, 0, 1, 1), (10, 0, 12, 2)], "box 1 .* lies outside the 6x4 image"),
    (torch.zeros(4, 6), [(0, 0, 1, 1), (2, 0, 8, 2)], "box 1 .* lies outside the 6x4 image"),
    (torch.zeros(4, 6), [(0, 0, 1, 1), (-3, -3, -2, -2)], "box 1 .* lies outside"),
    (torch.zeros(4, 6), [(0, 0, 1, 1), (3, 0, 2, 1)], "box 1 .* x1 < x0"),
    (torch.zeros(4, 6), [(0, 0, 1), (2, 0, 3)], r"\(K, 4\)"),
    (torch.zeros(4, 6), [(0, 0, 1, float("nan")), (2, 0, 3, 1)], "finite"),
    (torch.zeros(6, 4), BOXES, r"the map is \(6, 4\) but the image is 6x4"),
    (torch.zeros(224, 224), BOXES, r"the map is \(224, 224\) but the image is 6x4"),
    (torch.zeros(1, 4, 6), BOXES, "2-D"),
    (torch.full((4, 6), float("nan")), BOXES, "NaN"),
], ids=["empty-tensor", "empty-list", "one-box", "box-outside", "box-beyond-edge", "box-negative", "box-reversed",
        "box-three-numbers", "box-nan", "map-transposed", "map-input-size", "map-3d", "map-nan"])
def test_bad_inputs_give_one_clear_error(saliency_map, boxes, message):
    for score in (instances.weakest_instance_peak, instances.outside_share):
        with pytest.raises(ValueError, match=message):
            score(saliency_map, boxes, SIZE)


@pytest.mark.parametrize("size", [(0, 4), (6,), "6x4", (6.0, 4)])
def test_bad_size_is_rejected(size):
    with pytest.raises(ValueError, match="size must be a pair of positive ints"):
        instances.weakest_instance_peak(torch.zeros(4, 6), BOXES, size)


def test_instance_counts_counts_each_pairs_boxes():
    def sample(labels):
        return data.Sample(Image.new("RGB", SIZE), labels[0], torch.zeros(len(labels), 4), torch.tensor(labels), "s", "test")

    samples = [sample([0, 0, 1]), sample([2]), sample([1, 2, 2, 2])]
    counts = instances.instance_counts(samples, [(0, 0), (0, 1), (1, 2), (2, 2), (2, 1)])
    assert counts.tolist() == [2, 1, 1, 3, 1]
    with pytest.raises(ValueError, match="sample index outside the 3 samples"):
        instances.instance_counts(samples, [(3, 0)])
    with pytest.raises(ValueError, match="must be \\(sample index, category\\) ints"):
        instances.instance_counts(samples, [(0.5, 0)])


def test_map_errors_name_the_score_and_the_accepted_input():
    nan = corner_map()
    nan[1, 1] = float("nan")
    for score in (instances.weakest_instance_peak, instances.outside_share):
        with pytest.raises(ValueError, match=rf"{score.__name__}: the map contains NaN or infinite values \(1 NaN value\); "
                                             "a saliency map must be finite"):
            score(nan, BOXES, SIZE)
        with pytest.raises(TypeError, match=rf"{score.__name__}: the map must be a torch.Tensor \(H, W\), got list"):
            score(corner_map().tolist(), BOXES, SIZE)  # was a ValueError about its shape
