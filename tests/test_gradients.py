"""The one layer pass (lib.saliency.passes.layer_passes) against autograd by hand, and its views."""

import pytest
import torch

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.saliency.passes import INPUT, layer_pass, layer_passes, with_input


def by_hand(model, x, targets):
    """Activations after features.1 and features.3 (and the input of features.2) and the target logits' gradients there."""
    h1 = model.features[1](model.features[0](x)).detach().requires_grad_(True)
    h3 = model.features[3](model.features[2](h1))
    logits = model.fc(model.flatten(model.pool(h3)))
    g1, g3 = torch.autograd.grad(logits[torch.arange(len(x)), targets].sum(), [h1, h3])
    return h1.detach(), g1, h3.detach(), g3, logits.detach()


def test_layer_passes_gradients_match_autograd():
    model, x, targets = tiny_cnn(), images(3, 16), torch.tensor([1, 3, 0])
    passes = layer_passes(model, x, targets, ["features.1", "features.3"], batch_size=2)
    h1, g1, h3, g3, logits = by_hand(model, x, targets)
    assert torch.allclose(passes["features.1"].activations, h1, atol=1e-6)
    assert torch.allclose(passes["features.1"].gradients, g1, atol=1e-6)
    assert torch.allclose(passes["features.3"].gradients, g3, atol=1e-6)
    assert torch.allclose(passes["features.3"].logits, logits, atol=1e-6)
    assert passes["features.3"].targets.tolist() == [1, 3, 0] and passes["features.3"].inputs is None
    assert torch.equal(layer_pass(model, x, targets, "features.1", batch_size=2).gradients, passes["features.1"].gradients)
    assert no_hooks_left(model)


def test_inputs_are_the_layer_input_and_the_gradient_stays_the_output():
    model, x, targets = tiny_cnn(), images(2, 16), torch.tensor([2, 4])
    record = layer_pass(model, x, targets, "features.2", inputs=True)
    h1, g1, h3, g3, _ = by_hand(model, x, targets)
    assert torch.allclose(record.inputs, h1, atol=1e-6)  # the conv's input is the ReLU's output
    assert torch.allclose(record.activations, model.features[2](h1), atol=1e-6)
    assert torch.allclose(record.gradients, g3 * (model.features[2](h1) > 0), atol=1e-6)  # through the last ReLU
    assert no_hooks_left(model)


def test_predicted_targets_and_a_score_of_ones_own():
    model, x = tiny_cnn(), images(3, 16)
    predicted = model(x).argmax(1)
    record = layer_pass(model, x, None, "features.3", batch_size=1)
    assert torch.equal(record.targets, predicted)
    probability = layer_pass(model, x, predicted, "features.3", score=lambda logits, t: logits.softmax(1)[torch.arange(len(t)), t])
    h3 = model.features[:4](x).detach().requires_grad_(True)
    p = model.fc(model.flatten(model.pool(h3))).softmax(1)
    (g,) = torch.autograd.grad(p[torch.arange(3), predicted].sum(), h3)
    assert torch.allclose(probability.gradients, g, atol=1e-7)


def test_reduce_per_chunk_equals_reducing_the_whole_pass():
    model, x, targets = tiny_cnn(), images(5, 16), torch.tensor([0, 1, 2, 3, 4])
    layers = ["features.1", "features.3"]
    whole = layer_passes(model, x, targets, layers)
    chunks = []

    def reduce(passes):
        chunks.append(len(passes["features.1"].targets))
        return {layer: (p.gradients * p.activations).sum(1) for layer, p in passes.items()}, passes["features.3"].logits

    maps, logits = layer_passes(model, x, targets, layers, batch_size=2, reduce=reduce)
    assert chunks == [2, 2, 1]
    for layer in layers:
        assert torch.allclose(maps[layer], (whole[layer].gradients * whole[layer].activations).sum(1), atol=1e-6)
    assert torch.allclose(logits, whole["features.3"].logits, atol=1e-6)


def test_the_input_layer_gives_the_input_gradient():
    model, x, targets = tiny_cnn(), images(2, 16), torch.tensor([1, 4])
    record = layer_pass(with_input(model), x, targets, INPUT)
    inputs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(inputs)[torch.arange(2), targets].sum(), inputs)
    assert torch.equal(record.activations, x) and torch.allclose(record.gradients, g, atol=1e-7)
    assert torch.allclose(saliency.gradient(model, x, targets, aggregate=None, raw=True), g, atol=1e-7)
    assert no_hooks_left(model)


def test_the_model_comes_back_as_given_and_hooks_go_even_on_error():
    model, x = tiny_cnn(), images(2, 16)
    model.train()
    model.fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.warns(UserWarning, match="training mode"):
        layer_passes(model, x, None, ["features.1"])
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == flags

    def broken(passes):
        raise RuntimeError("reduction failed")

    model.eval()
    with pytest.raises(RuntimeError, match="reduction failed"):
        layer_passes(model, x, None, ["features.1"], inputs=True, reduce=broken)
    assert no_hooks_left(model) and not model.training
    with pytest.raises(ValueError, match="at least one layer"):
        layer_passes(model, x, None, [])
    with pytest.raises(ValueError, match="unknown layer"):
        layer_pass(model, x, None, "features.9")
    with pytest.raises(ValueError, match="one class index per image"):
        layer_pass(model, x, torch.tensor([0, 1, 2]), "features.1")
