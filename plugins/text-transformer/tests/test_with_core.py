"""The text transformer inside the core's training loop: fitted in the
text-embedder stage, trained with the denoiser, saved, restored, deterministic."""

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

PARAMS = {"width": 16, "depth": 1, "heads": 2}


def settings(tmp_path: Path, registry: Any, text: dict[str, Any] | None = None, **train: Any) -> Any:
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path)
    data["text_embedder"] = {"plugin": "transformer", **PARAMS, **(text or {})}
    data["train"].update(train)
    return resolve(load_settings(base=data, environ={}), registry)


def test_fitted_trained_jointly_saved_and_restored(tmp_path: Path, use_registry: Any) -> None:
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    run = RunDir(tmp_path / "toy")
    trained = train_run(settings(tmp_path, registry), run, progress=False)
    text = trained.components.text_embedder
    assert not text.needs_training and text.joint_training
    assert {"red", "square"} <= set(text.vocabulary.words)
    saved = json.loads((run.assets("text_embedder") / "vocabulary.json").read_text())
    assert saved["words"] == text.vocabulary.words

    # The denoiser stage changed every part of it (nothing here is pretrained).
    fresh = build_one("text_embedder", "transformer", PARAMS, registry_=registry)
    fresh.fit(trained.components.dataset.captions())
    for name, value in fresh.state_dict().items():
        assert not torch.equal(value, text.state_dict()[name]), f"{name} was not trained"

    loaded = Pipeline.load(run, registry=registry).components.text_embedder
    assert not loaded.needs_training and loaded.vocabulary.words == text.vocabulary.words
    prompts = ["a red square", "a blue square", ""]
    with torch.no_grad():
        a, b = text.eval().embed(prompts), loaded.eval().embed(prompts)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(b.tokens, a.tokens, rtol=0, atol=0)


def test_same_settings_same_weights(tmp_path: Path, use_registry: Any) -> None:
    """Determinism: two runs of the same settings train the same text transformer, bit for bit."""
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    runs = []
    for name in ("a", "b"):
        run = RunDir(tmp_path / name / "toy")
        train_run(settings(tmp_path / name, registry), run, progress=False)
        runs.append(run)
    from safetensors.torch import load_file

    a, b = (load_file(str(r.weights("text_embedder"))) for r in runs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_the_layout_pretext_is_a_stage_between_fitting_and_the_denoiser(tmp_path: Path, use_registry: Any) -> None:
    """Fitted, then trained on the pretext in the text-embedder stage (its own metrics, its loss
    falling), then with the denoiser; restored as trained."""
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    s = settings(tmp_path, registry, {"pretext": "layout", "pretext_grid": 4}, log_every=1,
                 text_embedder={"steps": 40, "lr": 3e-3, "warmup_steps": 0})
    run = RunDir(tmp_path / "toy")
    trained = train_run(s, run, progress=False)
    text = trained.components.text_embedder
    assert not text.needs_training and {"red", "square"} <= set(text.vocabulary.words)
    logged = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    losses = [r["loss"] for r in logged if r.get("stage") == "text_embedder" and "loss" in r]
    assert len(losses) >= 10 and sum(losses[-5:]) < sum(losses[:5]), losses
    loaded = Pipeline.load(run, registry=registry).components.text_embedder
    assert type(loaded) is type(text) and not loaded.needs_training
    for name, value in text.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[name]), name



def test_frozen_after_the_pretext_the_denoiser_stage_leaves_it_as_the_pretext_left_it(
    tmp_path: Path, use_registry: Any
) -> None:
    """``joint_training = false``: the text embedder ends as the pretext left it, however long the
    denoiser trains; with ``true`` the denoiser's steps move it."""
    registry = use_registry(plugin_registry(ToyPlugin(), entry_points=True))

    def text_weights(joint: bool, denoiser_steps: int) -> dict[str, torch.Tensor]:
        where = tmp_path / f"{joint}-{denoiser_steps}"
        s = settings(where, registry, {"pretext": "layout", "pretext_grid": 4, "joint_training": joint},
                     steps=denoiser_steps, text_embedder={"steps": 20, "lr": 3e-3, "warmup_steps": 0})
        trained = train_run(s, RunDir(where / "toy"), progress=False)
        assert trained.components.text_embedder.joint_training is joint
        return trained.components.text_embedder.state_dict()

    frozen_short, frozen_long = text_weights(False, 2), text_weights(False, 12)
    for k, v in frozen_short.items():
        assert torch.equal(v, frozen_long[k]), k
    joint_short, joint_long = text_weights(True, 2), text_weights(True, 12)
    assert not torch.equal(joint_short["words.weight"], joint_long["words.weight"])
