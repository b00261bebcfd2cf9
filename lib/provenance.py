"""What a section ran with: printed in a collapsed cell at the top of every section."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata

import torch

from . import paths

__all__ = ["summary", "git_commit", "device_name"]

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
    """A readable name of the device a section computes on (GPU model or CPU and cores)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def summary(**settings) -> str:
    """One block of text: the section's settings, the commit, the device and package versions."""
    lines = [f"{key}: {value}" for key, value in settings.items()]
    lines += [f"git commit: {git_commit()}", f"device: {device_name()}", f"python: {platform.python_version()}"]
    versions = []
    for package in _PACKAGES:
        try:
            versions.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            pass
    lines.append("packages: " + ", ".join(versions))
    return "\n".join(lines)
