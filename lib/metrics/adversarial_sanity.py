r"""The adversarial-cleaning sanity check of CAMERAS.

Jalwana, Akhtar, Bennamoun & Mian, "CAMERAS: Enhanced Resolution And Sanity preserving
Class Activation Mapping for image saliency", CVPR 2021, Sec. 5.6.1 and supplementary
Sec. 5.7.4, Eqs. 5.7-5.8, Fig. 5.9.  Attack an image (the paper uses its enhanced PGD), then
restore the adversarial pixels to their clean values one by one in *descending* order of a
saliency map and track the model's probability of the original label: a "sane" map
restores it steeply.  With :math:`N = \lfloor f\,H W \rceil` the pixel budget (a fixed
fraction :math:`f` of the image, 10% in Fig. 5.9) and :math:`P(n)` the probability after
cleaning the :math:`n` most salient pixels,

.. math::

    \text{Area}_\Psi = \int_0^N P(n)\,dn, \qquad
    \text{Area}_\text{Ideal} = P_\text{GT}\,N,\ P_\text{GT} = P\big(K(I)\big), \qquad
    \text{Sanity} = \frac{\text{Area}_\text{Ideal} - \text{Area}_\Psi}{\text{Area}_\text{Ideal}}

(Eq. 5.7 writes :math:`H \times W` for the budget; the text and Fig. 5.9 fix it to a fraction
of the pixels).  Smaller is better.

**The ideal ordering**, precisely (Eq. 5.7 and the sentence before it): the one that
"raises the ground truth confidence almost instantly", i.e. whose curve equals the clean
image's probability of its own predicted label :math:`K(I)` from the first cleaning step to
the budget :math:`N`; its score is 0 by definition.  An ordering reaches it only when
cleaning the first step's pixels restores the clean prediction, e.g. when the
perturbation is confined to those pixels and the map ranks them first (the construction
the tests use).  A map that ranks them last (the *reversed* ordering) keeps the
adversarial probability and scores :math:`1 - P_\text{adv}/P_\text{GT}`.

Choices where the paper is silent, exposed as keywords:

* a *pixel* is a spatial location: all three colour channels are restored together;
* the curve is sampled at ``steps`` evenly spaced pixel counts :math:`0 < n_1 < \dots <
  n_S = N` and the area is the right-endpoint Riemann sum
  :math:`\sum_k P(n_k)(n_k - n_{k-1})` (``integration="right"``: the ideal curve, a step at
  :math:`0^+`, integrates exactly to :math:`P_\text{GT} N`) or the trapezoid rule
  (``integration="trapezoid"``, which starts from the adversarial probability
  :math:`P(0)`);
* ties in the map are broken in a random (seeded) order, not in raster order;
* the score is not clipped: partially cleaned images more confident than the clean one
  give negative scores.

**Which attack.** The paper cleans its own CAMERAS-enhanced PGD (Eq. 5.4).  That attack puts
its perturbation where CAMERAS is high, so cleaning in CAMERAS' order (or in the order of any
map like it) removes it first: the check then favours the map the attack was built from, by
construction.  :func:`adversarial_sanity` therefore attacks with plain PGD by default, which
comes from no map.  A plain perturbation is spread over the whole image, so a larger pixel
budget than the paper's 10% may be needed before any curve rises (:meth:`CleaningCurve.up_to`
reads the score at a smaller budget off the same curve).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..attacks import check_pixels, normaliser, pgd
from ..capture import check_targets, prepared
from ..saliency.passes import check_batch_size, chunks
from ._checks import check_finite, check_int, check_real, check_tensor

__all__ = ["CleaningCurve", "SanityResult", "cleaning_curve", "sanity_score", "adversarial_sanity", "cleaning_order"]

INTEGRATIONS = ("right", "trapezoid")
"""How :meth:`CleaningCurve.area` integrates the curve (see the module docstring)."""


def _check_integration(integration) -> None:
    if integration not in INTEGRATIONS:
        raise ValueError(f"unknown integration {integration!r}; accepted: {', '.join(INTEGRATIONS)}")


@dataclass
class CleaningCurve:
    """Probability of the original label while adversarial pixels are cleaned.

    Attributes:
        pixels_cleaned: (S + 1,) pixel counts :math:`0 = n_0 < \\dots < n_S = N`.
        fraction: (S + 1,) the same counts as fractions of the image's H W pixels.
        probabilities: (B, S + 1) probability of ``labels`` after cleaning ``n_k`` pixels
            (column 0: the adversarial image).
        clean_probability: (B,) :math:`P_\\text{GT}`, the probability of ``labels`` on the clean image.
        labels: (B,) the original labels (the clean prediction :math:`K(I)` by default).
    """

    pixels_cleaned: torch.Tensor
    fraction: torch.Tensor
    probabilities: torch.Tensor
    clean_probability: torch.Tensor
    labels: torch.Tensor

    def up_to(self, fraction: float) -> "CleaningCurve":
        r"""The same curve restricted to the samples cleaning at most ``fraction`` of the pixels.

        Its :meth:`score` is then the score at that smaller budget, sampled at the curve's
        points up to it: the budget :math:`N' = \lfloor f\,H W \rceil` pixels, rounded as
        :func:`cleaning_curve` rounds its steps (``fraction`` should be one of the curve's
        steps, else the budget becomes the largest step below it).

        Raises:
            ValueError: no sample other than the adversarial image lies at or below ``fraction``.
        """
        total = float(self.pixels_cleaned[-1]) / float(self.fraction[-1])  # H W
        keep = self.pixels_cleaned <= round(fraction * total)
        if int(keep.sum()) < 2:
            raise ValueError(f"no cleaning step at or below {fraction:g} (first step: {float(self.fraction[1]):g})")
        return CleaningCurve(self.pixels_cleaned[keep], self.fraction[keep], self.probabilities[:, keep],
                             self.clean_probability, self.labels)

    def area(self, integration: str = "right") -> torch.Tensor:
        """(B,) :math:`\\text{Area}_\\Psi` in pixels (see the module docstring for ``integration``).

        Raises:
            ValueError: an ``integration`` other than ``"right"`` and ``"trapezoid"``.
        """
        _check_integration(integration)
        widths = (self.pixels_cleaned[1:] - self.pixels_cleaned[:-1]).to(self.probabilities.device, self.probabilities.dtype)
        if integration == "right":
            return (self.probabilities[:, 1:] * widths).sum(dim=1)
        return (0.5 * (self.probabilities[:, 1:] + self.probabilities[:, :-1]) * widths).sum(dim=1)

    def ideal_area(self) -> torch.Tensor:
        """(B,) :math:`\\text{Area}_\\text{Ideal} = P_\\text{GT} N` (Eq. 5.7 with the pixel budget)."""
        return self.clean_probability * float(self.pixels_cleaned[-1])

    def score(self, integration: str = "right") -> torch.Tensor:
        """(B,) the sanity score of Eq. 5.8 (smaller is better; 0 for the ideal ordering)."""
        ideal = self.ideal_area()
        return (ideal - self.area(integration)) / ideal.clamp_min(torch.finfo(ideal.dtype).tiny)


def sanity_score(curve: CleaningCurve, integration: str = "right") -> torch.Tensor:
    """(B,) Eq. 5.8, :math:`(\\text{Area}_\\text{Ideal} - \\text{Area}_\\Psi) / \\text{Area}_\\text{Ideal}`."""
    return curve.score(integration)


def cleaning_order(maps: torch.Tensor, *, seed: int = 0) -> torch.Tensor:
    """(B, H W) pixel indices in descending order of each map, ties in a seeded random order."""
    flat = maps.flatten(1)
    generator = torch.Generator().manual_seed(int(seed))
    shuffle = torch.randperm(flat.shape[1], generator=generator).to(flat.device)
    order = torch.argsort(flat[:, shuffle], dim=1, descending=True, stable=True)
    return shuffle[order]


def _check_maps(maps, pixels, what: str) -> torch.Tensor:
    batch, _, height, width = pixels.shape
    check_tensor(maps, f"{what}: maps", f"(B, H, W) = {(batch, height, width)}")
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if tuple(maps.shape) != (batch, height, width):
        raise ValueError(f"maps must have shape {(batch, height, width)} (B, H, W) like the pixels, got {tuple(maps.shape)}")
    check_finite(maps, f"{what}: maps", hint="a saliency map must be finite (any sign and scale: only its order counts)")
    return maps.to(pixels.device)


def _check_options(fraction, steps, seed, batch_size, what: str) -> tuple[float, int, int, int | None]:
    """The cleaning's budget, steps, seed and batch size, checked (before any attack or pass)."""
    fraction = check_real(fraction, f"{what}: fraction (the pixel budget N / (H W))", low=0, high=1, low_open=True)
    steps = check_int(steps, f"{what}: steps (cleaning steps up to the budget)", 1)
    seed = check_int(seed, f"{what}: seed")
    return fraction, steps, seed, check_batch_size(batch_size)


