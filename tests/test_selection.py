"""Held-out choice, in-sample choice and disjoint groups (lib.metrics.selection) against hand computations."""

import pytest
import torch

from lib.metrics.pointing import PointingResult
from lib.metrics.selection import best_in_sample, disjoint_groups, held_out_choice


def result(hits, labels=(0, 0, 1, 1, 0, 1), difficult=(False, True, False, True, True, False)):
    n = len(hits)
    return PointingResult.from_hits(torch.tensor(hits), torch.tensor(labels), torch.tensor(difficult), torch.zeros(n, 2))


CHOOSE = torch.tensor([True, True, True, False, False, False])
TEST = ~CHOOSE
RESULTS = {  # on the choosing pairs 0-2 (classes 0, 0, 1; weights 1/4, 1/4, 1/2): "a" 0.75, "b" 0.5, "c" 0.75
    "a": result([True, False, True, False, False, True]),
    "b": result([True, True, False, True, True, True]),
    "c": result([False, True, True, True, True, True]),
}


def test_held_out_choice_chooses_on_one_half_and_tests_on_the_other():
    chosen, hits, weights = held_out_choice(RESULTS, ["b", "a", "c"], CHOOSE, TEST)
    assert chosen == "a"  # ties with "c" go to the one listed first
    assert hits.tolist() == [0.0, 0.0, 1.0]  # "a" on pairs 3-5
    assert weights.tolist() == pytest.approx([0.25, 0.5, 0.25])  # classes 1, 0, 1: 1/(2*2), 1/(2*1), 1/(2*2)
    assert float((weights * hits).sum()) == pytest.approx((1 / 2 + 0 / 1) / 2)  # "a" on the test pairs: class 1 1 of 2, class 0 0 of 1
    assert held_out_choice(RESULTS, ["c", "a"], CHOOSE, TEST).chosen == "c"


def test_held_out_choice_on_the_difficult_pairs():
    # the one difficult choosing pair, 1 (class 0): "b" hits it, "a" misses it.
    chosen, hits, weights = held_out_choice(RESULTS, ["b", "a"], CHOOSE, TEST, subset="difficult")
    assert chosen == "b"
    assert hits.tolist() == [1.0, 1.0]  # "b" on the difficult test pairs 3 (class 1) and 4 (class 0)
    assert weights.tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="no candidates"):
        held_out_choice(RESULTS, [], CHOOSE, TEST)
    with pytest.raises(ValueError, match="subset"):
        held_out_choice(RESULTS, ["a"], CHOOSE, TEST, subset="hard")


def test_best_in_sample():
    # all pairs: a: class 0 2/3, class 1 2/3 -> 2/3; b: 3/3, 2/3 -> 5/6; c: 2/3, 3/3 -> 5/6
    assert best_in_sample(RESULTS, ["a", "b", "c"]) == "b"
    assert best_in_sample(RESULTS, ["a", "c", "b"]) == "c"
    none_difficult = {"x": result([True] * 6, difficult=(False,) * 6), "y": result([False] * 6)}
    assert best_in_sample(none_difficult, ["x", "y"], subset="difficult") == "y"  # x's nan ranks last


def test_disjoint_groups_by_hand():
    labels = [0, 0, 1, 1, 2, 2, 3, 3]
    groups = disjoint_groups(labels, 5, seed=3)
    order = torch.randperm(8, generator=torch.Generator().manual_seed(3)).tolist()
    # replay the rule by hand: each image joins the first open group without its class
    open_groups, closed = [], []
    for i in order:
        for g in open_groups:
            if all(labels[j] != labels[i] for j in g):
                g.append(i)
                break
        else:
            open_groups.append([i])
            g = open_groups[-1]
        if len(g) == 4:
            open_groups.remove(g)
            closed.append(g)
    assert groups.tolist() == closed
    assert len(groups) == 2 and sorted(groups.flatten().tolist()) == list(range(8))  # no image twice
    assert all(len({labels[i] for i in g}) == 4 for g in groups.tolist())
    assert disjoint_groups(labels, 1, seed=3).tolist() == closed[:1]
    assert disjoint_groups(labels, 0).shape == (0, 4)
    assert disjoint_groups([0, 0, 0, 0], 3).shape == (0, 4)  # one class: no group of four classes
    with pytest.raises(ValueError, match="tiles"):
        disjoint_groups(labels, 2, tiles=0)


def test_held_out_choice_refuses_overlapping_empty_or_non_bool_halves():
    results = {"a": result([1, 1, 0, 1, 1, 0]), "b": result([0, 1, 1, 0, 1, 1])}
    choose = torch.tensor([True, True, True, False, False, False])
    with pytest.raises(ValueError, match="share 1 pairs; they must be disjoint"):
        held_out_choice(results, ["a", "b"], choose, torch.tensor([False, False, True, True, True, True]))
    with pytest.raises(ValueError, match="no choosing pair"):
        held_out_choice(results, ["a", "b"], torch.zeros(6, dtype=torch.bool), ~choose)
    # choosing pairs, none difficult (a small data set): nothing claimed, as with no pairs at all
    few = held_out_choice(results, ["b", "a"], torch.tensor([True, False, True, False, False, True]),
                          torch.tensor([False, True, False, True, True, False]), subset="difficult")
    assert few.chosen == "b" and few.hits.numel() == 0 and few.weights.numel() == 0
    none = torch.zeros(6, dtype=torch.bool)  # no pair at all (no data root): nothing chosen on, nothing claimed
    assert held_out_choice(results, ["b", "a"], none, none).chosen == "b"
    assert held_out_choice(results, ["b", "a"], none, none).hits.numel() == 0
    with pytest.raises(TypeError, match="bool mask"):
        held_out_choice(results, ["a", "b"], [0, 1, 2], [3, 4, 5])  # positions, not masks
    with pytest.raises(ValueError, match=r"bool mask \(6,\)"):
        held_out_choice(results, ["a", "b"], choose[:3], ~choose)
    with pytest.raises(TypeError, match="candidates must be a list"):
        held_out_choice({"ab": results["a"], "a": results["a"], "b": results["b"]}, "ab", choose, ~choose)
    with pytest.raises(ValueError, match="different pairs"):
        held_out_choice({"a": results["a"], "b": result([1, 0], labels=(0, 1), difficult=(False, False))}, ["a", "b"], choose, ~choose)
    with pytest.raises(ValueError, match=r"\['c'\] are not keys"):
        best_in_sample(results, ["a", "c"])


def test_disjoint_groups_refuses_counts_and_labels_that_are_not_integers():
    assert disjoint_groups([], 3).shape == (0, 4)
    for arguments, error, message in ((dict(count=1.5), TypeError, "count must be an integer"),
                                      (dict(count=None), TypeError, "count must be an integer"),
                                      (dict(tiles=2.0), TypeError, "tiles must be an integer"),
                                      (dict(count=True), TypeError, "count must be an integer"),
                                      (dict(seed=None), TypeError, "seed must be an integer"),
                                      (dict(labels=[0.5, 0.7, 1.2]), ValueError, "integer class indices"),
                                      (dict(labels=[[0, 1], [2, 3]]), ValueError, "integer class indices")):
        arguments = dict(labels=[0, 1, 2, 3], count=1) | arguments
        with pytest.raises(error, match=message):
            disjoint_groups(arguments.pop("labels"), arguments.pop("count"), **arguments)
