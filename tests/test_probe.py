"""Pooled features, their spread and the linear probe: what the learned layer weights of Rebuffi et al.
2020 (Sec. 4.2, schemes 1 and 2) read from a layer, on known inputs and a tiny net."""

import pytest
import torch

from lib.saliency import probe as pr
from tests._tiny import images, no_hooks_left, tiny_cnn


def test_feature_spread_by_hand():
    x = torch.tensor([[1.0, 0.0], [3.0, -2.0]])
    # centre = mean |x| = [2, 1]; deviations [-1, -1], [1, -3]
    assert pr.feature_spread(x) == pytest.approx((2**0.5 + 10**0.5) / 2)
    assert pr.feature_spread(x, norm="l1") == pytest.approx((2 + 4) / 2)
    assert pr.feature_spread(x, norm="mean_abs") == pytest.approx((1 + 2) / 2)
    assert pr.feature_spread(torch.ones(5, 3)) == 0.0


def test_probe_split_is_stratified_and_disjoint():
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 3, 3])
    train, held = pr.probe_split(labels, seed=0)
    assert set(train.tolist()).isdisjoint(held.tolist())
    assert sorted(labels[held].tolist()) == [0, 1, 3]  # class 2 has one image: unused
    assert sorted(labels[train].tolist()) == [0, 0, 1, 3]


def test_probe_accuracy_separable_vs_noise():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(60) % 3
    centres = torch.tensor([[5.0, 0.0], [0.0, 5.0], [-5.0, -5.0]])
    x = centres[y] + 0.3 * torch.randn(60, 2, generator=g)
    good = pr.probe_accuracy(x[:30], y[:30], x[30:], y[30:], steps=150)
    assert good.train_accuracy == 1.0 and good.heldout_accuracy == 1.0 and good.chance == pytest.approx(1 / 3)
    noise = torch.randn(60, 2, generator=g)
    bad = pr.probe_accuracy(noise[:30], y[:30], noise[30:], y[30:], steps=150)
    assert bad.heldout_accuracy < 0.7


def test_pooled_features_match_manual_forward():
    model = tiny_cnn()
    x = images(4, 16)
    feats = pr.pooled_features(model, x, ["features.1", "features.3"], batch_size=3)
    with torch.no_grad():
        h1 = model.features[1](model.features[0](x))
        h3 = model.features[3](model.features[2](h1))
    assert torch.allclose(feats["features.1"], h1.mean((2, 3)), atol=1e-6)
    assert torch.allclose(feats["features.3"], h3.mean((2, 3)), atol=1e-6)
    assert no_hooks_left(model)


def test_feature_deviations_average_to_the_spread():
    x = torch.tensor([[1.0, 0.0], [3.0, -2.0]])
    assert pr.feature_deviations(x).tolist() == pytest.approx([2**0.5, 10**0.5])
    g = torch.Generator().manual_seed(3)
    y = torch.randn(7, 5, generator=g)
    for norm in ("l2", "l1", "mean_abs"):
        assert float(pr.feature_deviations(y, norm=norm).mean()) == pytest.approx(pr.feature_spread(y, norm=norm))
    with pytest.raises(ValueError):
        pr.feature_deviations(y, norm="max")


def test_probe_hits_average_to_the_heldout_accuracy():
    g = torch.Generator().manual_seed(0)
    y = torch.arange(40) % 4
    x = torch.randn(4, 6, generator=g)[y] + 1.5 * torch.randn(40, 6, generator=g)
    hits = pr.probe_hits(x[:24], y[:24], x[24:], y[24:], steps=80, seed=2)
    result = pr.probe_accuracy(x[:24], y[:24], x[24:], y[24:], steps=80, seed=2)
    assert hits.dtype == torch.bool and hits.shape == (16,)
    assert float(hits.float().mean()) == pytest.approx(result.heldout_accuracy)
    assert 0 < result.heldout_accuracy < 1  # a noisy problem: the equality is not between two constants


def _blobs(n: int = 24, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    return torch.randn(3, 4, generator=g)[y] + 0.5 * torch.randn(n, 4, generator=g), y


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_probe_refuses_non_finite_features(bad):
    x, y = _blobs()
    spoilt = x.clone()
    spoilt[0, 0] = bad
    for call in (lambda: pr.probe_accuracy(spoilt[:12], y[:12], x[12:], y[12:], steps=5),
                 lambda: pr.probe_accuracy(x[:12], y[:12], spoilt[:12], y[12:], steps=5),
                 lambda: pr.probe_hits(x[:12], y[:12], spoilt[:12], y[12:], steps=5),
                 lambda: pr.fit_probe(spoilt[:12], y[:12], steps=5),
                 lambda: pr.fit_probe(x[:12], y[:12], steps=5)(spoilt[:2])):
        with pytest.raises(ValueError, match="NaN or infinite"):
            call()


def test_probe_refuses_a_test_set_whose_labels_do_not_match_its_rows():
    x, y = _blobs()
    for n_labels in (1, 2):  # one label would broadcast over the three rows
        with pytest.raises(ValueError, match=f"test_x has 3 rows but test_y {n_labels} labels"):
            pr.probe_accuracy(x[:12], y[:12], x[12:15], y[12:12 + n_labels], steps=5)
        with pytest.raises(ValueError, match=f"test_x has 3 rows but test_y {n_labels} labels"):
            pr.probe_hits(x[:12], y[:12], x[12:15], y[12:12 + n_labels], steps=5)


def test_probe_labels_must_be_one_dimensional_integers():
    x, y = _blobs()
    for labels in (y.float() + 0.7, y > 0):  # truncated to 0/1/2 or taken as two classes before
        with pytest.raises(TypeError, match="integer class labels"):
            pr.fit_probe(x[:12], labels[:12], steps=5)
        with pytest.raises(TypeError, match="integer class labels"):
            pr.probe_accuracy(x[:12], y[:12], x[12:], labels[12:], steps=5)
        with pytest.raises(TypeError, match="integer class labels"):
            pr.probe_split(labels)
    with pytest.raises(ValueError, match="1-D"):
        pr.probe_accuracy(x[:12], y[:12, None], steps=5)
    with pytest.raises(ValueError, match="1-D"):
        pr.probe_split(y.reshape(4, 6))


def test_probe_split_and_the_probe_refuse_counts_below_one():
    x, y = _blobs()
    for heldout in (0, -1):
        with pytest.raises(ValueError, match="heldout_per_class must be an integer >= 1"):
            pr.probe_split(y, heldout_per_class=heldout)
    with pytest.raises(TypeError, match="heldout_per_class"):
        pr.probe_split(y, heldout_per_class=1.5)
    for steps in (0, -5):  # no step taken: the probe would be its random initialisation
        with pytest.raises(ValueError, match="steps must be an integer >= 1"):
            pr.probe_accuracy(x[:12], y[:12], x[12:], y[12:], steps=steps)


def test_pooled_features_refuse_a_repeated_layer():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"distinct.*features\.1"):
        pr.pooled_features(model, images(3, 16), ["features.1", "features.3", "features.1"])
    assert no_hooks_left(model)
