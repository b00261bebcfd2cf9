"""CAMERAS (Jalwana et al., CVPR 2021, Eqs. 5.2-5.3, Algorithm 6) against hand computations."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
from lib.saliency import cameras
from lib.saliency.passes import layer_pass, normalise_maps
from lib.saliency.multiscale import PUBLIC_CODE, GateFallbackWarning, cameras_scales, fuse, scale_sizes


def reference(model, x, target, layer, sizes, mode="bilinear", keep=None):
    """Algorithm 6 written out for one image: loop over scales, resize, average, fuse."""
    a_sum = w_sum = 0
    used = 0
    for t, s in enumerate(sizes):
        if keep is not None and not keep[t]:
            continue
        xs = x if s == x.shape[-1] else F.interpolate(x, size=(s, s), mode=mode, align_corners=False)
        record = layer_pass(model, xs, torch.tensor([target]), layer)
        a_sum = a_sum + F.interpolate(record.activations, size=x.shape[-2:], mode="bilinear", align_corners=False)
        w_sum = w_sum + F.interpolate(record.gradients, size=x.shape[-2:], mode="bilinear", align_corners=False)
        used += 1
    return F.relu((a_sum / used * w_sum / used).sum(dim=1))


def test_one_scale_at_full_resolution_is_the_unpooled_gradcam_variant():
    model, x = tiny_cnn(), images(3, size=16)
    record = layer_pass(model, x, None, "features.1")  # 16 x 16, the input's grid
    unpooled = normalise_maps(F.relu((record.gradients * record.activations).sum(dim=1)))
    ours = cameras(model, x, layer="features.1", scales=(16,))
    assert torch.allclose(ours, unpooled, atol=1e-6)
    # At a strided layer the single-scale map resizes A and W before the product.
    record = layer_pass(model, x, None, "features.3")
    up = lambda m: F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)
    by_hand = normalise_maps(F.relu((up(record.gradients) * up(record.activations)).sum(dim=1)))
    assert torch.allclose(cameras(model, x, layer="features.3", scales=(16,)), by_hand, atol=1e-6)


@pytest.mark.parametrize("fusion", ["gram", "direct"])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_multi_scale_map_equals_algorithm_6_written_out(fusion, mode):
    model, x = tiny_cnn(), images(2, size=16)
    sizes = (16, 21, 28, 35)
    raw = cameras(model, x, torch.tensor([1, 3]), layer="features.3", scales=sizes, upsample=mode,
                  gating="none", fusion=fusion, raw=True)
    for i, target in enumerate([1, 3]):
        expected = reference(model, x[i : i + 1], target, "features.3", sizes, mode)
        assert torch.allclose(raw[i : i + 1], expected, atol=1e-5 * expected.abs().max())


class SizeSwitch(nn.Module):
    """tiny_cnn whose class 1 wins by a margin of 100 on inputs of side >= 20: the gate's test case."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn(classes=3)

    def forward(self, x):
        logits = self.net(x)
        boost = torch.tensor([0.0, 100.0, 0.0]) if x.shape[-1] >= 20 else torch.tensor([100.0, 0.0, 0.0])
        return logits + boost


