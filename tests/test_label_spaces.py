"""COCO / VOC label spaces pooled from the ImageNet classifier (lib.models.load(labels=...)).

COCO128 is read from the data root (``$SALIENCY_DATA``, else ``./data``; tests/_data.py);
the tests that need it are skipped without it.
"""

from __future__ import annotations

import json
import re
import tomllib
from collections import Counter

import pytest
import torch

from lib import data, models, paths, saliency

SPACES = ("coco", "voc")
# VOC class -> the COCO category of the same object, where the names differ.
VOC_TO_COCO = {"aeroplane": "airplane", "diningtable": "dining table", "motorbike": "motorcycle",
               "pottedplant": "potted plant", "sofa": "couch", "tvmonitor": "tv"}


from _data import COCO128, IMAGENET, needs_coco128


@pytest.fixture(scope="module")
def imagenet():
    return models.load("efficientnet_lite0")


@pytest.fixture(scope="module")
def pooled():
    return {space: models.load("efficientnet_lite0", labels=space) for space in SPACES}


def _file(space: str) -> dict:
    return json.loads((paths.REPO_ROOT / "lib" / "label_spaces" / f"{space}.json").read_text(encoding="utf-8"))


def _members_by_name(space: str) -> dict[str, set[int]]:
    categories, members = models.label_space(space)
    return {name: set(classes) for name, classes in zip(categories, members)}


def _images(batch: int = 2, size: int = 64) -> torch.Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(7))


# --------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("space", SPACES)
def test_pooled_logits_are_the_logsumexp_of_the_member_imagenet_logits(imagenet, pooled, space):
    x = _images()
    with torch.no_grad():
        z, y = imagenet(x), pooled[space](x)
    members = pooled[space].members
    assert y.shape == (2, len(members)) == (2, {"coco": 80, "voc": 20}[space])
    for c, classes in enumerate(members):
        if classes:
            torch.testing.assert_close(y[:, c], torch.logsumexp(z[:, classes], dim=1), rtol=0, atol=1e-5)
        else:
            assert torch.isneginf(y[:, c]).all()
    # exp(y_c) = sum of exp(z_k): the softmax over the pooled logits is the summed member probability.
    pooled_classes = [k for classes in members for k in classes]
    member_probability = torch.zeros_like(z).index_copy(1, torch.tensor(pooled_classes), z[:, pooled_classes].softmax(dim=1))
    expected = torch.stack([member_probability[:, classes].sum(dim=1) for classes in members], dim=1)
    torch.testing.assert_close(y.softmax(dim=1), expected, rtol=0, atol=1e-6)


def test_the_classifier_records_its_label_space_and_keeps_its_layers(imagenet, pooled):
    coco, voc = pooled["coco"], pooled["voc"]
    assert imagenet.label_space == "imagenet" and imagenet.members == [[k] for k in range(1000)] and imagenet.unmapped == []
    assert coco.label_space == "coco" and voc.label_space == "voc"
    assert coco.categories[0] == "person" and coco.categories[-1] == "toothbrush"
    assert voc.categories == list(data.VOC_CLASSES)
    assert [coco.categories[c] for c in coco.unmapped][:3] == ["person", "fire hydrant", "stop sign"]
    assert [voc.categories[c] for c in voc.unmapped] == ["person", "pottedplant"]
    assert sorted(coco.mapped + coco.unmapped) == list(range(80))
    # The pooling replaces the output layer only: every alias and every other module name is unchanged.
    assert coco.layers == imagenet.layers
    before = {n for n, _ in imagenet.model.named_modules()}
    after = {n for n, _ in coco.model.named_modules()}
    assert after - before == {"classifier.layer", "classifier.pooling"} and before <= after
    assert [k.replace("classifier.layer.", "classifier.") for k in coco.model.state_dict()] == list(imagenet.model.state_dict())
    assert not coco.model.training and not any(p.requires_grad for p in coco.model.parameters())


def test_an_unknown_label_space_is_one_clear_error():
    with pytest.raises(ValueError, match=r"unknown label space 'cocoo'; accepted: 'imagenet', 'coco', 'voc'"):
        models.load("efficientnet_lite0", labels="cocoo")
    with pytest.raises(ValueError, match="accepted"):
        models.label_space(None)


