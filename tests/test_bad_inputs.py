"""Every registered method, fed bad input: one clear error each, and never a silent wrong result.

The cases come from the registry (``lib.saliency.registry``): each method gets the image and
target cases, the layer cases when it takes a layer, and cases built from its own settings
(an integer setting given 2.5, a real one NaN, a choice given an unknown name, ...).  Beside
the bad inputs stand inputs that are valid but unusual (a 0-d tensor target, a layer given as
its module, a model that works in place on its input, a constant model): they must give the
right map, the one the plain input gives.

Each case lands in one of three bins:

* **clear**: a ``ValueError`` or ``TypeError`` raised by this library's own code (the innermost
  frame of the traceback lies in ``lib/``) whose message names what was wrong;
* **unclear**: any other error (torch's own, a ``KeyError``, a message that names nothing);
* **wrong**: no error for a bad input, or a valid unusual input whose map differs.

The suite asserts that no method has an unclear or a wrong case, and writes the counts of
every bin to ``build/reports/bad-inputs.json`` (the reliability issue's closing numbers).
"""

from __future__ import annotations

import inspect
import json
import math
import traceback
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, pearson as _pearson, tiny_cnn
from lib.saliency import registry
from lib.saliency.extract_and_aggregate import conv_for

LAYER = "features.3"
LIB = str(Path(__file__).resolve().parents[1] / "lib")
REPORT = Path(__file__).resolve().parents[1] / "build" / "reports" / "bad-inputs.json"
TALLY: dict[str, Counter] = {}

#: Settings whose cases are written by hand below rather than derived from their default.
SPECIAL = {"layer", "raw", "batch_size", "seed", "generator", "baseline", "scales", "theta"}
#: Integer settings that may be 0 (XRAI's dilation: 0 leaves the segments undilated); every other
#: integer setting must be >= 1.
MAY_BE_ZERO: set[str] = {"dilation_radius"}
#: Methods whose layer stands for the convolution at or before it (``conv_for``): a layer that
#: is not a feature map, or runs twice, still names one convolution, whose map they must give.
LAYER_IS_ITS_CONVOLUTION = {"normgrad_conv"}
#: Methods whose map of a model that ignores the image is not zero by their definition: RISE's is
#: the masks' coverage (test_reliability), FullGrad's bias terms never involve the image (Srinivas &
#: Fleuret 2019, Eq. 2: they are the biases' share of the score, wherever the gradient reaches them),
#: an extremal perturbation is then shaped by its area term alone (Fong et al. 2019, R_a; the mask
#: TorchRay's gives there, test_extremal).
NOT_ZERO_ON_A_CONSTANT_MODEL = {"rise", "fullgrad", "extremal_perturbation"}
#: Real settings and the values outside their range (besides NaN and infinity).
OUT_OF_RANGE = {"noise_level": [-0.1], "keep_probability": [0.0, 1.5], "blur_sigma": [0.0, -1.0]}


@dataclass
class Case:
    """One call: what it tests, the overrides of the call's arguments, what must happen."""

    what: str
    overrides: dict = field(default_factory=dict)
    error: type | tuple | None = (ValueError, TypeError)
    mentions: str = ""  # a substring of the message (case-insensitive); "" for valid cases
    model: object = None  # another model for this call (None: the tiny CNN)
    reference: dict | None = None  # valid cases: the overrides whose map this one must equal


class _UsesReluTwice(nn.Module):
    """conv-ReLU-conv-(the same) ReLU: the ReLU module runs twice in one forward pass."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 12, 3, padding=1, stride=2)
        self.relu = nn.ReLU()
        self.fc = nn.Linear(12, 5)
        self.unused = nn.Conv2d(12, 12, 1)

    def forward(self, x):
        x = self.relu(self.conv2(self.relu(self.conv1(x))))
        return self.fc(x.mean(dim=(2, 3)))


class _InPlaceInput(nn.Module):
    """The tiny CNN behind a first op that works in place on the caller's images."""

    def __init__(self, inplace: bool = True):
        super().__init__()
        self.inplace = inplace
        self.net = tiny_cnn()

    def forward(self, x):
        x = x.mul_(0.5) if self.inplace else x.mul(0.5)
        return self.net(x)


