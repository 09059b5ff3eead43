"""Pictures of what a pipeline does: labelled grids, denoising trajectories,
class maps in colour. Results are pictures people look at, not only numbers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from .errors import ModiffError
from .images import labelled_grid, save_gif, save_png, to_pil

if TYPE_CHECKING:
    from .pipeline import Pipeline
    from .protocols import Example

#: One display colour per class (background black), cycling for more classes.
MASK_COLOURS = torch.tensor(
    [[0, 0, 0], [230, 230, 230], [120, 120, 255], [255, 160, 60], [80, 220, 120], [220, 80, 200]]
)


def colour_masks(masks: torch.Tensor) -> torch.Tensor:
    """Class maps ``[B, H, W]`` as images in [-1, 1] (one colour per class) for display."""
    colours = MASK_COLOURS[masks.long() % len(MASK_COLOURS)].float()
    return colours.permute(0, 3, 1, 2) / 127.5 - 1


def save_labelled(images: Sequence[Image.Image], labels: Sequence[str], path: Path, *, cols: int | None = None) -> Path:
    save_png(labelled_grid(images, labels, cols=cols), path)
    return path


def write_grid(
    pipeline: Pipeline, prompts: Sequence[str], path: Path, *, n: int = 1, cols: int | None = None, **kwargs: Any
) -> Path:
    """Generate ``n`` images per prompt and save them as one labelled grid."""
    expanded = [p for p in prompts for _ in range(n)]
    images = pipeline.generate(expanded, **kwargs)
    return save_labelled(images, expanded, path, cols=cols or (n if n > 1 else None))


def dataset_examples(pipeline: Pipeline, task: str, count: int = 4) -> list[Example]:
    """The first examples of the run's dataset, for grids of tasks that start from data."""
    dataset = pipeline.components.dataset
    if dataset is None:
        raise ModiffError(f"sample grids for task {task!r} need a dataset")
    return [dataset[i] for i in range(min(count, len(dataset)))]


def write_trajectory(
    pipeline: Pipeline, prompts: Sequence[str], stem: Path, *, frames: int = 10, **kwargs: Any
) -> list[Path]:
    """The denoising shown step by step: a strip (rows = prompts, columns =
    steps, each the predicted clean image) and an animated GIF of the grid."""
    final, trajectory = pipeline.trajectory(list(prompts), **kwargs)
    total = len(trajectory.predictions)
    if total == 0:
        raise ModiffError("the sampler reported no steps; cannot draw a trajectory")
    shown = min(frames, total)
    picks = sorted({round(i * (total - 1) / max(1, shown - 1)) for i in range(shown)})
    cells, labels = [], []
    for row in range(len(prompts)):
        for k in picks:
            cells.append(to_pil(trajectory.predictions[k][row : row + 1])[0])
            t = trajectory.timesteps[k]
            labels.append(f"{prompts[row][:28]} | t={t:.0f}" if k == picks[0] else f"t={t:.0f}")
        cells.append(final[row])
        labels.append("final")
    strip = stem.with_name(stem.name + "-trajectory.png")
    save_png(labelled_grid(cells, labels, cols=len(picks) + 1, cell=96), strip)
    gif_frames = [
        labelled_grid(to_pil(p), [f"t={t:.0f}"] * len(prompts), cell=96)
        for p, t in zip(trajectory.predictions, trajectory.timesteps)
    ]
    gif_frames.append(labelled_grid(final, ["final"] * len(prompts), cell=96))
    gif = stem.with_name(stem.name + "-trajectory.gif")
    save_gif(gif_frames, gif, cell=gif_frames[0].width)
    return [strip, gif]
