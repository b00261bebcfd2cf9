"""The methods on a CUDA device: the CPU's maps, a peer's maps, no hook left and the model unchanged.

Every registered method (:mod:`lib.saliency.registry`) runs with its light settings on the tiny
network of ``tests/_tiny.py``, once on the CPU and once on CUDA; the device changes only the
rounding, so each CUDA map must equal the CPU's within 1e-4 or correlate with it at Pearson
>= 0.999.  SmoothGrad's noise and RISE's masks are drawn on the images' device
(:func:`lib.saliency.passes.check_randomness`), so CUDA draws other numbers than the CPU: their
CUDA maps are checked against Eq. 2 and Eq. 6 computed on the CPU from the same CUDA draws.
TF32 is off in these tests: with it, CUDA convolutions round their inputs to 10-bit mantissas
and the comparison would measure TF32, not the methods.

Every test is marked ``cuda`` and skipped, saying "no CUDA device", where
``torch.cuda.is_available()`` is False.
"""

import copy
import gc
import inspect

import numpy as np
import pytest
import torch

from _tiny import images, no_hooks_left, pearson, tiny_cnn
import lib.saliency as saliency
from lib import data, models
from lib.metrics import instances, pointing
from lib.metrics.adversarial_sanity import cleaning_curve
from lib.metrics.insertion_deletion import insertion_deletion
from lib.saliency import combine, probe, registry
from lib.saliency.perturbation import rise_masks

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]

LAYER = "features.3"  # the tiny network's last ReLU, for every method that takes a layer
CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def full_float32():
    """IEEE float32 convolutions and matrix products on CUDA (no TF32), restored after the test."""
    convolutions, products = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = convolutions, products


def draws_on_the_device(name: str) -> bool:
    """The method draws random numbers on the images' device (it takes a ``generator``)."""
    return "generator" in inspect.signature(registry.get(name).function).parameters


def light(name: str, **extra) -> dict:
    """The method's light settings, at LAYER if it takes a layer (as tests/test_reliability.py)."""
    entry = registry.get(name)
    kwargs = dict(entry.light)
    if entry.takes_layer:
        kwargs["layer"] = LAYER
    return kwargs | extra


def on_cuda(model):
    return copy.deepcopy(model).to(CUDA)


def assert_same_maps(on_gpu: torch.Tensor, on_cpu: torch.Tensor, what: str) -> None:
    assert on_gpu.device.type == "cuda", f"{what}: the maps came back on {on_gpu.device}, not on the images' device"
    on_gpu = on_gpu.cpu()
    assert on_gpu.shape == on_cpu.shape and on_gpu.dtype == on_cpu.dtype
    gap = float((on_gpu - on_cpu).abs().max())
    correlations = [pearson(a, b) for a, b in zip(on_gpu, on_cpu)]
    assert gap <= 1e-4 or min(correlations) >= 0.999, f"{what}: max |CUDA - CPU| {gap:.2e}, Pearson {correlations}"


DETERMINISTIC = sorted(name for name in registry.REGISTRY if not draws_on_the_device(name))


@pytest.mark.parametrize("name", DETERMINISTIC)
def test_each_method_gives_the_cpu_maps_on_cuda(name):
    model, x, targets = tiny_cnn(), images(2, size=16), torch.tensor([1, 3])
    on_cpu = registry.get(name).function(model, x, targets, **light(name))
    on_gpu = registry.get(name).function(on_cuda(model), x.to(CUDA), targets.to(CUDA), **light(name))
    assert_same_maps(on_gpu, on_cpu, name)


def test_the_methods_with_randomness_are_all_checked_by_their_equation():
    assert sorted(set(registry.REGISTRY) - set(DETERMINISTIC)) == ["rise", "smoothgrad"]