class _Tokens(nn.Module):
    """A layer ``tokens`` whose output is (B, C, N), a sequence, not a feature map."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3, padding=1, stride=2)
        self.tokens = nn.Flatten(2)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.tokens(self.conv(x).relu()).mean(dim=2))


class _Constant(nn.Module):
    """A model whose logits ignore the image: its gradient with respect to the image is 0 and,
    without padding, every feature map is spatially constant, so every map must be 0."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 12, 3, stride=2), nn.ReLU())
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        return self.fc(self.features(x * 0.0).mean(dim=(2, 3)) + 1.0)


def _int_cases(name: str, low: int) -> list[Case]:
    cases = [Case(f"{name}=2.5", {name: 2.5}, mentions=name), Case(f"{name}='3'", {name: "3"}, mentions=name),
             Case(f"{name}=True", {name: True}, mentions=name), Case(f"{name}=-3", {name: -3}, mentions=name)]
    if low >= 1:
        cases.append(Case(f"{name}=0", {name: 0}, mentions=name))
    return cases


def _real_cases(name: str) -> list[Case]:
    cases = [Case(f"{name}=nan", {name: math.nan}, mentions=name), Case(f"{name}=inf", {name: math.inf}, mentions=name),
             Case(f"{name}='0.1'", {name: "0.1"}, mentions=name)]
    cases += [Case(f"{name}={value}", {name: value}, mentions=name) for value in OUT_OF_RANGE.get(name, [])]
    return cases


def setting_cases(entry) -> list[Case]:
    """Cases derived from each setting's default: its type says what a bad value is."""
    cases = []
    for setting, default in entry.defaults.items():
        if setting in SPECIAL:
            continue
        if isinstance(default, bool):
            cases.append(Case(f"{setting}='yes'", {setting: "yes"}, mentions=setting))
        elif isinstance(default, int):
            cases += _int_cases(setting, 0 if setting in MAY_BE_ZERO else 1)
        elif isinstance(default, float):
            cases += _real_cases(setting)
        elif isinstance(default, str):
            cases += [Case(f"{setting}='nope'", {setting: "nope"}, mentions="nope"),
                      Case(f"{setting}=3", {setting: 3}, mentions=setting)]
    parameters = entry.defaults
    cases += [Case("raw='no'", {"raw": "no"}, mentions="raw"), Case("raw=None", {"raw": None}, mentions="raw")]
    cases += [Case(f"batch_size={value!r}", {"batch_size": value}, mentions="batch_size") for value in (1.5, 0, -2, "big")]
    cases.append(Case("batch_size='auto'", {"batch_size": "auto"}, error=None, reference={}))
    cases.append(Case("batch_size=1", {"batch_size": 1}, error=None, reference={}))
    if "seed" in parameters:
        cases += [Case("seed=2.5", {"seed": 2.5}, mentions="seed"), Case("seed='0'", {"seed": "0"}, mentions="seed")]
    if "generator" in parameters:
        cases.append(Case("generator=0", {"generator": 0}, mentions="generator"))
    if "baseline" in parameters:
        cases += [Case("baseline=nan", {"baseline": math.nan}, mentions="baseline"),
                  Case("baseline=inf", {"baseline": math.inf}, mentions="baseline"),
                  Case("baseline of shape (1, 3, 5, 5)", {"baseline": torch.zeros(1, 3, 5, 5)}, mentions="baseline"),
                  Case("baseline='black'", {"baseline": "black"}, mentions="baseline"),
                  Case("baseline=0.0 as a tensor", {"baseline": torch.zeros(1, 3, 1, 1)}, error=None, reference={})]
    if "scales" in parameters:
        cases += [Case("scales=(0, 16)", {"scales": (0, 16)}, mentions="scale"),
                  Case("scales=(16.5,)", {"scales": (16.5,)}, mentions="scale"),
                  Case("scales=()", {"scales": ()}, mentions="scale"),
                  Case("scales='16'", {"scales": "16"}, mentions="scale")]
    if "theta" in parameters:
        cases += [Case("theta=nan", {"theta": math.nan}, mentions="theta"), Case("theta=101", {"theta": 101}, mentions="theta"),
                  Case("theta='70'", {"theta": "70"}, mentions="theta")]
    return cases


