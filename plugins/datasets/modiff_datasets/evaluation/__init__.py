"""The shapes world's prompt-accuracy evaluator and its rule-based checker (numpy only)."""

from .blobs import Blob, label_components, measure
from .check import CheckResult, Detection, Thresholds, check_image, classify_shape, detect, nearest_colour, score
from .prompt_accuracy import PromptAccuracy, cases_from_prompts, item_outcomes, summarise, to_rgb_array

__all__ = [
    "Blob",
    "CheckResult",
    "Detection",
    "PromptAccuracy",
    "Thresholds",
    "cases_from_prompts",
    "check_image",
    "classify_shape",
    "detect",
    "item_outcomes",
    "label_components",
    "measure",
    "nearest_colour",
    "score",
    "summarise",
    "to_rgb_array",
]
