"""params.yaml is composed from conf/config.yaml (DVC's Hydra composition: `dvc exp run` composes
it, `python -m tools.compose` too), so that `dvc exp run -S resolution=512` can set one key and get
a whole grid at 512 px. That makes two files, and this module keeps them from disagreeing silently:

- `grid.resolutions`, the list dvc.yaml's matrix reads, is derived at composition: `[resolution]`
  when `resolution` is set, else `resolutions`.
- `grid.finetune`, the fine-tune cells dvc.yaml's `finetune` stage iterates, keyed by stage name:
  models x finetune.pairs x seeds, `next` resolved against the grid's resolutions.
- `composed`, the last key, stamps the digest of conf/ and of the composed values. The check stage
  refuses a params.yaml whose conf/ has changed since (an edit `dvc repro` would otherwise ignore)
  or whose values were edited by hand (an edit the next `dvc exp run` would otherwise overwrite),
  and composition itself refuses to overwrite such a hand edit.

Hydra loads hydra_plugins/resomap (DVC's `hydra.plugins_path` is the repo root), which calls
`register_resolvers`. Nothing here imports OmegaConf until a resolver runs, so the check stage stays
cheap.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import yaml

from resomap.core.errors import ResoMapError
from resomap.core.grid import FinetuneCell

CONF_DIR = "conf"
PARAMS_FILE = "params.yaml"
STAMP_KEY = "composed"
COMPOSE_COMMAND = "python -m tools.compose"
_STAMP = re.compile(r"conf ([0-9a-f]{12}) params ([0-9a-f]{12})$")


class CompositionError(ResoMapError):
    """params.yaml and conf/ disagree, and running on would lose or ignore an edit."""


def effective_resolutions(resolution: int | None, resolutions: list) -> list:
    """The grid's resolutions: the single `resolution` when it is set, else the list."""
    return list(resolutions) if resolution is None else [resolution]


def finetune_pairs(resolutions: list, pairs) -> list[tuple[int, int]]:
    """The (from, to) pairs to fine-tune: `next` pairs each grid resolution with the next one up
    (none for a grid of one); a listed pair must join two different grid resolutions, since a pair
    needs the source's trained cell and the target's prepared data. Raises ValueError naming the key."""
    grid = sorted(resolutions)
    if pairs == "next":
        return list(zip(grid, grid[1:]))
    for i, (source, target) in enumerate(pairs):
        missing = next((r for r in (source, target) if r not in grid), None)
        if missing is not None:
            raise ValueError(f"finetune.pairs[{i}] uses {missing} px, which is not a grid resolution {grid}: "
                             "list pairs of grid resolutions, or next")
        if source == target:
            raise ValueError(f"finetune.pairs[{i}] goes from {source} px to itself: a fine-tune changes the resolution")
    if len(set(pairs)) < len(pairs):
        raise ValueError("finetune.pairs lists a pair more than once: remove the duplicate")
    return [tuple(pair) for pair in pairs]


def finetune_cells(models: list, seeds: list, resolutions: list, pairs) -> list[FinetuneCell]:
    """Every model and seed at every pair of `finetune_pairs`."""
    return [FinetuneCell(model, source, target, seed)
            for model in models for source, target in finetune_pairs(resolutions, pairs) for seed in seeds]


def conf_digest(root: Path) -> str:
    """Digest of every file under conf/ (names and bytes)."""
    digest = hashlib.sha256()
    for path in sorted((root / CONF_DIR).rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:12]


def values_digest(values: dict) -> str:
    """Digest of params values, the stamp left out: equal for the composed tree and for the YAML
    that DVC writes from it."""
    payload = {key: value for key, value in values.items() if key != STAMP_KEY}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def stamp(root: Path, values: dict) -> str:
    return f"from conf/, edit there: conf {conf_digest(root)} params {values_digest(values)}"


def check_composed(root: Path) -> None:
    """Stop unless params.yaml is conf/'s composition, untouched since (the check stage)."""
    values = _read_params(root / PARAMS_FILE)
    if _hand_edited(values):
        raise CompositionError(_hand_edit_message())
    if _STAMP.search(values[STAMP_KEY]).group(1) != conf_digest(root):
        raise CompositionError(
            f"{CONF_DIR}/ changed since params.yaml was composed from it, so dvc repro would ignore the edit: "
            f"run `{COMPOSE_COMMAND}` first (dvc exp run composes by itself)"
        )


def _read_params(path: Path) -> dict:
    try:
        values = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise CompositionError(f"{path} not found: run `{COMPOSE_COMMAND}` in the repository root") from None
    except yaml.YAMLError:
        raise CompositionError(f"{path} is not valid YAML: `git checkout {path.name}`, then edit {CONF_DIR}/config.yaml") from None
    return values if isinstance(values, dict) else {}


def _hand_edited(values: dict) -> bool:
    found = _STAMP.search(str(values.get(STAMP_KEY, "")))
    return found is None or found.group(2) != values_digest(values)


def _hand_edit_message() -> str:
    return (
        f"params.yaml is not what {CONF_DIR}/config.yaml composed (edited by hand?), and composing would overwrite it: "
        f"make the edit in {CONF_DIR}/config.yaml and run `{COMPOSE_COMMAND}` (`git checkout params.yaml` drops it)"
    )


def register_resolvers(root: Path) -> None:
    """The resolvers conf/config.yaml calls: `resomap.grid`, `resomap.finetune` and `resomap.stamp`."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    def grid(resolution, resolutions) -> ListConfig:
        # OmegaConf needs a ListConfig back: a plain list would be stored as one opaque value.
        return ListConfig(effective_resolutions(resolution, resolutions))

    def finetune(models, seeds, resolutions, pairs) -> DictConfig:
        # grid.finetune, keyed by the stage's name suffix: tiny_cnn-16to32-0
        listed = pairs if pairs == "next" else [(pair["from"], pair["to"]) for pair in pairs]
        try:
            cells = finetune_cells(list(models), list(seeds), list(resolutions), listed)
        except ValueError as error:
            raise CompositionError(str(error)) from None
        return DictConfig({str(c): {"model": c.model, "from": c.source, "to": c.target, "seed": c.seed} for c in cells})

    def composed_stamp(*, _root_: DictConfig) -> str:
        previous = root / PARAMS_FILE
        if previous.exists() and _hand_edited(_read_params(previous)):
            raise CompositionError(_hand_edit_message())
        values = {key: OmegaConf.to_container(_root_[key], resolve=True) if OmegaConf.is_config(_root_[key]) else _root_[key]
                  for key in _root_ if key != STAMP_KEY}
        return stamp(root, values)

    OmegaConf.register_new_resolver("resomap.grid", grid, replace=True)
    OmegaConf.register_new_resolver("resomap.finetune", finetune, replace=True)
    OmegaConf.register_new_resolver("resomap.stamp", composed_stamp, replace=True)
