"""Choosing a configuration, or grouping units, so that the later test is not biased by the choice.

The best of ``k`` configurations chosen and scored on the same units looks better than it
is (a selection effect, the "winner's curse"); chosen on one half of the images and scored on
the other it does not (Rebuffi et al. 2020 choose layers and combinations on their data;
here :func:`held_out_choice` chooses on ``choose`` and tests on ``test``, the halves of
:func:`lib.saliency.combine.image_halves`).  :func:`best_in_sample` is the paper's in-sample
choice, kept for the descriptive tables.  :func:`disjoint_groups` draws groups of images of
different classes, no image in two groups, so that the grids of Böhle et al. 2022's grid
pointing game are independent units.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from ..saliency.combine import best_candidate
from .pointing import PointingResult
from .pointing_pairs import _keys, paired_hits

__all__ = ["HeldOut", "held_out_choice", "best_in_sample", "disjoint_groups"]


class HeldOut(NamedTuple):
    """A configuration chosen on some pairs and the per-pair outcomes it is tested on."""

    chosen: Hashable
    hits: torch.Tensor  # float64, the chosen configuration's hits on the test pairs
    weights: torch.Tensor  # float64, the class weights of the test pairs


def _check_subset(subset) -> None:
    if subset not in ("all", "difficult"):
        raise ValueError(f"subset must be 'all' or 'difficult', got {subset!r}")


def _mask(mask, count: int, what: str) -> torch.Tensor:
    """A bool mask over the ``count`` pairs (a tensor, array or list of bools)."""
    if isinstance(mask, (bool, int, float, str)) or mask is None:
        raise TypeError(f"held_out_choice: {what} must be a bool mask over the {count} pairs, got {mask!r}")
    mask = torch.as_tensor(mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"held_out_choice: {what} must be a bool mask over the {count} pairs, got dtype {mask.dtype} "
                        "(positions? make a mask: torch.zeros(n, dtype=torch.bool) then set them)")
    if tuple(mask.shape) != (count,):
        raise ValueError(f"held_out_choice: {what} must be a bool mask ({count},), one per pair, got shape {tuple(mask.shape)}")
    return mask


def held_out_choice(results: Mapping[Hashable, PointingResult], candidates: Sequence[Hashable], choose, test, *,
                    subset: str = "all") -> HeldOut:
    r"""The candidate with the best class-mean pointing accuracy on the ``choose`` pairs, and its hits on the ``test`` pairs.

    The choice maximises :math:`\sum_i w_i\,\mathrm{hit}_i` over the choosing pairs (their
    class weights, :meth:`PointingResult.class_weights`; ties go to the candidate listed
    first, :func:`lib.saliency.combine.best_candidate`); the test pairs, disjoint from them,
    then give an unbiased per-pair sample of the chosen configuration.

    Args:
        results: ``{configuration: PointingResult}``, all on the same pairs.
        candidates: the configurations to choose among, in tie-breaking order.
        choose, test: disjoint bool masks over the pairs (e.g. :func:`lib.saliency.combine.image_halves`).
        subset: ``"all"`` or ``"difficult"`` (both halves restricted to the difficult pairs).

    Returns:
        :class:`HeldOut` ``(chosen, hits on test, class weights on test)``. With no pair at all
        in the subset (no data root), or no choosing pair in the subset (too few difficult pairs),
        the first candidate with no hits: a claim on it has n = 0, so it is not tested.

    Raises:
        ValueError: no candidates, an unknown subset, results on different pairs, masks of
            another length, masks that share a pair (the choice would be tested on its own
            pairs), or test pairs but an empty ``choose`` mask (nothing to choose on).
        TypeError: masks that are not bool, candidates given as one string.
    """
    candidates = _keys(results, candidates, "held_out_choice", "candidates")
    _check_subset(subset)
    first = results[candidates[0]]
    if any(not torch.equal(results[key].labels, first.labels) for key in candidates):
        raise ValueError("held_out_choice: the results are on different pairs (other labels or another number of pairs)")
    count = first.labels.numel()
    choose, test = _mask(choose, count, "choose"), _mask(test, count, "test")
    if bool((choose & test).any()):
        raise ValueError(f"held_out_choice: choose and test share {int((choose & test).sum())} pairs; "
                         "they must be disjoint (e.g. lib.saliency.combine.image_halves)")
    difficult = first.difficult.to(torch.bool)
    on_choose, on_test = ((m & difficult) if subset == "difficult" else m.clone() for m in (choose, test))
    empty = torch.zeros(0, dtype=torch.float64)
    if not bool(on_choose.any()) and not bool(on_test.any()):  # no pairs at all (no data): nothing is claimed
        return HeldOut(candidates[0], empty, empty)
    if not bool(choose.any()):
        raise ValueError("held_out_choice: no choosing pair; nothing to choose on")
    if not bool(on_choose.any()):  # choosing pairs, none of them difficult (a small set): nothing is claimed
        return HeldOut(candidates[0], empty, empty)
    hits, weights = paired_hits(results, candidates, on_choose)
    chosen = best_candidate(hits, weights, candidates)
    tested, test_weights = paired_hits(results, [chosen], on_test)
    return HeldOut(chosen, tested[chosen], test_weights)


def best_in_sample(results: Mapping[Hashable, PointingResult], candidates: Sequence[Hashable], *,
                   subset: str = "all") -> Hashable:
    """The candidate with the highest class-mean accuracy on all its pairs (in-sample: descriptive only).

    An undefined accuracy (no pair in the subset) ranks last; ties go to the candidate listed first.

    Raises:
        ValueError: no candidates, a candidate not in ``results``, or an unknown subset.
        TypeError: candidates given as one string.
    """
    candidates = _keys(results, candidates, "best_in_sample", "candidates")
    _check_subset(subset)
    attribute = "accuracy" if subset == "all" else "accuracy_difficult"

    def score(key) -> float:
        value = getattr(results[key], attribute)
        return -1.0 if math.isnan(value) else value

    return max(candidates, key=score)


def disjoint_groups(labels, count: int, *, tiles: int = 4, seed: int = 0) -> torch.Tensor:
    """Up to ``count`` groups of ``tiles`` images of different classes, no image in two groups.

    Images are visited in a seeded random order; each joins the first open group holding no
    image of its class (or opens a new one), and a group closes when it has ``tiles`` images.
    Unlike :func:`lib.metrics.pointing.grid_groups`, which may reuse images across groups,
    the grids made from these groups share no image, so they are independent units of a test.

    Args:
        labels: ``(N,)`` class of each image.
        count: the most groups wanted (fewer when the images run out).
        tiles: images per group.
        seed: the visiting order's randomness.

    Returns:
        int64 ``(G, tiles)``, ``G <= count``: indices into ``labels``, in the order each group filled.

    Raises:
        ValueError: a negative ``count``, ``tiles`` below 1, or labels that are not one
            integer class per image.
        TypeError: ``count``, ``tiles`` or ``seed`` that is not an integer (a float, a bool, None).
    """
    for what, value, low in (("count", count, 0), ("tiles", tiles, 1), ("seed", seed, None)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (low is not None and value < low):
            bound = f"an integer >= {low}" if low is not None else "an integer"
            raise (ValueError if isinstance(value, (int, np.integer)) and not isinstance(value, bool) else TypeError)(
                f"disjoint_groups: {what} must be {bound}, got {value!r}")
    try:
        labels = torch.as_tensor(labels)
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"disjoint_groups: labels must be integer class indices (N,), got {type(labels).__name__}") from None
    if labels.dim() != 1 or (labels.numel() and (labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool)):
        raise ValueError(f"disjoint_groups: labels must be integer class indices (N,), got dtype {labels.dtype} "
                         f"and shape {tuple(labels.shape)}")
    labels = labels.tolist()
    open_groups, closed = [], []
    if count:
        for i in torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).tolist():
            group = next((g for g in open_groups if all(labels[j] != labels[i] for j in g)), None)
            if group is None:
                group = []
                open_groups.append(group)
            group.append(i)
            if len(group) == tiles:
                open_groups.remove(group)
                closed.append(group)
                if len(closed) == count:
                    break
    return torch.tensor(closed, dtype=torch.long).reshape(-1, tiles)
