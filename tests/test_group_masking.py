"""Group-CAM (Zhang et al. 2021): Eqs. 2-7 against hand computations on a tiny network."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.functional import gaussian_blur as tv_gaussian_blur

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.saliency.passes import normalise_maps, upsample
from lib.saliency.group_masking import gaussian_blur, group_maps, groupcam, percentile_filter

LAYER = "features.3"  # 12 channels at 8 x 8 for 16 x 16 inputs


def test_registered():
    assert saliency.METHODS["groupcam"] is groupcam


# ---------------------------------------------------------------- Eq. 3, the de-noising filter
def test_percentile_filter_on_a_known_array():
    m = torch.arange(1.0, 17.0).reshape(1, 4, 4)
    # numpy.percentile(1..16, 70) = 1 + 0.7 * 15 = 11.5: keep 12..16, zero the rest
    expected = torch.where(m > 11.5, m, torch.zeros_like(m))
    assert torch.equal(percentile_filter(m, 70), expected)
    # theta = 0: the percentile is the minimum and Eq. 3's strict ">" zeroes it
    assert torch.equal(percentile_filter(m, 0), torch.where(m > 1, m, torch.zeros_like(m)))
    # theta = 100: nothing is above the maximum
    assert torch.equal(percentile_filter(m, 100), torch.zeros_like(m))
    # ties: the median of [0, 0, 0, 5] is 0, so only the 5 stays
    t = torch.tensor([[[0.0, 0.0], [0.0, 5.0]]])
    assert torch.equal(percentile_filter(t, 50), torch.tensor([[[0.0, 0.0], [0.0, 5.0]]]))


def test_percentile_filter_matches_numpy_per_map():
    maps = torch.rand(2, 3, 7, 7, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for theta in (10, 33.3, 70, 90):
        out = percentile_filter(maps, theta)
        for index in np.ndindex(2, 3):
            a = maps[index].numpy()
            expected = np.where(a > np.percentile(a, theta), a, 0)
            assert np.allclose(out[index].numpy(), expected)
    with pytest.raises(ValueError, match="percentile"):
        percentile_filter(maps, 101)


# ---------------------------------------------------------------- Eq. 2, grouping
def test_group_maps_sum_contiguous_channels_then_relu():
    a = torch.randn(2, 6, 3, 3, generator=torch.Generator().manual_seed(1))
    w = torch.randn(2, 6, generator=torch.Generator().manual_seed(2))
    weighted = w[:, :, None, None] * a
    got = group_maps(a, w, 3)
    for g in range(3):
        assert torch.allclose(got[:, g], F.relu(weighted[:, 2 * g : 2 * g + 2].sum(1)))
    # G = K: one channel per group; G = 1: the Grad-CAM map
    assert torch.allclose(group_maps(a, w, 6), F.relu(weighted))
    assert torch.allclose(group_maps(a, w, 1)[:, 0], F.relu(weighted.sum(1)))
    # G not dividing K: channel k in group floor(k G / K): 6 channels, 4 groups -> sizes 2, 1, 2, 1
    sizes = [[0, 1], [2], [3, 4], [5]]
    got = group_maps(a, w, 4)
    for g, members in enumerate(sizes):
        assert torch.allclose(got[:, g], F.relu(weighted[:, members].sum(1)), atol=1e-6)
    with pytest.raises(ValueError, match="groups"):
        group_maps(a, w, 7)


# ---------------------------------------------------------------- the blur
def test_gaussian_blur_matches_torchvision_and_keeps_constants():
    x = torch.randn(2, 3, 40, 36, generator=torch.Generator().manual_seed(3))
    for size, sigma in ((35, 10.0), (11, 5.0), (5, 1.0)):
        assert torch.allclose(gaussian_blur(x, size, sigma), tv_gaussian_blur(x, [size, size], [sigma, sigma]), atol=1e-5)
    constant = torch.full((1, 3, 16, 16), 0.3)
    assert torch.allclose(gaussian_blur(constant, 51, 50.0), constant)  # replicate border on a small image


# ---------------------------------------------------------------- the whole method
def reference_groupcam(model, x, target, groups, theta, variant, kernel=51, sigma=50.0):
    """Algorithm 1 one image, one group at a time, written from the paper (and the code variant)."""
    activations = {}
    handle = model.features[3].register_forward_hook(lambda m, i, o: activations.setdefault("a", o))
    with torch.enable_grad():
        logits = model(x)
    handle.remove()
    a = activations["a"]
    (g,) = torch.autograd.grad(logits[0, target], a)
    w = g.mean(dim=(2, 3))[0]  # Eq. 1
    a = a.detach()[0]
    blurred = tv_gaussian_blur(x, [kernel, kernel], [sigma, sigma]) if x.shape[-1] > kernel // 2 else gaussian_blur(x, kernel, sigma)
    with torch.no_grad():
        base = model(blurred).softmax(1)[0, target]
        per = a.shape[0] // groups
        total = torch.zeros(x.shape[-2:])
        for l in range(groups):
            m = F.relu((w[l * per : (l + 1) * per, None, None] * a[l * per : (l + 1) * per]).sum(0))  # Eq. 2
            if theta is not None:
                p = np.percentile(m.numpy(), theta)
                m = torch.where(m > float(p), m, torch.zeros_like(m))  # Eq. 3
            if variant == "paper":
                span = m.max() - m.min()
                m_norm = (m - m.min()) / span if span > 0 else torch.zeros_like(m)  # Eq. 4
                mask = F.interpolate(m_norm[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
            else:
                up = F.interpolate(m[None, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
                span = up.max() - up.min()
                mask = (up - up.min()) / span if span > 0 else torch.zeros_like(up)
            perturbed = x * mask + blurred * (1 - mask)  # Eq. 5
            alpha = model(perturbed).softmax(1)[0, target] - base  # Eq. 6
            total += alpha * mask if variant == "paper" else F.relu(alpha) * up
    return F.relu(total) if variant == "paper" else total  # Eq. 7


@pytest.mark.parametrize("variant,theta", [("paper", 70.0), ("paper", None), ("code", None), ("code", 50.0)])
def test_batched_groupcam_equals_algorithm_1_one_group_at_a_time(variant, theta):
    model, x, targets = tiny_cnn(), images(3, size=16), torch.tensor([0, 3, 4])
    got = groupcam(model, x, targets, layer=LAYER, groups=4, theta=theta, variant=variant, raw=True, batch_size=5)
    for b in range(3):
        expected = reference_groupcam(model, x[b : b + 1], int(targets[b]), 4, theta, variant)
        assert torch.allclose(got[b], expected, atol=1e-6), (b, (got[b] - expected).abs().max())
    assert no_hooks_left(model)


def test_default_theta_follows_the_variant():
    model, x = tiny_cnn(), images(2, size=16)
    paper = groupcam(model, x, 1, layer=LAYER, groups=4)
    assert torch.equal(paper, groupcam(model, x, 1, layer=LAYER, groups=4, theta=70.0))
    code = groupcam(model, x, 1, layer=LAYER, groups=4, variant="code")
    assert torch.equal(code, groupcam(model, x, 1, layer=LAYER, groups=4, variant="code", theta=None))
    with pytest.raises(ValueError, match="variant"):
        groupcam(model, x, layer=LAYER, groups=4, variant="latest")


@pytest.mark.parametrize("variant", ["paper", "code"])
def test_one_group_without_denoising_is_gradcam_when_the_gain_is_positive(variant):
    # The paper's remark (Sec. 1): G = 1 and no de-noising "simplifies to Grad-CAM".
    # Exactly: L = ReLU(alpha_0 M'_0); after min-max normalisation this is Grad-CAM's map
    # when alpha_0 > 0 (upsampling commutes with the affine normalisation), and zeros when
    # alpha_0 <= 0.  Both cases occur among these 3 images x 5 classes.
    model, x = tiny_cnn(), images(3, size=16)
    blurred = gaussian_blur(x, 51, 50.0)
    seen = set()
    for target in range(5):
        grad = saliency.gradcam(model, x, target, layer=LAYER)
        group = groupcam(model, x, target, layer=LAYER, groups=1, theta=None, variant=variant)
        with torch.no_grad():
            mask = grad[:, None]  # M'_0 upsampled = normalised upsampled Grad-CAM
            gain = model(x * mask + blurred * (1 - mask)).softmax(1)[:, target] - model(blurred).softmax(1)[:, target]
        for b in range(3):
            if gain[b] > 1e-6:
                assert torch.allclose(group[b], grad[b], atol=1e-5)
                seen.add("positive")
            elif gain[b] < -1e-6:
                assert torch.equal(group[b], torch.zeros_like(group[b]))
                seen.add("negative")
    assert seen == {"positive", "negative"}


def test_denoising_is_a_no_op_exactly_when_relu_already_zeroed_theta_percent():
    # Eq. 3 with theta = 70 leaves a ReLU'd map alone when at least 70 % of it is zero
    # (its 70th percentile is 0); otherwise it zeroes positive values and G = 1 differs
    # from Grad-CAM.  Both cases occur here.
    model, x = tiny_cnn(), images(3, size=16)
    seen = set()
    for target in range(5):
        raw = saliency.gradcam(model, x, target, layer=LAYER, raw=True)
        grad = saliency.gradcam(model, x, target, layer=LAYER)
        group = groupcam(model, x, target, layer=LAYER, groups=1, theta=70.0)
        for b in range(3):
            if group[b].max() == 0:  # non-positive gain: nothing to compare
                continue
            zeros = float((raw[b] == 0).float().mean())
            if zeros >= 0.7:
                assert torch.allclose(group[b], grad[b], atol=1e-5)
                seen.add("mostly zero")
            else:
                assert not torch.allclose(group[b], grad[b], atol=1e-3)
                seen.add("dense")
    assert seen == {"mostly zero", "dense"}


def test_more_groups_than_channels_is_a_clear_error():
    with pytest.raises(ValueError, match=r"groups must be in \[1, 12\]"):
        groupcam(tiny_cnn(), images(1, size=16), layer=LAYER, groups=32)


def test_offline_model_default_settings():
    from lib import models

    classifier = models.load("efficientnet_lite0")
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    maps = groupcam(classifier, x, torch.tensor([1, 2]), batch_size=16)
    assert maps.shape == (2, 96, 96) and torch.isfinite(maps).all()
    alone = groupcam(classifier, x[1:], torch.tensor([2]), batch_size=7)
    assert torch.allclose(maps[1:], alone, atol=1e-5)
    assert no_hooks_left(classifier.model)


@pytest.mark.parametrize("groups", [1, 4, 12])
def test_each_map_costs_g_plus_two_network_evaluations(groups):
    # Algorithm 1's cost, the one the chapter's Table 3 check counts: one forward (and backward)
    # for the weights, one forward of the blurred image and G of the masked images, per image.
    model, x = tiny_cnn(), images(3, size=16)
    seen = []
    hook = model.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].shape[0]))
    try:
        groupcam(model, x, torch.tensor([0, 1, 2]), layer=LAYER, groups=groups, batch_size=5)
    finally:
        hook.remove()
    assert sum(seen) == 3 * (groups + 2)
