"""The one layer pass (lib.saliency.passes.layer_passes) against autograd by hand, and its views."""

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.saliency import floors
from lib.saliency.passes import INPUT, chunks, layer_pass, layer_passes, with_input


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


class _SideBranch(nn.Module):
    """tiny_cnn behind a convolution whose output is computed and dropped, and a layer that never runs."""

    def __init__(self):
        super().__init__()
        self.net, self.side, self.unused = tiny_cnn(), nn.Conv2d(3, 3, 1), nn.Linear(2, 2)

    def forward(self, x):
        self.side(x)
        return self.net(x)


def _state(model):
    return [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()], [p.grad for p in model.parameters()]


@pytest.mark.parametrize("arguments, error, message", [
    (dict(layers=None), TypeError, "layers must be a layer \\(a name, alias or submodule\\) or a list"),
    (dict(layers=[nn.ReLU()]), ValueError, "module ReLU is not part of the model"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer"),
    (dict(batch_size=2.0), TypeError, "batch_size must be a positive integer"),
    (dict(batch_size=True), TypeError, "batch_size must be a positive integer"),
    (dict(batch_size="2"), TypeError, "batch_size must be a positive integer"),
    (dict(score=lambda logits, t: logits), ValueError, r"one score per image, shape \(3,\), got \(3, 5\)"),
    (dict(score=lambda logits, t: logits[:, 0].sum()), ValueError, r"one score per image"),
    (dict(score=lambda logits, t: 1.0), TypeError, "score must return a tensor"),
    (dict(score=lambda logits, t: logits.detach()[:, 0]), ValueError, "do not depend on the logits"),
    (dict(score=None), TypeError, "score must be a function"),
    (dict(reduce=lambda passes: 3), TypeError, "per-image tensor"),  # one chunk: refused, not returned as is
    (dict(reduce=lambda passes: 3, batch_size=1), TypeError, "per-image tensor"),
    (dict(reduce=lambda passes: None, batch_size=1), TypeError, "per-image tensor"),
    (dict(reduce=lambda passes: passes["features.1"].activations.sum(), batch_size=1), ValueError, "must be per image"),
    (dict(reduce=lambda passes: {"a": [1]}, batch_size=2), TypeError, r"result\['a'\]"),
    (dict(reduce=3), TypeError, "reduce must be a function"),
    (dict(targets="cat"), TypeError, "targets must be integer class indices"),
    (dict(layers=[INPUT]), ValueError, r"with_input\(model\)"),
])
def test_bad_arguments_get_one_clear_error_and_leave_the_model_as_given(arguments, error, message):
    model, x = tiny_cnn(), images(3, 16)
    model.fc.weight.requires_grad_(False)
    before = _state(model)
    arguments = dict(targets=torch.tensor([0, 1, 2]), layers=["features.1"]) | arguments
    with pytest.raises(error, match=message):
        layer_passes(model, x, arguments.pop("targets"), arguments.pop("layers"), **arguments)
    assert no_hooks_left(model) and _state(model) == before


def test_layers_that_do_not_run_or_do_not_reach_the_logits_are_named():
    model, x, targets = _SideBranch().eval(), images(2, 16), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"\['unused'\] did not run"):
        layer_passes(model, x, targets, ["unused"])
    with pytest.raises(ValueError, match=r"does not depend on layer\(s\) \['side'\]"):
        layer_passes(model, x, targets, ["net.features.1", "side"])
    with pytest.raises(ValueError, match="no requested layer lies before the logits"):
        layer_passes(model, x, targets, ["side"])
    assert no_hooks_left(model)


def test_auto_batch_size_and_a_single_layer_name():
    model, x, targets = tiny_cnn(), images(3, 16), torch.tensor([1, 3, 0])
    whole = layer_pass(model, x, targets, "features.3")
    auto = layer_pass(model, x, targets, "features.3", batch_size="auto")
    assert torch.equal(auto.gradients, whole.gradients) and torch.equal(auto.activations, whole.activations)
    with pytest.raises(TypeError, match="layer must be one layer"):
        layer_pass(model, x, targets, ["features.3"])


def test_chunks_and_floors_refuse_counts_that_are_not_whole_numbers():
    assert list(chunks(0, None)) == [] and list(chunks(5, 2)) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ValueError, match=">= 0"):
        list(chunks(-1, None))
    model, x, targets = tiny_cnn(), images(2, 16), torch.tensor([0, 1])
    with pytest.raises(ValueError, match=r"settings\['n_samples'\].*>= 1, got 0"):
        floors.input_passes("n_samples")(model, x, targets, {"n_samples": 0})
    with pytest.raises(TypeError, match=r"settings\['groups'\]"):
        floors.groupcam_passes(model, x, targets, {"layer": "features.3", "groups": 2.5})
    with pytest.raises(KeyError, match="needs the method's setting 'layer'"):
        floors.one_layer_pass(model, x, targets, {})
    floors.input_passes()(model, x, None, {})()  # targets resolved to the prediction beforehand
    floors.cameras_passes(model, x, targets, {"layer": "features.3", "steps": 2, "max_scale": 32, "batch_size": "auto"})()
    assert no_hooks_left(model)
