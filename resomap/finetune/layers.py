"""Which layers a fine-tune may change (finetune.layers). FixRes tunes the classifier and the
BatchNorm layers at the test resolution: the train-test gap in apparent object size is mostly a
shift in activation statistics, which those layers can absorb without touching the convolutions."""

from __future__ import annotations

from torch import nn

from resomap.models.heads import classifier_module

BATCH_NORMS = nn.modules.batchnorm._BatchNorm  # BatchNorm1d/2d/3d and SyncBatchNorm


def _held_in_eval(module: nn.Module, inputs) -> None:
    """A forward pre-hook: the layer normalises with its stored statistics and never updates them,
    even while the model trains."""
    module.training = False


def limit_trainable(model: nn.Module, layers: str) -> int:
    """Leave only `layers` trainable: `classifier_bn` (the classifier and every BatchNorm's scale and
    shift; running statistics follow the new resolution), `classifier` (the classifier only; the
    backbone's BatchNorm layers keep their statistics too), or `all`. A parameter without a gradient
    is skipped by the optimizer, weight decay included. Returns the number of trainable parameters."""
    head = classifier_module(model)
    in_head = {id(p) for p in head.parameters()}
    head_modules = {id(m) for m in head.modules()}
    trainable = {id(p) for p in model.parameters()} if layers == "all" else set(in_head)
    for module in model.modules():
        if not isinstance(module, BATCH_NORMS) or id(module) in head_modules:
            continue
        if layers == "classifier_bn":
            trainable |= {id(p) for p in module.parameters()}
        elif layers == "classifier":
            module.register_forward_pre_hook(_held_in_eval)
    for parameter in model.parameters():
        parameter.requires_grad_(id(parameter) in trainable)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
