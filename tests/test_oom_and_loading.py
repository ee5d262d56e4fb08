"""Out-of-memory fallback in explain, and checkpoints that carry more than tensors."""

from pathlib import Path

import pytest
import torch
from torch import nn

from resomap.core import io
from resomap.core.config import ExplainParams
from resomap.core.errors import ResoMapError
from resomap.explain.explain_cell import heatmaps
from resomap.explain.methods import CamLayer


class OutOfMemoryAbove(nn.Module):
    """A classifier that runs out of memory, as CUDA would, on forward batches above `limit`."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.features = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: batch {len(x)} > {self.limit}")
        return self.head(self.features(x).mean((2, 3)))


def test_integrated_gradients_halves_its_chunk_on_out_of_memory():
    model = OutOfMemoryAbove(limit=16).eval()
    x = torch.rand(2, 3, 8, 8)
    params = ExplainParams(ig_steps=32, ig_batch_size=64, batch_size=2)
    layer = CamLayer("features", model.features, 8)
    maps, ig_batch, backoffs = heatmaps(model, "integrated_gradients", x, [0, 1], layer, params)
    assert (ig_batch, backoffs) == (16, 2)  # 64 -> 32 -> 16 image-steps per forward
    assert maps.shape == (2, 8, 8) and maps.max() == pytest.approx(1.0)


def test_out_of_memory_at_batch_one_is_raised():
    model = OutOfMemoryAbove(limit=0).eval()
    layer = CamLayer("features", model.features, 8)
    with pytest.raises(torch.OutOfMemoryError):
        heatmaps(model, "integrated_gradients", torch.rand(1, 3, 8, 8), [0], layer, ExplainParams(ig_batch_size=4))


class Payload:
    """Unpickling this object creates `marker`: code that runs on load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def test_a_checkpoint_with_a_pickle_payload_is_refused_before_it_runs(tmp_path):
    marker, checkpoint = tmp_path / "payload_ran", tmp_path / "model.pt"
    torch.save({"weight": torch.ones(2), "extra": Payload(marker)}, checkpoint)
    with pytest.raises(ResoMapError, match="holds more than tensors, refusing to load it"):
        io.load_state_dict(checkpoint)
    assert not marker.exists()
    torch.load(checkpoint, weights_only=False)  # the payload is real: an unsafe load runs it
    assert marker.exists()


def test_a_plain_state_dict_loads(tmp_path):
    io.save_state_dict(tmp_path / "model.pt", {"weight": torch.arange(3.0)})
    assert torch.equal(io.load_state_dict(tmp_path / "model.pt")["weight"], torch.arange(3.0))
