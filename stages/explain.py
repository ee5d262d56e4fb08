"""Usage: python -m stages.explain MODEL RESOLUTION SEED

Explain explain.num_images fixed test images with each of explain.methods: heatmaps to
explanations/..., one PNG panel per image to plots/explain/..., scores to metrics/explain/....
Then the gallery: per class the most confident right and wrong test prediction with Grad-CAM,
picks and arrays to explanations/.../gallery.{json,npz}, one panel to plots/gallery/.../gallery.png.
"""

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import configure_backends, pick_device
from resomap.core.grid import explain_metrics_dir, explain_plots_dir, explanations_dir, gallery_plots_dir, model_dir, prepared_dir
from resomap.core.stage import cell_from_argv, run_stage
from resomap.data.prepared import load_prepared
from resomap.explain.explain_cell import explain_cell
from resomap.explain.gallery import PANEL_FILE, write_gallery, write_gallery_panel
from resomap.explain.gallery_cell import explain_gallery
from resomap.explain.panels import write_panel
from resomap.models.heads import head_from
from resomap.models.registry import build_model, check_model


def main(argv: list[str]) -> None:
    params = load_params()
    cell = cell_from_argv(argv, __doc__)
    check_model(cell.model, cell.resolution)
    io.check_writable(explanations_dir(cell), explain_plots_dir(cell), explain_metrics_dir(cell), gallery_plots_dir(cell))
    device = pick_device()
    configure_backends(device)
    data = load_prepared(prepared_dir(cell.resolution), ("test",))
    model = build_model(cell.model, data.num_classes, head_from(params.train))
    model.load_state_dict(io.load_state_dict(model_dir(cell) / "model.pt"))
    test = data.splits["test"]
    metrics, arrays = explain_cell(model, cell.model, test, data.num_classes, params.explain, device, head_from(params.train))
    io.write_npz(explanations_dir(cell) / "heatmaps.npz", **arrays)
    for rank, index in enumerate(arrays["indices"]):
        image = arrays["images"][rank]
        maps = {method: arrays[method][rank] for method in params.explain.methods}
        caption = (f"{cell} test image {index}: true {data.classes[arrays['labels'][rank]]}, "
                   f"predicted {data.classes[arrays['predicted'][rank]]}")
        write_panel(explain_plots_dir(cell) / f"image_{rank:02d}.png", image, maps, caption)
    io.write_json(explain_metrics_dir(cell) / "metrics.json", metrics)
    # after everything above is written: the gallery cannot change it (it draws no random numbers either)
    record, gallery = explain_gallery(model, cell.model, test, data.classes, params.explain, device)
    write_gallery(explanations_dir(cell), record, gallery)
    write_gallery_panel(gallery_plots_dir(cell) / PANEL_FILE, record, gallery, f"{cell}: most confident right and wrong per class")
    summary = ", ".join(
        f"{m} deletion {metrics[m]['deletion_auc']:.3f} insertion {metrics[m]['insertion_auc']:.3f}" for m in params.explain.methods
    )
    wrong = sum(picks["wrong"] is not None for picks in record["classes"].values())
    print(f"explain {cell}: {metrics['num_images']} images, cam layer {metrics['cam_layer']}; {summary}; "
          f"gallery: {len(gallery['indices'])} images, {wrong} classes with a wrong one")


if __name__ == "__main__":
    run_stage(main)
