"""Few-step timing (issue 40): time per image of a run drawn in a few steps with
the ``lcm`` sampler and no guidance, against a run (the same one, or the
teacher it was distilled from) at 10 UniPC steps with its guidance.

Each configuration generates the same prompts end to end (text embedding,
sampling, decoding) with ``Pipeline.generate_tensor``; after one warm-up call
each, the configurations take turns ``--repeats`` times in one process, so a
change of the machine's load hits them alike, and the median per image is
reported. The ratio is student / teacher; the issue's target for the distilled
student at 4 steps is at most 0.25.

The denoiser costs the same per call for a student and its teacher, so the
ratio is mostly the number of denoiser evaluations per image (steps, doubled
by guidance) plus what does not scale with them (text embedding, decoding,
the sampler's own arithmetic). Both are measured, not assumed: a forward
pre-hook on the denoiser counts the rows it evaluates per image.

    python benchmarks/bench_few_steps.py RUNS/student RUNS/teacher
    python benchmarks/bench_few_steps.py RUNS/demo --steps 1,2,4 --repeats 10 --json few-steps.json
    python benchmarks/bench_few_steps.py RUNS/student RUNS/teacher --device cuda --batch 8

Exit code 2 with one line for a usage mistake (a missing run, a bad flag value).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402

TARGET = 0.25
PROMPTS = ["a red circle", "a blue square", "a green triangle and a yellow circle", "a small white square"]


class UsageError(Exception):
    """A command-line mistake: one line, exit code 2."""


@dataclass
class Config:
    """One way of drawing images and what it cost per image."""

    name: str
    run: str
    sampler: str
    steps: int
    guidance: float
    denoiser_rows_per_image: float | None = None  # None: the denoiser is not a torch module
    seconds: list[float] = field(default_factory=list)  # per image, one entry per repeat

    @property
    def seconds_per_image(self) -> float:
        return _common.median(self.seconds)


def parse_steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        raise UsageError(f"--steps {text!r}: give whole numbers separated by commas, e.g. --steps 2,4") from None
    if not steps or any(s < 1 for s in steps) or len(set(steps)) != len(steps):
        raise UsageError(f"--steps {text!r}: give distinct step counts of at least 1, e.g. --steps 2,4")
    return steps


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("student", help="run folder drawn with the lcm sampler and no guidance")
    p.add_argument("teacher", nargs="?", help="run folder drawn with UniPC and guidance (default: the student)")
    p.add_argument("--steps", default="4", help="the student's step counts, comma-separated (default 4)")
    p.add_argument("--teacher-steps", type=int, default=10, help="the teacher's UniPC steps (default 10)")
    p.add_argument("--teacher-guidance", type=float, help="the teacher's guidance (default: its run's [sample])")
    p.add_argument("--student-sampler", default="lcm", help="the student's sampler (default lcm)")
    p.add_argument("--teacher-sampler", default="unipc", help="the teacher's sampler (default unipc)")
    p.add_argument("--batch", type=int, default=1, help="images per generate call (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each configuration (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    args.steps = parse_steps(args.steps)
    for flag in ("teacher_steps", "batch", "repeats", "threads"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')} {getattr(args, flag)}: use a whole number of at least 1")
    return args


def _load(run: str, device: str, sampler: str) -> Any:
    from modiff.errors import ModiffError
    from modiff.pipeline import Pipeline

    if not Path(run).is_dir():
        raise UsageError(f"run folder {run} does not exist; give the folder of a trained run")
    try:
        pipeline = Pipeline.load(run, device=device)
        return pipeline if pipeline.sampler_name == sampler else pipeline.with_sampler(sampler)
    except ModiffError as exc:
        raise UsageError(f"{run}: {exc}") from None


def _row_counter(pipeline: Any) -> tuple[Callable[[], int | None], Callable[[], None]]:
    """``(read, remove)`` of a counter of the rows the denoiser evaluates
    (``read()`` gives None for a denoiser that is not a torch module)."""
    rows = [0]
    denoiser = pipeline.components.denoiser
    if not isinstance(denoiser, torch.nn.Module):
        return (lambda: None), (lambda: None)

    def count(module: Any, inputs: tuple[Any, ...]) -> None:
        rows[0] += int(inputs[0].shape[0])

    handle = denoiser.register_forward_pre_hook(count)
    return (lambda: rows[0]), handle.remove


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Time every configuration, interleaved; the results as a JSON-ready dict."""
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    teacher_run = args.teacher or args.student
    student = _load(args.student, args.device, args.student_sampler)
    teacher = _load(teacher_run, args.device, args.teacher_sampler)
    teacher_guidance = teacher.sampling().guidance if args.teacher_guidance is None else args.teacher_guidance
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(args.batch)]

    configs: list[tuple[Config, Any]] = [
        (Config("teacher", teacher_run, args.teacher_sampler, args.teacher_steps, teacher_guidance), teacher)
    ]
    for steps in args.steps:
        configs.append((Config(f"student-{steps}", args.student, args.student_sampler, steps, 1.0), student))

    def call(config: Config, pipeline: Any) -> Callable[[], Any]:
        return lambda: pipeline.generate_tensor(prompts, seed=0, steps=config.steps, guidance=config.guidance)

    for config, pipeline in configs:  # warm-up, and the denoiser's rows per image
        read, remove = _row_counter(pipeline)
        try:
            call(config, pipeline)()
        finally:
            remove()
        rows = read()
        config.denoiser_rows_per_image = None if rows is None else rows / args.batch
    times = _common.alternate({c.name: call(c, p) for c, p in configs}, args.repeats)
    for config, _ in configs:
        config.seconds = [t / args.batch for t in times[config.name]]

    base = configs[0][0]
    result: dict[str, Any] = {
        "target_ratio": TARGET,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "batch": args.batch,
        "repeats": args.repeats,
        "machine": _common.machine(),
        "teacher": {**asdict(base), "seconds_per_image": base.seconds_per_image},
        "students": [],
    }
    for config, _ in configs[1:]:
        ratio = config.seconds_per_image / base.seconds_per_image
        result["students"].append(
            {
                **asdict(config),
                "seconds_per_image": config.seconds_per_image,
                "ratio": ratio,
                "evaluation_ratio": _ratio(config.denoiser_rows_per_image, base.denoiser_rows_per_image),
                "meets_target": ratio <= TARGET,
            }
        )
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _rows(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def markdown(result: dict[str, Any]) -> str:
    t = result["teacher"]
    rows = [
        [t["name"], t["sampler"], t["steps"], f"{t['guidance']:g}", _rows(t["denoiser_rows_per_image"]),
         f"{t['seconds_per_image'] * 1e3:.1f}", "1", ""]
    ]
    for s in result["students"]:
        rows.append(
            [s["name"], s["sampler"], s["steps"], f"{s['guidance']:g}", _rows(s["denoiser_rows_per_image"]),
             f"{s['seconds_per_image'] * 1e3:.1f}", f"{s['ratio']:.3f}", "yes" if s["meets_target"] else "no"]
        )
    header = ["config", "sampler", "steps", "guidance", "denoiser rows / image", "ms / image", "ratio",
              f"<= {result['target_ratio']}"]
    return _common.markdown_table(header, rows)


def main(argv: Sequence[str] | None = None) -> int:
    from modiff.errors import ModiffError

    try:
        args = parse_args(argv)
        result = measure(args)
    except (UsageError, ModiffError) as exc:  # a run that cannot draw these images (its task, its sampler)
        print(f"bench_few_steps: {exc}", file=sys.stderr)
        return 2
    print(markdown(result))
    print(f"\n{result['machine']}; batch {result['batch']}, "
          f"median of {result['repeats']} interleaved calls")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
