r"""Paired comparisons of pointing-game results on the same image-category pairs.

Two maps scored on the same pairs (:class:`lib.metrics.pointing.PointingResult`) differ in
class-mean accuracy by a weighted sum of per-pair hit differences (Zhang et al. 2016's
pointing game, averaged per class as TorchRay does):

.. math::
    \mathrm{acc}_A - \mathrm{acc}_B = \sum_i w_i\,(\mathrm{hit}^A_i - \mathrm{hit}^B_i),
    \qquad w_i = \frac{1}{C\,n_{c(i)}},

so the paired sign-flip test of :func:`lib.metrics.stats.sign_flip` with these weights
(:meth:`PointingResult.class_weights`) gives its interval: :func:`paired_difference`.
:func:`select` restricts a result to some pairs (its class weights then follow them),
:func:`paired_hits` hands the claims of :mod:`lib.claims` the per-pair hits and weights of
several results on the same pairs, and :func:`comparison_row` is one row of a chapter's
comparison table (accuracy, bootstrap interval, paired differences, in points).
"""

from __future__ import annotations

from typing import Hashable, Iterable, Mapping, Sequence

import torch

from .pointing import PointingResult, pointing_interval
from .stats import SignFlip, sign_flip

__all__ = ["select", "paired_difference", "paired_hits", "points_text", "comparison_row"]

SUBSETS = ("all", "difficult")


def _check_subset(subset) -> None:
    if subset not in SUBSETS:
        raise ValueError(f"subset must be 'all' or 'difficult', got {subset!r}")


def _subset_mask(result: PointingResult, subset: str) -> torch.Tensor:
    _check_subset(subset)
    return torch.ones_like(result.hits, dtype=torch.bool) if subset == "all" else result.difficult.to(torch.bool)


def _check_result(result, what: str) -> None:
    if not isinstance(result, PointingResult):
        raise TypeError(f"{what} must be a PointingResult (lib.metrics.pointing), got {type(result).__name__}")


def select(result: PointingResult, keep) -> PointingResult:
    """The result on some of its pairs: accuracies and class weights recomputed on them.

    Args:
        result: a :class:`PointingResult` of ``N`` pairs.
        keep: a bool mask ``(N,)`` (tensor, array or list), integer positions in ``[-N, N)``,
            or a slice.

    Returns:
        A :class:`PointingResult` of the kept pairs, in their order.

    Raises:
        ValueError: a bool mask of another length than ``N``, a position out of range, or
            a mask or positions that are not one-dimensional.
        TypeError: ``keep`` is none of these (None, a single int, floats).
    """
    _check_result(result, "select: result")
    count = result.hits.numel()
    if not isinstance(keep, slice):
        if keep is None or isinstance(keep, (bool, int, float, str)):
            raise TypeError(f"select: keep must be a bool mask ({count},), integer positions or a slice, got {keep!r}")
        keep = torch.as_tensor(keep)
        if keep.dim() != 1:
            raise ValueError(f"select: keep must be one-dimensional, got shape {tuple(keep.shape)}")
        if keep.dtype == torch.uint8:
            keep = keep.to(torch.bool)
        if keep.dtype == torch.bool:
            if keep.numel() != count:
                raise ValueError(f"select: a mask of {keep.numel()} for {count} pairs")
        elif keep.is_floating_point() or keep.is_complex():
            raise TypeError(f"select: keep must be a bool mask ({count},), integer positions or a slice, got dtype {keep.dtype}")
        elif keep.numel() and not bool(((keep >= -count) & (keep < count)).all()):
            raise ValueError(f"select: positions must lie in [-{count}, {count}), got {keep[(keep < -count) | (keep >= count)][0].item()}")
        keep = keep.to(result.hits.device)
    return PointingResult.from_hits(result.hits[keep], result.labels[keep], result.difficult[keep], result.points[keep])


def paired_difference(result: PointingResult, other: PointingResult, *, subset: str = "all", seed: int = 0,
                      **options) -> SignFlip | None:
    r"""Class-weighted paired difference of accuracies, :math:`\sum_i w_i (\mathrm{hit}^A_i - \mathrm{hit}^B_i)`, and its sign-flip interval.

    The weights are the class-mean weights of the subset's pairs (:meth:`PointingResult.class_weights`),
    so the value is ``accuracy(result) - accuracy(other)`` on the subset (in [-1, 1]).

    Args:
        result, other: results on the same pairs (the same labels, in the same order).
        subset: ``"all"`` or ``"difficult"`` (``result``'s difficult flags).
        seed: the sign patterns' randomness (more than 12 pairs).
        **options: further keywords of :func:`lib.metrics.stats.sign_flip` (``level``, ``resamples``).

    Returns:
        :class:`lib.metrics.stats.SignFlip`, or None when the subset has no pair.

    Raises:
        ValueError: the two results are on different pairs, or an unknown subset.
        TypeError: an argument that is not a :class:`PointingResult`.
    """
    _check_result(result, "paired_difference: result")
    _check_result(other, "paired_difference: other")
    keep = _subset_mask(result, subset)
    if not torch.equal(result.labels, other.labels):
        raise ValueError(f"paired_difference: the results are on different pairs ({result.labels.numel()} and "
                         f"{other.labels.numel()} pairs, or other labels)")
    if not bool(keep.any()):
        return None
    differences = result.hits[keep].double() - other.hits[keep].double()
    return sign_flip(differences, result.class_weights(subset)[keep], seed=seed, **options)


