"""Settings models of the datasets and the evaluator (pydantic only, no torch).

Validators reuse the shapes world's own checks, so a typo in ``holdout`` or
an image size the world cannot draw is reported when the settings are read,
naming the value and what is allowed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

import modiff

from .shapes.world import MAX_JITTER, OVERLAP_JITTER, check_image_size, validate_holdout


class ShapesSettings(modiff.ComponentSettings):
    """``[data] plugin = "shapes"``: the procedural shapes world."""

    seed: int = Field(0, ge=0, description="Seed; example i is a pure function of (seed, i).")
    size: int = Field(20_000, ge=1, description="Examples per epoch.")
    image_size: int = Field(32, description="Canvas side in pixels (32, 64, 128; 24 or >= 26 work).")
    max_objects: int = Field(1, ge=1, le=9, description="Most objects per image, each in its own cell.")
    object_weights: list[float] | None = Field(
        None, description="Relative weights of 1..max_objects objects; default equal."
    )
    holdout: list[str] = Field(
        default_factory=list, description='Colour–shape pairs never rendered, e.g. ["yellow triangle"].'
    )
    unsized: Literal["any", "large", "said"] = Field(
        "any",
        description="What a shape a caption leaves unsized (half the templates say no size) may be: \"any\" size; "
        "large, because small shapes always have \"small\" said (\"said\": the same scenes, other captions); "
        "large, because such captions draw large shapes (\"large\": the same captions, other scenes). The "
        "world reads a prompt without a size word as large.",
    )
    jitter: float = Field(
        MAX_JITTER,
        ge=0.0,
        le=OVERLAP_JITTER,
        description="How far a shape's centre may lie from its cell's centre, as a fraction of a cell (whole "
        "pixels within that distance, drawn uniformly); 0 draws every shape at the position closest to its "
        "cell's centre. Without overlap only: overlapping shapes take any place in their cell.",
    )
    unplaced: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of captions that name no place for their objects (\"a red circle\"), decided per "
        "example, so that a prompt without a place draws what it names in any cell; the scenes are the same at "
        "any share. 0: every caption names each object's place.",
    )
    corpus_size: int | None = Field(
        None,
        ge=1,
        description="Captions yielded by captions() for text embedders; default all `size` of them.",
    )
    overlap: bool = Field(
        False,
        description="Let shapes overlap: each centre anywhere in its cell, later shapes drawn over earlier ones "
        "(the mask shows the visible class). For segmentation; the prompt-accuracy checker cannot read touching "
        "shapes.",
    )
    noise: float = Field(
        0.0,
        ge=0.0,
        le=2.0,
        description="Standard deviation of Gaussian noise added to every image, on the [-1, 1] pixel scale "
        "(0.5 is about 64 grey levels), drawn from (seed, index) and clipped to [-1, 1]; masks and captions are "
        "unchanged. 0: clean images.",
    )

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        return check_image_size(v)

    @field_validator("holdout")
    @classmethod
    def _holdout(cls, v: list[str]) -> list[str]:
        return list(validate_holdout(v))

    @model_validator(mode="after")
    def _jitter(self) -> ShapesSettings:
        if self.overlap and "jitter" in self.model_fields_set:
            raise ValueError(
                f"jitter = {self.jitter} has no effect with overlap = true (overlapping shapes take any place in "
                "their cell); remove jitter or set overlap = false"
            )
        return self

    @model_validator(mode="after")
    def _weights(self) -> ShapesSettings:
        w = self.object_weights
        if w is not None:
            if len(w) != self.max_objects:
                raise ValueError(
                    f"object_weights has {len(w)} numbers but max_objects is {self.max_objects}; "
                    f"give one weight for each count 1..{self.max_objects}"
                )
            if any(x < 0 for x in w) or sum(w) <= 0:
                raise ValueError(f"object_weights must be non-negative with a positive sum, got {w}")
        return self


class ImageFolderSettings(modiff.ComponentSettings):
    """``[data] plugin = "image-folder"``: a folder of a user's captioned images."""

    root: str = Field(..., description="Folder holding the images (and metadata.jsonl, if used).")
    image_size: int = Field(64, ge=8, description="Images are resized (shorter side) and centre-cropped to this.")
    caption_source: Literal["auto", "metadata", "txt"] = Field(
        "auto",
        description="Where captions come from: metadata.jsonl, a .txt beside each image, or auto "
        "(metadata.jsonl when it exists, else .txt files).",
    )
    caption_column: str = Field("text", description="The metadata.jsonl key holding the caption.")
    masks: str | None = Field(
        None, description="Folder of PNG class-index masks with the images' file names (relative to root)."
    )
    num_classes: int | None = Field(
        None, ge=2, description="Mask classes including background; default: read from the masks."
    )


class PromptAccuracySettings(modiff.ComponentSettings):
    """``[evaluator] plugin = "prompt-accuracy"``: the shapes world's exact checker."""

    num_prompts: int = Field(300, ge=1, description="Prompts generated when none are given.")
    seed: int = Field(0, ge=0, description="Seed of the prompt list and of generation.")
    two_object_fraction: float = Field(0.5, ge=0.0, le=1.0, description="Share of two-object prompts.")
    holdout: list[str] | None = Field(
        None, description="Held-out pairs; default: the shapes dataset's `holdout`, else none."
    )
    holdout_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of prompts built around a held-out pair (at least one each)."
    )
    unplaced_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Share of prompts that name no place (\"a red circle\": any cell is right), scored as "
        "unplaced_accuracy; drawn per prompt, the other prompts are the same at any share.",
    )
    steps: int | None = Field(None, ge=1, description="Sampler steps; default: the pipeline's.")
    guidance: float | None = Field(None, description="Guidance scale; default: the pipeline's.")
    batch_size: int | None = Field(None, ge=1, description="Generation batch size; default: the pipeline's.")
    judge: Literal["rules", "learned"] = Field(
        "learned",
        description="Who reads each image: the shape classifier trained on the known-answer set (it errs less: "
        "docs/datasets.md, 'How far it can be trusted'), or the fixed rules whose thresholds follow.",
    )
    threshold: int = Field(
        100, ge=0, le=254, description="A pixel is foreground when its largest channel exceeds this."
    )
    min_area_fraction: float = Field(
        0.15, ge=0.0, le=1.0, description="Blobs smaller than this × (small side)² pixels are noise."
    )
    triangle_below: float = Field(0.65, gt=0.0, lt=1.0, description="Fill ratio below this: triangle.")
    square_from: float = Field(0.9, gt=0.0, le=1.0, description="Fill ratio from this up: square; between: circle.")
    triangle_offset: float = Field(
        0.05, ge=0.0, description="Below square_from, a centroid this far (× height) below the box middle: triangle."
    )

    @field_validator("holdout")
    @classmethod
    def _holdout(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else list(validate_holdout(v))

    @model_validator(mode="after")
    def _thresholds(self) -> PromptAccuracySettings:
        if not self.triangle_below < self.square_from:
            raise ValueError(
                f"triangle_below ({self.triangle_below}) must be less than square_from ({self.square_from})"
            )
        return self


class IoUSettings(modiff.ComponentSettings):
    """Segmentation evaluator: IoU per class and mean on held-out images."""

    num_images: int = Field(256, ge=1, description="Held-out images to segment.")
    seed_offset: int = Field(1000, ge=1, description="Shapes world: held-out images come from seed + this.")
    batch_size: int = Field(64, ge=1)
