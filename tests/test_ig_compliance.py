"""Integrated Gradients' compliance checks: completeness (Sundararajan et al. 2017, Prop. 1),
the baselines of Sturmfels et al. (Distill 2020) and the average over baselines."""

import copy
import warnings

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from _tiny import images, no_hooks_left, tiny_cnn
import lib.saliency as saliency
from lib.models import Classifier
from lib.saliency.gradients import (BLUR_SIGMA, CompletenessWarning, averaged_baseline_ig, completeness_error,
                                    gaussian_blur, ig_baseline, integrated_gradients)

TARGETS = torch.tensor([0, 3, 4])
MEAN, STD = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])


def _linear(classes=5, size=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * size * size, classes)).eval()


def _classifier():
    return Classifier(model=tiny_cnn(), name="tiny", input_size=16, mean=MEAN.clone(), std=STD.clone(),
                      categories=[f"class {c}" for c in range(5)])


def _by_hand(model, x, reference, targets, attributions):
    with torch.no_grad():
        gap = (model(x) - model(reference)).gather(1, targets.view(-1, 1)).squeeze(1).double()
    return (attributions.double().sum(dim=(1, 2, 3)) - gap).abs() / gap.abs()


def test_completeness_is_exact_on_a_linear_model_at_two_steps():
    # The gradient of a linear score is constant along the path: the trapezoid with 2 points is exact
    # (in float64, so that rounding does not hide it).
    model, x = _linear().double(), images(3, size=8).double()
    reference = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    maps, errors = integrated_gradients(model, x, TARGETS, baseline=reference, steps=2, return_completeness=True)
    assert maps.shape == (3, 8, 8)
    assert (errors < 1e-12).all(), errors
    attributions = integrated_gradients(model, x, TARGETS, baseline=reference, steps=2, aggregate=None, raw=True)
    assert (completeness_error(model, x, attributions, reference, TARGETS) < 1e-12).all()
    # A nonlinear model is not integrated exactly by 2 points: the check can fail.
    _, cnn_errors = integrated_gradients(tiny_cnn().double(), images(3, size=16).double(), TARGETS, steps=2,
                                         return_completeness=True)
    assert (cnn_errors > 0.05).all(), cnn_errors


def test_on_a_cnn_the_error_is_the_formula_and_falls_with_the_steps():
    model, x = tiny_cnn(), images(3, size=16)
    before = copy.deepcopy(model.state_dict())
    errors = {}
    for steps in (4, 64):
        attributions = integrated_gradients(model, x, TARGETS, steps=steps, aggregate=None, raw=True)
        maps, errors[steps] = integrated_gradients(model, x, TARGETS, steps=steps, return_completeness=True)
        hand = _by_hand(model, x, torch.zeros_like(x), TARGETS, attributions)
        assert torch.allclose(errors[steps], hand, rtol=1e-4, atol=1e-7)
        assert torch.allclose(completeness_error(model, x, attributions, 0.0, TARGETS), hand, rtol=1e-4, atol=1e-7)
        # The option leaves the maps as they were: the defaults and the parity tests see no change.
        assert torch.equal(maps, integrated_gradients(model, x, TARGETS, steps=steps))
    assert (errors[64] < errors[4] / 10).all(), errors
    assert (errors[4] > 0.01).all() and (errors[64] < 0.01).all()
    assert no_hooks_left(model) and all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_completeness_error_uses_the_predicted_class_when_no_target_is_given():
    model, x = tiny_cnn(), images(3, size=16)
    predicted = model(x).argmax(1)
    attributions = integrated_gradients(model, x, steps=8, aggregate=None, raw=True)
    assert torch.allclose(completeness_error(model, x, attributions),
                          _by_hand(model, x, torch.zeros_like(x), predicted, attributions), rtol=1e-4, atol=1e-7)


def test_the_warning_names_the_images_above_the_tolerance_and_only_them():
    model, x = tiny_cnn(), images(3, size=16)
    _, errors = integrated_gradients(model, x, TARGETS, steps=4, return_completeness=True)
    low, middle, high = errors.sort().values.tolist()
    tolerance = (low + middle) / 2
    with pytest.warns(CompletenessWarning) as record:
        integrated_gradients(model, x, TARGETS, steps=4, completeness_tolerance=tolerance)
    assert len(record) == 1
    message = str(record[0].message)
    above = sorted(i for i in range(3) if errors[i] > tolerance)
    assert f"for {len(above)} of 3 images" in message and "raise steps (now 4)" in message
    for i in range(3):
        assert (f"image {i}:" in message) == (i in above), message
    assert issubclass(CompletenessWarning, UserWarning) and saliency.CompletenessWarning is CompletenessWarning
    with warnings.catch_warnings():
        warnings.simplefilter("error", CompletenessWarning)
        integrated_gradients(model, x, TARGETS, steps=4, completeness_tolerance=high * 1.01)
        integrated_gradients(model, x, TARGETS, steps=4)  # no tolerance: no check


