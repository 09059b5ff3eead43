"""``modiff generate``: what a trained run's task makes, from the command line.

The options are the ones every generation has (prompts, seeds, sampling)
plus the inputs the run's task declares (:class:`modiff.tasks.Input`: for
text-to-image ``--image``, ``--strength``, ``--mask``, ``--inpaint``; a
plugin's task brings its own), so the run is read before its task's options
are. Each output kind the task declares (:class:`modiff.tasks.Output`) is
written by one writer: every image its own PNG, named by prompt index and
seed and carrying the parameters it was sampled with (the ``parameters``
text chunk of the Stable Diffusion web UIs, see :mod:`modiff.parameters`),
every class map a grey PNG, and one labelled grid of them all;
``--from IMAGE.png`` makes an image again from its chunk.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ModiffError

if TYPE_CHECKING:
    from ..pipeline import Pipeline
    from ..tasks import Generated, GenerationRequest, Task

from . import DEVICE_HELP


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        add_help=False,
        usage="modiff generate [RUN] [PROMPT ...] [options] [options of the run's task]",
        help="what a trained run's task makes (images for prompts, ...): one PNG each and a labelled grid",
        description="Generate from a trained run. Image k (prompts in order, --n each) is seeded with "
        "SEED + k and written as OUT/pPP-seedS.png with its parameters; OUT/grid.png shows them all.",
        epilog="RUN is the run directory (with --from, by default the one the PNG names); PROMPT the prompts. "
        "The run's task adds options of its own (text-to-image: --image, --strength, --mask, --inpaint; "
        "mask-to-image: --mask; segmentation: --image): `modiff generate RUN --help` lists them.",
    )
    # RUN and PROMPT are read with the task's options, once RUN's task is known (modiff.cli hands them over):
    # read here, an option of the task would lend its value to RUN.
    p.add_argument("-h", "--help", action="store_true", help="show this help (with RUN: its task's options too)")
    p.add_argument("--n", type=int, default=1, help="images per prompt")
    p.add_argument("--seed", type=int, default=None, help="seed of the first image; image k gets SEED + k (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: [sample] steps)")
    p.add_argument("--scheduler", default=None, metavar="NAME", help="another sampler of the same noise schedule")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt: what guidance steers away from")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the images and grid.png, or a .png for the grid with the images beside it "
                   "(default: a new numbered folder RUN/samples/generated/NNNN)")
    p.add_argument("--overwrite", action="store_true", help="let --out replace files that exist already")
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="IMAGE.png",
                   help="make an image again from the parameters a generated PNG carries")
    p.add_argument("--trajectory", action="store_true", help="also write the denoising step by step (PNG strip, GIF)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=run, takes_task_options=True, command_help=p.format_help)


def run(args: argparse.Namespace) -> int:
    from ..environment import warn_if_changed
    from ..pipeline import Pipeline
    from ..progress import quiet

    run_path, extra = _run_argument(list(getattr(args, "task_arguments", [])))
    if args.help:
        return _help(args, run_path)
    request = _request(args, run_path)
    if request["n"] < 1:
        raise ModiffError(f"--n must be at least 1, not {request['n']}")
    pipeline = Pipeline.load(request["run"], device=args.device)
    warn_if_changed(pipeline.run, "generating from")  # type: ignore[arg-type]
    task = pipeline.task
    values, prompts = _task_options(task, extra)
    request["prompts"] = prompts or request["prompts"]  # prompts given win over --from's
    recorded, _ = _task_options(task, request["from_options"])  # --from's task options; a flag given wins
    from_png = {k: v for k, v in recorded.items() if v is not None}
    values = {**from_png, **{k: v for k, v in values.items() if v is not None}}
    if request["init_image_hash"] and values.get("image") == from_png.get("image"):
        _check_same(from_png["image"], request["init_image_hash"], "its init image")
    sampler = request["sampler"]
    if task.uses_scheduler and sampler and sampler != pipeline.sampler_name:
        pipeline = pipeline.with_sampler(sampler)
    sampling = {k: request[k] for k in ("steps", "guidance", "negative")}
    sampling.update(scheduler=sampler if not task.uses_scheduler else None, trajectory=args.trajectory or None)
    with quiet(args.quiet):
        generated, _, grid = generate_files(
            pipeline, values, prompts=request["prompts"], n=request["n"], seed=request["seed"], sampling=sampling,
            out=args.out, overwrite=args.overwrite,
        )
    if args.trajectory:
        _trajectory(pipeline, task, request, generated, grid)
    return 0


def generate_files(
    pipeline: Pipeline,
    values: dict[str, Any],
    *,
    prompts: Sequence[str] = (),
    n: int = 1,
    seed: int = 0,
    sampling: dict[str, Any] | None = None,
    out: Path | None = None,
    grid: bool = True,
    overwrite: bool = False,
) -> tuple[Generated, GenerationRequest, Path]:
    """One generation of ``pipeline``'s task, written where :func:`_place`
    says (and the grid's path): ``values`` are its inputs as given (file
    paths, numbers, text), ``sampling`` the sampling options as given
    (``steps``, ``guidance``, ``negative``, and any other option a task that
    does not sample refuses; ``None``: not given)."""
    from ..files import check_output_path
    from ..tasks.generation import request as resolve

    task = pipeline.task
    sampling = {k: v for k, v in (sampling or {}).items() if v is not None}
    if not task.uses_scheduler and sampling:
        flags = ", ".join(f"--{k}" for k in sampling)
        raise ModiffError(f"this run's task ({task.name!r}) does not sample: {flags} do not apply")
    if out is not None:  # before the generation whose files it would refuse
        check_output_path(*_outputs(out)[:2], "--out")
    given = {k: v for k, v in values.items() if v is not None}
    inputs, files = _read_files(pipeline, task, given)
    request = resolve(
        pipeline, prompts, n=n, seed=seed, steps=sampling.get("steps"), guidance=sampling.get("guidance"),
        negative_prompt=sampling.get("negative"), files=files, given=given, **inputs,
    )
    indices = [i for i in range(len(request.prompts) // n) for _ in range(n)]
    names = _names(task, request, indices)
    folder, grid_path, prefix = _place(pipeline, task, names, out, grid=grid, overwrite=overwrite)
    try:
        generated = task.generate(pipeline, request)
        _write(pipeline, task, request, generated, indices, folder, grid_path if grid else None, prefix)
    finally:
        if out is None and not any(folder.iterdir()):
            folder.rmdir()  # a numbered folder a failed generation left empty
    return generated, request, grid_path


# -- the command line: common options, then the run's task's ----------------


def _run_argument(arguments: list[str]) -> tuple[str | None, list[str]]:
    """RUN (the first word that is neither an option nor an option's value) and
    the rest. Every option of a task takes one value (:class:`modiff.tasks.Input`),
    so the run is found before its task's options are known."""
    skip = False
    for i, word in enumerate(arguments):
        if skip:
            skip = False
        elif word.startswith("-") and len(word) > 1:
            skip = "=" not in word
        else:
            return word, arguments[:i] + arguments[i + 1 :]
    return None, arguments


def _help(args: argparse.Namespace, run: str | None) -> int:
    print(args.command_help())
    if run is not None:
        from ..pipeline import Pipeline

        task = Pipeline.load(run, device="cpu").task
        print(_task_parser(task).format_help())
    return 0


class _TaskOptions(argparse.ArgumentParser):
    """The options of one task; a mistake is a :class:`ModiffError`, not an exit."""

    def error(self, message: str) -> Any:  # type: ignore[override]
        raise ModiffError(f"{self.prog}: {message}")


def _task_parser(task: Task) -> _TaskOptions:
    p = _TaskOptions(prog=f"modiff generate (task {task.name!r})", add_help=False, allow_abbrev=False,
                     usage=argparse.SUPPRESS)
    group = p.add_argument_group(f"options of the run's task, {task.name!r} ({task.description})")
    for item in task.inputs:
        kwargs: dict[str, Any] = {"dest": item.name, "default": None, "help": item.help}
        if item.required:
            kwargs["help"] += " (required)"
        if item.is_file:
            kwargs.update(type=Path, metavar=f"{item.kind.upper()}.png")
        elif item.kind == "number":
            kwargs.update(type=float)
        elif item.kind == "choice":
            kwargs.update(choices=item.choices)
        group.add_argument(item.flag, **kwargs)
    p.add_argument("prompts", nargs="*", help=argparse.SUPPRESS)
    return p


def _task_options(task: Task, extra: list[str]) -> tuple[dict[str, Any], list[str]]:
    """The task's options given in ``extra`` (``None`` where not given), and
    the prompts that followed them."""
    parsed, unknown = _task_parser(task).parse_known_intermixed_args(extra)
    if unknown:
        flags = ", ".join(i.flag for i in task.inputs) or "none"
        raise ModiffError(f"{unknown[0]} is not an option of `modiff generate` or of this run's task "
                          f"({task.name!r}, whose options are: {flags})")
    values = vars(parsed)
    prompts = values.pop("prompts")
    return values, prompts


def _read_files(pipeline: Pipeline, task: Task, given: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Path]]:
    """The task's inputs with its file inputs read at the run's image size (an
    image ``[3, H, W]`` in [-1, 1], a mask ``[H, W]`` of integers), and the path
    each was read from."""
    import numpy as np
    import torch

    from ..images import from_pil

    inputs, files = dict(given), {}
    for item in task.inputs:
        path = given.get(item.name)
        if path is None or not item.is_file:
            continue
        files[item.name] = Path(path)
        image = _read(Path(path), "RGB" if item.kind == "image" else "L", pipeline.image_size)
        inputs[item.name] = (
            from_pil(image) if item.kind == "image" else torch.from_numpy(np.asarray(image, dtype=np.int64).copy())
        )
    return inputs, files


