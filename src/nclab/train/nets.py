"""Networks for the collapse experiments, written without torchvision.

Every network has a final ``nn.Linear`` named ``fc`` (the classifier W, b) and a module named
``penultimate`` whose output is the feature vector the classifier reads, so the metrics hooks
(:func:`nclab.metrics.collect`) find both by name; any other module can be tracked by its name
in ``model.named_modules()``.

* ``mlp``: [Linear → BatchNorm → ReLU] × depth, then ``fc``. The penultimate features come after
  a ReLU, so they are non-negative as in the MD paper; ``penultimate_width = K`` gives the
  bottleneck of the MD experiments.
* ``cnn``: three [Conv3x3 → BatchNorm → ReLU → MaxPool] blocks, global average pooling, ``fc``.
* ``resnet18``: the CIFAR ResNet-18 (He et al. 2016): 3x3 stem, no max-pool, four stages of two
  basic blocks, widths (64, 128, 256, 512) × ``width``.
* ``vgg11``: VGG-11 with BatchNorm (Simonyan & Zisserman 2015; configuration A), channel widths
  × ``width``, global average pooling before ``fc``; a max-pool is skipped once the feature map
  is a single pixel (28x28 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["NETWORKS", "BasicBlock", "build_network"]

NETWORKS: tuple[str, ...] = ("mlp", "cnn", "resnet18", "vgg11")

_VGG11_LAYERS = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


class _MLP(nn.Module):
    def __init__(self, in_features: int, widths: Sequence[int], num_classes: int, bn: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        prev = in_features
        for width in widths:
            layers += [
                nn.Linear(prev, width),
                nn.BatchNorm1d(width) if bn else nn.Identity(),
                nn.ReLU(),
            ]
            prev = width
        self.body = nn.Sequential(*layers[:-1])
        self.penultimate = layers[-1]
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.penultimate(self.body(x)))
        return out


def _conv_bn_relu(inp: int, out: int) -> list[nn.Module]:
    """3x3 convolution (no bias: BatchNorm follows), BatchNorm, ReLU."""
    return [nn.Conv2d(inp, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]


class _CNN(nn.Module):
    def __init__(self, channels: int, widths: Sequence[int], num_classes: int) -> None:
        super().__init__()
        blocks: list[nn.Module] = []
        prev = channels
        for width in widths:
            blocks += [*_conv_bn_relu(prev, width), nn.MaxPool2d(2)]
            prev = width
        self.body = nn.Sequential(*blocks)
        self.penultimate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.penultimate(self.body(x)))
        return out


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and a shortcut (1x1 convolution when shapes change)."""

    def __init__(self, inp: int, out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inp, out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out)
        self.conv2 = nn.Conv2d(out, out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or inp != out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(inp, out, 1, stride, bias=False), nn.BatchNorm2d(out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _ResNet18(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: float) -> None:
        super().__init__()
        widths = [max(1, round(w * width)) for w in (64, 128, 256, 512)]
        self.stem = nn.Sequential(*_conv_bn_relu(channels, widths[0]))
        prev, stages = widths[0], []
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(prev, w, stride), BasicBlock(w, w, 1)))
            prev = w
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.penultimate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        out: torch.Tensor = self.fc(self.penultimate(x))
        return out


class _VGG11(nn.Module):
    def __init__(self, channels: int, size: int, num_classes: int, width: float) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = channels
        for item in _VGG11_LAYERS:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = max(1, round(int(item) * width))
            layers += _conv_bn_relu(prev, out)
            prev = out
        self.features = nn.Sequential(*layers)
        self.penultimate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(prev, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.fc(self.penultimate(self.features(x)))
        return out


def build_network(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    widths: Sequence[int] = (512, 512, 512),
    batchnorm: bool = True,
    width: float = 1.0,
    bias: bool = True,
) -> nn.Module:
    """Build ``name`` (:data:`NETWORKS`) for inputs of ``input_shape`` (C, H, W).

    ``widths``: hidden widths of the MLP (the last one is the penultimate width) or the channel
    widths of the CNN blocks; ``width``: ResNet / VGG width multiplier; ``bias``: whether the
    classifier ``fc`` has a bias (Tirer & Bruna's MSE experiments train without one; the weights
    are initialized the same either way).
    """
    if name not in NETWORKS:
        raise ValueError(f"model.name: expected one of {NETWORKS}, got {name!r}")
    c, h, w = input_shape
    net: nn.Module
    if name == "mlp":
        if not widths:
            raise ValueError("model.widths: the MLP needs at least one hidden layer")
        net = _MLP(c * h * w, list(widths), num_classes, batchnorm)
    elif name == "cnn":
        net = _CNN(c, list(widths), num_classes)
    elif name == "vgg11":
        net = _VGG11(c, min(h, w), num_classes, width)
    else:
        net = _ResNet18(c, num_classes, width)
    if not bias:
        net.fc.register_parameter("bias", None)
    return net
