"""The adversarial-cleaning sanity check (CAMERAS supplementary Sec. 5.7.4, Eqs. 5.7-5.8).

"Ideal" is the paper's (Eq. 5.7): the curve that equals the clean image's probability of its
predicted label from the first cleaning step to the pixel budget, so Area_Ideal = P_GT N.
An ordering attains it when the perturbation lies within the first step's pixels and the
map ranks exactly those first; the reversed map ranks them last.
"""

import pytest
import torch

from _tiny import no_hooks_left
from lib.attacks import pgd, saliency_pgd
from lib.metrics.adversarial_sanity import adversarial_sanity, cleaning_curve, cleaning_order
from test_attacks import pixels, sensitive_cnn

SIZE = 12  # 144 pixels; fraction 0.25 -> budget 36 pixels; 4 steps of 9 pixels


def patch_attack(model, x):
    """Signed-gradient steps against the clean label on a 3 x 3 patch only (9 pixels = one cleaning step)."""
    patch = torch.zeros(x.shape[0], 1, SIZE, SIZE, dtype=torch.bool)
    patch[:, :, 4:7, 5:8] = True
    labels = model(x).argmax(dim=1)
    adversarial = x.clone()
    for _ in range(20):
        current = adversarial.clone().requires_grad_(True)
        score = model(current).log_softmax(dim=1).gather(1, labels.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, current)
        adversarial = torch.where(patch, (adversarial - 0.1 * grad.sign()).clamp(0, 1), x)
    return adversarial.detach(), patch[:, 0]


def test_ideal_ordering_scores_zero_and_reversed_is_worse():
    model = sensitive_cnn()
    x = pixels(4, SIZE)
    adversarial, patch = patch_attack(model, x)
    oracle = (adversarial - x).abs().amax(dim=1)  # ranks the 9 perturbed pixels first
    assert torch.equal(oracle > 0, patch)
    ideal = cleaning_curve(model, x, adversarial, oracle, fraction=0.25, steps=4)
    assert ideal.pixels_cleaned.tolist() == [0, 9, 18, 27, 36]
    # From the first step on, the image is the clean image: the curve is the ideal one.
    assert torch.allclose(ideal.probabilities[:, 1:], ideal.clean_probability.view(-1, 1).expand(-1, 4), atol=1e-6)
    assert torch.allclose(ideal.score(), torch.zeros(4), atol=1e-5)
    assert torch.allclose(ideal.ideal_area(), ideal.clean_probability * 36)

    reversed_ = cleaning_curve(model, x, adversarial, -oracle, fraction=0.25, steps=4)
    adversarial_probability = reversed_.probabilities[:, 0]
    # The perturbed pixels are never reached within the budget: the curve stays at P_adv.
    assert torch.allclose(reversed_.probabilities, adversarial_probability.view(-1, 1).expand(-1, 5), atol=1e-6)
    expected = 1 - adversarial_probability / reversed_.clean_probability
    assert torch.allclose(reversed_.score(), expected, atol=1e-5)
    assert (reversed_.score() > ideal.score() + 0.05).all()

    # A random map lies in between on average.
    random = cleaning_curve(model, x, adversarial, torch.rand(4, SIZE, SIZE, generator=torch.Generator().manual_seed(0)), fraction=0.25, steps=4)
    assert ideal.score().mean() < random.score().mean() < reversed_.score().mean()


