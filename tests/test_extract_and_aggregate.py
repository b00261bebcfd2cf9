"""Extract & Aggregate (Rebuffi et al. 2020, Sec. 3): hand computations, explicit outer products, memory."""

import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.models import SameConv2d
from lib.saliency.extract_and_aggregate import (
    AGGREGATIONS,
    aggregate_conv,
    aggregate_outer,
    aggregate_vector,
    conv_for,
    conv_kind,
    FRAMEWORK,
    REDUCTIONS,
    TABLE_2,
    extract_aggregate,
    framework_maps,
    identity_extraction,
    linear_approx,
    normgrad,
    normgrad_conv,
    reduction,
    selective_normgrad,
)


def head_and_tail(model, x, split: int, target):
    """Activation after ``features[split]`` and the gradient of the target logit there, by hand."""
    activation = model.features[: split + 1](x).detach().requires_grad_(True)
    rest = model.features[split + 1 :](activation)
    logits = model.fc(model.flatten(model.pool(rest)))
    (gradient,) = torch.autograd.grad(logits[torch.arange(len(x)), target].sum(), activation)
    return activation.detach(), gradient


def explicit_aggregate(matrices, how):
    """Aggregate explicit per-location summands (..., rows, cols) or vectors (..., K) by definition."""
    flat = matrices.flatten(start_dim=-2) if matrices.dim() == 6 else matrices
    if how == "sum":
        return flat.sum(-1)
    if how == "sum_positive":
        return flat.sum(-1).clamp_min(0)
    if how == "max":
        return flat.amax(-1)
    if how == "max_abs":
        return flat.abs().amax(-1)
    if how == "norm":
        return flat.pow(2).sum(-1).sqrt()
    return flat.clamp_min(0).pow(2).sum(-1).sqrt()


# ---------------------------------------------------------------- aggregations by hand


@pytest.mark.parametrize("layer, split", [("features.1", 1), ("features.3", 3), ("features.2", 2)])
def test_vector_aggregations_match_the_hand_computation(layer, split):
    model, x, target = tiny_cnn(), images(2, size=16), torch.tensor([1, 3])
    a, g = head_and_tail(model, x, split, target)
    expected = {
        ("bias", "max_abs"): g.abs().amax(1),  # gradient, Table 2 row 1
        ("bias", "max"): g.amax(1),
        ("bias", "norm"): g.pow(2).sum(1).sqrt(),
        ("scaling", "sum"): (g * a).sum(1),  # linear approximation, row 2
        ("scaling", "sum_positive"): (g * a).sum(1).clamp_min(0),
        ("scaling", "filter_norm"): (g * a).clamp_min(0).pow(2).sum(1).sqrt(),  # selective NormGrad, row 3
        ("scaling", "max"): (g * a).amax(1),
        ("conv1x1", "norm"): g.pow(2).sum(1).sqrt() * a.pow(2).sum(1).sqrt(),  # NormGrad, row 4
    }
    for (extract, how), want in expected.items():
        got = extract_aggregate(model, x, target, layer=layer, extract=extract, aggregate=how, raw=True)
        assert torch.allclose(got, want, atol=1e-6, rtol=1e-5), (extract, how)
    assert torch.allclose(normgrad(model, x, target, layer=layer, raw=True), expected[("conv1x1", "norm")], atol=1e-6)
    assert torch.allclose(linear_approx(model, x, target, layer=layer, raw=True), expected[("scaling", "sum")], atol=1e-6)
    assert torch.allclose(selective_normgrad(model, x, target, layer=layer, raw=True), expected[("scaling", "filter_norm")], atol=1e-6)
    assert torch.allclose(saliency.layer_gradient(model, x, target, layer=layer, raw=True), expected[("bias", "max_abs")], atol=1e-6)
    # A virtual 3x3 identity convolution: ||g_u|| times the norm of the zero-padded 3x3 patch of x around u.
    patch_norm = (9 * F.avg_pool2d(a.pow(2).sum(1, keepdim=True), 3, stride=1, padding=1, count_include_pad=True)).sqrt()[:, 0]
    got = extract_aggregate(model, x, target, layer=layer, extract="conv3x3", aggregate="norm", raw=True)
    assert torch.allclose(got, g.pow(2).sum(1).sqrt() * patch_norm, atol=1e-6, rtol=1e-5)
    assert no_hooks_left(model)


