"""lib.metrics.stats: the percentile bootstrap behind every interval the book reports."""

import warnings

import numpy as np
import pytest
import torch

from lib.metrics import bootstrap_ci


def test_interval_of_the_mean_matches_the_normal_approximation():
    # For n = 400 draws of N(0, 1) the 95% interval of the mean is close to mean -/+ 1.96 / sqrt(n).
    sample = torch.randn(400, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    interval = bootstrap_ci(sample, resamples=4000, seed=3)
    half = 1.96 * float(sample.std()) / 20
    assert interval.value == pytest.approx(float(sample.mean()))
    assert interval.low == pytest.approx(interval.value - half, abs=0.15 * half)
    assert interval.high == pytest.approx(interval.value + half, abs=0.15 * half)
    assert interval.n == 400


def test_constant_sample_seeds_and_other_statistics():
    assert bootstrap_ci([2.5] * 7) == bootstrap_ci(np.full(7, 2.5))
    constant = bootstrap_ci([2.5] * 7)
    assert (constant.value, constant.low, constant.high) == (2.5, 2.5, 2.5)
    values = [0.0, 1.0, 5.0, 2.0, 8.0]
    assert bootstrap_ci(values, seed=4) == bootstrap_ci(values, seed=4)
    median = bootstrap_ci(values, statistic=torch.median)
    assert median.value == 2.0 and median.low >= 0.0 and median.high <= 8.0


def test_read_only_arrays_from_pandas_are_taken_without_a_warning():
    frozen = np.arange(6.0)
    frozen.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert bootstrap_ci(frozen) == bootstrap_ci(list(range(6)))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="at least one value"):
        bootstrap_ci([])
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=1.0)


# ---------------------------------------------------------------- the sign-flip test


def test_sign_flip_matches_the_t_interval_on_normal_data_and_enumerates_small_n():
    from scipy import stats

    from lib.metrics import sign_flip

    d = np.random.default_rng(0).normal(0.5, 1, 50)
    test = sign_flip(d)
    half = stats.t.ppf(0.975, 49) * d.std(ddof=1) / np.sqrt(50)
    assert test.value == pytest.approx(d.mean())
    assert test.low == pytest.approx(d.mean() - half, abs=0.1 * half)
    assert test.high == pytest.approx(d.mean() + half, abs=0.1 * half)
    # n = 6, all positive: only the identity pattern reaches the observed sum, p = 1/64 exactly.
    small = sign_flip([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    assert small.exact and small.p_greater == pytest.approx(1 / 64) and small.low > 0
    # n = 5 can never pass: 1/32 > 0.025.
    assert sign_flip([1.0, 2.0, 3.0, 4.0, 5.0]).low == float("-inf")


def test_sign_flip_weights_give_the_weighted_mean_and_are_checked():
    from lib.metrics import sign_flip

    d = np.array([1.0, 0.0, 0.0, 1.0] * 10)
    w = np.array([0.5, 0.25, 0.25, 1.0] * 10)
    assert sign_flip(d, w).value == pytest.approx((d * w).sum() / w.sum())
    with pytest.raises(ValueError, match="3 weights for 40"):
        sign_flip(d, w[:3])
    with pytest.raises(ValueError, match="non-negative"):
        sign_flip(d, -w)
    with pytest.raises(ValueError, match="NaN"):
        sign_flip([1.0, float("nan")])


def test_sign_flip_refuses_inputs_it_used_to_flatten_truncate_or_overflow():
    from lib.metrics import sign_flip
    from lib.metrics.stats import EXACT_LIMIT

    d = np.random.default_rng(1).normal(0.5, 1, 40)
    with pytest.raises(ValueError, match=r"one value per unit, shape \(n,\), got shape \(5, 8\)"):
        sign_flip(d.reshape(5, 8))  # was 40 units in row order
    assert sign_flip(d.reshape(40, 1)) == sign_flip(d)
    for bad in (None, ["a", "b"], {"a": 1}):  # None read as one NaN; the others numpy's errors
        with pytest.raises(ValueError, match="expected numbers"):
            sign_flip(bad)
    for name, value in (("resamples", 2.5), ("seed", None), ("exact_up_to", 1.5)):  # torch errors before
        with pytest.raises(ValueError, match=f"{name} must be an integer"):
            sign_flip(d, **{name: value})
    with pytest.raises(ValueError, match="exact_up_to must be in"):  # 2^70 patterns: an OverflowError
        sign_flip(np.ones(70), exact_up_to=100)
    assert EXACT_LIMIT >= 12
    # Each weight finite, their sum infinite: w / w.sum() was all zeros, the statistic 0.
    assert sign_flip(d, np.full(40, 1e308)).value == pytest.approx(d.mean())
    with pytest.raises(ValueError, match="level must be a number"):
        sign_flip(d, level="0.95")


def test_bootstrap_refuses_undefined_values_and_bad_resampling_settings():
    # A NaN among the values made both ends of the interval NaN.
    with pytest.raises(ValueError, match=r"bootstrap_ci: values contain NaN or infinite values \(value 1 is NaN\); "
                                         "drop undefined units first and count them"):
        bootstrap_ci([0.5, float("nan"), 0.25])
    with pytest.raises(ValueError, match=r"\(value 0 is infinite; 2 of 3 values are not finite\)"):
        bootstrap_ci(torch.tensor([float("inf"), 1.0, -float("inf")]))
    with pytest.raises(ValueError, match="bootstrap_ci: resamples must be an integer >= 1, got 0"):
        bootstrap_ci([1.0, 2.0], resamples=0)  # was a RuntimeError from torch.quantile
    with pytest.raises(TypeError, match="bootstrap_ci: resamples must be an integer >= 1, got float 100.0"):
        bootstrap_ci([1.0, 2.0], resamples=100.0)
    with pytest.raises(TypeError, match="bootstrap_ci: seed must be an integer, got float 0.5"):
        bootstrap_ci([1.0, 2.0], seed=0.5)
    with pytest.raises(TypeError, match=r"bootstrap_ci: level must be a number in \(0, 1\), got str"):
        bootstrap_ci([1.0, 2.0], level="0.9")
    with pytest.raises(ValueError, match="level"):
        bootstrap_ci([1.0, 2.0], level=float("nan"))
    assert bootstrap_ci([1.0, 2.0, 3.0], resamples=np.int64(50), seed=np.int64(1)).n == 3
