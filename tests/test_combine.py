"""Layer weighting and combination (Rebuffi et al. 2020, Sec. 4.2) on known inputs and tiny nets."""

import json

import pytest
import torch

from lib import paths
from lib.saliency import combine as cb
from lib.saliency import passes, registry
from tests._tiny import images, no_hooks_left, tiny_cnn


def test_fixed_schemes():
    assert cb.linear_weights(4).tolist() == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert cb.normalise_weights(cb.linear_weights(4)).tolist() == pytest.approx([0.1, 0.2, 0.3, 0.4])
    assert cb.uniform_weights(3).tolist() == pytest.approx([1 / 3] * 3)
    with pytest.raises(ValueError):
        cb.normalise_weights([0.0, 0.0])
    with pytest.raises(ValueError):
        cb.normalise_weights([1.0, -0.1])


def test_weighted_sum_and_product_by_hand():
    a = torch.tensor([[[0.0, 0.5], [1.0, 0.25]]])  # (B=1, 2, 2)
    b = torch.tensor([[[1.0, 0.5], [0.25, 1.0]]])
    maps = torch.stack([a, b])  # (J=2, 1, 2, 2)
    s = cb.combine(maps, [1.0, 3.0], "sum", normalize=False)
    assert s[0].flatten().tolist() == pytest.approx([0.75, 0.5, 0.4375, 0.8125])
    p = cb.combine(maps, [1.0, 3.0], "product", normalize=False)
    expected = [0.0, 0.5, 1.0**0.25 * 0.25**0.75, 0.25**0.25]
    assert p[0].flatten().tolist() == pytest.approx(expected)
    # A zero-weight layer is neutral in the product even where it is 0.
    q = cb.combine(maps, [0.0, 1.0], "product", normalize=False)
    assert q[0].flatten().tolist() == pytest.approx(b[0].flatten().tolist())
    # Normalised output keeps the argmax and spans [0, 1].
    n = cb.combine([a, b], [1.0, 3.0], "sum")
    assert n.max() == 1 and n.min() == 0 and n.flatten().argmax() == s.flatten().argmax()
    # Uniform product has the argmax of the unweighted product (the authors' code).
    u = cb.combine(maps, [1, 1], "product", normalize=False)
    assert torch.allclose(u, (a * b).sqrt())


def test_combine_errors():
    maps = torch.rand(2, 1, 3, 3)
    with pytest.raises(ValueError):
        cb.combine(maps, [1.0], "sum")
    with pytest.raises(ValueError):
        cb.combine(maps, [1.0, 1.0], "max")
    with pytest.raises(ValueError):
        cb.combine(maps - 1, [1.0, 1.0], "product")


@pytest.mark.parametrize("how", ["sum", "product"])
def test_combine_refuses_maps_it_would_turn_into_zeros_or_cannot_stack(how):
    maps = torch.rand(2, 1, 3, 3)
    maps[1, 0, 1, 1] = float("nan")  # min-max normalising the result would give an all-zero map
    with pytest.raises(ValueError, match="1 NaN or infinite values"):
        cb.combine(maps, [1.0, 1.0], how)
    with pytest.raises(ValueError, match="floating point"):
        cb.combine((torch.rand(2, 1, 3, 3) > 0.5), [1.0, 1.0], how)
    with pytest.raises(ValueError, match="of one shape"):
        cb.combine([torch.rand(1, 3, 3), torch.rand(1, 4, 4)], [1.0, 1.0], how)
    with pytest.raises(ValueError, match="J >= 1"):
        cb.combine([], [], how)


