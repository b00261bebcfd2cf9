"""PGD (Madry et al. 2018) and saliency-enhanced PGD (CAMERAS Eq. 5.4) on tiny networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _tiny import no_hooks_left, tiny_cnn
from lib.attacks import least_likely, pgd, saliency_pgd


def sensitive_cnn(classes: int = 5, seed: int = 0) -> nn.Module:
    """The tiny CNN with a scaled-up classifier, so a small perturbation moves its probabilities."""
    model = tiny_cnn(classes, seed)
    with torch.no_grad():
        model.fc.weight.mul_(40)
    return model


def pixels(batch: int = 4, size: int = 12, seed: int = 3) -> torch.Tensor:
    return torch.rand(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}, [p.requires_grad for p in model.parameters()]


@pytest.mark.parametrize("norm,epsilon", [("linf", 8 / 255), ("linf", 0.3), ("l2", 0.25), ("l2", 3.0)])
def test_pgd_stays_in_ball_and_box(norm, epsilon):
    model = sensitive_cnn()
    # Pixels at the box's edges make the [0, 1] projection bind.
    x = pixels(5)
    x[:, 0, :3] = 0.0
    x[:, 1, -3:] = 1.0
    result = pgd(model, x, norm=norm, epsilon=epsilon, steps=6, step_size=epsilon / 2)
    assert result.adversarial.min() >= 0 and result.adversarial.max() <= 1
    assert torch.allclose(result.perturbation, result.adversarial - x)
    size = result.linf if norm == "linf" else result.l2
    assert (size <= epsilon * (1 + 1e-5)).all()
    # The attack used its budget: the perturbation reaches the ball's surface somewhere.
    assert size.max() >= 0.5 * epsilon
    # The box bound binds: edge pixels the attack pushed outwards sit exactly on the box, not beyond it
    # (an unprojected step of epsilon / 2 would leave them at -epsilon / 2 or 1 + epsilon / 2).
    assert (result.adversarial[:, 0, :3] == 0).any() and (result.adversarial[:, 1, -3:] == 1).any()
    moved = result.perturbation.abs() > 0
    assert moved[:, 0, 3:].any() and moved[:, 1, :-3].any()  # while pixels inside the box did move


def test_targeted_attack_raises_target_probability():
    model = sensitive_cnn()
    x = pixels(6)
    with torch.no_grad():
        clean = model(x).softmax(dim=1)
    for norm, epsilon in [("linf", 0.25), ("l2", 5.0)]:
        result = pgd(model, x, norm=norm, epsilon=epsilon, steps=15, random_start=False)
        assert torch.equal(result.targets, clean.argmin(dim=1))  # least-likely label by default
        before = clean.gather(1, result.targets.view(-1, 1)).squeeze(1)
        assert (result.target_probability > before + 0.05).all(), (before, result.target_probability)
        with torch.no_grad():
            recomputed = model(result.adversarial).softmax(dim=1).gather(1, result.targets.view(-1, 1)).squeeze(1)
        assert torch.allclose(recomputed, result.target_probability)
        assert torch.equal(result.success, model(result.adversarial).argmax(dim=1) == result.targets)
    # A given target is honoured.
    given = torch.tensor([1, 2, 3, 4, 0, 1])
    result = pgd(model, x, given, epsilon=16 / 255, steps=10)
    assert torch.equal(result.targets, given)
    before = clean.gather(1, given.view(-1, 1)).squeeze(1)
    assert (result.target_probability > before).all()


def test_one_linf_step_is_the_signed_gradient_step():
    """Hand computation of Madry et al.'s update: x1 = clip(x - a sign(grad CE(x, t)))."""
    model = sensitive_cnn()
    x = pixels(2) * 0.5 + 0.25
    target = least_likely(model, x)
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(xr), target, reduction="sum"), xr)
    expected = (x - 0.01 * grad.sign()).clamp(0, 1)
    result = pgd(model, x, epsilon=0.05, step_size=0.01, steps=1, random_start=False)
    assert torch.allclose(result.adversarial, expected, atol=1e-7)


def test_normalisation_inside():
    """mean/std for a plain module: attacking ``model`` with them equals attacking ``Normalize + model``."""
    model = sensitive_cnn()
    mean, std = torch.tensor([0.4, 0.5, 0.6]), torch.tensor([0.2, 0.25, 0.3])

    class Normalised(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, p):
            return self.inner((p - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1))

    x = pixels(3)
    a = pgd(model, x, mean=mean, std=std, steps=4)
    b = pgd(Normalised().eval(), x, steps=4)
    assert torch.allclose(a.adversarial, b.adversarial, atol=1e-6)
    with pytest.raises(ValueError, match="both mean and std"):
        pgd(model, x, mean=mean)


