"""Checks of the metrics' inputs, shared so that every metric words a bad input the same way.

Each check raises one error that names the function, the argument, what was wrong and what
is accepted: ``ValueError`` for a bad value (NaN, out of range), ``TypeError`` for a bad
type (a float where a count is needed, a list where a tensor is).
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence

import numpy as np
import torch

MAP_HINT = "a saliency map must be finite"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _counts(value: torch.Tensor) -> str:
    """``"3 NaN values"``, ``"1 NaN value and 2 infinite values"``."""
    nan, inf = int(torch.isnan(value).sum()), int(torch.isinf(value).sum())
    return " and ".join(([_plural(nan, "NaN value")] if nan else []) + ([_plural(inf, "infinite value")] if inf else []))


def _what_is_wrong(value: torch.Tensor) -> str:
    """``"has 3 NaN values"``, ``"is infinite"``, ``"has 1 NaN value and 2 infinite values"``."""
    if value.dim() == 0:
        return "is NaN" if bool(torch.isnan(value)) else "is infinite"
    return "has " + _counts(value)


def check_tensor(value, what: str, shape: str) -> torch.Tensor:
    """``value`` as a real tensor, else a TypeError naming ``what`` and the accepted ``shape``.

    Raises:
        TypeError: not a ``torch.Tensor``, or a complex one.
    """
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor {shape}, got {type(value).__name__}")
    if value.is_complex():
        raise TypeError(f"{what} must be a real tensor {shape}, got dtype {value.dtype}")
    return value


def check_finite(values, what: str, *, item: str | None = "image", names: Sequence[str] | None = None,
                 hint: str = MAP_HINT) -> None:
    """Refuse NaN or infinite values, naming the first item (along the first dimension) that has some.

    Args:
        values: a tensor (``item`` indexes its first dimension; None: the tensor is one item)
            or a sequence of tensors (one item each).
        what: the function and the argument, e.g. ``"insertion_deletion: maps"``.
        item: what one entry along the first dimension is (``"image"``, ``"map"``, ``"value"``).
        names: the items' names in the message instead of ``f"{item} {i}"``.
        hint: what is accepted, after the semicolon.

    Raises:
        ValueError: ``{what} contain NaN or infinite values (image 3 has 1 NaN value); {hint}``.
    """
    if isinstance(values, torch.Tensor):
        if item is None or values.dim() == 0:
            if not bool(torch.isfinite(values).all()):
                raise ValueError(f"{what} contains NaN or infinite values ({_counts(values.detach())}); {hint}")
            return
        bad = ~torch.isfinite(values.detach())
        rows = bad.flatten(1).any(dim=1) if bad.dim() > 1 else bad
        if not bool(rows.any()):
            return
        items = values.detach()
    else:
        items = list(values)
        rows = torch.tensor([not bool(torch.isfinite(v).all()) for v in items], dtype=torch.bool)
        if not bool(rows.any()):
            return
    first = int(rows.nonzero()[0, 0])
    label = names[first] if names is not None else f"{item} {first}"
    count = int(rows.sum())
    others = f"; {count} of {len(rows)} {item or 'item'}s are not finite" if count > 1 else ""
    raise ValueError(f"{what} contain NaN or infinite values ({label} {_what_is_wrong(items[first])}{others}); {hint}")


def check_range(values: torch.Tensor, what: str, low: float, high: float, *, item: str = "image", hint: str) -> None:
    """Refuse values outside ``[low, high]`` (finite values: run :func:`check_finite` first).

    Raises:
        ValueError: ``{what} must lie in [low, high] (image 2 has values in [-0.5, 1]); {hint}``.
    """
    flat = values.detach().flatten(1) if values.dim() > 1 else values.detach().reshape(-1, 1)
    outside = ((flat < low) | (flat > high)).any(dim=1)
    if bool(outside.any()):
        first = int(outside.nonzero()[0, 0])
        row = flat[first]
        raise ValueError(f"{what} must lie in [{low:g}, {high:g}] ({item} {first} has values in "
                         f"[{float(row.min()):g}, {float(row.max()):g}]); {hint}")


def check_int(value, what: str, low: int | None = None) -> int:
    """``value`` as an int (Python or NumPy integer, not a bool), at least ``low``.

    Raises:
        TypeError: a float (even ``2.0``), a bool, a string, None.
        ValueError: an integer below ``low``.
    """
    accepted = "an integer" if low is None else f"an integer >= {low}"
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        raise TypeError(f"{what} must be {accepted}, got {type(value).__name__} {value!r}") from None
    if low is not None and number < low:
        raise ValueError(f"{what} must be {accepted}, got {number}")
    return number


def check_real(value, what: str, *, low: float = -math.inf, high: float = math.inf, low_open: bool = False,
               high_open: bool = False) -> float:
    """``value`` as a finite float in the interval ``low .. high`` (open at an end when asked).

    Raises:
        TypeError: not a real number (a string, None, a tensor of several values) or a bool.
        ValueError: NaN, infinite, or outside the interval.
    """
    if math.isfinite(low) and math.isfinite(high):
        accepted = f"a finite number in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif math.isfinite(low):
        accepted = f"a finite number {'>' if low_open else '>='} {low:g}"
    elif math.isfinite(high):
        accepted = f"a finite number {'<' if high_open else '<='} {high:g}"
    else:
        accepted = "a finite number"
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{what} must be {accepted}, got {type(value).__name__} {value!r}")
    number = float(value)
    inside = math.isfinite(number) and (number > low if low_open else number >= low) and (
        number < high if high_open else number <= high)
    if not inside:
        raise ValueError(f"{what} must be {accepted}, got {value!r}")
    return number
