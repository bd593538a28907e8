"""The architectures, each a small `nn.Module` taking (n, 1, 28, 28) images to class logits.

To add one: write the class here and add its name to `catalog.ARCHITECTURES`.
"""

from __future__ import annotations

import torch
from torch import nn

from reprogrid.datasets import catalog


class MLP(nn.Module):
    """Two hidden layers of ReLU units: the baseline every image model should beat."""

    def __init__(self, num_classes: int = 10, hidden: int = 256) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden // 2),
            nn.ReLU(),
            nn.Linear(hidden // 2, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


class SmallCNN(nn.Module):
    """Two 3x3 conv blocks and a small head: ~0.2M weights, a few seconds an epoch per core."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 7 * 7, 128), nn.ReLU(), nn.Linear(128, num_classes)
        )

    def forward(self, x):
        return self.head(self.features(x))


class SpeedCNN(nn.Module):
    """The speedrun's network: downsample first, two normalised convolutions, a linear head.

    A strided 5x5 stem halves the image before the wider convolution, which is where a CPU
    spends its time; batch norm lets one-cycle Adam train it in a few epochs, and a linear
    head over the 7x7 map (not global pooling) keeps where a feature was, worth a point of
    accuracy after one epoch. It trains channels-last under bfloat16 autocast
    (training.numerics): on a 2-core AVX-512 CPU that is twice the float32 speed at the same
    accuracy. Every choice is measured in config/experiments/speedrun.md.
    """

    memory_format = torch.channels_last
    autocast_dtype = torch.bfloat16

    def __init__(self, num_classes: int = 10, width: int = 16) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 5, stride=2, padding=2, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 7 * 7, num_classes))

    def forward(self, x):
        return self.head(self.features(x))


class ExamplesCNN(nn.Module):
    """The network of pytorch/examples `mnist/main.py` (1.2M weights), kept as the baseline."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            nn.Conv2d(1, 32, 3),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Dropout(0.25),
            nn.Flatten(),
            nn.Linear(9216, 128),
            nn.ReLU(),
            nn.Dropout(0.5),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.layers(x)


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialised model of the registered architecture `arch`."""
    if arch not in catalog.ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {', '.join(catalog.ARCHITECTURES)}")
    return globals()[catalog.ARCHITECTURES[arch]](num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable weights."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
