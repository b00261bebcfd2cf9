"""A package's submodules as its attributes, each imported on first use (PEP 562).

``lib``, ``lib.metrics`` and ``lib.saliency`` share this, so ``import lib; lib.metrics.pointing``
works without importing every module up front. Submodules are found on disk, so a new module
needs no list to join.
"""

from __future__ import annotations

import importlib
import importlib.util
import pkgutil
from typing import Callable


def lazy_submodules(package: str, path, namespace: dict) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of a package that imports its public submodules lazily.

    Args:
        package: the package's ``__name__``.
        path: its ``__path__``.
        namespace: its ``globals()`` (what ``dir`` lists besides the submodules).
    """

    def __getattr__(name: str):
        if not name.startswith("_") and importlib.util.find_spec(f"{package}.{name}") is not None:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted(set(namespace) | {m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_")})

    return __getattr__, __dir__
