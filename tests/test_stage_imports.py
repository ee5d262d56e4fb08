"""Each stage imports only what its work uses: a stage's start-up is paid once per cell, so a heavy
import that creeps into a stage module costs the whole grid. Checked in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from helpers.env import REPO

HEAVY = {"torch", "torchvision", "torch._inductor", "torch._dynamo", "matplotlib", "pandas", "scipy", "dvclive",
         "captum", "pytorch_grad_cam", "cv2", "sklearn"}
# what each stage may load when imported; everything else of HEAVY must stay out
ALLOWED = {
    "check": set(),  # runs on every dvc repro: yaml, numpy and Pillow only
    "prepare": set(),  # numpy and Pillow; torchvision only for a torchvision data source, at run time
    "train": {"torch", "dvclive", "pandas"},  # pandas comes with DVCLive
    "evaluate": {"torch"},
    "surface": {"torch"},
    "finetune": {"torch", "dvclive", "pandas"},  # it trains, as train does
    "profile": {"torch"},
    "explain": {"torch", "matplotlib", "scipy"},  # grad-cam and captum load inside the methods that use them
    "aggregate": {"torch", "matplotlib", "pandas", "scipy"},
}


def loaded(code: str) -> set[str]:
    """The HEAVY modules in sys.modules after running `code` in a fresh interpreter."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {sorted(HEAVY)!r} if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.splitlines()[-1]))


@pytest.mark.parametrize("stage", sorted(ALLOWED))
def test_a_stage_module_loads_only_the_heavy_modules_its_work_needs(stage):
    assert loaded(f"import stages.{stage}") <= ALLOWED[stage]


def test_every_stage_has_its_rule():
    assert {p.stem for p in (REPO / "stages").glob("*.py") if p.stem != "__init__"} == set(ALLOWED)


def test_cpu_backends_are_deterministic_without_loading_the_compiler():
    code = ("import torch\nfrom resomap.core.device import configure_backends\n"
            "configure_backends(torch.device('cpu'))\nassert torch.are_deterministic_algorithms_enabled()")
    assert "torch._inductor" not in loaded(code)


def test_a_compiled_run_also_sets_the_compilers_deterministic_flag():
    code = ("import torch\nfrom resomap.core.device import configure_backends\n"
            "configure_backends(torch.device('cpu'), compiling=True)\n"
            "import torch._inductor.config as c\nassert c.deterministic and torch.are_deterministic_algorithms_enabled()")
    assert "torch._inductor" in loaded(code)


def test_the_methods_load_their_libraries_when_they_run():
    code = ("import torch\nfrom resomap.explain.methods import explain_batch, CamLayer\n"
            "from resomap.models.registry import build_model\nm = build_model('tiny_cnn', 3).eval()\n"
            "explain_batch(m, 'saliency', torch.zeros(1, 3, 8, 8), [0], None, ig_batch=1, ig_steps=2)")
    assert {"captum"} <= loaded(code) and "pytorch_grad_cam" not in loaded(code)
