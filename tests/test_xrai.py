"""lib.saliency.regions (XRAI) against PAIR's reference code, a greedy selection by hand and bad input.

PAIR's ``saliency.core.XRAI`` (saliency 0.2.1) is the peer: its segmentation, its region selection
and its whole ``GetMask`` fed the same model through a ``call_model_function``.
"""

import numpy as np
import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, pearson, tiny_cnn
from lib import saliency
from lib.models import Classifier
from lib.saliency import regions
from lib.saliency.regions import select_regions, xrai

pair = pytest.importorskip("saliency.core")
pair_xrai = pytest.importorskip("saliency.core.xrai")


def smooth_images(batch: int = 2, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Blobs (8 x 8 noise up-sampled) plus a little pixel noise: images with regions to segment."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.randn(batch, 3, 8, 8, generator=generator)
    blobs = nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    return blobs + 0.05 * torch.randn(batch, 3, size, size, generator=generator)


def linear_cnn(classes: int = 5, seed: int = 0) -> nn.Module:
    """conv-flatten-linear without activation: the logits are linear in the image, so the gradient is
    the same at every point of the path and every quadrature of Integrated Gradients is exact."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 5, padding=2, stride=4), nn.Flatten(), nn.Linear(4 * 16 * 16, classes)).eval()


def call_model_function(model, target: int):
    """PAIR's interface: (N, H, W, C) inputs -> the target logit's gradient with respect to them."""

    def call(batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(batch), dtype=torch.float32).permute(0, 3, 1, 2).requires_grad_(True)
        (gradient,) = torch.autograd.grad(model(x)[:, target].sum(), x)
        return {pair.INPUT_OUTPUT_GRADIENTS: gradient.permute(0, 2, 3, 1).numpy()}

    return call


def hwc(image: torch.Tensor) -> np.ndarray:
    return image.permute(1, 2, 0).double().numpy()


# --------------------------------------------------------------------------------------------
# Parity with PAIR
# --------------------------------------------------------------------------------------------


def test_the_segments_are_pairs_felzenszwalb_segments_mask_for_mask():
    for picture in smooth_images(2, size=48):
        theirs = pair_xrai._get_segments_felzenszwalb(hwc(picture))
        ours = regions._felzenszwalb_members(hwc(picture), scales=regions.XRAI_SCALES, sigma=0.8, min_size=150,
                                             size=224, radius=5)
        assert len(ours) == len(theirs) > 6
        for pixels, mask in zip(ours, theirs):
            assert np.array_equal(pixels, np.flatnonzero(mask))


def test_the_greedy_selection_equals_pairs_on_random_attributions_and_overlapping_segments():
    rng = np.random.default_rng(0)
    for _ in range(5):
        attribution = rng.standard_normal((30, 40))
        masks = [rng.random((30, 40)) < p for p in rng.uniform(0.05, 0.5, size=25)]
        theirs, _ = pair.XRAI._xrai(attr=attribution, segs=masks, min_pixel_diff=20)
        ours = select_regions(torch.from_numpy(attribution), masks, min_pixel_diff=20)
        assert np.allclose(ours.numpy(), theirs, rtol=0, atol=1e-12)


@pytest.mark.parametrize("model", [tiny_cnn(), linear_cnn()], ids=["tiny_cnn", "linear"])
def test_the_map_equals_pairs_given_the_same_integrated_gradients(model):
    x, targets = smooth_images(2), torch.tensor([1, 3])
    ours = xrai(model, x, targets, steps=8, raw=True)
    for b in range(2):
        low, high = x[b].min(), x[b].max()  # PAIR's black and white: the image's smallest and largest value
        attribution = sum(saliency.integrated_gradients(model, x[b : b + 1], targets[b : b + 1], baseline=float(v), steps=8,
                                                        aggregate=None, raw=True) for v in (low, high)) / 2
        theirs = pair.XRAI().GetMask(hwc(x[b]), None, base_attribution=hwc(attribution[0]))
        assert np.allclose(ours[b].double().numpy(), theirs, rtol=1e-5, atol=1e-7)
        assert np.unique(theirs).size > 5  # several regions, not one constant


def test_the_whole_method_equals_pairs_get_mask_where_both_quadratures_are_exact():
    model, x, targets = linear_cnn(), smooth_images(2), [2, 4]
    ours = xrai(model, x, torch.tensor(targets), steps=10, raw=True)
    for b, target in enumerate(targets):
        theirs = pair.XRAI().GetMask(hwc(x[b]).astype(np.float32), call_model_function(model, target), batch_size=10,
                                     extra_parameters=pair.XRAIParameters(steps=10))
        assert np.allclose(ours[b].double().numpy(), theirs, rtol=1e-4, atol=1e-5)


def test_the_whole_method_correlates_with_pairs_get_mask_on_a_relu_network():
    # Trapezoid (ours) and PAIR's equal weights on the same 64 points differ by O(1/n) in the
    # attributions; the greedy order of near-equal regions may then swap, the maps still agree.
    model, x, targets = tiny_cnn(), smooth_images(2), [0, 3]
    ours = xrai(model, x, torch.tensor(targets), steps=64)
    for b, target in enumerate(targets):
        theirs = pair.XRAI().GetMask(hwc(x[b]).astype(np.float32), call_model_function(model, target), batch_size=64,
                                     extra_parameters=pair.XRAIParameters(steps=64))
        assert pearson(ours[b], torch.from_numpy(theirs)) >= 0.99


def test_a_classifier_segments_its_pixels_and_takes_real_black_and_white_baselines():
    """With the model's normalisation known, the segments are PAIR's of the un-normalised pixels and
    the baselines the black and white images normalised for the model."""
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])
    module = tiny_cnn()
    classifier = Classifier(module, "tiny", 64, mean, std, [f"class {i}" for i in range(5)])
    pixels = torch.sigmoid(smooth_images(2))
    x = classifier.normalize(pixels)
    black, white = classifier.normalize(torch.zeros(1, 3, 1, 1)), classifier.normalize(torch.ones(1, 3, 1, 1))
    segments = [pair_xrai._get_segments_felzenszwalb(hwc(p)) for p in pixels]
    expected = xrai(module, x, 1, segments=segments, baselines=(black, white), raw=True)
    assert torch.allclose(xrai(classifier, x, 1, raw=True), expected, rtol=1e-5, atol=0)
    bare = xrai(module, x, 1, raw=True)  # min-max baselines, the normalised image segmented: another map
    assert (bare - expected).abs().max() > 0.1 * expected.abs().max()


# --------------------------------------------------------------------------------------------
# The greedy selection by hand
# --------------------------------------------------------------------------------------------

#: Attributions of a 4 x 6 image, one value per column: 4 4 0 0 3 3.
COLUMNS = torch.tensor([4.0, 4.0, 0.0, 0.0, 3.0, 3.0])


def _columns(*which) -> torch.Tensor:
    mask = torch.zeros(4, 6, dtype=torch.bool)
    mask[:, list(which)] = True
    return mask


def _sum_model() -> nn.Module:
    """The logit of class 0 is the sum of all pixels: with baseline 0, IG = x in every channel."""
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 6, 2))
    with torch.no_grad():
        model[1].weight.zero_()
        model[1].weight[0] = 1.0
        model[1].bias.zero_()
    return model.eval()


def _toy_image(attribution: torch.Tensor) -> torch.Tensor:
    return attribution.expand(1, 3, 4, 6).clone()


def test_the_greedy_selection_by_hand_on_four_overlapping_segments():
    # S1 = cols 0-2: 32/12 = 8/3; S2 = cols 2-5: 24/16 = 1.5; S3 = cols 3-5: 24/12 = 2; S4 = cols 4-5: 24/8 = 3.
    # Step 1 adds S4 (3).  Step 2: S1 still 8/3, S2's new cols 2-3 and S3's new col 3 are worth 0: S1.
    # Step 3: S2 and S3 both add col 3 at 0, the first (S2) is chosen; S3 adds nothing more: done.
    attribution = COLUMNS.expand(4, 6)
    segments = [_columns(0, 1, 2), _columns(2, 3, 4, 5), _columns(3, 4, 5), _columns(4, 5)]
    expected = torch.tensor([8 / 3, 8 / 3, 8 / 3, 0.0, 3.0, 3.0]).expand(4, 6)
    assert torch.allclose(select_regions(attribution, segments, min_pixel_diff=1), expected)
    maps = xrai(_sum_model(), _toy_image(attribution), 0, segments=[segments], baselines=(0.0,), steps=2, raw=True,
                min_pixel_diff=1)
    assert torch.allclose(maps[0], expected, atol=1e-6)


def test_a_segment_adding_fewer_than_min_pixel_diff_new_pixels_is_never_chosen():
    attribution = COLUMNS.expand(4, 6).clone()
    attribution[:, 3] = 10.0
    segments = [_columns(0, 1, 2), _columns(3), _columns(3, 4, 5)]  # gains 8/3, 10 (4 pixels), (40 + 24) / 12
    # Any size: col 3 (10), then cols 4-5 of the third (24 / 8 = 3), then the first (8/3).
    assert torch.allclose(select_regions(attribution, segments, min_pixel_diff=1),
                          torch.tensor([8 / 3, 8 / 3, 8 / 3, 10.0, 3.0, 3.0]).expand(4, 6))
    # At least 5 new pixels: col 3 alone is refused, the third segment comes first at 64 / 12.
    assert torch.allclose(select_regions(attribution, segments, min_pixel_diff=5),
                          torch.tensor([8 / 3, 8 / 3, 8 / 3, 16 / 3, 16 / 3, 16 / 3]).expand(4, 6))


def test_pixels_no_segment_covers_take_their_mean_attribution():
    attribution = COLUMNS.expand(4, 6).clone()
    attribution[:, 3] = torch.tensor([1.0, 2.0, 3.0, 6.0])  # mean 3
    segments = [_columns(0, 1, 2), _columns(4, 5)]  # gains 3 (cols 4-5), then 8/3; col 3 is left over
    expected = torch.tensor([8 / 3, 8 / 3, 8 / 3, 3.0, 3.0, 3.0]).expand(4, 6)
    assert torch.allclose(select_regions(attribution, segments, min_pixel_diff=1), expected)


def test_a_label_map_is_a_partition_whose_regions_take_their_mean():
    attribution = COLUMNS.expand(4, 6)
    labels = torch.tensor([7, 7, 7, -1, -1, 2]).expand(4, 6)  # cols 0-2: 8/3, cols 3-4: 1.5, col 5: 3
    expected = torch.tensor([8 / 3, 8 / 3, 8 / 3, 1.5, 1.5, 3.0]).expand(4, 6)
    assert torch.allclose(select_regions(attribution, labels, min_pixel_diff=1), expected)
    maps = xrai(_sum_model(), _toy_image(attribution), 0, segments=labels.unsqueeze(0), baselines=(0.0,), steps=2,
                raw=True, min_pixel_diff=1)
    assert torch.allclose(maps[0], expected, atol=1e-6)
    normalised = xrai(_sum_model(), _toy_image(attribution), 0, segments=[labels.numpy()], baselines=(0.0,), steps=2,
                      min_pixel_diff=1)
    assert torch.allclose(normalised[0], (expected - 1.5) / 1.5, atol=1e-6)


def test_the_dilation_adds_the_pixels_within_the_disk():
    labels = np.zeros((7, 7), dtype=np.int64)
    labels[3, 3] = 1  # one pixel of label 1
    members = regions._dilated_labels(labels, 2)
    ys, xs = np.divmod(members[1], 7)
    assert sorted(zip(ys.tolist(), xs.tolist())) == sorted(
        (y, x) for y in range(7) for x in range(7) if (y - 3) ** 2 + (x - 3) ** 2 <= 4)
    assert members[0].size == 49  # label 0 surrounds the pixel: its dilation covers it


# --------------------------------------------------------------------------------------------
# Bad input, and the model given back as it came
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("segments, error, message", [
    ([torch.zeros(3, 16, 16, dtype=torch.bool)], ValueError, "one entry per image"),
    ([torch.zeros(3, 16, 15, dtype=torch.bool)] * 2, ValueError, r"\(K, 16, 16\)"),
    ([[torch.ones(16, 16, dtype=torch.bool), torch.ones(8, 8, dtype=torch.bool)]] * 2, ValueError, r"segments\[0\]\[1\] has shape"),
    ([torch.zeros(16, 16, dtype=torch.long), torch.zeros(16, 17, dtype=torch.long)], ValueError, r"segments\[1\]: a label map"),
    ([torch.zeros(16, 16)] * 2, TypeError, "integer label map, got dtype"),
    ([[torch.ones(16, 16)]] * 2, TypeError, "must be a boolean mask"),
    ([[[[True] * 16] * 16]] * 2, TypeError, "tensor or array"),
    ([[], []], ValueError, "at least one segment"),
    ([torch.zeros(0, 16, 16, dtype=torch.bool)] * 2, ValueError, "no mask"),
    ([torch.ones(16, 16, dtype=torch.bool)] * 2, ValueError, r"\(K, 16, 16\)"),
    ("cols", TypeError, "one entry per image"),
    (torch.tensor(3), TypeError, "0-d"),
])
def test_bad_segments_get_one_clear_error(segments, error, message):
    model = tiny_cnn()
    with pytest.raises(error, match=message):
        xrai(model, images(2, size=16), segments=segments, steps=2)
    assert no_hooks_left(model)


@pytest.mark.parametrize("settings, error, message", [
    (dict(baselines="black"), TypeError, "baselines must be a list"),
    (dict(baselines=()), ValueError, "baselines is empty"),
    (dict(baselines=("grey",)), ValueError, "unknown baseline 'grey'; accepted: black, white"),
    (dict(baselines=(float("nan"),)), ValueError, "baseline"),
    (dict(baselines=(torch.zeros(1, 3, 5, 5),)), ValueError, "does not broadcast"),
    (dict(scales=(50, 0)), ValueError, "scales"),
    (dict(scales=(50.5,)), TypeError, "scales"),
    (dict(scales=()), ValueError, "scales is empty"),
    (dict(segment_size=0), ValueError, "segment_size"),
    (dict(dilation_radius=-1), ValueError, "dilation_radius"),
    (dict(min_pixel_diff=0), ValueError, "min_pixel_diff"),
    (dict(sigma=-0.5), ValueError, "sigma"),
    (dict(steps=1), ValueError, "steps"),
])
def test_bad_settings_get_one_clear_error(settings, error, message):
    with pytest.raises(error, match=message):
        xrai(tiny_cnn(), images(2, size=16), **{"steps": 2, **settings})


def test_select_regions_refuses_bad_attributions():
    with pytest.raises(TypeError, match="floating-point tensor"):
        select_regions(np.zeros((4, 6)), [_columns(0)])
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        select_regions(torch.zeros(1, 4, 6), [_columns(0)])
    with pytest.raises(ValueError, match="NaN"):
        select_regions(torch.full((4, 6), float("nan")), [_columns(0)])
    with pytest.raises(ValueError, match="has shape"):
        select_regions(torch.zeros(4, 5), [_columns(0)])


def test_no_hook_is_left_and_the_model_comes_back_as_given():
    model = tiny_cnn().train()
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    x = smooth_images(2, size=32)
    given = x.clone()
    with pytest.warns(UserWarning, match="training mode"):
        maps = xrai(model, x, steps=3, segment_size=None, min_segment_size=20)
    assert maps.shape == (2, 32, 32) and maps.min() == 0 and maps.max() == 1
    assert no_hooks_left(model) and model.training and all(m.training for m in model.modules())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert torch.equal(x, given)


def test_a_single_segment_gives_a_constant_map_and_says_so():
    attribution = COLUMNS.expand(4, 6)
    whole = torch.ones(1, 4, 6, dtype=torch.bool)
    with pytest.warns(UserWarning, match=r"one region for image\(s\) \[0\]"):
        maps = xrai(_sum_model(), _toy_image(attribution), 0, segments=[whole], baselines=(0.0,), steps=2)
    assert torch.equal(maps, torch.zeros_like(maps))
