"""Extremal perturbations (Fong, Patrick & Vedaldi, ICCV 2019): lib.saliency.perturbation against TorchRay.

TorchRay's ``extremal_perturbation`` takes one image at a time and leaves the model's parameters
frozen, so it gets a copy of the tiny network per image.  Nothing in either is random (the jitter
flips every other iteration), so with the same iterations the masks agree to float32 rounding.
The agreement is that close only because both compute in the same precision: where the area term
dominates (the tiny network's logits move little), masks start with exact ties between symmetric
pixels, and a kernel weight one ulp off breaks those ties differently in the sort of the area term,
which sent the optimisation to the mirror-image mask (Pearson -0.3) until the kernel weights were
computed in float32 as TorchRay computes them.
"""

import copy
import inspect
import math

import pytest
import torch
from torch import nn

from _tiny import images, no_hooks_left, pearson, tiny_cnn
from lib.saliency import extremal_perturbation, registry
from lib.saliency.perturbation import extremal_masks

torchray_ep = pytest.importorskip("torchray.attribution.extremal_perturbation")
pytestmark = pytest.mark.filterwarnings("ignore:torch.meshgrid:UserWarning")  # TorchRay's MaskGenerator

TARGETS = torch.tensor([1, 2, 3])
LIGHT_GRID = {"step": 2, "sigma": 4.0}  # the registry's light grid: a 16 x 16 image in a 23 x 23 frame


def torchray_masks(model, x, targets, *, areas=(0.1,), variant="preserve", perturbation="blur", reward="simple",
                   max_iter=800, step=7, sigma=21.0, jitter=True):
    """TorchRay's masks, image by image: (B, len(areas), H, W)."""
    reward_func = torchray_ep.contrastive_reward if reward == "contrastive" else torchray_ep.simple_reward
    masks = []
    for i in range(x.shape[0]):
        mask, _ = torchray_ep.extremal_perturbation(copy.deepcopy(model), x[i : i + 1], int(targets[i]), areas=list(areas),
                                                    variant=variant, perturbation=perturbation, reward_func=reward_func,
                                                    max_iter=max_iter, step=step, sigma=sigma, jitter=jitter)
        masks.append(mask[:, 0])
    return torch.stack(masks)


def assert_same_masks(ours, theirs):
    assert ours.shape == theirs.shape
    for i in range(ours.shape[0]):
        for k in range(ours.shape[1]):
            assert ours[i, k].std() > 1e-3, "a flat mask would make the comparison vacuous"
            assert pearson(ours[i, k], theirs[i, k]) >= 0.999
    assert torch.allclose(ours, theirs, atol=1e-4), float((ours - theirs).abs().max())


@pytest.mark.parametrize("settings", [
    {},
    {"variant": "delete"},
    {"variant": "dual"},
    {"areas": (0.05, 0.2)},
], ids=["preserve", "delete", "dual", "two areas"])
def test_masks_equal_torchrays_at_its_defaults(settings):
    """TorchRay's grid (step 7, sigma 21) on 48 x 48 images, 40 iterations."""
    model, x = tiny_cnn(), images(3, size=48)
    ours = extremal_masks(model, x, TARGETS, max_iter=40, **settings)
    assert_same_masks(ours, torchray_masks(model, x, TARGETS, max_iter=40, **settings))


@pytest.mark.parametrize("settings", [
    {},
    {"perturbation": "fade"},
    {"reward": "contrastive"},
    {"jitter": False},
    {"variant": "dual", "areas": (0.05, 0.3), "batch_size": 1},
    {"max_iter": 1},  # no step: the mask of parameters all at 1
], ids=["preserve", "fade", "contrastive", "no jitter", "dual two areas one mask at a time", "one iteration"])
def test_masks_equal_torchrays_on_the_light_grid(settings):
    model, x = tiny_cnn(), images(3, size=16)
    settings = {"max_iter": 60, **LIGHT_GRID, **settings}
    ours = extremal_masks(model, x, TARGETS, **settings)
    settings.pop("batch_size", None)
    assert_same_masks(ours, torchray_masks(model, x, TARGETS, **settings))


