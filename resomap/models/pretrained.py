"""Starting weights: torchvision's ImageNet weights from the local torch hub cache, or any local
state dict. The study runs offline, so nothing is downloaded: a missing file is one line naming
the file and the command that fetches it on a machine with internet.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from resomap.core.errors import ResoMapError


def imagenet_weights_file(torchvision_name: str) -> Path:
    """Where torchvision keeps the DEFAULT ImageNet weights of `torchvision_name`: the torch hub
    cache ($TORCH_HOME/hub/checkpoints/, ~/.cache/torch by default) under the file name of their URL."""
    import torchvision

    weights = torchvision.models.get_model_weights(torchvision_name).DEFAULT
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url)


def download_hint(torchvision_name: str) -> str:
    return (f"on a machine with internet run `python -c \"import torchvision; torchvision.models."
            f"get_model_weights('{torchvision_name}').DEFAULT.get_state_dict()\"` and copy the file from its "
            "~/.cache/torch/hub/checkpoints/ there (or point TORCH_HOME at a folder holding hub/checkpoints/)")


def check_imagenet_weights(model: str, torchvision_name: str | None) -> Path:
    """The weights file of `model`, present; else one line saying why there is none or where it goes."""
    if torchvision_name is None:
        raise ResoMapError(
            f"train.pretrained: imagenet but {model} has no ImageNet weights (torchvision publishes none for it): "
            "set train.pretrained: none, or start from your own weights with train.init_from"
        )
    path = imagenet_weights_file(torchvision_name)
    if not path.is_file():
        raise ResoMapError(f"ImageNet weights of {model} are missing: {path} does not exist; {download_hint(torchvision_name)}")
    return path


def read_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A state dict from `path` (weights_only: no code in the file runs), or one line saying why not."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ResoMapError(f"{what} {path} does not exist: fix the path") from None
    except Exception as error:  # truncated, not a torch file, pickled code
        raise ResoMapError(f"{what} {path} is not a readable state dict ({type(error).__name__}): replace the file") from None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise ResoMapError(f"{what} {path} is not a state dict (a mapping of names to tensors): save model.state_dict()")
    return state


def load_matching(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load `state` into `model`, every key and shape matching, or one line naming the first layer
    that does not."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    if missing or unexpected:
        detail = f"lacks {missing[0]}" if missing else f"has {unexpected[0]}, which the model lacks"
        raise ResoMapError(
            f"{what} does not fit {type(model).__name__}: it {detail} ({len(missing)} missing, "
            f"{len(unexpected)} unexpected keys): use weights saved from the same model and train.head"
        )
    for key, value in state.items():
        if value.shape != own[key].shape:
            raise ResoMapError(
                f"{what} does not fit {type(model).__name__}: layer {key} has shape {tuple(value.shape)} "
                f"there but {tuple(own[key].shape)} in the model: use weights saved from the same model, "
                "class count and train.head"
            )
    model.load_state_dict(state)
