"""What one cell makes of one image: its top-5 classes and its explanation maps. Models are built
once per cell and kept; the maps of the last images are kept too, so moving the opacity slider or
switching back costs no forward pass."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import torch

from resomap.core import io
from resomap.core.config import Params
from resomap.core.grid import Cell, model_dir
from resomap.data.augment import normalize
from resomap.explain.methods import CamLayer, explain_batch, select_cam_layer
from resomap.models.heads import head_from
from resomap.models.registry import build_model

METHODS = ("gradcam", "integrated_gradients", "saliency")
KEPT_LOOKS = 64  # (cell, image) pairs whose maps are kept


@dataclass(frozen=True)
class Look:
    probabilities: np.ndarray  # softmax over the classes
    maps: dict[str, np.ndarray]  # method -> (R, R) in [0, 1], for the top-1 class
    cam_layer: str

    def top(self, classes: list[str], k: int = 5) -> dict[str, float]:
        order = np.argsort(-self.probabilities, kind="stable")[:k]
        return {classes[i]: float(self.probabilities[i]) for i in order}


class Looker:
    def __init__(self, params: Params, num_classes: int, device: torch.device):
        self.params, self.num_classes, self.device = params, num_classes, device
        self._models: dict[Cell, tuple[torch.nn.Module, CamLayer]] = {}
        self._looks: OrderedDict[tuple[Cell, str], Look] = OrderedDict()

    def model(self, cell: Cell) -> tuple[torch.nn.Module, CamLayer]:
        """The cell's weights, and the Grad-CAM layer the explain stage picks for it (same rule, same
        params: the `cam_layer` its metrics record)."""
        if cell not in self._models:
            model = build_model(cell.model, self.num_classes, head_from(self.params.train))
            model.load_state_dict(io.load_state_dict(model_dir(cell) / "model.pt"))
            model = model.to(self.device).eval()
            layer = select_cam_layer(model, cell.model, cell.resolution, self.params.explain.min_cam_size, self.device)
            self._models[cell] = model, layer
        return self._models[cell]

    def look(self, cell: Cell, image: np.ndarray, key: str) -> Look:
        """`image`: uint8 (R, R, 3) at the cell's resolution; `key` names it for the cache."""
        if (cell, key) in self._looks:
            self._looks.move_to_end((cell, key))
            return self._looks[(cell, key)]
        model, layer = self.model(cell)
        x = normalize(torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].to(self.device))
        with torch.no_grad():
            probabilities = torch.softmax(model(x).float(), 1)[0].cpu().numpy()
        target = [int(probabilities.argmax())]
        explain = self.params.explain
        maps = {method: explain_batch(model, method, x, target, layer, ig_batch=explain.ig_batch_size, ig_steps=explain.ig_steps)[0]
                for method in METHODS}
        self._looks[(cell, key)] = Look(probabilities, maps, layer.name)
        if len(self._looks) > KEPT_LOOKS:
            self._looks.popitem(last=False)
        return self._looks[(cell, key)]