def test_class_gating_drops_exactly_the_scales_whose_prediction_is_not_the_label():
    model, x = SizeSwitch().eval(), images(2, size=16)
    sizes = (16, 20, 24)
    with_label = cameras_scales(model, x, layer="net.features.3", scales=sizes)
    assert torch.equal(with_label.targets, torch.tensor([0, 0]))  # the prediction at the input size
    assert with_label.kept.tolist() == [[True, False, False]] * 2
    gated = cameras(model, x, layer="net.features.3", scales=sizes, raw=True)
    assert torch.allclose(gated, cameras(model, x, layer="net.features.3", scales=(16,), raw=True))
    assert torch.allclose(gated[:1], reference(model, x[:1], 0, "net.features.3", sizes, keep=[1, 0, 0]), atol=1e-6)
    # Label 1 given: the paper keeps the two scales that predict it; the public code keeps all.
    label = cameras_scales(model, x, torch.tensor([1, 1]), layer="net.features.3", scales=sizes, gating="label")
    assert label.kept.tolist() == [[False, True, True]] * 2
    top1 = cameras_scales(model, x, torch.tensor([1, 1]), layer="net.features.3", scales=sizes, gating="top1")
    assert top1.kept.all()
    top1_none = cameras_scales(model, x, layer="net.features.3", scales=sizes, gating="top1")
    assert top1_none.kept.tolist() == with_label.kept.tolist()
    assert cameras_scales(model, x, layer="net.features.3", scales=sizes, gating="none").kept.all()
    # A label no scale predicts: 0/0 in Algorithm 6; every scale is kept, with a warning.
    with pytest.warns(GateFallbackWarning, match="no scale predicts the label") as caught:
        fallback = cameras_scales(model, x, 2, layer="net.features.3", scales=sizes)
    assert fallback.kept.all() and [w.message.count for w in caught] == [2]
    # The label at the input size is used even when no scale is the input size.
    with pytest.warns(UserWarning, match="no scale predicts"):
        assert cameras_scales(model, x, layer="net.features.3", scales=(20, 24)).targets.tolist() == [0, 0]


