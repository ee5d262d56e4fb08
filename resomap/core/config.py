"""params.yaml loaded once into frozen, typed objects and validated before any work.

Every stage calls `load_params`; a typo or a bad value stops it with one line that
names the key and the fix, before any output is touched.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

from resomap.core.composition import effective_resolutions, finetune_cells
from resomap.core.errors import ResoMapError
from resomap.core.grid import FinetuneCell


class ParamsError(ResoMapError):
    """A params.yaml value is missing, unknown or out of range."""


@dataclass(frozen=True)
class ImageCounts:
    """Synthetic images per split. The key is `data.images`, never `size`: DVC's run-cache key
    leaves out every key named `size` or `nfiles` (they are output metadata to it), so a change of a
    param of that name would bring back the arrays of the old value (docs/params.md)."""

    train: int = 1500
    val: int = 300
    test: int = 300
    unlabeled: int = 0  # the pseudo-labelling pool (train.pseudo_label); its true labels are kept aside


@dataclass(frozen=True)
class DataParams:
    source: Literal["synthetic", "imagefolder", "torchvision"] = "synthetic"
    path: str | None = None  # image folder, or download root of a torchvision dataset
    name: str | None = None  # torchvision dataset class, e.g. CIFAR10
    images: ImageCounts = field(default_factory=ImageCounts)  # synthetic image counts
    seed: int = 0  # synthetic rendering and folder split
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    subset_fraction: float = 1.0  # share of each class of the train split kept (seeded by data.seed); 1 keeps all
    unlabeled_path: str | None = None  # imagefolder: a folder of unlabeled images, the pseudo-labelling pool
    on_bad_image: Literal["skip", "error"] = "skip"  # imagefolder: leave undecodable files out, or stop
    on_missing_class: Literal["error", "warn"] = "error"  # a class with no val or test image: stop, or warn in the report


@dataclass(frozen=True)
class EarlyStopping:
    patience: int | None = None  # epochs without improvement; null disables
    min_delta: float = 0.0
    monitor: Literal["val_accuracy", "val_loss"] = "val_accuracy"


@dataclass(frozen=True)
class ResizedCrop:
    """RandomResizedCrop's ranges: the box's share of the image area and its width / height."""

    scale: list[float] = field(default_factory=lambda: [0.08, 1.0])
    ratio: list[float] = field(default_factory=lambda: [0.75, 1.333])


@dataclass(frozen=True)
class Progressive:
    """Progressive resizing: train images resized from start_resolution up to the cell's
    resolution by end_epoch (a linear ramp in multiples of 8, FFCV's rule)."""

    start_resolution: int
    end_epoch: int


@dataclass(frozen=True)
class LRRange:
    """The LR range test of train.lr: auto: an exponential ramp from start to end over at most steps."""

    start: float = 1e-5
    end: float = 10.0
    steps: int = 100


@dataclass(frozen=True)
class PseudoLabel:
    """After the main fit, the best model labels the unlabeled pool; images at or above threshold
    join the train split for `epochs` more epochs at lr_factor times train.lr."""

    threshold: float = 0.9
    epochs: int = 3
    lr_factor: float = 0.1


AUGMENT_POLICIES = ("none", "randaugment", "trivialaugment", "autoaugment")


@dataclass(frozen=True)
class Augment:
    hflip: bool = True
    crop_padding: float = 0.125  # random-crop padding as a fraction of the resolution
    policy: Literal[AUGMENT_POLICIES] = "none"  # per-image ops (resomap/data/policies.py)
    magnitude: int = 9  # randaugment: m, of 30
    ops: int = 2  # randaugment: n, ops per image
    random_resized_crop: ResizedCrop | None = None  # null: off
    color_jitter: float | None = None  # brightness/contrast/saturation strength; null or 0: off
    random_erasing: float = 0.0  # probability per image; 0: off


@dataclass(frozen=True)
class TrainParams:
    epochs: int = 10
    batch_size: int = 64
    optimizer: Literal["sgd", "adam", "adamw"] = "sgd"
    lr: float | Literal["auto"] = 0.05  # auto: Smith's LR range test picks it (resomap/train/lr_range_test.py)
    lr_range: LRRange = field(default_factory=LRRange)  # lr: auto
    momentum: float = 0.9  # sgd only
    weight_decay: float = 5e-4
    scheduler: Literal["none", "cosine", "step", "multistep", "exponential", "plateau", "onecycle"] = "cosine"
    warmup_epochs: int = 0  # linear warm-up before cosine/step/multistep/exponential
    step_size: int = 2  # step
    milestones: list[int] = field(default_factory=lambda: [3, 5])  # multistep
    gamma: float = 0.1  # step, multistep, exponential, plateau factor
    plateau_patience: int = 2  # plateau: epochs without improvement before the lr drops
    label_smoothing: float = 0.0
    loss: Literal["cross_entropy", "focal"] = "cross_entropy"  # resomap/train/losses.py
    focal_gamma: float = 2.0  # focal: (1 - p)^gamma down-weights the images already classified well
    focal_alpha: float | None = None  # focal: a constant factor on the loss; null: 1
    class_weights: Literal["none", "balanced"] = "none"  # balanced: n_images / (n_classes * images of the class)
    mixup_alpha: float = 0.0  # MixUp's Beta(alpha, alpha); 0: off (resomap/data/mixing.py)
    cutmix_alpha: float = 0.0  # CutMix's Beta(alpha, alpha); 0: off
    mix_prob: float = 1.0  # share of batches mixed, when either alpha is above 0
    mix_switch_prob: float = 0.5  # both alphas above 0: the chance a mixed batch uses CutMix
    ema_decay: float | None = None  # exponential moving average of the weights (validated and saved); null: off
    shuffle: Literal["full", "block"] = "full"  # the epoch's read order; block: what a slow disk can serve (resomap/data/order.py)
    shuffle_block: int = 64  # block: consecutive images read together
    shuffle_window: int = 4096  # block: images shuffled among each other (a run of whole blocks)
    grad_accum_steps: int = 1
    micro_batch_size: Literal["auto"] | None = None  # auto: the largest that fits on the GPU, probed; null: batch_size / grad_accum_steps
    grad_clip_norm: float | None = None
    amp: Literal["auto", "bf16", "fp16", "off"] = "auto"
    channels_last: bool = True
    compile: bool = False
    pretrained: Literal["none", "imagenet"] = "none"  # imagenet: torchvision's weights from the local torch hub cache
    init_from: str | None = None  # a local state dict loaded over the built model (weights_only)
    head: Literal["linear", "mlp"] = "linear"  # the classifier: the model's own linear layer, or the recipe's MLP
    head_hidden: int = 512  # mlp head: hidden width
    head_dropout: float = 0.2  # mlp head: dropout before each linear layer
    freeze_epochs: int = 0  # the first N epochs train the classifier only
    progressive: Progressive | None = None  # progressive resizing; null: every epoch at the cell's resolution
    pseudo_label: PseudoLabel | None = None  # a pseudo-labelling phase after the main fit; null: off
    save_top_k: int = 1  # the k best epochs' weights kept in the model folder (model.pt is the best)
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    augment: Augment = field(default_factory=Augment)


TTA_VIEWS = ("none", "flip", "views")  # evaluate.tta: the view sets resomap/evaluate/tta.py implements
TTA_ZOOM = 1.14  # tta: views' resize-then-centre-crop view: resize to this times the side (256 / 224), crop back


def tta_zoomed_side(resolution: int) -> int:
    """The side the zoom view resizes to before cropping back to `resolution`."""
    return round(resolution * TTA_ZOOM)


@dataclass(frozen=True)
class EvaluateParams:
    batch_size: int = 256
    ece_bins: int = 15
    test_resolutions: list[int] | Literal["grid"] = "grid"  # the surface: every cell also tested at these
    bn_recalibration: bool = False  # surface: re-estimate BatchNorm statistics at each other test resolution
    bn_batches: int = 20  # ...on at most this many train batches (evaluate.batch_size images each)
    tta: Literal[TTA_VIEWS] = "none"  # evaluate: test-time augmentation, averaged softmax over views


@dataclass(frozen=True)
class FinetunePair:
    """One FixRes fine-tune: each cell trained at `from` tuned further at `to` (YAML keys `from`, `to`)."""

    source: int = field(metadata={"key": "from"})
    target: int = field(metadata={"key": "to"})


FINETUNE_LAYERS = ("classifier_bn", "classifier", "all")


@dataclass(frozen=True)
class FinetuneParams:
    pairs: list[FinetunePair] | Literal["next"] = "next"  # next: every grid resolution tuned at the next one up
    epochs: int = 2
    lr: float = 0.01
    layers: Literal[FINETUNE_LAYERS] = "classifier_bn"  # FixRes's rule; classifier: BatchNorm frozen too; all


@dataclass(frozen=True)
class ProfileParams:
    batch_size: int = 32  # inference batch for throughput
    warmup: int = 10
    repeats: int = 50  # batch-1 latency: at least this many timed calls...
    min_seconds: float = 1.0  # ...and at least this long
    batch_repeats: int = 5  # throughput and training-step timing


# the one list of explanation methods: params accept these, explain.methods implements each
EXPLAIN_METHODS = ("gradcam", "gradcam_pp", "integrated_gradients", "saliency", "smoothgrad")
ExplainMethod = Literal[EXPLAIN_METHODS]


@dataclass(frozen=True)
class ExplainParams:
    num_images: int = 8
    methods: list[ExplainMethod] = field(default_factory=lambda: ["gradcam", "integrated_gradients", "saliency"])
    seed: int = 0  # which test images are explained
    min_cam_size: int = 7  # Grad-CAM reads the deepest layer whose map is at least this wide
    ig_steps: int = 32  # Integrated Gradients: points on the path from the baseline
    ig_batch_size: int = 64  # ...forwarded at once (captum's internal_batch_size)
    deletion_steps: int = 20  # deletion/insertion curves: pixel-fraction steps from 0 to 1
    batch_size: int = 16  # images explained at once


@dataclass(frozen=True)
class AggregateParams:
    tolerance: float = 0.01  # recommended resolution: the smallest within this of the model's best accuracy
    latency_budget_ms: float | None = None  # best cell under budget: batch-1 latency at most this...
    memory_budget_mb: float | None = None  # ...and peak memory at most this; null = no budget
    bootstrap_samples: int = 2000  # resamples of the test images for confidence intervals
    confidence: float = 0.95
    alpha: float = 0.05  # McNemar: a gain between neighbouring resolutions is significant below this p
    seed: int = 0  # bootstrap


@dataclass(frozen=True)
class Grid:
    """Written by composition (resomap/core/composition.py), read by dvc.yaml's matrix; the check
    stage's stamp check keeps it equal to `Params.grid_resolutions`."""

    resolutions: list[int]
    finetune: dict[str, FinetuneCell] = field(default_factory=dict)  # by stage name suffix, e.g. tiny_cnn-16to32-0


@dataclass(frozen=True)
class Params:
    models: list[str]
    resolutions: list[int]
    seeds: list[int]
    resolution: int | None = None  # set: the whole grid at this one size instead of `resolutions`
    data: DataParams = field(default_factory=DataParams)
    train: TrainParams = field(default_factory=TrainParams)
    evaluate: EvaluateParams = field(default_factory=EvaluateParams)
    finetune: FinetuneParams = field(default_factory=FinetuneParams)
    profile: ProfileParams = field(default_factory=ProfileParams)
    explain: ExplainParams = field(default_factory=ExplainParams)
    aggregate: AggregateParams = field(default_factory=AggregateParams)
    grid: Grid | None = None
    composed: str = ""  # composition's stamp, checked by the check stage

    @property
    def grid_resolutions(self) -> list[int]:
        """The cells' resolutions: the ones dvc.yaml's matrix runs."""
        return effective_resolutions(self.resolution, self.resolutions)

    @property
    def test_resolutions(self) -> list[int]:
        """The surface's test resolutions: the grid's, or evaluate.test_resolutions' list."""
        chosen = self.evaluate.test_resolutions
        return self.grid_resolutions if chosen == "grid" else list(chosen)

    @property
    def finetune_cells(self) -> list[FinetuneCell]:
        """The fine-tune cells, as composition lists them in grid.finetune (ValueError: a bad pair)."""
        pairs = self.finetune.pairs
        listed = pairs if pairs == "next" else [(pair.source, pair.target) for pair in pairs]
        return finetune_cells(self.models, self.seeds, self.grid_resolutions, listed)


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read, type-check and validate params.yaml."""
    path = Path(path)
    if not path.is_file():
        raise ParamsError(f"{path} not found: run from the repository root, where params.yaml lives")
    try:
        with path.open() as f:
            raw = yaml.safe_load(f)
    except yaml.YAMLError as error:
        raise ParamsError(f"{path} is not valid YAML ({_yaml_problem(error)}): fix the syntax there") from None
    params = parse_params(raw if raw is not None else {})
    validate(params)
    return params


def _yaml_problem(error: yaml.YAMLError) -> str:
    """`line L, column C: what`, from PyYAML's several-line message."""
    mark = getattr(error, "problem_mark", None)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def parse_params(raw: object) -> Params:
    """Build typed params from the YAML mapping; unknown keys and wrong types are errors."""
    return _build(Params, raw, "")


def _build(cls: type, raw: object, where: str):
    if not isinstance(raw, dict):
        raise ParamsError(f"{where or 'params.yaml'} must be a mapping of keys, got {raw!r}")
    fields = {f.metadata.get("key", f.name): f for f in dataclasses.fields(cls)}  # `key`: a YAML key Python cannot name
    for key in raw:
        if key not in fields:
            close = difflib.get_close_matches(str(key), fields, n=1)
            hint = f"did you mean '{_join(where, close[0])}'?" if close else f"valid keys: {', '.join(fields)}"
            raise ParamsError(f"unknown key '{_join(where, key)}' in params.yaml: {hint}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name in raw:
            values[f.name] = _coerce(hints[f.name], raw[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ParamsError(f"missing key '{key}' in params.yaml: add it (see README, 'Parameters')")
    return cls(**values)


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _coerce(hint, value, key: str):
    """Check `value` against the annotation `hint`; return it in the annotated type."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        if len(arms) == 1:
            return _coerce(arms[0], value, key)
        for arm in arms:  # the arm of the value's kind, whose checks give the precise error
            if _of_kind(arm, value):
                return _coerce(arm, value, key)
        raise ParamsError(f"{key} must be {' or '.join(_describe(arm) for arm in arms)}, got {value!r}")
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ParamsError(f"{key} must be a mapping, got {value!r}")
        return {name: _coerce(args[1], item, f"{key}.{name}") for name, item in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ParamsError(f"{key} must be a list, e.g. {key}=[...], got {value!r}")
        return [_coerce(args[0], item, f"{key}[{i}]") for i, item in enumerate(value)]
    if hint is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{key} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{key} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{key} must be a number, got {value!r}")
        if not math.isfinite(value):
            raise ParamsError(f"{key} must be a finite number, got {value}: no param takes nan or infinity")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ParamsError(f"{key} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported annotation {hint} for {key}")


def _of_kind(hint, value) -> bool:
    """Whether `value` is of the kind `hint` takes (a number for float, a listed word for Literal)."""
    if typing.get_origin(hint) is Literal:
        return value in typing.get_args(hint)
    if hint in (int, float):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, dict if dataclasses.is_dataclass(hint) else typing.get_origin(hint) or hint)


def _describe(hint) -> str:
    """How a type reads in an error: `a number`, `auto`."""
    if typing.get_origin(hint) is Literal:
        return " or ".join(map(str, typing.get_args(hint)))
    if typing.get_origin(hint) is list:
        return "a list"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))


def validate(params: Params) -> None:
    """Range and consistency checks that types alone cannot express."""
    _validate_grid(params)
    _validate_data(params.data)
    _validate_train(params.train)
    _validate_pseudo_label_pool(params.train, params.data)
    _validate_progressive_start(params.train.progressive, params.grid_resolutions)
    _validate_evaluate(params)
    _validate_finetune(params)
    _positive("profile.batch_size", params.profile.batch_size)
    _positive("profile.repeats", params.profile.repeats)
    _positive("profile.batch_repeats", params.profile.batch_repeats)
    _non_negative("profile.warmup", params.profile.warmup)
    _non_negative("profile.min_seconds", params.profile.min_seconds)
    for key in ("num_images", "min_cam_size", "ig_steps", "ig_batch_size", "deletion_steps", "batch_size"):
        _positive(f"explain.{key}", getattr(params.explain, key))
    _non_negative("explain.seed", params.explain.seed)
    _non_empty_unique("explain.methods", params.explain.methods)
    _validate_aggregate(params.aggregate)


# What a model name may hold: every registered and torchvision name fits, and none of it means
# anything to a shell (dvc.yaml puts the names into commands).
MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def _validate_grid(params: Params) -> None:
    for key in ("models", "resolutions", "seeds"):
        _non_empty_unique(key, getattr(params, key))
    for i, name in enumerate(params.models):
        if not MODEL_NAME.fullmatch(name):
            raise ParamsError(
                f"models[{i}] {name!r} is not a model name: names are letters, digits and underscores, "
                "e.g. resnet18 (docs/models.md lists them)"
            )
    if any(seed < 0 for seed in params.seeds):
        raise ParamsError(f"seeds must be non-negative integers, got {params.seeds}")
    for resolution in params.resolutions:
        if resolution <= 0:
            raise ParamsError(f"resolutions contains {resolution}: resolutions must be positive pixel sizes")
    if params.resolution is not None and params.resolution <= 0:
        raise ParamsError(f"resolution must be a positive pixel size, or null for every size in resolutions; got {params.resolution}")


def _validate_evaluate(params: Params) -> None:
    evaluate = params.evaluate
    for key in ("batch_size", "ece_bins", "bn_batches"):
        _positive(f"evaluate.{key}", getattr(evaluate, key))
    if evaluate.test_resolutions != "grid":
        _non_empty_unique("evaluate.test_resolutions", evaluate.test_resolutions)
        for resolution in evaluate.test_resolutions:
            if resolution <= 0:
                raise ParamsError(f"evaluate.test_resolutions contains {resolution}: test resolutions must be positive pixel sizes")
    too_small = [r for r in params.grid_resolutions if tta_zoomed_side(r) - r < 2]
    if evaluate.tta == "views" and too_small:
        raise ParamsError(f"evaluate.tta: views cannot resize-then-centre-crop at {too_small[0]} px (the crop would drop no pixel "
                          f"on a side): use tta: flip, or drop {too_small[0]} from resolutions")


def _validate_finetune(params: Params) -> None:
    _positive("finetune.epochs", params.finetune.epochs)
    _positive("finetune.lr", params.finetune.lr)
    try:
        params.finetune_cells  # noqa: B018 - listing the cells checks every pair
    except ValueError as error:
        raise ParamsError(str(error)) from None


def check_test_resolutions_prepared(params: Params) -> None:
    """The surface reads each test resolution's prepared arrays, and prepare runs at the grid's
    resolutions only. Called by the check and surface stages after the models' minimum sizes."""
    unprepared = [r for r in params.test_resolutions if r not in params.grid_resolutions]
    if unprepared:
        raise ParamsError(f"evaluate.test_resolutions lists {unprepared[0]}, which no prepare stage makes (prepare runs at "
                          f"{params.grid_resolutions}): list only grid resolutions, or grid for all of them")


def _validate_data(data: DataParams) -> None:
    if data.source in ("imagefolder", "torchvision") and not (data.path or "").strip():
        state = "missing" if data.path is None else "empty"
        raise ParamsError(
            f"data.path is required for data.source: {data.source} but is {state}: set it to the dataset folder"
        )
    if data.source == "torchvision" and not data.name:
        raise ParamsError("data.name is required for data.source: torchvision: set it to e.g. CIFAR10")
    _non_negative("data.seed", data.seed)
    for split in ("train", "val", "test"):
        _positive(f"data.images.{split}", getattr(data.images, split))
    _non_negative("data.images.unlabeled", data.images.unlabeled)
    if data.unlabeled_path is not None:
        if data.source != "imagefolder":
            raise ParamsError(f"data.unlabeled_path is for data.source: imagefolder (source is {data.source}): "
                              "set it to null; the built-in data's pool is data.images.unlabeled")
        if not data.unlabeled_path.strip():
            raise ParamsError("data.unlabeled_path is empty: set it to a folder of unlabeled images, or null")
    for key in ("val_fraction", "test_fraction"):
        value = getattr(data, key)
        if not 0.0 < value < 0.5:
            raise ParamsError(f"data.{key} must be between 0 and 0.5, got {value}")
    if not 0.0 < data.subset_fraction <= 1.0:
        raise ParamsError(f"data.subset_fraction must be above 0 and at most 1 (1 keeps every train image), got {data.subset_fraction}")


def _validate_aggregate(aggregate: AggregateParams) -> None:
    _non_negative("aggregate.tolerance", aggregate.tolerance)
    _positive("aggregate.bootstrap_samples", aggregate.bootstrap_samples)
    _non_negative("aggregate.seed", aggregate.seed)
    for key in ("latency_budget_ms", "memory_budget_mb"):
        if getattr(aggregate, key) is not None:
            _positive(f"aggregate.{key}", getattr(aggregate, key))
    for key in ("confidence", "alpha"):
        if not 0.0 < getattr(aggregate, key) < 1.0:
            raise ParamsError(f"aggregate.{key} must be between 0 and 1, got {getattr(aggregate, key)}")


def _validate_train(train: TrainParams) -> None:
    for key in ("epochs", "batch_size", "grad_accum_steps", "step_size", "plateau_patience"):
        _positive(f"train.{key}", getattr(train, key))
    if train.batch_size % train.grad_accum_steps:
        raise ParamsError(
            f"train.batch_size ({train.batch_size}) must be a multiple of train.grad_accum_steps "
            f"({train.grad_accum_steps}): the micro-batch is batch_size / grad_accum_steps"
        )
    if train.lr != "auto" and train.lr <= 0:
        raise ParamsError(f"train.lr must be positive, or auto for an LR range test; got {train.lr}")
    _positive("train.gamma", train.gamma)
    for key in ("weight_decay", "momentum", "label_smoothing", "warmup_epochs"):
        _non_negative(f"train.{key}", getattr(train, key))
    if train.label_smoothing >= 1:
        raise ParamsError(f"train.label_smoothing must be below 1, got {train.label_smoothing}")
    if train.grad_clip_norm is not None and train.grad_clip_norm <= 0:
        raise ParamsError("train.grad_clip_norm must be positive, or null to disable clipping")
    _positive("train.shuffle_block", train.shuffle_block)
    if train.shuffle_window < train.shuffle_block:
        raise ParamsError(f"train.shuffle_window ({train.shuffle_window}) must be at least train.shuffle_block "
                          f"({train.shuffle_block}): a window shuffles whole blocks among each other")
    if train.warmup_epochs and train.scheduler in ("plateau", "onecycle"):
        raise ParamsError(f"train.warmup_epochs is not used with scheduler {train.scheduler}: set it to 0")
    if train.warmup_epochs >= train.epochs:
        raise ParamsError(f"train.warmup_epochs ({train.warmup_epochs}) must be below train.epochs ({train.epochs})")
    if train.early_stopping.patience is not None:
        _positive("train.early_stopping.patience", train.early_stopping.patience)
    _positive("train.head_hidden", train.head_hidden)
    if not 0 <= train.head_dropout < 1:
        raise ParamsError(f"train.head_dropout must be in [0, 1), got {train.head_dropout}")
    _non_negative("train.freeze_epochs", train.freeze_epochs)
    if train.freeze_epochs >= train.epochs:
        raise ParamsError(f"train.freeze_epochs ({train.freeze_epochs}) must be below train.epochs ({train.epochs}): the backbone never trains")
    _validate_recipe(train)
    _validate_schedule_recipes(train)
    if train.init_from is not None and not train.init_from.strip():
        raise ParamsError("train.init_from is empty: set it to a state dict file, or null to start from the built model")
    _validate_augment(train.augment)


def _validate_recipe(train: TrainParams) -> None:
    """The loss, mixing and weight-averaging keys (docs/params.md)."""
    _non_negative("train.focal_gamma", train.focal_gamma)
    if train.focal_alpha is not None:
        if train.loss != "focal":
            raise ParamsError(f"train.focal_alpha is used only with train.loss: focal (loss is {train.loss}): set it to null")
        if not 0 < train.focal_alpha <= 1:
            raise ParamsError(f"train.focal_alpha must be in (0, 1], or null for 1; got {train.focal_alpha}")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if getattr(train, key) < 0:
            raise ParamsError(f"train.{key} must not be negative (0 turns it off, 0.2 to 1 is usual), got {getattr(train, key)}")
    for key in ("mix_prob", "mix_switch_prob"):
        if not 0 <= getattr(train, key) <= 1:
            raise ParamsError(f"train.{key} must be a probability in [0, 1], got {getattr(train, key)}")
    if train.ema_decay is not None and not 0 < train.ema_decay < 1:
        raise ParamsError(f"train.ema_decay must be in (0, 1), e.g. 0.999, or null to turn weight averaging off; got {train.ema_decay}")


def _validate_schedule_recipes(train: TrainParams) -> None:
    """Progressive resizing, the LR range test, pseudo-labelling, checkpoints and the micro-batch."""
    if train.progressive is not None:
        _positive("train.progressive.start_resolution", train.progressive.start_resolution)
        if not 1 <= train.progressive.end_epoch <= train.epochs:
            raise ParamsError(f"train.progressive.end_epoch must be in [1, train.epochs ({train.epochs})]: "
                              f"the epoch the cell's resolution is reached; got {train.progressive.end_epoch}")
    lr_range = train.lr_range
    if not 0 < lr_range.start < lr_range.end:
        raise ParamsError(f"train.lr_range needs 0 < start < end, e.g. start 1e-5, end 10; got start {lr_range.start}, end {lr_range.end}")
    if lr_range.steps < 10:
        raise ParamsError(f"train.lr_range.steps must be at least 10 (the loss is smoothed over steps), got {lr_range.steps}")
    if train.pseudo_label is not None:
        pseudo = train.pseudo_label
        if not 0 < pseudo.threshold <= 1:
            raise ParamsError(f"train.pseudo_label.threshold must be a confidence in (0, 1], e.g. 0.9; got {pseudo.threshold}")
        _positive("train.pseudo_label.epochs", pseudo.epochs)
        if not 0 < pseudo.lr_factor <= 1:
            raise ParamsError(f"train.pseudo_label.lr_factor must be in (0, 1] (of train.lr), got {pseudo.lr_factor}")
    _positive("train.save_top_k", train.save_top_k)
    if train.micro_batch_size == "auto" and train.grad_accum_steps != 1:
        raise ParamsError(f"train.micro_batch_size: auto chooses the accumulation itself: set train.grad_accum_steps to 1 "
                          f"(it is {train.grad_accum_steps}), or micro_batch_size to null")


def _validate_progressive_start(progressive: Progressive | None, resolutions: list[int]) -> None:
    """Progressive resizing grows the images: it cannot start above a cell's resolution."""
    if progressive is not None and progressive.start_resolution > min(resolutions):
        raise ParamsError(f"train.progressive.start_resolution ({progressive.start_resolution}) is above the cell resolution "
                          f"{min(resolutions)}: set it to at most {min(resolutions)}, or drop {min(resolutions)} from the grid")


def _validate_pseudo_label_pool(train: TrainParams, data: DataParams) -> None:
    """train.pseudo_label needs a pool to label, and a pool is only prepared for a phase that uses it."""
    pool = {"synthetic": data.images.unlabeled > 0, "imagefolder": data.unlabeled_path is not None}.get(data.source, False)
    if train.pseudo_label is not None and not pool:
        fix = {"synthetic": "set data.images.unlabeled (e.g. 1500)", "imagefolder": "set data.unlabeled_path to a folder of unlabeled images"}
        raise ParamsError(f"train.pseudo_label needs an unlabeled pool: "
                          f"{fix.get(data.source, 'torchvision sources have none: set train.pseudo_label to null')}")


def _validate_augment(augment: Augment) -> None:
    if not 0 <= augment.crop_padding < 0.5:
        raise ParamsError(f"train.augment.crop_padding must be in [0, 0.5), got {augment.crop_padding}")
    if not 0 <= augment.magnitude <= 30:
        raise ParamsError(f"train.augment.magnitude must be in [0, 30] (RandAugment's m), got {augment.magnitude}")
    if not 1 <= augment.ops <= 14:
        raise ParamsError(f"train.augment.ops must be in [1, 14] (RandAugment's n, ops per image), got {augment.ops}")
    crop = augment.random_resized_crop
    if crop is not None:
        _range("train.augment.random_resized_crop.scale", crop.scale, "e.g. [0.08, 1.0]: shares of the image area")
        if not (crop.scale[0] > 0 and crop.scale[1] <= 1):
            raise ParamsError(f"train.augment.random_resized_crop.scale must lie in (0, 1] (shares of the image area), got {crop.scale}")
        _range("train.augment.random_resized_crop.ratio", crop.ratio, "e.g. [0.75, 1.333]: width / height")
        if crop.ratio[0] <= 0:
            raise ParamsError(f"train.augment.random_resized_crop.ratio must be above 0 (width / height), got {crop.ratio}")
    if augment.color_jitter is not None and not 0 <= augment.color_jitter <= 1:
        raise ParamsError(f"train.augment.color_jitter must be in [0, 1] (0 or null: off), got {augment.color_jitter}")
    if not 0 <= augment.random_erasing <= 1:
        raise ParamsError(f"train.augment.random_erasing must be a probability in [0, 1] (0: off), got {augment.random_erasing}")


def _range(key: str, values: list[float], example: str) -> None:
    if len(values) != 2 or values[0] > values[1]:
        raise ParamsError(f"{key} must be [min, max] with min <= max, {example}; got {values}")


def _positive(key: str, value: int) -> None:
    if value <= 0:
        raise ParamsError(f"{key} must be positive, got {value}")


def _non_negative(key: str, value: float) -> None:
    if value < 0:
        raise ParamsError(f"{key} must not be negative, got {value}")


def _non_empty_unique(key: str, values: list) -> None:
    if not values:
        raise ParamsError(f"{key} is empty: list at least one value, e.g. -S '{key}=[...]'")
    duplicates = sorted({str(v) for v in values if values.count(v) > 1})
    if duplicates:
        raise ParamsError(f"{key} lists {', '.join(duplicates)} more than once: remove the duplicates")
