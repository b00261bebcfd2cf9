"""Progress bars for the long loops of the sections.

``track`` is ``tqdm`` writing plain text to standard output: in a terminal it redraws one
line; in an executed notebook every redraw is kept, so ``scripts/execute_notebook.py``
collapses each line to its last state (the text after its last carriage return) and the
book shows one finished bar per loop.  ``SALIENCY_PROGRESS=0`` silences them.
"""

from __future__ import annotations

import os
import sys
from typing import Iterable, TypeVar

from tqdm import tqdm

__all__ = ["track"]

T = TypeVar("T")


def track(iterable: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterable[T]:
    """``iterable`` with a text progress bar (at most one redraw every 2 seconds)."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stdout, ascii=True, ncols=88, mininterval=2.0,
                disable=os.environ.get("SALIENCY_PROGRESS", "1") == "0")
