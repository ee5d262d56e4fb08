"""Loaded by Hydra when DVC composes conf/ into params.yaml (DVC's `hydra.plugins_path` defaults to
the repository root, where this `hydra_plugins` namespace lives): registers ResoMap's resolvers."""

from pathlib import Path

from resomap.core.composition import register_resolvers

register_resolvers(Path(__file__).resolve().parents[2])