def test_the_map_is_the_normalised_sum_of_torchrays_masks_over_the_areas():
    """The documented choice for several areas: TorchRay's pointing benchmark sums its masks."""
    model, x = tiny_cnn(), images(2, size=16)
    settings = {"areas": (0.05, 0.2), "max_iter": 30, **LIGHT_GRID}
    summed = torchray_masks(model, x, TARGETS, **settings).sum(dim=1)
    low, high = summed.amin(dim=(1, 2), keepdim=True), summed.amax(dim=(1, 2), keepdim=True)
    maps = extremal_perturbation(model, x, TARGETS[:2], **settings)
    assert torch.allclose(maps, (summed - low) / (high - low), atol=1e-4)
    assert torch.allclose(extremal_perturbation(model, x, TARGETS[:2], raw=True, **settings), summed, atol=1e-5)


class _RegionEnergy(nn.Module):
    """Class 0 scores the mean squared value of the pixels in ``rows`` x ``cols``; class 1 is 0."""

    def __init__(self, rows: slice, cols: slice):
        super().__init__()
        self.rows, self.cols = rows, cols

    def forward(self, x):
        score = (x[:, :, self.rows, self.cols] ** 2).mean(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_the_preserved_mask_has_the_target_area_and_lies_on_the_region_the_score_reads():
    """A checkerboard inside a 14 x 14 region R of a black 32 x 32 image, scored by its energy in R:
    any blur of R lowers the score and nothing outside R counts, so the preserved mask must sit on
    R.  R is symmetric left to right, so the jitter's flip does not move it.  The area a = 0.1 is a
    fraction of the mask's frame, 43 x 43 pixels for step 3 and sigma 5 (TorchRay's layout:
    ceil(32 / 3) = 11 cells, 1 + ceil(10 / 3) = 5 of padding, a window of 7, 3 (11 + 10 - 7) + 1 = 43)."""
    rows, cols = slice(4, 18), slice(9, 23)
    x = torch.zeros(1, 3, 32, 32)
    x[:, :, rows, cols] = ((torch.arange(32)[:, None] + torch.arange(32)[None, :]) % 2 * 2 - 1.0)[rows, cols]
    region = torch.zeros(32, 32, dtype=torch.bool)
    region[rows, cols] = True
    mask = extremal_masks(_RegionEnergy(rows, cols).eval(), x, 0, areas=0.1, max_iter=300, step=3, sigma=5.0)[0, 0]
    assert abs(float(mask.sum()) / 43**2 - 0.1) < 0.02  # measured: 0.108
    assert mask[region].mean() > 0.75 and mask[~region].mean() < 0.1  # measured: 0.82 and 0.045
    assert mask[region].sum() / mask.sum() > 0.75  # measured: 0.81


class _Constant(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 5)

    def forward(self, x):
        return self.fc(x.mean(dim=(1, 2, 3))[:, None] * 0.0)


def test_on_a_model_that_ignores_the_image_the_area_term_alone_shapes_the_mask_as_torchrays():
    """Why the constant-model checks of test_bad_inputs and test_reliability leave this method out:
    with no reward gradient the mask is whatever R_a's sorted ramp makes of the start, not a constant."""
    model, x = _Constant().eval(), images(2, size=16)
    ours = extremal_masks(model, x, torch.tensor([0, 1]), max_iter=20, **LIGHT_GRID)
    theirs = torchray_masks(model, x, torch.tensor([0, 1]), max_iter=20, **LIGHT_GRID)
    assert torch.allclose(ours, theirs, atol=1e-5) and ours.std() > 0.05


@pytest.mark.parametrize("settings, error, mentions", [
    ({"areas": 0.0}, ValueError, "areas"),
    ({"areas": 1.0}, ValueError, "areas"),
    ({"areas": (0.1, 1.5)}, ValueError, "areas[1]"),
    ({"areas": (-0.1,)}, ValueError, "areas[0]"),
    ({"areas": math.nan}, ValueError, "areas"),
    ({"areas": ()}, ValueError, "at least one"),
    ({"areas": "0.1"}, TypeError, "areas"),
    ({"areas": (True,)}, TypeError, "areas[0]"),
    ({"areas": {0.1}}, TypeError, "areas"),
    ({"variant": "keep"}, ValueError, "unknown variant 'keep'; accepted: preserve, delete, dual"),
    ({"variant": 1}, TypeError, "variant"),
    ({"perturbation": "noise"}, ValueError, "unknown perturbation 'noise'"),
    ({"reward": "margin"}, ValueError, "unknown reward 'margin'"),
    ({"max_iter": 0}, ValueError, "max_iter must be an integer >= 1"),
    ({"max_iter": 2.5}, TypeError, "max_iter"),
    ({"num_levels": 1}, ValueError, "num_levels must be an integer >= 2"),
    ({"step": 0}, ValueError, "step"),
    ({"sigma": 0.0}, ValueError, "sigma"),
    ({"max_blur": -1.0}, ValueError, "max_blur"),
    ({"jitter": "yes"}, TypeError, "jitter"),
    ({"step": 7, "sigma": 2.0}, ValueError, "sigma 2.0 is too small for step 7"),
    ({"raw": 1}, TypeError, "raw"),
])
def test_bad_settings_raise_one_clear_error_before_any_pass(settings, error, mentions):
    model, passes = tiny_cnn(), []
    model.register_forward_pre_hook(lambda module, inputs: passes.append(1))
    with pytest.raises(error) as caught:
        extremal_perturbation(model, images(2, size=16), TARGETS[:2], **{**LIGHT_GRID, **settings})
    assert mentions in str(caught.value)
    assert not passes


def test_a_contrastive_reward_needs_a_second_class():
    one_class = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1)).eval()
    with pytest.raises(ValueError, match="at least two classes"):
        extremal_perturbation(one_class, images(1, size=16), 0, reward="contrastive", max_iter=3, **LIGHT_GRID)