def test_curve_matches_hand_cleaning():
    model = sensitive_cnn()
    x = pixels(2, SIZE)
    adversarial = pgd(model, x, epsilon=0.5, steps=5).adversarial
    maps = torch.rand(2, SIZE, SIZE, generator=torch.Generator().manual_seed(4))
    curve = cleaning_curve(model, x, adversarial, maps, fraction=0.5, steps=3)
    assert curve.pixels_cleaned.tolist() == [0, 24, 48, 72]
    labels = model(x).argmax(dim=1)
    assert torch.equal(curve.labels, labels)
    for b in range(2):
        order = maps[b].flatten().argsort(descending=True)  # no ties in a random map
        for k, n in enumerate(curve.pixels_cleaned.tolist()):
            mask = torch.zeros(SIZE * SIZE, dtype=torch.bool)
            mask[order[:n]] = True
            image = torch.where(mask.view(1, SIZE, SIZE), x[b], adversarial[b])
            with torch.no_grad():
                p = model(image[None]).softmax(dim=1)[0, labels[b]]
            assert torch.allclose(curve.probabilities[b, k], p, atol=1e-6)
    # Areas by hand: right Riemann and trapezoid over steps of 24 pixels.
    p = curve.probabilities
    assert torch.allclose(curve.area(), 24 * p[:, 1:].sum(dim=1), atol=1e-5)
    assert torch.allclose(curve.area("trapezoid"), 24 * (p[:, 1:] + p[:, :-1]).sum(dim=1) / 2, atol=1e-5)
    assert torch.allclose(curve.score(), 1 - p[:, 1:].mean(dim=1) / curve.clean_probability, atol=1e-6)
    assert torch.allclose(curve.fraction[-1], torch.tensor(0.5, dtype=torch.float64))


