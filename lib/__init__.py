"""Backpropagation saliency: the library behind the book.

Modules: ``lib.models`` (classifiers), ``lib.data`` (datasets), ``lib.capture``
(activations and gradients at named layers), ``lib.saliency`` (the methods and their
registry), ``lib.metrics`` (evaluation), ``lib.attacks`` (PGD), ``lib.plot`` (figures),
``lib.claims`` (verdict tables), ``lib.benchmark`` (time and memory beside peers),
``lib.progress`` (progress bars), ``lib.provenance`` (what a section ran with), ``lib.paths``
(where data and results live).  Each is an attribute of ``lib``, imported on first use.
"""

import importlib.util
import pkgutil

from . import capture, models, saliency
from .saliency import METHODS

__version__ = "0.1.0"


def __getattr__(name: str):
    """A submodule not imported yet (``lib.metrics``), imported on first use."""
    if not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | {module.name for module in pkgutil.iter_modules(__path__) if not module.name.startswith("_")})


__all__ = ["capture", "models", "saliency", "metrics", "METHODS"]
