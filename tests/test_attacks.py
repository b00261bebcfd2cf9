"""PGD (Madry et al. 2018) and saliency-enhanced PGD (CAMERAS Eq. 5.4) on tiny networks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from _tiny import no_hooks_left, tiny_cnn
from lib.attacks import pgd, saliency_pgd, soft_threshold
from lib.capture import least_likely_labels


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
    target = least_likely_labels(model(x))  # the attack's default target: argmin of the clean logits
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


@pytest.mark.parametrize("update", ["proximal", "sign"])
def test_beta_zero_equals_plain_pgd(update):
    model = sensitive_cnn()
    x = pixels(4)
    for norm, epsilon in [("linf", 8 / 255), ("l2", 1.0)]:
        plain = pgd(model, x, norm=norm, epsilon=epsilon, steps=5, seed=7)
        for saliency in ["gradcam", torch.rand(4, 12, 12)]:
            kwargs = {"saliency_kwargs": {"layer": "features.3"}} if isinstance(saliency, str) else {}
            enhanced = saliency_pgd(model, x, beta=0.0, saliency=saliency, update=update, norm=norm, epsilon=epsilon, steps=5,
                                    seed=7, **kwargs)
            assert torch.equal(enhanced.adversarial, plain.adversarial)
            assert torch.equal(enhanced.target_probability, plain.target_probability)


def binary_map(batch: int = 3) -> torch.Tensor:
    psi = torch.zeros(batch, 12, 12)
    psi[:, 2:7, 3:9] = 1.0
    return psi


@pytest.mark.parametrize("update,norm,epsilon,step_size,betas", [
    ("sign", "l2", 2.0, 0.1, [0.0, 5.0, 500.0]),
    ("proximal", "linf", 0.1, 0.01, [0.0, 0.5, 2.0]),
])
def test_penalty_confines_perturbation_to_salient_region(update, norm, epsilon, step_size, betas):
    """Eq. 5.4: with a binary map, the perturbation outside it shrinks as beta grows; inside it is free."""
    model = sensitive_cnn()
    x = pixels(3) * 0.6 + 0.2
    psi = binary_map()
    outside = (psi == 0).unsqueeze(1).expand_as(x)
    energy = []
    for beta in betas:
        result = saliency_pgd(model, x, beta=beta, saliency=psi, update=update, norm=norm, epsilon=epsilon,
                              step_size=step_size, steps=20, random_start=False)
        energy.append(float(result.perturbation[outside].square().sum()))
        inside = result.perturbation[~outside].square().sum()
        assert inside > 0
        assert torch.equal(result.saliency, psi)
    assert energy[0] > energy[1] > energy[2]
    if update == "proximal":  # beta (1 - psi) = 2 >= 1 outside: the threshold beats every step there
        assert energy[2] == 0


def test_soft_threshold_by_hand():
    values = torch.tensor([-0.3, -0.1, 0.0, 0.05, 0.2, 0.5])
    threshold = torch.tensor([0.1, 0.2, 0.1, 0.05, 0.0, 0.7])
    shrunk = soft_threshold(values, threshold)
    assert torch.allclose(shrunk, torch.tensor([-0.2, 0.0, 0.0, 0.0, 0.2, 0.0]), atol=1e-7)
    assert (shrunk[1:4] == 0).all() and shrunk[5] == 0  # |v| <= threshold: exactly 0
    assert torch.equal(soft_threshold(values, 0.0), values)


def test_one_proximal_step_by_hand():
    """One l-inf step of update="proximal": v = p - a sign(grad CE) (the loss alone), then the soft
    threshold a beta (1 - psi) of the weighted l1 penalty, then the clip to the ball and the box."""
    model = sensitive_cnn()
    x = pixels(2) * 0.5 + 0.25
    psi = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(5))
    beta, alpha, epsilon = 3.0, 0.01, 0.03
    start = pgd(model, x, epsilon=epsilon, steps=0, seed=11).adversarial  # the seeded random start only
    target = least_likely_labels(model(x))  # the attack's default target: argmin of the clean logits
    p = (start - x).requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x + p), target, reduction="sum"), p)
    v = p.detach() - alpha * grad.sign()
    shrink = alpha * beta * (1 - psi).unsqueeze(1)
    u = v.sign() * (v.abs() - shrink).clamp_min(0)
    expected = (x + u.clamp(-epsilon, epsilon)).clamp(0, 1)
    result = saliency_pgd(model, x, beta=beta, saliency=psi, epsilon=epsilon, step_size=alpha, steps=1, seed=11)
    assert torch.allclose(result.adversarial, expected, atol=1e-6)
    # The threshold binds on some pixels (exactly 0) and not on others.
    zero = result.perturbation == 0
    assert zero.any() and (~zero).any()
    assert torch.equal(zero, (u == 0) | (expected == x))


def test_proximal_zeroes_penalised_pixels_for_good():
    """Where beta (1 - psi) >= 2 the threshold 2a beats the a step: from a random start in the 3a ball a
    penalised pixel is exactly 0 after 3 steps and stays 0."""
    model = sensitive_cnn()
    x = pixels(3) * 0.6 + 0.2
    psi = binary_map()
    outside = (psi == 0).unsqueeze(1).expand_as(x)
    alpha = 0.01
    settings = dict(beta=2.0, saliency=psi, epsilon=3 * alpha, step_size=alpha, seed=4)
    assert not (saliency_pgd(model, x, steps=2, **settings).perturbation[outside] == 0).all()  # not yet after 2 steps
    for steps in range(3, 12):
        result = saliency_pgd(model, x, steps=steps, **settings)
        assert (result.perturbation[outside] == 0).all(), steps
        assert result.perturbation[~outside].abs().sum() > 0


def test_norm_does_not_depend_on_the_parity_of_the_last_step():
    """The defect of the old signed step (update="sign"): from a zero start a penalised pixel moves to +-a
    on odd steps (the penalty's gradient is 0 at p = 0) and back to 0 on even ones, so the norm after 10 and
    after 11 steps differ; with the proximal step the penalised pixels stay 0 and the two norms agree."""
    model = sensitive_cnn()
    x = pixels(3) * 0.6 + 0.2
    psi = binary_map()
    outside = (psi == 0).unsqueeze(1).expand_as(x)
    alpha = 0.01
    settings = dict(saliency=psi, epsilon=0.05, step_size=alpha, random_start=False)
    old = {steps: saliency_pgd(model, x, steps=steps, beta=500.0, update="sign", **settings) for steps in (10, 11)}
    assert (old[10].perturbation[outside].abs() < 1e-6).all()  # back at 0 (up to the rounding of x + a - a)
    assert torch.allclose(old[11].perturbation[outside].abs(), torch.tensor(alpha), atol=1e-6)  # all at +-a
    assert ((old[11].l2 - old[10].l2).abs() > 0.05 * old[10].l2).all()
    new = {steps: saliency_pgd(model, x, steps=steps, beta=2.0, **settings) for steps in (10, 11)}
    assert all((new[s].perturbation[outside] == 0).all() for s in (10, 11))
    assert torch.allclose(new[10].l2, new[11].l2, rtol=0.03)


def test_penalty_gradient_is_eq_5_4():
    """update="sign": one l-inf step equals the hand-computed signed step of CE + beta ||p (1 - psi)||^2 (from a random start)."""
    model = sensitive_cnn()
    x = pixels(2) * 0.5 + 0.25
    psi = torch.rand(2, 12, 12, generator=torch.Generator().manual_seed(5))
    beta, alpha = 3.0, 0.05
    start = pgd(model, x, epsilon=0.02, steps=0, seed=11).adversarial  # the seeded random start only
    target = least_likely_labels(model(x))  # the attack's default target: argmin of the clean logits
    p = (start - x).requires_grad_(True)
    objective = F.cross_entropy(model(x + p), target, reduction="sum") + beta * (p * (1 - psi).unsqueeze(1)).square().sum()
    (grad,) = torch.autograd.grad(objective, p)
    step = x + p.detach() - alpha * grad.sign()
    expected = (x + (step - x).clamp(-0.02, 0.02)).clamp(0, 1)
    result = saliency_pgd(model, x, beta=beta, saliency=psi, update="sign", epsilon=0.02, step_size=alpha, steps=1, seed=11)
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
    with pytest.raises(ValueError, match="update"):
        saliency_pgd(model, x, saliency=torch.rand(2, 12, 12), update="l1")