def test_beta_zero_equals_plain_pgd():
    model = sensitive_cnn()
    x = pixels(4)
    for norm, epsilon in [("linf", 8 / 255), ("l2", 1.0)]:
        plain = pgd(model, x, norm=norm, epsilon=epsilon, steps=5, seed=7)
        for saliency in ["gradcam", torch.rand(4, 12, 12)]:
            kwargs = {"saliency_kwargs": {"layer": "features.3"}} if isinstance(saliency, str) else {}
            enhanced = saliency_pgd(model, x, beta=0.0, saliency=saliency, norm=norm, epsilon=epsilon, steps=5, seed=7, **kwargs)
            assert torch.equal(enhanced.adversarial, plain.adversarial)
            assert torch.equal(enhanced.target_probability, plain.target_probability)


def test_penalty_confines_perturbation_to_salient_region():
    """Eq. 5.4: with a binary map, the perturbation outside it shrinks as beta grows; inside it is free."""
    model = sensitive_cnn()
    x = pixels(3) * 0.6 + 0.2
    psi = torch.zeros(3, 12, 12)
    psi[:, 2:7, 3:9] = 1.0
    outside = (psi == 0).unsqueeze(1).expand_as(x)
    energy = []
    for beta in [0.0, 5.0, 500.0]:
        result = saliency_pgd(model, x, beta=beta, saliency=psi, norm="l2", epsilon=2.0, step_size=0.1, steps=20, random_start=False)
        energy.append(float(result.perturbation[outside].square().sum()))
        inside = result.perturbation[~outside].square().sum()
        assert inside > 0
        assert torch.equal(result.saliency, psi)
    assert energy[0] > energy[1] > energy[2]


def test_penalty_gradient_is_eq_5_4():
    """One l2 step equals the hand-computed gradient step of CE + beta ||p (1 - psi)||^2 (from a random start)."""
    model = sensitive_cnn()
    x = pixels(2) * 0.5 + 0.25
    psi = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(5))
    beta, alpha = 3.0, 0.05
    start = pgd(model, x, epsilon=0.02, steps=0, seed=11).adversarial  # the seeded random start only
    target = least_likely(model, x)
    p = (start - x).requires_grad_(True)
    objective = F.cross_entropy(model(x + p), target, reduction="sum") + beta * (p * (1 - psi).unsqueeze(1)).square().sum()
    (grad,) = torch.autograd.grad(objective, p)
    step = x + p.detach() - alpha * grad.sign()
    expected = (x + (step - x).clamp(-0.02, 0.02)).clamp(0, 1)
    result = saliency_pgd(model, x, beta=beta, saliency=psi, epsilon=0.02, step_size=alpha, steps=1, seed=11)
    assert torch.allclose(result.adversarial, expected, atol=1e-6)


def test_seeded_batched_and_model_untouched():
    model = sensitive_cnn()
    model.train()
    before, flags = state(model)
    x = pixels(5)
    with pytest.warns(UserWarning, match="training mode"):
        a = pgd(model, x, steps=3, seed=1)
    assert model.training
    model.eval()
    b = pgd(model, x, steps=3, seed=1, batch_size=2)
    c = pgd(model, x, steps=3, seed=2)
    assert torch.allclose(a.adversarial, b.adversarial, atol=1e-6)
    assert not torch.equal(a.adversarial, c.adversarial)
    after, flags_after = state(model)
    assert all(torch.equal(before[k], after[k]) for k in before) and flags == flags_after
    assert no_hooks_left(model)
    saliency_pgd(model, x, saliency="gradcam", saliency_kwargs={"layer": "features.3"}, steps=2)
    assert no_hooks_left(model) and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_early_stop():
    model = sensitive_cnn()
    x = pixels(4)
    full = pgd(model, x, 3, epsilon=0.3, steps=30)
    stopped = pgd(model, x, 3, epsilon=0.3, steps=30, stop_confidence=0.4)
    reached = stopped.target_probability >= 0.4
    assert reached.any()
    assert (stopped.steps[reached] < 30).all() and (full.steps == 30).all()
    # A stopped image keeps the iterate that reached the confidence.
    assert (stopped.linf[reached] <= full.linf[reached] + 1e-6).all()


def test_input_checks():
    model = sensitive_cnn()
    x = pixels(2)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        pgd(model, x * 2 - 0.5)
    with pytest.raises(ValueError, match="norm"):
        pgd(model, x, norm="l1")
    with pytest.raises(ValueError, match="epsilon"):
        pgd(model, x, epsilon=0)
    with pytest.raises(ValueError, match="outside"):
        pgd(model, x, torch.tensor([0, 9]))
    with pytest.raises(ValueError, match="shape"):
        saliency_pgd(model, x, saliency=torch.rand(2, 5, 5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        saliency_pgd(model, x, saliency=torch.rand(2, 12, 12) + 1)
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_pgd(model, x, saliency="no_such_method")
    with pytest.raises(ValueError, match="beta"):
        saliency_pgd(model, x, beta=-1, saliency=torch.rand(2, 12, 12))
