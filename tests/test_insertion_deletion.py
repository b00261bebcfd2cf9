"""Insertion and deletion (Petsiuk et al. 2018): batched curves, the reference loop, hand-made AUCs."""

import math

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
from lib.metrics.insertion_deletion import (
    auc,
    causal_curves,
    causal_curves_reference,
    insertion_deletion,
    salient_order,
)


class Revealed(nn.Module):
    """p(class 0) = mean of channel 0 over a region (all pixels by default), clamped to (0, 1).

    On images of ones with a zeros substrate this is the fraction of the region's pixels
    that are present, so insertion and deletion curves can be written down by hand.
    """

    def __init__(self, region: torch.Tensor | None = None):
        super().__init__()
        self.region = region

    def forward(self, x):
        channel = x[:, 0]
        if self.region is None:
            f = channel.mean(dim=(1, 2))
        else:
            f = (channel * self.region).sum(dim=(1, 2)) / self.region.sum()
        f = f.clamp(1e-7, 1 - 1e-7)
        return torch.stack([f.log(), (1 - f).log()], dim=1)


def test_auc_is_the_trapezoid_on_the_unit_interval():
    assert float(auc(torch.tensor([0.0, 1.0]))) == 0.5
    assert torch.allclose(auc(torch.full((3, 11), 0.3)), torch.full((3,), 0.3))
    assert math.isclose(float(auc(torch.tensor([1.0, 0.0, 0.0, 0.0]))), 1 / 6, rel_tol=1e-6)
    with pytest.raises(ValueError):
        auc(torch.tensor([1.0]))


def test_probability_linear_in_revealed_pixels():
    model, x = Revealed().eval(), torch.ones(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0))
    # step 8 divides the 64 pixels: p_i = i / 8, both AUCs 1/2
    result = insertion_deletion(model, x, maps, 0, step=8, insertion_substrate="zeros", deletion_substrate="zeros")
    assert torch.allclose(result.insertion, torch.arange(9.0).expand(2, -1) / 8, atol=1e-6)
    assert torch.allclose(result.deletion, 1 - torch.arange(9.0).expand(2, -1) / 8, atol=1e-6)
    assert torch.allclose(result.insertion_auc, torch.full((2,), 0.5), atol=1e-6)
    assert torch.allclose(result.overall, torch.zeros(2), atol=1e-6)
    # step 10 does not: 7 steps, the last partial; p = (0, 10, ..., 60, 64) / 64
    result = insertion_deletion(model, x, maps, 0, step=10, insertion_substrate="zeros", deletion_substrate="zeros")
    p = torch.tensor([0, 10, 20, 30, 40, 50, 60, 64.0]) / 64
    assert torch.allclose(result.insertion[0], p, atol=1e-6)
    assert torch.allclose(result.insertion_auc[0], (p.sum() - p[0] / 2 - p[-1] / 2) / 7, atol=1e-6)
    assert torch.allclose(result.fractions, p)


def test_a_map_that_ranks_the_evidence_first_scores_seven_eighths():
    region = torch.zeros(8, 8)
    region[2:6, 2:6] = 1  # 16 of 64 pixels carry the class
    model, x = Revealed(region).eval(), torch.ones(1, 3, 8, 8)
    good = (region + 0.01 * torch.rand(8, 8, generator=torch.Generator().manual_seed(1)))[None]
    bad = 1 - good
    zeros = dict(step=8, insertion_substrate="zeros", deletion_substrate="zeros")
    # insertion, region first: p = (0, .5, 1, ..., 1): AUC = (0.5 + 7 - 0.5) / 8 = 7/8
    right = insertion_deletion(model, x, good, 0, **zeros)
    assert torch.allclose(right.insertion[0], torch.tensor([0, 0.5, 1, 1, 1, 1, 1, 1, 1]), atol=1e-6)
    assert torch.allclose(right.insertion_auc, torch.tensor([7 / 8]), atol=1e-6)
    assert torch.allclose(right.deletion_auc, torch.tensor([1 / 8]), atol=1e-6)
    assert torch.allclose(right.overall, torch.tensor([0.75]), atol=1e-6)
    # region last: the mirror image
    wrong = insertion_deletion(model, x, bad, 0, **zeros)
    assert torch.allclose(wrong.insertion_auc, torch.tensor([1 / 8]), atol=1e-6)
    assert torch.allclose(wrong.overall, torch.tensor([-0.75]), atol=1e-6)