def _keys(results: Mapping, keys, what: str, name: str = "keys") -> list:
    """``keys`` as a list, each one of ``results``; a lone string is refused (it would be read as its letters)."""
    if not isinstance(results, Mapping):
        raise TypeError(f"{what}: results must be a mapping {{key: PointingResult}}, got {type(results).__name__}")
    if isinstance(keys, (str, bytes)) or not isinstance(keys, Iterable):
        raise TypeError(f"{what}: {name} must be a list of keys of results, got {keys!r}")
    keys = list(keys)
    if not keys:
        raise ValueError(f"{what}: no {name}")
    missing = [key for key in keys if key not in results]
    if missing:
        raise ValueError(f"{what}: {missing} are not keys of results; they are {list(results)}")
    return keys


def paired_hits(results: Mapping[Hashable, PointingResult], keys: Sequence[Hashable], keep=None) -> tuple[dict, torch.Tensor]:
    """Per-pair hits of several results on the same pairs, and the class weights of those pairs.

    What a claim of :mod:`lib.claims` on pointing needs: values per unit (hits in {0, 1})
    and the weights making their weighted mean the class-mean accuracy.

    Args:
        results: ``{key: PointingResult}`` on the same pairs.
        keys: the results to take.
        keep: pairs to keep (bool mask, positions or slice); None: all.

    Returns:
        ``({key: float64 hits on the kept pairs}, float64 class weights of the kept pairs)``.

    Raises:
        ValueError: no key, a key not in ``results``, or results on different pairs.
        TypeError: ``keys`` given as one string (a list of keys is needed).
    """
    keys = _keys(results, keys, "paired_hits")
    keep = slice(None) if keep is None else keep
    chosen = {key: select(results[key], keep) for key in keys}
    first = next(iter(chosen.values()))
    if any(not torch.equal(r.labels, first.labels) for r in chosen.values()):
        raise ValueError("paired_hits: the results are on different pairs")
    return {key: r.hits.double() for key, r in chosen.items()}, first.class_weights()


def points_text(statistic, *, signed: bool = False, empty: str = "–") -> str:
    """``"57.3 [52.1, 62.0]"`` (or ``"+1.2 [-0.4, +2.9]"`` when ``signed``): a value and its interval, in points (x 100).

    Args:
        statistic: anything with ``value``, ``low`` and ``high`` in [0, 1] units
            (:class:`lib.metrics.stats.Interval`, :class:`lib.metrics.stats.SignFlip`), or None.
        signed: print the sign (differences).
        empty: the text for None.
    """
    if statistic is None:
        return empty
    if not all(hasattr(statistic, name) for name in ("value", "low", "high")):
        raise TypeError(f"points_text: expected an Interval or SignFlip (value, low, high) or None, got {type(statistic).__name__}")
    number = "{:+.1f}" if signed else "{:.1f}"
    value, low, high = (number.format(100 * v) for v in (statistic.value, statistic.low, statistic.high))
    return f"{value} [{low}, {high}]"


def comparison_row(result: PointingResult, against: Mapping[str, PointingResult | None] | None = None, *,
                   subset: str = "all", resamples: int = 2000, seed: int = 0) -> dict:
    """One row of a pointing comparison table: the result on a subset and its paired differences, in points.

    Args:
        result: the map's :class:`PointingResult`.
        against: ``{column: other result on the same pairs}``; a column's text is the
            class-weighted paired difference ``result - other`` with its 95% sign-flip interval
            (:func:`paired_difference`), ``"–"`` where the other is None, ``result`` itself or the subset empty.
        subset: ``"all"`` or ``"difficult"``.
        resamples: bootstrap resamples of the accuracy's interval (:func:`pointing_interval`).
        seed: the bootstrap's and the sign flips' randomness.

    Returns:
        ``{"pairs", "categories", "accuracy %", "95% interval", <against columns>}``; for
        ``subset="all"`` also ``"difficult %"`` and ``"difficult pairs"``.

    Raises:
        ValueError: an unknown subset, an ``against`` result on other pairs, or resamples below 1.
        TypeError: ``against`` that is not a mapping, or a result that is not a :class:`PointingResult`.
    """
    _check_result(result, "comparison_row: result")
    if against is not None and not isinstance(against, Mapping):
        raise TypeError(f"comparison_row: against must be a mapping {{column: PointingResult or None}}, got {type(against).__name__}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"comparison_row: resamples must be a positive integer, got {resamples!r}")
    keep = _subset_mask(result, subset)
    count = int(keep.sum())
    accuracy = result.accuracy if subset == "all" else result.accuracy_difficult
    interval = pointing_interval(result, subset=subset, resamples=resamples, seed=seed) if count else None
    row = {"pairs": count, "categories": int(torch.unique(result.labels[keep]).numel()),
           "accuracy %": round(100 * accuracy, 1) if count else float("nan"),
           "95% interval": "–" if interval is None else f"[{100 * interval.low:.1f}, {100 * interval.high:.1f}]"}
    if subset == "all":
        row |= {"difficult %": round(100 * result.accuracy_difficult, 1), "difficult pairs": int(result.difficult.sum())}
    for column, other in (against or {}).items():
        test = None if other is None or other is result else paired_difference(result, other, subset=subset, seed=seed)
        row[column] = points_text(test, signed=True)
    return row
