"""Each baseline against an independent implementation on the same tiny model and inputs.

Peers: pytorch-grad-cam (Grad-CAM, Grad-CAM++, Score-CAM, Layer-CAM) and captum
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


def _peer_cam(cls, model, x, targets):
    with cls(model=model, target_layers=[model.features[3]]) as cam:
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