def image_cases() -> list[Case]:
    x = images(2, size=16)
    nan, inf = x.clone(), x.clone()
    nan[1, 0, 3, 3], inf[0, 2, 5, 5] = math.nan, math.inf
    return [
        Case("images as a list", {"images": x.tolist()}, mentions="images"),
        Case("images (3, H, W)", {"images": x[0]}, mentions="(B, 3, H, W)"),
        Case("images with 1 channel", {"images": x[:, :1]}, mentions="(B, 3, H, W)"),
        Case("images as an empty batch", {"images": x[:0]}, mentions="empty batch"),
        Case("images of dtype long", {"images": (x * 10).long()}, mentions="floating-point"),
        Case("images with a NaN", {"images": nan}, mentions="NaN"),
        Case("images with an inf", {"images": inf}, mentions="infinite"),
        Case("images float64 for a float32 model", {"images": x.double()}, mentions="float64"),
        Case("images scaled by 3e38 (logits overflow)", {"images": x * 3e38}, mentions="finite"),
    ]


def target_cases() -> list[Case]:
    int_reference = {"targets": 1}
    return [
        Case("target 1.7", {"targets": 1.7}, mentions="integer"),
        Case("target -0.5", {"targets": -0.5}, mentions="integer"),
        Case("target True", {"targets": True}, mentions="integer"),
        Case("target 'cat'", {"targets": "cat"}, mentions="integer"),
        Case("target 7 of 5 classes", {"targets": 7}, mentions="outside"),
        Case("target -1", {"targets": -1}, mentions="outside"),
        Case("one target for two images", {"targets": [0]}, mentions="one class index per image"),
        Case("float tensor targets", {"targets": torch.tensor([1.0, 2.0])}, mentions="integer"),
        Case("bool tensor targets", {"targets": torch.tensor([True, False])}, mentions="integer"),
        Case("numpy float targets", {"targets": np.array([1.0, 2.0])}, mentions="integer"),
        Case("target as a 0-d tensor", {"targets": torch.tensor(1)}, error=None, reference=int_reference),
        Case("target as numpy int64", {"targets": np.int64(1)}, error=None, reference=int_reference),
        Case("targets as a list", {"targets": [1, 1]}, error=None, reference=int_reference),
        Case("targets as a numpy array", {"targets": np.array([1, 1])}, error=None, reference=int_reference),
        Case("targets as a tensor", {"targets": torch.tensor([1, 1])}, error=None, reference=int_reference),
    ]


def layer_cases() -> list[Case]:
    twice = _UsesReluTwice()
    return [
        Case("layer given as its module", {"layer": "module:features.3"}, error=None, reference={}),
        Case("unknown layer", {"layer": "features.30"}, mentions="features.3"),
        Case("layer 3", {"layer": 3}, mentions="layer"),
        Case("layer with a 2-D output (fc)", {"layer": "fc"}, mentions="(B, C, h, w)"),
        Case("layer with a 3-D output", {"layer": "tokens"}, mentions="(B, C, h, w)", model=_Tokens()),
        Case("layer that never runs", {"layer": "unused"}, mentions="did not run", model=twice),
        Case("module used twice in the forward pass", {"layer": "relu"}, mentions="2 times", model=twice),
        Case("module from another model", {"layer": "module:foreign"}, mentions="not part of the model"),
        Case("the whole model as the layer", {"layer": "module:"}, mentions="not part of the model"),
        Case("in-place ReLU right after the layer", {"layer": "features.2"}, error=None, model="inplace-relu",
             reference={"layer": "features.2"}),
    ]


