"""Usage: python -m stages.prepare RESOLUTION

Decode and resize the configured data source once into data/prepared/RESOLUTION/. Killed or
interrupted, it keeps the splits it finished in .resomap/prepare/RESOLUTION/ and resumes from them
on the next run (resomap/prepare/resume.py).
"""

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.errors import Interrupted
from resomap.core.grid import prepared_dir
from resomap.core.stage import run_stage, usage_error
from resomap.prepare.resolution import prepare_resolution
from resomap.prepare.resume import SCRATCH_DIR


def main(argv: list[str]) -> None:
    params = load_params()
    if len(argv) != 1 or not argv[0].isdigit():
        raise usage_error(__doc__)
    resolution = int(argv[0])
    io.check_writable(prepared_dir(resolution))
    try:
        manifest = prepare_resolution(params.data, resolution, prepared_dir(resolution), scratch_dir=SCRATCH_DIR)
    except KeyboardInterrupt:
        raise Interrupted(
            "prepare interrupted (Ctrl-C): nothing half-written was kept, and the splits already finished "
            f"wait in {SCRATCH_DIR / str(resolution)} for the next run; run `dvc repro` again"
        ) from None
    for bad in manifest["skipped"]:
        print(f"skipped {bad['path']}: {bad['reason']}")
    if manifest["skipped"]:
        print(f"prepare {resolution}px: skipped {len(manifest['skipped'])} bad image(s) (data.on_bad_image: skip)")
    for split, names in manifest["missing_classes"].items():
        print(f"warning: the {split} split has no image of {', '.join(names)} (data.on_missing_class: warn)")
    counts = ", ".join(f"{n} {split}" for split, n in manifest["counts"].items())
    print(f"prepare {resolution}px: {len(manifest['classes'])} classes, {counts} from {manifest['source']}")


if __name__ == "__main__":
    run_stage(main)
