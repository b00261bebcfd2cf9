"""Vision transformers: a layer whose output is tokens (B, N, C), or Swin's channels-last
(B, h, w, C), is read as a feature map (B, C, h, w) by every CAM and NormGrad method.

Tested on randomly initialised torchvision models (tiny configurations of torchvision's own
ViT and Swin classes, and the full-size vit_b_16 and swin_t for the aliases), against
pytorch-grad-cam with the ``reshape_transform`` its documentation gives for each.
"""

from __future__ import annotations

import pytest
import torch
from torchvision.models.swin_transformer import SwinTransformer
from torchvision.models.vision_transformer import VisionTransformer

from _tiny import images, no_hooks_left, pearson
from lib.saliency import registry
from lib.saliency.passes import (CHANNELS_FIRST, CHANNELS_LAST, TOKENS, as_feature_map, as_layer_output, feature_layout,
                                 layer_pass)

VIT_LAYER = "encoder.layers.encoder_layer_1.ln_1"
SWIN_LAYER = "features.3.1.norm1"


def tiny_vit() -> VisionTransformer:
    torch.manual_seed(0)
    vit = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32, num_classes=5)
    torch.nn.init.normal_(vit.heads.head.weight, std=0.5)  # torchvision initialises the head to 0: no gradient at all
    return vit.eval()


def tiny_swin() -> SwinTransformer:
    torch.manual_seed(0)
    return SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2], num_heads=[2, 2], window_size=[4, 4],
                           num_classes=5).eval()


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_tokens_become_a_grid_in_row_major_order_without_the_class_token():
    grid = torch.arange(2 * 6 * 3 * 3, dtype=torch.float32).view(2, 6, 3, 3)
    tokens = grid.flatten(2).transpose(1, 2)  # (2, 9, 6): torchvision's ViT flattens its patch grid row by row
    with_class = torch.cat([torch.full((2, 1, 6), -1.0), tokens], dim=1)
    assert torch.equal(as_feature_map(tokens, TOKENS), grid)
    assert torch.equal(as_feature_map(with_class, TOKENS), grid)
    assert torch.equal(as_layer_output(grid, TOKENS, with_class), with_class)
    assert torch.equal(as_layer_output(grid, TOKENS, tokens), tokens)
    channels_last = grid.permute(0, 2, 3, 1)
    assert torch.equal(as_feature_map(channels_last, CHANNELS_LAST), grid)
    assert torch.equal(as_layer_output(grid, CHANNELS_LAST, channels_last), channels_last)
    assert as_feature_map(grid, CHANNELS_FIRST) is grid
    odd = torch.zeros(2, 7, 6)  # neither 7 nor 6 is a square: left for check_feature_map to refuse
    assert as_feature_map(odd, TOKENS) is odd


def test_layouts_of_torchvision_vit_and_swin_layers():
    vit, swin = tiny_vit(), tiny_swin()
    x = images(1, size=32)
    with torch.no_grad():
        record = layer_pass(vit, x, 0, VIT_LAYER)
    assert record.activations.shape == (1, 16, 4, 4) and record.gradients.shape == (1, 16, 4, 4)
    assert feature_layout(vit, VIT_LAYER, torch.zeros(1, 17, 16)) == TOKENS
    assert feature_layout(vit, "conv_proj", torch.zeros(1, 16, 4, 4)) == CHANNELS_FIRST
    assert feature_layout(swin, SWIN_LAYER, torch.zeros(1, 4, 4, 32)) == CHANNELS_LAST
    assert feature_layout(swin, "norm", torch.zeros(1, 4, 4, 32)) == CHANNELS_LAST
    assert feature_layout(swin, "features.0.0", torch.zeros(1, 16, 8, 8)) == CHANNELS_FIRST
    assert feature_layout(swin, "permute", torch.zeros(1, 32, 4, 4)) == CHANNELS_FIRST
    record = layer_pass(swin, x, 0, SWIN_LAYER)
    assert record.activations.shape == (1, 32, 4, 4)


def _vit_reshape(tensor, side=4):
    # pytorch-grad-cam's documented reshape for ViT: drop the class token, tokens to a grid.
    result = tensor[:, 1:, :].reshape(tensor.size(0), side, side, tensor.size(2))
    return result.transpose(2, 3).transpose(1, 2)


def _swin_reshape(tensor):
    return tensor.permute(0, 3, 1, 2)


@pytest.mark.parametrize("ours, theirs", [("gradcam", "GradCAM"), ("gradcam_pp", "GradCAMPlusPlus"),
                                          ("layercam", "LayerCAM"), ("hirescam", "HiResCAM"), ("xgradcam", "XGradCAM")])
@pytest.mark.parametrize("network, layer, reshape", [(tiny_vit, VIT_LAYER, _vit_reshape),
                                                     (tiny_swin, SWIN_LAYER, _swin_reshape)])
