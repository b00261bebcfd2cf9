"""Each baseline against an independent implementation on the same tiny model and inputs.

Peers: pytorch-grad-cam (Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM, HiResCAM, XGrad-CAM, Eigen-CAM,
Ablation-CAM) and captum
(Saliency, NoiseTunnel SmoothGrad, IntegratedGradients, GuidedBackprop).  Agreement is
a Pearson correlation >= 0.99 per map, or equality where the definitions are identical.
"""

import numpy as np
import pytest
import torch

from _tiny import images, pearson, tiny_cnn
import lib.saliency as saliency

captum_attr = pytest.importorskip("captum.attr")
pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TARGETS = torch.tensor([0, 3, 4])


def _peer_cam(cls, model, x, targets, layer: int = 3):
    with cls(model=model, target_layers=[model.features[layer]]) as cam:
        out = cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in targets])
    return torch.from_numpy(np.asarray(out))


@pytest.mark.parametrize(
    "ours, theirs",
    [
        ("gradcam", "GradCAM"),
        ("gradcam_pp", "GradCAMPlusPlus"),
        ("layercam", "LayerCAM"),
        ("scorecam", "ScoreCAM"),
    ],
)
def test_cam_methods_agree_with_pytorch_grad_cam(ours, theirs):
    model, x = tiny_cnn(), images(3, size=32)
    mine = saliency.METHODS[ours](model, x, TARGETS, layer="features.3")
    peer = _peer_cam(getattr(pytorch_grad_cam, theirs), model, x, TARGETS)
    assert mine.shape == peer.shape == (3, 32, 32)
    for a, b in zip(mine, peer):
        assert pearson(a, b) >= 0.99


def test_gradient_equals_captum_saliency():
    model, x = tiny_cnn(), images(3, size=32)
    theirs = captum_attr.Saliency(model).attribute(x.clone().requires_grad_(), target=TARGETS, abs=False)
    mine = saliency.gradient(model, x, TARGETS, aggregate=None, raw=True)
    assert torch.allclose(mine, theirs, atol=1e-6)
    assert torch.allclose(saliency.gradient(model, x, TARGETS, raw=True), theirs.abs().amax(dim=1), atol=1e-6)


def test_integrated_gradients_equals_captum_trapezoid_up_to_its_step_size():
    # captum's "riemann_trapezoid" evaluates the same n points of linspace(0, 1, n) but
    # weights them with steps of 1/n (end points halved), which sum to (n-1)/n instead of 1.
    # Ours uses the trapezoidal rule's 1/(n-1), so ours * (n-1)/n equals captum exactly,
    # and ours satisfies completeness where captum is off by 1/n (checked below).
    model, x = tiny_cnn(), images(3, size=32)
    n = 64
    ig = captum_attr.IntegratedGradients(model)
    theirs = ig.attribute(x.clone(), baselines=0.0, target=TARGETS, n_steps=n, method="riemann_trapezoid")
    mine = saliency.integrated_gradients(model, x, TARGETS, steps=n, aggregate=None, raw=True)
    assert torch.allclose(mine * (n - 1) / n, theirs, atol=1e-7, rtol=1e-5)
    with torch.no_grad():
        gap = (model(x) - model(torch.zeros_like(x))).gather(1, TARGETS.view(-1, 1)).squeeze(1)
    ours_error = (mine.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()
    theirs_error = (theirs.sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()
    assert (ours_error < 0.01).all() and (ours_error < theirs_error).all()


def test_guided_backprop_equals_captum():
    model, x = tiny_cnn(), images(3, size=32)
    theirs = captum_attr.GuidedBackprop(model).attribute(x.clone().requires_grad_(), target=TARGETS)
    mine = saliency.guided_backprop(model, x, TARGETS, aggregate=None, raw=True)
    assert torch.allclose(mine, theirs, atol=1e-6)


def test_guided_backprop_on_relu6_by_hand():
    # captum guides nn.ReLU only; the offline models use ReLU6, whose guided rule is checked by hand:
    # the signal into the activation is clamped at zero, then masked by 0 < pre-activation < 6.
    torch.manual_seed(0)
    x = torch.randn(1, 3, 2, 2)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 4), torch.nn.ReLU6(), torch.nn.Linear(4, 2)).eval()
    w1 = model[1].weight.detach()
    with torch.no_grad():
        model[1].bias.copy_(torch.tensor([-1.0, 3.0, 7.0, 2.0]) - w1 @ x.flatten())  # pre-activations -1, 3, 7, 2
        model[3].weight[0] = torch.tensor([1.0, -2.0, 5.0, 0.5])
    guided = saliency.guided_backprop(model, x, torch.tensor([0]), aggregate=None, raw=True)
    # clamp(w2) = [1, 0, 5, 0.5]; mask 0 < pre < 6 = [0, 1, 0, 1]: only unit 3 passes, with 0.5.
    assert torch.allclose(guided.flatten(), 0.5 * w1[3], atol=1e-6)
    plain = saliency.gradient(model, x, torch.tensor([0]), aggregate=None, raw=True)
    assert torch.allclose(plain.flatten(), -2.0 * w1[1] + 0.5 * w1[3], atol=1e-6)  # the negative unit 1 counts here


