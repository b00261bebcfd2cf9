"""Class activation maps (lib.saliency.cam): each CAM's weights and maps against their papers' equations, by hand.

The comparisons with pytorch-grad-cam are in test_parity.py, the registry-wide checks (hooks, bad input,
batching) in test_reliability.py.
"""

import torch

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.saliency import cam


def test_gradcam_raw_is_the_class_activation_map_on_a_relu_gap_network():
    # With A -> GAP -> linear, dy_c/dA_k = W_ck / (hw), so Grad-CAM = ReLU(sum_k W_ck A_k) / (hw).
    model, x = tiny_cnn(), images(2, size=32)
    raw = saliency.gradcam(model, x, torch.tensor([1, 2]), layer="features.3", raw=True)
    a = model.features(x)
    h, w = a.shape[-2:]
    expected = torch.relu(torch.einsum("k,bkhw->bhw", model.fc.weight[1], a[:1]))
    expected2 = torch.relu(torch.einsum("k,bkhw->bhw", model.fc.weight[2], a[1:]))
    assert torch.allclose(raw, torch.cat([expected, expected2]) / (h * w), atol=1e-6)


def test_the_gradcam_reduction_is_the_weighted_sum_of_averaged_gradients():
    a, g = torch.rand(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    assert torch.allclose(cam.REDUCTIONS["gradcam"](a, g), cam.weighted_sum(a, g.mean(dim=(2, 3))))  # Selvaraju et al. Eqs. 1-2


def test_gradcam_pp_weights_follow_eq_19_element_by_element():
    generator = torch.Generator().manual_seed(0)
    a, g = torch.rand(1, 2, 2, 3, generator=generator), torch.randn(1, 2, 2, 3, generator=generator)
    g[0, 1, 0, 0] = 0.0  # alpha's 0/0 case: alpha = 0 there
    weights = cam.gradcam_pp_weights(a, g)
    for k in range(2):
        total, area = 0.0, float(a[0, k].sum())
        for i in range(2):
            for j in range(3):
                gij = float(g[0, k, i, j])
                alpha = 0.0 if gij == 0 else gij**2 / (2 * gij**2 + area * gij**3 + 1e-6)
                total += alpha * max(gij, 0.0)
        assert abs(float(weights[0, k]) - total) < 1e-6


def test_layercam_raw_keeps_each_locations_positive_gradient():
    # Jiang et al. Eqs. 5-6: L = ReLU(sum_k ReLU(dy_c/dA_k) * A_k), the gradient taken by autograd here.
    model, x, targets = tiny_cnn(), images(2, size=16), torch.tensor([0, 3])
    a = model.features(x).detach().requires_grad_(True)
    logits = model.fc(model.flatten(model.pool(a)))
    (g,) = torch.autograd.grad(logits[torch.arange(2), targets].sum(), a)
    expected = torch.relu((torch.relu(g) * a.detach()).sum(dim=1))
    raw = saliency.layercam(model, x, targets, layer="features.3", raw=True)
    assert torch.allclose(raw, expected, atol=1e-6)
    assert no_hooks_left(model)
