"""``modiff generate``: images for prompts from a trained run.

Every image is written as its own PNG, named by prompt index and seed and
carrying its generation parameters (the ``parameters`` text chunk of the
Stable Diffusion web UIs, see :mod:`modiff.parameters`), beside one labelled
grid of them all; ``--from IMAGE.png`` makes an image again from its chunk.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..errors import ModiffError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="images for prompts from a trained run: one PNG each (with its parameters) and a labelled grid",
        description="Generate images from a trained run. Image k (prompts in order, --n each) is seeded with "
        "SEED + k and written as OUT/pPP-seedS.png with its parameters; OUT/grid.png shows them all.",
    )
    p.add_argument("run", nargs="?", metavar="RUN", help="run directory (default with --from: the one it names)")
    p.add_argument("prompts", nargs="*", metavar="PROMPT")
    p.add_argument("--n", type=int, default=1, help="images per prompt")
    p.add_argument("--seed", type=int, default=None, help="seed of the first image; image k gets SEED + k (default 0)")
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: [sample] steps)")
    p.add_argument("--scheduler", default=None, metavar="NAME", help="another sampler of the same noise schedule")
    p.add_argument("--guidance", type=float, default=None, help="classifier-free guidance scale")
    p.add_argument("--negative", default=None, metavar="TEXT", help="negative prompt: what guidance steers away from")
    p.add_argument(
        "--image", type=Path, default=None, help="image to start from (image-to-image), or to inpaint with --mask"
    )
    p.add_argument("--strength", type=float, default=None,
                   help="image-to-image: how far from the image to go, 0 (keep it) to 1 (ignore it); default 0.8")
    p.add_argument(
        "--mask",
        type=Path,
        default=None,
        help="segmentation map PNG (class indices): mask-to-image, or with --image the region to repaint (non-zero)",
    )
    p.add_argument("--inpaint", choices=["auto", "trained", "training-free"], default="auto", help="inpainting method")
    p.add_argument("--out", type=Path, default=None,
                   help="folder for the images and grid.png, or a .png for the grid with the images beside it "
                   "(default RUN/samples/generated)")
    p.add_argument("--from", dest="source", type=Path, default=None, metavar="IMAGE.png",
                   help="make an image again from the parameters a generated PNG carries")
    p.add_argument("--trajectory", action="store_true", help="also write the denoising step by step (PNG strip, GIF)")
    p.add_argument("--device", default=None)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..pipeline import Pipeline

    request = _request(args)
    if request["n"] < 1:
        raise ModiffError(f"--n must be at least 1, not {request['n']}")
    if args.strength is not None and args.image is None:
        raise ModiffError("--strength needs --image: the image to start from")
    pipeline = Pipeline.load(request["run"], device=args.device)
    sampler = request["sampler"]
    if sampler and sampler != pipeline.sampler_name:
        pipeline = pipeline.with_sampler(sampler)
    if args.mask is not None:
        return _with_mask(pipeline, args, request)
    return _text_or_image_to_image(pipeline, args, request)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """What to generate: the command line, filled in from ``--from``'s PNG."""
    from .. import parameters

    request: dict[str, Any] = {
        "run": args.run, "prompts": list(args.prompts), "n": args.n, "seed": args.seed, "steps": args.steps,
        "guidance": args.guidance, "negative": args.negative, "sampler": args.scheduler, "image": args.image,
        "strength": args.strength,
    }
    if args.source is not None:
        made = parameters.read(args.source)
        given = {k: v for k, v in request.items() if v not in (None, [])}
        request.update(
            run=made.run, prompts=[made.prompt], seed=made.seed, steps=made.steps, guidance=made.guidance,
            negative=made.negative_prompt or None, sampler=made.sampler, strength=made.strength,
            image=Path(made.init_image) if made.init_image else None,
        )
        request.update({k: v for k, v in given.items() if k != "n"})
        if made.init_image and request["image"] == Path(made.init_image):
            _check_same(Path(made.init_image), made.init_image_hash, "its init image")
        from ..runs import RunDir

        settings = RunDir(request["run"]).settings
        if settings.is_file() and parameters.settings_hash(settings) != made.settings_hash:
            print(f"modiff: warning: {settings} changed since {args.source} was made; the image may differ",
                  file=sys.stderr)
    if request["run"] is None:
        raise ModiffError("give the run to generate from (RUN), or --from IMAGE.png")
    if not request["prompts"]:
        raise ModiffError("give at least one PROMPT (an empty one, \"\", is allowed)")
    request["seed"] = 0 if request["seed"] is None else request["seed"]
    return request


def _check_same(path: Path, expected: str | None, what: str) -> None:
    from ..parameters import file_hash

    if not path.is_file():
        raise ModiffError(f"{path} ({what}) does not exist; give the image to start from with --image")
    if expected and file_hash(path) != expected:
        print(f"modiff: warning: {path} ({what}) changed since; the image may differ", file=sys.stderr)


