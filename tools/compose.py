"""Usage: python -m tools.compose [OVERRIDE ...]

Writes params.yaml by composing conf/config.yaml, exactly as `dvc exp run` does before each
experiment (DVC's own `compose_and_dump`, with the settings DVC uses for this repository), for a
plain `dvc repro` after an edit to conf/. OVERRIDEs are Hydra's, as after `dvc exp run -S`
(`resolution=512`); like there, they last until the next composition. It refuses to overwrite a
params.yaml edited by hand. Run it from the repository root.
"""

from __future__ import annotations

from pathlib import Path

from resomap.core.composition import CONF_DIR, PARAMS_FILE, CompositionError
from resomap.core.errors import ResoMapError
from resomap.core.stage import run_stage, usage_error

CONFIG_NAME = "config"  # DVC's defaults for hydra.config_name and hydra.plugins_path (the root)


def main(argv: list[str]) -> None:
    if any(arg.startswith("-") for arg in argv):
        raise usage_error(__doc__)
    from dvc.utils.hydra import compose_and_dump
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    root = Path.cwd()
    if not (root / CONF_DIR / f"{CONFIG_NAME}.yaml").is_file():
        raise usage_error(__doc__)
    try:
        compose_and_dump(root / PARAMS_FILE, str(root / CONF_DIR), None, CONFIG_NAME, str(root), argv)
    except (HydraException, OmegaConfBaseException) as error:
        raise _one_line(error) from None
    print(f"compose: {PARAMS_FILE} written from {CONF_DIR}/{CONFIG_NAME}.yaml" + (f" with {' '.join(argv)}" if argv else ""))


def _one_line(error: Exception) -> ResoMapError:
    """Our own refusal when a resolver raised it (OmegaConf wraps it), else Hydra's message."""
    cause = error
    while cause is not None and not isinstance(cause, CompositionError):
        cause = cause.__cause__ or cause.__context__
    if cause is not None:
        return cause
    return ResoMapError(f"composing {CONF_DIR}/{CONFIG_NAME}.yaml failed: {str(error).splitlines()[0]}")


if __name__ == "__main__":
    run_stage(main)
