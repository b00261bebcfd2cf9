"""Backpropagation saliency: the library behind the book.

Modules: ``lib.models`` (classifiers), ``lib.data`` (datasets), ``lib.capture``
(activations and gradients at named layers), ``lib.saliency`` (the methods),
``lib.metrics`` (evaluation), ``lib.attacks`` (PGD), ``lib.plot`` (figures), ``lib.claims``
(verdict tables), ``lib.benchmark`` (time and memory beside peers), ``lib.progress``
(progress bars), ``lib.provenance`` (what a section ran with).
"""

from . import capture, models, saliency
from .saliency import METHODS

__version__ = "0.1.0"
__all__ = ["capture", "models", "saliency", "METHODS"]
