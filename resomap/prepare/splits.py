"""Deterministic stratified splits, shared by the image-folder and torchvision sources."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from resomap.core.errors import ResoMapError
from resomap.prepare.samples import SPLITS, Sample, SourceData


def carve_splits(given: dict[str, list[Sample]], fractions: dict[str, float], seed: int) -> dict[str, list[Sample]]:
    """All SPLITS: the `given` ones as they are, the `fractions` ones cut out of given train (stratified)."""
    train = given["train"]
    parts = stratified_split([sample.label for sample in train], list(fractions.values()), seed)
    carved = {split: [train[i] for i in part] for split, part in zip(["train", *fractions], parts)}
    merged = {**given, **carved}
    return {split: merged[split] for split in SPLITS}


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices of [rest, cut_1, ..., cut_k]: each class cut by `fractions`, at least one left in rest
    and one in each cut (a class of k + 1 images or more is in every part).

    Each class is shuffled by its own generator seeded with (seed, label), so one class's
    split does not move when another class gains or loses images.
    """
    labels = np.asarray(labels, dtype=np.int64)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        np.random.default_rng([seed, int(label)]).shuffle(members)
        for part, chunk in zip(parts, np.split(members, _cut_points(len(members), fractions))):
            part.extend(chunk.tolist())
    return [sorted(part) for part in parts]


SUBSET_STREAM = 1  # the subset's shuffles are their own random stream, apart from stratified_split's


def stratified_subset(samples: list[Sample], classes: Sequence[str], fraction: float, seed: int) -> list[Sample]:
    """`fraction` of each class's samples (rounded half up), in their original order.

    Each class is shuffled by its own generator seeded with (seed, label), and the first images of
    that order are kept, so a smaller fraction keeps a subset of what a larger one keeps and one
    class's subset does not move when another class changes. A class the fraction would leave
    empty stops with one line naming the smallest fraction that keeps it."""
    if fraction >= 1.0:
        return samples
    labels = np.asarray([sample.label for sample in samples], dtype=np.int64)
    kept: list[int] = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        keep = int(len(members) * fraction + 0.5)
        if keep == 0:
            raise ResoMapError(
                f"data.subset_fraction {fraction} keeps no train image of class '{classes[label]}' "
                f"({len(members)} images): raise it to at least {0.5 / len(members):.3g}, or add images of that class"
            )
        np.random.default_rng([seed, int(label), SUBSET_STREAM]).shuffle(members)
        kept.extend(members[:keep].tolist())
    return [samples[i] for i in sorted(kept)]


def _cut_points(count: int, fractions: Sequence[float]) -> list[int]:
    """Where to split a shuffled class of `count`: rest first, then each cut rounded half up."""
    sizes = []
    for fraction in fractions:
        room = count - 1 - sum(sizes)
        # at least one image per cut while the class has them: a class absent from val or test is not scored
        wanted = max(1, int(count * fraction + 0.5)) if fraction > 0 else 0
        sizes.append(max(0, min(wanted, room)))
    return np.cumsum([count - sum(sizes), *sizes])[:-1].tolist()


def missing_classes(source: SourceData) -> dict[str, list[str]]:
    """The classes each split has no image of (splits with none left out)."""
    missing = {}
    for split in SPLITS:
        present = {sample.label for sample in source.splits[split]}
        absent = [name for label, name in enumerate(source.classes) if label not in present]
        if absent:
            missing[split] = absent
    return missing


def check_class_coverage(source: SourceData, on_missing_class: str, how_to_add: str = "add images of it") -> dict[str, list[str]]:
    """Every split holds every class, or one line names the first class that is missing and how
    many images it has; with on_missing_class "warn", the missing classes are returned instead
    (for the manifest and the report). An empty split is always an error: it cannot be scored.
    `how_to_add` is the fix the message names for this source."""
    for split in SPLITS:
        if not source.splits[split]:
            counts = ", ".join(f"{len(source.splits[s])} {s}" for s in SPLITS)
            raise ResoMapError(
                f"the {split} split is empty ({counts}): {how_to_add} (each class needs at least "
                f"{len(SPLITS)} images, one per split, when a folder is split here)"
            )
    missing = missing_classes(source)
    if missing and on_missing_class == "error":
        split, names = next(iter(missing.items()))
        label = source.classes.index(names[0])
        counts = ", ".join(f"{sum(s.label == label for s in source.splits[part])} {part}" for part in SPLITS)
        raise ResoMapError(
            f"class '{names[0]}' has no {split} image ({counts}): each class needs at least one image per split "
            f"({len(SPLITS)} in all when a folder is split here): {how_to_add}, or set "
            "data.on_missing_class: warn to go on with the report warning"
        )
    return missing
