"""Progress bars and part timers for the long loops of the sections.

``track`` is ``tqdm`` writing plain text to standard output: in a terminal it redraws one
line; in an executed notebook every redraw is kept, so ``scripts/execute_notebook.py``
collapses each line to its last state (the text after its last carriage return) and the
book shows one finished bar per loop.  ``SALIENCY_PROGRESS=0`` silences them.

``Timer`` records the wall time (and, with ``cpu=True``, this process's CPU time, telling a
slow part from a busy shared machine) of a section's parts, either as a ``with timer.part(name):``
block or between ``timer.start()`` and ``timer.done(name)`` when a part spans notebook cells;
``wall_seconds`` times one call.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from typing import Callable, Iterable, Iterator, TypeVar

import torch
from tqdm import tqdm

__all__ = ["track", "Timer", "wall_seconds"]

T = TypeVar("T")


def track(iterable: Iterable[T], desc: str | None = None, total: int | None = None) -> Iterable[T]:
    """``iterable`` with a text progress bar (at most one redraw every 2 seconds)."""
    return tqdm(iterable, desc=desc, total=total, file=sys.stdout, ascii=True, ncols=88, mininterval=2.0,
                disable=os.environ.get("SALIENCY_PROGRESS", "1") == "0")


def _synchronize() -> None:
    """Wait for the queued CUDA work (kernels run asynchronously: without it a clock times their launch only)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def wall_seconds(function: Callable[..., object], *args, **kwargs) -> float:
    """Wall-clock seconds (``time.perf_counter``) of one call ``function(*args, **kwargs)``; its result is discarded.

    Once CUDA is in use, the clock starts after the work queued before the call and stops
    after the call's own work has finished (``torch.cuda.synchronize``).

    Raises:
        TypeError: ``function`` is not callable (checked before the clock starts).
    """
    if not callable(function):
        raise TypeError(f"wall_seconds times a call: function must be callable, got {type(function).__name__}")
    _synchronize()
    start = time.perf_counter()
    function(*args, **kwargs)
    _synchronize()
    return time.perf_counter() - start


class Timer:
    """Wall-clock seconds of a section's named parts, printed as each part ends.

    A part runs from the last ``start()`` (or the end of the previous part, or the timer's
    creation) to ``done(name)``; ``part(name)`` times a ``with`` block.  The clock is
    ``time.perf_counter``; the CPU clock, with ``cpu=True``, is ``time.process_time``.

    Attributes:
        seconds: ``{part: wall seconds}``, in the order the parts ended (a repeated name
            keeps its last time).
        cpu_seconds: ``{part: CPU seconds}`` (empty without ``cpu``).
        started: ``time.perf_counter()`` at creation.
    """

    def __init__(self, *, cpu: bool = False) -> None:
        self.cpu = cpu
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}
        self.started = time.perf_counter()
        self._cpu_started = time.process_time()
        self._since, self._cpu_since = self.started, self._cpu_started

    def start(self) -> None:
        """Begin a part now (time spent since the previous part belongs to none)."""
        self._since, self._cpu_since = time.perf_counter(), time.process_time()

    def done(self, name: str) -> None:
        """End the current part, record it under ``name`` (:attr:`seconds`), print ``[name: 1.2 s]`` and start the next.

        Returns None, so that a notebook cell ending in ``timer.done(...)`` shows nothing more.

        Raises:
            ValueError: ``name`` is not a non-empty string.
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a part's name must be a non-empty string, got {name!r}")
        now, cpu_now = time.perf_counter(), time.process_time()
        self.seconds[name] = now - self._since
        text = f"[{name}: {self.seconds[name]:.1f} s"
        if self.cpu:
            self.cpu_seconds[name] = cpu_now - self._cpu_since
            text += f" wall, {self.cpu_seconds[name]:.1f} s CPU"
        print(text + "]")
        self._since, self._cpu_since = now, cpu_now

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Time the ``with`` block as the part ``name`` (recorded only when the block completes).

        The block's own start is kept, so a part nested in another leaves the outer part's time whole.

        Raises:
            ValueError: ``name`` is not a non-empty string (before the block runs).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a part's name must be a non-empty string, got {name!r}")
        start, cpu_start = time.perf_counter(), time.process_time()
        self._since, self._cpu_since = start, cpu_start
        yield
        self._since, self._cpu_since = start, cpu_start
        self.done(name)

    def total(self) -> float:
        """Wall seconds since the timer was created."""
        return time.perf_counter() - self.started

    def summary(self) -> str:
        """One line: the total wall (and CPU) time since the timer was created and each part's, in whole seconds."""
        cpu = time.process_time() - self._cpu_started
        total = f"total {self.total():.0f} s wall" + (f", {cpu:.0f} s CPU" if self.cpu else "")
        return total + "; parts: " + (", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()) or "none")
