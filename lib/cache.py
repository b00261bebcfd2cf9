"""A JSON cache of computed results, one file per entry, keyed by a digest of what produced them.

An entry lives at ``lib.paths.cache_dir() / <folder> / <name>-<digest>.json``, where the digest
is a sha1 of the key (a JSON-serialisable mapping, sorted).  The file holds the key beside the
value, so an entry says what it was computed from; :func:`read` compares it with the key asked for.
What the key must hold is the caller's business: everything the value depends on, tensors by
:func:`tensor_digest`.

An entry is published whole or not at all (:func:`write` writes a temporary file beside it and
renames it into place; a write that fails or is interrupted leaves the old entry and no
temporary file). The cache is only a cache: an entry that cannot be read back (truncated, not
JSON, not ``{"key": ..., "value": ...}``, another key) is a miss, recomputed by the caller and
overwritten by the next write, and :func:`read` warns once per file (:class:`CacheWarning`,
naming it) so that a damaged cache does not go unnoticed. A value of the wrong shape for its
caller (``lib.saliency.combine.layer_weights``) is the caller's miss in the same way.

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
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from . import paths

__all__ = ["tensor_digest", "entry_path", "read", "write", "CacheWarning"]


class CacheWarning(UserWarning):
    """A cache entry that exists but cannot be used; it is recomputed and overwritten."""


_WARNED: set[Path] = set()
"""The unusable entries already warned about in this process (one warning per file)."""


def _unusable(path: Path, why: str) -> None:
    """Warn once per process that the entry at ``path`` cannot be used (a miss: it will be overwritten)."""
    if path in _WARNED:
        return
    _WARNED.add(path)
    warnings.warn(f"the cache entry {path} {why}; it is ignored and recomputed, and the next write replaces it "
                  "(deleting the file does the same)", CacheWarning, stacklevel=3)


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

    Warns:
        CacheWarning: once per file and process, an entry that exists but cannot be read back
            (named; it is a miss, and the next :func:`write` replaces it).

    Raises:
        TypeError, ValueError: as :func:`entry_path` (a refused key, folder or name is an error, not a miss).
    """
    folder, file_name = _location(folder, name, key)
    try:
        path = paths.cache_dir() / folder / file_name
        text = path.read_bytes()
    except OSError:  # no entry, or no usable cache folder
        return None
    try:
        entry = json.loads(text.decode("utf-8"))
    except ValueError as error:  # not UTF-8 or not JSON (both ValueErrors): truncated, or damaged
        _unusable(path, f"is not UTF-8 JSON ({type(error).__name__}: {error})")
        return None
    if not isinstance(entry, dict) or set(entry) != {"key", "value"} or not isinstance(entry["key"], dict):
        _unusable(path, 'is not a cache entry ({"key": {...}, "value": ...})')
        return None
    if json.dumps(entry["key"], sort_keys=True) != _canonical(key):
        _unusable(path, "holds the value of another key")
        return None
    return entry["value"]


def write(folder: str, name: str, key: Mapping, value):
    """Store ``value`` (JSON-serialisable) for ``key``, beside the key; returns ``value``.

    The entry is written to a temporary file in its folder and renamed into place, so a reader
    sees the old entry, no entry or the whole new one, never a part; a write that fails or is
    interrupted (KeyboardInterrupt) removes its temporary file and leaves the old entry.

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
    try:  # an OSError, or an interruption midway: the old entry stays, no temporary file
        paths.write_text_atomically(path, text)
    except OSError as error:
        raise OSError(f"cannot write the cache entry {path}: {error}") from error
    _WARNED.discard(path)  # a new entry: should it break again, say so again
    return value
