"""Usage: python -m stages.prepare RESOLUTION

Decode and resize the configured data source once into data/prepared/RESOLUTION/.
"""

from resomap.core.config import load_params
from resomap.core.grid import prepared_dir
from resomap.core.stage import run_stage, usage_error
from resomap.prepare.resolution import prepare_resolution


def main(argv: list[str]) -> None:
    if len(argv) != 1 or not argv[0].isdigit():
        raise usage_error(__doc__)
    resolution = int(argv[0])
    params = load_params()
    manifest = prepare_resolution(params.data, resolution, prepared_dir(resolution))
    for bad in manifest["skipped"]:
        print(f"skipped {bad['path']}: {bad['reason']}")
    if manifest["skipped"]:
        print(f"prepare {resolution}px: skipped {len(manifest['skipped'])} bad image(s) (data.on_bad_image: skip)")
    counts = ", ".join(f"{n} {split}" for split, n in manifest["counts"].items())
    print(f"prepare {resolution}px: {len(manifest['classes'])} classes, {counts} from {manifest['source']}")


if __name__ == "__main__":
    run_stage(main)
