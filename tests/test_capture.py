"""lib.capture: activations and gradients at named layers, hooks removed, model restored."""

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
from lib.capture import capture, check_targets, prepared, resolve_layer


def test_gradient_at_layer_equals_hand_computation_on_gap_linear_head():
    model = tiny_cnn()
    x = images(2)
    with capture(model, ["features.3"]) as record:
        logits = model(x)
        logits[:, 2].sum().backward()
    a, g = record["features.3"], record.gradient("features.3")
    h, w = a.shape[-2:]
    # score = fc(mean(A)) => d score / d A_kij = W_2k / (h w)
    expected = (model.fc.weight[2] / (h * w)).view(1, -1, 1, 1).expand_as(a)
    assert torch.allclose(g, expected, atol=1e-7)
    assert no_hooks_left(model)


def test_inplace_relu_after_layer_does_not_corrupt_activation_or_gradient():
    model = tiny_cnn(inplace=True)
    reference = tiny_cnn(inplace=False)
    x = images(2)
    results = []
    for net in (model, reference):
        with capture(net, ["features.2"]) as record:
            net(x)[:, 1].sum().backward()
        results.append((record["features.2"].detach(), record.gradient("features.2")))
    (a1, g1), (a2, g2) = results
    assert (a1 < 0).any(), "the conv output has negative values, which an in-place ReLU would have zeroed"
    assert torch.equal(a1, a2) and torch.allclose(g1, g2)


def test_hooks_removed_and_model_restored_after_an_exception():
    model = tiny_cnn().train()
    model.fc.weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="boom"):
        with pytest.warns(UserWarning, match="training mode"):
            with prepared(model), capture(model, ["features.1", "features.3"]):
                model(images(1))
                raise RuntimeError("boom")
    assert no_hooks_left(model)
    assert model.training and all(m.training for m in model.modules())
    assert not model.fc.weight.requires_grad and model.fc.bias.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_layer_lists_close_names():
    with pytest.raises(ValueError, match=r"features\.3"):
        resolve_layer(tiny_cnn(), "features.33")


def test_layer_can_be_given_as_module_or_alias():
    model = tiny_cnn()
    assert resolve_layer(model, model.features[3]) == ("features.3", model.features[3])

    class Wrapped:
        model = tiny_cnn()
        layers = {"last": "features.3"}

    assert resolve_layer(Wrapped(), "last")[0] == "features.3"


def test_target_validation():
    logits = torch.zeros(2, 5)
    assert check_targets(None, torch.tensor([[0, 3.0, 0, 0, 0], [1.0, 0, 0, 0, 0]])).tolist() == [1, 0]
    assert check_targets(4, logits).tolist() == [4, 4]
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        check_targets(torch.tensor([0, 5]), logits)
    with pytest.raises(ValueError, match="one class index per image"):
        check_targets(torch.tensor([0, 1, 2]), logits)
    with pytest.raises(TypeError, match="integer"):
        check_targets(torch.tensor([0.0, 1.0]), logits)


def test_a_dropped_record_frees_its_activations_without_the_garbage_collector():
    # A gradient hook that held the record strongly made a cycle through autograd's nodes:
    # every capture kept its activations alive (about 55 MB per batch of 8 on Lite0).
    import gc
    import weakref

    from lib.capture import capture

    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3))
    model[0].weight.requires_grad_(True)
    gc.disable()
    try:
        with capture(model, "1") as record:
            model(torch.randn(1, 3, 8, 8)).sum().backward()
        assert "1" in record.gradients
        kept = weakref.ref(record.activations["1"])
        del record
        assert kept() is None
    finally:
        gc.enable()


def test_targets_and_least_likely_labels_refuse_what_has_no_score():
    import numpy as np

    from lib.capture import check_targets, least_likely_labels

    logits = torch.tensor([[0.0, float("-inf"), 1.0], [2.0, float("-inf"), -1.0]])
    assert check_targets(np.int64(2), logits).tolist() == [2, 2]  # was '1 index for a batch of 2'
    with pytest.raises(TypeError, match="integer class indices"):  # True was class 1
        check_targets(True, logits)
    with pytest.raises(TypeError, match="integer class indices"):
        check_targets("0", logits)
    with pytest.raises(ValueError, match=r"logits must be a \(B, classes\) tensor"):
        check_targets(0, torch.zeros(3))
    every_unmapped = torch.full((2, 3), float("-inf"))
    with pytest.raises(ValueError, match="no scored category"):  # argmax picked unmapped category 0
        check_targets(None, every_unmapped)
    with pytest.raises(ValueError, match="NaN"):
        check_targets(None, torch.tensor([[float("nan"), 1.0]]))
    assert least_likely_labels(logits).tolist() == [0, 2]
    with pytest.raises(ValueError, match="no scored category"):
        least_likely_labels(every_unmapped)
    with pytest.raises(ValueError, match="NaN"):  # argmin picked the NaN
        least_likely_labels(torch.tensor([[float("nan"), 1.0, 2.0]]))
    assert least_likely_labels(torch.tensor([[3, 1, 2]])).tolist() == [1]  # int logits: masked_fill(inf) overflowed
    with pytest.raises(ValueError, match="got ndarray"):
        least_likely_labels(np.zeros((2, 3)))
