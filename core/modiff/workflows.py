"""What the commands do, as functions: train a run, write samples, evaluate.

The CLI is a thin layer over these, and so is anything else (an ablation
grid, a notebook) that wants the same behaviour.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from .assembly import build, build_component
from .distributed import World
from .errors import ModiffError, RunError
from .images import labelled_grid, save_gif, save_png, to_pil
from .pipeline import Pipeline, restore
from .plugins import registry as default_registry
from .runs import RunDir, atomic_write_json, atomic_write_text
from .settings import ResolvedComponent, ResolvedSettings, load
from .training import Trainer


def run_dir_for(resolved: ResolvedSettings) -> RunDir:
    return RunDir(Path(resolved.run.runs_dir) / resolved.run.name)


def prepare_run(resolved: ResolvedSettings, run: RunDir, *, resume: bool, overwrite: bool) -> ResolvedSettings:
    """Create ``run`` for ``resolved`` or check it is the same run when resuming.

    A run directory is never silently reused: training into an existing run
    needs ``--resume`` (same settings) or ``--overwrite``.
    """
    if run.exists():
        if overwrite:
            import shutil

            shutil.rmtree(run.path)
        elif not resume:
            raise RunError(
                f"run directory {run.path} already exists; continue it with --resume, "
                "start again with --overwrite, or choose another [run] name"
            )
        else:
            remove_stale_temporaries(run)
            saved = load([run.settings])
            differ = _differences(saved.to_dict(), resolved.to_dict())
            if differ:
                raise RunError(
                    f"--resume: the settings differ from the ones {run.path} was started with "
                    f"({', '.join(differ[:6])}); resume with the run's own settings: "
                    f"`modiff train {run.settings} --resume`"
                )
            return saved
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.settings, resolved.to_toml())
    return resolved


def remove_stale_temporaries(run: RunDir) -> None:
    """Delete temporary files a killed process left behind (they were never
    renamed into place, so nothing refers to them)."""
    for tmp in run.path.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)


def _differences(a: dict[str, Any], b: dict[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out.extend(_differences(va, vb, f"{prefix}{key}."))
        elif va != vb and not (prefix == "run." and key in {"device"}):
            out.append(f"{prefix}{key}")
    return out


def train_run(
    resolved: ResolvedSettings,
    run: RunDir,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    world: World | None = None,
) -> Pipeline:
    """Train every stage of ``run`` (resuming where it stopped) and return the pipeline."""
    world = world or World.from_env()
    if resolved.train.batch_size % world.size:
        raise ModiffError(
            f"[train] batch_size = {resolved.train.batch_size} is not divisible by the {world.size} processes; "
            "the global batch is split evenly across them"
        )
    if world.is_main:
        resolved = prepare_run(resolved, run, resume=resume, overwrite=overwrite)
    world.barrier()
    if not world.is_main:
        resolved = load([run.settings])
    device = None
    if world.size > 1 and torch.cuda.is_available():
        device = torch.device("cuda", world.local_rank)
    if resolved.run.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    torch.manual_seed(resolved.run.seed)
    components = build(resolved, device=device)
    if resume:
        restore(components, run)
    pipeline = Pipeline(components, run)
    prompts = sample_prompts(pipeline)

    def on_sample(tag: str, step: int) -> None:
        write_task_grid(pipeline, prompts, run.samples / f"{tag}.png")

    def on_evaluate() -> dict[str, Any]:
        return evaluate_run(pipeline)

    generative = resolved.run.task != "segmentation"
    Trainer(
        components, run, world=world, progress=progress, on_sample=on_sample if generative else None,
        on_evaluate=on_evaluate if components.evaluator is not None else None,
    ).train()
    return pipeline


def sample_prompts(pipeline: Pipeline, n: int = 8) -> list[str]:
    """The ``[sample] prompts``, else the captions of the first dataset items."""
    prompts = list(pipeline.components.settings.sample.prompts)
    ds = pipeline.components.dataset
    if not prompts and ds is not None:
        prompts = [ds[i].caption for i in range(min(n, len(ds)))]
    return prompts or [""]


def write_grid(
    pipeline: Pipeline, prompts: Sequence[str], path: Path, *, n: int = 1, cols: int | None = None, **kwargs: Any
) -> Path:
    """Generate ``n`` images per prompt and save them as one labelled grid."""
    expanded = [p for p in prompts for _ in range(n)]
    images = pipeline.generate(expanded, **kwargs)
    save_png(labelled_grid(images, expanded, cols=cols or (n if n > 1 else None)), path)
    return path


MASK_COLOURS = torch.tensor([[0, 0, 0], [230, 230, 230], [120, 120, 255], [255, 160, 60], [80, 220, 120], [220, 80, 200]])


def colour_masks(masks: torch.Tensor) -> torch.Tensor:
    """Class maps ``[B, H, W]`` as images in [-1, 1] (one colour per class) for display."""
    colours = MASK_COLOURS[masks.long() % len(MASK_COLOURS)].float()
    return colours.permute(0, 3, 1, 2) / 127.5 - 1


def write_task_grid(pipeline: Pipeline, prompts: Sequence[str], path: Path, **kwargs: Any) -> Path:
    """A sample grid that shows what the run's task does: prompts to images;
    for mask-to-image, dataset maps beside the images made from them; for
    inpainting, dataset images, the region to repaint, and the result."""
    task = pipeline.task
    if task == "text-to-image":
        return write_grid(pipeline, prompts, path, **kwargs)
    ds = pipeline.components.dataset
    if ds is None:
        raise ModiffError(f"sample grids for task {task!r} need a dataset")
    examples = [ds[i] for i in range(min(4, len(ds)))]
    captions = [e.caption for e in examples]
    if task == "mask-to-image":
        masks = torch.stack([e.mask for e in examples])  # type: ignore[misc]
        made = pipeline.mask_to_image(captions, masks, **kwargs)
        cells = [img for pair in zip(to_pil(colour_masks(masks)), to_pil(made)) for img in pair]
        labels = [lbl for c in captions for lbl in ("map", c)]
        save_png(labelled_grid(cells, labels, cols=4), path)
        return path
    if task == "inpainting":
        images = torch.stack([e.image for e in examples])
        size = images.shape[-1]
        paint = torch.zeros(len(images), 1, size, size)
        paint[:, :, size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = 1
        made = pipeline.inpaint(captions, images, paint, **kwargs)
        shown = images * (1 - paint) + paint * 0.3
        cells = [img for trio in zip(to_pil(images), to_pil(shown), to_pil(made)) for img in trio]
        labels = [lbl for c in captions for lbl in ("original", "region", c)]
        save_png(labelled_grid(cells, labels, cols=6), path)
        return path
    raise ModiffError(f"task {task!r} does not generate images")


def write_trajectory(pipeline: Pipeline, prompts: Sequence[str], stem: Path, *, frames: int = 10, **kwargs: Any) -> list[Path]:
    """The denoising shown step by step: a strip (rows = prompts, columns =
    steps, each the predicted clean image) and an animated GIF of the grid."""
    final, traj = pipeline.trajectory(list(prompts), **kwargs)
    total = len(traj.predictions)
    if total == 0:
        raise ModiffError("the sampler reported no steps; cannot draw a trajectory")
    shown = min(frames, total)
    picks = sorted({round(i * (total - 1) / max(1, shown - 1)) for i in range(shown)})
    cells, labels = [], []
    for row in range(len(prompts)):
        for k in picks:
            cells.append(to_pil(traj.predictions[k][row : row + 1])[0])
            labels.append(f"{prompts[row][:28]} | t={traj.timesteps[k]:.0f}" if k == picks[0] else f"t={traj.timesteps[k]:.0f}")
        cells.append(final[row])
        labels.append("final")
    strip = stem.with_name(stem.name + "-trajectory.png")
    save_png(labelled_grid(cells, labels, cols=len(picks) + 1, cell=96), strip)
    gif_frames = [labelled_grid(to_pil(p), [f"t={t:.0f}"] * len(prompts), cell=96) for p, t in zip(traj.predictions, traj.timesteps)]
    gif_frames.append(labelled_grid(final, ["final"] * len(prompts), cell=96))
    gif = stem.with_name(stem.name + "-trajectory.gif")
    save_gif(gif_frames, gif, cell=gif_frames[0].width)
    return [strip, gif]


def evaluate_run(
    pipeline: Pipeline,
    *,
    evaluator: str | None = None,
    prompts: Sequence[str] | None = None,
    settings: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the run's evaluator (or ``evaluator`` by name) and time it."""
    c = pipeline.components
    if evaluator is None and c.evaluator is None:
        names = ", ".join(default_registry().names("evaluator")) or "none installed"
        raise ModiffError(f"the run has no [evaluator]; choose one with --evaluator ({names})")
    ev = c.evaluator
    if evaluator is not None:
        reg = default_registry().lookup("evaluator", evaluator)
        ev = build_component(ResolvedComponent("evaluator", reg, reg.validate(settings or {})), c.context)
    t0 = time.perf_counter()
    result = dict(ev.evaluate(pipeline, prompts=list(prompts) if prompts else None))  # type: ignore[union-attr]
    result.setdefault("seconds", time.perf_counter() - t0)
    return result


def save_evaluation(run: RunDir, result: dict[str, Any], path: Path | None = None) -> Path:
    path = path or run.path / "evaluation.json"
    atomic_write_json(path, result)
    return path


def format_table(result: dict[str, Any]) -> str:
    """The flat numbers of an evaluation as an aligned two-column table."""
    rows = [(k, v) for k, v in result.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    width = max((len(k) for k, _ in rows), default=0)
    return "\n".join(f"{k:<{width}}  {v:.4g}" if isinstance(v, float) else f"{k:<{width}}  {v}" for k, v in rows)


def read_prompts(path: Path) -> list[str]:
    """Prompts from a text file (one per line) or a JSON list."""
    if not path.is_file():
        raise ModiffError(f"prompts file {path} does not exist")
    text = path.read_text()
    if path.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ModiffError(f"{path} is not valid JSON: {exc}") from None
        if not isinstance(data, list) or not all(isinstance(p, str) for p in data):
            raise ModiffError(f"{path} must hold a JSON list of strings")
        return data
    return [line.strip() for line in text.splitlines() if line.strip()]
