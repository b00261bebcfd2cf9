"""Model-parameter randomisation tests (Adebayo et al. 2018) and their similarity measures."""

import pytest
import torch
from scipy.stats import spearmanr
from skimage.metrics import structural_similarity

from _tiny import images, no_hooks_left, tiny_cnn
from lib.metrics.sanity import (
    cascading_randomization,
    default_layers,
    independent_randomization,
    spearman,
    ssim,
)


def test_spearman_matches_scipy_including_ties():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(0, 5, (3, 6, 7), generator=g).float()  # many ties, like ReLU maps
    b = torch.rand(3, 6, 7, generator=g)
    b[1] = a[1] * 2 + 1  # monotone transform: rho = 1
    ours = spearman(a, b)
    for i in range(3):
        assert ours[i].item() == pytest.approx(spearmanr(a[i].flatten(), b[i].flatten()).statistic, abs=1e-6)
    assert ours[1].item() == pytest.approx(1.0)
    assert spearman(a[:1], -a[:1]).item() == pytest.approx(-1.0)
    assert spearman(torch.zeros(1, 4, 4), b[:1, :4, :4]).item() == 0.0  # constant map: no ranking, scored 0 by default
    undefined = spearman(torch.stack([torch.zeros(4, 4), b[0, :4, :4]]), b[:1, :4, :4].repeat(2, 1, 1), constant=float("nan"))
    assert torch.isnan(undefined[0]) and undefined[1].item() == pytest.approx(1.0)  # ... or NaN, as scipy
    with pytest.warns(Warning, match="constant"):
        assert torch.isnan(torch.tensor(spearmanr(torch.zeros(16), b[0, :4, :4].flatten()).statistic))


def test_ssim_matches_skimage_gaussian_reference():
    g = torch.Generator().manual_seed(1)
    a = torch.rand(2, 20, 24, generator=g)
    b = (a + 0.2 * torch.randn(2, 20, 24, generator=g)).clamp(0, 1)
    ours = ssim(a, b)
    for i in range(2):
        ref = structural_similarity(
            a[i].double().numpy(), b[i].double().numpy(), gaussian_weights=True, sigma=1.5,
            use_sample_covariance=False, data_range=1.0,
        )
        assert ours[i].item() == pytest.approx(ref, abs=1e-5)
    assert torch.allclose(ssim(a, a), torch.ones(2))
    with pytest.raises(ValueError, match="smaller than"):
        ssim(a[:, :8, :8], b[:, :8, :8])


def test_default_layers_run_from_the_logits_down():
    assert default_layers(tiny_cnn()) == ["fc", "features.2", "features.0"]