def _request(args: argparse.Namespace, run: str | None) -> dict[str, Any]:
    """The common part of what to generate: the command line, filled in from
    ``--from``'s PNG; what the PNG says of the task's inputs (an init image and
    strength, ``Input NAME`` pairs) comes back as task options, ``from_options``."""
    from .. import parameters

    request: dict[str, Any] = {
        "run": run, "prompts": [], "n": args.n, "seed": args.seed, "steps": args.steps,
        "guidance": args.guidance, "negative": args.negative, "sampler": args.scheduler, "from_options": [],
        "init_image_hash": None,
    }
    if args.source is not None:
        made = parameters.read(args.source)
        given = {k: v for k, v in request.items() if v not in (None, [], {})}
        request.update(
            run=made.run, prompts=[made.prompt], seed=made.seed, steps=made.steps, guidance=made.guidance,
            negative=made.negative_prompt or None, sampler=made.sampler,
        )
        request.update({k: v for k, v in given.items() if k != "n"})
        options = [] if made.init_image is None else ["--image", made.init_image]
        options += [] if made.strength is None else ["--strength", str(made.strength)]
        request["from_options"] = options + [item for name, value in made.inputs for item in (f"--{name}", value)]
        request["init_image_hash"] = made.init_image_hash
        from ..pipeline import weights_hash
        from ..runs import RunDir

        run_dir = RunDir(request["run"])
        if run_dir.latest() is not None and weights_hash(run_dir.checkpoint()) != made.model_hash:
            print(f"modiff: warning: the weights of {run_dir.path} changed since {args.source} was made "
                  "(its Model hash differs); the image may differ", file=sys.stderr)
    if request["run"] is None:
        raise ModiffError("give the run to generate from (RUN), or --from IMAGE.png")
    request["seed"] = 0 if request["seed"] is None else request["seed"]
    return request


