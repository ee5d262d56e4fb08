"""Usage: python -m stages.explain MODEL RESOLUTION SEED

Grad-CAM for explain.num_images fixed test images: heatmaps to explanations/..., panels to plots/explain/....
"""

from resomap import io
from resomap.config import load_params
from resomap.data.prepared import load_prepared
from resomap.device import pick_device
from resomap.explain import explain_cell
from resomap.models import build_model
from resomap.panels import write_panel
from resomap.paths import explain_metrics_dir, explain_plots_dir, explanations_dir, model_dir, prepared_dir
from resomap.stage import cell_from_argv, run_stage


def main(argv: list[str]) -> None:
    cell = cell_from_argv(argv, __doc__.splitlines()[0])
    params = load_params()
    data = load_prepared(prepared_dir(cell.resolution), ("test",))
    model = build_model(cell.model, data.num_classes)
    model.load_state_dict(io.load_state_dict(model_dir(cell) / "model.pt"))
    test = data.splits["test"]
    metrics, arrays = explain_cell(model, cell.model, test, params.explain, pick_device())
    io.write_npz(explanations_dir(cell) / "heatmaps.npz", **arrays)
    for rank, index in enumerate(arrays["indices"]):
        image = test.images[index].permute(1, 2, 0).numpy()
        write_panel(explain_plots_dir(cell) / f"gradcam_{rank:02d}.png", image, arrays["gradcam"][rank])
    io.write_json(explain_metrics_dir(cell) / "metrics.json", metrics)
    print(f"explain {cell}: {metrics['num_images']} images, " + ", ".join(f"{k} {v}" for k, v in metrics.items() if "." in k))


if __name__ == "__main__":
    run_stage(main)
