"""Metrics of saliency maps: they take maps and return tensors or small dataclasses; they never plot.

Modules: ``stats`` (the sign-flip test, bootstrap intervals), and one module per metric family
(``pointing``, ``pointing_pairs``, ``instances``, ``insertion_deletion``, ``density``, ``sanity``,
``class_sensitivity``, ``adversarial_sanity``, ``audit``: the practitioner's checks) plus ``selection`` (held-out choice of a
configuration); each is an attribute of ``lib.metrics``, imported on first use.

``pointing``: the pointing game on original image coordinates (TorchRay's rule, per-class mean), its
difficult subset, the centre baseline, batch accumulation (``PointingGame``, and ``pointing_game`` in one
call) and the grid pointing game of Böhle et al. 2022.

``insertion_deletion``: the insertion and deletion games of RISE (Petsiuk et al. 2018) batched
over steps and images, their AUCs and Group-CAM's over-all score (``insertion_deletion``,
``causal_curves``, a one-by-one ``causal_curves_reference``).

``adversarial_sanity``: the adversarial-cleaning sanity check of CAMERAS (Jalwana et al. 2021,
Eqs. 5.7-5.8): clean an attacked image in descending map order, the probability-pixels curve,
the area against the ideal one (``cleaning_curve``, ``CleaningCurve.score``, ``adversarial_sanity``).
"""

from .._submodules import lazy_submodules

from .stats import bootstrap_ci, Interval, sign_flip, SignFlip


__getattr__, __dir__ = lazy_submodules(__name__, __path__, globals())  # ``lib.metrics.pointing`` imported on first use


__all__ = ["bootstrap_ci", "Interval", "sign_flip", "SignFlip"]
