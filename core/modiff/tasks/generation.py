"""What a generation takes and returns, as a task declares it.

A task lists the inputs of its own (beyond the prompts and the sampling
parameters every sampled generation has) as :class:`Input` fields and what it
returns as :class:`Output` kinds. ``modiff generate`` builds one command-line
option per input and writes each output kind with one writer, so a task a
plugin registers is usable from the command line with no core edit.

In Python, :func:`generate` is the same path without files::

    made = generate(pipe, ["a red square"], seed=3, mask=class_map)   # made.outputs["images"]

This module imports no torch, so that reading a task's options costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ModiffError
from ..parameters import Sampling

#: What an input may be: a file (an RGB image, or a class/region map read as
#: grey levels), a number, a text, or one of a few ``choices``.
INPUT_KINDS = ("image", "mask", "number", "text", "choice")
#: What a generation may return: images ``[B, 3, H, W]`` in [-1, 1], or class
#: maps ``[B, H, W]`` of integer class indices.
OUTPUT_KINDS = ("images", "masks")
#: What every generation takes already (``modiff generate``'s own options and
#: :func:`request`'s arguments): no input of a task may be called so.
RESERVED_NAMES = ("n", "seed", "steps", "scheduler", "guidance", "negative", "negative_prompt", "out", "from",
                  "trajectory", "device", "help", "files", "given", "prompts")


@dataclass(frozen=True)
class Input:
    """One input of a task's generation: ``--NAME`` on the command line.

    Attributes:
        name: the option's name (lower case, digits and dashes) and the key of
            :attr:`GenerationRequest.inputs`.
        kind: one of :data:`INPUT_KINDS`. An ``image`` arrives as ``[3, H, W]``
            in [-1, 1] at the run's image size, a ``mask`` as ``[H, W]`` integer
            grey levels at that size, a ``number`` as a float.
        help: one line for ``modiff generate RUN --help``.
        default: the value when the option is not given (``None``: absent).
        required: whether the generation cannot go without it.
        choices: the values a ``choice`` takes.
    """

    name: str
    kind: str
    help: str
    default: Any = None
    required: bool = False
    choices: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.name in RESERVED_NAMES:
            raise ModiffError(
                f"an input called {self.name!r} would clash with an option every generation has; "
                f"rename it (taken: {', '.join(RESERVED_NAMES)})"
            )
        if self.kind not in INPUT_KINDS:
            raise ModiffError(f"input {self.name!r} has kind {self.kind!r}; kinds: {', '.join(INPUT_KINDS)}")
        if self.kind == "choice" and not self.choices:
            raise ModiffError(f"input {self.name!r} is a choice with no choices")

    @property
    def flag(self) -> str:
        return f"--{self.name}"

    @property
    def is_file(self) -> bool:
        return self.kind in ("image", "mask")


@dataclass(frozen=True)
class Output:
    """One kind of result of a task's generation.

    Attributes:
        kind: one of :data:`OUTPUT_KINDS`; the key of the generation's result.
        suffix: appended to each file's name (``p00-seed0{suffix}.png``), so that
            two outputs of one item do not share a file.
        help: one line saying what the files show.
    """

    kind: str
    suffix: str = ""
    help: str = ""

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise ModiffError(f"output kind {self.kind!r} is unknown; kinds: {', '.join(OUTPUT_KINDS)}")


@dataclass(frozen=True)
class GenerationRequest:
    """One generation, every value resolved: what a task's ``generate`` receives.

    Attributes:
        prompts: one per item (the ``--n`` copies of a prompt included); empty
            strings for a task that takes no prompt.
        seeds: one per item.
        sampling: steps, guidance, sampler, negative prompt (``None`` for a
            task that does not sample). A task passes these to the pipeline and
            returns the :class:`Sampling` it used (with any value of its own,
            such as an image-to-image strength) in :attr:`Generated.sampling`,
            which is what each image's PNG records.
        inputs: the task's inputs by name, loaded (see :class:`Input`); an
            input not given and without a default is absent.
        files: the path each file input was read from.
        given: the inputs as given, before they were read (paths, numbers,
            text): what each image's PNG records, for ``--from``.
    """

    prompts: tuple[str, ...]
    seeds: tuple[int, ...]
    sampling: Sampling | None
    inputs: Mapping[str, Any] = field(default_factory=dict)
    files: Mapping[str, Path] = field(default_factory=dict)
    given: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Generated:
    """What a generation returned: its outputs by kind, one entry per item,
    and the sampling parameters it used (``None`` when it did not sample)."""

    outputs: Mapping[str, Any]
    sampling: Sampling | None = None


def request(
    pipeline: Any,
    prompts: Sequence[str] = (),
    *,
    n: int = 1,
    seed: int = 0,
    steps: int | None = None,
    guidance: float | None = None,
    negative_prompt: str | None = None,
    files: Mapping[str, Path] | None = None,
    given: Mapping[str, Any] | None = None,
    **inputs: Any,
) -> GenerationRequest:
    """The resolved request of one generation of ``pipeline``'s task: ``n``
    items per prompt, item ``k`` seeded with ``seed + k``, the sampling
    parameters resolved by :meth:`modiff.pipeline.Pipeline.sampling`, and the
    task's ``inputs`` (read: see :class:`Input`) checked against what it
    declares, defaults filled in. ``files`` and ``given`` say where file inputs
    came from and how they were given, for what a PNG records. A
    :class:`ModiffError` names what does not fit the task."""
    task = pipeline.task
    if n < 1:
        raise ModiffError(f"n = {n}: generate at least one image per prompt")
    if not task.takes_prompts:
        if prompts:
            raise ModiffError(
                f"this run's task ({task.name!r}) takes no prompt, but got {list(prompts)!r}; "
                + task.usage.format(run=pipeline.run.path if pipeline.run is not None else "RUN")
            )
        prompts = [""]
    elif not prompts:
        raise ModiffError('give at least one PROMPT (an empty one, "", is allowed)')
    declared = {item.name: item for item in task.inputs}
    unknown = sorted(set(inputs) - set(declared))
    if unknown:
        flags = ", ".join(item.flag for item in task.inputs) or "none"
        raise ModiffError(
            f"--{unknown[0]} is not an option of this run's task ({task.name!r}, whose options are: {flags})"
        )
    resolved: dict[str, Any] = {}
    for item in task.inputs:
        value = item.default if inputs.get(item.name) is None else inputs[item.name]
        if value is None and item.required:
            raise ModiffError(f"this run's task ({task.name!r}) needs {item.flag} ({item.help})")
        if value is not None:
            resolved[item.name] = _read_image(item, value, pipeline.image_size) if item.is_file else value
    expanded = tuple(p for p in prompts for _ in range(n))
    sampling = (
        pipeline.sampling(steps=steps, guidance=guidance, negative_prompt=negative_prompt)
        if task.uses_scheduler
        else None
    )
    return GenerationRequest(
        prompts=expanded,
        seeds=tuple(seed + k for k in range(len(expanded))),
        sampling=sampling,
        inputs=resolved,
        files=dict(files or {}),
        given=dict(given or {}),
    )


def _read_image(item: Input, value: Any, size: int) -> Any:
    """A file input given in Python: a PIL image read as the command line reads
    a file (see :class:`Input`), a tensor taken as it is."""
    from ..images import image_batch, mask_batch  # torch: this module reads a task's options without it

    if hasattr(value, "shape"):
        return value
    read = image_batch if item.kind == "image" else mask_batch
    return read(value, 1, size, item.flag)[0]


def generate(pipeline: Any, prompts: str | Sequence[str] = (), **options: Any) -> Generated:
    """What ``pipeline``'s task makes (its :attr:`Generated.outputs` by kind),
    with the options of :func:`request`: the path ``modiff generate`` takes,
    without files. ``prompts`` is one text or a list; file inputs (``image``,
    ``mask``) may be PIL images or tensors."""
    prompts = [prompts] if isinstance(prompts, str) else prompts
    return pipeline.task.generate(pipeline, request(pipeline, prompts, **options))