def test_smoothgrad_agrees_with_captum_noise_tunnel():
    # Both are Monte-Carlo estimates of the same expectation with independent noise:
    # with many samples the maps correlate >= 0.99.
    model, x = tiny_cnn(), images(2, size=32)
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    torch.manual_seed(0)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    theirs = torch.cat([
        tunnel.attribute(x[i : i + 1].clone().requires_grad_(), nt_type="smoothgrad", nt_samples=1000,
                         stdevs=float(0.15 * span[i]), target=int(TARGETS[i]), abs=False)
        for i in range(2)
    ])
    mine = saliency.smoothgrad(model, x, TARGETS[:2], n_samples=1000, noise_level=0.15, aggregate=None, raw=True, batch_size=250)
    for a, b in zip(mine, theirs):
        assert pearson(a, b) >= 0.99


def test_smoothgrad_with_zero_noise_is_the_gradient():
    model, x = tiny_cnn(), images(2, size=32)
    assert torch.allclose(
        saliency.smoothgrad(model, x, n_samples=3, noise_level=0.0, raw=True),
        saliency.gradient(model, x, raw=True),
        atol=1e-6,
    )


@pytest.mark.parametrize("ours, theirs", [("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM"), ("ablationcam", "AblationCAM")])
@pytest.mark.parametrize("layer", [1, 3])
def test_the_peer_libraries_cam_variants_agree_with_pytorch_grad_cam(ours, theirs, layer):
    """At features.3 (before global pooling) the gradient is constant over space, where HiResCAM and
    XGrad-CAM are Grad-CAM; features.1 (before a strided convolution) tells them apart."""
    model, x = tiny_cnn(), images(3, size=32)
    mine = saliency.METHODS[ours](model, x, TARGETS, layer=f"features.{layer}")
    peer = _peer_cam(getattr(pytorch_grad_cam, theirs), model, x, TARGETS, layer)
    assert mine.shape == peer.shape == (3, 32, 32)
    for a, b in zip(mine, peer):
        assert pearson(a, b) >= 0.99
    if layer == 1 and ours != "ablationcam":
        gradcam = saliency.gradcam(model, x, TARGETS, layer="features.1")
        assert min(pearson(a, b) for a, b in zip(mine, gradcam)) < 0.99  # a different method from Grad-CAM here