def test_the_black_baseline_is_exactly_pixel_zero_normalised():
    classifier, x = _classifier(), images(2, size=16)
    black = ig_baseline(x, "black", classifier=classifier)
    assert black.shape == x.shape and torch.equal(black, classifier.normalize(torch.zeros_like(x)))
    assert torch.equal(ig_baseline(x, "black", mean=MEAN, std=STD), black)
    assert torch.equal(ig_baseline(x, "black", mean=MEAN.tolist(), std=tuple(STD.tolist())), black)
    assert torch.equal(ig_baseline(x, "mean"), torch.zeros_like(x))
    assert torch.allclose(classifier.denormalize(ig_baseline(x, "mean", classifier=classifier)),
                          MEAN.view(1, 3, 1, 1).expand_as(x))


def test_the_blurred_baseline_is_scipys_gaussian_filter_and_keeps_a_constant_image():
    x = images(2, size=16)
    for sigma in (1.5, BLUR_SIGMA):  # 10 px on 16 px: the mirrored padding folds several times
        theirs = np.stack([ndimage.gaussian_filter(x[b].double().numpy(), (0, sigma, sigma), mode="reflect", truncate=4.0)
                           for b in range(2)])
        assert np.abs(ig_baseline(x, "blur", blur_sigma=sigma).double().numpy() - theirs).max() < 1e-6
    constant = torch.full((1, 3, 12, 9), 0.7).mul(torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1))
    assert torch.equal(gaussian_blur(constant, 4.0), constant)
    assert torch.equal(ig_baseline(constant, "blur"), constant)


def test_the_noise_baseline_is_uniform_pixels_drawn_from_the_seed():
    classifier, x = _classifier(), images(3, size=16)
    noise = ig_baseline(x, "noise", classifier=classifier, seed=3)
    pixels = classifier.denormalize(noise)
    assert pixels.min() >= -1e-6 and pixels.max() <= 1 + 1e-6
    assert abs(float(pixels.mean()) - 0.5) < 0.05 and abs(float(pixels.var()) - 1 / 12) < 0.01
    assert torch.equal(noise[0], noise[2])  # one noise image for the batch
    assert torch.equal(ig_baseline(x[:1], "noise", classifier=classifier, seed=3), noise[:1])
    assert not torch.equal(ig_baseline(x, "noise", classifier=classifier, seed=4), noise)


def test_averaging_over_baselines_is_the_mean_of_the_attributions_and_stays_complete():
    model, x = tiny_cnn(), images(3, size=16)
    classifier = _classifier()
    baselines = [ig_baseline(x, "noise", classifier=classifier, seed=s) for s in range(3)] + [0.0]
    each = [integrated_gradients(model, x, TARGETS, baseline=b, steps=8, aggregate=None, raw=True) for b in baselines]
    mean = torch.stack(each).mean(dim=0)
    averaged = averaged_baseline_ig(model, x, TARGETS, baselines=baselines, steps=8, aggregate=None, raw=True)
    assert torch.allclose(averaged, mean, atol=1e-7)
    maps = averaged_baseline_ig(model, x, TARGETS, baselines=baselines, steps=8)  # sum_abs, normalised
    assert torch.allclose(maps, saliency.passes.normalise_maps(mean.abs().sum(dim=1)), atol=1e-5)
    # Completeness of the average: sum = S(x) - mean_k S(x'_k), by hand on a linear model at 2 steps.
    linear, small = _linear().double(), images(3, size=8).double()
    references = [torch.zeros_like(small), torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1),
                                                       dtype=torch.float64)]
    _, errors = averaged_baseline_ig(linear, small, TARGETS, baselines=references, steps=2, return_completeness=True)
    assert (errors < 1e-12).all(), errors
    with torch.no_grad():
        scores = lambda batch: linear(batch).gather(1, TARGETS.view(-1, 1)).squeeze(1)
        gap = scores(small) - (scores(references[0]) + scores(references[1])) / 2
    summed = averaged_baseline_ig(linear, small, TARGETS, baselines=references, steps=2, aggregate=None, raw=True)
    assert torch.allclose(summed.sum(dim=(1, 2, 3)), gap, atol=1e-12)


