"""The Gradio page: pick a model and seed, then a test image (or upload one), and see it at every
trained resolution side by side: as that cell sees it, its top-5 classes and its Grad-CAM,
Integrated Gradients and saliency overlays, with the cell's accuracy and latency."""

from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from resomap.explain.panels import overlay
from resomap.explore.disagreement import disagreements
from resomap.explore.looks import METHODS, Looker
from resomap.explore.study import ExploredStudy, Source, seen_at
from resomap.explore.uploads import BadUpload, decode_upload

SHOWN = 160  # px: every view enlarged to this with nearest neighbour, so a 16 px cell stays readable
GALLERY = 300  # test images offered in the gallery
METHOD_NAMES = {"gradcam": "Grad-CAM", "integrated_gradients": "Integrated Gradients", "saliency": "Saliency"}


def enlarged(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((SHOWN, SHOWN), Image.Resampling.NEAREST))


def _cell_header(study: ExploredStudy, model: str, seed: int, resolution: int) -> str:
    explored = study.cells_of(model, seed).get(resolution)
    if explored is None:
        return f"### {resolution} px\nnot trained"
    accuracy = f"{explored.accuracy:.3f}" if explored.accuracy is not None else "not evaluated"
    latency = f"{explored.latency_ms:.2f} ms" if explored.latency_ms is not None else "not profiled"
    return f"### {resolution} px\ntest accuracy {accuracy} · batch-1 latency {latency}"


def render(study: ExploredStudy, looker: Looker, source: Source | None, model: str, seed: int, opacity: float) -> list:
    """Per resolution: header, seen image, top-5, one overlay per method (the outputs' order)."""
    outputs = []
    for resolution in study.resolutions:
        explored = study.cells_of(model, seed).get(resolution)
        if source is None or explored is None:
            outputs += [_cell_header(study, model, seed, resolution), None, None, *(None for _ in METHODS)]
            continue
        image = seen_at(study, source, resolution)
        look = looker.look(explored.cell, image, source.key)
        outputs += [_cell_header(study, model, seed, resolution) + f" · Grad-CAM layer `{look.cam_layer}`",
                    enlarged(image), look.top(study.classes),
                    *(enlarged(overlay(image, look.maps[method], opacity)) for method in METHODS)]
    return outputs


def describe(study: ExploredStudy, source: Source | None) -> str:
    if source is None:
        return "Pick a test image below, or upload one."
    if source.index is not None:
        return f"Test image #{source.index}, true class **{study.classes[study.test_labels[source.index]]}**."
    return f"Uploaded image **{source.name}** ({source.upload.shape[1]} x {source.upload.shape[0]} px)."


def disagreement_table(study: ExploredStudy, model: str, seed: int):
    predictions = {r: study.predictions(c.cell) for r, c in study.cells_of(model, seed).items()}
    predictions = {r: frame for r, frame in predictions.items() if frame is not None}
    return disagreements(predictions).head(50) if predictions else None


def build_app(study: ExploredStudy, looker: Looker) -> gr.Blocks:
    largest = study.resolutions[-1]
    labels = study.test_labels
    thumbnails = [(study.test_images(largest)[i], f"#{i} {study.classes[labels[i]]}") for i in range(min(GALLERY, len(labels)))]
    with gr.Blocks(title="ResoMap explorer", analytics_enabled=False) as app:
        source = gr.State(None)
        gr.Markdown("# ResoMap explorer\nOne image, every trained resolution: what each cell predicts and where it looks.")
        with gr.Row():
            model = gr.Dropdown(study.models, value=study.models[0], label="model", elem_id="model")
            seed = gr.Dropdown(study.seeds, value=study.seeds[0], label="seed", elem_id="seed")
            opacity = gr.Slider(0, 1, value=0.5, step=0.05, label="overlay opacity", elem_id="opacity")
        chosen = gr.Markdown(describe(study, None), elem_id="chosen")
        columns = []
        with gr.Row():
            for resolution in study.resolutions:
                with gr.Column(min_width=SHOWN + 20):
                    columns += [gr.Markdown(f"### {resolution} px", elem_id=f"header-{resolution}"),
                                gr.Image(label="as the model sees it", elem_id=f"seen-{resolution}", interactive=False),
                                gr.Label(num_top_classes=5, label="top-5", elem_id=f"top5-{resolution}"),
                                *(gr.Image(label=METHOD_NAMES[m], elem_id=f"{m}-{resolution}", interactive=False) for m in METHODS)]
        with gr.Tab("Test images"):
            gallery = gr.Gallery(thumbnails, columns=12, allow_preview=False, label=f"test split ({largest} px)", elem_id="gallery")
        with gr.Tab("Upload"):
            upload = gr.File(label="an image file (PNG, JPEG, ...)", elem_id="upload")
            message = gr.Markdown(elem_id="upload-message")
        with gr.Tab("Where resolutions disagree"):
            gr.Markdown("Test images whose predicted class changes most across this model's resolutions "
                        "(the evaluate stage's predictions); enter an index to look at it.")
            table = gr.Dataframe(disagreement_table(study, study.models[0], study.seeds[0]), elem_id="disagreements", interactive=False)
            index = gr.Number(label="test image index", precision=0, elem_id="index")

        def show(new_source, model_name, seed_value, alpha):
            return [new_source, describe(study, new_source), *render(study, looker, new_source, model_name, int(seed_value), alpha)]

        def from_gallery(model_name, seed_value, alpha, evt: gr.SelectData):
            return show(Source(index=evt.index), model_name, seed_value, alpha)

        def from_index(value, model_name, seed_value, alpha):
            if value is None or not 0 <= int(value) < len(labels):
                raise gr.Error(f"test image indices run from 0 to {len(labels) - 1}")
            return show(Source(index=int(value)), model_name, seed_value, alpha)

        def from_upload(file, model_name, seed_value, alpha, current):
            if file is None:
                return ["", *show(current, model_name, seed_value, alpha)]
            try:
                pixels = decode_upload(file)
            except BadUpload as error:
                return [f"**Not used:** {error}", *show(current, model_name, seed_value, alpha)]
            return ["", *show(Source(upload=pixels, name=file.rsplit("/", 1)[-1]), model_name, seed_value, alpha)]

        outputs = [source, chosen, *columns]
        settings = [model, seed, opacity]
        gallery.select(from_gallery, settings, outputs)
        index.submit(from_index, [index, *settings], outputs)
        upload.upload(from_upload, [upload, *settings, source], [message, *outputs])
        for control in settings:
            control.change(lambda current, *values: show(current, *values), [source, *settings], outputs)
        for control in (model, seed):
            control.change(lambda m, s: disagreement_table(study, m, int(s)), [model, seed], table)
    return app
