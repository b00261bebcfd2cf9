"""Per-image summaries of randomisation tests (lib.metrics.sanity) against hand computations."""

import math

import pytest
import torch

from lib.metrics.sanity import RandomizationResult, join_steps, per_image_similarity, undefined_steps


def maps_with_constants():
    """(L + 1 = 4, B = 3, 2, 2) maps: image 1's map turns constant after step 2, image 2's trained map is constant."""
    maps = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    maps[2:, 1] = 0.5
    maps[:, 2] = 0.0
    return maps


SPEARMAN = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.0, 0.0], [0.0, 0.0, 0.0]])


def result(mode):
    return RandomizationResult(["a", "b", "c"], SPEARMAN.clone(), None, maps_with_constants(), torch.zeros(3, dtype=torch.long), mode)


def test_cascading_reads_the_last_step():
    values = per_image_similarity(result("cascading"))
    assert values.dtype == torch.float64
    assert values[0].item() == pytest.approx(0.1)
    assert math.isnan(values[1]) and math.isnan(values[2])  # constant maps: undefined, not 0


def test_independent_averages_the_defined_steps():
    values = per_image_similarity(result("independent"))
    assert values[0].item() == pytest.approx((0.9 + 0.5 + 0.1) / 3)
    assert values[1].item() == pytest.approx(0.8)  # steps 2 and 3 constant: left out
    assert math.isnan(values[2])


def test_chosen_steps():
    values = per_image_similarity(result("cascading"), steps=[0, 1])
    assert values[0].item() == pytest.approx(0.7) and values[1].item() == pytest.approx(0.8)
    with pytest.raises(ValueError, match="steps"):
        per_image_similarity(result("cascading"), steps=[3])
    with pytest.raises(ValueError, match="steps"):
        per_image_similarity(result("cascading"), steps=[])


def test_undefined_steps_names_the_steps_with_a_constant_map():
    r = result("cascading")
    assert undefined_steps(r) == ["a", "b", "c"]  # image 2's trained map is constant: every step
    r.maps[:, 2] = torch.rand(4, 2, 2, generator=torch.Generator().manual_seed(1))
    assert undefined_steps(r) == ["b", "c"]
    assert int(r.undefined.sum()) == 2


def test_join_steps_keeps_the_first_step_then_the_rest():
    first, rest = result("cascading"), result("independent")
    rest.layer_names, rest.spearman = ["b", "c"], SPEARMAN[:, 1:] + 0.01
    rest.maps = torch.cat([first.maps[:1], first.maps[1:3] + 1.0])
    joined = join_steps(first, rest)
    assert joined.mode == "independent" and joined.layer_names == ["a", "b", "c"]
    assert torch.equal(joined.spearman, torch.cat([SPEARMAN[:, :1], SPEARMAN[:, 1:] + 0.01], dim=1))
    assert torch.equal(joined.maps, torch.cat([first.maps[:2], rest.maps[1:]]))
    alone = join_steps(first, None)
    assert alone.layer_names == ["a"] and alone.spearman.shape == (3, 1) and alone.maps.shape[0] == 2
    other = result("independent")
    other.targets = torch.ones(3, dtype=torch.long)
    with pytest.raises(ValueError, match="different images or targets"):
        join_steps(first, other)


def test_steps_must_be_distinct_integer_indices():
    cascading = result("cascading")
    one = per_image_similarity(cascading, 1)  # one step: image 0's rho there; images 1 and 2 constant (NaN)
    assert one[0].item() == pytest.approx(0.5) and one[1:].isnan().all()
    assert torch.allclose(per_image_similarity(cascading, torch.tensor([0, 1])), per_image_similarity(cascading, [0, 1]), equal_nan=True)
    for steps, error in (([0.5], TypeError), ([True], TypeError), ("01", TypeError), ([0, 0, 1], ValueError), ([3], ValueError)):
        with pytest.raises(error, match="distinct step indices"):
            per_image_similarity(cascading, steps)


def test_modes_and_results_are_checked():
    odd = result("Cascading")  # would silently be read as the independent test
    with pytest.raises(ValueError, match="mode must be one of"):
        per_image_similarity(odd)
    with pytest.raises(ValueError, match="mode must be one of"):
        join_steps(result("cascading"), result("independent"), mode="whatever")
    with pytest.raises(TypeError, match="expected a RandomizationResult, got NoneType"):
        per_image_similarity(None)
    with pytest.raises(TypeError, match="for a dict of results"):
        join_steps({"gradcam": result("cascading")}, None)
    with pytest.raises(TypeError, match="rest: expected a RandomizationResult"):
        join_steps(result("cascading"), 3)
    with pytest.raises(TypeError, match="undefined_steps"):
        undefined_steps([])
