"""Generation parameters stored in a PNG, in the convention the Stable Diffusion
web UIs use, so that an image says how it was made and can be made again.

A PNG's ``parameters`` text chunk reads::

    a red circle in the top left
    Negative prompt: a blue square
    Steps: 25, Sampler: ddim, CFG scale: 3.0, Seed: 7, Size: 32x32, Model hash: 3f2a9c01de, Model: demo, Run: /me/demo

The prompt comes first (it may span lines), then an optional ``Negative
prompt:`` line, then one line of ``Key: value`` pairs (a value holding a comma
or a quote is written as a JSON string). The keys the web UIs use mean the
same here; modiff adds ``Run`` (the run folder), for image-to-image
``Init image`` and ``Init image hash``, and one ``Input NAME`` pair for each
other option of the run's task that was given (``Input mask: /me/map.png``,
``Input level: 0.5``), so that ``--from`` gives them again.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ModiffError

CHUNK = "parameters"
#: The key prefix of a task's input in the chunk (``Input NAME: value``).
INPUT_KEY = "Input "
#: How far image-to-image goes from its image unless told: 0 keeps it, 1 ignores it.
DEFAULT_STRENGTH = 0.8


@dataclass(frozen=True)
class Sampling:
    """How a generation samples, every default resolved.

    One object for what the sampler is given and what each image's
    ``parameters`` chunk records, so the two cannot drift apart
    (:meth:`modiff.pipeline.Pipeline.sampling` makes it).
    """

    steps: int
    guidance: float
    sampler: str
    negative_prompt: str = ""
    #: image-to-image only: how far from the image to go
    strength: float | None = None

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :meth:`modiff.pipeline.Pipeline.generate_tensor`."""
        options: dict[str, Any] = {"steps": self.steps, "guidance": self.guidance,
                                   "negative_prompt": self.negative_prompt}
        if self.strength is not None:
            options["strength"] = self.strength
        return options


@dataclass(frozen=True)
class GenerationParameters:
    """Everything that decides one generated image."""

    prompt: str
    seed: int
    steps: int
    guidance: float
    sampler: str
    width: int
    height: int
    run: str
    #: :func:`model_hash` of the weights the image was made with
    model_hash: str
    negative_prompt: str = ""
    strength: float | None = None
    init_image: str | None = None
    init_image_hash: str | None = None
    #: the task's other inputs as given on the command line, ``(name, value)``
    inputs: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The ``parameters`` chunk."""
        lines = [self.prompt]
        if self.negative_prompt:
            lines.append(f"Negative prompt: {self.negative_prompt}")
        pairs: list[tuple[str, Any]] = [
            ("Steps", self.steps),
            ("Sampler", self.sampler),
            ("CFG scale", self.guidance),
            ("Seed", self.seed),
            ("Size", f"{self.width}x{self.height}"),
            ("Model hash", self.model_hash),
            ("Model", Path(self.run).name),
            ("Run", self.run),
        ]
        if self.strength is not None:
            pairs.append(("Denoising strength", self.strength))
        if self.init_image is not None:
            pairs += [("Init image", self.init_image), ("Init image hash", self.init_image_hash or "")]
        pairs += [(f"{INPUT_KEY}{name}", value) for name, value in self.inputs]
        lines.append(", ".join(f"{key}: {_quoted(value)}" for key, value in pairs))
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str, source: str = "the parameters") -> GenerationParameters:
        """The inverse of :meth:`text`; a :class:`ModiffError` naming ``source`` and
        the missing key for text that is not modiff's."""
        *head, last = text.rstrip("\n").split("\n")
        pairs = _pairs(last)
        negative = ""
        for i, line in enumerate(head):
            if line.startswith("Negative prompt: "):
                negative = "\n".join([line[len("Negative prompt: ") :], *head[i + 1 :]])
                head = head[:i]
                break
        missing = [k for k in ("Steps", "Sampler", "CFG scale", "Seed", "Size", "Model hash", "Run") if k not in pairs]
        if missing:
            raise ModiffError(
                f"{source} holds no modiff generation parameters (missing {', '.join(missing)}); "
                "use a PNG written by `modiff generate`"
            )
        try:
            width, height = (int(v) for v in pairs["Size"].split("x"))
            strength = pairs.get("Denoising strength")
            return cls(
                prompt="\n".join(head),
                negative_prompt=negative,
                seed=int(pairs["Seed"]),
                steps=int(pairs["Steps"]),
                guidance=float(pairs["CFG scale"]),
                sampler=pairs["Sampler"],
                width=width,
                height=height,
                run=pairs["Run"],
                model_hash=pairs["Model hash"],
                strength=None if strength is None else float(strength),
                init_image=pairs.get("Init image"),
                init_image_hash=pairs.get("Init image hash") or None,
                inputs=tuple((k[len(INPUT_KEY) :], v) for k, v in pairs.items() if k.startswith(INPUT_KEY)),
            )
        except ValueError as exc:
            raise ModiffError(f"{source} has a malformed value ({exc})") from None


def _quoted(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if ("," in text or '"' in text or ":" in text and " " in text) else text


_PAIR = re.compile(r'\s*([^:,]+):\s*("(?:[^"\\]|\\.)*"|[^,]*)\s*(?:,|$)')


def _pairs(line: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for match in _PAIR.finditer(line):
        key, value = match.group(1).strip(), match.group(2).strip()
        if value.startswith('"'):
            value = json.loads(value)
        out[key] = value
    return out


def model_hash(weights: Sequence[Path]) -> str:
    """A short hash of the contents of a checkpoint's weights files (the PNG's
    ``Model hash``): two runs with the same settings but other weights differ.
    It combines the CRC-32 each file recorded of its tensor data when it was
    written (:func:`modiff.files.recorded_checksum`), so only the headers are
    read; a file written before checksums is hashed whole."""
    from .files import recorded_checksum  # files imports torch: reading a PNG's parameters needs none

    digest = hashlib.sha256()
    for path in sorted(weights, key=lambda p: p.name):
        checksum = recorded_checksum(path) or f"sha256:{hashlib.sha256(path.read_bytes()).hexdigest()}"
        digest.update(f"{path.name}={checksum}\n".encode())
    return digest.hexdigest()[:10]


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def read(path: Path) -> GenerationParameters:
    """The generation parameters of a PNG ``modiff generate`` wrote."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            text = image.info.get(CHUNK) or getattr(image, "text", {}).get(CHUNK)
    except (OSError, ValueError) as exc:
        raise ModiffError(f"cannot read {path}: {exc}") from None
    if not text:
        raise ModiffError(f"{path} has no '{CHUNK}' text chunk; use a PNG written by `modiff generate`")
    return GenerationParameters.parse(text, str(path))


def pnginfo(parameters: GenerationParameters) -> Any:
    """The PNG text chunk for ``parameters`` (pass as ``pnginfo=`` to ``Image.save``)."""
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text(CHUNK, parameters.text())
    return info
