"""Usage: python -m stages.surface MODEL RESOLUTION SEED

Score one cell's weights at every test resolution (evaluate.test_resolutions) on the same test
images: metrics/surface/.../metrics.json, plots/surface/.../predictions.csv. Nothing is trained.
"""

from resomap.core import io
from resomap.core.config import check_test_resolutions_prepared, load_params
from resomap.core.device import configure_backends, pick_device
from resomap.core.grid import model_dir, prepared_dir, surface_metrics_dir, surface_plots_dir
from resomap.core.stage import cell_from_argv, run_stage
from resomap.data.prepared import load_classes, load_prepared
from resomap.evaluate.evaluation import write_rows
from resomap.evaluate.surface import SURFACE_COLUMNS, SurfaceData, evaluate_surface
from resomap.models.heads import head_from
from resomap.models.registry import build_model, check_model


def main(argv: list[str]) -> None:
    params = load_params()
    cell = cell_from_argv(argv, __doc__)
    check_model(cell.model, cell.resolution)
    for resolution in params.test_resolutions:
        check_model(cell.model, resolution, "evaluate.test_resolutions")
    check_test_resolutions_prepared(params)
    io.check_writable(surface_metrics_dir(cell), surface_plots_dir(cell))
    device = pick_device()
    configure_backends(device)
    splits = ("train", "test") if params.evaluate.bn_recalibration else ("test",)
    resolutions = (  # loaded one at a time: a large study's arrays at every resolution need not fit at once
        SurfaceData(load_prepared(prepared_dir(r), splits), io.read_json(prepared_dir(r) / "manifest.json")["resize_policy"])
        for r in params.test_resolutions
    )
    model = build_model(cell.model, len(load_classes(prepared_dir(cell.resolution))), head_from(params.train))
    model.load_state_dict(io.load_state_dict(model_dir(cell) / "model.pt"))
    metrics, rows = evaluate_surface(model, cell.resolution, resolutions, params.evaluate, device)
    write_rows(surface_plots_dir(cell) / "predictions.csv", SURFACE_COLUMNS, rows)
    io.write_json(surface_metrics_dir(cell) / "metrics.json", metrics)
    accuracies = ", ".join(f"{r} px {entry['accuracy']:.4f}" for r, entry in metrics["test"].items())
    print(f"surface {cell}: accuracy {accuracies}")


if __name__ == "__main__":
    run_stage(main)
