"""lib.metrics.audit: the practitioner's checks, against hand computations and the definitions."""

import numpy as np
import pytest
import torch
from torch import nn

from lib import saliency, synthetic
from lib.metrics import audit


def test_top_fraction_jaccard_by_hand():
    a = torch.tensor([[[4.0, 3.0], [2.0, 1.0]]])
    b = torch.tensor([[[4.0, 1.0], [3.0, 2.0]]])
    # top half: a -> {0, 1}, b -> {0, 2}: 1 shared of 3
    assert audit.top_fraction_jaccard(a, b, 0.5).item() == pytest.approx(1 / 3)
    assert audit.top_fraction_jaccard(a, a, 0.5).item() == 1.0
    with pytest.raises(ValueError, match="fraction"):
        audit.top_fraction_jaccard(a, b, 0.0)
    with pytest.raises(ValueError, match="NaN"):
        audit.top_fraction_jaccard(a * float("nan"), b)


def test_agreement_matrix_is_symmetric_with_unit_diagonal():
    maps = {k: torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(i)) for i, k in enumerate("xyz")}
    frame = audit.agreement_matrix(maps, 0.2)
    assert (frame.to_numpy() == frame.to_numpy().T).all() and (frame.to_numpy().diagonal() == 1).all()
    assert frame.loc["x", "y"] == pytest.approx(float(audit.top_fraction_jaccard(maps["x"], maps["y"], 0.2).mean()))
    with pytest.raises(ValueError, match="at least two"):
        audit.agreement_matrix({"x": maps["x"]})


def test_threshold_iou_by_hand():
    maps = torch.tensor([[[1.0, 0.6, 0.2], [0.0, 0.0, 0.0]], [[0.0] * 3, [0.0] * 3]])
    masks = torch.tensor([[[True, False, False], [True, False, False]]] * 2)
    iou = audit.threshold_iou(maps, masks, 0.5)
    assert iou[0].item() == pytest.approx(1 / 3)  # selected {0, 1}, truth {0, 3}: 1 of 3
    assert iou[1].item() == 0.0  # a zero map selects nothing
    with pytest.raises(ValueError, match="empty"):
        audit.threshold_iou(maps, torch.zeros_like(masks))
    with pytest.raises(ValueError, match="boolean"):
        audit.threshold_iou(maps, masks.float())


def test_boxes_mask_is_inclusive_and_clipped():
    mask = audit.boxes_mask(torch.tensor([[1.2, 0.0, 2.9, 1.0], [3.0, 3.0, 9.0, 9.0]]), 5)
    expected = torch.zeros(5, 5, dtype=torch.bool)
    expected[0:2, 1:3] = True
    expected[3:, 3:] = True
    assert torch.equal(mask, expected)
    assert not audit.boxes_mask(torch.zeros(0, 4), 4).any()
    with pytest.raises(ValueError, match="x1 >= x0"):
        audit.boxes_mask(torch.tensor([[3.0, 0.0, 1.0, 1.0]]), 4)


