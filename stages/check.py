"""Usage: python -m stages.check

The pipeline's first stage, which DVC runs on every `dvc repro` (always_changed): it checks that
params.yaml is conf/'s composition, untouched since (resomap/core/composition.py), and all of
params.yaml (unknown keys at any depth, types, ranges, finite numbers, every model name against
the registry and at every resolution and test resolution, the files train.pretrained and train.init_from name), the
runtime variables and the data source, before any stage touches an output (DVC deletes a stage's outputs before it runs the stage). It writes
data/source.json, the fingerprint of the source's files, which prepare depends on: the file
changes only when those files do, so a valid edit still reruns only the stages whose own params
changed, and an invalid one stops the pipeline here with one line.
"""

from pathlib import Path

from resomap.core import io
from resomap.core.composition import check_composed
from resomap.core.config import check_test_resolutions_prepared, load_params
from resomap.core.environment import check_environment
from resomap.core.grid import SOURCE_FINGERPRINT
from resomap.core.stage import run_stage, usage_error
from resomap.models.registry import check_model, check_starting_weights
from resomap.prepare.fingerprint import source_fingerprint


def main(argv: list[str]) -> None:
    if argv:
        raise usage_error(__doc__)
    check_composed(Path.cwd())
    params = load_params()
    check_environment()
    for model in params.models:
        for resolution in params.grid_resolutions:
            check_model(model, resolution)
        for resolution in params.test_resolutions:
            check_model(model, resolution, "evaluate.test_resolutions")
        check_starting_weights(model, params.train.pretrained, params.train.init_from)
    check_test_resolutions_prepared(params)
    fingerprint = source_fingerprint(params.data)
    io.write_json(SOURCE_FINGERPRINT, fingerprint)
    cells = len(params.models) * len(params.grid_resolutions) * len(params.seeds)
    files = f"{fingerprint['files']:,} files, {fingerprint['bytes'] / 1e6:,.1f} MB in {fingerprint['path']}" if "files" in fingerprint else "built in"
    print(f"check: params.yaml valid ({cells} cells); data: {params.data.source}, {files}")


if __name__ == "__main__":
    run_stage(main)
