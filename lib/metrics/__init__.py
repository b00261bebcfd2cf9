"""Metrics of saliency maps: they take maps and return tensors or small dataclasses; they never plot.

Modules: ``stats`` (bootstrap intervals), and one module per metric family
(``pointing``, ``insertion_deletion``, ``density``, ``sanity``, ``class_sensitivity``).
"""

from .stats import bootstrap_ci, Interval

__all__ = ["bootstrap_ci", "Interval"]
