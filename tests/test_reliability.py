"""Every registered method: clear errors, no hook left, model untouched, no memory growth.

The methods and their settings come from the registry (lib.saliency.registry): a method
registered there is checked here with no edit of this file.
"""

import gc

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.saliency import registry

LAYER = "features.3"  # the tiny network's last ReLU, for every method that takes a layer


def methods(keep=lambda entry: True) -> list[str]:
    """The registered methods this suite checks (sorted), those whose entry passes ``keep``."""
    return sorted(name for name, entry in registry.REGISTRY.items() if keep(entry))


def call(name, model, x, targets=None, **extra):
    """The method with its light settings (cheap enough for 200 calls) at LAYER if it takes a layer."""
    entry = registry.get(name)
    kwargs = dict(entry.light)
    if entry.takes_layer:
        kwargs["layer"] = LAYER
    kwargs.update(extra)
    return entry.function(model, x, targets, **kwargs)


def _live_tensors() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if issubclass(type(obj), torch.Tensor))


@pytest.mark.parametrize("name", methods())
def test_two_hundred_calls_leave_no_hook_identical_parameters_and_flat_memory(name):
    model, x = tiny_cnn(), images(2, size=16)
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    call(name, model, x)
    baseline = _live_tensors()
    for _ in range(199):
        maps = call(name, model, x)
    assert _live_tensors() <= baseline + 2
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
    assert maps.min() >= 0 and maps.max() <= 1
    assert no_hooks_left(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert not model.training


@pytest.mark.parametrize("name", methods())
def test_bad_inputs_get_clear_errors(name):
    model, x = tiny_cnn(), images(2, size=16)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        call(name, model, x[0])
    with pytest.raises(TypeError, match="floating-point"):
        call(name, model, (x * 10).long())
    with pytest.raises(ValueError, match="empty batch"):
        call(name, model, x[:0])
    with pytest.raises(ValueError, match=r"outside \[0, 5\)"):
        call(name, model, x, torch.tensor([0, 7]))
    assert no_hooks_left(model)


@pytest.mark.parametrize("name", methods(lambda entry: entry.takes_layer))
def test_unknown_layer_names_the_closest(name):
    with pytest.raises(ValueError, match=r"features\.3"):
        call(name, tiny_cnn(), images(1, size=16), layer="features.30")


@pytest.mark.parametrize("name", methods())
def test_training_mode_is_switched_for_the_call_and_restored(name):
    model = tiny_cnn().train()
    with pytest.warns(UserWarning, match="training mode"):
        call(name, model, images(1, size=16))
    assert model.training and all(m.training for m in model.modules())
    assert no_hooks_left(model)


class Constant(nn.Module):
    """Output independent of the input: every saliency map is constant."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.ReLU())
        nn.init.zeros_(self.features[2].weight)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


# normgrad_conv reads the gradient of a convolution's *weights*, which depends on its input
# patches even when the output ignores the image (tests/test_extract_and_aggregate.py checks that case);
# an extremal perturbation is then shaped by its area term alone (tests/test_extremal.py checks that case).
@pytest.mark.parametrize("name", sorted(set(methods()) - {"rise", "normgrad_conv", "extremal_perturbation"}))
def test_constant_maps_normalise_to_zeros_not_nan(name):
    maps = call(name, Constant().eval(), images(2, size=8))
    assert torch.equal(maps, torch.zeros_like(maps))


def test_rise_on_a_constant_model_is_the_mask_coverage_times_the_probability():
    # RISE's estimator is sum_i f_c(I * M_i) M_i / (N p): with f_c constant it is the
    # finite-sample mask coverage, not a constant map (it only tends to one as N grows).
    from lib.saliency.perturbation import rise_masks

    model, x = Constant().eval(), images(1, size=8)
    raw = saliency.rise(model, x, 0, n_masks=16, raw=True, seed=3, batch_size=5)
    masks = rise_masks(16, (8, 8), generator=torch.Generator().manual_seed(3))
    probability = model(x).softmax(dim=1)[0, 0]
    assert torch.allclose(raw[0], probability * masks.sum(0) / (16 * 0.5), atol=1e-6)


@pytest.mark.parametrize("name", methods())
def test_batched_equals_one_by_one_and_seeded_is_repeatable(name):
    model, x, targets = tiny_cnn(), images(3, size=16), torch.tensor([1, 2, 3])
    together = call(name, model, x, targets)
    alone = torch.cat([call(name, model, x[i : i + 1], targets[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)
    assert torch.equal(call(name, model, x, targets), together)


def test_every_method_runs_on_the_offline_model_at_a_non_native_size():
    # A real photograph (the embedded cat) at 160 x 200, so every method has evidence to find.
    from lib import data, models

    classifier = models.load("efficientnet_lite0")
    cat = classifier.preprocess(data.embedded()[0].image).unsqueeze(0)
    x = torch.nn.functional.interpolate(cat, size=(160, 200), mode="bilinear", align_corners=False)
    label = data.embedded()[0].label
    on_this_model = {
        "scorecam": {"layer": "stage7"},  # 320 channels instead of 1280, to keep the test short
        "cameras": {"scales": (160, 240)},
        "layer_gradient": {"layer": "stage5"},  # at 'last' (before global average pooling) it is constant: the paper's point
    }
    for name in methods():
        entry = registry.get(name)
        maps = entry.function(classifier, x, label, **{**entry.light, **on_this_model.get(name, {})})
        assert maps.shape == (1, 160, 200) and maps.max() == 1, name
    assert no_hooks_left(classifier.model)