def test_the_membership_files_ship_with_the_package():
    package_data = tomllib.loads((paths.REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    shipped = {p for pattern in package_data["lib"] for p in (paths.REPO_ROOT / "lib").glob(pattern)}
    assert {paths.REPO_ROOT / "lib" / "label_spaces" / f"{space}.json" for space in SPACES} <= shipped


# --------------------------------------------------------------------------- membership


@pytest.mark.parametrize("space", SPACES)
def test_membership_is_disjoint_in_range_and_names_the_imagenet_classes(space):
    content = _file(space)
    assert "hyponym" in content["rule"] and content["label_space"] == space
    names = data.imagenet_categories()
    seen: dict[int, str] = {}
    for position, category in enumerate(content["categories"]):
        assert category["index"] == position
        for member in category["members"]:
            k = member["index"]
            assert 0 <= k < 1000 and member["name"] == names[k], (category["name"], member)
            assert re.fullmatch(r"n\d{8}", member["synset"])
            assert k not in seen, f"ImageNet class {k} ({names[k]}) is in {seen[k]!r} and {category['name']!r}"
            seen[k] = category["name"]
    categories, members = models.label_space(space)
    assert categories == [c["name"] for c in content["categories"]]
    assert members == [[m["index"] for m in c["members"]] for c in content["categories"]]


def test_membership_synsets_are_those_of_the_imagenet_class_order():
    mapping = IMAGENET / "LOC_synset_mapping.txt"
    if not mapping.is_file():
        pytest.skip("no LOC_synset_mapping.txt")
    synsets = [line.split()[0] for line in mapping.read_text().splitlines() if line.strip()]
    for space in SPACES:
        for category in _file(space)["categories"]:
            for member in category["members"]:
                assert synsets[member["index"]] == member["synset"], (space, member)


def test_the_traps_of_the_imagenet_names():
    coco = _members_by_name("coco")
    owner = {k: name for name, classes in coco.items() for k in classes}
    assert owner[21] == "bird"  # kite n01608432: the bird of prey; ImageNet has no toy kite
    assert not coco["kite"]
    assert 705 not in coco["car"] and owner[705] == "train"  # passenger car n03895866: a railway coach
    assert owner[673] == "mouse"  # the computer mouse, as COCO's 'mouse' (electronic)
    assert owner[282] == "cat" and coco["cat"] == set(range(281, 286))  # tiger cat is a tabby; big cats are not cats
    assert coco["dog"] == set(range(151, 269))
    assert {7, 8, 9, 22, 24, 100, 127, 146} <= coco["bird"]
    assert owner[934] == "hot dog" and owner[963] == "pizza" and owner[954] == "banana"
    assert owner[950] == "orange" and owner[937] == "broccoli" and owner[850] == "teddy bear"
    assert owner[879] == "umbrella" and owner[414] == "backpack" and owner[620] == "laptop"
    assert owner[487] == "cell phone" and owner[851] == "tv"
    assert {671, 444} == coco["bicycle"] and {665, 670} == coco["motorcycle"]
    assert {779, 874, 654} == coco["bus"] and {404, 895} <= coco["airplane"]
    assert not coco["person"]  # ballplayer, groom, scuba diver are roles, left out
    assert {981, 982, 983}.isdisjoint(owner)


def test_voc_and_coco_agree_where_their_categories_coincide():
    coco, voc = _members_by_name("coco"), _members_by_name("voc")
    assert list(voc) == list(data.VOC_CLASSES)
    for name, classes in voc.items():
        same = coco[VOC_TO_COCO.get(name, name)]
        if name == "tvmonitor":
            assert classes >= same
        else:
            assert classes == same, name


@needs_coco128
def test_coco_categories_are_in_the_order_of_the_coco_loader():
    assert models.label_space("coco")[0] == data.coco(COCO128, "val2017").categories


# --------------------------------------------------------------------------- saliency in the new space


def test_gradcam_of_a_one_member_category_is_gradcam_of_that_imagenet_class(imagenet, pooled):
    coco = pooled["coco"]
    zebra = coco.categories.index("zebra")
    assert coco.members[zebra] == [340]
    x = _images(size=96)
    for raw in (False, True):
        # log(exp(z)) is z and its gradient exp(z - z) is 1, both exact in floating point.
        assert torch.equal(saliency.gradcam(coco, x, zebra, raw=raw), saliency.gradcam(imagenet, x, 340, raw=raw))
    dog = coco.categories.index("dog")
    assert saliency.gradcam(coco, x, dog).shape == (2, 96, 96)


# The registered methods cheap on a CPU (scorecam, rise, cameras, smoothgrad and IG run as well, slower).
LOGIT_METHODS = ["gradient", "guided_backprop", "gradcam_pp", "layercam", "layer_gradient", "linear_approx",
                 "selective_normgrad", "normgrad", "normgrad_conv"]
# Group-CAM scores softmax probabilities: the pooled softmax runs over the pooled classes only,
# so even a one-member category's probability differs from its ImageNet one.
PROBABILITY_METHODS = ["groupcam"]


@pytest.mark.parametrize("method", LOGIT_METHODS + PROBABILITY_METHODS)
def test_saliency_methods_run_unchanged_on_coco_targets(imagenet, pooled, method):
    coco, x = pooled["coco"], _images(batch=1)
    explain = saliency.METHODS[method]
    maps = explain(coco, x, coco.categories.index("cat"))  # a category pooling five classes
    assert maps.shape == (1, 64, 64) and torch.isfinite(maps).all()
    if method in LOGIT_METHODS:  # a one-member category explains exactly as its ImageNet class does
        zebra = explain(coco, x, coco.categories.index("zebra"))
        torch.testing.assert_close(zebra, explain(imagenet, x, 340), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method, message", [
    ("gradcam", r"target 0 \('person'\) is an unmapped category"),  # targets checked on the logits (layer_pass)
    ("rise", r"target 0 \('person'\) is an unmapped category"),  # checked before any forward pass (resolve_targets)
    ("gradient", r"target 0 is an unmapped category"),  # checked by the method itself, without the names
])
def test_an_unmapped_target_is_refused(pooled, method, message):
    with pytest.raises(ValueError, match=message):
        saliency.METHODS[method](pooled["coco"], _images(batch=1), 0)


def test_the_least_likely_class_is_a_scored_one(pooled):
    from lib.attacks import pgd
    from lib.metrics.class_sensitivity import extreme_classes

    classifier = pooled["coco"]
    pixels = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        logits = classifier.model(classifier.normalize(pixels))
    assert torch.isneginf(logits).any()  # the unmapped categories
    expected = logits.masked_fill(torch.isneginf(logits), float("inf")).argmin(dim=1)
    _, least = extreme_classes(logits)
    assert torch.equal(least, expected) and torch.isfinite(logits.gather(1, least[:, None])).all()
    targets = pgd(classifier, pixels, steps=0).targets  # the attack's default target: the least likely scored class
    assert torch.equal(targets, expected) and all(int(c) in set(classifier.mapped) for c in targets)


def test_the_model_comes_back_exactly_as_given(pooled):
    coco = pooled["coco"]
    coco.model.train()  # an unusual state, to see it restored
    coco.model.classifier.layer.weight.requires_grad_(True)
    modes = [m.training for m in coco.model.modules()]
    flags = [p.requires_grad for p in coco.model.parameters()]
    state = {k: v.clone() for k, v in coco.model.state_dict().items()}
    try:
        with pytest.warns(UserWarning, match="training mode"):
            saliency.gradcam(coco, _images(batch=1), coco.categories.index("cat"))
        assert [m.training for m in coco.model.modules()] == modes
        assert [p.requires_grad for p in coco.model.parameters()] == flags
        assert all(torch.equal(v, state[k]) for k, v in coco.model.state_dict().items())
    finally:
        coco.model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- on COCO128


@needs_coco128
def test_mapping_coverage_of_coco128(pooled):
    mapped = set(pooled["coco"].mapped)
    pairs = mapped_pairs = 0
    for split in ("train2017", "val2017"):
        dataset = data.coco(COCO128, split)
        for i in range(len(dataset)):
            present = set(dataset.objects(i)[0].tolist())
            pairs += len(present)
            mapped_pairs += len(present & mapped)
    print(f"\n{len(mapped)} of 80 COCO categories mapped; COCO128 (256 images): {pairs} (image, category) pairs, "
          f"{mapped_pairs} ({mapped_pairs / pairs:.0%}) with a mapped category")
    assert len(mapped) == 58 and 0 < mapped_pairs < pairs


@needs_coco128
def test_the_top_pooled_category_is_in_the_image_far_above_chance(pooled):
    coco = pooled["coco"]
    mapped = set(coco.mapped)
    dataset = data.coco(COCO128, "val2017")
    hits, present_sets = [], []
    for batch in data.batches([dataset[i] for i in range(64)], coco.preprocess, coco.input_size, batch_size=16):
        with torch.no_grad():
            top = coco(batch.images).argmax(dim=1)  # -inf: an unmapped category is never the top one
        for category, labels in zip(top.tolist(), batch.box_labels):
            present = set(labels.tolist()) & mapped
            assert category in mapped
            hits.append(category in present)
            present_sets.append(present)
    hit_rate = sum(hits) / len(hits)
    # Chance: the category drawn uniformly from the mapped ones, or by how often each occurs.
    uniform = sum(len(present) for present in present_sets) / len(mapped) / len(present_sets)
    occurrences = Counter(c for present in present_sets for c in present)
    weighted = sum(n / sum(occurrences.values()) * n / len(present_sets) for n in occurrences.values())
    print(f"\ntop pooled category present in {hit_rate:.1%} of 64 val2017 images; "
          f"chance {uniform:.1%} (uniform over mapped), {weighted:.1%} (frequency-weighted)")
    assert hit_rate > 2 * max(uniform, weighted)


def test_pooled_logits_refuse_members_they_would_misread():
    # Negative indices wrapped round to the last classes, floats were truncated, a repeated
    # member was counted twice (log 2 added), an index past the logits failed deep in torch.
    for members, message in (([[-1]], "non-negative int"), ([[1.0]], "non-negative int"), ([[1, 1]], "repeats a class"),
                             ([], "non-empty list"), (["ab"], "list of class indices")):
        with pytest.raises(ValueError, match=message):
            models.PooledLogits(members)
    pooling = models.PooledLogits([[0, 12], []])
    with pytest.raises(ValueError, match=r"at least 13 classes, got shape \(2, 10\)"):
        pooling(torch.randn(2, 10))
    with pytest.raises(ValueError, match=r"\(B, classes\)"):
        pooling(torch.randn(13))
    every_unmapped = models.PooledLogits([[], []])(torch.randn(2, 4))
    assert torch.isneginf(every_unmapped).all()
    with pytest.raises(ValueError, match="model name must be a string"):  # an AttributeError on None
        models.load(None)
