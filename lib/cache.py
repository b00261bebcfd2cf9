"""A JSON cache of computed results, one file per entry, keyed by a digest of what produced them.

An entry lives at ``lib.paths.cache_dir() / <folder> / <name>-<digest>.json``, where the digest
is a sha1 of the key (a JSON-serialisable mapping, sorted).  The file holds the key beside the
value, so an entry says what it was computed from; :func:`read` compares it with the key asked for.
What the key must hold is the caller's business: everything the value depends on, tensors by
:func:`tensor_digest`.

An entry is published whole or not at all (:func:`write` writes a temporary file beside it and
renames it into place), and an entry that cannot be read back (truncated, not JSON, another
key) is a miss, overwritten by the next write.

Example::

    key = {"model": name, "weights": cache.tensor_digest(*module.state_dict().values())}
    value = cache.read("layer_weights", name, key)
    if value is None:
        value = cache.write("layer_weights", name, key, compute())
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path

import torch

from . import paths

__all__ = ["tensor_digest", "entry_path", "read", "write"]


def tensor_digest(*tensors: torch.Tensor) -> str:
    """sha1 of tensors' dtypes, shapes and values (any dtype, any device): 16 hexadecimal digits.

    Two tensors of the same shape but other values (another image, another model's weights)
    or another dtype (float32 and int32 zeros) have different digests.

    Raises:
        TypeError: an argument that is not a dense ``torch.Tensor``.
    """
    digest = hashlib.sha1()
    for tensor in tensors:
        if not isinstance(tensor, torch.Tensor) or tensor.layout != torch.strided:
            what = type(tensor).__name__ if not isinstance(tensor, torch.Tensor) else f"a {tensor.layout} tensor"
            raise TypeError(f"tensor_digest takes dense torch.Tensor arguments, got {what}")
        digest.update(f"{tensor.dtype}{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


def _check_part(what: str, part) -> None:
    """Refuse a folder or name that is not one plain path component inside the cache folder."""
    if not isinstance(part, str):
        raise TypeError(f"the cache {what} must be a str, got {type(part).__name__}")
    if part in ("", ".", "..") or any(sep in part for sep in ("/", "\\", os.sep, os.altsep) if sep):
        raise ValueError(f"the cache {what} must be a non-empty name without path separators (not '.' or '..'), got {part!r}")


def _canonical(key: Mapping) -> str:
    """The JSON text a key is digested and compared by (sorted, so the order of its items does not matter)."""
    if not isinstance(key, Mapping):
        raise TypeError(f"a cache key must be a mapping, got {type(key).__name__}")
    return json.dumps(dict(key), sort_keys=True)


def _location(folder: str, name: str, key: Mapping) -> tuple[str, str]:
    """The entry's folder and file name inside the cache folder, the arguments checked (see :func:`entry_path`)."""
    _check_part("folder", folder)
    _check_part("name", name)
    digest = hashlib.sha1(_canonical(key).encode()).hexdigest()[:16]
    return folder, f"{name}-{digest}.json"


def entry_path(folder: str, name: str, key: Mapping) -> Path:
    """Where the entry of ``key`` lives: ``cache_dir() / folder / f"{name}-{digest}.json"``.

    Raises:
        TypeError: a key that is not a mapping or that JSON cannot serialise; a folder or name
            that is not a str.
        ValueError: a folder or name that is empty, ``.``/``..`` or holds a path separator
            (it would leave the cache folder).
    """
    folder, file_name = _location(folder, name, key)
    return paths.cache_dir() / folder / file_name


def read(folder: str, name: str, key: Mapping):
    """The value stored for ``key``, or None on a miss: no entry, an unusable cache folder, or an
    entry that cannot be read back (not UTF-8 JSON, not ``{"key": ..., "value": ...}``, another key).

    Raises:
        TypeError, ValueError: as :func:`entry_path` (a refused key, folder or name is an error, not a miss).
    """
    folder, file_name = _location(folder, name, key)
    try:
        entry = json.loads((paths.cache_dir() / folder / file_name).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # no entry or no usable cache folder; not UTF-8 or not JSON (both ValueErrors)
        return None
    if not isinstance(entry, dict) or set(entry) != {"key", "value"} or not isinstance(entry["key"], dict):
        return None
    if json.dumps(entry["key"], sort_keys=True) != _canonical(key):
        return None
    return entry["value"]


def write(folder: str, name: str, key: Mapping, value):
    """Store ``value`` (JSON-serialisable) for ``key``, beside the key; returns ``value``.

    The entry is written to a temporary file in its folder and renamed into place, so a reader
    sees the old entry, no entry or the whole new one, never a part.

    Raises:
        TypeError, ValueError: as :func:`entry_path`; a value JSON cannot serialise (nothing is written).
        OSError: a cache folder that cannot be created or written, named in the message.
    """
    folder, file_name = _location(folder, name, key)
    text = json.dumps({"key": dict(key), "value": value}, indent=1)
    try:
        path = paths.cache_dir() / folder / file_name
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OSError(f"cannot write the cache entry {folder}/{file_name}: the cache folder is unusable ({error}); "
                      f"set {paths.CACHE_ENV} to a writable folder") from error
    temporary = path.with_name(f"{file_name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "x", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise OSError(f"cannot write the cache entry {path}: {error}") from error
    return value