def test_smoothgrad_on_cuda_is_eq_2_over_its_cuda_noise():
    # Eq. 2 by hand on the CPU: the mean input gradient of x + sigma * noise, with the noise the CUDA
    # generator seeded with `seed` draws (the same draws for every image), then max |.| over channels.
    model, x, targets = tiny_cnn(), images(2, size=16), torch.tensor([1, 3])
    n, level, seed = 4, 0.15, 7
    on_gpu = saliency.smoothgrad(on_cuda(model), x.to(CUDA), targets.to(CUDA), n_samples=n, noise_level=level, seed=seed, raw=True)
    noise = torch.randn((n, *x.shape[1:]), generator=torch.Generator(device=CUDA).manual_seed(seed), device=CUDA).cpu()
    expected = []
    for image, target in zip(x, targets):
        noisy = (image + level * (image.max() - image.min()) * noise).requires_grad_(True)
        model(noisy)[:, int(target)].sum().backward()
        expected.append(noisy.grad.mean(dim=0).abs().amax(dim=0))
    expected = torch.stack(expected)
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), expected, rtol=1e-4, atol=1e-6 * float(expected.abs().max()))


def test_rise_on_cuda_is_eq_6_over_its_cuda_masks():
    # Eq. 6 by hand on the CPU: S = sum_i p_c(I * M_i) M_i / (N p), with the masks the CUDA generator
    # seeded with `seed` gives rise_masks (the draws rise makes for its masks).
    model, x, targets = tiny_cnn(), images(2, size=16), torch.tensor([1, 3])
    n, cells, keep, seed = 16, 4, 0.5, 3
    on_gpu = saliency.rise(on_cuda(model), x.to(CUDA), targets.to(CUDA), n_masks=n, cells=cells, keep_probability=keep,
                           seed=seed, raw=True)
    masks = rise_masks(n, (16, 16), cells=cells, keep_probability=keep,
                       generator=torch.Generator(device=CUDA).manual_seed(seed), device=CUDA).cpu()
    with torch.no_grad():
        expected = torch.stack([torch.einsum("n,nhw->hw", model(image * masks[:, None]).softmax(dim=1)[:, int(target)], masks)
                                for image, target in zip(x, targets)]) / (n * keep)
    assert on_gpu.device.type == "cuda"
    assert torch.allclose(on_gpu.cpu(), expected, rtol=1e-5, atol=1e-6)


def test_gradcam_on_cuda_agrees_with_pytorch_grad_cam_on_cuda():
    pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model, x, targets = on_cuda(tiny_cnn()), images(3, size=32).to(CUDA), [0, 3, 4]
    ours = saliency.gradcam(model, x, torch.tensor(targets, device=CUDA), layer=LAYER)
    with pytorch_grad_cam.GradCAM(model=model, target_layers=[model.features[3]]) as cam:
        theirs = torch.from_numpy(np.asarray(cam(input_tensor=x.clone(), targets=[ClassifierOutputTarget(t) for t in targets])))
    assert ours.device.type == "cuda" and ours.shape == theirs.shape == (3, 32, 32)
    for a, b in zip(ours.cpu(), theirs):
        assert pearson(a, b) >= 0.99