def model_cases(entry) -> list[Case]:
    cases = [
        Case("in-place op on the caller's images", {}, error=None, model="inplace-input", reference={}),
        Case("in-place ReLUs after the layer", {}, error=None, model="inplace-relu", reference={}),
        Case("a model whose logits ignore the image", {}, error=None, model="constant"),
        Case("a model given as a string", {}, mentions="nn.Module", model="resnet18"),
    ]
    if entry.name == "guided_backprop":
        cases.append(Case("ReLU mixed with Hardswish (warns)", {}, error=None, model="hardswish"))
    return cases + [Case("a bfloat16 model and images", {"images": images(2, size=16).bfloat16()}, error=None,
                         model="bfloat16", reference={})]


def cases_for(entry) -> list[Case]:
    cases = image_cases() + target_cases() + setting_cases(entry) + model_cases(entry)
    if not entry.takes_layer:
        return cases
    layers = layer_cases()
    if entry.name in LAYER_IS_ITS_CONVOLUTION:
        for case in layers:
            if case.mentions in ("(B, C, h, w)", "2 times"):
                case.error, case.reference = None, {"layer": "conv_for"}
    return cases + layers


def _model(which):
    if which is None:
        return tiny_cnn()
    if isinstance(which, nn.Module):
        return which
    if which == "inplace-input":
        return _InPlaceInput()
    if which == "inplace-relu":
        return tiny_cnn(inplace=True)
    if which == "constant":
        return _Constant().eval()
    if which == "bfloat16":
        return tiny_cnn().bfloat16()
    if which == "hardswish":
        model = tiny_cnn()
        model.features[1] = nn.Hardswish()
        return model
    return which  # a string: not a model


def _arguments(entry, overrides: dict, model) -> dict:
    kwargs = dict(entry.light)
    if entry.takes_layer:
        kwargs["layer"] = "net.features.3" if isinstance(model, _InPlaceInput) else LAYER
    kwargs.update({k: v for k, v in overrides.items() if k not in ("images", "targets")})
    layer = kwargs.get("layer")
    if isinstance(layer, str) and layer.startswith("module:"):
        named = dict(model.named_modules()) if isinstance(model, nn.Module) else {}
        kwargs["layer"] = nn.ReLU() if layer == "module:foreign" else named.get(layer.removeprefix("module:"))
    return kwargs


