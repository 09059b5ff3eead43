"""``modiff evaluate``: the evaluator's numbers for a trained run."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..pipeline import Pipeline

from . import DEVICE_HELP


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a trained run (prompt accuracy, IoU, ...)",
        description="Sample a trained run on its evaluator's prompts (or --prompts), score the images with the "
        "run's evaluator (or --evaluator) and print the numbers; the full result is written as JSON.",
    )
    p.add_argument("run", metavar="RUN", help="run directory")
    p.add_argument("--prompts", type=Path, default=None, help="text file (one prompt per line) or JSON list")
    p.add_argument("--evaluator", default=None, metavar="NAME", help="evaluator to use instead of the run's")
    p.add_argument("--scheduler", default=None, metavar="NAME", help="sample with another sampler")
    p.add_argument("--json", action="store_true", help="print the full JSON result")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--device", default=None, help=DEVICE_HELP)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..environment import warn_if_changed
    from ..pipeline import Pipeline
    from ..progress import quiet
    from ..workflows import evaluate_run, format_table, read_prompts, save_evaluation

    pipeline = Pipeline.load(args.run, device=args.device, with_data=True)  # evaluators read held-out data
    warn_if_changed(pipeline.run, "evaluating")  # type: ignore[arg-type]
    if args.scheduler:
        pipeline = pipeline.with_sampler(args.scheduler)
    prompts = read_prompts(args.prompts) if args.prompts else None
    with quiet(args.quiet):
        result = evaluate_run(pipeline, evaluator=args.evaluator, prompts=prompts)
    # Shown first, saved second: a run folder that cannot be written must not cost the result.
    if args.json:
        print(json.dumps(result, indent=2, default=str), flush=True)
    else:
        print(format_table(result), flush=True)
    path = other_evaluation(args)
    if path is None:
        path = save_evaluation(pipeline.run, result)  # type: ignore[arg-type]
    else:
        result = {**result, "sampling": sampling_record(pipeline, args)}
        save_evaluation(pipeline.run, result, path)  # type: ignore[arg-type]
        _write_summary(path.with_suffix(".md"), result, format_table(result))
    if not args.json:
        print(f"(full result in {path})")
    return 0


def other_evaluation(args: argparse.Namespace) -> Path | None:
    """Where an evaluation with other prompts, another sampler or another
    evaluator than the run's goes: ``RUN/evaluation-<what differs>.json``
    beside the run's own ``evaluation.json``, which only ``modiff evaluate RUN``
    as trained writes (``None`` for that). The same options give the same
    file, so only a repeat of the same evaluation replaces it."""
    parts = [
        f"{flag}-{value}" for flag, value in (
            ("prompts", args.prompts.stem if args.prompts else None),
            ("sampler", args.scheduler),
            ("evaluator", args.evaluator),
        ) if value
    ]
    if not parts:
        return None
    name = "-".join(parts)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
    return Path(args.run) / f"evaluation-{safe}.json"


def sampling_record(pipeline: Pipeline, args: argparse.Namespace) -> dict[str, Any]:
    """How the images of an evaluation were sampled, for its result file: the
    sampler, the steps and guidance (the evaluator's own where its settings
    fix them, else the run's ``[sample]``), the prompt file and the evaluator."""
    record: dict[str, Any] = {
        "sampler": None, "steps": None, "guidance": None,
        "prompts": str(args.prompts.resolve()) if args.prompts else None,
        "evaluator": args.evaluator or pipeline.components.settings.components["evaluator"].name,
    }
    if pipeline.scheduler is None:  # a task that does not sample (segmentation)
        return record
    own = getattr(pipeline.components.evaluator, "settings", None) if args.evaluator is None else None
    defaults = pipeline.sampling()
    return {
        **record,
        "sampler": pipeline.sampler_name,
        "steps": getattr(own, "steps", None) or defaults.steps,
        "guidance": defaults.guidance if getattr(own, "guidance", None) is None else own.guidance,
    }


def _write_summary(path: Path, result: dict[str, Any], table: str) -> None:
    """A short Markdown page of an evaluation beside its JSON: what it sampled with, and its numbers."""
    from ..files import atomic_write_text

    sampling = result["sampling"]
    lines = [f"# {path.stem}", "", *(f"- {key}: {value}" for key, value in sampling.items() if value is not None),
             "", "```text", table, "```", ""]
    atomic_write_text(path, "\n".join(lines))
