"""rho+ and rho- of Jalwana et al. 2021, §5.4, on a model whose probabilities are known in closed form."""

import math

import pytest
import torch
from torch import nn

from lib.metrics.density import map_density
from lib.models import Classifier


class MeanOfRed(nn.Module):
    """logits = (mean of channel 0, 0): P(class 0) = sigmoid(mean red)."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x):
        red = self.scale * x[:, 0].mean(dim=(1, 2))
        return torch.stack([red, torch.zeros_like(red)], dim=1)


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_densities_on_hand_made_maps_in_input_space():
    x = torch.zeros(2, 3, 2, 2)
    x[:, 0] = torch.tensor([[4.0, 8.0], [2.0, 6.0]])  # mean 5
    psi = torch.tensor([[[1.0, 0.0], [0.0, 0.0]], [[1.0, 0.5], [0.5, 0.0]]])
    result = map_density(MeanOfRed().eval(), x, psi, torch.tensor([0, 1]), space="input")
    # image 0, label 0: kept red mean 4/4 = 1 over 1 pixel of 4; removed mean (8+2+6)/4 = 4 over 3 pixels.
    assert result.rho_plus[0].item() == pytest.approx(sigmoid(1.0) / 1 * 4, rel=1e-6)
    assert result.rho_minus[0].item() == pytest.approx(sigmoid(4.0) / 3 * 4, rel=1e-6)
    # image 1, label 1 (P = 1 - sigmoid): kept (4 + 4 + 1)/4 = 2.25 over mass 2; removed (0 + 4 + 1 + 6)/4 = 2.75 over 2.
    assert result.rho_plus[1].item() == pytest.approx((1 - sigmoid(2.25)) / 2 * 4, rel=1e-6)
    assert result.rho_minus[1].item() == pytest.approx((1 - sigmoid(2.75)) / 2 * 4, rel=1e-6)
    assert result.p_full.tolist() == pytest.approx([sigmoid(5.0), 1 - sigmoid(5.0)], rel=1e-6)
    assert result.coverage.tolist() == pytest.approx([0.25, 0.5])


def test_full_map_gives_the_confidence_and_empty_mass_is_undefined():
    x = torch.randn(3, 3, 4, 4)
    ones = torch.ones(3, 4, 4)
    result = map_density(MeanOfRed().eval(), x, ones, 0, space="input", batch_size=2)
    assert torch.allclose(result.rho_plus, result.p_full)  # the paper's extreme case
    assert torch.isnan(result.rho_minus).all()


def test_pixel_space_masks_pixel_values_and_checks_inputs():
    model = MeanOfRed().eval()
    classifier = Classifier(model, "mean_red", 2, torch.full((3,), 0.5), torch.full((3,), 0.25), ["a", "b"])
    pixels = torch.zeros(1, 3, 2, 2)
    pixels[0, 0] = torch.tensor([[1.0, 0.5], [0.0, 0.5]])
    x = classifier.normalize(pixels)
    psi = torch.tensor([[[1.0, 1.0], [0.0, 0.0]]])
    result = map_density(classifier, x, psi, 0)
    kept_red = ((torch.tensor([1.0, 0.5, 0.0, 0.0]) - 0.5) / 0.25).mean().item()  # removed pixels are black
    assert result.rho_plus[0].item() == pytest.approx(sigmoid(kept_red) / 2 * 4, rel=1e-6)
    with pytest.raises(ValueError, match="Classifier"):
        map_density(model, x, psi, 0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        map_density(classifier, x, psi * 2, 0)
    with pytest.raises(ValueError, match=r"outside \[0, 2\)"):
        map_density(classifier, x, psi, 5)
    with pytest.raises(ValueError, match="maps must be"):
        map_density(classifier, x, psi[:, :1], 0)


def test_relative_difference_is_eq_5_5():
    from lib.metrics.density import relative_difference

    a = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])  # norm 5
    b = torch.tensor([[[0.0, 0.0], [0.0, 4.0]]])  # norm 4, difference 3
    assert relative_difference(a, b).item() == pytest.approx(3 / 4.5)
    assert relative_difference(a, a).item() == 0
    assert relative_difference(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == 0


class Counting(nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, 0

    def forward(self, x):
        self.calls += 1
        return self.inner(x)


def test_nan_or_negative_maps_are_refused_naming_the_image():
    # NaN passed "min < 0 or max > 1" (every comparison with NaN is False): rho came back NaN.
    x = torch.randn(3, 3, 2, 2)
    psi = torch.full((3, 2, 2), 0.5)
    nan = psi.clone()
    nan[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match=r"map_density: maps contain NaN or infinite values \(image 2 has 1 NaN value\); "
                                         r"a saliency map must be finite, in \[0, 1\]"):
        map_density(MeanOfRed().eval(), x, nan, 0, space="input")
    negative = psi.clone()
    negative[1, 0, 0] = -0.25
    with pytest.raises(ValueError, match=r"map_density: maps must lie in \[0, 1\] \(image 1 has values in \[-0.25, 0.5\]\)"):
        map_density(MeanOfRed().eval(), x, negative, 0, space="input")
    with pytest.raises(TypeError, match=r"map_density: maps must be a torch.Tensor \(B, H, W\)"):
        map_density(MeanOfRed().eval(), x, psi.tolist(), 0, space="input")  # was an AttributeError


def test_labels_and_batch_size_are_checked_before_any_pass():
    model, x, psi = Counting(MeanOfRed()).eval(), torch.randn(3, 3, 2, 2), torch.full((3, 2, 2), 0.5)
    with pytest.raises(ValueError, match="needs the true labels"):
        map_density(model, x, psi, None, space="input")
    with pytest.raises(ValueError, match="one class per image: got 2 for 3 images"):
        map_density(model, x, psi, [0, 1], space="input")
    with pytest.raises(TypeError, match="labels must be class indices"):
        map_density(model, x, psi, True, space="input")  # was refused only after a forward pass
    with pytest.raises(TypeError, match="batch_size must be a positive integer"):
        map_density(model, x, psi, 0, space="input", batch_size=1.5)
    assert model.calls == 0  # the labels were read only after the first forward pass
    import numpy as np

    assert map_density(model, x, psi, np.int64(1), space="input").p_full.shape == (3,)


def test_relative_difference_refuses_nan_and_unbatched_maps_and_accepts_signed_ones():
    from lib.metrics.density import relative_difference

    a = torch.tensor([[[3.0, 0.0], [0.0, 4.0]]])
    b = torch.tensor([[[0.0, 0.0], [0.0, float("nan")]]])
    with pytest.raises(ValueError, match=r"relative_difference: the second maps contain NaN or infinite values \(image 0 has "
                                         r"1 NaN value\)"):
        relative_difference(a, b)  # was a NaN difference
    with pytest.raises(ValueError, match=r"two \(B, H, W\) batches of one shape, got \(2, 2\) and \(2, 2\)"):
        relative_difference(a[0], a[0])  # was read as two maps of two pixels
    with pytest.raises(TypeError, match="relative_difference: first must be a torch.Tensor"):
        relative_difference(a.tolist(), a)
    assert relative_difference(-a, a).item() == pytest.approx(2.0)  # a norm is defined for signed maps
