"""Backpropagation saliency: the library behind the book.

Modules: ``lib.models`` (classifiers), ``lib.data`` (datasets), ``lib.capture``
(activations and gradients at named layers), ``lib.saliency`` (the methods and their
registry), ``lib.metrics`` (evaluation), ``lib.attacks`` (PGD), ``lib.plot`` (figures),
``lib.claims`` (verdict tables), ``lib.benchmark`` (time and memory beside peers),
``lib.distributed`` (evaluations sharded over processes and GPUs with ``torchrun``),
``lib.progress`` (progress bars), ``lib.provenance`` (what a section ran with), ``lib.paths``
(where data and results live), ``lib.cache`` (computed results kept as JSON), ``lib.synthetic`` (generated shapes with known relevant
pixels, a small CNN and the retraining experiments of the practitioner's audit).  Each is an
attribute of ``lib``, imported on first use.
"""

from ._submodules import lazy_submodules

from . import capture, models, saliency
from .saliency import METHODS

__version__ = "0.1.0"


__getattr__, __dir__ = lazy_submodules(__name__, __path__, globals())  # ``lib.metrics`` imported on first use


__all__ = ["capture", "models", "saliency", "metrics", "METHODS"]
