"""The explorer's parts that need no browser: which cells it finds, what a cell makes of an image
(the same top-1 as the evaluate stage's inference), uploads refused in one line, and the images
whose prediction changes most across resolutions."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from helpers.study_repo import shipped_params
from resomap.core.config import load_params
from resomap.core.io import save_state_dict
from resomap.data.prepared import load_prepared
from resomap.explain.methods import select_cam_layer
from resomap.explore.disagreement import disagreements
from resomap.explore.looks import METHODS, Looker
from resomap.explore.study import NoTrainedCells, Source, load_explored_study, seen_at
from resomap.explore.uploads import MAX_UPLOAD_BYTES, BadUpload, decode_upload
from resomap.models.inference import predict_logits
from resomap.models.registry import build_model
from resomap.prepare.resize import resize_image

CPU = torch.device("cpu")


def frame(predicted: list[str], actual: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"index": range(len(actual)), "actual": actual, "predicted": predicted,
                         "correct": [int(p == a) for p, a in zip(predicted, actual, strict=True)], "confidence": 0.5})


def test_the_most_disagreeing_images_come_first():
    actual = ["cat", "cat", "dog", "dog"]
    table = disagreements({
        32: frame(["cat", "dog", "dog", "cat"], actual),
        16: frame(["cat", "cow", "dog", "dog"], actual),
        64: frame(["cat", "cat", "dog", "dog"], actual),
    })
    assert list(table.columns) == ["index", "true class", "16 px", "32 px", "64 px", "classes predicted", "right at"]
    assert table["index"].tolist() == [1, 3, 0, 2]  # three classes for image 1; then two, image 3 right twice
    assert table.iloc[0][["16 px", "32 px", "64 px"]].tolist() == ["cow", "dog", "cat"]
    assert table["right at"].tolist() == [1, 2, 3, 3]


def test_a_png_upload_decodes_and_is_seen_through_prepares_resize(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    decoded = decode_upload(tmp_path / "photo.png")
    assert np.array_equal(decoded, pixels)
    assert np.array_equal(seen_at(None, Source(upload=decoded, name="photo.png"), 16), resize_image(pixels, 16))


@pytest.mark.parametrize("content, message", [
    (b"not an image\n", "notes.txt cannot be used as an image: not an image PIL can read (unknown format or not an image)"),
    (b"", "notes.txt cannot be used as an image: empty file (0 bytes)"),
])
def test_an_upload_that_is_not_an_image_gets_one_line(tmp_path, content, message):
    (tmp_path / "notes.txt").write_bytes(content)
    with pytest.raises(BadUpload) as refused:
        decode_upload(tmp_path / "notes.txt")
    assert str(refused.value) == message


def test_an_upload_over_the_size_limit_is_refused_before_decoding(tmp_path):
    big = tmp_path / "huge.png"
    with big.open("wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no 20 MB written
    with pytest.raises(BadUpload, match=r"^huge.png is 20.0 MB: upload an image of at most 20 MB$"):
        decode_upload(big)


@pytest.fixture
def study_folder(tmp_path, tiny_synthetic):
    """A workspace: tiny_cnn on a grid of 32 px, the tiny_synthetic data prepared there."""
    folder = shipped_params(tmp_path / "study", {"models": ["tiny_cnn"], "resolutions": [32], "seeds": [0]})
    shutil.copytree(tiny_synthetic, folder / "data/prepared/32")
    previous = os.getcwd()
    os.chdir(folder)
    yield folder
    os.chdir(previous)


def test_a_workspace_without_weights_says_to_run_dvc_repro(study_folder):
    with pytest.raises(NoTrainedCells, match=r"^no trained cell in this workspace .*: run `dvc repro` first"):
        load_explored_study(load_params())


def test_a_cell_looks_as_the_evaluate_stage_predicts_and_keeps_what_it_computed(study_folder):
    torch.manual_seed(0)
    model = build_model("tiny_cnn", 10)
    save_state_dict(study_folder / "models/tiny_cnn/32/0/model.pt", model.state_dict())
    params = load_params()
    study = load_explored_study(params)
    (explored,) = study.cells
    assert (explored.cell.resolution, explored.accuracy, explored.latency_ms) == (32, None, None)  # not evaluated yet
    looker = Looker(params, len(study.classes), CPU)
    test = load_prepared(study_folder / "data/prepared/32", ("test",)).splits["test"]
    logits = predict_logits(model, test.images, batch_size=16, device=CPU)
    for index in (0, 7):
        look = looker.look(explored.cell, seen_at(study, Source(index=index), 32), f"test-{index}")
        assert next(iter(look.top(study.classes))) == study.classes[int(logits[index].argmax())]
        assert np.allclose(look.probabilities.sum(), 1, atol=1e-5)
        assert set(look.maps) == set(METHODS)
        assert all(m.shape == (32, 32) and m.min() >= 0 and m.max() <= 1 for m in look.maps.values())
    assert look.cam_layer == select_cam_layer(model, "tiny_cnn", 32, params.explain.min_cam_size, CPU).name
    assert looker.look(explored.cell, seen_at(study, Source(index=7), 32), "test-7") is look  # kept, not recomputed