def test_cams_on_transformers_equal_pytorch_grad_cam_with_its_reshape(ours, theirs, network, layer, reshape):
    pgc = pytest.importorskip("pytorch_grad_cam")
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    model = network()
    x = images(2, size=32)
    targets = [1, 3]
    mine = registry.get(ours).function(model, x, torch.tensor(targets), layer=layer)
    module = dict(model.named_modules())[layer]
    with getattr(pgc, theirs)(model=model, target_layers=[module], reshape_transform=reshape) as cam:
        peer = torch.from_numpy(cam(input_tensor=x, targets=[ClassifierOutputTarget(t) for t in targets]))
    assert (mine.flatten(1).amax(1) > 0).all()
    for b in range(2):
        assert pearson(mine[b], peer[b]) >= 0.99, (ours, network.__name__, b)


@pytest.mark.parametrize("network, layer", [(tiny_vit, VIT_LAYER), (tiny_swin, SWIN_LAYER)])
def test_every_layer_method_runs_on_a_transformer_and_leaves_it_as_given(network, layer):
    """Every CAM and extract-aggregate method (their light settings) gives finite (B, H, W) maps in
    [0, 1], removes its hooks and leaves the weights as they were.  CAMERAS resizes the input, which
    torchvision's ViT refuses, and Excitation Backprop has no rule for attention: both are left out."""
    model = network()
    before = _state(model)
    x = images(2, size=32)
    names = [n for n in registry.METHODS if registry.get(n).takes_layer
             and registry.get(n).family in ("class activation map", "extract-aggregate")
             and n not in ("cameras", "normgrad_conv")]
    assert {"gradcam", "scorecam", "eigencam", "ablationcam", "groupcam", "normgrad"} <= set(names)
    for name in names:
        entry = registry.get(name)
        maps = entry.function(model, x, None, **{**entry.light, "layer": layer})
        assert maps.shape == (2, 32, 32) and torch.isfinite(maps).all(), name
        assert maps.min() >= 0 and maps.max() <= 1, name
        no_hooks_left(model)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_ablation_cam_on_tokens_ablates_a_patch_channel_and_keeps_the_class_token():
    """Ablation-CAM's weights by hand on the tiny ViT: the drop of the target's logit when channel k of
    every patch token (not the class token) is set to 0, relative to the logit."""
    model = tiny_vit()
    x = images(1, size=32)
    module = dict(model.named_modules())[VIT_LAYER]
    with torch.no_grad():
        kept = {}
        handle = module.register_forward_hook(lambda _m, _i, out: kept.setdefault("out", out.clone()))
        logits = model(x)
        handle.remove()
        drops = []
        for k in range(16):
            ablated = kept["out"].clone()
            ablated[:, 1:, k] = 0
            handle = module.register_forward_hook(lambda _m, _i, _o, a=ablated: a)
            drops.append(model(x)[0, 2])
            handle.remove()
    score = logits[0, 2]
    weights = (score - torch.stack(drops)) / score
    grid = as_feature_map(kept["out"], TOKENS)[0]
    expected = torch.relu((weights[:, None, None] * grid).sum(0))
    mine = registry.get("ablationcam").function(model, x, 2, layer=VIT_LAYER, raw=True)[0]
    torch.testing.assert_close(mine, expected, atol=1e-5, rtol=1e-4)


def test_tokens_that_are_not_a_grid_get_one_clear_error():
    model = tiny_vit()
    with pytest.raises(ValueError, match=r"gives tokens \(1, 19, 16\).*neither a square grid") as error:
        registry.get("gradcam").function(_NotAGrid(model).eval(), images(1, size=32), 0, layer="net.encoder.layers.encoder_layer_1")
    assert "\n" not in str(error.value)


class _NotAGrid(torch.nn.Module):
    """Appends two register tokens before the encoder: 16 patches + class + 2 = 19 tokens, not a grid."""

    def __init__(self, vit):
        super().__init__()
        self.net = vit

    def forward(self, x):
        vit = self.net
        tokens = vit._process_input(x)
        extra = vit.class_token.expand(x.shape[0], 3, -1)
        tokens = torch.cat([extra, tokens], dim=1) + 0.0
        for block in vit.encoder.layers:
            tokens = block(tokens)
        return vit.heads(vit.encoder.ln(tokens)[:, 0])


@pytest.mark.parametrize("name, layer, size", [("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", 14),
                                               ("swin_t", "norm", 7)])
def test_the_aliases_of_torchvision_transformers_name_their_last_grid(name, layer, size):
    """``lib.models``'s "last" for ViT and Swin, on the full-size architectures (random weights)."""
    import torchvision

    from lib import models

    assert models._TORCHVISION_LAYERS[name]["last"] == layer
    torch.manual_seed(0)
    network = torchvision.models.get_model(name, weights=None).eval()
    head = network.heads.head if name.startswith("vit") else network.head
    torch.nn.init.normal_(head.weight, std=0.05)  # torchvision's ViT starts from a zero head
    x = torch.randn(1, 3, 224, 224)
    record = layer_pass(network, x, 0, layer)
    assert record.activations.shape[-2:] == (size, size) and record.gradients.abs().sum() > 0
    if name.startswith("vit"):  # after the last block only the class token reaches the logits
        assert layer_pass(network, x, 0, "encoder.ln").gradients.abs().sum() == 0
