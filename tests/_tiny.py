"""Tiny networks built in the tests: fast, deterministic, with known structure."""

import torch
from torch import nn


def tiny_cnn(classes: int = 5, seed: int = 0, inplace: bool = False) -> nn.Module:
    """conv-ReLU-conv-ReLU-GAP-linear on 3 x H x W inputs; ``features.3`` is the last ReLU."""
    torch.manual_seed(seed)
    model = nn.Sequential()
    model.features = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(inplace=inplace),
        nn.Conv2d(8, 12, 3, padding=1, stride=2),
        nn.ReLU(inplace=inplace),
    )
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.fc = nn.Linear(12, classes)
    return model.eval()


def images(batch: int = 3, size: int = 16, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, size, size, generator=generator)


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def no_hooks_left(model: nn.Module) -> bool:
    return all(
        not (m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or m._backward_pre_hooks)
        for m in model.modules()
    )
