"""Class sensitivity (Rebuffi et al. 2020, Sec. 4.3): Spearman between max- and min-class maps."""

import pytest
import torch
from scipy.stats import spearmanr

from _tiny import images, tiny_cnn
import lib.saliency as saliency
from lib.metrics.class_sensitivity import class_sensitivity, extreme_classes, max_min_correlation


def test_extreme_classes_are_the_arg_max_and_arg_min():
    logits = torch.tensor([[0.1, 3.0, -2.0, 1.0], [5.0, -7.0, 0.0, 2.0]])
    top, bottom = extreme_classes(logits)
    assert top.tolist() == [1, 0] and bottom.tolist() == [2, 1]
    with pytest.raises(ValueError, match="B, classes"):
        extreme_classes(logits[0])


def test_a_method_blind_to_the_class_scores_one_and_a_flipping_one_minus_one():
    model, x = tiny_cnn(), images(3, size=16)
    top, _ = extreme_classes(model(x))

    def blind(model, images, targets, **_):
        return images[:, 0].sigmoid()

    def flipping(model, images, targets, **_):
        sign = torch.where(targets == top, 1.0, -1.0).view(-1, 1, 1)
        return (sign * images[:, 0]).sigmoid()

    assert torch.allclose(class_sensitivity(model, blind, x).correlation, torch.ones(3))
    assert torch.allclose(class_sensitivity(model, flipping, x).correlation, -torch.ones(3))


def test_a_constant_map_has_no_score_not_the_ideal_zero():
    varying = images(2, size=8)[:, 0]
    constant = torch.full_like(varying, 0.5)
    score = max_min_correlation(torch.stack([varying[0], constant[1]]), torch.stack([varying[1], varying[1]]))
    assert torch.isfinite(score[0]) and torch.isnan(score[1])
    assert torch.isclose(score[0], torch.tensor(spearmanr(varying[0].flatten(), varying[1].flatten())[0], dtype=score.dtype))


def test_real_method_targets_and_correlation_match_scipy():
    model, x = tiny_cnn(), images(3, size=16)
    result = class_sensitivity(model, "normgrad", x, method_kwargs={"layer": "features.1"})
    logits = model(x)
    assert torch.equal(result.max_class, logits.argmax(1)) and torch.equal(result.min_class, logits.argmin(1))
    assert torch.equal(result.maps_min, saliency.normgrad(model, x, logits.argmin(1), layer="features.1"))
    for b in range(3):
        want = spearmanr(result.maps_max[b].flatten().numpy(), result.maps_min[b].flatten().numpy()).statistic
        assert result.correlation[b].item() == pytest.approx(want, abs=1e-5)


def test_ties_get_average_ranks_like_scipy():
    # ReLU-filtered maps are full of zeros: ties must be ranked as scipy does.
    a = torch.tensor([[0.0, 0.0, 0.0, 0.5, 1.0, 0.2]])
    b = torch.tensor([[0.0, 0.3, 0.0, 0.0, 0.9, 0.0]])
    assert max_min_correlation(a, b).item() == pytest.approx(spearmanr(a[0].numpy(), b[0].numpy()).statistic, abs=1e-6)


def test_meta_saliency_plugs_in_as_the_method():
    model, x = tiny_cnn(), images(2, size=16)
    result = class_sensitivity(model, saliency.meta_saliency, x, method_kwargs={"method": "linear_approx", "layer": "features.3"})
    assert result.correlation.shape == (2,) and torch.isfinite(result.correlation).all()


def test_nested_results_and_records():
    from lib.metrics.class_sensitivity import records
    from lib.saliency.extract_and_aggregate import framework_maps

    model, x = tiny_cnn(), images(2, size=16)
    nested = class_sensitivity(model, framework_maps, x, method_kwargs={"layers": ["features.1"]})
    alone = class_sensitivity(model, "linear_approx", x, method_kwargs={"layer": "features.1"})
    assert torch.allclose(nested["linear_approx"]["features.1"].correlation, alone.correlation, atol=1e-5)
    rows = records(nested, keys=("method", "layer"), meta=False)
    assert len(rows) == 2 * len(nested) and set(rows[0]) == {"meta", "method", "layer", "image", "spearman"}


def test_non_finite_maps_are_refused_not_ranked():
    # NaN sorted as the largest value, so a NaN map still got a correlation.
    a = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(0))
    b = a.clone()
    b[0, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"max_min_correlation: the maps for the least likely class contain NaN or "
                                         r"infinite values \(image 0 has 1 NaN value\); a saliency map must be finite"):
        max_min_correlation(a, b)
    with pytest.raises(TypeError, match="max_min_correlation: maps_max must be a torch.Tensor"):
        max_min_correlation(a.tolist(), b)
    model, x = tiny_cnn(), images(2, size=16)

    def nan_for_the_top_class(model, images, targets, **_):
        maps = images[:, 0].sigmoid()
        return torch.where(targets.view(-1, 1, 1) == model(images).argmax(1).view(-1, 1, 1), maps * float("nan"), maps)

    with pytest.raises(ValueError, match=r"class_sensitivity: the maps for the most likely class contain NaN"):
        class_sensitivity(model, nan_for_the_top_class, x)
    with pytest.raises(TypeError, match="class_sensitivity: the method's maps must be a torch.Tensor"):
        class_sensitivity(model, lambda model, images, targets: images[:, 0].tolist(), x)
