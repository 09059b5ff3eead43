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
    python benchmarks/bench_few_steps.py RUNS/student RUNS/teacher --batch 1,8,32 --json few-steps.json

Several ``--batch`` sizes are timed in the same interleaved rounds (every
configuration at every batch size takes its turn once a round), so their
ratios share the machine's load. After the timed rounds, one more call of
each configuration at each batch size runs with timers on the pipeline's
parts and gives where an image's time goes: ``conditioning`` (text embedding
and the conditioner, the null branch included), ``denoiser`` (its forward
calls), ``decode`` (the autoencoder's decoder) and ``other`` (the rest: noise,
the sampler's own arithmetic, guidance's mixing, Python). The JSON's top-level
``batch``, ``teacher`` and ``students`` are the first batch size's; ``batches``
holds every batch size's.

Exit code 2 with one line for a usage mistake (a missing run, a bad flag value).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
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


def parse_batches(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in str(text).split(",")]
    except ValueError:
        raise UsageError(f"--batch {text!r}: give whole numbers separated by commas, e.g. --batch 1,8") from None
    if not sizes or any(b < 1 for b in sizes) or len(set(sizes)) != len(sizes):
        raise UsageError(f"--batch {text!r}: give distinct batch sizes of at least 1, e.g. --batch 1,8")
    return sizes


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("student", help="run folder drawn with the lcm sampler and no guidance")
    p.add_argument("teacher", nargs="?", help="run folder drawn with UniPC and guidance (default: the student)")
    p.add_argument("--steps", default="4", help="the student's step counts, comma-separated (default 4)")
    p.add_argument("--teacher-steps", type=int, default=10, help="the teacher's UniPC steps (default 10)")
    p.add_argument("--teacher-guidance", type=float, help="the teacher's guidance (default: its run's [sample])")
    p.add_argument("--student-sampler", default="lcm", help="the student's sampler (default lcm)")
    p.add_argument("--teacher-sampler", default="unipc", help="the teacher's sampler (default unipc)")
    p.add_argument("--batch", default="1", help="images per generate call, comma-separated sizes (default 1)")
    p.add_argument("--repeats", type=int, default=5, help="timed calls of each configuration (default 5)")
    p.add_argument("--threads", type=int, default=1, help="torch threads on CPU (default 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    args.steps = parse_steps(args.steps)
    args.batch = parse_batches(args.batch)
    for flag in ("teacher_steps", "repeats", "threads"):
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


PARTS = ("conditioning", "denoiser", "decode", "other")


def _timers(pipeline: Any) -> tuple[dict[str, float], Callable[[], None]]:
    """Seconds spent in the pipeline's parts (see the module's doc), and a function that removes the timers."""
    spent = dict.fromkeys(PARTS[:-1], 0.0)
    undo: list[Callable[[], None]] = []

    def wrap(name: str) -> None:
        original = getattr(pipeline, name)
        key = "conditioning" if name == "conditioning" else "decode"

        def timed(*a: Any, **k: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return original(*a, **k)
            finally:
                _common.sync()
                spent[key] += time.perf_counter() - t0

        setattr(pipeline, name, timed)
        undo.append(lambda: delattr(pipeline, name))

    wrap("conditioning")
    wrap("decode")
    denoiser = pipeline.components.denoiser
    if isinstance(denoiser, torch.nn.Module):
        started: list[float] = []

        def before(module: Any, inputs: Any) -> None:
            _common.sync()
            started.append(time.perf_counter())

        def after(module: Any, inputs: Any, output: Any) -> None:
            _common.sync()
            spent["denoiser"] += time.perf_counter() - started.pop()

        handles = [denoiser.register_forward_pre_hook(before), denoiser.register_forward_hook(after)]
        undo.extend(h.remove for h in handles)

    def remove() -> None:
        for fn in reversed(undo):
            fn()

    return spent, remove


def breakdown(call: Callable[[], Any], pipeline: Any, images: int) -> dict[str, float]:
    """One timed call split into :data:`PARTS`, seconds per image."""
    spent, remove = _timers(pipeline)
    try:
        total = _common.timed(call)
    finally:
        remove()
    parts = {k: v / images for k, v in spent.items()}
    parts["other"] = max(0.0, total / images - sum(parts.values()))
    parts["total"] = total / images
    return parts


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """Time every configuration at every batch size, interleaved; the results as a JSON-ready dict."""
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    teacher_run = args.teacher or args.student
    student = _load(args.student, args.device, args.student_sampler)
    teacher = _load(teacher_run, args.device, args.teacher_sampler)
    teacher_guidance = teacher.sampling().guidance if args.teacher_guidance is None else args.teacher_guidance

    def call(config: Config, pipeline: Any, batch: int) -> Callable[[], Any]:
        prompts = [PROMPTS[i % len(PROMPTS)] for i in range(batch)]
        return lambda: pipeline.generate_tensor(
            prompts, seed=0, steps=config.steps, guidance=config.guidance, batch_size=batch
        )

    per_batch: dict[int, list[tuple[Config, Any]]] = {}
    for batch in args.batch:
        guided = Config("teacher", teacher_run, args.teacher_sampler, args.teacher_steps, teacher_guidance)
        configs = [(guided, teacher)]
        for steps in args.steps:
            configs.append((Config(f"student-{steps}", args.student, args.student_sampler, steps, 1.0), student))
        per_batch[batch] = configs
        for config, pipeline in configs:  # warm-up, and the denoiser's rows per image
            read, remove = _row_counter(pipeline)
            try:
                call(config, pipeline, batch)()
            finally:
                remove()
            rows = read()
            config.denoiser_rows_per_image = None if rows is None else rows / batch
    calls = {f"{c.name}@{b}": call(c, p, b) for b, configs in per_batch.items() for c, p in configs}
    times = _common.alternate(calls, args.repeats)
    parts: dict[str, dict[str, float]] = {}
    for batch, configs in per_batch.items():
        for config, pipeline in configs:
            config.seconds = [t / batch for t in times[f"{config.name}@{batch}"]]
            parts[f"{config.name}@{batch}"] = breakdown(call(config, pipeline, batch), pipeline, batch)

    batches = [_batch_result(b, per_batch[b], parts) for b in args.batch]
    return {
        "target_ratio": TARGET,
        "device": args.device,
        "threads": torch.get_num_threads(),
        "repeats": args.repeats,
        "machine": _common.machine(),
        "batch": batches[0]["batch"],
        "teacher": batches[0]["teacher"],
        "students": batches[0]["students"],
        "batches": batches,
    }


def _batch_result(
    batch: int, configs: list[tuple[Config, Any]], parts: dict[str, dict[str, float]]
) -> dict[str, Any]:
    base = configs[0][0]
    result: dict[str, Any] = {
        "batch": batch,
        "teacher": {**asdict(base), "seconds_per_image": base.seconds_per_image, "parts": parts[f"teacher@{batch}"]},
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
                "parts": parts[f"{config.name}@{batch}"],
            }
        )
    return result


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _rows(value: float | None) -> str:
    return "?" if value is None else f"{value:g}"


def markdown(result: dict[str, Any]) -> str:
    header = ["batch", "config", "sampler", "steps", "guidance", "denoiser rows / image", "ms / image", "ratio",
              f"<= {result['target_ratio']}"]
    rows = []
    split = []
    for b in result.get("batches", [result]):
        t = b["teacher"]
        rows.append([b["batch"], t["name"], t["sampler"], t["steps"], f"{t['guidance']:g}",
                     _rows(t["denoiser_rows_per_image"]), f"{t['seconds_per_image'] * 1e3:.1f}", "1", ""])
        for s in b["students"]:
            rows.append([b["batch"], s["name"], s["sampler"], s["steps"], f"{s['guidance']:g}",
                         _rows(s["denoiser_rows_per_image"]), f"{s['seconds_per_image'] * 1e3:.1f}",
                         f"{s['ratio']:.3f}", "yes" if s["meets_target"] else "no"])
        for c in [t, *b["students"]]:
            p = c.get("parts")
            if p:
                fixed = p["total"] - p["denoiser"]
                split.append([b["batch"], c["name"], *(f"{p[k] * 1e3:.1f}" for k in PARTS), f"{p['total'] * 1e3:.1f}",
                              f"{fixed / p['total']:.0%}"])
    text = _common.markdown_table(header, rows)
    if split:
        text += "\n\nOne more call each, with timers (ms per image):\n\n" + _common.markdown_table(
            ["batch", "config", *PARTS, "total", "not the denoiser"], split
        )
    return text


def main(argv: Sequence[str] | None = None) -> int:
    from modiff.errors import ModiffError

    try:
        args = parse_args(argv)
        result = measure(args)
    except (UsageError, ModiffError) as exc:  # a run that cannot draw these images (its task, its sampler)
        print(f"bench_few_steps: {exc}", file=sys.stderr)
        return 2
    print(markdown(result))
    sizes = ", ".join(str(b["batch"]) for b in result["batches"])
    print(f"\n{result['machine']}; batch {sizes}, median of {result['repeats']} interleaved calls")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