def run(entry, case: Case) -> str:
    """The bin of one case: ``clear``, ``unclear`` or ``wrong`` (with the reason after a colon)."""
    model = _model(case.model)
    x = case.overrides.get("images", images(2, size=16))
    given = x.clone() if isinstance(x, torch.Tensor) else None
    targets = case.overrides.get("targets")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            maps = entry.function(model, x, targets, **_arguments(entry, case.overrides, model))
    except Exception as error:  # noqa: BLE001: sorting every error into its bin is the point
        frame = traceback.extract_tb(error.__traceback__)[-1]
        ours = frame.filename.startswith(LIB)
        if case.error is None:
            return f"wrong: a valid input raised {type(error).__name__}: {error}"
        if isinstance(error, case.error) and ours and case.mentions.lower() in str(error).lower():
            return "clear"
        return f"unclear: {type(error).__name__} at {Path(frame.filename).name}:{frame.lineno}: {error}"
    if isinstance(model, nn.Module) and not no_hooks_left(model):
        return "wrong: a hook was left on the model"
    if case.error is not None:
        return "wrong: no error"
    if given is not None and not torch.equal(x, given):
        return "wrong: the caller's images were changed"
    if not (isinstance(maps, torch.Tensor) and maps.shape == (2, 16, 16) and torch.isfinite(maps).all()
            and maps.min() >= 0 and maps.max() <= 1):
        return f"wrong: maps are not finite (2, 16, 16) in [0, 1]: {getattr(maps, 'shape', maps)}"
    if case.model == "hardswish":
        return "clear" if any("Hardswish" in str(w.message) for w in caught) else "wrong: no warning about Hardswish"
    if case.model == "constant":
        if entry.name in NOT_ZERO_ON_A_CONSTANT_MODEL:
            return "clear"
        return "clear" if maps.abs().max() == 0 else f"wrong: a constant model gives a map with max {maps.max():.3g}"
    if case.model == "bfloat16":  # within bfloat16's precision of the float32 map
        expected = entry.function(tiny_cnn(), images(2, size=16), None, **_arguments(entry, {}, model))
        if maps.abs().max() == 0 and expected.abs().max() == 0:
            return "clear"
        close = _pearson(maps.float(), expected)
        return "clear" if close > 0.9 else f"wrong: the bfloat16 map correlates {close:.3f} with the float32 map"
    reference_model = {"inplace-input": _InPlaceInput(inplace=False), "inplace-relu": tiny_cnn()}.get(case.model, model)
    reference_overrides = dict(case.reference or {})
    if reference_overrides.get("layer") == "conv_for":
        reference_overrides["layer"] = conv_for(model, case.overrides["layer"])[0]
        reference_model = model
    expected = entry.function(reference_model, images(2, size=16), reference_overrides.get("targets"),
                              **_arguments(entry, reference_overrides, reference_model))
    if not torch.allclose(maps, expected, atol=1e-5):
        return f"wrong: the map differs from the plain input's by {(maps - expected).abs().max():.3g}"
    return "clear"


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_every_bad_input_gets_one_clear_error_and_no_result_is_silently_wrong(name):
    entry = registry.get(name)
    results = {case.what: run(entry, case) for case in cases_for(entry)}
    tally = Counter(result.split(":")[0] for result in results.values())
    TALLY[name] = tally
    _write_report()
    problems = {what: result for what, result in results.items() if result != "clear"}
    assert not problems, f"{name}: {len(problems)} of {len(results)} inputs not handled:\n" + "\n".join(
        f"  {what}: {result}" for what, result in problems.items())


def _write_report() -> None:
    total = sum(TALLY.values(), Counter())
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps({"methods": len(TALLY), "inputs": sum(total.values()), **total,
                                  "per_method": {name: dict(t) for name, t in sorted(TALLY.items())}}, indent=1) + "\n")


@pytest.mark.parametrize("size", [15, 150, 300])
@pytest.mark.parametrize("name", sorted(set(registry.REGISTRY) - NOT_ZERO_ON_A_CONSTANT_MODEL))
def test_a_model_that_ignores_the_image_gives_zero_maps_at_every_size(name, size):
    """Resizing a constant raw map leaves rounding noise that min-max normalisation must not stretch
    to [0, 1] (at 150 and 300 px Lite0's constant layer-gradient map came back with max 1.0).
    The methods of NOT_ZERO_ON_A_CONSTANT_MODEL are left out."""
    entry = registry.get(name)
    kwargs = dict(entry.light, **({"layer": LAYER} if entry.takes_layer else {}))
    maps = entry.function(_Constant().eval(), images(2, size=size), None, **kwargs)
    assert maps.shape == (2, size, size) and maps.abs().max() == 0


def test_guided_backprop_warns_about_unguided_activations_only():
    """ReLU6 is a subclass of Hardtanh: it is guided and must not be reported as unguided."""
    relu6 = tiny_cnn()
    relu6.features[1] = nn.ReLU6()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        registry.get("guided_backprop").function(relu6, images(1, size=16))
    relu6.features[3] = nn.Hardtanh()
    with pytest.warns(UserWarning, match="its Hardtanh activations pass the plain gradient"):
        registry.get("guided_backprop").function(relu6, images(1, size=16))