def test_the_model_and_the_images_come_back_as_given_where_torchray_leaves_them_frozen():
    model, x = tiny_cnn().train(), images(2, size=16)
    model.fc.bias.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    state = {k: v.clone() for k, v in model.state_dict().items()}
    given = x.clone()
    with pytest.warns(UserWarning, match="training mode"):
        extremal_perturbation(model, x, TARGETS[:2], variant="dual", max_iter=5, **LIGHT_GRID)
    assert [p.requires_grad for p in model.parameters()] == flags and model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert torch.equal(x, given) and no_hooks_left(model)
    frozen = tiny_cnn()
    torchray_masks(frozen, x[:1], TARGETS, max_iter=2, **LIGHT_GRID)  # on a copy, as every call here
    torchray_ep.extremal_perturbation(frozen, x[:1], 1, max_iter=2, **LIGHT_GRID)
    assert not any(p.requires_grad for p in frozen.parameters())


def test_masks_are_the_same_whatever_the_chunk_and_the_batch():
    model, x = tiny_cnn(), images(3, size=16)
    settings = {"areas": (0.05, 0.2), "variant": "dual", "max_iter": 15, **LIGHT_GRID}
    together = extremal_masks(model, x, TARGETS, batch_size=None, **settings)
    assert torch.allclose(extremal_masks(model, x, TARGETS, batch_size=4, **settings), together, atol=1e-6)
    alone = torch.cat([extremal_masks(model, x[i : i + 1], TARGETS[i : i + 1], **settings) for i in range(3)])
    assert torch.allclose(alone, together, atol=1e-6)


def test_the_registry_entry_cites_the_paper_and_the_defaults_are_torchrays():
    entry = registry.get("extremal_perturbation")
    assert (entry.paper, entry.equation, entry.family) == ("fong2019understanding", "Sec. 3, Eqs. 3-8", "perturbation")
    theirs = inspect.signature(torchray_ep.extremal_perturbation).parameters
    ours = entry.defaults
    assert list(ours["areas"]) == theirs["areas"].default
    for name in ("variant", "perturbation", "max_iter", "num_levels", "step", "sigma", "jitter"):
        assert ours[name] == theirs[name].default, name
    assert ours["reward"] == "simple" and theirs["reward_func"].default is torchray_ep.simple_reward
    assert ours["max_blur"] == inspect.signature(torchray_ep.Perturbation).parameters["max_blur"].default
