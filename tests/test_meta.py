"""Meta-saliency (Rebuffi et al. 2020, Sec. 4.4, Eqs. 4-6): one SGD step on a copy, model untouched."""

import copy

import pytest
import torch
import torch.nn.functional as F

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.models import Classifier
from lib.saliency.meta import inner_step, meta_saliency


def classifier(model):
    return Classifier(model=model, name="tiny", input_size=16, mean=torch.zeros(3), std=torch.ones(3),
                      categories=[str(i) for i in range(5)], layers={"last": "features.3", "early": "features.1"})


def snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("direction", ["positive", "negative"])
@pytest.mark.parametrize("method", ["selective_normgrad", "gradient", "gradcam"])
def test_the_callers_model_is_bit_identical(direction, method):
    model = tiny_cnn()
    model.fc.bias.requires_grad_(False)  # a mixed requires_grad state must come back as it was
    state, flags = snapshot(model)
    kwargs = {} if method == "gradient" else {"layer": "last"}
    maps = meta_saliency(classifier(model), images(2, size=16), method=method, direction=direction, epsilon=0.05, **kwargs)
    assert maps.shape == (2, 16, 16) and 0 <= maps.min() and maps.max() <= 1
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.grad is None for p in model.parameters())  # the inner step's gradients live on the copy
    assert no_hooks_left(model) and not model.training


def test_training_mode_is_warned_and_restored():
    model = tiny_cnn().train()
    with pytest.warns(UserWarning, match="training mode"):
        meta_saliency(model, images(1, size=16), method="normgrad", layer="features.3")
    assert model.training


def test_epsilon_zero_is_the_base_method():
    model, x, target = tiny_cnn(), images(2, size=16), torch.tensor([1, 3])
    base = torch.cat([saliency.linear_approx(model, x[b : b + 1], target[b : b + 1], layer="features.1", raw=True) for b in range(2)])
    assert torch.equal(meta_saliency(model, x, target, method="linear_approx", epsilon=0.0, layer="features.1", raw=True), base)


@pytest.mark.parametrize("direction", ["positive", "negative"])
def test_maps_equal_the_base_method_on_a_hand_stepped_copy(direction):
    # theta' = theta -/+ 2 eps grad_theta CE(theta, x_b, y_b), image by image (Sec. 4.4).
    model, x, target, eps = tiny_cnn(), images(3, size=16), torch.tensor([0, 2, 4]), 0.05
    expected = []
    for b in range(3):
        twin = copy.deepcopy(model).requires_grad_(True)
        optimiser = torch.optim.SGD(twin.parameters(), lr=2 * eps)
        loss = F.cross_entropy(twin(x[b : b + 1]), target[b : b + 1])
        (loss if direction == "positive" else -loss).backward()
        optimiser.step()
        expected.append(saliency.normgrad(twin, x[b : b + 1], target[b : b + 1], layer="features.1", raw=True))
    got = meta_saliency(model, x, target, method=saliency.normgrad, epsilon=eps, direction=direction, layer="features.1", raw=True)
    assert torch.allclose(got, torch.cat(expected), atol=1e-6)
    plain = saliency.normgrad(model, x, target, layer="features.1", raw=True)
    assert not torch.allclose(got, plain, atol=1e-4)  # the step changed the maps


def test_the_sgd_step_approximates_the_gradient_of_the_meta_loss_eq6():
    # grad_theta l(theta') with theta' = theta - 2 eps grad l equals grad_theta of
    # L = l(theta - eps grad l(theta)) up to O(eps^2), while it differs from grad l(theta) by O(eps).
    model, x, y, eps = tiny_cnn(), images(1, size=16), torch.tensor([3]), 1e-3
    params = [p.requires_grad_(True) for p in model.parameters()]

    def grad_at(module):
        module.requires_grad_(True)
        return torch.cat([g.flatten() for g in torch.autograd.grad(F.cross_entropy(module(x), y), list(module.parameters()))])

    plain = grad_at(model)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), params, create_graph=True)
    shifted = {n: p - eps * g for (n, p), g in zip(model.named_parameters(), grads)}
    meta_loss = F.cross_entropy(torch.func.functional_call(model, shifted, (x,)), y)
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(meta_loss, params)])
    stepped = copy.deepcopy(model)
    inner_step(stepped, x, y, eps, "positive")
    approx = grad_at(stepped)
    assert (approx - exact).norm() < 0.05 * (plain - exact).norm()


def test_batched_equals_one_by_one():
    model, x, target = tiny_cnn(), images(3, size=16), torch.tensor([4, 0, 1])
    together = meta_saliency(model, x, target, method="gradcam", layer="features.1", epsilon=0.1)
    alone = torch.cat([meta_saliency(model, x[i : i + 1], target[i : i + 1], method="gradcam", layer="features.1", epsilon=0.1) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-6)


def test_bad_arguments_get_clear_errors():
    model, x = tiny_cnn(), images(1, size=16)
    with pytest.raises(ValueError, match="unknown saliency method"):
        meta_saliency(model, x, method="normgradd")
    with pytest.raises(ValueError, match="positive, negative"):
        meta_saliency(model, x, method="gradient", direction="up")
    with pytest.raises(ValueError, match="epsilon"):
        meta_saliency(model, x, method="gradient", epsilon=-1.0)
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        meta_saliency(model, x, torch.tensor([9]), method="gradient")


def test_a_method_returning_a_dict_of_maps_is_concatenated_entry_by_entry():
    from lib.saliency.extract_and_aggregate import framework_maps

    model, x, target = tiny_cnn(), images(2, size=16), torch.tensor([1, 2])
    got = meta_saliency(model, x, target, method=framework_maps, layers=["features.1", "features.3"], epsilon=0.05)
    single = meta_saliency(model, x, target, method="normgrad", layer="features.3", epsilon=0.05)
    assert got["normgrad"]["features.1"].shape == (2, 16, 16)
    assert torch.allclose(got["normgrad"]["features.3"], single, atol=1e-6)
