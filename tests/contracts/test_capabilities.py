"""The optional capabilities the core reads off components (``joint_training`` on a text
embedder, ``sample_posterior`` on an encoder): declared in ``modiff.protocols``, read
through one accessor each, and acted on by the trainer as declared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from modiff.assembly import build
from modiff.distributed import World
from modiff.protocols import SamplesPosterior, TrainsJointly, samples_posterior, trains_jointly
from modiff.runs import RunDir
from modiff.settings import load_settings, resolve
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.training.stages import denoiser_stage
from modiff.training_step import TrainingStep
from modiff.workflows import train_run

REGISTRY = plugin_registry(ToyPlugin())  # the toys alone: no other installed plugin can break these tests


@pytest.fixture(autouse=True)
def toys(use_registry):
    use_registry(REGISTRY)


def settings(encoder: dict[str, Any] | None = None, text_embedder: dict[str, Any] | None = None):
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["encoder"].update(encoder or {})
    data["text_embedder"].update(text_embedder or {})
    return resolve(load_settings(base=data, environ={}), REGISTRY)


class _Declares:
    def __init__(self, **attributes: Any):
        self.__dict__.update(attributes)


class _Property:
    @property
    def sample_posterior(self) -> bool:  # as the KL autoencoder declares it: from its settings
        return True


def test_each_capability_is_read_by_its_accessor() -> None:
    assert trains_jointly(_Declares(joint_training=True))
    assert not trains_jointly(_Declares(joint_training=False))
    assert not trains_jointly(_Declares()) and not trains_jointly(None)
    assert isinstance(_Declares(joint_training=True), TrainsJointly)
    assert samples_posterior(_Property()) and isinstance(_Property(), SamplesPosterior)
    assert not samples_posterior(_Declares(sample_posterior=False))
    assert not samples_posterior(_Declares(joint_training=True))


def test_a_text_embedder_declaring_joint_training_trains_with_the_denoiser(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "joint")
    pipeline = train_run(settings(text_embedder={"joint_training": True}), run, progress=False)
    assert run.read_state()["stages_done"] == ["denoiser"]
    assert (run.checkpoint().components / "text_embedder.safetensors").is_file()
    assert float(pipeline.components.text_embedder.gain.detach()) != 1.0  # the denoiser's loss moved it
    frozen = RunDir(tmp_path / "frozen")
    train_run(settings(), frozen, progress=False)
    assert not (frozen.checkpoint().components / "text_embedder.safetensors").exists()


@pytest.mark.parametrize("sampling", [False, True])
def test_an_encoder_declaring_sample_posterior_is_encoded_every_step(sampling: bool) -> None:
    """Declared: the stage's latents are drawn with the step's per-sample generators.
    Not declared: each image's latent is computed once and cached."""
    components = build(settings(encoder={"sample_posterior": sampling}))
    stage = denoiser_stage(components, World.single())
    images = torch.stack([components.dataset[i].image for i in (0, 1)])
    first, second = (
        stage.loss.latents(images, [0, 1], TrainingStep(torch.Generator().manual_seed(seed))) for seed in (1, 2)
    )
    assert torch.equal(first, second) is not sampling
