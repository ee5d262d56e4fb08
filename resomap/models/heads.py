"""Classifier heads: the model's last Linear layer, sized for the data's classes.

Every registered architecture (torchvision's and ours) ends in one nn.Linear that maps pooled
features to class scores, so replacing that layer by name fits any of them. `linear` keeps the
architecture exactly as built; `mlp` is the ResNet-18 recipe's head (dropout, linear, ReLU,
BatchNorm, dropout, linear). Evaluate, explain and profile build the same head from the same
params, so a trained model.pt always loads into the model they build.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from resomap.core.config import TrainParams

HEADS = ("linear", "mlp")


@dataclass(frozen=True)
class Head:
    kind: str = "linear"
    hidden: int = 512  # mlp: width of the hidden layer
    dropout: float = 0.2  # mlp: before each linear layer


def head_from(train: TrainParams) -> Head:
    """The head train.head, train.head_hidden and train.head_dropout describe."""
    return Head(train.head, train.head_hidden, train.head_dropout)


def classifier_name(model: nn.Module) -> str:
    """Dotted path of the model's last nn.Linear (its classifier)."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    if not names:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier to replace")
    return names[-1]


MLP_LAYERS = (nn.Dropout, nn.Linear, nn.ReLU, nn.BatchNorm1d, nn.Dropout, nn.Linear)  # mlp_head's, in order


def mlp_head(in_features: int, num_classes: int, hidden: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, num_classes),
    )


def replace_classifier(model: nn.Module, num_classes: int, head: Head) -> nn.Module:
    """`model` with its classifier replaced by a freshly initialised `head` for `num_classes`
    (drawn from torch's global generator: the train stage seeds it per cell)."""
    name = classifier_name(model)
    old = model.get_submodule(name)
    new = nn.Linear(old.in_features, num_classes) if head.kind == "linear" else mlp_head(
        old.in_features, num_classes, head.hidden, head.dropout)
    model.set_submodule(name, new)
    return model


def classifier_module(model: nn.Module) -> nn.Module:
    """The whole classifier: the last Linear, or the MLP head that ends in it."""
    name = classifier_name(model)
    parent_name = name.rpartition(".")[0]
    parent = model.get_submodule(parent_name) if parent_name else model
    is_mlp = isinstance(parent, nn.Sequential) and tuple(type(layer) for layer in parent) == MLP_LAYERS
    return parent if is_mlp else model.get_submodule(name)


def freeze_backbone(model: nn.Module, frozen: bool) -> None:
    """Only the classifier learns while `frozen` (train.freeze_epochs): every other parameter stops
    taking gradients, so the optimizer leaves it, its momentum and its weight decay alone (a
    parameter without a gradient is skipped). BatchNorm statistics still follow the data."""
    head = {id(parameter) for parameter in classifier_module(model).parameters()}
    for parameter in model.parameters():
        if id(parameter) not in head:
            parameter.requires_grad_(not frozen)