def test_one_pixel_hand_example_of_each_aggregation():
    # g = (1, -2, 3), x = (2, 1, -1) at a single location, written out by hand.
    g = torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1)
    x = torch.tensor([2.0, 1.0, -1.0]).view(1, 3, 1, 1)
    # outer product g x^T = [[2, 1, -1], [-4, -2, 2], [6, 3, -3]]
    hand = {"sum": 4.0, "sum_positive": 4.0, "max": 6.0, "max_abs": 6.0,
            "norm": (4 + 1 + 1 + 16 + 4 + 4 + 36 + 9 + 9) ** 0.5, "filter_norm": (4 + 1 + 4 + 36 + 9) ** 0.5}
    for how, want in hand.items():
        assert aggregate_outer(g, x, how).item() == pytest.approx(want, rel=1e-6), how
    assert aggregate_outer(g, x, "norm").item() == pytest.approx(14**0.5 * 6**0.5)  # ||g|| ||x||


# ---------------------------------------------------------------- closed forms vs explicit outer products


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("how", AGGREGATIONS)
def test_virtual_identity_convolution_closed_forms_equal_explicit_outer_products(kernel, how):
    generator = torch.Generator().manual_seed(kernel)
    g = torch.randn(2, 4, 5, 6, generator=generator)
    x = torch.randn(2, 4, 5, 6, generator=generator)
    patches = F.unfold(x, kernel, padding=kernel // 2).view(2, 4 * kernel**2, 5, 6)  # zero-padded "same" patches
    outer = torch.einsum("bkhw,bjhw->bhwkj", g, patches).unsqueeze(1)  # (B, 1, h, w, K, N^2 K)
    want = explicit_aggregate(outer, how).squeeze(1)
    assert torch.allclose(aggregate_outer(g, x, how, kernel=kernel), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kernel", [1, 3, 5])
@pytest.mark.parametrize("how", AGGREGATIONS)
def test_virtual_depthwise_identity_closed_forms_equal_the_standalone_codes_summands(kernel, how):
    # The authors' standalone conv3x3_depthwise: unfold the activation into (B, K, N^2, h, w)
    # patches and multiply channel k's patch by g_k -- a K x N^2 summand per location.
    generator = torch.Generator().manual_seed(10 + kernel)
    g = torch.randn(2, 4, 5, 6, generator=generator)
    x = torch.randn(2, 4, 5, 6, generator=generator)
    patches = F.unfold(x, kernel, padding=kernel // 2).view(2, 4, kernel**2, 5, 6)
    rows = (g[:, :, None] * patches).permute(0, 3, 4, 1, 2)  # (B, h, w, K, N^2)
    want = explicit_aggregate(rows.reshape(2, 5, 6, -1), how)
    assert torch.allclose(aggregate_outer(g, x, how, kernel=kernel, depthwise=True), want, atol=1e-5, rtol=1e-5)
    if kernel == 1:  # a depthwise 1x1 identity is the scaling identity g * x
        assert torch.allclose(aggregate_outer(g, x, how, kernel=1, depthwise=True), aggregate_vector(g * x, how), atol=1e-6)


def depthwise_identity(channels: int) -> nn.Conv2d:
    """A real depthwise 3x3 convolution set to the identity: each channel's own kernel, centre 1."""
    conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[:, 0, 1, 1] = 1.0
    return conv


def test_virtual_depthwise_3x3_identity_is_the_identity_and_its_normgrad_is_the_hand_formula():
    identity = depthwise_identity(3)
    x = torch.tensor([[[1.0, -2.0], [3.0, 0.5]], [[0.0, 4.0], [-1.0, 2.0]], [[2.0, 2.0], [2.0, -3.0]]])[None]
    assert torch.equal(identity(x), x)  # it gives back the input
    # NormGrad at one location, by hand: sqrt(sum_k g_k^2 * (sum of x_k^2 over its zero-padded 3x3 patch)).
    # On a 2x2 map every 3x3 patch covers the whole channel.
    g = torch.tensor([[[0.5, 0.0], [0.0, 0.0]], [[-1.0, 0.0], [0.0, 0.0]], [[2.0, 0.0], [0.0, 0.0]]])[None]
    patch_energy = torch.tensor([1 + 4 + 9 + 0.25, 0 + 16 + 1 + 4, 4 + 4 + 4 + 9])
    by_hand = float((torch.tensor([0.25, 1.0, 4.0]) * patch_energy).sum().sqrt())
    ours = aggregate_outer(g, x, "norm", kernel=3, depthwise=True)
    assert ours[0, 0, 0].item() == pytest.approx(by_hand, rel=1e-6)
    assert ours[0, 1, 1].item() == 0.0  # g is zero there
    # The dense 3x3 identity pairs every channel's g with every channel's patch: another map.
    dense = aggregate_outer(g, x, "norm", kernel=3)
    assert dense[0, 0, 0].item() == pytest.approx(float(g[0, :, 0, 0].norm() * x.norm()), rel=1e-6)
    assert dense[0, 0, 0].item() != pytest.approx(by_hand, rel=1e-3)


def test_a_physical_depthwise_identity_gives_the_virtual_ones_map_through_its_weight_gradient():
    # Insert the identity for real after the last ReLU: its own weight gradient's summands
    # (real_conv, Eq. 2) must be the virtual dwconv3x3 summands at that location.
    base = tiny_cnn()
    with_identity = tiny_cnn()
    with_identity.features.append(depthwise_identity(12))
    x, target = images(2, size=16), torch.tensor([1, 3])
    assert torch.allclose(with_identity(x), base(x), atol=1e-6)
    for how in ("sum", "norm", "filter_norm"):
        real = extract_aggregate(with_identity, x, target, layer="features.4", extract="real_conv", aggregate=how, raw=True)
        virtual = extract_aggregate(base, x, target, layer="features.3", extract="dwconv3x3", aggregate=how, raw=True)
        assert torch.allclose(real, virtual, atol=1e-6), how
    assert identity_extraction(with_identity, "features.4") == "dwconv3x3"


def test_conv_kind_and_the_matching_identity():
    model = tiny_cnn()
    assert conv_kind(model.features[2]) == "dense" and identity_extraction(model, "features.3") == "conv1x1"
    assert conv_kind(nn.Conv2d(4, 8, 3, groups=4)) == "depthwise"
    assert conv_kind(nn.Conv2d(4, 6, 3, groups=2)) == "dense"  # grouped, not depthwise
    with pytest.raises(TypeError, match="nn.Conv2d"):
        conv_kind(nn.ReLU())
    with pytest.raises(ValueError, match="square and odd"):
        extract_aggregate(model, images(1, size=16), layer="features.1", extract="dwconv2x2")


def explicit_conv_summands(conv, x_in, padded, g):
    """Per-location summands of a (grouped) convolution's weight gradient, shaped like its weight: (B, h, w, K', K/G, n, n)."""
    groups, k = conv.groups, conv.kernel_size[0]
    batch, channels = x_in.shape[:2]
    cols = F.unfold(padded, k, dilation=conv.dilation, stride=conv.stride)  # (B, K n n, L)
    h, w = g.shape[-2:]
    cols = cols.view(batch, groups, channels // groups * k * k, h, w)
    gg = g.view(batch, groups, conv.out_channels // groups, h, w)
    blocks = torch.einsum("bgohw,bgjhw->bhwgoj", gg, cols)  # block-diagonal, only the diagonal blocks
    return blocks.reshape(batch, h, w, conv.out_channels, channels // groups, k, k)


CONVS = {
    "plain 3x3": lambda: (nn.Conv2d(4, 6, 3, padding=1), lambda x: x),
    "stride 2, dilation 2, bias": lambda: (nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2), lambda x: F.pad(x, (2, 2, 2, 2))),
    "depthwise groups=4": lambda: (nn.Conv2d(4, 8, 3, padding=1, groups=4, bias=False), lambda x: F.pad(x, (1, 1, 1, 1))),
    "grouped 2": lambda: (nn.Conv2d(4, 6, 3, padding=1, groups=2), lambda x: F.pad(x, (1, 1, 1, 1))),
    "TF-same stride 2 (asymmetric pad)": lambda: (SameConv2d(4, 6, 3, stride=2, bias=False), lambda x: F.pad(x, (0, 1, 0, 1))),
}


@pytest.mark.parametrize("name", sorted(CONVS))
@pytest.mark.parametrize("how", ["sum", "sum_positive", "norm", "filter_norm"])
def test_real_convolution_closed_forms_equal_explicit_outer_products_and_sum_to_the_weight_gradient(name, how):
    torch.manual_seed(0)
    conv, pad = CONVS[name]()
    x_in = torch.randn(2, 4, 8, 8)
    weight = conv.weight.detach().clone().requires_grad_(True)
    out = torch.func.functional_call(conv, {**dict(conv.named_parameters()), "weight": weight}, (x_in,))
    probe = torch.randn_like(out)
    (g_weight,) = torch.autograd.grad((out * probe).sum(), weight)  # score = <probe, out>: g^out = probe
    padded = pad(x_in) if name != "plain 3x3" else F.pad(x_in, (1, 1, 1, 1))
    summands = explicit_conv_summands(conv, x_in, padded, probe)
    assert torch.allclose(summands.sum(dim=(1, 2)).sum(0), g_weight, atol=1e-4)  # Eq. 2: sum over u
    flat = summands.flatten(start_dim=3)
    want = explicit_aggregate(flat, how)
    assert torch.allclose(aggregate_conv(conv, probe, x_in, how), want, atol=1e-4, rtol=1e-4)


def test_real_scaling_and_bias_summands_sum_to_the_batchnorm_parameter_gradients():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(5, 4))
    bn = model[1]
    bn.running_mean.normal_()
    bn.running_var.uniform_(0.5, 2.0)
    bn.weight.data.normal_()
    model.eval()
    x = images(1, size=8)
    scale_map = extract_aggregate(model, x, 2, layer="1", extract="real_scaling", aggregate="sum", raw=True)
    bias_map = extract_aggregate(model, x, 2, layer="1", extract="real_bias", aggregate="sum", raw=True)
    model.requires_grad_(True)
    model(x)[0, 2].backward()
    assert scale_map.sum().item() == pytest.approx(bn.weight.grad.sum().item(), rel=1e-4, abs=1e-6)
    assert bias_map.sum().item() == pytest.approx(bn.bias.grad.sum().item(), rel=1e-4, abs=1e-6)


def test_normgrad_conv_on_the_tiny_network_is_the_norm_product_of_gradient_and_patch():
    model, x, target = tiny_cnn(), images(2, size=16), torch.tensor([0, 4])
    a, _ = head_and_tail(model, x, 1, target)  # input of features.2
    out, g = head_and_tail(model, x, 2, target)  # gradient at the output of features.2
    patches = F.unfold(a, 3, padding=1, stride=2).view(2, -1, *out.shape[-2:])
    want = g.norm(dim=1) * patches.norm(dim=1)
    for layer in ("features.2", "features.3"):  # a ReLU stands for the convolution before it
        assert torch.allclose(normgrad_conv(model, x, target, layer=layer, raw=True), want, atol=1e-6)


def test_normgrad_conv_is_not_constant_on_a_network_whose_output_ignores_the_image():
    # The weight gradient sum_u g_u x_u^T depends on the patches x_u even when g does not
    # depend on the image, so the real-conv map is not constant (unlike the IDL methods).
    torch.manual_seed(0)
    features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU())
    nn.init.zeros_(features[2].weight)
    nn.init.constant_(features[2].bias, 0.5)
    model = nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 5)).eval()
    x = images(1, size=8)
    conv_map = normgrad_conv(model, x, 1, layer="0.2", raw=True)
    assert conv_map.std() > 0
    assert normgrad(model, x, 1, layer="0.3", raw=True).std() == 0


def test_the_two_selective_normgrad_definitions_differ_and_match_their_formulas():
    model, x, target = tiny_cnn(), images(2, size=16), torch.tensor([2, 2])
    a, g = head_and_tail(model, x, 1, target)
    scaling = selective_normgrad(model, x, target, layer="features.1", raw=True)
    outer = selective_normgrad(model, x, target, layer="features.1", definition="outer", raw=True)
    clamped_outer = torch.einsum("bkhw,bjhw->bhwkj", g, a).clamp_min(0).pow(2).sum((-1, -2)).sqrt()
    assert torch.allclose(scaling, (g * a).clamp_min(0).norm(dim=1), atol=1e-6)
    assert torch.allclose(outer, clamped_outer, atol=1e-6)
    assert not torch.allclose(scaling, outer, atol=1e-3)
    with pytest.raises(ValueError, match="scaling, outer"):
        selective_normgrad(model, x, target, layer="features.1", definition="clamp")


# ---------------------------------------------------------------- Grad-CAM as a special case


def test_gradcam_is_the_scaling_identity_with_spatially_averaged_gradient():
    model, x, target = tiny_cnn(), images(3, size=16), torch.tensor([0, 2, 4])
    # ReLU-GAP network: after the last ReLU the gradient is the same at every location, so
    # the scaling IDL + sum + positive filter *is* Grad-CAM without any averaging ...
    last = saliency.gradcam(model, x, target, layer="features.3", raw=True)
    assert torch.allclose(extract_aggregate(model, x, target, layer="features.3", extract="scaling", aggregate="sum_positive", raw=True), last, atol=1e-7)
    assert torch.allclose(linear_approx(model, x, target, layer="features.3", raw=True).clamp_min(0), last, atol=1e-7)
    # ... and at an earlier layer it is so once the gradient is spatially averaged.
    early = saliency.gradcam(model, x, target, layer="features.1", raw=True)
    same = extract_aggregate(model, x, target, layer="features.1", extract="scaling", aggregate="sum_positive", average_gradient=True, raw=True)
    assert torch.allclose(same, early, atol=1e-7)
    differs = extract_aggregate(model, x, target, layer="features.1", extract="scaling", aggregate="sum_positive", raw=True)
    assert not torch.allclose(differs, early, atol=1e-4)


# ---------------------------------------------------------------- registry, layers, errors


def test_table2_rows_are_the_registered_methods_and_their_reductions():
    model, x = tiny_cnn(), images(2, size=16)
    registered = {"gradient": "layer_gradient"}
    for row, spec in TABLE_2.items():
        name = registered.get(row, row)
        assert saliency.METHODS[name] is getattr(saliency, name)
        assert torch.equal(extract_aggregate(model, x, layer="features.3", **spec), saliency.METHODS[name](model, x, layer="features.3"))
    # The gradient row by hand: max_k |g_k| at the layer.
    gradient_row = saliency.layer_gradient(model, x, layer="features.1", raw=True)
    a, g = head_and_tail(model, x, 1, model(x).argmax(1))
    assert torch.allclose(gradient_row, g.abs().amax(1), atol=1e-7)
    # Each one-pass reduction is its row's map from the layer's activation and gradient.
    assert set(REDUCTIONS) == {"layer_gradient", "linear_approx", "selective_normgrad", "normgrad"}
    for name, reduce in REDUCTIONS.items():
        assert torch.allclose(reduce(a, g), saliency.METHODS[name](model, x, layer="features.1", raw=True), atol=1e-7), name
    assert torch.allclose(REDUCTIONS["linear_approx"](a, g), (g * a).sum(1), atol=1e-7)
    assert torch.allclose(REDUCTIONS["normgrad"](a, g), g.norm(dim=1) * a.norm(dim=1), atol=1e-6)
    with pytest.raises(ValueError, match="needs the layer's input"):
        reduction("real_conv", "norm")


def test_conv_for_finds_the_convolution_a_layer_stands_for():
    model = tiny_cnn()
    assert conv_for(model, "features.2")[0] == "features.2"
    assert conv_for(model, "features.3")[0] == "features.2"
    assert conv_for(model, "features")[0] == "features.2"
    with pytest.raises(ValueError, match="no convolution precedes"):
        conv_for(nn.Sequential(nn.ReLU(), nn.Conv2d(3, 3, 1)), "0")


def test_bad_extractions_and_aggregations_get_clear_errors():
    model, x = tiny_cnn(), images(1, size=16)
    with pytest.raises(ValueError, match="unknown extraction"):
        extract_aggregate(model, x, layer="features.1", extract="gram")
    with pytest.raises(ValueError, match="square and odd"):
        extract_aggregate(model, x, layer="features.1", extract="conv2x2")
    with pytest.raises(ValueError, match="unknown aggregation"):
        extract_aggregate(model, x, layer="features.1", aggregate="mean")
    with pytest.raises(ValueError, match="no closed form"):
        extract_aggregate(model, x, layer="features.2", extract="real_conv", aggregate="max")
    with pytest.raises(TypeError, match="BatchNorm"):
        extract_aggregate(model, x, layer="features.2", extract="real_scaling")
    with pytest.raises(TypeError, match="has no bias"):
        extract_aggregate(model, x, layer="features.1", extract="real_bias")
    assert no_hooks_left(model)


def test_real_3x3_normgrad_at_resnet50_layer3_size_fits_in_2_gb():
    # A synthetic 1024 -> 1024 3x3 convolution at 14x14 for 8 images (ResNet-50 layer3's
    # width and resolution).  Explicit K' x 9K summands would need 8*196*1024*9216*4 B = 59 GB.
    script = textwrap.dedent(
        """
        import resource, torch
        from torch import nn
        from lib.saliency import normgrad_conv
        torch.set_num_threads(1)
        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 1024, 1), nn.ReLU(), nn.Conv2d(1024, 1024, 3, padding=1, bias=False),
                              nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(1024, 10)).eval()
        x = torch.randn(8, 3, 14, 14)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        maps = normgrad_conv(model, x, layer="2", raw=True)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert maps.shape == (8, 14, 14) and torch.isfinite(maps).all()
        print((after - before) / 1024)
        """
    )
    from pathlib import Path

    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent.parent, timeout=300)
    assert run.returncode == 0, run.stderr
    growth_mb = float(run.stdout.strip().splitlines()[-1])
    assert growth_mb < 2048, f"peak memory grew by {growth_mb:.0f} MB"


def test_framework_maps_from_one_pass_equal_each_method_alone():
    model, x, target = tiny_cnn(), images(3, size=16), torch.tensor([0, 1, 2])
    layers = ["features.1", "features.3"]
    together = framework_maps(model, x, target, layers=layers, raw=True, batch_size=2)
    assert set(together) == set(FRAMEWORK)
    for name, spec in FRAMEWORK.items():
        for layer in layers:
            alone = extract_aggregate(model, x, target, layer=layer, raw=True, **spec)
            assert torch.allclose(together[name][layer], alone, atol=1e-6), (name, layer)
    assert torch.allclose(together["gradcam"]["features.1"], saliency.gradcam(model, x, target, layer="features.1", raw=True), atol=1e-7)
    assert no_hooks_left(model)
    with pytest.raises(ValueError, match="unknown keys"):
        framework_maps(model, x, layers=layers, methods={"x": {"extract": "bias", "kernel": 3}})