def test_hirescam_is_the_linear_approximation_with_a_relu():
    """Draelos & Carin's map sum_k g_k A_k is Rebuffi et al.'s linear approximation (Table 2 row 2)."""
    model, x = tiny_cnn(), images(3, size=16)
    hires = saliency.hirescam(model, x, TARGETS, layer="features.1", raw=True)
    linear = saliency.linear_approx(model, x, TARGETS, layer="features.1", raw=True)
    assert torch.allclose(hires, linear.clamp_min(0), atol=1e-7)


def test_eigencam_is_pytorch_grad_cams_projection_with_its_sign_fixed():
    """pytorch-grad-cam's EigenCAM keeps whatever sign the SVD returns; ours flips the projection so
    that its largest magnitude is positive.  Against its own projection, signed by that rule, the
    maps are equal."""
    from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection

    model, x = tiny_cnn(), images(3, size=32)
    activations = model.features(x).detach().numpy()
    projection = torch.from_numpy(get_2d_projection(activations)).double()
    flip = projection.flatten(1).amin(1).abs() > projection.flatten(1).amax(1).abs()
    expected = torch.where(flip[:, None, None], -projection, projection).clamp_min(0)
    mine = saliency.eigencam(model, x, layer="features.3", raw=True)
    assert torch.allclose(mine.double(), expected, atol=1e-5 * float(expected.max()))


def test_ablationcam_weights_by_hand():
    """Eq. 3 on the tiny CNN: zeroing channel k of features.3 lowers the target's logit by
    fc.weight[t, k] * mean(A_k), so w_k = fc.weight[t, k] * mean(A_k) / y_t."""
    model, x = tiny_cnn(), images(2, size=16)
    targets = torch.tensor([1, 4])
    a = model.features(x).detach()
    logits = model(x).detach()
    y = logits.gather(1, targets.view(-1, 1))
    weights = model.fc.weight.detach()[targets] * a.mean(dim=(2, 3)) / y
    expected = (weights[:, :, None, None] * a).sum(dim=1).clamp_min(0)
    assert torch.allclose(saliency.ablationcam(model, x, targets, layer="features.3", raw=True), expected, atol=1e-5)


@pytest.mark.parametrize("variant", ["smoothgrad_sq", "vargrad"])
def test_smoothgrad_squared_and_vargrad_agree_with_captum_noise_tunnel(variant):
    model, x = tiny_cnn(), images(2, size=32)
    span = (x.amax(dim=(1, 2, 3)) - x.amin(dim=(1, 2, 3)))
    torch.manual_seed(0)
    tunnel = captum_attr.NoiseTunnel(captum_attr.Saliency(model))
    theirs = torch.cat([
        tunnel.attribute(x[i : i + 1].clone().requires_grad_(), nt_type=variant, nt_samples=1000,
                         stdevs=float(0.15 * span[i]), target=int(TARGETS[i]), abs=False)
        for i in range(2)
    ])
    settings = dict(n_samples=1000, noise_level=0.15, aggregate=None, raw=True, batch_size=250, variant=variant)
    mine = saliency.smoothgrad(model, x, TARGETS[:2], **settings)
    again = saliency.smoothgrad(model, x, TARGETS[:2], seed=1, **settings)  # an independent estimate of ours
    assert (mine >= 0).all()
    # A variance's Monte-Carlo error is larger than a mean's: two estimates of ours agree at about 0.98
    # at 1,000 samples, so the peer must agree with ours as well as ours agree with themselves.
    for a, b, c in zip(mine, theirs, again):
        assert pearson(a, b) >= min(0.99, pearson(a, c) - 0.01)


def test_vargrad_by_hand():
    """VarGrad is the variance of the noisy gradients: E[g^2] - E[g]^2, from the same draws."""
    model, x = tiny_cnn(), images(1, size=16)
    settings = dict(n_samples=8, noise_level=0.2, aggregate=None, raw=True, seed=3)
    mean = saliency.smoothgrad(model, x, 1, **settings)
    square = saliency.smoothgrad(model, x, 1, variant="smoothgrad_sq", **settings)
    assert torch.allclose(saliency.smoothgrad(model, x, 1, variant="vargrad", **settings),
                          (square - mean**2).clamp_min(0), atol=1e-7)


