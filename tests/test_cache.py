"""The JSON cache of computed results (lib.cache): keyed by a digest, read back as written, a miss when absent."""

import json
import re
import warnings

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


def test_tensor_digest_includes_the_dtype_and_refuses_non_tensors():
    assert cache.tensor_digest(torch.zeros(4)) != cache.tensor_digest(torch.zeros(4, dtype=torch.int32))  # same bytes
    with pytest.raises(TypeError, match="torch.Tensor"):
        cache.tensor_digest([1, 2])


def test_a_write_is_published_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    key = {"model": "tiny"}
    cache.write("results", "tiny", key, "old")
    path = cache.entry_path("results", "tiny", key)
    seen = {}

    def interrupted_rename(source, target):  # the writer dies between writing the new text and publishing it
        seen["target"], seen["old"] = target, json.loads(path.read_text())["value"]
        seen["new"] = json.loads(open(source, encoding="utf-8").read())["value"]
        raise OSError("no space left on device")

    monkeypatch.setattr(cache.os, "replace", interrupted_rename)
    with pytest.raises(OSError, match=path.name):
        cache.write("results", "tiny", key, "new")
    assert seen == {"target": path, "old": "old", "new": "new"}  # written whole beside the entry, never over it
    assert cache.read("results", "tiny", key) == "old"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("content", [b'{"key": {"model": "tiny"}, "val', b"", b"\xff\xfe", b"[1, 2]",
                                     b'{"key": {"model": "tiny"}}', b'{"key": {"model": "other"}, "value": "theirs"}'],
                         ids=["truncated", "empty", "not-utf8", "not-a-dict", "no-value", "another-key"])
def test_an_unreadable_or_foreign_entry_is_a_miss_and_is_overwritten(tmp_path, monkeypatch, content):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    key = {"model": "tiny"}
    path = cache.entry_path("results", "tiny", key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(cache.CacheWarning, match=re.escape(str(path))):
        assert cache.read("results", "tiny", key) is None
    cache.write("results", "tiny", key, [1.5])
    assert cache.read("results", "tiny", key) == [1.5]


@pytest.mark.parametrize("content, why", [(b'{"trunc', "is not UTF-8 JSON"),
                                          (b'{"spread": [1.0], "layers": ["stage4"]}', "is not a cache entry")],
                         ids=["truncated", "wrong-shape"])
def test_a_damaged_layer_weights_entry_warns_once_naming_it_and_is_recomputed(tmp_path, monkeypatch, content, why):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    key = {"model": "lite0", "layers": ["stage4", "head"]}
    path = cache.entry_path("layer_weights", "lite0", key)
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.warns(cache.CacheWarning) as warned:
        assert cache.read("layer_weights", "lite0", key) is None  # a miss, not a JSONDecodeError
    (message,) = [str(w.message) for w in warned]
    assert str(path) in message and why in message and "recomputed" in message and "deleting the file" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per file: the second read of the same damage is quiet
        assert cache.read("layer_weights", "lite0", key) is None
        cache.write("layer_weights", "lite0", key, {"spread": [1.0, 2.0]})  # the caller's recomputed value replaces it
        assert cache.read("layer_weights", "lite0", key) == {"spread": [1.0, 2.0]}
    path.write_bytes(content)  # damaged again after a good write: said again
    with pytest.warns(cache.CacheWarning, match=re.escape(str(path))):
        assert cache.read("layer_weights", "lite0", key) is None


@pytest.mark.parametrize("where", ["serialising", "writing"])
def test_a_write_interrupted_midway_leaves_the_old_entry_and_no_temporary_file(tmp_path, monkeypatch, where):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    key = {"model": "tiny"}
    cache.write("layer_weights", "tiny", key, {"spread": [1.0]})
    path = cache.entry_path("layer_weights", "tiny", key)
    old = path.read_bytes()
    if where == "serialising":
        def dies(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(cache.json, "dumps", dies)
    else:  # half of the text is in the temporary file when the writer is stopped
        real_open = open

        class HalfWritten:
            def __init__(self, stream):
                self.stream = stream

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.stream.close()

            def write(self, text):
                self.stream.write(text[: len(text) // 2])
                raise KeyboardInterrupt

        monkeypatch.setattr(paths, "open", lambda *a, **k: HalfWritten(real_open(*a, **k)), raising=False)
    with pytest.raises(KeyboardInterrupt):
        cache.write("layer_weights", "tiny", key, {"spread": [2.0]})
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left behind


@pytest.mark.parametrize("folder, name", [("results", "../../escape"), ("results", "a/b"), ("..", "n"),
                                          ("/tmp", "n"), ("", "n"), ("results", "")])
def test_a_folder_or_name_that_would_leave_the_cache_is_refused(tmp_path, monkeypatch, folder, name):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    for call in (lambda: cache.write(folder, name, {"a": 1}, 1), lambda: cache.read(folder, name, {"a": 1})):
        with pytest.raises(ValueError, match="without path separators"):
            call()
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # "../../escape" would have landed in tmp_path


def test_an_unusable_cache_folder_is_a_miss_on_read_and_one_error_on_write(tmp_path, monkeypatch):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    monkeypatch.setenv(paths.CACHE_ENV, str(not_a_folder))
    assert cache.read("results", "tiny", {"a": 1}) is None
    with pytest.raises(OSError, match=f"{not_a_folder}.*{paths.CACHE_ENV}"):
        cache.write("results", "tiny", {"a": 1}, 1)
    assert not_a_folder.read_text() == "x"