class _FewerRows(nn.Module):
    """Returns logits for the first image only, whatever the batch."""

    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        return self.net(x)[:1]


class _IntegerLogits(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = tiny_cnn()

    def forward(self, x):
        return (self.net(x) * 100).long()


def _raises(call, error, mentions):
    with pytest.raises(error) as caught:
        call()
    assert mentions.lower() in str(caught.value).lower(), str(caught.value)
    assert traceback.extract_tb(caught.value.__traceback__)[-1].filename.startswith(LIB)


def test_what_a_second_probe_found_gets_a_clear_error_or_the_right_result():
    """A reviewer's probe of the first fixes: each case failed before this test was written."""
    from lib.metrics.density import relative_difference
    from lib.saliency import passes
    from lib.saliency.group_masking import gaussian_kernel

    gradient, smoothgrad, rise, cameras = (registry.get(n).function for n in ("gradient", "smoothgrad", "rise", "cameras"))
    model, x = tiny_cnn(), images(3, size=16)
    # a finite map whose span overflows the dtype: normalised, not NaN
    assert torch.equal(passes.normalise_maps(torch.tensor([[-3e38, 0.0, 3e38]])), torch.tensor([[0.0, 0.5, 1.0]]))
    _raises(lambda: smoothgrad(model, x, torch.tensor([1j, 0j, 0j]), n_samples=2), TypeError, "integer")
    _raises(lambda: smoothgrad(model, x, {1: 2}, n_samples=2), TypeError, "integer class indices")
    _raises(lambda: gradient(model, x, 2**70), ValueError, "outside")
    assert torch.equal(smoothgrad(model, x, np.array(1), n_samples=2), smoothgrad(model, x, 1, n_samples=2))
    assert torch.equal(smoothgrad(model, x, 1, n_samples=2, seed=np.int64(3)), smoothgrad(model, x, 1, n_samples=2, seed=3))
    _raises(lambda: rise(model, x, 1, n_masks=torch.tensor(True)), TypeError, "n_masks")
    _raises(lambda: passes.check_real(torch.tensor(True), "noise_level"), TypeError, "noise_level")
    _raises(lambda: passes.check_real(10**400, "noise_level"), ValueError, "noise_level")
    _raises(lambda: cameras(model, x, 1, layer=LAYER, scales=iter([16, 24])), TypeError, "sequence")
    _raises(lambda: gradient(model, torch.zeros(2, 3, 16, 0)), ValueError, "no pixels")
    _raises(lambda: gradient(_FewerRows(), x, 1), ValueError, "one row per image")
    _raises(lambda: gradient(_IntegerLogits(), x, 1), TypeError, "floating-point logits")
    _raises(lambda: passes.finish(torch.rand(3, 4, 4), x[:2], False), ValueError, "one map per image")
    _raises(lambda: passes.layer_passes(model, x, 1, ["features.3"], score=lambda logits, t: logits[:, 0] * math.nan),
            ValueError, "finite")
    _raises(lambda: gaussian_kernel(5, 1e-200), ValueError, "blur_sigma")
    assert torch.allclose(relative_difference(torch.tensor([[[2]]]), torch.tensor([[[1]]])), torch.tensor([2 / 3]))


@pytest.mark.parametrize("arguments", [["--layer", ""], ["--target", "9" * 5000], ["--out", "x" * 300 + ".png"]])
def test_the_cli_refuses_what_a_second_probe_found_in_one_line(tmp_path, capsys, arguments):
    from PIL import Image

    from lib.__main__ import main

    picture = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (120, 30, 200)).save(picture)
    given = dict(zip(arguments[::2], arguments[1::2]))
    out = given.pop("--out", str(tmp_path / "m.png"))
    extra = [item for pair in given.items() for item in pair]
    assert main(["explain", str(picture), "--method", "gradcam", *extra, "--out", out]) == 2
    error = capsys.readouterr().err.strip()
    assert error and "\n" not in error and "Traceback" not in error