def test_up_to_is_the_curve_of_the_smaller_budget():
    model = sensitive_cnn()
    x = pixels(3, SIZE)
    adversarial = pgd(model, x, epsilon=0.3, steps=4).adversarial
    maps = torch.rand(3, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    wide = cleaning_curve(model, x, adversarial, maps, fraction=0.5, steps=4)  # 0, 18, 36, 54, 72 pixels
    narrow = cleaning_curve(model, x, adversarial, maps, fraction=0.25, steps=2)  # 0, 18, 36
    cut = wide.up_to(0.25)
    assert cut.pixels_cleaned.tolist() == narrow.pixels_cleaned.tolist() == [0, 18, 36]
    assert torch.allclose(cut.probabilities, narrow.probabilities, atol=1e-6)
    assert torch.allclose(cut.score(), narrow.score(), atol=1e-6)
    assert not torch.allclose(cut.score(), wide.score(), atol=1e-3)
    with pytest.raises(ValueError, match="no cleaning step"):
        wide.up_to(0.1)


def test_an_attack_built_from_a_map_favours_that_map():
    """Why the fair ranking cleans plain PGD: the proximal saliency-enhanced attack perturbs only where
    beta (1 - psi) < 1, so cleaning in psi's order removes the whole perturbation at the first step (the
    ideal curve, score 0) while a map of equal support elsewhere leaves it in place."""
    model = sensitive_cnn()
    x = pixels(4, SIZE) * 0.6 + 0.2
    region = torch.zeros(4, SIZE, SIZE)
    region[:, 3:9, 2:8] = 1.0  # 36 pixels: one cleaning step of fraction 0.5 / 2
    elsewhere = torch.zeros(4, SIZE, SIZE)
    elsewhere[:, 6:12, 8:12] = 1.0
    elsewhere[:, 0:3, 8:12] = 1.0
    assert (region * elsewhere).sum() == 0 and elsewhere[0].sum() == 36
    attack = saliency_pgd(model, x, beta=2.0, saliency=region, epsilon=1.0, step_size=0.1, steps=20, random_start=False)
    assert ((attack.perturbation.abs().amax(dim=1) > 0) <= (region > 0)).all()
    own = cleaning_curve(model, x, attack.adversarial, region, fraction=0.5, steps=2)
    other = cleaning_curve(model, x, attack.adversarial, elsewhere, fraction=0.5, steps=2)
    assert torch.allclose(own.score(), torch.zeros(4), atol=1e-5)
    assert torch.allclose(other.probabilities[:, 1], other.probabilities[:, 0])  # its first step cleans nothing
    assert (other.score() > own.score() + 0.05).all()


def test_batching_ties_and_labels():
    model = sensitive_cnn()
    x = pixels(3, SIZE)
    adversarial = pgd(model, x, epsilon=0.3, steps=3).adversarial
    maps = torch.rand(3, SIZE, SIZE)
    a = cleaning_curve(model, x, adversarial, maps, steps=5, batch_size=None)
    b = cleaning_curve(model, x, adversarial, maps, steps=5, batch_size=4)
    assert torch.allclose(a.probabilities, b.probabilities, atol=1e-6)
    # Ties (a constant map) are broken in a seeded random order, not raster order.
    flat = torch.zeros(1, SIZE, SIZE)
    first = cleaning_order(flat, seed=0)
    assert torch.equal(first, cleaning_order(flat, seed=0))
    assert not torch.equal(first, cleaning_order(flat, seed=1))
    assert not torch.equal(first[0], torch.arange(SIZE * SIZE))
    assert sorted(first[0].tolist()) == list(range(SIZE * SIZE))
    # Descending order with distinct values.
    ramp = torch.arange(SIZE * SIZE, dtype=torch.float32).view(1, SIZE, SIZE)
    assert torch.equal(cleaning_order(ramp)[0], torch.arange(SIZE * SIZE).flip(0))
    # Given labels are honoured.
    c = cleaning_curve(model, x, adversarial, maps, torch.tensor([1, 2, 3]), steps=2)
    assert c.labels.tolist() == [1, 2, 3]


def test_end_to_end_attack_then_clean():
    model = sensitive_cnn()
    x = pixels(3, SIZE)
    result = adversarial_sanity(model, x, torch.rand(3, SIZE, SIZE), attack_kwargs={"epsilon": 0.3, "steps": 4}, steps=4)
    assert result.score.shape == (3,) and torch.isfinite(result.score).all()
    assert torch.allclose(result.adversarial, pgd(model, x, epsilon=0.3, steps=4).adversarial)
    assert no_hooks_left(model)
    # The attack lowered the original label's probability; cleaning everything restores it.
    full = cleaning_curve(model, x, result.adversarial, torch.rand(3, SIZE, SIZE), fraction=1.0, steps=2)
    assert (full.probabilities[:, 0] < full.clean_probability).all()
    assert torch.allclose(full.probabilities[:, -1], full.clean_probability, atol=1e-6)


def test_input_checks():
    model = sensitive_cnn()
    x = pixels(2, SIZE)
    maps = torch.rand(2, SIZE, SIZE)
    with pytest.raises(ValueError, match="shape"):
        cleaning_curve(model, x, x, torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match="shape"):
        cleaning_curve(model, x, x[:1], maps)
    with pytest.raises(ValueError, match="fraction"):
        cleaning_curve(model, x, x, maps, fraction=0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        cleaning_curve(model, x, x + 2, maps)
    with pytest.raises(ValueError, match="integration"):
        cleaning_curve(model, x, x, maps, steps=2).score("simpson")


def test_options_and_maps_are_checked_before_the_attack_runs():
    # integration, fraction and steps were read only after the attack and the whole curve.
    model = sensitive_cnn()
    x = pixels(2, SIZE)
    maps = torch.rand(2, SIZE, SIZE)
    ran = []

    def attack(model, pixels, **_):
        ran.append(True)
        return pgd(model, pixels, epsilon=0.3, steps=2)

    nan = maps.clone()
    nan[1, 0, 0] = float("nan")
    cases = [
        (ValueError, "unknown integration 'simpson'; accepted: right, trapezoid", dict(integration="simpson")),
        (ValueError, r"fraction .* must be a finite number in \(0, 1\], got nan", dict(fraction=float("nan"))),
        (TypeError, r"steps .* must be an integer >= 1, got bool True", dict(steps=True)),  # was one step
        (TypeError, r"steps .* must be an integer >= 1, got float 2.5", dict(steps=2.5)),
        (TypeError, "seed must be an integer, got float 0.5", dict(seed=0.5)),  # int(0.5): seed 0
        (TypeError, "batch_size must be a positive integer", dict(batch_size=8.0)),
    ]
    for error, message, kwargs in cases:
        with pytest.raises(error, match=message):
            adversarial_sanity(model, x, maps, attack=attack, **kwargs)
    with pytest.raises(ValueError, match=r"adversarial_sanity: maps contain NaN or infinite values \(image 1 has 1 NaN "
                                         r"value\); a saliency map must be finite"):
        adversarial_sanity(model, x, nan, attack=attack)
    with pytest.raises(TypeError, match=r"cleaning_curve: maps must be a torch.Tensor"):
        cleaning_curve(model, x, x, maps.tolist())
    assert not ran
    signed = adversarial_sanity(model, x, maps - 0.5, attack=attack, steps=2, fraction=0.5)  # only the order counts
    assert ran and torch.isfinite(signed.score).all()