@pytest.mark.parametrize("mode", ["insertion", "deletion"])
@pytest.mark.parametrize("kind,step,batch_size", [("blur", 16, 7), ("zeros", 24, None), ("blur", 256, 1)])
def test_batched_curves_equal_the_one_by_one_reference_loop(mode, kind, step, batch_size):
    model, x = tiny_cnn(), images(3, size=16)
    maps = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(2))
    maps[0, :4] = 0.5  # ties: broken by pixel index in both
    targets = torch.tensor([0, 2, 4])
    kwargs = dict(mode=mode, step=step, substrate_kind=kind, blur_kernel=7, blur_sigma=2.0)
    batched = causal_curves(model, x, maps, targets, batch_size=batch_size, **kwargs)
    reference = causal_curves_reference(model, x, maps, targets, **kwargs)
    assert batched.shape == (3, math.ceil(256 / step) + 1)
    assert torch.allclose(batched, reference, atol=1e-6)
    assert no_hooks_left(model)


def test_ends_of_the_curves_are_the_image_and_the_substrate():
    model, x = tiny_cnn(), images(2, size=16)
    maps = torch.rand(2, 16, 16, generator=torch.Generator().manual_seed(3))
    result = insertion_deletion(model, x, maps, step=50, blur_kernel=7, blur_sigma=2.0)
    with torch.no_grad():
        logits = model(x)
        p_image = logits.softmax(1).gather(1, logits.argmax(1, keepdim=True)).squeeze(1)
    assert torch.equal(result.targets, logits.argmax(1))  # None: the top-1 class
    assert torch.allclose(result.deletion[:, 0], p_image, atol=1e-6)
    assert torch.allclose(result.insertion[:, -1], p_image, atol=1e-6)
    assert torch.allclose(result.insertion[:, 0], result.deletion[:, -1], atol=1e-6)  # both the blurred image


def test_salient_order_and_checks():
    maps = torch.tensor([[[0.1, 0.9], [0.5, 0.9]]])
    assert salient_order(maps).tolist() == [[1, 3, 2, 0]]
    model, x = tiny_cnn(), images(1, size=16)
    with pytest.raises(ValueError, match="maps must have shape"):
        causal_curves(model, x, torch.rand(1, 8, 8))
    with pytest.raises(ValueError, match="step"):
        causal_curves(model, x, torch.rand(1, 16, 16), step=0)
    with pytest.raises(ValueError, match="substrate"):
        causal_curves(model, x, torch.rand(1, 16, 16), substrate_kind="noise")
    with pytest.raises(ValueError, match="mode"):
        causal_curves(model, x, torch.rand(1, 16, 16), mode="both")


def test_fractions_end_at_one_when_the_step_does_not_divide_the_pixels():
    model, x = tiny_cnn(), images(1, size=16)
    result = insertion_deletion(model, x, torch.rand(1, 16, 16), step=24, blur_kernel=7, blur_sigma=2.0)
    expected = torch.tensor([min(24 * i, 256) / 256 for i in range(math.ceil(256 / 24) + 1)])
    assert result.insertion.shape == (1, 12) and torch.allclose(result.fractions, expected)


def test_an_image_scores_the_same_alone_or_in_a_batch():
    # The chapter scores subsets of its images (ablations, expensive methods) and compares them
    # per image with the full batch: an image's curves must not depend on its batch-mates.
    model, x = tiny_cnn(), images(4, size=16)
    maps = torch.rand(4, 16, 16, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 0, 3, 2])
    together = insertion_deletion(model, x, maps, targets, step=32, blur_kernel=7, blur_sigma=2.0, batch_size=3)
    alone = insertion_deletion(model, x[2:3], maps[2:3], targets[2:3], step=32, blur_kernel=7, blur_sigma=2.0, batch_size=1)
    assert torch.allclose(together.insertion[2:3], alone.insertion, atol=1e-6)
    assert torch.allclose(together.deletion[2:3], alone.deletion, atol=1e-6)
    assert torch.allclose(together.overall[2:3], alone.overall, atol=1e-6)