def test_cascading_leaves_the_model_bit_identical_and_randomises_cumulatively():
    model, x = tiny_cnn(), images(2, size=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = cascading_randomization(model, "gradcam", x, method_kwargs={"layer": "features.3"}, seed=3)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert no_hooks_left(model) and not any(p.requires_grad is False for p in model.parameters())
    assert result.layer_names == ["fc", "features.2", "features.0"]
    assert result.maps.shape == (4, 2, 16, 16)
    assert result.spearman.shape == (2, 3) and result.ssim.shape == (2, 3)
    assert torch.equal(result.targets, model(x).argmax(1))
    # maps[0] is the trained model's map; later maps differ from it.
    from lib.saliency import gradcam

    assert torch.allclose(result.maps[0], gradcam(model, x, result.targets, layer="features.3"))
    assert not torch.allclose(result.maps[1], result.maps[0])
    # Reported similarities are those of the stored maps.
    assert torch.allclose(result.spearman[:, 2], spearman(result.maps[3], result.maps[0]))
    assert torch.allclose(result.ssim[:, 0], ssim(result.maps[1], result.maps[0]))
    # Same seed, same result.
    again = cascading_randomization(model, "gradcam", x, method_kwargs={"layer": "features.3"}, seed=3)
    assert torch.equal(again.maps, result.maps)


def test_cascading_step_equals_a_model_with_those_layers_reset_and_independent_resets_only_one():
    model, x = tiny_cnn(), images(2, size=16)
    seen = []

    def probe(m, imgs, targets):  # records the fc weights of the model it is handed
        seen.append([p.detach().clone() for p in m.parameters()])
        return torch.zeros(imgs.shape[0], 16, 16)

    cascading_randomization(model, probe, x)
    trained = [p.detach().clone() for p in model.parameters()]  # features.0 w,b; features.2 w,b; fc w,b
    # step 1: only fc random; step 2: fc and features.2; step 3: all.
    changed = [[not torch.equal(a, b) for a, b in zip(state, trained)] for state in seen]
    assert changed == [[False] * 6, [False] * 4 + [True] * 2, [False, False] + [True] * 4, [True] * 6]
    assert torch.equal(seen[1][4], seen[2][4])  # cumulative: fc keeps its first random draw
    seen.clear()
    independent_randomization(model, probe, x)
    changed = [[not torch.equal(a, b) for a, b in zip(state, trained)] for state in seen]
    assert changed == [[False] * 6, [False] * 4 + [True] * 2, [False] * 2 + [True] * 2 + [False] * 2, [True] * 2 + [False] * 4]


def test_constant_model_targets_and_errors():
    model, x = tiny_cnn(), images(2, size=16)
    result = independent_randomization(model, "gradient", x, targets=torch.tensor([1, 2]), layers=["fc"])
    assert result.layer_names == ["fc"] and result.mode == "independent"
    assert torch.equal(result.targets, torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="unknown saliency method"):
        cascading_randomization(model, "nope", x)
    with pytest.raises(ValueError, match="unknown layer"):
        cascading_randomization(model, "gradient", x, layers=["fc9"])
    frame = result.to_frame("gradient")
    assert set(frame.metric) == {"spearman", "ssim"} and len(frame) == 4


def test_constant_maps_are_left_out_and_counted_not_scored_as_changed():
    model, x = tiny_cnn(), images(2, size=16)
    calls = []

    def fading(m, imgs, targets):  # informative for the trained model, constant for image 1 after step 1
        calls.append(None)
        maps = torch.rand(imgs.shape[0], 16, 16, generator=torch.Generator().manual_seed(len(calls)))
        if len(calls) > 2:
            maps[1] = 0.0
        return maps

    result = cascading_randomization(model, fading, x)
    assert result.undefined.tolist() == [[False, False, False], [False, True, True]]
    assert result.spearman[1, 1].item() == 0.0  # the backward-compatible score ...
    assert torch.isnan(result.defined_spearman[1, 1:]).all()  # ... and the one that leaves it out
    assert torch.equal(result.defined_spearman[0], result.spearman[0])
    frame = result.to_frame("fading", undefined_as_nan=True)
    assert frame[frame.metric == "spearman"].value.isna().sum() == 2


def test_a_method_returning_a_dict_of_maps_gets_a_dict_of_results_from_one_randomisation():
    from lib.saliency.extract_and_aggregate import framework_maps

    model, x = tiny_cnn(), images(2, size=16)
    methods = {"la": {"extract": "scaling", "aggregate": "sum"}, "sng": {"extract": "scaling", "aggregate": "filter_norm"}}
    both = cascading_randomization(model, framework_maps, x, seed=2, measures=("spearman",),
                                   method_kwargs={"layers": ["features.3"], "methods": methods})
    assert set(both) == {"la", "sng"} and set(both["la"]) == {"features.3"}
    alone = cascading_randomization(model, "linear_approx", x, seed=2, method_kwargs={"layer": "features.3"})
    assert torch.allclose(both["la"]["features.3"].maps, alone.maps, atol=1e-6)
    assert torch.allclose(both["la"]["features.3"].spearman, alone.spearman, atol=1e-6)
    assert both["sng"]["features.3"].ssim is None and alone.ssim is not None
    assert set(both["sng"]["features.3"].to_frame().metric) == {"spearman"}
    with pytest.raises(ValueError, match="measures"):
        cascading_randomization(model, "gradient", x, measures=("ssim",))


def test_grouped_cascading_steps_reach_the_layer_by_layer_states():
    model, x = tiny_cnn(), images(2, size=16)
    step_by_step = cascading_randomization(model, "gradcam", x, seed=5, method_kwargs={"layer": "features.3"})
    grouped = cascading_randomization(model, "gradcam", x, seed=5, layers=[("fc", "features.2"), "features.0"],
                                      method_kwargs={"layer": "features.3"})
    assert grouped.layer_names == ["fc + features.2", "features.0"] and grouped.depths == [2, 3]
    assert torch.allclose(grouped.maps, step_by_step.maps[[0, 2, 3]], atol=1e-6)
    assert sorted(grouped.to_frame().depth.unique()) == [2, 3]
    independent = independent_randomization(model, "gradcam", x, seed=5, layers=[("fc", "features.2")],
                                            method_kwargs={"layer": "features.3"})
    assert independent.depths == [2] and torch.allclose(independent.maps[1], step_by_step.maps[2], atol=1e-6)


def test_similarities_refuse_non_finite_maps_and_bad_windows():
    g = torch.Generator().manual_seed(4)
    a, b = torch.rand(2, 12, 12, generator=g), torch.rand(2, 12, 12, generator=g)
    nan = b.clone()
    nan[1, 3, 3] = float("nan")  # NaN sorted as the largest value: a correlation came back
    with pytest.raises(ValueError, match=r"spearman: maps b contain NaN or infinite values \(image 1 has 1 NaN value\); "
                                         "a saliency map must be finite"):
        spearman(a, nan)
    with pytest.raises(ValueError, match=r"ssim: maps b contain NaN or infinite values \(image 1 has 1 NaN value\)"):
        ssim(a, nan)  # was a NaN similarity
    with pytest.raises(ValueError, match=r"spearman: maps must be a batch \(B, H, W\)"):
        spearman(a[0, 0], b[0, 0])  # one row of pixels was read as 12 one-pixel maps, each scored 0
    with pytest.raises(TypeError, match=r"spearman: a must be a torch.Tensor"):
        spearman(a.tolist(), b)
    with pytest.raises(ValueError, match=r"ssim: sigma must be a finite number > 0, got 0"):
        ssim(a, b, sigma=0)  # a window of 0/0: NaN
    with pytest.raises(ValueError, match=r"ssim: data_range .* must be a finite number > 0, got nan"):
        ssim(a, b, data_range=float("nan"))
    with pytest.raises(TypeError, match=r"ssim: window .* must be an integer >= 1, got float 7.0"):
        ssim(a, b, window=7.0)
    with pytest.raises(ValueError, match=r"ssim: window .* must be an integer >= 1, got 0"):
        ssim(a, b, window=0)  # was a conv2d error on an empty window
    assert torch.equal(spearman(a - 10, b), spearman(a, b))  # signed maps: only the ranks count


def test_randomisation_names_the_step_whose_maps_are_not_finite():
    model, x = tiny_cnn(), images(2, size=16)

    def breaks_once_randomised(m, imgs, targets):
        maps = imgs[:, 0].sigmoid()
        if m is not model:  # the randomised copy
            maps = maps.clone()
            maps[1, 2, 2] = float("nan")
        return maps

    with pytest.raises(ValueError, match=r"cascading_randomization: the method's maps after step 'fc' contain NaN or "
                                         r"infinite values \(image 1 has 1 NaN value\)"):
        cascading_randomization(model, breaks_once_randomised, x, layers=["fc"])
    with pytest.raises(ValueError, match=r"independent_randomization: the method's maps of the trained model contain NaN"):
        independent_randomization(model, lambda m, imgs, t: torch.full((2, 16, 16), float("inf")), x, layers=["fc"])
    with pytest.raises(TypeError, match="cascading_randomization: seed must be an integer, got float 1.5"):
        cascading_randomization(model, "gradient", x, layers=["fc"], seed=1.5)  # was truncated to seed 1