def _outputs(pipeline: Any, out: Path | None) -> tuple[Path, Path, str]:
    """(folder for the images, the grid's path, a prefix for the images' names)."""
    if out is None:
        folder = pipeline.run.path / "samples" / "generated"
        return folder, folder / "grid.png", ""
    if out.suffix.lower() == ".png":
        return out.parent, out, f"{out.stem}-"
    return out, out / "grid.png", ""


def _text_or_image_to_image(pipeline: Any, args: argparse.Namespace, request: dict[str, Any]) -> int:
    from ..grids import save_labelled, write_trajectory
    from ..images import save_png, to_pil
    from ..parameters import GenerationParameters, file_hash, pnginfo, settings_hash

    n, seed = request["n"], request["seed"]
    prompts = [p for p in request["prompts"] for _ in range(n)]
    indices = [i for i in range(len(request["prompts"])) for _ in range(n)]
    seeds = [seed + k for k in range(len(prompts))]
    options: dict[str, Any] = {"steps": request["steps"], "guidance": request["guidance"],
                               "negative_prompt": request["negative"]}
    init = None
    if request["image"] is not None:

        from ..images import from_pil

        init = from_pil(_read(request["image"], "RGB", pipeline.image_size))[None].expand(len(prompts), -1, -1, -1)
        options.update(init_images=init, strength=request["strength"])
    images = to_pil(pipeline.generate_tensor(prompts, seeds=seeds, **options))
    folder, grid, prefix = _outputs(pipeline, args.out)
    sample = pipeline.components.settings.sample
    common = {
        "steps": request["steps"] or sample.steps,
        "guidance": sample.guidance if request["guidance"] is None else request["guidance"],
        "sampler": pipeline.sampler_name,
        "width": pipeline.image_size,
        "height": pipeline.image_size,
        "run": str(pipeline.run.path.resolve()),
        "settings_hash": settings_hash(pipeline.run.settings),
        "negative_prompt": request["negative"] or "",
    }
    if init is not None:
        image_path = Path(request["image"]).resolve()
        common.update(strength=0.8 if request["strength"] is None else request["strength"],
                      init_image=str(image_path), init_image_hash=file_hash(image_path))
    for prompt, index, s, image in zip(prompts, indices, seeds, images):
        path = folder / f"{prefix}p{index:02d}-seed{s}.png"
        save_png(image, path, pnginfo=pnginfo(GenerationParameters(prompt=prompt, seed=s, **common)))
        print(f"seed {s}: {path}")
    save_labelled(images, [f"{p} (seed {s})" for p, s in zip(prompts, seeds)], grid, cols=n if n > 1 else None)
    print(f"grid: {grid}")
    if args.trajectory:
        for path in write_trajectory(pipeline, request["prompts"], grid.with_suffix(""), seed=seed,
                                     steps=request["steps"], guidance=request["guidance"]):
            print(f"wrote {path}")
    return 0


def _read(path: Path, mode: str, size: int):  # type: ignore[no-untyped-def]
    from PIL import Image

    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise ModiffError(f"cannot read {path}: {exc}") from None
    return image.convert(mode).resize((size, size), Image.NEAREST)


def _with_mask(pipeline: Any, args: argparse.Namespace, request: dict[str, Any]) -> int:
    """``--mask`` alone: mask-to-image; ``--image`` and ``--mask``: inpainting."""
    import numpy as np
    import torch

    from ..grids import colour_masks, save_labelled
    from ..images import from_pil, to_pil
    from ..tasks import inpaint, mask_to_image

    size = pipeline.image_size
    mask = torch.from_numpy(np.asarray(_read(args.mask, "L", size), dtype=np.int64).copy())
    prompts = [p for p in request["prompts"] for _ in range(request["n"])]
    kwargs = {"seed": request["seed"], "steps": request["steps"], "guidance": request["guidance"],
              "negative_prompt": request["negative"]}
    if args.image is None:
        masks = mask[None].expand(len(prompts), -1, -1)
        images = mask_to_image(pipeline, prompts, masks, **kwargs)
        cells = to_pil(colour_masks(mask[None])) + to_pil(images)
        labels = ["map"] + prompts
    else:
        image = from_pil(_read(args.image, "RGB", size))[None].expand(len(prompts), -1, -1, -1)
        paint = (mask > 0).float()[None, None].expand(len(prompts), -1, -1, -1)
        images = inpaint(pipeline, prompts, image, paint, method=args.inpaint, **kwargs)
        cells = to_pil(image[:1]) + to_pil(images)
        labels = ["original"] + prompts
    _, grid, _ = _outputs(pipeline, args.out)
    save_labelled(cells, labels, grid)
    print(f"wrote {grid}")
    return 0