class _Mirror(nn.Module):
    """A flip-invariant score: the sum of the image and its mirror image, weighted symmetrically."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)))

    def forward(self, x):
        w = self.weight + self.weight.flip(-1)
        return (x.unsqueeze(1) * w).flatten(2).sum(-1)


def test_stability_of_a_flip_equivariant_gradient_is_one_for_the_flip():
    images = torch.randn(3, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    result = audit.augmentation_stability(_Mirror().eval(), "gradient", images, torch.tensor([0, 1, 0]), shift=0.25)
    assert list(result) == list(audit.AUGMENTATIONS)
    assert torch.allclose(result["flip"], torch.ones(3))
    assert torch.allclose(result["brighter"], torch.ones(3))  # a linear model's gradient ignores the brightness
    with pytest.raises(ValueError, match="shift"):
        audit.augmentation_stability(_Mirror().eval(), "gradient", images, shift=0.6)


def test_class_discrimination_explains_the_top_classes_in_order():
    net = synthetic.small_cnn(seed=0)
    images = synthetic.shapes_dataset(4, seed=0).images
    result = audit.class_discrimination(net, "gradcam", images, k=3, method_kwargs={"layer": synthetic.CAM_LAYER})
    with torch.no_grad():
        expected = net(images).topk(3, dim=1).indices
    assert torch.equal(result["classes"], expected)
    second = saliency.gradcam(net, images, expected[:, 1], layer=synthetic.CAM_LAYER)
    assert torch.allclose(result["maps"][:, 1], second)
    assert torch.allclose(result["overlap"][:, 0, 1], audit.top_fraction_jaccard(result["maps"][:, 0], second, 0.1))
    with pytest.raises(ValueError, match="k must be"):
        audit.class_discrimination(net, "gradcam", images, k=9, method_kwargs={"layer": synthetic.CAM_LAYER})


def test_train_mode_maps_differ_on_batchnorm_and_leave_the_model_untouched():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                        nn.Linear(4, 3))
    with torch.no_grad():
        net[1].running_mean.fill_(0.5)
        net[1].running_var.fill_(2.0)
    net.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    images = torch.randn(4, 3, 8, 8)
    result = audit.train_mode_maps(net, "gradcam", images, method_kwargs={"layer": "2"})
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()) and not net.training
    assert not torch.allclose(result["eval"], result["train"])
    assert torch.allclose(result["eval"], saliency.gradcam(net, images, result["targets"], layer="2"))
    with pytest.raises(ValueError, match="at least 2"):
        audit.train_mode_maps(net, "gradcam", images[:1], method_kwargs={"layer": "2"})
    with pytest.raises(ValueError, match="no BatchNorm"):
        audit.train_mode_maps(nn.Sequential(nn.Flatten(), nn.Linear(192, 2)).eval(), "gradient", images)


@pytest.mark.parametrize("call, message", [
    (lambda: audit.pearson(torch.rand(8, 4, 4), torch.rand(1, 4, 4)), "one shape"),
    (lambda: audit.boxes_mask(torch.tensor([[0, 0], [3, 3]]), 8), r"\(K, 4\)"),
    (lambda: audit.boxes_mask([0, 0, 1, 1, 4, 4, 5, 5], 8), r"\(K, 4\)"),
    (lambda: audit.boxes_mask(torch.zeros(0, 4), -1), "size"),
])
def test_bad_input_found_by_review(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_no_maps_are_refused_rather_than_averaged_to_nan():
    with pytest.raises(ValueError, match="at least one map"):
        audit.agreement_matrix({"x": torch.zeros(0, 4, 4), "y": torch.zeros(0, 4, 4)})
    with pytest.raises(ValueError, match="at least one map"):
        audit.threshold_iou(torch.zeros(2, 0, 4), torch.zeros(2, 0, 4, dtype=torch.bool))


def test_numpy_numbers_are_accepted_as_their_python_values():
    a, b = torch.rand(2, 8, 8, generator=torch.Generator().manual_seed(0)), torch.rand(2, 8, 8)
    assert torch.equal(audit.top_fraction_jaccard(a, b, np.float32(0.25)), audit.top_fraction_jaccard(a, b, 0.25))
    masks = torch.zeros(2, 8, 8, dtype=torch.bool)
    masks[:, :4] = True
    assert torch.equal(audit.threshold_iou(a, masks, np.float64(0.5)), audit.threshold_iou(a, masks, 0.5))
    assert torch.equal(audit.boxes_mask([[0, 0, 3, 3]], (np.int64(8), np.int32(8))), audit.boxes_mask([[0, 0, 3, 3]], 8))
    with pytest.raises(ValueError, match="fraction"):
        audit.top_fraction_jaccard(a, b, np.bool_(True))


def test_huge_boxes_cover_the_map_and_a_bad_std_is_refused():
    assert audit.boxes_mask([[0, 0, 1e30, 1e30]], 8).all()  # no int64 overflow to an empty mask
    assert audit.boxes_mask([[-1e30, 2, 2**63, 3]], 8).sum() == 16
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    x = torch.rand(2, 3, 8, 8)
    for std in ([-1.0, -1.0, -1.0], [0.0, 1.0, 1.0], [1.0, 1.0], "abc", [float("nan")] * 3):
        with pytest.raises(ValueError, match="std must be 3 finite positive numbers"):
            audit.augmentation_stability(net, "gradient", x, std=std)


def test_label_box_masks_keep_each_images_boxes_of_its_label():
    boxes = [torch.tensor([[0.0, 0.0, 1.0, 1.0], [4.0, 4.0, 5.0, 5.0]]), torch.zeros(0, 4)]
    box_labels = [torch.tensor([3, 7]), torch.zeros(0, dtype=torch.long)]
    masks = audit.label_box_masks(boxes, box_labels, torch.tensor([7, 2]), 8)
    assert torch.equal(masks[0], audit.boxes_mask([[4, 4, 5, 5]], 8)) and not masks[1].any()
    with pytest.raises(ValueError, match="one entry per image"):
        audit.label_box_masks(boxes, box_labels, [7], 8)
