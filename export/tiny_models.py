"""Small plain-torch models of every bundle role, plus a ResNet-18-sized classifier for the INT8 benchmark.

Not trained and not meant to find anything: they exist so that tests of other parts, the demo and the
benchmarks have real, exportable models whose outputs follow ``docs/bundles.md`` exactly. Each ``forward``
returns a tuple in the order of its role's output record fields (:mod:`edge.bundles.outputs`). Plain torch only
(torchvision does not import with the CPU torch here). Factories take keyword arguments so that
``edge-export onnx --factory export.tiny_models:tiny_scorer --arg in_channels=3`` can build them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=stride, padding=1), nn.BatchNorm2d(cout), nn.ReLU())


class TinyDetector(nn.Module):
    """Anchor-free dense detector: one candidate per cell of a stride-8 grid.

    forward(input (N, C, H, W)) → boxes (N, K, 4) xyxy in input pixels, scores (N, K) in [0, 1]
    [, labels (N, K) int64 when ``num_classes`` > 1], K = (H/8)·(W/8).
    """

    def __init__(self, in_channels: int = 3, width: int = 16, num_classes: int = 1) -> None:
        super().__init__()
        self.stride = 8
        self.num_classes = num_classes
        self.body = nn.Sequential(_block(in_channels, width, 2), _block(width, width, 2),
                                  _block(width, 2 * width, 2))
        self.obj = nn.Conv2d(2 * width, 1, 1)
        self.ltrb = nn.Conv2d(2 * width, 4, 1)
        self.cls = nn.Conv2d(2 * width, num_classes, 1) if num_classes > 1 else None

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, ...]:
        f = self.body(input)
        _, _, gh, gw = f.shape
        ys = (torch.arange(gh, dtype=f.dtype) + 0.5) * self.stride
        xs = (torch.arange(gw, dtype=f.dtype) + 0.5) * self.stride
        cy = ys.view(1, gh, 1).expand(1, gh, gw).reshape(1, -1)
        cx = xs.view(1, 1, gw).expand(1, gh, gw).reshape(1, -1)
        d = torch.exp(self.ltrb(f).clamp(-4.0, 4.0)).flatten(2) * self.stride  # (N, 4, K)
        boxes = torch.stack([cx - d[:, 0], cy - d[:, 1], cx + d[:, 2], cy + d[:, 3]], dim=-1)
        scores = torch.sigmoid(self.obj(f)).flatten(1)
        if self.cls is None:
            return boxes, scores
        labels = self.cls(f).flatten(2).argmax(dim=1)
        return boxes, scores, labels


class TinyScorer(nn.Module):
    """Student–teacher scorer (STFPM-like, untrained): squared feature difference as the anomaly map.

    forward(input) → anomaly_map (N, 1, H/4, W/4), score (N,) = map mean (smoother than the maximum, so that
    an untrained model's scores spread out instead of saturating).
    """

    def __init__(self, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        self.teacher = nn.Sequential(_block(in_channels, width, 2), _block(width, width, 2))
        self.student = nn.Sequential(_block(in_channels, width, 2), _block(width, width, 2))

    def forward(self, input: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        amap = ((self.teacher(input) - self.student(input)) ** 2).mean(dim=1, keepdim=True)
        return amap, amap.flatten(1).mean(dim=1)


class TinyClassifier(nn.Module):
    """forward(input) → probs (N, num_classes), softmax."""

    def __init__(self, in_channels: int = 3, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(in_channels, width, 2), _block(width, 2 * width, 2))
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.body(input).mean(dim=(2, 3))), dim=1)


class TinySegmenter(nn.Module):
    """forward(input) → masks (N, num_classes, H/2, W/2), softmax over classes."""

    def __init__(self, in_channels: int = 3, width: int = 16, num_classes: int = 2) -> None:
        super().__init__()
        self.body = nn.Sequential(_block(in_channels, width, 2), _block(width, width, 1))
        self.head = nn.Conv2d(width, num_classes, 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.head(self.body(input)), dim=1)


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.b1(self.c1(x)))
        return F.relu(self.b2(self.c2(y)) + self.down(x))


class ResNet18Classifier(nn.Module):
    """ResNet-18 layout (11.2 M parameters at 3 input channels) in plain torch; forward → probs (N, C)."""

    def __init__(self, in_channels: int = 3, num_classes: int = 2) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(),
                                  nn.MaxPool2d(3, 2, 1))
        layers: list[nn.Module] = []
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_Basic(cin, cout, stride), _Basic(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(512, num_classes)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.fc(self.layers(self.stem(input)).mean(dim=(2, 3))), dim=1)


def _eval(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights and BatchNorm statistics that are not the identity (so BN folding is exercised)."""
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None and m.running_var is not None:
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    return module.eval()


def tiny_detector(in_channels: int = 3, num_classes: int = 1, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _eval(TinyDetector(in_channels, num_classes=num_classes), seed)


def tiny_scorer(in_channels: int = 3, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _eval(TinyScorer(in_channels), seed)


def tiny_classifier(in_channels: int = 3, num_classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _eval(TinyClassifier(in_channels, num_classes=num_classes), seed)


def tiny_segmenter(in_channels: int = 3, num_classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _eval(TinySegmenter(in_channels, num_classes=num_classes), seed)


def resnet18_classifier(in_channels: int = 3, num_classes: int = 2, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return _eval(ResNet18Classifier(in_channels, num_classes), seed)
