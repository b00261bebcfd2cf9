"""Paired pointing comparisons (lib.metrics.pointing_pairs) against hand computations."""

import math

import pytest
import torch

from lib.metrics.pointing import PointingResult
from lib.metrics.pointing_pairs import comparison_row, paired_difference, paired_hits, points_text, select
from lib.metrics.stats import Interval, sign_flip


def result(hits, labels, difficult):
    n = len(hits)
    return PointingResult.from_hits(torch.tensor(hits), torch.tensor(labels), torch.tensor(difficult), torch.zeros(n, 2))


# Six pairs of two classes: class 0 has pairs 0-3, class 1 has pairs 4-5; pairs 2, 3, 5 are difficult.
LABELS = [0, 0, 0, 0, 1, 1]
DIFFICULT = [False, False, True, True, False, True]
A = result([True, True, False, True, True, False], LABELS, DIFFICULT)
B = result([False, True, False, False, True, True], LABELS, DIFFICULT)


def test_select_recomputes_the_class_mean_accuracy_on_the_kept_pairs():
    kept = select(A, torch.tensor([True, False, True, False, True, True]))
    # class 0: pairs 0, 2 -> 1 of 2; class 1: pairs 4, 5 -> 1 of 2; mean 0.5
    assert kept.hits.tolist() == [True, False, True, False]
    assert kept.accuracy == pytest.approx(0.5)
    assert kept.class_weights().tolist() == pytest.approx([0.25, 0.25, 0.25, 0.25])
    assert select(A, slice(0, 4)).accuracy == pytest.approx(0.75)  # class 0 only: 3 of 4
    with pytest.raises(ValueError, match="mask of 3 for 6"):
        select(A, torch.tensor([True, False, True]))


def test_paired_difference_is_the_difference_of_class_mean_accuracies():
    # A: class 0 hits 3 of 4, class 1 1 of 2; B: class 0 1 of 4, class 1 2 of 2 (both 0.625 by chance)
    acc_a = (3 / 4 + 1 / 2) / 2
    acc_b = (1 / 4 + 2 / 2) / 2
    test = paired_difference(A, B)
    assert test.value == pytest.approx(acc_a - acc_b)
    assert test.n == 6
    weights = torch.tensor([1 / 8] * 4 + [1 / 4] * 2, dtype=torch.float64)
    expected = sign_flip(A.hits.double() - B.hits.double(), weights)
    assert (test.low, test.high) == pytest.approx((expected.low, expected.high))


def test_paired_difference_on_the_difficult_pairs():
    # difficult: pairs 2, 3 (class 0) and 5 (class 1). A: class 0 1/2, class 1 0/1 -> 0.25; B: 0/2, 1/1 -> 0.5
    test = paired_difference(A, B, subset="difficult")
    assert test.value == pytest.approx(0.25 - 0.5)
    assert test.n == 3
    nothing = result([True, False], [0, 1], [False, False])
    assert paired_difference(nothing, nothing, subset="difficult") is None


def test_paired_difference_refuses_other_pairs_and_subsets():
    with pytest.raises(ValueError, match="different pairs"):
        paired_difference(A, result([True] * 5, [0] * 5, [False] * 5))
    with pytest.raises(ValueError, match="subset"):
        paired_difference(A, B, subset="easy")


def test_paired_hits_gives_hits_and_class_weights_of_the_kept_pairs():
    hits, weights = paired_hits({"a": A, "b": B}, ["a", "b"], torch.tensor(DIFFICULT))
    assert hits["a"].tolist() == [0.0, 1.0, 0.0] and hits["b"].tolist() == [0.0, 0.0, 1.0]
    assert weights.tolist() == pytest.approx([0.25, 0.25, 0.5])  # two classes: 1/(2*2), 1/(2*2), 1/(2*1)
    assert float((weights * hits["a"]).sum()) == pytest.approx(A.accuracy_difficult)
    with pytest.raises(ValueError, match="no keys"):
        paired_hits({"a": A}, [])


def test_points_text():
    assert points_text(Interval(0.573, 0.521, 0.62, 10)) == "57.3 [52.1, 62.0]"
    assert points_text(Interval(0.012, -0.004, 0.029, 10), signed=True) == "+1.2 [-0.4, +2.9]"
    assert points_text(None) == "–"


def test_comparison_row_by_hand():
    row = comparison_row(A, {"− B": B, "− itself": A, "− none": None}, resamples=200, seed=0)
    assert row["pairs"] == 6 and row["categories"] == 2
    assert row["accuracy %"] == pytest.approx(62.5)
    assert row["difficult %"] == pytest.approx(25.0) and row["difficult pairs"] == 3
    assert row["− B"] == points_text(paired_difference(A, B), signed=True)
    assert row["− B"].startswith("+0.0")  # 0.625 - 0.625
    assert row["− itself"] == "–" and row["− none"] == "–"
    low, high = (float(v) for v in row["95% interval"].strip("[]").split(","))
    assert low <= 62.5 <= high
    difficult = comparison_row(A, {"− B": B}, subset="difficult", resamples=200)
    assert difficult["pairs"] == 3 and "difficult %" not in difficult
    assert difficult["accuracy %"] == pytest.approx(25.0)
    assert difficult["− B"].startswith("-25.0")
    empty = comparison_row(result([True], [0], [False]), subset="difficult")
    assert empty["pairs"] == 0 and math.isnan(empty["accuracy %"]) and empty["95% interval"] == "–"


def test_select_refuses_keeps_that_are_not_masks_positions_or_slices():
    assert select(A, [True, False, True, False, True, True]).hits.tolist() == [True, False, True, False]  # a list mask
    assert select(A, torch.tensor([-1, 0])).labels.tolist() == [1, 0]
    for keep, error, message in (([True, False], ValueError, "a mask of 2 for 6 pairs"),
                                 (torch.tensor([0, 9]), ValueError, r"positions must lie in \[-6, 6\), got 9"),
                                 (None, TypeError, "bool mask"), (2, TypeError, "bool mask"),
                                 (torch.tensor([0.0, 1.0]), TypeError, "float32"),
                                 (torch.ones(2, 3, dtype=torch.bool), ValueError, "one-dimensional")):
        with pytest.raises(error, match=message):
            select(A, keep)


def test_paired_functions_refuse_what_is_not_a_result_or_a_list_of_keys():
    with pytest.raises(TypeError, match="other must be a PointingResult"):
        paired_difference(A, None)
    with pytest.raises(TypeError, match="keys must be a list"):
        paired_hits({"ab": A, "a": A, "b": B}, "ab")  # would be read as the keys 'a' and 'b'
    with pytest.raises(ValueError, match=r"\['c'\] are not keys of results"):
        paired_hits({"a": A}, ["c"])
    with pytest.raises(TypeError, match="Interval or SignFlip"):
        points_text((0.5, 0.4, 0.6))
    with pytest.raises(TypeError, match="against must be a mapping"):
        comparison_row(A, [B])
    with pytest.raises(ValueError, match="resamples must be a positive integer"):
        comparison_row(A, resamples=0)
