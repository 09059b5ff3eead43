"""Contract tests, one class per protocol.

Subclass one in a test module whose class name starts with ``Test``, set
``plugin`` (the registered name) and ``settings`` (a small configuration), and
pytest runs every inherited test against your component. Override
``context()`` to give the factory what it needs (a denoiser spec, an encoder),
or ``registry()`` to test a plugin object that is not installed.
"""

from .base import Contract
from .conditioner import ConditionerContract
from .dataset import DatasetContract
from .denoiser import DenoiserContract
from .encoder import EncoderContract
from .evaluator import EvaluatorContract
from .scheduler import SchedulerContract
from .text_embedder import TextEmbedderContract

__all__ = [
    "ConditionerContract",
    "Contract",
    "DatasetContract",
    "DenoiserContract",
    "EncoderContract",
    "EvaluatorContract",
    "SchedulerContract",
    "TextEmbedderContract",
]
