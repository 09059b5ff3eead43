"""word2vec inside the core's training loop: fitted in its stage, its
attention layers trained with the denoiser, restored by ``Pipeline.load``."""

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

PARAMS = {"dim": 8, "epochs": 2, "depth": 1, "heads": 2}


def test_fitted_jointly_trained_saved_and_restored(tmp_path: Path, use_registry: Any) -> None:
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path)
    data["text_embedder"] = {"plugin": "word2vec", **PARAMS}
    run = RunDir(tmp_path / "toy")
    resolved = resolve(load_settings(base=data, environ={}), registry)

    trained = train_run(resolved, run, progress=False)
    text = trained.components.text_embedder
    assert not text.needs_training and text.joint_training
    assert {"red", "square"} <= set(text.words)
    assert json.loads((run.assets("text_embedder") / "vocabulary.json").read_text())["words"] == text.words

    loaded = Pipeline.load(run, registry=registry).components.text_embedder
    assert not loaded.needs_training and loaded.words == text.words
    prompts = ["a red square", "a blue square", ""]
    with torch.no_grad():
        a, b = text.eval().embed(prompts), loaded.eval().embed(prompts)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(b.tokens, a.tokens, rtol=0, atol=0)
    # The joint stage changed the attention layers (they are not the fresh initialisation).
    torch.manual_seed(data["run"]["seed"])  # what the run's build saw first
    untrained = build_one("text_embedder", "word2vec", PARAMS, registry_=registry)
    untrained_state = {k: v for k, v in untrained.state_dict().items() if k.startswith("layers.")}
    assert any(not torch.equal(v, text.state_dict()[k]) for k, v in untrained_state.items())
