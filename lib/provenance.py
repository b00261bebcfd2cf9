"""What a section ran with: printed in a collapsed cell at the top of every section.

The first line says which kind of run made the page. ``scripts/execute_notebook.py``, the
only runner of the book's notebooks, sets ``SALIENCY_SECTIONS`` (where the claims go) and names
the run in ``SALIENCY_RUN``: ``build`` for the book and its tests, ``sweep ...`` for
``scripts/sweep.py``. Without ``SALIENCY_SECTIONS`` the run is interactive (a Jupyter kernel,
a plain ``python``): its claims go to the scratch folder ``build/interactive/`` and never into
the book (:func:`lib.claims.claims_dir`).
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata

import torch

from . import paths

__all__ = ["summary", "git_commit", "device_name", "run_kind", "RUN_ENV", "INTERACTIVE"]

RUN_ENV = "SALIENCY_RUN"
"""Names the run of a kernel that ``scripts/execute_notebook.py`` started: ``build``, or a sweep's description."""
INTERACTIVE = "interactive run (claims in build/interactive/, not in the book)"
"""What :func:`run_kind` says when no runner started the kernel."""

_PACKAGES = ("torch", "torchvision", "numpy", "scipy", "matplotlib", "seaborn", "grad-cam", "captum")


def git_commit() -> str:
    """The repository's commit (with ``+dirty`` when the tree has changes), or ``unknown``."""
    try:
        run = lambda *args: subprocess.run(["git", *args], cwd=paths.REPO_ROOT, capture_output=True, text=True, timeout=10)
        commit = run("rev-parse", "--short", "HEAD").stdout.strip()
        dirty = run("status", "--porcelain", "--untracked-files=no").stdout.strip()
        return (commit or "unknown") + ("+dirty" if commit and dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_name(device: torch.device | str | None = None) -> str:
    """A readable name of the device a section computes on (GPU model or CPU and cores).

    Args:
        device: what the section computes on, as :func:`lib.models.resolve_device` reads it
            (``"auto"``, ``"cpu"``, ``"cuda:1"``, a ``torch.device``); None is ``"auto"``.

    Raises:
        ValueError, TypeError: as :func:`lib.models.resolve_device` (an unknown or unavailable device).
    """
    from .models import resolve_device  # lib.models imports torchvision: only when a name is asked for

    device = resolve_device("auto" if device is None else device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def run_kind() -> str:
    """Which kind of run this is, for the first line of :func:`summary`.

    Returns:
        :data:`INTERACTIVE` when ``$SALIENCY_SECTIONS`` is not set (no runner started this
        kernel); otherwise ``"book build (scripts/execute_notebook.py)"`` when ``$SALIENCY_RUN``
        is ``build`` or empty, else the text of ``$SALIENCY_RUN`` (a sweep's ``sweep ...``) on
        one line (line breaks and runs of spaces become one space).
    """
    if not os.environ.get("SALIENCY_SECTIONS", "").strip():
        return INTERACTIVE
    run = " ".join(os.environ.get(RUN_ENV, "").split())  # one line: the first line of the summary
    return "book build (scripts/execute_notebook.py)" if run in ("", "build") else run


def summary(*, device: torch.device | str | None = None, **settings) -> str:
    """One block of text: the kind of run, the section's settings, the commit, the device and package versions.

    Args:
        device: the device the section computes on, the value it gives :func:`lib.models.load`
            (a notebook's ``device`` parameter; None: ``"auto"``); its :func:`device_name` is the
            ``device:`` line, which the page's "This page ran on" box shows.
        settings: the section's settings, one ``name: value`` line each.
    """
    lines = [f"run: {run_kind()}"] + [f"{key}: {value}" for key, value in settings.items()]
    lines += [f"git commit: {git_commit()}", f"device: {device_name(device)}", f"python: {platform.python_version()}"]
    versions = []
    for package in _PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    lines.append("packages: " + ", ".join(versions))
    return "\n".join(lines)
