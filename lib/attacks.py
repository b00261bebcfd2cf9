r"""Projected gradient descent (PGD) and its saliency-enhanced variant.

Madry, Makelov, Schmidt, Tsipras & Vladu, "Towards Deep Learning Models Resistant to
Adversarial Attacks", ICLR 2018, Eq. 2 and Sec. 2.1: starting from a random point of the
:math:`\epsilon`-ball around the clean pixels :math:`x` (the *random start*), iterate

.. math::

    x^{t+1} = \Pi_{\mathcal{B}_\epsilon(x) \cap [0,1]^n}\big(x^t - \alpha\, s(\nabla_{x^t} L)\big),

with :math:`s(g) = \operatorname{sign}(g)` for the :math:`\ell_\infty` ball and
:math:`s(g) = g / \lVert g \rVert_2` for the :math:`\ell_2` ball (the steepest-descent
directions of those norms).  The attacks here are *targeted*: ``L`` is the cross-entropy
towards a target label that is *minimised* (by default the least-likely label of the clean
image, :math:`\ell_{ll} = \arg\min_k f_k(x)`, as in Kurakin et al. 2017 and CAMERAS Eq. 5.4).

Saliency-enhanced PGD (Jalwana, Akhtar, Bennamoun & Mian, "CAMERAS: Enhanced Resolution
And Sanity preserving Class Activation Mapping for image saliency", CVPR 2021, Sec. 5.6,
Eq. 5.4) minimises instead

.. math::

    J(I_p, \ell_{ll}) + \beta\, \lVert p \odot (1 - \Psi) \rVert_2^2, \qquad \beta = 50,

where :math:`p` is the perturbation, :math:`I_p = I + p` the perturbed image and
:math:`\Psi \in [0, 1]^{H \times W}` a saliency map of the clean image (broadcast over the
colour channels): the perturbation may grow freely where :math:`\Psi \approx 1` and is
pulled back to zero elsewhere.  The paper gives no step rule, norm or number of steps for
Eq. 5.4 (they are "in the supplementary material", which is not public).
:math:`p` is measured in pixel units of [0, 1] (the paper does not say; torchattacks and
advertorch, the usual PGD implementations, work in [0, 1]).

**The update** (:func:`saliency_pgd`, ``update=``). PGD's :math:`\ell_\infty` step moves
every pixel by exactly :math:`\pm\alpha`, whatever the size of its gradient; so the literal
reading of Eq. 5.4, a signed step on the gradient of the whole objective
(``update="sign"``, :math:`p \leftarrow \Pi(p - \alpha \operatorname{sign}(\nabla J +
2\beta (1 - \Psi)^2 \odot p))`), can never bring a pixel below :math:`\alpha` where the
penalty wins: the pixel jumps between 0 and :math:`\pm\alpha` on alternate steps, and the
perturbation's norm depends on the parity of the step at which the attack stops.  The
default, ``update="proximal"``, is forward-backward splitting (proximal gradient; Combettes
& Wajs 2005; Parikh & Boyd, *Proximal Algorithms*, 2014, Sec. 4.2) of
:math:`J + \beta R`: PGD's step on the loss alone, then the proximal operator of the
penalty, then the projection,

.. math::

    v = p - \alpha\, s(\nabla_p J), \qquad
    p \leftarrow \Pi\big(\operatorname{prox}_{\alpha\beta R}(v)\big), \qquad
    \operatorname{prox}_{\lambda R}(v) = \arg\min_u \tfrac12 \lVert u - v \rVert_2^2 + \lambda R(u).

The penalty :math:`R` is separable over pixels, so its proximal operator acts pixel by pixel.
For Eq. 5.4's squared norm, :math:`R(u) = \sum_i w_i^2 u_i^2` with :math:`w = 1 - \Psi`, it is
the shrinkage :math:`u_i = v_i / (1 + 2\alpha\beta w_i^2)`: never zero, and under the
:math:`\pm\alpha` step a pixel settles at :math:`1 / (2\beta w_i^2)` wherever its loss
gradient keeps its sign, so the squared norm cannot confine :math:`p`.  We therefore take the
same weights on the :math:`\ell_1` norm, :math:`R(u) = \lVert u \odot (1 - \Psi) \rVert_1 =
\sum_i w_i |u_i|` (the convex penalty whose proximal operator sets coordinates to exactly 0;
Tibshirani 1996), and solve the one-dimensional problems
:math:`\min_{u} \tfrac12 (u - v_i)^2 + \alpha\beta w_i |u|`: for :math:`u \ne 0` the
stationarity condition :math:`u - v_i + \alpha\beta w_i \operatorname{sign}(u) = 0` gives
:math:`u = v_i - \alpha\beta w_i \operatorname{sign}(v_i)` when :math:`|v_i| > \alpha\beta w_i`,
and :math:`0 \in u - v_i + \alpha\beta w_i [-1, 1]` at :math:`u = 0` otherwise, i.e. the soft
threshold

.. math::

    u_i = \operatorname{sign}(v_i)\, \max\big(|v_i| - \alpha\beta (1 - \Psi_i),\ 0\big).

For :math:`\ell_\infty` the projection onto the ball and the box is a clip per coordinate, and
the clip of a one-dimensional convex problem's minimiser onto an interval containing 0 is the
constrained minimiser: the update is the exact proximal step of penalty plus constraint.  A
pixel starting at 0 whose threshold :math:`\alpha\beta(1 - \Psi_i)` is at least
:math:`\alpha` (:math:`\beta (1 - \Psi_i) \ge 1`) stays exactly 0 at every step; elsewhere it
grows by at most :math:`\alpha\,(1 - \beta(1 - \Psi_i))` per step.  So :math:`\beta` here is
on its own scale (not the paper's 50, whose update is unknown): it is a rule on
:math:`\Psi`, "pixels below :math:`1 - 1/\beta` are never perturbed", and a section chooses
it on held-out images.  With :math:`\beta = 0` both updates are plain PGD exactly.
For ``norm="l2"`` the same threshold follows the normalised-gradient step and precedes the
:math:`\ell_2` projection (a composition, not the exact proximal step of the sum).

Everything happens in pixel space [0, 1]; the model's normalisation is applied inside
(``Classifier.normalize``, or ``mean``/``std`` for a plain ``nn.Module``, else identity).
Gradients are taken with respect to the input only, the parameters frozen
(:func:`lib.capture.prepared`); the model comes back exactly as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from .capture import check_images, check_targets, least_likely_labels, prepared, unwrap
from .saliency.passes import chunks

__all__ = ["AttackResult", "pgd", "saliency_pgd", "normaliser", "check_pixels", "soft_threshold", "NORMS", "UPDATES"]

NORMS = ("linf", "l2")
UPDATES = ("proximal", "sign")
"""The updates of :func:`saliency_pgd` (see the module docstring)."""


@dataclass
class AttackResult:
    r"""What an attack returns (all tensors detached, on the pixels' device).

    Attributes:
        perturbation: (B, 3, H, W) ``adversarial - pixels``.
        adversarial: (B, 3, H, W) adversarial pixels in [0, 1].
        success: (B,) bool, the adversarial image is classified as its target.
        target_probability: (B,) softmax probability of the target on the adversarial image.
        targets: (B,) the target labels.
        clean_labels: (B,) the clean images' predicted labels.
        steps: (B,) gradient steps taken per image (fewer than ``steps`` after an early stop).
        predictions: (B,) the adversarial images' top-1 labels.
        saliency: (B, H, W) the map :math:`\Psi` of the enhanced attack (None for plain PGD).
    """

    perturbation: torch.Tensor
    adversarial: torch.Tensor
    success: torch.Tensor
    target_probability: torch.Tensor
    targets: torch.Tensor
    clean_labels: torch.Tensor
    steps: torch.Tensor
    predictions: torch.Tensor
    saliency: torch.Tensor | None = None

    @property
    def l2(self) -> torch.Tensor:
        """(B,) Euclidean norm of each perturbation (pixel units of [0, 1])."""
        return self.perturbation.flatten(1).norm(dim=1)

    @property
    def linf(self) -> torch.Tensor:
        """(B,) largest absolute change of a pixel value."""
        return self.perturbation.flatten(1).abs().amax(dim=1)


def normaliser(model, mean=None, std=None) -> Callable[[torch.Tensor], torch.Tensor]:
    """Pixels in [0, 1] -> the model's input: ``Classifier.normalize``, else ``(x - mean) / std``, else identity.

    Raises:
        ValueError: ``mean``/``std`` given together with a ``Classifier`` (it has its own), or only one of them.
    """
    has_own = not isinstance(model, torch.nn.Module) and callable(getattr(model, "normalize", None))
    if (mean is None) != (std is None):
        raise ValueError("give both mean and std, or neither")
    if has_own:
        if mean is not None:
            raise ValueError("the Classifier normalises with its own mean/std; do not pass mean/std")
        return model.normalize
    if mean is None:
        return lambda pixels: pixels

    def normalize(pixels: torch.Tensor) -> torch.Tensor:
        m = torch.as_tensor(mean, dtype=pixels.dtype, device=pixels.device).reshape(1, -1, 1, 1)
        s = torch.as_tensor(std, dtype=pixels.dtype, device=pixels.device).reshape(1, -1, 1, 1)
        return (pixels - m) / s

    return normalize


def check_pixels(pixels) -> torch.Tensor:
    """Pixels must be a float (B, 3, H, W) tensor with values in [0, 1]."""
    check_images(pixels)
    low, high = float(pixels.min()), float(pixels.max())
    if low < 0 or high > 1:
        raise ValueError(
            f"pixels must lie in [0, 1] (attacks work in pixel space; use Classifier.denormalize), got [{low:.3g}, {high:.3g}]"
        )
    return pixels


def soft_threshold(values: torch.Tensor, threshold) -> torch.Tensor:
    r"""The proximal operator of :math:`\lambda \lvert u \rvert` per element, :math:`\operatorname{sign}(v) \max(|v| - \lambda, 0)`.

    Args:
        values: any tensor :math:`v`.
        threshold: :math:`\lambda \ge 0`, a number or a tensor broadcastable to ``values``.

    Returns:
        A tensor like ``values``; elements with :math:`|v| \le \lambda` are exactly 0.
    """
    return values.sign() * (values.abs() - threshold).clamp_min(0)


def _clean_logits(model, pixels, normalize, batch_size) -> torch.Tensor:
    with prepared(model) as module, torch.no_grad():
        return torch.cat([module(normalize(pixels[piece])) for piece in chunks(pixels.shape[0], batch_size)])


def _check_attack(norm, epsilon, step_size, steps, stop_confidence):
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; accepted: {', '.join(NORMS)}")
    if not epsilon > 0:
        raise ValueError(f"epsilon must be positive, got {epsilon}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps}")
    if stop_confidence is not None and not 0 < stop_confidence <= 1:
        raise ValueError(f"stop_confidence must be in (0, 1], got {stop_confidence}")


def _random_start(shape, norm, epsilon, generator, device, dtype) -> torch.Tensor:
    """A uniform draw from the :math:`\\ell_\\infty` cube, or from the :math:`\\ell_2` ball (direction
    Gaussian, radius :math:`\\epsilon U^{1/n}`), drawn on the CPU generator for reproducibility."""
    if norm == "linf":
        noise = (torch.rand(shape, generator=generator) * 2 - 1) * epsilon
    else:
        direction = torch.randn(shape, generator=generator)
        direction = direction / direction.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        n = direction[0].numel()
        radius = epsilon * torch.rand(shape[0], generator=generator) ** (1.0 / n)
        noise = direction * radius.view(-1, 1, 1, 1)
    return noise.to(device=device, dtype=dtype)


def _project(pixels, adversarial, norm, epsilon) -> torch.Tensor:
    """Onto the ball around ``pixels`` then the [0, 1] box; the box step only shrinks every
    coordinate of the perturbation, so the result lies in both sets (for
    :math:`\\ell_\\infty` it is the exact projection onto their intersection)."""
    delta = adversarial - pixels
    if norm == "linf":
        delta = delta.clamp(-epsilon, epsilon)
    else:
        size = delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
        delta = delta * torch.where(size > epsilon, epsilon / size.clamp_min(1e-12), torch.ones_like(size))
    return (pixels + delta).clamp(0, 1)


def _run(
    model,
    pixels,
    targets,
    *,
    norm,
    epsilon,
    step_size,
    steps,
    random_start,
    seed,
    stop_confidence,
    batch_size,
    mean,
    std,
    beta: float = 0.0,
    weight: torch.Tensor | None = None,
    threshold: torch.Tensor | None = None,
    saliency: torch.Tensor | None = None,
) -> AttackResult:
    _check_attack(norm, epsilon, step_size, steps, stop_confidence)
    normalize = normaliser(model, mean, std)
    alpha = float(step_size) if step_size is not None else 2.5 * epsilon / max(int(steps), 1)
    clean = _clean_logits(model, pixels, normalize, batch_size)
    clean_labels = clean.argmax(dim=1)
    targets = least_likely_labels(clean) if targets is None else check_targets(targets, clean)
    if random_start:
        generator = torch.Generator().manual_seed(int(seed))
        start = _project(pixels, pixels + _random_start(pixels.shape, norm, epsilon, generator, pixels.device, pixels.dtype), norm, epsilon)
    else:
        start = pixels.clone()
    adversarial = torch.empty_like(pixels)
    taken = torch.zeros(pixels.shape[0], dtype=torch.long, device=pixels.device)
    with prepared(model) as module:
        for piece in chunks(pixels.shape[0], batch_size):
            x, t, adv = pixels[piece], targets[piece], start[piece].clone()
            w = weight[piece] if weight is not None else None
            shrink = threshold[piece] * alpha if threshold is not None else None
            active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
            for _ in range(int(steps)):
                index = active.nonzero().squeeze(1)
                if index.numel() == 0:
                    break
                current = adv[index].requires_grad_(True)
                with torch.enable_grad():
                    logits = module(normalize(current))
                    # Sum over images: each image's gradient is its own objective's (eval mode).
                    loss = F.cross_entropy(logits, t[index], reduction="sum")
                    if w is not None:
                        loss = loss + beta * ((current - x[index]).square() * w[index]).sum()
                    (gradient,) = torch.autograd.grad(loss, current)
                if stop_confidence is not None:
                    probability = logits.detach().softmax(dim=1).gather(1, t[index].view(-1, 1)).squeeze(1)
                    done = (probability >= stop_confidence) & (logits.detach().argmax(dim=1) == t[index])
                    active[index[done]] = False
                    keep = ~done
                    index, gradient, current = index[keep], gradient[keep], current[keep]
                    if index.numel() == 0:
                        break
                if norm == "linf":
                    direction = gradient.sign()
                else:
                    direction = gradient / gradient.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                if shrink is None:
                    stepped = current.detach() - alpha * direction
                else:  # on p itself, so that a pixel at 0 meets a threshold of exactly alpha as 0 +- alpha
                    stepped = x[index] + soft_threshold(current.detach() - x[index] - alpha * direction, shrink[index])
                adv[index] = _project(x[index], stepped, norm, epsilon)
                taken[piece][index] += 1
            adversarial[piece] = adv
        with torch.no_grad():
            logits = torch.cat([module(normalize(adversarial[piece])) for piece in chunks(pixels.shape[0], batch_size)])
    probability = logits.softmax(dim=1).gather(1, targets.view(-1, 1)).squeeze(1)
    return AttackResult(
        perturbation=(adversarial - pixels).detach(),
        adversarial=adversarial.detach(),
        success=logits.argmax(dim=1) == targets,
        target_probability=probability,
        targets=targets,
        clean_labels=clean_labels,
        steps=taken,
        predictions=logits.argmax(dim=1),
        saliency=saliency,
    )


def pgd(
    model,
    pixels: torch.Tensor,
    targets=None,
    *,
    norm: str = "linf",
    epsilon: float = 8 / 255,
    step_size: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: int = 0,
    stop_confidence: float | None = None,
    batch_size: int | None = None,
    mean=None,
    std=None,
) -> AttackResult:
    r"""Targeted projected gradient descent (Madry et al., ICLR 2018, Eq. 2).

    Minimises the cross-entropy of the target label over the :math:`\epsilon`-ball
    (:math:`\ell_\infty`: signed-gradient steps; :math:`\ell_2`: unit-norm gradient steps),
    projecting onto the ball and the [0, 1] box after every step.

    Args:
        model: a ``lib.models.Classifier`` or an ``nn.Module``.
        pixels: (B, 3, H, W) clean pixels in [0, 1] (not normalised).
        targets: (B,) target labels, an int, or None for each image's least-likely label.
        norm: ``"linf"`` or ``"l2"``.
        epsilon: radius of the ball, in pixel units of [0, 1].
        step_size: :math:`\alpha` (None: :math:`2.5\,\epsilon/\text{steps}`, Madry et al.'s rule).
        steps: gradient steps.
        random_start: start from a uniform draw in the ball (seeded by ``seed``).
        seed: seeds the random start; same seed, same attack, for any ``batch_size``.
        stop_confidence: stop an image early once it is classified as its target with at
            least this probability (None: always take ``steps`` steps).
        batch_size: images per forward/backward pass (None: all at once).
        mean, std: per-channel normalisation for a plain ``nn.Module`` (None: identity).

    Returns:
        :class:`AttackResult`.

    Raises:
        ValueError: pixels outside [0, 1] or of the wrong shape, a target out of range, an
            unknown norm, a non-positive ``epsilon``/``step_size``.
    """
    check_pixels(pixels)
    return _run(
        model, pixels, targets, norm=norm, epsilon=epsilon, step_size=step_size, steps=steps,
        random_start=random_start, seed=seed, stop_confidence=stop_confidence,
        batch_size=batch_size, mean=mean, std=std,
    )


def _saliency_map(model, pixels, saliency, saliency_targets, saliency_kwargs, normalize, batch_size) -> torch.Tensor:
    """:math:`\\Psi` (B, H, W) in [0, 1]: a given tensor, or a method (name or function) on the clean images."""
    batch, _, height, width = pixels.shape
    if isinstance(saliency, torch.Tensor):
        maps = saliency.detach()
        if maps.dim() == 4 and maps.shape[1] == 1:
            maps = maps[:, 0]
        if tuple(maps.shape) != (batch, height, width):
            raise ValueError(f"the saliency map must have shape {(batch, height, width)} (B, H, W), got {tuple(saliency.shape)}")
        if not maps.is_floating_point() or float(maps.min()) < 0 or float(maps.max()) > 1:
            raise ValueError("the saliency map must be a float tensor with values in [0, 1]")
        return maps.to(pixels.device, pixels.dtype)
    kwargs = dict(saliency_kwargs or {})
    if isinstance(saliency, str):
        from .saliency import resolve_method

        saliency = resolve_method(saliency)
        kwargs.setdefault("batch_size", batch_size)
    if not callable(saliency):
        raise TypeError("saliency must be a method name, a function f(model, images, targets, **kw) or a (B, H, W) tensor")
    maps = saliency(model, normalize(pixels), saliency_targets, **kwargs)
    if tuple(maps.shape) != (batch, height, width):
        maps = F.interpolate(maps.unsqueeze(1), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    return maps.detach().clamp(0, 1).to(pixels.dtype)


def saliency_pgd(
    model,
    pixels: torch.Tensor,
    targets=None,
    *,
    beta: float = 50.0,
    saliency="cameras",
    saliency_targets=None,
    saliency_kwargs: dict | None = None,
    update: str = "proximal",
    norm: str = "linf",
    epsilon: float = 8 / 255,
    step_size: float | None = None,
    steps: int = 10,
    random_start: bool = True,
    seed: int = 0,
    stop_confidence: float | None = None,
    batch_size: int | None = None,
    mean=None,
    std=None,
) -> AttackResult:
    r"""Saliency-enhanced PGD (Jalwana et al., CVPR 2021, Sec. 5.6, Eq. 5.4).

    Penalises the perturbation outside the salient regions of :math:`\Psi` while the loss
    :math:`J(I_p, \ell)` is minimised with the PGD iteration of :func:`pgd` (the arguments shared
    with :func:`pgd` mean the same); ``beta=0`` returns exactly what :func:`pgd` returns.

    Args:
        beta: weight of the penalty.  ``update="proximal"``: the threshold per step is
            :math:`\alpha\beta(1 - \Psi)`, so pixels with :math:`\Psi \le 1 - 1/\beta` are never
            perturbed (from a zero start); choose it on held-out images.  ``update="sign"``:
            Eq. 5.4's weight of the squared norm (the paper's empirical choice, 50, the default).
        saliency: :math:`\Psi`: a name in ``lib.saliency.METHODS`` (``"cameras"``, the
            paper's choice, by default), a function with the saliency calling convention
            ``f(model, images, targets, **saliency_kwargs)``, or a (B, H, W) tensor in [0, 1].
            A method is run once, on the clean images.
        saliency_targets: the class the map explains (None: the clean prediction, the
            regions the model relies on; pass ``targets`` for the attack's target).
        saliency_kwargs: extra keywords for the method (``layer=``, ...).
        update: ``"proximal"`` (default): PGD's step on the loss, then the soft threshold of
            :math:`\lVert p \odot (1 - \Psi) \rVert_1` (derived in the module docstring;
            a penalised pixel becomes exactly 0 and stays there).  ``"sign"``: the former
            update, PGD's signed step on the gradient of :math:`J + \beta \lVert p \odot
            (1 - \Psi) \rVert_2^2` (Eq. 5.4 read literally; penalised pixels alternate between 0
            and :math:`\pm\alpha`).
        other arguments: as in :func:`pgd`.

    Returns:
        :class:`AttackResult` with ``saliency`` set to :math:`\Psi`.

    Raises:
        ValueError: as :func:`pgd`, a negative ``beta``, an unknown ``update``, a map of the
            wrong shape or outside [0, 1].
    """
    check_pixels(pixels)
    if not beta >= 0:
        raise ValueError(f"beta must be non-negative, got {beta}")
    if update not in UPDATES:
        raise ValueError(f"unknown update {update!r}; accepted: {', '.join(UPDATES)}")
    normalize = normaliser(model, mean, std)
    unwrap(model)
    psi = _saliency_map(model, pixels, saliency, saliency_targets, saliency_kwargs, normalize, batch_size)
    weight = threshold = None
    if beta > 0 and update == "sign":
        weight = (1 - psi).square().unsqueeze(1)  # d/dp of ||p (1 - psi)||^2 is 2 p (1 - psi)^2
    elif beta > 0:
        threshold = (float(beta) * (1 - psi)).unsqueeze(1)  # times alpha inside the iteration
    return _run(
        model, pixels, targets, norm=norm, epsilon=epsilon, step_size=step_size, steps=steps,
        random_start=random_start, seed=seed, stop_confidence=stop_confidence,
        batch_size=batch_size, mean=mean, std=std, beta=float(beta), weight=weight, threshold=threshold,
        saliency=psi,
    )