@pytest.mark.parametrize("call, error, mentions", [
    (lambda m, x: integrated_gradients(m, x, completeness_tolerance=-0.1), ValueError, "completeness_tolerance"),
    (lambda m, x: integrated_gradients(m, x, completeness_tolerance=float("nan")), ValueError, "completeness_tolerance"),
    (lambda m, x: integrated_gradients(m, x, completeness_tolerance="0.1"), TypeError, "completeness_tolerance"),
    (lambda m, x: integrated_gradients(m, x, return_completeness="yes"), TypeError, "return_completeness"),
    (lambda m, x: completeness_error(m, x, integrated_gradients(m, x, steps=2)), ValueError, "aggregate=None"),
    (lambda m, x: completeness_error(m, x, x.clone().fill_(float("nan"))), ValueError, "NaN"),
    (lambda m, x: completeness_error(m, x, x.long()), TypeError, "floating-point"),
    (lambda m, x: completeness_error(m, x, x, baseline=torch.zeros(1, 3, 5, 5)), ValueError, "baseline"),
    (lambda m, x: ig_baseline(x, "white"), ValueError, "black, mean, blur, noise"),
    (lambda m, x: ig_baseline(x, 0), TypeError, "kind"),
    (lambda m, x: ig_baseline(x, "black"), ValueError, "normalisation"),
    (lambda m, x: ig_baseline(x, "noise", mean=MEAN), ValueError, "both mean= and std="),
    (lambda m, x: ig_baseline(x, "black", classifier=_classifier(), mean=MEAN, std=STD), ValueError, "not both"),
    (lambda m, x: ig_baseline(x, "black", mean=MEAN, std=torch.tensor([0.2, 0.0, 0.2])), ValueError, "positive"),
    (lambda m, x: ig_baseline(x, "black", mean=[0.5, 0.5], std=STD), ValueError, "3 finite"),
    (lambda m, x: ig_baseline(x, "black", classifier=m), TypeError, "Classifier"),
    (lambda m, x: ig_baseline(x, "blur", blur_sigma=0), ValueError, "blur_sigma"),
    (lambda m, x: ig_baseline(x, "noise", classifier=_classifier(), seed=1.5), TypeError, "seed"),
    (lambda m, x: ig_baseline(x[0], "mean"), ValueError, "(B, 3, H, W)"),
    (lambda m, x: averaged_baseline_ig(m, x, baselines=[]), ValueError, "empty"),
    (lambda m, x: averaged_baseline_ig(m, x, baselines=torch.zeros(2, 3, 16, 16)), TypeError, "list or tuple"),
    (lambda m, x: averaged_baseline_ig(m, x, baselines=[0.0, float("nan")]), ValueError, "baselines[1]"),
    (lambda m, x: averaged_baseline_ig(m, x, baselines=[0.0], steps=1), ValueError, "steps"),
])
def test_bad_inputs_raise_one_clear_error(call, error, mentions):
    model, x = tiny_cnn(), images(2, size=16)
    with pytest.raises(error) as raised:
        call(model, x)
    assert mentions in str(raised.value), str(raised.value)
    assert no_hooks_left(model)


def test_a_baseline_the_model_scores_as_the_image_gives_an_undefined_error_and_a_warning():
    # S(x) = S(x') exactly when the baseline is the image: 0 / 0, not a huge number.
    model, x = tiny_cnn(), images(3, size=16)
    attributions = torch.zeros_like(x)
    errors = completeness_error(model, x, attributions, x.clone(), TARGETS)
    assert errors.isnan().all(), errors
    with pytest.warns(CompletenessWarning, match=r"baseline scores as the image .* 3 of 3 images"):
        _, errors = integrated_gradients(model, x, TARGETS, baseline=x.clone(), steps=2, completeness_tolerance=0.05,
                                         return_completeness=True)
    assert errors.isnan().all()
    # One image like its baseline, the others not: only that one is NaN.
    reference = torch.zeros_like(x)
    reference[1] = x[1]
    mixed = completeness_error(model, x, integrated_gradients(model, x, TARGETS, baseline=reference, steps=8,
                                                              aggregate=None, raw=True), reference, TARGETS)
    assert mixed.isnan().tolist() == [False, True, False]


def test_a_score_difference_within_the_logits_rounding_is_undefined_not_a_number():
    # Logits near 1e4 in float32 round in steps of about 1e-3: a gap of 1e-4 there is rounding, not a measurement.
    model = _linear()
    with torch.no_grad():
        model[1].bias.fill_(1e4)
    x = images(2, size=8)
    attributions = integrated_gradients(model, x, TARGETS[:2], baseline=x + 1e-7, steps=2, aggregate=None, raw=True)
    assert completeness_error(model, x, attributions, x + 1e-7, TARGETS[:2]).isnan().all()
    far = torch.zeros_like(x)
    attributions = integrated_gradients(model, x, TARGETS[:2], baseline=far, steps=2, aggregate=None, raw=True)
    assert not completeness_error(model, x, attributions, far, TARGETS[:2]).isnan().any()
