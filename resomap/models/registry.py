"""Model registry: every architecture by name, with what the study needs to know about it.

Each entry knows its family, the smallest input it can take and the layer Grad-CAM
reads. Any other torchvision classification model works by its torchvision name. torch is
imported only to build a model (or to list torchvision's), so the check stage can validate the
registered names in the grid in a fraction of a second.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from resomap.core.errors import ResoMapError

if TYPE_CHECKING:
    from torch import nn

    from resomap.models.heads import Head


@dataclass(frozen=True)
class ModelSpec:
    name: str
    family: str
    build: Callable[[int], nn.Module]  # num_classes -> untrained model
    min_resolution: int  # below this the network's feature map collapses (or the forward fails)
    cam_layer: str  # dotted path of the layer Grad-CAM reads by default
    imagenet: str | None = None  # the torchvision model whose ImageNet weights fit it; None: it has none


def _torchvision(name: str, **kwargs) -> Callable[[int], nn.Module]:
    def build(num_classes: int) -> nn.Module:
        import torchvision  # imported on use: it adds seconds to every stage that only needs custom models

        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)

    return build


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> None:
    _REGISTRY[spec.name] = spec


for _name, _cam in (("vgg11", "features.20"), ("vgg13", "features.24"), ("vgg16", "features.30")):
    register(ModelSpec(_name, "vgg", _torchvision(_name), 32, _cam, imagenet=_name))
for _name in ("resnet18", "resnet34", "resnet50", "resnet101"):
    register(ModelSpec(_name, "resnet", _torchvision(_name), 32, "layer4", imagenet=_name))
register(ModelSpec("mobilenet_v2", "mobilenet", _torchvision("mobilenet_v2"), 32, "features.18", imagenet="mobilenet_v2"))
# torchvision publishes ImageNet weights for width 1.0 only
register(ModelSpec("mobilenet_v2_075", "mobilenet", _torchvision("mobilenet_v2", width_mult=0.75), 32, "features.18"))
for _name, _cam in (("mobilenet_v3_small", "features.12"), ("mobilenet_v3_large", "features.16")):
    register(ModelSpec(_name, "mobilenet", _torchvision(_name), 32, _cam, imagenet=_name))
def _custom(kind: str, arg) -> Callable[[int], nn.Module]:
    """A builder of resomap.models.custom's `kind`, imported on use (it imports torch)."""

    def build(num_classes: int) -> nn.Module:
        from resomap.models import custom

        return getattr(custom, kind)(arg, num_classes)

    return build


register(ModelSpec("simple_cnn", "custom", _custom("SmallCNN", (16, 32, 64, 128)), 8, "features.3"))
register(ModelSpec("tiny_cnn", "custom", _custom("SmallCNN", (8, 16, 32)), 4, "features.2"))
register(ModelSpec("resnet8", "resnet", _custom("CifarResNet", 1), 4, "features.2"))
register(ModelSpec("resnet20", "resnet", _custom("CifarResNet", 3), 4, "features.2"))


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
    return ModelSpec(name, name.rstrip("0123456789_").split("_")[0], _torchvision(name), 32, "", imagenet=name)


def check_model_name(name: str) -> None:
    if name in _REGISTRY or name in torchvision_classifiers():
        return
    close = difflib.get_close_matches(name, sorted({*_REGISTRY, *torchvision_classifiers()}), n=3)
    hint = f"did you mean {', '.join(close)}?" if close else f"registered models: {', '.join(registered_names())}"
    raise ResoMapError(f"unknown model '{name}' in models: {hint}")


def check_model(name: str, resolution: int, key: str = "resolutions") -> None:
    """A cell's model name and resolution, checked by every stage that builds the model, before any
    work: config does not import this registry, so registering a model never reruns prepare. `key`
    is the param the resolution came from (evaluate.test_resolutions for the surface's)."""
    minimum = model_spec(name).min_resolution  # an unknown name fails here, with the close names
    if resolution < minimum:
        raise ResoMapError(
            f"resolution {resolution} is too small for {name}: it needs at least {minimum}; "
            f"remove {resolution} from {key} or {name} from models"
        )


def check_starting_weights(name: str, pretrained: str, init_from: str | None) -> None:
    """The files a cell of `name` starts from exist (the check stage runs this before any work);
    torch is imported only when ImageNet weights are asked for."""
    if pretrained == "imagenet":
        from resomap.models.pretrained import check_imagenet_weights

        check_imagenet_weights(name, model_spec(name).imagenet)
    if init_from is not None and not os.path.isfile(init_from):
        raise ResoMapError(f"train.init_from {init_from} does not exist: fix the path (relative to the repo root), or set it to null")


def build_model(name: str, num_classes: int, head: Head | None = None) -> nn.Module:
    """An untrained model with `num_classes` outputs, its classifier the `head` asked for (default:
    the architecture's own linear layer, built as it is)."""
    model = model_spec(name).build(num_classes)
    if head is None or head.kind == "linear":
        return model
    from resomap.models.heads import replace_classifier

    return replace_classifier(model, num_classes, head)


def initial_model(name: str, num_classes: int, head: Head, *, pretrained: str = "none", init_from: str | None = None) -> nn.Module:
    """The model a cell starts training from: built untrained, or with torchvision's ImageNet
    weights (`pretrained: imagenet`) and a fresh `head` for `num_classes`; then `init_from`'s local
    state dict, when given, over all of it. A missing, unreadable or ill-fitting file is one line."""
    from pathlib import Path

    from resomap.models.heads import replace_classifier
    from resomap.models.pretrained import check_imagenet_weights, load_matching, read_state_dict

    if pretrained == "imagenet":
        spec = model_spec(name)
        path = check_imagenet_weights(name, spec.imagenet)
        import torchvision

        model = torchvision.models.get_model(spec.imagenet, weights=None)
        load_matching(model, read_state_dict(path, "ImageNet weights file"), f"ImageNet weights file {path}")
        model = replace_classifier(model, num_classes, head)
    else:
        model = build_model(name, num_classes, head)
    if init_from is not None:
        load_matching(model, read_state_dict(Path(init_from), "train.init_from"), f"train.init_from {init_from}")
    return model


def cam_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer Grad-CAM reads: the registered one, else the last convolution."""
    from torch import nn

    path = model_spec(name).cam_layer
    if path:
        return model.get_submodule(path)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]