@pytest.mark.parametrize("ours, theirs", [("gradient_x_input", "InputXGradient"), ("deconvnet", "Deconvolution")])
@pytest.mark.parametrize("inplace", [False, True])
def test_input_x_gradient_and_deconvnet_equal_captum(ours, theirs, inplace):
    model, x = tiny_cnn(inplace=inplace), images(3, size=32)
    peer = getattr(captum_attr, theirs)(tiny_cnn())  # captum on the out-of-place twin: its hooks need no in-place ReLU
    expected = peer.attribute(x.clone().requires_grad_(), target=TARGETS).detach()
    mine = saliency.METHODS[ours](model, x, TARGETS, aggregate=None, raw=True)
    assert torch.allclose(mine, expected, atol=1e-6)
    assert [m.inplace for m in model.modules() if isinstance(m, torch.nn.ReLU)] == [inplace, inplace]  # flags kept


def test_deconvnet_differs_from_guided_backprop_by_the_forward_mask():
    """Zeiler & Fergus's rectification ignores the forward activation: on a ReLU whose input is
    negative the deconvnet signal passes where guided backprop's is cut."""
    model, x = tiny_cnn(), images(2, size=16)
    deconv = saliency.deconvnet(model, x, TARGETS[:2], aggregate=None, raw=True)
    guided = saliency.guided_backprop(model, x, TARGETS[:2], aggregate=None, raw=True)
    assert not torch.allclose(deconv, guided)


def test_guided_gradcam_equals_captum_with_bilinear_interpolation():
    model, x = tiny_cnn(), images(3, size=32)
    peer = captum_attr.GuidedGradCam(model, model.features[3])
    expected = peer.attribute(x.clone().requires_grad_(), target=TARGETS, interpolate_mode="bilinear").detach()
    mine = saliency.guided_gradcam(model, x, TARGETS, layer="features.3", aggregate=None, raw=True)
    assert torch.allclose(mine, expected, atol=1e-6)


@pytest.mark.parametrize("window, stride", [(8, 4), (5, 3)])
def test_occlusion_equals_captum_on_the_logit(window, stride):
    """(5, 3) on 32 px leaves the last pixels uncovered: 0 in both."""
    model, x = tiny_cnn(), images(3, size=32)
    expected = captum_attr.Occlusion(model).attribute(x, sliding_window_shapes=(3, window, window), strides=(3, stride, stride),
                                                       baselines=0.0, target=TARGETS)
    mine = saliency.occlusion(model, x, TARGETS, window=window, stride=stride, score="logit", raw=True, batch_size=7)
    assert torch.allclose(mine, expected[:, 0], atol=1e-5)
    assert torch.equal(expected[:, 0], expected[:, 2])  # the square covers all channels: one map


def test_occlusion_of_a_linear_model_is_the_windowed_contribution_by_hand():
    """For s(x) = sum(w * x) and a square of zeros, the drop is the sum of w * x under the square."""
    weight = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 64, 2, bias=False)).eval()
    model[1].weight.data[0] = weight.flatten()
    model[1].weight.data[1] = 0
    x = images(1, size=8)
    mine = saliency.occlusion(model, x, 0, window=8, stride=8, score="logit", raw=True)
    assert torch.allclose(mine, (weight * x).sum().expand(1, 8, 8), atol=1e-5)