def test_batched_equals_one_by_one_and_the_model_comes_back_untouched():
    model, x = tiny_cnn(), images(5, size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    together = cameras(model, x, layer="features.3", scales=(16, 24, 32), batch_size=None)
    chunked = cameras(model, x, layer="features.3", scales=(16, 24, 32), batch_size=2)
    alone = torch.cat([cameras(model, x[i : i + 1], layer="features.3", scales=(16, 24, 32)) for i in range(5)])
    # 1e-6 is float32 noise between batched and single convolutions with one thread (1.04e-6 seen)
    assert torch.allclose(together, alone, atol=1e-5) and torch.allclose(chunked, alone, atol=1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert no_hooks_left(model) and all(p.requires_grad for p in model.parameters())


class ContentSwitch(SizeSwitch):
    """Class 0 wins, except at sides >= 20 on images whose mean red value is positive: there class 1 wins."""

    def forward(self, x):
        logits = self.net(x)
        red = (x[:, 0].mean(dim=(1, 2)) > 0).float()
        large = float(x.shape[-1] >= 20)
        return logits + 100.0 * torch.stack([1 - red * large, red * large, torch.zeros_like(red)], dim=1)


@pytest.mark.parametrize("fusion", ["gram", "direct"])
def test_images_of_one_batch_keep_different_scales_as_they_would_alone(fusion):
    model, x = ContentSwitch().eval(), images(6, size=16)
    x[::2, 0] = x[::2, 0].abs() + 0.1  # even images red: their larger scales predict class 1, not the label 0
    x[1::2, 0] = -x[1::2, 0].abs() - 0.1
    sizes = (16, 24, 32)
    record = cameras_scales(model, x, layer="net.features.3", scales=sizes)
    assert record.kept.tolist() == [[True, False, False], [True, True, True]] * 3
    options = dict(layer="net.features.3", scales=sizes, fusion=fusion, raw=True)
    together, chunked = cameras(model, x, **options, batch_size=None), cameras(model, x, **options, batch_size=4)
    alone = torch.cat([cameras(model, x[i : i + 1], **options) for i in range(6)])
    for i in range(6):
        by_hand = reference(model, x[i : i + 1], 0, "net.features.3", sizes, keep=record.kept[i].tolist())
        assert torch.allclose(alone[i : i + 1], by_hand, atol=1e-5 * by_hand.abs().max())
    assert torch.allclose(together, alone, atol=1e-5 * alone.abs().max())
    assert torch.allclose(chunked, alone, atol=1e-5 * alone.abs().max())


def test_single_scale_weights_give_per_scale_maps_and_fusions_agree():
    model, x = tiny_cnn(), images(2, size=16)
    record = cameras_scales(model, x, layer="features.3", scales=(16, 24, 32), gating="none")
    one_hot = torch.tensor([[0.0, 1.0, 0.0]] * 2)
    single = fuse(record, one_hot)
    up = lambda m: F.interpolate(m, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.allclose(single, F.relu((up(record.gradients[1]) * up(record.activations[1])).sum(1)), atol=1e-6)
    assert torch.allclose(fuse(record, fusion="gram"), fuse(record, fusion="direct"), atol=1e-6)


def test_scales_and_errors():
    assert [s for s, _ in scale_sizes((224, 224))] == [224, 353, 483, 612, 741, 871, 1000]
    assert [s for s, _ in scale_sizes((224, 224), scales=PUBLIC_CODE["scales"])] == list(range(224, 1000, 100))
    assert scale_sizes((100, 150), scales=(200,)) == [(200, 300)]
    assert scale_sizes((224, 224), steps=1) == [(224, 224)]
    model, x = tiny_cnn(), images(1, size=16)
    with pytest.raises(ValueError, match="gating"):
        cameras(model, x, layer="features.3", gating="sometimes")
    with pytest.raises(ValueError, match="upsample"):
        cameras(model, x, layer="features.3", upsample="nearest")
    with pytest.raises(ValueError, match="scales is empty"):
        cameras(model, x, layer="features.3", scales=())
    assert no_hooks_left(model)


def test_interpolation_error_is_zero_at_full_size_and_exact_for_constant_maps():
    from lib.saliency.multiscale import interpolation_error

    x = torch.rand(2, 3, 12, 12)
    assert torch.allclose(interpolation_error(x, (12, 12)), torch.zeros(2), atol=1e-6)
    assert torch.allclose(interpolation_error(torch.ones(1, 12, 12), (3, 3)), torch.zeros(1), atol=1e-6)
    by_hand = (x - F.interpolate(F.interpolate(x, (6, 6), mode="bilinear", antialias=True), (12, 12), mode="bilinear"))
    assert torch.allclose(interpolation_error(x, (6, 6)), by_hand.flatten(1).norm(dim=1) / x.flatten(1).norm(dim=1))


def test_one_extraction_over_a_union_of_scales_serves_each_subset():
    from lib.saliency.multiscale import subset_weights

    model, x = SizeSwitch().eval(), images(2, size=16)
    union = cameras_scales(model, x, layer="net.features.3", scales=(16, 18, 20, 24, 28))
    for heights in [(16, 20, 28), (18, 24), (20, 24, 28)]:
        expected = cameras(model, x, layer="net.features.3", scales=heights, raw=True)
        got = fuse(union, subset_weights(union, heights))
        assert torch.allclose(got, expected, atol=1e-6), heights
    with pytest.raises(ValueError, match="not extracted"):
        subset_weights(union, (30,))


# ------------------------------------------------------------------ the multi-scale Grad-CAM ablation


def pooled_reference(model, x, target, layer, sizes):
    """The ablation written out for one image: Grad-CAM's weights and the activations, each averaged over scales."""
    a_sum = w_sum = 0
    for s in sizes:
        xs = x if s == x.shape[-1] else F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False)
        record = layer_pass(model, xs, torch.tensor([target]), layer)
        a_sum = a_sum + F.interpolate(record.activations, size=x.shape[-2:], mode="bilinear", align_corners=False)
        w_sum = w_sum + record.gradients.mean(dim=(2, 3), keepdim=True)
    return F.relu((a_sum / len(sizes) * w_sum / len(sizes)).sum(dim=1))


@pytest.mark.parametrize("fusion", ["gram", "direct"])
def test_multiscale_gradcam_equals_its_definition_written_out(fusion):
    from lib.saliency.multiscale import multiscale_gradcam

    model, x = tiny_cnn(), images(2, size=16)
    sizes = (16, 21, 28)
    for layer in ("features.1", "features.3"):
        raw = multiscale_gradcam(model, x, torch.tensor([1, 3]), layer=layer, scales=sizes, gating="none", fusion=fusion, raw=True)
        for i, target in enumerate([1, 3]):
            expected = pooled_reference(model, x[i : i + 1], target, layer, sizes)
            assert torch.allclose(raw[i : i + 1], expected, atol=1e-5 * expected.abs().max()), layer


def test_cameras_reduces_to_multiscale_gradcam_before_global_pooling_only():
    from lib.saliency import gradcam
    from lib.saliency.multiscale import cameras_variants, pooled_gradients

    model, x = tiny_cnn(), images(4, size=16)
    options = dict(scales=(16, 24, 32), gating="none")
    # features.3 feeds the global average pool: its gradient is fc.weight / (h w) at every position.
    record = cameras_scales(model, x, layer="features.3", **options)
    for g in record.gradients:
        assert torch.equal(g, g[..., :1, :1].expand_as(g))
    last = cameras_variants(model, x, layer="features.3", **options)
    assert torch.allclose(last["cameras"], last["multiscale_gradcam"], atol=1e-6)
    assert torch.allclose(last["cameras"], cameras(model, x, layer="features.3", **options), atol=1e-6)
    # features.1 has a convolution and a ReLU after it: the gradient varies, the two maps differ.
    inner = cameras_variants(model, x, layer="features.1", **options)
    assert (inner["cameras"] - inner["multiscale_gradcam"]).abs().max() > 0.05
    assert any(not torch.equal(g, p) for g, p in zip(cameras_scales(model, x, layer="features.1", **options).gradients,
                                                      pooled_gradients(cameras_scales(model, x, layer="features.1", **options)).gradients))
    # One scale at the input size: Grad-CAM with the ReLU after the up-sampling.
    one = cameras_variants(model, x, layer="features.3", scales=(16,))
    record = layer_pass(model, x, None, "features.3")
    before_relu = (record.gradients.mean(dim=(2, 3), keepdim=True) * record.activations).sum(dim=1, keepdim=True)
    relu_after = normalise_maps(F.relu(F.interpolate(before_relu, size=(16, 16), mode="bilinear", align_corners=False))[:, 0])
    assert torch.allclose(one["cameras"], relu_after, atol=1e-6)
    assert torch.allclose(one["multiscale_gradcam"], relu_after, atol=1e-6)
    # Grad-CAM takes the ReLU first: here every weighted sum has negative cells, so the maps differ ...
    assert (before_relu.flatten(1).min(dim=1).values < 0).all()
    assert (one["cameras"] - gradcam(model, x, layer="features.3")).abs().max() > 0.05
    # ... and with non-negative class weights (non-negative sums) they coincide.
    with torch.no_grad():
        model.fc.weight.abs_()
    one = cameras_variants(model, x, layer="features.3", scales=(16,))
    assert torch.allclose(one["cameras"], gradcam(model, x, layer="features.3"), atol=1e-6)


def test_variants_from_one_extraction_match_separate_calls_and_reject_unknown_names():
    from lib.saliency.multiscale import cameras_variants, multiscale_gradcam

    model, x = SizeSwitch().eval(), images(3, size=16)
    options = dict(layer="net.features.1", scales=(16, 20, 24))
    both = cameras_variants(model, x, **options, batch_size=2)
    assert torch.allclose(both["cameras"], cameras(model, x, **options), atol=1e-6)
    assert torch.allclose(both["multiscale_gradcam"], multiscale_gradcam(model, x, **options, batch_size=None), atol=1e-6)
    assert set(cameras_variants(model, x, variants=("cameras",), **options)) == {"cameras"}
    with pytest.raises(ValueError, match="unknown CAMERAS variant"):
        cameras_variants(model, x, variants=("gradcam",), **options)
    assert no_hooks_left(model)
