"""The CLIP embedder inside the core's training loop: a contrastive stage,
saved into the run as a Hugging Face folder, restored by ``Pipeline.load``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from modiff.pipeline import Pipeline
from modiff.runs import RunDir
from modiff.settings import load_settings, resolve
from modiff.testing import build_one, plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.workflows import train_run

TINY = {"width": 16, "layers": 1, "heads": 2, "vision_width": 16, "vision_layers": 1, "vision_heads": 2,
        "projection_dim": 8, "vocab_size": 600}


def test_trained_by_the_core_saved_and_restored(tmp_path: Path, use_registry: Any) -> None:
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path)
    data["text_embedder"] = {"plugin": "clip", **TINY}
    data["train"]["text_embedder"] = {"steps": 3, "batch_size": 8, "warmup_steps": 1}
    run = RunDir(tmp_path / "toy")
    trained = train_run(resolve(load_settings(base=data, environ={}), registry), run, progress=False)
    text = trained.components.text_embedder
    assert not text.needs_training
    assert "text_embedder" in run.read_state()["stages_done"]

    loaded = Pipeline.load(run, registry=registry).components.text_embedder
    assets = run.assets("text_embedder")
    from_folder = build_one("text_embedder", "clip", {"pretrained": str(assets)}, registry_=registry)
    prompts = ["a red square", "a blue square", ""]
    with torch.no_grad():
        a = text.eval().embed(prompts)
        for other in (loaded.eval().embed(prompts), from_folder.eval().embed(prompts)):
            assert torch.equal(a.mask, other.mask)
            torch.testing.assert_close(other.tokens, a.tokens, rtol=0, atol=0)
            torch.testing.assert_close(other.pooled, a.pooled, rtol=0, atol=0)
    assert not loaded.needs_training
