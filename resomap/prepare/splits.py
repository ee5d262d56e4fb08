"""Deterministic stratified splits, shared by the image-folder and torchvision sources."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from resomap.prepare.samples import SPLITS, Sample


def carve_splits(given: dict[str, list[Sample]], fractions: dict[str, float], seed: int) -> dict[str, list[Sample]]:
    """All SPLITS: the `given` ones as they are, the `fractions` ones cut out of given train (stratified)."""
    train = given["train"]
    parts = stratified_split([sample.label for sample in train], list(fractions.values()), seed)
    carved = {split: [train[i] for i in part] for split, part in zip(["train", *fractions], parts)}
    merged = {**given, **carved}
    return {split: merged[split] for split in SPLITS}


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Indices of [rest, cut_1, ..., cut_k]: each class cut by `fractions`, at least one left in rest.

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


def _cut_points(count: int, fractions: Sequence[float]) -> list[int]:
    """Where to split a shuffled class of `count`: rest first, then each cut rounded half up."""
    sizes = []
    for fraction in fractions:
        room = count - 1 - sum(sizes)
        sizes.append(max(0, min(int(count * fraction + 0.5), room)))
    return np.cumsum([count - sum(sizes), *sizes])[:-1].tolist()
