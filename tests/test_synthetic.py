"""lib.synthetic: the generated shapes, the small CNN and the retraining experiments, checked by hand and by training."""

import numpy as np
import pytest
import torch

from lib import saliency, synthetic


@pytest.fixture(scope="module")
def trained():
    torch.manual_seed(0)
    train_set, test_set = synthetic.shapes_dataset(600, seed=0), synthetic.shapes_dataset(200, seed=1)
    net = synthetic.small_cnn(seed=0)
    history = synthetic.train(net, train_set.images, train_set.labels, epochs=8, seed=0)
    return net, history, train_set, test_set


def test_the_shape_is_the_only_evidence_and_the_set_is_seeded():
    data = synthetic.shapes_dataset(40, seed=3)
    again = synthetic.shapes_dataset(40, seed=3)
    assert torch.equal(data.images, again.images) and torch.equal(data.labels, again.labels)
    assert data.images.shape == (40, 3, 32, 32) and data.labels.bincount().tolist() == [10, 10, 10, 10]
    pattern_sizes = {0: 49, 1: 33, 2: 13, 3: 24}  # square, plus, cross (diagonals share the centre), ring
    for image, label, mask in zip(data.images, data.labels, data.relevant):
        assert int(mask.sum()) == pattern_sizes[int(label)]
        assert torch.all(image[:, mask] == 1.0)
    assert not data.watermark.any() and not data.relevant[:, :synthetic.WATERMARK, :synthetic.WATERMARK].any()


def test_the_watermark_encodes_the_label_and_removing_it_paints_noise():
    data = synthetic.shapes_dataset(8, seed=0, shortcut=True)
    corner = data.images[:, :, 0, 0]
    for colour, label in zip(corner, data.labels):
        expected = torch.full((3,), -2.0) if label == 3 else torch.eye(3)[int(label)] * 2.0
        assert torch.equal(colour, expected)
    clean = synthetic.remove_watermark(data)
    assert torch.equal(clean.images[:, :, 3:, 3:], data.images[:, :, 3:, 3:])
    assert not torch.isin(clean.images[:, :, :3, :3], torch.tensor([2.0, -2.0])).all()


def test_training_learns_the_shapes_and_shuffled_labels_carry_nothing(trained):
    net, history, train_set, test_set = trained
    assert history[-1] > 0.9 and synthetic.accuracy(net, test_set.images, test_set.labels) > 0.9
    assert not net.training
    shuffled = synthetic.small_cnn(seed=0)
    synthetic.train(shuffled, train_set.images, synthetic.shuffled_labels(train_set.labels), epochs=8, seed=0)
    assert synthetic.accuracy(shuffled, test_set.images, test_set.labels) < 0.4  # chance is 0.25
    assert sorted(synthetic.shuffled_labels(train_set.labels).tolist()) == sorted(train_set.labels.tolist())


def test_cam_methods_run_at_the_documented_layer(trained):
    net, _, _, test_set = trained
    maps = saliency.gradcam(net, test_set.images[:4], test_set.labels[:4], layer=synthetic.CAM_LAYER)
    assert maps.shape == (4, 32, 32) and torch.isfinite(maps).all()


def test_remove_top_removes_exactly_the_top_pixels():
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    maps = torch.zeros(2, 4, 4)
    maps[0, 0, 0], maps[0, 3, 3], maps[1, 1, 2] = 5.0, 4.0, 9.0
    fill = torch.tensor([-1.0, -2.0, -3.0])
    out = synthetic.remove_top(images, maps, 2 / 16, fill)
    changed = (out != images).any(dim=1)
    assert changed.sum(dim=(1, 2)).tolist() == [2, 2]
    assert changed[0, 0, 0] and changed[0, 3, 3] and changed[1, 1, 2] and changed[1, 0, 0]  # tie broken by position
    assert torch.equal(out[0, :, 0, 0], fill)
    with pytest.raises(ValueError, match="fraction"):
        synthetic.remove_top(images, maps, 1.5)
    with pytest.raises(ValueError, match="maps must be"):
        synthetic.remove_top(images, maps[:1], 0.5)


def test_roar_with_every_pixel_removed_is_chance(trained):
    _, _, train_set, test_set = trained
    frame = synthetic.roar(lambda s: synthetic.small_cnn(seed=s), train_set[:200], test_set[:100],
                           synthetic.random_maps(200, 32), synthetic.random_maps(100, 32, seed=1),
                           fractions=(1.0,), seeds=(0,), epochs=2)
    assert list(frame.columns) == ["fraction", "seed", "accuracy", "correct"]
    # nothing is left: every test image is the same constant image, so one class is predicted for all of them
    labels = test_set[:100].labels
    assert frame.accuracy[0] in {float((labels == c).float().mean()) for c in range(len(synthetic.SHAPES))}


