"""A JSON cache of computed results, one file per entry, keyed by a digest of what produced them.

An entry lives at ``lib.paths.cache_dir() / <folder> / <name>-<digest>.json``, where the digest
is a sha1 of the key (a JSON-serialisable mapping, sorted).  The file holds the key beside the
value, so an entry says what it was computed from.  What the key must hold is the caller's
business: everything the value depends on, tensors by :func:`tensor_digest`.

Example::

    key = {"model": name, "weights": cache.tensor_digest(*module.state_dict().values())}
    value = cache.read("layer_weights", name, key)
    if value is None:
        value = cache.write("layer_weights", name, key, compute())
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import torch

from . import paths

__all__ = ["tensor_digest", "entry_path", "read", "write"]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha1 of tensors' shapes and values (any dtype, any device): 16 hexadecimal digits.

    Two tensors of the same shape but other values (another image, another model's weights)
    have different digests.
    """
    digest = hashlib.sha1()
    for tensor in tensors:
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def entry_path(folder: str, name: str, key: Mapping) -> Path:
    """Where the entry of ``key`` lives: ``cache_dir() / folder / f"{name}-{digest}.json"``.

    Raises:
        TypeError: a key that JSON cannot serialise.
    """
    digest = hashlib.sha1(json.dumps(dict(key), sort_keys=True).encode()).hexdigest()[:16]
    return paths.cache_dir() / folder / f"{name}-{digest}.json"


def read(folder: str, name: str, key: Mapping):
    """The value stored for ``key``, or None when there is no entry (a cache miss)."""
    path = entry_path(folder, name, key)
    if not path.is_file():
        return None
    return json.loads(path.read_text()).get("value")


def write(folder: str, name: str, key: Mapping, value):
    """Store ``value`` (JSON-serialisable) for ``key``, beside the key; returns ``value``."""
    path = entry_path(folder, name, key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"key": dict(key), "value": value}, indent=1))
    return value
