"""The JSON cache of computed results (lib.cache): keyed by a digest, read back as written, a miss when absent."""

import json

import pytest
import torch

from lib import cache, paths


def test_tensor_digest_tells_values_shapes_and_dtypes_apart():
    x = torch.arange(6, dtype=torch.float32)
    assert cache.tensor_digest(x) == cache.tensor_digest(x.clone())
    assert len(cache.tensor_digest(x)) == 16
    others = [x.flip(0), x.reshape(2, 3), x.double(), x[:5]]
    assert len({cache.tensor_digest(x), *(cache.tensor_digest(o) for o in others)}) == 5
    assert cache.tensor_digest(x, x) != cache.tensor_digest(x)


def test_an_entry_is_read_back_as_written_and_other_keys_miss(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    key = {"model": "tiny", "layers": ["a", "b"], "seed": 0}
    assert cache.read("results", "tiny", key) is None
    value = {"spread": [1.0, 2.5], "note": "hand-made"}
    assert cache.write("results", "tiny", key, value) == value
    path = cache.entry_path("results", "tiny", key)
    assert path.parent == tmp_path / "results" and path.name.startswith("tiny-")
    assert json.loads(path.read_text()) == {"key": key, "value": value}  # the key is stored beside the value
    assert cache.read("results", "tiny", dict(reversed(list(key.items())))) == value  # key order does not matter
    assert cache.read("results", "tiny", {**key, "seed": 1}) is None
    assert cache.read("results", "other", key) is None
    with pytest.raises(TypeError):
        cache.entry_path("results", "tiny", {"images": torch.zeros(2)})  # a tensor is keyed by its digest