def cleaning_curve(
    model,
    pixels: torch.Tensor,
    adversarial: torch.Tensor,
    maps: torch.Tensor,
    labels=None,
    *,
    fraction: float = 0.1,
    steps: int = 20,
    seed: int = 0,
    batch_size: int | None = 64,
    mean=None,
    std=None,
) -> CleaningCurve:
    """Restore adversarial pixels in descending order of ``maps``; the probability of ``labels`` at each step.

    Batched over images and restoration steps: the (B (S + 1)) partly cleaned images are
    built from one ranking per image and classified ``batch_size`` at a time.

    Args:
        model: a ``lib.models.Classifier`` or an ``nn.Module``.
        pixels: (B, 3, H, W) clean pixels in [0, 1].
        adversarial: (B, 3, H, W) their adversarial versions in [0, 1].
        maps: (B, H, W) saliency maps (any real values; only their order matters).
        labels: (B,) original labels, an int, or None for the clean prediction :math:`K(I)`.
        fraction: pixel budget :math:`N / (H W)` (10% in the paper's Fig. 5.9).
        steps: number of evenly spaced cleaning steps up to the budget.
        seed: tie-breaking order of equal map values.
        batch_size: images per forward pass (None: all at once).
        mean, std: normalisation for a plain ``nn.Module`` (see :func:`lib.attacks.normaliser`).

    Returns:
        :class:`CleaningCurve`.

    Raises:
        ValueError: pixels outside [0, 1] or of two shapes, maps that are not (B, H, W) like
            the pixels or have NaN or infinite values (any sign and scale is accepted: only
            the order counts), a fraction outside (0, 1] or NaN, steps or a batch size below 1,
            labels out of range.
        TypeError: maps that are not a real tensor, a fraction that is not a number, steps,
            seed or batch size that is not an integer (``2.5``, ``True``).
    """
    check_pixels(pixels)
    check_pixels(adversarial)
    if adversarial.shape != pixels.shape:
        raise ValueError(f"adversarial must have the pixels' shape {tuple(pixels.shape)}, got {tuple(adversarial.shape)}")
    maps = _check_maps(maps, pixels, "cleaning_curve")
    fraction, steps, seed, batch_size = _check_options(fraction, steps, seed, batch_size, "cleaning_curve")
    batch, _, height, width = pixels.shape
    budget = max(1, round(fraction * height * width))
    steps = min(steps, budget)
    counts = torch.round(torch.linspace(0, budget, steps + 1, dtype=torch.float64)).long()
    normalize = normaliser(model, mean, std)

    order = cleaning_order(maps, seed=seed)
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=order.device).expand_as(order))
    rank = rank.view(batch, 1, height, width)
    thresholds = counts.to(pixels.device)

    with prepared(model) as module, torch.no_grad():
        clean_logits = torch.cat([module(normalize(pixels[p])) for p in chunks(batch, batch_size)])
        labels = check_targets(labels, clean_logits)
        clean_probability = clean_logits.softmax(dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
        total = batch * (steps + 1)
        probabilities = torch.empty(total, dtype=pixels.dtype, device=pixels.device)
        for piece in chunks(total, batch_size):
            flat = torch.arange(piece.start, piece.stop, device=pixels.device)
            image, step = flat // (steps + 1), flat % (steps + 1)
            cleaned = rank[image] < thresholds[step].view(-1, 1, 1, 1)
            mixed = torch.where(cleaned, pixels[image], adversarial[image])
            logits = module(normalize(mixed))
            probabilities[piece] = logits.softmax(dim=1).gather(1, labels[image].view(-1, 1)).squeeze(1)
    return CleaningCurve(
        pixels_cleaned=counts,
        fraction=counts.double() / (height * width),
        probabilities=probabilities.view(batch, steps + 1),
        clean_probability=clean_probability,
        labels=labels,
    )


@dataclass
class SanityResult:
    """The curve, the per-image scores (Eq. 5.8) and the attack they were measured on."""

    curve: CleaningCurve
    score: torch.Tensor
    adversarial: torch.Tensor


def adversarial_sanity(
    model,
    pixels: torch.Tensor,
    maps: torch.Tensor,
    labels=None,
    *,
    adversarial: torch.Tensor | None = None,
    attack=pgd,
    attack_kwargs: dict | None = None,
    fraction: float = 0.1,
    steps: int = 20,
    integration: str = "right",
    seed: int = 0,
    batch_size: int | None = 64,
    mean=None,
    std=None,
) -> SanityResult:
    """The whole check (Jalwana et al. 2021, Sec. 5.7.4): attack, clean in map order, score.

    Args:
        maps: (B, H, W) saliency maps of the clean images.
        adversarial: already attacked pixels (to score several maps on one attack); None
            runs ``attack(model, pixels, **attack_kwargs)`` (default: targeted
            least-likely :func:`lib.attacks.pgd`, which comes from no map; the paper uses
            CAMERAS-enhanced PGD, :func:`lib.attacks.saliency_pgd`, which favours CAMERAS:
            see the module docstring).
        other arguments: as in :func:`cleaning_curve` and :meth:`CleaningCurve.score`.

    Returns:
        :class:`SanityResult`.

    Raises:
        ValueError, TypeError: as :func:`cleaning_curve`, and an unknown ``integration``; all
            checked before the attack runs.
    """
    check_pixels(pixels)
    _check_maps(maps, pixels, "adversarial_sanity")
    _check_options(fraction, steps, seed, batch_size, "adversarial_sanity")
    _check_integration(integration)
    if adversarial is None:
        kwargs = dict(attack_kwargs or {})
        if mean is not None:
            kwargs.update(mean=mean, std=std)
        kwargs.setdefault("batch_size", batch_size)
        adversarial = attack(model, pixels, **kwargs).adversarial
    curve = cleaning_curve(
        model, pixels, adversarial, maps, labels, fraction=fraction, steps=steps, seed=seed,
        batch_size=batch_size, mean=mean, std=std,
    )
    return SanityResult(curve=curve, score=curve.score(integration), adversarial=adversarial)