def test_mass_inside_and_edge_maps_by_hand():
    maps = torch.tensor([[[1.0, 3.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0]]])
    masks = torch.tensor([[[True, False], [False, False]]] * 2)
    share = synthetic.mass_inside(maps, masks)
    assert share[0] == pytest.approx(0.25) and torch.isnan(share[1])
    with pytest.raises(ValueError, match=">= 0"):
        synthetic.mass_inside(-maps, masks)
    step = torch.zeros(1, 3, 5, 5)
    step[..., 3:] = 1.0
    edges = synthetic.edge_maps(step)[0]
    assert edges[:, 0].abs().max() == 0 and edges[:, 2].min() == 4.0  # Sobel: 1 + 2 + 1 across the step


@pytest.mark.parametrize("call, message", [
    (lambda: synthetic.shapes_dataset(0), "n must be"),
    (lambda: synthetic.shapes_dataset(4, size=8), "size must be"),
    (lambda: synthetic.shapes_dataset(4, noise=float("nan")), "noise"),
    (lambda: synthetic.train(synthetic.small_cnn(), torch.zeros(4, 3, 32, 32), torch.zeros(3, dtype=torch.long)), "labels"),
    (lambda: synthetic.train(synthetic.small_cnn(), torch.zeros(4, 3, 32, 32), torch.zeros(4, dtype=torch.long), lr=0), "lr"),
    (lambda: synthetic.small_cnn(1), "classes"),
])
def test_bad_input_is_one_clear_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_scoring_a_model_in_training_mode_leaves_its_batchnorm_statistics_alone():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(4, 4)).train()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    data = synthetic.shapes_dataset(8, seed=0)
    with pytest.warns(UserWarning, match="training mode"):
        synthetic.correct(net, data.images, data.labels)
    assert net.training and all(torch.equal(before[k], v) for k, v in net.state_dict().items())


@pytest.mark.parametrize("call, message", [
    (lambda: synthetic.shapes_dataset(4, contrast=float("nan")), "contrast"),
    (lambda: synthetic.shapes_dataset(4, shortcut="no"), "shortcut"),
    (lambda: synthetic.remove_watermark(synthetic.shapes_dataset(4, shortcut=True), noise=-1), "noise"),
    (lambda: synthetic.train(synthetic.small_cnn(), torch.zeros(0, 3, 32, 32), torch.zeros(0, dtype=torch.long)), "at least one"),
    (lambda: synthetic.remove_top(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), 0.5, torch.full((3,), float("nan"))), "fill"),
    (lambda: synthetic.roar(synthetic.small_cnn, synthetic.shapes_dataset(4), synthetic.shapes_dataset(4),
                            torch.zeros(4, 32, 32), torch.zeros(4, 32, 32), fractions=[]), "fractions"),
])
def test_more_bad_input_found_by_review(call, message):
    with pytest.raises((ValueError, TypeError), match=message):
        call()


def test_numpy_numbers_are_accepted_and_bad_seeds_refused():
    data = synthetic.shapes_dataset(np.int64(8), seed=np.int32(3), noise=np.float32(0.5), contrast=np.float64(1.0))
    assert torch.equal(data.images, synthetic.shapes_dataset(8, seed=3).images)
    assert torch.equal(synthetic.random_maps(np.int64(2), 4, seed=np.int64(1)), synthetic.random_maps(2, 4, seed=1))
    for call in (lambda: synthetic.small_cnn(seed=1.5), lambda: synthetic.random_maps(2, 4, seed=-1),
                 lambda: synthetic.shuffled_labels(torch.arange(4), seed="a"),
                 lambda: synthetic.train(synthetic.small_cnn(), data.images, data.labels, epochs=1, seed=None)):
        with pytest.raises(ValueError, match="seed"):
            call()


def test_float16_maps_do_not_overflow_and_seeds_fit_torch():
    half = torch.zeros(1, 256, 256, dtype=torch.bool)
    half[:, :128] = True
    assert synthetic.mass_inside(torch.ones(1, 256, 256, dtype=torch.float16), half).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="seed must be a whole number >= 0 and <= "):
        synthetic.shapes_dataset(4, seed=2**64)
    synthetic.remove_watermark(synthetic.shapes_dataset(4, seed=synthetic.MAX_SEED, shortcut=True))


def test_labels_the_model_has_no_output_for_are_refused():
    data = synthetic.shapes_dataset(8, seed=0)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\].*from 10 to 13"):
        synthetic.correct(synthetic.small_cnn(), data.images, data.labels + 10)
