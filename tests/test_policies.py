"""Augmentation policies with per-image draws (resomap/data/policies.py): real kornia kernels, no mocks."""

import copy
import dataclasses

import pytest
import torch
import torchvision.transforms.v2.functional as TF

from helpers.env import shipped
from helpers.fitting import CPU, run_fit, same_weights
from resomap.core.config import Augment, ParamsError, ResizedCrop, parse_params, validate
from resomap.data.augment import MEAN, crop_flip, draw_crop_flip, normalize
from resomap.data.policies import OPS, Columns, apply_policy, draw_policy
from resomap.data.prepared import load_prepared
from resomap.models.registry import build_model
from resomap.train import step as training
from resomap.train.checkpoint import Checkpointer
from resomap.train.fit import fit

POLICIES = ["randaugment", "trivialaugment", "autoaugment"]


def copies(count: int = 16, size: int = 32) -> torch.Tensor:
    """`count` copies of one image: smooth ramps plus noise, so every op changes it."""
    generator = torch.Generator().manual_seed(5)
    ramp = torch.linspace(0, 200, size)
    image = (ramp[None, :, None] + ramp[None, None, :] / 4).expand(3, size, size).clone()
    image += torch.randint(0, 50, (3, size, size), generator=generator)
    return image.clamp(0, 255).to(torch.uint8).expand(count, 3, size, size).contiguous()


def drawn(augment: Augment, images: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    draws = draw_policy(len(images), augment, *images.shape[-2:], torch.Generator().manual_seed(seed))
    return draws, apply_policy(images, augment, draws)


@pytest.mark.parametrize("policy", POLICIES)
def test_each_image_of_a_batch_draws_its_own_ops(policy):
    """kornia's modules give one op per batch (4 distinct outputs from 16 copies for RandAugment);
    here 16 copies of one image come out mostly different, and images get different ops."""
    augment = Augment(policy=policy)
    draws, out = drawn(augment, copies())
    assert len({image.numpy().tobytes() for image in out}) >= 10
    ops = draws[:, Columns(1).ops].long().flatten()  # each image's first op
    assert len(set(ops.tolist())) >= 4, f"16 images drew only {sorted(set(ops.tolist()))} of {OPS}"


@pytest.mark.parametrize("policy", POLICIES)
def test_same_seed_same_bits_and_micro_batches_change_nothing(policy):
    """A batch's draws replayed give identical bits, and applying them to two halves (as the OOM
    back-off's micro-batches or DDP's shards do) gives what the whole batch gives."""
    augment = Augment(policy=policy, random_resized_crop=ResizedCrop(), color_jitter=0.4, random_erasing=0.5)
    images = torch.randint(0, 256, (24, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    draws, out = drawn(augment, images)
    again_draws, again = drawn(augment, images)
    assert torch.equal(draws, again_draws) and torch.equal(out, again)
    halves = torch.cat([apply_policy(images[:10], augment, draws[:10]), apply_policy(images[10:], augment, draws[10:])])
    assert torch.equal(out, halves)
    assert not torch.equal(out, drawn(augment, images, seed=1)[1]), "another seed must draw otherwise"


def test_random_resized_crop_matches_torchvision_per_image_and_a_full_box_is_the_identity():
    images = torch.randint(0, 256, (8, 3, 24, 24), dtype=torch.uint8)
    draws, cropped = drawn(Augment(random_resized_crop=ResizedCrop()), images)
    assert cropped.shape == (8, 3, 24, 24)
    for image, out, (top, left, h, w) in zip(images, cropped, draws[:, Columns(0).crop].long().tolist()):
        expected = TF.resized_crop(image.float() / 255, top, left, h, w, [24, 24], antialias=False)
        torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)
    assert len({tuple(box) for box in draws[:, Columns(0).crop].tolist()}) == 8, "a box per image"
    draws, whole = drawn(Augment(random_resized_crop=ResizedCrop(scale=[1.0, 1.0], ratio=[1.0, 1.0])), images)
    assert draws[:, Columns(0).crop].tolist() == [[0, 0, 24, 24]] * 8
    assert torch.equal(whole, images.float() / 255)


def test_random_erasing_off_changes_nothing_and_on_fills_a_box_with_the_mean():
    images = copies(8)
    assert apply_policy(images, Augment(random_erasing=0.0), draw_policy(8, Augment(random_erasing=0.0), 32, 32, torch.Generator())) is images
    draws, erased = drawn(Augment(random_erasing=1.0), images)
    flag, top, left, h, w = draws[0, Columns(0).erase].long().tolist()
    assert flag == 1 and h * w > 0
    box = erased[0, :, top : top + h, left : left + w]
    torch.testing.assert_close(box, torch.tensor(MEAN).view(3, 1, 1).expand_as(box))
    assert torch.equal(erased[0, :, :top], images[0, :, :top].float() / 255), "outside the box stays"
    assert torch.allclose(normalize(erased)[0, :, top : top + h, left : left + w], torch.zeros(3, h, w), atol=1e-6)


def test_policy_none_is_todays_path_bit_for_bit():
    """Defaults draw nothing more from the generator and leave crop + flip + normalise as it was."""
    images = torch.randint(0, 256, (16, 3, 20, 20), dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    generator, reference = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    offsets, flips = draw_crop_flip(16, 2, True, generator)
    draws = draw_policy(16, Augment(), 20, 20, generator)
    expected_offsets, expected_flips = draw_crop_flip(16, 2, True, reference)
    assert draws.shape == (16, 0) and torch.equal(generator.get_state(), reference.get_state())
    today = normalize(crop_flip(images, 2, expected_offsets, expected_flips), torch.channels_last)
    now = normalize(apply_policy(crop_flip(images, 2, offsets, flips), Augment(), draws), torch.channels_last)
    assert torch.equal(today, now)


@pytest.mark.parametrize("policy", POLICIES)
def test_output_feeds_normalize_in_channels_last(policy):
    images = copies(4).contiguous(memory_format=torch.channels_last)
    _, out = drawn(Augment(policy=policy), images)
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert normalize(out, torch.channels_last).is_contiguous(memory_format=torch.channels_last)


def augment_raw(**changes) -> dict:
    raw = shipped()
    raw["train"]["augment"].update(changes)
    return raw


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"policy": "randaugmnet"}, r"train\.augment\.policy must be one of none, randaugment, trivialaugment, autoaugment"),
        ({"magnitude": 31}, r"train\.augment\.magnitude must be in \[0, 30\]"),
        ({"ops": 0}, r"train\.augment\.ops must be in \[1, 14\]"),
        ({"random_resized_crop": {"scale": [0.0, 1.0]}}, r"random_resized_crop\.scale must lie in \(0, 1\]"),
        ({"random_resized_crop": {"scale": [0.5, 1.5]}}, r"random_resized_crop\.scale must lie in \(0, 1\]"),
        ({"random_resized_crop": {"scale": [0.9, 0.2]}}, r"random_resized_crop\.scale must be \[min, max\] with min <= max"),
        ({"random_resized_crop": {"ratio": [1.333, 0.75]}}, r"random_resized_crop\.ratio must be \[min, max\] with min <= max"),
        ({"random_resized_crop": {"ratio": [0.0, 1.0]}}, r"random_resized_crop\.ratio must be above 0"),
        ({"random_resized_crop": {"size": 32}}, r"unknown key 'train\.augment\.random_resized_crop\.size'"),
        ({"color_jitter": 1.5}, r"train\.augment\.color_jitter must be in \[0, 1\]"),
        ({"random_erasing": 1.2}, r"train\.augment\.random_erasing must be a probability in \[0, 1\]"),
        ({"random_erasing": -0.1}, r"train\.augment\.random_erasing must be a probability in \[0, 1\]"),
    ],
)
def test_bad_augment_values_name_the_key_and_the_fix(changes, message):
    with pytest.raises(ParamsError, match=message):
        validate(parse_params(augment_raw(**changes)))


