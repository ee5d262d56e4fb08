"""Model registry: every architecture by name, with what the study needs to know about it.

Each entry knows its family, the smallest input it can take and the layer Grad-CAM
reads. Any other torchvision classification model works by its torchvision name.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import torch
from torch import nn

from resomap.errors import ResoMapError


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    build: Callable[[int], nn.Module]  # num_classes -> untrained model
    min_resolution: int  # below this the network's feature map collapses (or the forward fails)
    cam_layer: str  # dotted path of the layer Grad-CAM reads by default


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Plain conv-BN-ReLU stages, each halving the map, then global pooling: a fast CPU baseline."""

    def __init__(self, widths: tuple[int, ...], num_classes: int):
        super().__init__()
        stages, c_in = [], 3
        for i, width in enumerate(widths):
            pool = [nn.MaxPool2d(2)] if i < len(widths) - 1 else []
            stages.append(nn.Sequential(conv_block(c_in, width), conv_block(width, width), *pool))
            c_in = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut, as in ResNet's BasicBlock."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class CifarResNet(nn.Module):
    """He et al.'s 6n+2 ResNet for small images: a stride-1 stem keeps detail that ImageNet
    stems (stride 4) throw away at 32 px, at a fraction of resnet18's cost."""

    def __init__(self, blocks_per_stage: int, num_classes: int, widths: tuple[int, ...] = (16, 32, 64)):
        super().__init__()
        self.stem = conv_block(3, widths[0])
        stages, c_in = [], widths[0]
        for i, width in enumerate(widths):
            blocks = [ResidualBlock(c_in, width, stride=1 if i == 0 else 2)]
            blocks += [ResidualBlock(width, width) for _ in range(blocks_per_stage - 1)]
            stages.append(nn.Sequential(*blocks))
            c_in = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(self.stem(x))), 1))


def _torchvision(name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision  # imported on use: it adds seconds to every stage that only needs custom models

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)

    return build


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    _REGISTRY[spec.name] = spec


for _name, _cam in (("vgg11", "features.20"), ("vgg13", "features.24"), ("vgg16", "features.30")):
    register(ModelSpec(_name, "vgg", _torchvision(_name), 32, _cam))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register(ModelSpec(_name, "resnet", _torchvision(_name), 32, "layer4"))
register(ModelSpec("mobilenet_v2", "mobilenet", _torchvision("mobilenet_v2"), 32, "features.18"))
register(ModelSpec("mobilenet_v2_075", "mobilenet", _torchvision("mobilenet_v2", width_mult=0.75), 32, "features.18"))
register(ModelSpec("mobilenet_v3_small", "mobilenet", _torchvision("mobilenet_v3_small"), 32, "features.12"))
register(ModelSpec("mobilenet_v3_large", "mobilenet", _torchvision("mobilenet_v3_large"), 32, "features.16"))
register(ModelSpec("simple_cnn", "custom", lambda n: SmallCNN((16, 32, 64, 128), n), 8, "features.3"))
register(ModelSpec("tiny_cnn", "custom", lambda n: SmallCNN((8, 16, 32), n), 4, "features.2"))
register(ModelSpec("resnet8", "resnet", lambda n: CifarResNet(1, n), 4, "features.2"))
register(ModelSpec("resnet20", "resnet", lambda n: CifarResNet(3, n), 4, "features.2"))


@lru_cache(maxsize=1)
def torchvision_classifiers() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


def registered_names() -> list[str]:
    return sorted(_REGISTRY)


def model_spec(name: str) -> ModelSpec:
    """The registered spec, or a generic one for any other torchvision classifier."""
    check_model_name(name)
    if name in _REGISTRY:
        return _REGISTRY[name]
    return ModelSpec(name, name.rstrip("0123456789_").split("_")[0], _torchvision(name), 32, "")


def check_model_name(name: str) -> None:
    if name in _REGISTRY or name in torchvision_classifiers():
        return
    close = difflib.get_close_matches(name, sorted({*_REGISTRY, *torchvision_classifiers()}), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"registered models: {', '.join(registered_names())}"
    raise ResoMapError(f"unknown model '{name}' in models: {hint}")


def check_resolution(name: str, resolution: int) -> None:
    minimum = model_spec(name).min_resolution
    if resolution < minimum:
        raise ResoMapError(
            f"resolution {resolution} is too small for {name}: it needs at least {minimum}; "
            f"remove {resolution} from resolutions or {name} from models"
        )


def build_model(name: str, num_classes: int) -> nn.Module:
    """An untrained model with `num_classes` outputs."""
    return model_spec(name).build(num_classes)


def cam_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer Grad-CAM reads: the registered one, else the last convolution."""
    path = model_spec(name).cam_layer
    if path:
        return model.get_submodule(path)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]