def test_layer_weights_cached(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    model = tiny_cnn()
    x = images(12, 16)
    labels = torch.arange(12) % 3
    w = cb.layer_weights(model, ["features.1", "features.3"], x, x, labels, model_name="tiny", probe_steps=50)
    assert w.available == cb.SCHEMES and len(w.accuracy) == 2 and w.probe["n_classes"] == 3
    assert w.scheme("linear").tolist() == pytest.approx([1 / 3, 2 / 3])
    files = list((tmp_path / "layer_weights").glob("tiny-*.json"))
    assert len(files) == 1
    # The cache is read back, not recomputed: tamper with it and see the change.
    stored = json.loads(files[0].read_text())
    stored["value"]["spread"] = [1.0, 3.0]
    files[0].write_text(json.dumps(stored))
    again = cb.layer_weights(model, ["features.1", "features.3"], x, x, labels, model_name="tiny", probe_steps=50)
    assert again.scheme("spread").tolist() == pytest.approx([0.25, 0.75])
    # Other images, other labels or other weights of the same shapes are other entries, not the tampered one.
    for other_x, other_labels, other_model in ((x.flip(0), labels, model), (x, labels.flip(0), model),
                                               (x, labels, tiny_cnn(seed=1))):
        fresh = cb.layer_weights(other_model, ["features.1", "features.3"], other_x, other_x, other_labels,
                                 model_name="tiny", probe_steps=50)
        assert fresh.scheme("spread").tolist() != pytest.approx([0.25, 0.75])
    assert len(list((tmp_path / "layer_weights").glob("tiny-*.json"))) == 4
    # Without probe images the accuracy scheme is absent, and says why.
    none = cb.layer_weights(model, ["features.1"], x, model_name="tiny", use_cache=False)
    assert none.accuracy is None and "accuracy" not in none.available
    with pytest.raises(ValueError, match="no 'accuracy'"):
        none.scheme("accuracy")
    assert set(none.frame()["scheme"]) == {"spread", "linear", "uniform"}


@pytest.mark.parametrize("name", ["excitation_backprop", "contrastive_excitation_backprop"])
def test_depth_maps_excitation_at_every_layer_from_one_pass_equals_the_method_layer_by_layer(name):
    """The winning probability at several layers from one backward pass (two for the contrastive
    variant, contrast at each layer itself) is the per-layer method's map, the input included."""
    model = tiny_cnn()
    x = images(3, 16)
    targets = torch.tensor([0, 2, 4])
    layers = [passes.INPUT, "features.1", "features.3"]
    original = registry.get(name).function
    maps = cb.depth_maps([name, "gradcam"], model, x, targets, layers, batch_size=2)
    for layer in layers:
        expected = original(passes.with_input(model) if layer == passes.INPUT else model, x, targets, layer=layer, batch_size=2)
        assert torch.equal(maps[(name, layer)], expected), layer
        assert maps[(name, layer)].amax() > 0
    assert list(maps) == [(m, l) for m in (name, "gradcam") for l in layers]
    assert no_hooks_left(model)
    with pytest.raises(TypeError, match="layers must be a layer or a non-empty list"):
        from lib.saliency.excitation import excitation_maps
        excitation_maps(model, x, targets, [])


@pytest.mark.parametrize("name", sorted(registry.REDUCTIONS))
def test_depth_maps_one_pass_equals_registered_methods(name):
    from lib.saliency import METHODS

    model = tiny_cnn()
    x = images(3, 16)
    targets = torch.tensor([0, 2, 4])
    layers = ["features.1", "features.3"]
    maps = cb.depth_maps([name], model, x, targets, layers, batch_size=2)  # two chunks, each reduced alone
    for layer in layers:
        assert torch.allclose(maps[(name, layer)], METHODS[name](model, x, targets, layer=layer), atol=1e-5)
    assert no_hooks_left(model)


def test_combinations_cover_schemes():
    w = cb.LayerWeights("m", ["a", "b"], [1.0, 2.0], None, None, [0.5, 1.0], [0.5, 0.5])
    maps = {("la", "a"): torch.rand(2, 4, 4), ("la", "b"): torch.rand(2, 4, 4)}
    out = cb.combinations(maps, w, ["la"])
    assert set(out) == {("la", s, h) for s in ("spread", "linear", "uniform") for h in ("sum", "product")}
    expected = cb.combine(torch.stack([maps[("la", "a")], maps[("la", "b")]]), [1 / 3, 2 / 3], "sum")
    assert torch.allclose(out[("la", "linear", "sum")], expected)


def test_layer_weights_loaders_called_only_on_cache_miss(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    model = tiny_cnn()
    calls = []

    def loader():
        calls.append(1)
        return images(6, 16)

    with pytest.raises(ValueError, match="cache_key"):
        cb.layer_weights(model, ["features.1"], loader, model_name="tiny")
    first = cb.layer_weights(model, ["features.1", "features.3"], loader, model_name="tiny", cache_key="six")
    second = cb.layer_weights(model, ["features.1", "features.3"], loader, model_name="tiny", cache_key="six")
    assert len(calls) == 1 and first.spread == second.spread


def test_depth_maps_input_is_the_input_gradient():
    from lib.saliency import METHODS

    model = tiny_cnn()
    x = images(3, 16)
    targets = torch.tensor([0, 2, 4])
    layers = [passes.INPUT, "features.1", "features.3"]
    maps = cb.depth_maps(["layer_gradient", "linear_approx", "gradcam_pp"], model, x, targets, layers)
    assert list(maps) == [(m, l) for m in ("layer_gradient", "linear_approx", "gradcam_pp") for l in layers]
    # The input's layer gradient is Simonyan et al.'s max_c |dS/dx|: the registered gradient method.
    assert torch.allclose(maps[("layer_gradient", passes.INPUT)], METHODS["gradient"](model, x, targets), atol=1e-6)
    # Linear approximation at the input: gradient x input summed over channels, by hand.
    inputs = x.clone().requires_grad_(True)
    (g,) = torch.autograd.grad(model(inputs)[torch.arange(3), targets].sum(), inputs)
    by_hand = (g * x).sum(1)
    low = by_hand.flatten(1).min(1).values[:, None, None]
    high = by_hand.flatten(1).max(1).values[:, None, None]
    assert torch.allclose(maps[("linear_approx", passes.INPUT)], (by_hand - low) / (high - low), atol=1e-5)
    # The other depths are unchanged by the tap (Grad-CAM++ has a one-pass reduction too).
    for layer in layers[1:]:
        assert torch.allclose(maps[("linear_approx", layer)], METHODS["linear_approx"](model, x, targets, layer=layer), atol=1e-6)
        assert torch.allclose(maps[("gradcam_pp", layer)], METHODS["gradcam_pp"](model, x, targets, layer=layer), atol=1e-6)
    # Score-CAM has none: it is called once per layer, on the tapped model.
    per_layer = cb.depth_maps(["scorecam"], model, x, targets, layers)
    assert per_layer[("scorecam", passes.INPUT)].shape == (3, 16, 16)
    for layer in layers[1:]:
        assert torch.allclose(per_layer[("scorecam", layer)], METHODS["scorecam"](model, x, targets, layer=layer), atol=1e-6)
    assert no_hooks_left(model)
    with pytest.raises(ValueError, match="no one-pass reduction"):
        cb.depth_maps(["gradient"], model, x, targets, ["features.1"])


def test_with_input_keeps_aliases_and_the_model():
    model = tiny_cnn()
    before = [p.requires_grad for p in model.parameters()]
    tapped = passes.with_input(model)
    assert tapped.layers[passes.INPUT] == "input" and tapped.layers["features.3"] == "network.features.3"
    x = images(2, 16)
    assert torch.equal(tapped.model(x), model(x))
    cb.depth_maps(["linear_approx"], model, x, torch.tensor([1, 2]), [passes.INPUT, "features.3"])
    assert [p.requires_grad for p in model.parameters()] == before and model.training is False


def test_image_halves_keep_an_image_together_and_ignore_order():
    ids = ["a", "a", "b", "c", "c", "c", "d", "e"]
    choose, test = cb.image_halves(ids, seed=0)
    assert torch.equal(choose, ~test)
    chosen = {i for i, c in zip(ids, choose.tolist()) if c}
    assert len(chosen) == 2 and not chosen & {i for i, c in zip(ids, test.tolist()) if c}
    shuffled = ids[::-1]
    again, _ = cb.image_halves(shuffled, seed=0)
    assert {i for i, c in zip(shuffled, again.tolist()) if c} == chosen
    splits = {frozenset(i for i, c in zip(ids, cb.image_halves(ids, seed=s)[0].tolist()) if c) for s in range(10)}
    assert len(splits) > 1  # the seed moves the split


def test_best_candidate_weighted_and_ties_to_the_first_listed():
    values = {"x": torch.tensor([1.0, 0.0, 0.0]), "y": torch.tensor([0.0, 1.0, 1.0]), "z": torch.tensor([0.0, 1.0, 1.0])}
    assert cb.best_candidate(values, torch.ones(3) / 3, ["x", "y", "z"]) == "y"
    assert cb.best_candidate(values, torch.ones(3) / 3, ["z", "y", "x"]) == "z"
    assert cb.best_candidate(values, torch.tensor([0.8, 0.1, 0.1]), ["x", "y"]) == "x"
    with pytest.raises(ValueError):
        cb.best_candidate(values, torch.ones(3), [])


@pytest.mark.filterwarnings("ignore::FutureWarning")  # gc.get_objects() meets torch's deprecated aliases
def test_depth_maps_leaves_no_capture_record_alive():
    import gc

    from lib.capture import Capture

    def records():
        gc.collect()
        return sum(isinstance(o, Capture) for o in gc.get_objects())

    model = tiny_cnn()
    x, targets = images(2, 16), torch.tensor([0, 1])
    # features.3 is not a leaf: its hook sits on autograd's graph next to the record that holds its
    # tensor; the layer pass empties each record once its gradients are taken
    layers = ["features.1", "features.3"]
    before = records()
    for _ in range(3):
        cb.depth_maps(["linear_approx", "gradcam"], model, x, targets, [passes.INPUT, *layers])
    assert records() == before


def test_layer_weights_refuse_probe_labels_that_do_not_fit_the_probe_images():
    model, x = tiny_cnn(), images(8, 16)
    layers = ["features.1", "features.3"]
    for n_labels in (4, 16):  # 4 labels were fit on the first 4 images; 16 indexed past the images
        with pytest.raises(ValueError, match=f"8 probe images but {n_labels} probe labels"):
            cb.layer_weights(model, layers, x, x, torch.arange(n_labels) % 4, use_cache=False, probe_steps=5)
    with pytest.raises(ValueError, match="at least two"):  # one class: every probe scores 1
        cb.layer_weights(model, layers, x, x, torch.zeros(8, dtype=torch.long), use_cache=False, probe_steps=5)
    with pytest.raises(TypeError, match="integer class labels"):
        cb.layer_weights(model, layers, x, x, torch.arange(8) / 2, use_cache=False, probe_steps=5)
    with pytest.raises(ValueError, match="heldout_per_class"):
        cb.layer_weights(model, layers, x, x, torch.arange(8) % 4, heldout_per_class=-1, use_cache=False)
    with pytest.raises(ValueError, match="probe_steps"):
        cb.layer_weights(model, layers, x, x, torch.arange(8) % 4, probe_steps=0, use_cache=False)


def test_layer_weights_without_two_usable_probe_classes_have_no_accuracy_scheme():
    model, x = tiny_cnn(), images(8, 16)
    labels = torch.tensor([0, 0, 0, 0, 0, 0, 1, 2])  # classes 1 and 2 have one image each: only class 0 is usable
    w = cb.layer_weights(model, ["features.1", "features.3"], x, x, labels, use_cache=False, probe_steps=5)
    assert w.accuracy is None and "one class" in w.note and "accuracy" not in w.available


def test_layer_weights_refuse_a_model_name_that_leaves_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="path separators"):
        cb.layer_weights(tiny_cnn(), ["features.1"], images(4, 16), model_name="../../escape")
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # it would have landed in tmp_path


@pytest.mark.parametrize("spoil", ["truncate", "extra field", "list", "short spread"])
def test_a_spoilt_layer_weights_entry_is_recomputed(tmp_path, monkeypatch, spoil):
    monkeypatch.setenv(paths.CACHE_ENV, str(tmp_path))
    model, x, layers = tiny_cnn(), images(6, 16), ["features.1", "features.3"]
    fresh = cb.layer_weights(model, layers, x, model_name="tiny")
    (path,) = (tmp_path / "layer_weights").glob("tiny-*.json")
    good = path.read_text()
    entry = json.loads(good)
    if spoil == "truncate":
        path.write_text(good[: len(good) // 2])
    else:
        entry["value"] = {"extra field": {**entry["value"], "extra": 1}, "list": [1, 2],
                          "short spread": {**entry["value"], "spread": [1.0]}}[spoil]
        path.write_text(json.dumps(entry))
    again = cb.layer_weights(model, layers, x, model_name="tiny")
    assert again == fresh and path.read_text() == good  # recomputed and written back whole