def _check_same(path: Path, expected: str | None, what: str) -> None:
    from ..parameters import file_hash

    if not path.is_file():
        raise ModiffError(f"{path} ({what}) does not exist; give the image to start from with --image")
    if expected and file_hash(path) != expected:
        print(f"modiff: warning: {path} ({what}) changed since; the image may differ", file=sys.stderr)


def _read(path: Path, mode: str, size: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise ModiffError(f"cannot read {path}: {exc}") from None
    return image.convert(mode).resize((size, size), Image.NEAREST)


# -- writing: one writer per output kind ---------------------------------------


def _outputs(out: Path) -> tuple[Path, Path, str]:
    """(folder for the files, the grid's path, a prefix for the files' names) of ``--out``."""
    if out.suffix.lower() == ".png":
        return out.parent, out, f"{out.stem}-"
    return out, out / "grid.png", ""


def _place(
    pipeline: Pipeline, task: Task, names: Sequence[str], out: Path | None, *, grid: bool, overwrite: bool
) -> tuple[Path, Path, str]:
    """Where a generation's files go, the one rule for ``--out``: nothing a
    user made is written over. Without ``--out``, a new numbered folder
    ``RUN/samples/generated/NNNN`` (:func:`modiff.files.numbered_folder`);
    with it, a :class:`RunError` naming the first file that exists already
    and ``--overwrite``, unless given. Checked before anything is generated."""
    from ..errors import RunError
    from ..files import numbered_folder

    if out is None:
        assert pipeline.run is not None
        folder = numbered_folder(pipeline.run.path / "samples" / "generated")
        return folder, folder / "grid.png", ""
    folder, grid_path, prefix = _outputs(out)
    if not overwrite:
        planned = [folder / f"{prefix}{name}{output.suffix}.png" for output in task.outputs for name in names]
        existing = next((path for path in [*([grid_path] if grid else []), *planned] if path.exists()), None)
        if existing is not None:
            raise RunError(
                f"{existing} exists already: --out {out} would write over it; choose another --out, "
                "leave --out out (a new numbered folder under RUN/samples/generated), or pass --overwrite"
            )
    return folder, grid_path, prefix


def _names(task: Task, request: GenerationRequest, indices: Sequence[int]) -> list[str]:
    """Each item's file name: ``pPP-seedS`` (prompt index, seed) for a task that
    takes prompts, else the name of its first input file."""
    if task.takes_prompts:
        return [f"p{i:02d}-seed{s}" for i, s in zip(indices, request.seeds)]
    base = next((path.stem for path in request.files.values()), "sample")
    return [base if len(request.seeds) == 1 else f"{base}-{k}" for k in range(len(request.seeds))]


def _write(
    pipeline: Pipeline,
    task: Task,
    request: GenerationRequest,
    generated: Generated,
    indices: Sequence[int],
    folder: Path,
    grid_path: Path | None,
    prefix: str,
) -> None:
    from ..grids import colour_masks, save_labelled
    from ..images import to_pil

    names = [f"{prefix}{name}" for name in _names(task, request, indices)]
    shown = None
    for output in task.outputs:
        values = generated.outputs.get(output.kind)
        if values is None or len(values) != len(names):
            raise ModiffError(f"task {task.name!r} declares {output.kind!r} but its generation returned "
                              f"{'none' if values is None else len(values)} for {len(names)} items")
        paths = [folder / f"{name}{output.suffix}.png" for name in names]
        WRITERS[output.kind](pipeline, request, generated, values, paths)
        if shown is None:
            shown = to_pil(values) if output.kind == "images" else to_pil(colour_masks(values))
    if grid_path is not None and shown is not None:
        labels = [f"{p} (seed {s})" if task.takes_prompts else name
                  for p, s, name in zip(request.prompts, request.seeds, names)]
        n = len(request.prompts) // max(1, len(set(indices)))
        save_labelled(shown, labels, grid_path, cols=n if n > 1 else None)
        print(f"grid: {grid_path}")


def _write_images(
    pipeline: Pipeline, request: GenerationRequest, generated: Generated, images: Any, paths: list[Path]
) -> None:
    """One PNG per image, carrying the parameters it was sampled with."""
    from ..images import save_png, to_pil
    from ..parameters import GenerationParameters, file_hash, pnginfo

    sampling = generated.sampling
    common: dict[str, Any] = {}
    if sampling is not None and pipeline.run is not None:
        common = {
            "steps": sampling.steps, "guidance": sampling.guidance, "sampler": sampling.sampler,
            "negative_prompt": sampling.negative_prompt, "strength": sampling.strength,
            "width": pipeline.image_size, "height": pipeline.image_size,
            "run": str(pipeline.run.path.resolve()), "model_hash": pipeline.model_hash,
        }
        image_path = request.files.get("image")
        if sampling.strength is not None and image_path is not None:
            common.update(init_image=str(image_path.resolve()), init_image_hash=file_hash(image_path))
        in_own_keys = {"image", "strength"} if sampling.strength is not None else set()  # Init image, strength
        common["inputs"] = tuple(
            (name, str(Path(value).resolve()) if name in request.files else str(value))
            for name, value in request.given.items() if name not in in_own_keys
        )
    for prompt, seed, image, path in zip(request.prompts, request.seeds, to_pil(images), paths):
        info = pnginfo(GenerationParameters(prompt=prompt, seed=seed, **common)) if common else None
        save_png(image, path, pnginfo=info)
        print(f"seed {seed}: {path}" if common else f"wrote {path}")


def _write_masks(
    pipeline: Pipeline, request: GenerationRequest, generated: Generated, masks: Any, paths: list[Path]
) -> None:
    """One grey PNG per class map, a class index per pixel."""
    import numpy as np
    import torch
    from PIL import Image

    from ..images import save_png

    for mask, path in zip(masks, paths):
        save_png(Image.fromarray(mask.numpy().astype(np.uint8), "L"), path)
        print(f"wrote {path} (classes {sorted(int(c) for c in torch.unique(mask))})")


#: How each output kind (:data:`modiff.tasks.generation.OUTPUT_KINDS`) is written.
WRITERS = {"images": _write_images, "masks": _write_masks}


def _trajectory(pipeline: Pipeline, task: Task, request: dict[str, Any], generated: Generated,
                grid: Path) -> None:
    from ..grids import write_trajectory

    if not task.generates_from_prompts or generated.sampling is None:
        raise ModiffError(f"--trajectory shows images made from prompts alone; this run's task ({task.name!r}) "
                          "does not make them")
    sampling = generated.sampling
    for path in write_trajectory(pipeline, request["prompts"], grid.with_suffix(""), seed=request["seed"],
                                 steps=sampling.steps, guidance=sampling.guidance):
        print(f"wrote {path}")
