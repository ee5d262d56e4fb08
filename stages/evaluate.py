"""Usage: python -m stages.evaluate MODEL RESOLUTION SEED

Score one cell's weights on the test split: metrics/evaluate/.../metrics.json (with evaluate.tta, its
`tta` entry too), plots/evaluate/.../predictions.csv.
"""

from resomap.core import io
from resomap.core.config import load_params
from resomap.core.device import configure_backends, pick_device
from resomap.core.grid import evaluate_metrics_dir, evaluate_plots_dir, model_dir, prepared_dir
from resomap.core.stage import cell_from_argv, run_stage
from resomap.data.prepared import load_prepared
from resomap.evaluate.evaluation import evaluate_model, write_predictions
from resomap.evaluate.tta import tta_metrics
from resomap.models.heads import head_from
from resomap.models.registry import build_model, check_model


def main(argv: list[str]) -> None:
    params = load_params()
    cell = cell_from_argv(argv, __doc__)
    check_model(cell.model, cell.resolution)
    io.check_writable(evaluate_metrics_dir(cell), evaluate_plots_dir(cell))
    device = pick_device()
    configure_backends(device)
    data = load_prepared(prepared_dir(cell.resolution), ("test",))
    model = build_model(cell.model, data.num_classes, head_from(params.train))
    model.load_state_dict(io.load_state_dict(model_dir(cell) / "model.pt"))
    metrics, logits = evaluate_model(model, data, params.evaluate, device)
    if params.evaluate.tta != "none":
        metrics["tta"] = tta_metrics(model, data, params.evaluate, device)
    write_predictions(evaluate_plots_dir(cell) / "predictions.csv", logits, data.splits["test"].labels, data.classes)
    io.write_json(evaluate_metrics_dir(cell) / "metrics.json", metrics)
    print(f"evaluate {cell}: accuracy {metrics['accuracy']:.4f}, macro_f1 {metrics['macro_f1']:.4f}")


if __name__ == "__main__":
    run_stage(main)
