"""Text-to-image: prompts in, images out, and what a prompt run can also do
with an image (start from it, or repaint a region of it)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ModiffError
from ..parameters import DEFAULT_STRENGTH
from .base import Task
from .generation import Generated, GenerationRequest, Input
from .inpainting import METHODS, inpaint_request

if TYPE_CHECKING:
    from ..pipeline import Pipeline


class TextToImage(Task):
    """Prompts in, images out: the denoising loss with no image context.

    Given an image it starts from it (image-to-image); given an image and a
    region it repaints the region (training-free inpainting).
    """

    name = "text-to-image"
    description = "images from prompts"
    inputs = (
        Input("image", "image", "image to start from (image-to-image), or to inpaint with --mask"),
        Input(
            "strength",
            "number",
            f"image-to-image: how far from the image to go, 0 (keep it) to 1 (ignore it); default {DEFAULT_STRENGTH}",
        ),
        Input("mask", "mask", "with --image: the region to repaint (non-zero pixels of a grey PNG)"),
        Input("inpaint", "choice", "inpainting method", default="auto", choices=METHODS),
    )

    def generate(self, pipeline: Pipeline, request: GenerationRequest) -> Generated:
        from dataclasses import replace

        image, strength = request.inputs.get("image"), request.inputs.get("strength")
        if strength is not None and image is None:
            raise ModiffError("--strength needs --image: the image to start from")
        if request.inputs.get("mask") is not None:
            if image is None:
                raise ModiffError(
                    "--mask on a text-to-image run is the region to repaint and needs --image; "
                    'a class map to generate from needs a run trained with task = "mask-to-image"'
                )
            return inpaint_request(pipeline, request)
        if image is None:
            return super().generate(pipeline, request)
        sampling = self._sampling(request)
        sampling = replace(sampling, strength=pipeline.sampling(strength=strength, image_to_image=True).strength)
        init = image[None].expand(len(request.prompts), -1, -1, -1)
        images = pipeline.generate_tensor(
            list(request.prompts), seeds=list(request.seeds), init_images=init, **sampling.options()
        )
        return Generated({"images": images}, sampling)
