"""The toys' contract configurations: what every mutant is run against.

Each class holds one configuration of a role's toy, as a plugin author would
write it in a test module (a class per configuration that changes the code
path). The toys pass all of them (modiff's test suite subclasses them as
``Test*`` classes); a mutant is caught when any test of any configuration of
its role fails.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, ClassVar

from ...assembly import BuildContext
from ...plugins import Registry
from ...protocols import ConditioningSpec, DenoiserSpec
from ...settings import RunSettings
from ...tasks import MaskToImage
from .. import plugin_registry
from ..contracts import (
    ConditionerContract,
    Contract,
    DatasetContract,
    DenoiserContract,
    EncoderContract,
    EvaluatorContract,
    SchedulerContract,
    TextEmbedderContract,
)
from ..contracts.conditioner import FakeTextEmbedder
from ..toys import ColourPipeline, ToyPlugin
from .base import MutantPlugin

#: The toys and every mutant, each under its own name.
REGISTRY = plugin_registry(ToyPlugin(), MutantPlugin())


class _OnToys(Contract):
    plugin = "toy"

    def registry(self) -> Registry:
        return REGISTRY


class ToyDatasetContract(_OnToys, DatasetContract):
    settings: ClassVar[dict[str, Any]] = {"size": 6, "image_size": 8}


class ToyEncoderContract(_OnToys, EncoderContract):
    """Latent space: average pooling by 2."""

    settings: ClassVar[dict[str, Any]] = {"downscale": 2}
    image_size = 8


class ToyPixelEncoderContract(_OnToys, EncoderContract):
    """Pixel space: the identity, so the round trip is exact."""

    image_size = 8
    exact = True


class ToySamplingEncoderContract(_OnToys, EncoderContract):
    """Latent space with ``sample_posterior = True``: each latent a draw from its generator."""

    settings: ClassVar[dict[str, Any]] = {"downscale": 2, "sample_posterior": True}
    image_size = 8


class ToyTextEmbedderContract(_OnToys, TextEmbedderContract):
    pads_to_longest = True


class ToyJointTextEmbedderContract(_OnToys, TextEmbedderContract):
    """``joint_training = True``: one weight the denoiser stage trains."""

    settings: ClassVar[dict[str, Any]] = {"joint_training": True}
    pads_to_longest = True


class ToyConditionerContract(_OnToys, ConditionerContract):
    pass


class ToyConditionerWithImageContract(_OnToys, ConditionerContract):
    """A mask-to-image run: the two-class mask is appended to ``concat``."""

    image_context_channels = 2

    def context(self) -> Any:
        return BuildContext(
            run=RunSettings(image_size=self.latent_size, task="mask-to-image"),
            task=MaskToImage(),
            text_embedder=FakeTextEmbedder(self.text_dim),  # type: ignore[arg-type]
            dataset=SimpleNamespace(num_classes=2, image_size=self.latent_size),  # type: ignore[arg-type]
        )


class ToyDenoiserContract(_OnToys, DenoiserContract):
    """Every kind of conditioning at once: concat, a masked context and a vector."""

    spec = DenoiserSpec(in_channels=3, out_channels=3, sample_size=6, conditioning=ConditioningSpec(2, 8, 8))
    size_multiple = 1


class ToySchedulerContract(_OnToys, SchedulerContract):
    """DDIM with eta = 1: stochastic."""

    settings: ClassVar[dict[str, Any]] = {"num_train_timesteps": 100}
    stochastic = True


class ToyDeterministicSchedulerContract(_OnToys, SchedulerContract):
    """DDIM with eta = 0: deterministic, so the exact-model (oracle) tests apply."""

    settings: ClassVar[dict[str, Any]] = {"num_train_timesteps": 100, "eta": 0.0}


class ToyEvaluatorContract(_OnToys, EvaluatorContract):
    def pipeline(self) -> Any:
        return ColourPipeline()

    def prompts(self) -> list[str]:
        return ["a red square", "a blue square", "a big green square"]


#: Role -> the toy's contract configurations.
REFERENCE_CONTRACTS: dict[str, tuple[type[Contract], ...]] = {
    "data": (ToyDatasetContract,),
    "encoder": (ToyEncoderContract, ToyPixelEncoderContract, ToySamplingEncoderContract),
    "text_embedder": (ToyTextEmbedderContract, ToyJointTextEmbedderContract),
    "conditioner": (ToyConditionerContract, ToyConditionerWithImageContract),
    "denoiser": (ToyDenoiserContract,),
    "scheduler": (ToySchedulerContract, ToyDeterministicSchedulerContract),
    "evaluator": (ToyEvaluatorContract,),
}


def contracts_for(role: str, plugin: str) -> list[type[Contract]]:
    """The role's toy configurations, testing ``plugin`` (a mutant's name) instead of the toy."""
    return [type(cls.__name__, (cls,), {"plugin": plugin}) for cls in REFERENCE_CONTRACTS[role]]
