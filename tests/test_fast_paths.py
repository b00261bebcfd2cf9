"""The GPU's fast paths, each against float32: autocast precision, channels-last, large chunks.

The forward-heavy methods (RISE, Score-CAM, Group-CAM, insertion/deletion) take
``precision="bfloat16"`` or ``"float16"``: their masked forward passes run under
``torch.autocast`` (``lib.saliency.passes.forward_in``).  The rule of the issue: the map of a
fast path correlates with the float32 map at Pearson >= 0.99.  Each test also checks that the
fast path changed something (the maps are not bit-identical), so a precision that were silently
ignored would fail.  Autocast runs on the CPU too (bfloat16 and float16), so these tests run
here; on a CUDA device they run there as well (the ``device`` parameter).
"""

import copy

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, pearson
import lib.saliency as saliency
from lib.metrics.insertion_deletion import causal_curves, insertion_deletion
from lib.saliency.passes import PRECISIONS, forward_in

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
HALF = ["bfloat16", "float16"]
LAYER = "features.3"


def decisive_cnn(classes: int = 5, seed: int = 0) -> nn.Module:
    """A tiny CNN whose logits spread over several units, so that probabilities and their
    differences are not all near 1/classes (where any rounding would dominate them)."""
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 24, 3, padding=1, stride=2),
                                   nn.ReLU())
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.fc = nn.Linear(24, classes)
    with torch.no_grad():
        model.fc.weight.mul_(20.0)
    return model.eval()


METHODS = {
    "rise": dict(n_masks=256, cells=4, batch_size=64),
    "scorecam": dict(layer=LAYER),
    "groupcam": dict(layer=LAYER, groups=8),
}


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", HALF)
@pytest.mark.parametrize("name", list(METHODS))
def test_half_precision_maps_correlate_with_float32(name, precision, device):
    model, x = decisive_cnn().to(device), images(4, size=32).to(device)
    before = copy.deepcopy(model.state_dict())
    method = getattr(saliency, name)
    exact = method(model, x, **METHODS[name])
    fast = method(model, x, **METHODS[name], precision=precision)
    assert fast.dtype == exact.dtype == torch.float32 and fast.shape == exact.shape
    assert torch.isfinite(fast).all()
    assert not torch.equal(fast, exact), "the precision was ignored: the maps are bit-identical"
    for b in range(x.shape[0]):
        assert pearson(fast[b].cpu(), exact[b].cpu()) >= 0.99, (name, precision, b)
    assert no_hooks_left(model)
    assert all(torch.equal(before[k], v) and v.dtype == before[k].dtype for k, v in model.state_dict().items())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("precision", HALF)
def test_half_precision_insertion_deletion_agrees_with_float32(precision, device):
    model, x = decisive_cnn().to(device), images(4, size=32).to(device)
    maps = saliency.gradcam(model, x, layer=LAYER)
    exact = insertion_deletion(model, x, maps, step=64)
    fast = insertion_deletion(model, x, maps, step=64, precision=precision)
    assert torch.equal(fast.targets, exact.targets)  # the targets are chosen in float32
    assert not torch.equal(fast.insertion, exact.insertion)
    for curves in ("insertion", "deletion"):
        a, b = getattr(fast, curves), getattr(exact, curves)
        assert (a - b).abs().max() < 0.02, (curves, (a - b).abs().max())
        assert pearson(a.cpu(), b.cpu()) >= 0.99
    assert (fast.insertion_auc - exact.insertion_auc).abs().max() < 0.01
    single = causal_curves(model, x, maps, mode="deletion", step=64, precision=precision)
    assert torch.allclose(single, fast.deletion)


def test_float32_means_float32_also_inside_a_callers_autocast():
    model, x = decisive_cnn(), images(2, size=32)
    maps = saliency.gradcam(model, x, layer=LAYER)
    for name, kwargs in METHODS.items():
        exact = getattr(saliency, name)(model, x, **kwargs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            inside = getattr(saliency, name)(model, x, **kwargs)
        assert inside.dtype == torch.float32 and torch.equal(inside, exact), name
    with torch.autocast("cpu", dtype=torch.bfloat16):
        curves = causal_curves(model, x, maps, step=64)
    assert torch.equal(curves, causal_curves(model, x, maps, step=64))
    # A half-precision model's logits leave as float32.
    assert forward_in(copy.deepcopy(model).bfloat16(), "float32")(x.bfloat16()).dtype == torch.float32
    for precision in PRECISIONS:  # autocast leaves float64 alone: a float64 model stays float64
        assert forward_in(copy.deepcopy(model).double(), precision)(x.double()).dtype == torch.float64


def test_float32_is_the_default():
    model = decisive_cnn()
    x = images(2, size=32)
    assert torch.equal(saliency.rise(model, x, n_masks=64, cells=4), saliency.rise(model, x, n_masks=64, cells=4,
                                                                                    precision="float32"))


def test_autocast_logits_leave_as_float32_and_the_context_ends():
    model, x = decisive_cnn(), images(2, size=32)
    with torch.no_grad():
        logits = forward_in(model, "bfloat16")(x)
    assert logits.dtype == torch.float32
    assert not torch.is_autocast_enabled("cpu")
    assert pearson(logits, model(x).detach()) > 0.999


@pytest.mark.parametrize("call", [
    lambda m, x: saliency.rise(m, x, n_masks=8, precision="half"),
    lambda m, x: saliency.scorecam(m, x, layer=LAYER, precision="fp16"),
    lambda m, x: saliency.groupcam(m, x, layer=LAYER, groups=4, precision="float64"),
    lambda m, x: insertion_deletion(m, x, torch.rand(2, 32, 32), precision="int8"),
])
def test_an_unknown_precision_names_the_accepted_ones(call):
    with pytest.raises(ValueError, match="precision .*accepted: float32, bfloat16, float16"):
        call(decisive_cnn(), images(2, size=32))
    with pytest.raises(TypeError, match="precision"):
        saliency.rise(decisive_cnn(), images(2, size=32), n_masks=8, precision=torch.bfloat16)


def test_the_precisions_are_exactly_three():
    assert list(PRECISIONS) == ["float32", "bfloat16", "float16"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["gradient", "gradcam", "rise", "groupcam"])
def test_channels_last_weights_and_inputs_give_the_float32_maps(name, device):
    # lib.models.load stores every classifier channels-last; here the same tiny network both ways.
    model, x = decisive_cnn().to(device), images(3, size=32).to(device)
    nhwc = copy.deepcopy(model).to(memory_format=torch.channels_last)
    kwargs = {k: v for k, v in METHODS.get(name, {}).items()}
    if name in ("gradcam",):
        kwargs["layer"] = LAYER
    method = getattr(saliency, name)
    contiguous = method(model, x, **kwargs)
    for inputs in (x, x.contiguous(memory_format=torch.channels_last)):
        assert torch.allclose(method(nhwc, inputs, **kwargs), contiguous, atol=1e-5), name


@pytest.mark.parametrize("device", DEVICES)
def test_one_chunk_or_many_give_the_same_maps(device):
    # The large chunks of a GPU (auto: 64 per pass, or None: all at once) change only the batching.
    model, x = decisive_cnn().to(device), images(3, size=32).to(device)
    for name, kwargs in METHODS.items():
        method = getattr(saliency, name)
        one = method(model, x, **{**kwargs, "batch_size": 1})
        for size in ("auto", None, 1000):
            assert torch.allclose(method(model, x, **{**kwargs, "batch_size": size}), one, atol=1e-5), (name, size)