class Counting(nn.Module):
    """A model that counts its forward passes (to show an argument is refused before any)."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


@pytest.mark.parametrize("bad,what", [(float("nan"), "1 NaN value"), (float("inf"), "1 infinite value")])
def test_non_finite_maps_are_refused_naming_the_image(bad, what):
    # A NaN sorted as the most salient pixel (argsort puts NaN first): curves were returned for it.
    model, x = Revealed().eval(), torch.ones(3, 3, 8, 8)
    maps = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(6))
    maps[1, 2, 5] = bad
    zeros = dict(step=8, insertion_substrate="zeros", deletion_substrate="zeros")
    message = rf"insertion_deletion: maps contain NaN or infinite values \(image 1 has {what}\); a saliency map must be finite"
    with pytest.raises(ValueError, match=message):
        insertion_deletion(model, x, maps, 0, **zeros)
    for curves in (causal_curves, causal_curves_reference):
        with pytest.raises(ValueError, match=rf"{curves.__name__}: maps contain NaN or infinite values \(image 1"):
            curves(model, x, maps, 0, step=8, substrate_kind="zeros")
    with pytest.raises(ValueError, match=r"salient_order: maps contain NaN or infinite values \(image 1"):
        salient_order(maps)


def test_signed_maps_are_accepted_only_the_order_counts():
    model, x = Revealed().eval(), torch.ones(2, 3, 8, 8)
    maps = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(7))
    zeros = dict(step=8, insertion_substrate="zeros", deletion_substrate="zeros")
    positive = insertion_deletion(model, x, maps, 0, **zeros)
    signed = insertion_deletion(model, x, 10 * maps - 5, 0, **zeros)  # negative values, the same order
    assert torch.equal(positive.insertion, signed.insertion) and torch.equal(positive.deletion, signed.deletion)


def test_auc_refuses_non_finite_curves_and_non_tensors():
    with pytest.raises(ValueError, match=r"auc: curves contain NaN or infinite values \(curve 1 has 1 NaN value\)"):
        auc(torch.tensor([[0.0, 1.0], [0.5, float("nan")]]))  # was a NaN area
    with pytest.raises(TypeError, match=r"auc: curves must be a torch.Tensor"):
        auc([0.0, 1.0])  # was an AttributeError
    with pytest.raises(ValueError, match="at least two points"):
        auc(torch.tensor(1.0))


def test_step_blur_and_batch_size_are_checked_before_any_pass():
    model, x = Counting(tiny_cnn()).eval(), images(1, size=16)
    maps = torch.rand(1, 16, 16, generator=torch.Generator().manual_seed(8))
    blur = dict(blur_kernel=7, blur_sigma=2.0)
    cases = [
        (TypeError, r"step \(pixels per step\) must be an integer >= 1, got bool True", dict(step=True, **blur)),  # was step 1
        (TypeError, r"step \(pixels per step\) must be an integer >= 1, got float 8.0", dict(step=8.0, **blur)),
        (ValueError, "step must be a positive number of pixels, got -8", dict(step=-8, **blur)),
        (ValueError, r"blur_sigma must be a finite number > 0, got nan", dict(step=64, blur_kernel=7,
                                                                                       blur_sigma=float("nan"))),
        (ValueError, r"blur_kernel must be a positive odd integer \(pixels\), got 4", dict(step=64, blur_kernel=4)),
        (TypeError, r"blur_kernel must be an integer >= 1, got float 7.0", dict(step=64, blur_kernel=7.0)),
        (TypeError, "batch_size must be a positive integer", dict(step=64, batch_size=2.5, **blur)),
        (ValueError, "unknown substrate 'noise'", dict(step=64, deletion_substrate="noise")),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            insertion_deletion(model, x, maps, 0, **kwargs)
    with pytest.raises(ValueError, match="unknown substrate 'noise'"):  # was refused after the targets' pass
        causal_curves(model, x, maps, substrate_kind="noise")
    with pytest.raises(ValueError, match=r"blur_sigma must be a finite number > 0, got nan"):
        causal_curves(model, x, maps, step=64, blur_kernel=7, blur_sigma=float("nan"))  # was NaN curves
    with pytest.raises(TypeError, match=r"causal_curves: maps must be a torch.Tensor \(B, H, W\)"):
        causal_curves(model, x, maps.tolist())  # was a ValueError about its shape
    assert model.calls == 0
    # A NumPy integer is a whole number of pixels; the zeros substrate needs no blur settings.
    import numpy as np

    result = insertion_deletion(model, x, maps, 0, step=np.int64(64), insertion_substrate="zeros",
                                deletion_substrate="zeros", blur_sigma=float("nan"))
    assert result.step == 64 and type(result.step) is int and result.insertion.shape == (1, 5)