def test_the_shipped_augmentation_is_crop_and_flip_only():
    augment = parse_params(augment_raw()).train.augment
    assert (augment.policy, augment.random_resized_crop, augment.color_jitter, augment.random_erasing) == ("none", None, None, 0.0)


RECIPE = Augment(policy="randaugment", random_resized_crop=ResizedCrop(scale=[0.35, 1.0]), random_erasing=0.25)


def recipe_params(**changes):
    train = parse_params(augment_raw()).train
    return dataclasses.replace(train, **{"epochs": 2, "batch_size": 16, "warmup_epochs": 0, "augment": RECIPE, **changes})


def test_a_fit_with_randaugment_crop_and_erasing_is_bit_reproducible(tiny_synthetic):
    """Two CPU fits with the recipe on give identical weights (draws from the cell's generator)."""
    data = load_prepared(tiny_synthetic)
    first, second = run_fit(data, recipe_params()), run_fit(data, recipe_params())
    assert same_weights(first.best_state, second.best_state)
    plain = run_fit(data, recipe_params(augment=Augment()))
    assert not same_weights(first.best_state, plain.best_state), "the recipe must change training"


def test_out_of_memory_replays_the_batch_with_the_same_per_image_draws(tiny_synthetic, monkeypatch):
    """Backing off to micro-batches of 4 mid-batch trains exactly as micro-batches of 4 throughout:
    the policy's rows are split with the images, and no image's result depends on the split."""
    data = load_prepared(tiny_synthetic, ("train", "val"))
    real, calls = training.forward_backward, []

    def oom_twice(step, x, y, weight):
        calls.append(len(x))
        if len(calls) <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real(step, x, y, weight)

    monkeypatch.setattr(training, "forward_backward", oom_twice)
    backed_off = run_fit(data, recipe_params())
    assert (backed_off.micro_batch_size, backed_off.oom_backoffs) == (4, 2)
    monkeypatch.setattr(training, "forward_backward", real)
    planned = run_fit(data, recipe_params(grad_accum_steps=4))
    assert same_weights(planned.best_state, backed_off.best_state)


class KeepStates(Checkpointer):
    """Keeps every epoch's resume state in memory; resumes from `resumed`."""

    def __init__(self, resumed: dict | None = None):
        super().__init__(resumed)
        self.states = {}

    def save(self, state: dict) -> None:
        self.states[state["epoch"]] = copy.deepcopy(state)


def test_a_fit_resumed_with_the_recipe_on_is_bit_identical(tiny_synthetic):
    data = load_prepared(tiny_synthetic, ("train", "val"))
    full = run_fit(data, recipe_params(), checkpointer=(saved := KeepStates()))
    torch.manual_seed(123)  # the resumed run must not depend on the global generator
    resumed = fit(build_model("tiny_cnn", data.num_classes), data, recipe_params(), seed=0, device=CPU, checkpointer=KeepStates(saved.states[1]))
    assert same_weights(full.best_state, resumed.best_state)
