"""Every metric of lib.metrics refuses a non-finite map with one error, worded the same way.

Before, NaN passed most of them: a NaN sorts as the largest value (insertion/deletion ranked it
first, Spearman ranked it last), ``NaN < 0`` is False (density's range check let it through),
and the result was a number, or NaN, with no error.
"""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from _tiny import images, tiny_cnn
from lib.metrics import _checks
from lib.metrics import class_sensitivity, density, insertion_deletion, pointing, sanity
from lib.metrics.adversarial_sanity import cleaning_curve


class Constant(nn.Module):
    def forward(self, x):
        return torch.stack([x[:, 0].mean(dim=(1, 2)), torch.zeros(x.shape[0])], dim=1)


def _maps(batch=3, size=16):
    maps = torch.rand(batch, size, size, generator=torch.Generator().manual_seed(0))
    maps[1, 5, 7] = float("nan")
    return maps


CALLS = {
    "insertion_deletion": lambda m: insertion_deletion.insertion_deletion(
        Constant(), images(3), m, 0, step=64, insertion_substrate="zeros", deletion_substrate="zeros"),
    "causal_curves": lambda m: insertion_deletion.causal_curves(Constant(), images(3), m, 0, step=64, substrate_kind="zeros"),
    "map_density": lambda m: density.map_density(Constant(), images(3), m, 0, space="input"),
    "relative_difference": lambda m: density.relative_difference(m.nan_to_num(), m),
    "spearman": lambda m: sanity.spearman(m.nan_to_num(), m),
    "ssim": lambda m: sanity.ssim(m.nan_to_num(), m),
    "max_min_correlation": lambda m: class_sensitivity.max_min_correlation(m.nan_to_num(), m),
    "grid_pointing": lambda m: pointing.grid_pointing(torch.cat([m, m[:1]])),
    "max_points": lambda m: pointing.max_points(m),
    "cleaning_curve": lambda m: cleaning_curve(tiny_cnn(), images(3).sigmoid(), images(3).sigmoid(), m),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_nan_map_gets_one_error_that_names_the_function_and_the_map(name):
    with pytest.raises(ValueError) as error:
        CALLS[name](_maps())
    message = str(error.value)
    assert message.startswith(f"{name}: "), message
    assert re.search(r" contain NaN or infinite values \((image|map) 1 has 1 NaN value\); a saliency map must be finite",
                     message), message


def test_check_finite_counts_what_is_wrong_and_how_many_items():
    values = torch.zeros(4, 2)
    values[1] = torch.tensor([float("nan"), float("inf")])
    values[3, 0] = -float("inf")
    with pytest.raises(ValueError, match=r"^f: x contain NaN or infinite values \(row 1 has 1 NaN value and 1 infinite "
                                         r"value; 2 of 4 rows are not finite\); hint$"):
        _checks.check_finite(values, "f: x", item="row", hint="hint")
    _checks.check_finite(torch.arange(6).view(2, 3), "f: x")  # integers are always finite
    _checks.check_finite(torch.zeros(2, 3, dtype=torch.bool), "f: x")


def test_number_checks_say_what_is_accepted():
    import numpy as np

    assert _checks.check_int(np.int32(3), "f: n", 1) == 3
    for bad in (3.0, True, "3", None):
        with pytest.raises(TypeError, match="f: n must be an integer >= 1, got"):
            _checks.check_int(bad, "f: n", 1)
    with pytest.raises(ValueError, match="f: n must be an integer >= 1, got 0"):
        _checks.check_int(0, "f: n", 1)
    assert _checks.check_real(np.float32(0.5), "f: p", low=0, high=1) == 0.5
    for bad in (float("nan"), float("inf"), 0.0, 1.5):
        with pytest.raises(ValueError, match=r"f: p must be a finite number in \(0, 1\], got"):
            _checks.check_real(bad, "f: p", low=0, high=1, low_open=True)
    for bad in ("0.5", None, False):
        with pytest.raises(TypeError, match=r"f: p must be a finite number > 0, got"):
            _checks.check_real(bad, "f: p", low=0, low_open=True)