@pytest.mark.parametrize("name", sorted(registry.REGISTRY))
def test_on_cuda_no_hook_is_left_the_model_is_unchanged_and_memory_stays_flat(name):
    model, x = on_cuda(tiny_cnn()), images(2, size=16).to(CUDA)
    model.fc.bias.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [p.requires_grad for p in model.parameters()]
    for _ in range(2):  # whatever a first call allocates for good (cuBLAS workspaces) is allocated by now
        registry.get(name).function(model, x, None, **light(name))
    gc.collect()
    torch.cuda.synchronize()
    baseline = torch.cuda.memory_allocated()
    for _ in range(20):
        maps = registry.get(name).function(model, x, None, **light(name))
    del maps
    gc.collect()
    torch.cuda.synchronize()
    assert torch.cuda.memory_allocated() - baseline <= 4096, "CUDA memory grows from call to call"
    assert no_hooks_left(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(p.device.type == "cuda" for p in model.parameters()) and not model.training


def test_the_metrics_take_cuda_maps_and_give_the_cpu_numbers():
    # Each metric that meets a map with tensors of its own (pixel counts, box masks, class weights, a
    # probe's labels) gives on CUDA inputs what it gives on the CPU ones.
    model, x = tiny_cnn(), images(2, size=16)
    pixels = (x - x.min()) / (x.max() - x.min())
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(0))
    gpu_model, gpu_pixels, gpu_maps = on_cuda(model), pixels.to(CUDA), maps.to(CUDA)

    cleaned = [cleaning_curve(m, p, p.flip(-1), s, fraction=0.5, steps=4) for m, p, s in
               ((model, pixels, maps), (gpu_model, gpu_pixels, gpu_maps))]
    assert torch.allclose(cleaned[1].score().cpu(), cleaned[0].score(), atol=1e-5)
    curves = [insertion_deletion(m, p, s, step=64) for m, p, s in ((model, pixels, maps), (gpu_model, gpu_pixels, gpu_maps))]
    assert torch.allclose(curves[1].overall.cpu(), curves[0].overall, atol=1e-5)

    boxes = torch.tensor([[0.0, 0.0, 5.0, 5.0], [8.0, 8.0, 15.0, 12.0]])
    for score in (instances.weakest_instance_peak, instances.outside_share):
        assert score(gpu_maps[0], boxes, (16, 16)) == pytest.approx(score(maps[0], boxes, (16, 16)), abs=1e-6)

    hits, labels = torch.tensor([True, False, True, True]), torch.tensor([0, 0, 1, 2])
    assert float(pointing.class_mean_accuracy(hits.to(CUDA), labels.to(CUDA))) == pytest.approx(2.5 / 3)
    result = pointing.PointingResult.from_hits(hits.to(CUDA), labels.to(CUDA), torch.zeros(4, dtype=torch.bool, device=CUDA),
                                               torch.zeros(4, 2, device=CUDA))
    assert result.accuracy == pytest.approx(2.5 / 3) and torch.allclose(result.class_weights().cpu(), torch.tensor(
        [1 / 6, 1 / 6, 1 / 3, 1 / 3], dtype=torch.float64))
    assert combine.best_candidate({"a": hits.double().to(CUDA), "b": (~hits).double().to(CUDA)},
                                  result.class_weights(), ["b", "a"]) == "a"

    features = torch.randn(12, 5, generator=torch.Generator().manual_seed(1))
    classes = torch.arange(12) % 3
    assert probe.probe_accuracy(features.to(CUDA), classes.to(CUDA), features.to(CUDA), classes) == \
        probe.probe_accuracy(features, classes, features, classes)  # fit on the CPU either way: the same probe


def test_a_classifier_loaded_on_cuda_gives_the_cpu_maps():
    # lib.models.load(device="cuda"): the network, its channels-last weights and the maps on the GPU.
    on_cpu, on_gpu = models.load("efficientnet_lite0"), models.load("efficientnet_lite0", device="cuda")
    assert on_gpu.device == models.resolve_device("cuda") == models.resolve_device("auto")
    sample = data.embedded()[:1]
    x = data.batch(sample, on_cpu.preprocess, on_cpu.input_size, on_cpu.crop_fraction).images
    with torch.no_grad():
        logits_cpu, logits_gpu = on_cpu(x), on_gpu(x.to(on_gpu.device))
    assert torch.allclose(logits_gpu.cpu(), logits_cpu, rtol=1e-4, atol=1e-4)
    target = logits_cpu.argmax(dim=1)
    assert_same_maps(saliency.gradcam(on_gpu, x.to(on_gpu.device), target.to(on_gpu.device)),
                     saliency.gradcam(on_cpu, x, target), "gradcam on EfficientNet-Lite0")