def _bn_cnn() -> torch.nn.Module:
    """conv-BN-ReLU-conv-BN-ReLU-GAP-linear with random running statistics (eval mode)."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 6, 3, padding=1, bias=False), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
                                torch.nn.Conv2d(6, 8, 3, padding=1, stride=2), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 5))
    for bn in (model[1], model[4]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.uniform_(0.5, 1.5)
        bn.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


@pytest.mark.parametrize("net", ["tiny", "batch norm"])
def test_fullgrad_terms_are_complete(net):
    """Srinivas & Fleuret, Eq. 2: for a ReLU network the input term and the bias terms sum to the
    score, up to the linear layer's bias."""
    model = tiny_cnn() if net == "tiny" else _bn_cnn()
    x = images(3, size=16)
    inputs, terms = saliency.fullgrad_terms(model, x, TARGETS)
    fc = model.fc if net == "tiny" else model[8]
    total = inputs.flatten(1).sum(1) + sum(t.flatten(1).sum(1) for t in terms.values()) + fc.bias.detach()[TARGETS]
    assert torch.allclose(total, model(x).detach().gather(1, TARGETS.view(-1, 1)).squeeze(1), atol=1e-4)
    assert len(terms) == (2 if net == "tiny" else 3)  # tiny: two convolutions; BN net: two BNs and a biased conv


@pytest.mark.parametrize("net", ["tiny", "batch norm"])
def test_fullgrad_with_channel_rescaling_agrees_with_pytorch_grad_cam(net):
    model = tiny_cnn() if net == "tiny" else _bn_cnn()
    x = images(3, size=32)
    with pytorch_grad_cam.FullGrad(model=model, target_layers=[]) as cam:
        peer = torch.from_numpy(np.asarray(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(int(t)) for t in TARGETS])))
    mine = saliency.fullgrad(model, x, TARGETS, rescale="channel")
    for a, b in zip(mine, peer):
        assert pearson(a, b) >= 0.99


@pytest.mark.parametrize("layer", ["features.0", "features.1", "features.3"])
def test_excitation_backprop_equals_torchray(layer):
    torchray_eb = pytest.importorskip("torchray.attribution.excitation_backprop")
    model, x = tiny_cnn(), images(3, size=16)
    expected = torch.cat([torchray_eb.excitation_backprop(tiny_cnn(), x[i : i + 1], int(TARGETS[i]), saliency_layer=layer)
                          for i in range(3)])[:, 0]
    mine = saliency.excitation_backprop(model, x, TARGETS, layer=layer, raw=True)
    assert torch.allclose(mine, expected, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("layer, contrast", [("features.1", "features.3"), ("features.0", "features.2"), ("features.3", "features.3")])
def test_contrastive_excitation_backprop_equals_torchray(layer, contrast):
    torchray_eb = pytest.importorskip("torchray.attribution.excitation_backprop")
    model, x = tiny_cnn(), images(3, size=16)
    expected = torch.cat([torchray_eb.contrastive_excitation_backprop(tiny_cnn(), x[i : i + 1], int(TARGETS[i]),
                                                                      saliency_layer=layer, contrast_layer=contrast,
                                                                      classifier_layer="fc") for i in range(3)])[:, 0]
    mine = saliency.contrastive_excitation_backprop(model, x, TARGETS, layer=layer, contrast_layer=contrast, raw=True)
    assert torch.allclose(mine, expected, atol=1e-7, rtol=1e-5)


def test_excitation_backprop_conserves_the_winning_probability_by_hand():
    """Zhang et al.'s rule is a probability: through bias-free layers with non-negative weights and
    inputs, the signal at any layer sums to 1, the one-hot start."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 3, bias=False)).eval()
    model[0].weight.data.abs_()
    model[4].weight.data.abs_()
    x = images(2, size=8).abs()
    signal = saliency.excitation_backprop(model, x, 1, layer="0", raw=True)
    assert torch.allclose(signal.flatten(1).sum(1), torch.ones(2), atol=1e-5)


def test_contrastive_excitation_backprop_needs_its_layer_below_the_contrast_layer():
    with pytest.raises(ValueError, match="must lie below contrast_layer"):
        saliency.contrastive_excitation_backprop(tiny_cnn(), images(1, size=16), 1, layer="features.3",
                                                 contrast_layer="features.1")
