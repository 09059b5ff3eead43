"""Consistency distillation against its teacher (issue 40): accuracy at 1, 2 and
4 steps with paired bootstrap intervals, the curve of accuracy against
distillation seconds, the cost against the teacher's training, and samples.

    python benchmarks/distill_measure.py --teacher RUNS/demo \\
        --student huber:RUNS/demo-lcm-huber --student l2:RUNS/demo-lcm-l2 \\
        --out benchmarks/results/distill

The teacher is evaluated (or its ``evaluation.json`` read) as it samples by
default: the demo's UniPC at 10 steps with its guidance. Each student is
evaluated with the same evaluator settings (300 prompts, seed 0) with the
``lcm`` sampler at each ``--steps``, one denoiser call per step (guidance
folded in); so the items are the same and the comparison is paired
(``modiff.stats.compare``). The curve comes from the students' ``[train]
eval_every`` rows in ``metrics.jsonl`` (evaluation time is not training time)
and is drawn with the project's chart module (``modiff.charts``).
Writes ``distill.json``, ``distill.md``, ``curve.svg`` and ``samples.png``.

``--shift STEPS=S,...`` draws the students with the ``lcm`` sampler's
``inference_shift`` S at that step count (default 1: diffusers' grid). Choose
S on another prompt set than the reported one: ``--sweep 0.5,1,2,3`` only
evaluates each student at each ``--steps`` and shift with ``[evaluator] seed
= --sweep-seed`` (default 1; the reported set is seed 0) and writes
``shift-sweep.json`` and ``shift-sweep.md`` (no teacher, no comparison):

    python benchmarks/distill_measure.py --teacher RUNS/demo --student s0:RUNS/lcm-s0 \
        --steps 2,4 --sweep 0.5,0.7,1,1.5,2,3

``--teacher-also ddim:2,ddim:4`` also evaluates the teacher drawn those ways
(its own guidance, two calls a step), paired against the teacher as it samples.

``--sweep-against NAME`` adds each student's paired difference to student NAME
(same prompts, same settings), e.g. a recipe's variants against the recipe.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from modiff import Pipeline
from modiff.charts import Panel, Series, line_chart
from modiff.runs import RunDir
from modiff.stats import compare, seed_items
from modiff.workflows import evaluate_run

METRICS = ("one_object_accuracy", "two_object_accuracy")
SAMPLE_PROMPTS = ["a red circle in the top left", "a large blue square at the bottom",
                  "a small green triangle in the center",
                  "a red square at the top left and a blue circle at the bottom right"]


def distilled_grid(pipe: Pipeline) -> int | None:
    """The student's ``[conditioner] original_inference_steps`` (None: not a distilled run)."""
    table = pipe.components.settings.components.get("conditioner")
    return getattr(table.params, "original_inference_steps", None) if table is not None else None


def students_sampler(pipe: Pipeline, shift: float = 1.0) -> Pipeline:
    """``pipe`` drawing with its own sampler as the student needs it: a latent consistency student
    with the ``lcm`` sampler at ``inference_shift`` ``shift`` on the skipping schedule it was
    distilled on (``[sample] scheduler = "lcm"`` alone takes the sampler's
    default, 50 points, whatever the distillation's ``original_inference_steps``). A student that
    draws with another sampler (a multistep one: ``ddim``) keeps it."""
    grid = distilled_grid(pipe)
    if pipe.components.settings.sample.scheduler not in (None, "lcm"):  # a multistep student ([conditioner] segments)
        if shift != 1.0:
            raise SystemExit(f"--shift/--sweep shifts the lcm sampler; {pipe.run} draws with "
                             f"{pipe.components.settings.sample.scheduler!r}")
        return pipe
    if shift == 1.0 and grid in (None, 50):
        return pipe
    return pipe.with_sampler("lcm", inference_shift=shift, **({} if grid is None else
                                                             {"original_inference_steps": grid}))


def evaluation(run: Path, sets: list[str], shift: float = 1.0) -> dict[str, Any]:
    pipe = students_sampler(Pipeline.load(run, sets=sets, with_data=True), shift)
    with torch.no_grad():
        return evaluate_run(pipe)


def guided(w: float | None) -> list[str]:
    """The settings override that draws a student at guidance ``w`` (None: its run's own)."""
    return [] if w is None else [f"conditioner.guidance={w}"]


def parse_shifts(text: str | None) -> dict[int, float]:
    """``"4=2,2=1.5"`` as ``{4: 2.0, 2: 1.5}``."""
    if not text:
        return {}
    return {int(k): float(v) for k, v in (part.split("=", 1) for part in text.split(","))}


def sweep(students: dict[str, Path], steps: list[int], shifts: list[float], guidances: list[float | None],
          seed: int, out: Path, against: str | None = None) -> None:
    """Each student at each step count, shift and guidance ``w`` (None: its run's) on the prompt
    set of evaluator seed ``seed``; the best pair per step count (one-object accuracy first, then
    two-object, averaged over the students). ``against`` (a student's name, evaluated first): each
    row also holds its paired difference to that student's row at the same settings."""
    rows: list[dict[str, Any]] = []
    base: dict[tuple[int, float | None, float], dict[str, Any]] = {}
    order = sorted(students, key=lambda name: name != against)
    for name in order:
        run = students[name]
        for n in steps:
            for w in guidances:
                for shift in shifts:
                    sets = [f"sample.steps={n}", f"evaluator.seed={seed}"] + guided(w)
                    ev = evaluation(run, sets, shift)
                    rows.append({"student": name, "steps": n, "shift": shift, "guidance": w,
                                 **{m: ev[m] for m in METRICS}})
                    if name == against:
                        base[n, w, shift] = ev
                    elif against is not None:
                        rows[-1][f"vs_{against}"] = {
                            m: _comparison(compare(items(ev, m), items(base[n, w, shift], m))) for m in METRICS}
                    print(rows[-1], flush=True)
    best: dict[str, dict[str, Any]] = {}
    for n in steps:
        pairs = [(sh, w) for w in guidances for sh in shifts]
        score = {}
        for sh, w in pairs:
            rs = [r for r in rows if (r["steps"], r["shift"], r["guidance"]) == (n, sh, w)]
            score[sh, w] = tuple(sum(r[m] for r in rs) / len(rs) for m in METRICS)
        sh, w = max(pairs, key=lambda p: score[p])
        best[str(n)] = {"shift": sh, "guidance": w}
    record = {"evaluator_seed": seed, "rows": rows, "best": best}
    (out / "shift-sweep.json").write_text(json.dumps(record, indent=1) + "\n")
    lines = [f"evaluator seed {seed} (not the reported set)", "",
             "| student | steps | shift | guidance w | one-object | two-object |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['student']} | {r['steps']} | {r['shift']:g} | {r['guidance'] or 'run'} | "
              f"{r[METRICS[0]]:.3f} | {r[METRICS[1]]:.3f} |" for r in rows]
    if against is not None:
        lines += ["", f"paired against {against} (difference [95% interval] verdict):", ""]
        lines += [f"- {r['student']}, {r['steps']} steps, shift {r['shift']:g}, w {r['guidance'] or 'run'}: "
                  + "; ".join(f"{m.split('_')[0]} object {c['difference']:+.3f} [{c['low']:+.3f}, "
                              f"{c['high']:+.3f}] {c['verdict']}" for m, c in r[f"vs_{against}"].items())
                  for r in rows if f"vs_{against}" in r]
    chosen = ", ".join(f"{k} steps: shift {v['shift']:g}, w {v['guidance'] or 'run'}" for k, v in best.items())
    lines += ["", f"best per step count (mean over students): {chosen}"]
    (out / "shift-sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def items(result: dict[str, Any], metric: str) -> list[Any]:
    per = result["per_item"]
    return [seed_items(0, per["ids"], per["metrics"][metric])]


def train_seconds(run: Path) -> float:
    return float(RunDir(run).read_state()["train_seconds"])


def curve(run: Path) -> list[dict[str, Any]]:
    """The ``[train] eval_every`` rows: training seconds so far and the evaluation's numbers."""
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    rows = [json.loads(line) for line in lines if line.strip()]
    return [{"seconds": r["train_seconds"], "step": r["step"], **{m: r["eval"][m] for m in METRICS}}
            for r in rows if r.get("kind") == "eval"]


def samples(teacher: Path, students: Path, out: Path, shifts: dict[int, float] | None = None,
            w: float | None = None) -> None:
    """One row per configuration, one column per prompt: the teacher as it samples (UniPC 10, guided),
    then the student at 1, 2 and 4 steps (lcm, or its own sampler: a multistep student's ddim)."""
    seeds = list(range(len(SAMPLE_PROMPTS)))
    rows = []
    t = Pipeline.load(teacher)
    with torch.no_grad():
        rows.append(t.generate_tensor(SAMPLE_PROMPTS, seeds=seeds))
        s = Pipeline.load(students, sets=guided(w))  # the kept loss's student only: a small picture
        for steps in (1, 2, 4):
            shift = (shifts or {}).get(steps, 1.0)
            drawn = students_sampler(s, shift)
            rows.append(drawn.generate_tensor(SAMPLE_PROMPTS, seeds=seeds, steps=steps, guidance=1.0))
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)
    pixels = ((grid.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(pixels).resize((pixels.shape[1] * 2, pixels.shape[0] * 2), Image.NEAREST).save(out)


def _comparison(c: Any) -> dict[str, Any]:
    return {"difference": c.difference.value, "low": c.difference.low, "high": c.difference.high,
            "verdict": c.verdict, "paired": c.paired}


def curve_chart(result: dict[str, Any]) -> str:
    """``curve.svg``: each student's accuracies at 4 LCM steps against distillation
    seconds, the teacher's one-object accuracy as a line (from ``distill.json``:
    ``python -c "...; curve_chart(json.load(open('distill.json')))"`` redraws it)."""
    colours = ["#0072b2", "#e69f00", "#009e73", "#cc79a7"]
    series = []
    for i, (name, entry) in enumerate(result["students"].items()):
        for m, width in zip(METRICS, (2, 1), strict=True):
            pts = [(p["seconds"], p[m]) for p in entry["curve"] if m in p and p["seconds"] is not None]
            series.append(Series(f"{name}: {m.split('_')[0]} object", pts, colours[i % 4], width=width))
    svg = line_chart(Panel("distillation seconds", series), title="student at its [sample] steps vs seconds",
                     y_label="accuracy", y_range=(0.0, 1.0),
                     hline=(result["teacher"]["one_object_accuracy"], "teacher, one object (UniPC 10, guided)"))
    return str(svg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, required=True)
    p.add_argument("--student", action="append", required=True, help="NAME:RUN (repeatable)")
    p.add_argument("--steps", default="1,2,4")
    p.add_argument("--draw", help="the student drawn in samples.png (default: the first)")
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/distill"))
    p.add_argument("--shift", help="STEPS=S,...: the lcm sampler's inference_shift at that step count (default 1)")
    p.add_argument("--sweep", help="S,...: only evaluate these shifts on --sweep-seed's prompts (see above)")
    p.add_argument("--sweep-seed", type=int, default=1)
    p.add_argument("--guidance", type=float, help="the students' w (default: each run's [conditioner] guidance)")
    p.add_argument("--sweep-guidance", help="W,...: the sweep's w values too (default: the runs' own)")
    p.add_argument("--sweep-against", help="NAME: the sweep also compares each student with this one, paired")
    p.add_argument("--no-pair", action="store_true", help="do not compare the first two students with each other")
    p.add_argument("--teacher-also", help="SAMPLER:STEPS,...: the teacher drawn these ways too (its guidance), "
                   "each paired against the teacher as it samples: e.g. ddim:2,ddim:4")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    students = dict(s.split(":", 1) for s in args.student)
    students = {k: Path(v) for k, v in students.items()}
    step_counts = [int(s) for s in args.steps.split(",")]
    if args.sweep:
        ws = [float(x) for x in args.sweep_guidance.split(",")] if args.sweep_guidance else [None]
        if args.sweep_against is not None and args.sweep_against not in students:
            p.error(f"--sweep-against {args.sweep_against}: not one of the --student names")
        sweep(students, step_counts, [float(x) for x in args.sweep.split(",")], ws, args.sweep_seed, args.out,
              args.sweep_against)
        return
    shifts = parse_shifts(args.shift)

    saved = args.teacher / "evaluation.json"
    teacher_eval = json.loads(saved.read_text()) if saved.is_file() else evaluation(args.teacher, [])
    teacher_seconds = train_seconds(args.teacher)
    result: dict[str, Any] = {
        "teacher": {"run": str(args.teacher), "train_seconds": teacher_seconds,
                    **{m: teacher_eval[m] for m in METRICS}},
        "shifts": {str(n): shifts.get(n, 1.0) for n in step_counts},
        "student_guidance": args.guidance,
        "students": {},
    }
    if args.teacher_also:
        result["teacher_also"] = {}
        for way in args.teacher_also.split(","):
            sampler, steps = way.split(":")
            ev = evaluation(args.teacher, [f'sample.scheduler="{sampler}"', f"sample.steps={int(steps)}"])
            result["teacher_also"][f"{sampler}-{steps}"] = {
                m: {"value": ev[m], **_comparison(compare(items(ev, m), items(teacher_eval, m)))} for m in METRICS}
    evaluations: dict[tuple[str, int], dict[str, Any]] = {}
    for name, run in students.items():
        entry: dict[str, Any] = {"run": str(run), "train_seconds": train_seconds(run)}
        entry["cost_vs_teacher"] = entry["train_seconds"] / teacher_seconds
        for steps in step_counts:
            ev = evaluations[name, steps] = evaluation(run, [f"sample.steps={steps}", *guided(args.guidance)],
                                                       shifts.get(steps, 1.0))
            row: dict[str, Any] = {}
            for m in METRICS:
                row[m] = {"value": ev[m], **_comparison(compare(items(ev, m), items(teacher_eval, m)))}
            entry[f"steps_{steps}"] = row
        entry["curve"] = curve(run)
        result["students"][name] = entry
    names = list(students)
    # the first two students (two losses, or two seeds) against each other, paired, at each step count
    if len(names) >= 2 and not args.no_pair:
        a, b = names[:2]
        result[f"{a}_vs_{b}"] = {
            f"steps_{steps}": {m: _comparison(compare(items(evaluations[a, steps], m), items(evaluations[b, steps], m)))
                               for m in METRICS}
            for (n, steps) in evaluations if n == a and (b, steps) in evaluations
        }
    (args.out / "distill.json").write_text(json.dumps(result, indent=1) + "\n")

    (args.out / "curve.svg").write_text(curve_chart(result))
    samples(args.teacher, students[args.draw or next(iter(students))], args.out / "samples.png", shifts,
            args.guidance)

    lines = [f"lcm inference_shift per step count: {result['shifts']}; students' w: "
             f"{args.guidance if args.guidance is not None else 'their runs own'}", "",
             "| student | steps | metric | value | teacher | difference [95% interval] | verdict |",
             "|---|---|---|---|---|---|---|"]
    for way, row in result.get("teacher_also", {}).items():
        for m, r in row.items():
            lines.append(f"| teacher, {way} | {way.split('-')[1]} | {m} | {r['value']:.3f} | "
                         f"{result['teacher'][m]:.3f} | {r['difference']:+.3f} [{r['low']:+.3f}, "
                         f"{r['high']:+.3f}] | {r['verdict']} |")
    for name, entry in result["students"].items():
        for key in [k for k in entry if k.startswith("steps_")]:
            for m, r in entry[key].items():
                lines.append(f"| {name} | {key[6:]} | {m} | {r['value']:.3f} | {result['teacher'][m]:.3f} | "
                             f"{r['difference']:+.3f} [{r['low']:+.3f}, {r['high']:+.3f}] | {r['verdict']} |")
        lines.append(f"\n{name}: {entry['train_seconds']:.0f} s of distillation, "
                     f"{entry['cost_vs_teacher']:.2f} of the teacher's {teacher_seconds:.0f} s\n")
    for key, per_steps in result.items():
        if "_vs_" in key:
            for steps, row in per_steps.items():
                for m, r in row.items():
                    lines.append(f"{key} at {steps[6:]} steps, {m}: {r['difference']:+.3f} "
                                 f"[{r['low']:+.3f}, {r['high']:+.3f}] {r['verdict']}")
    (args.out / "distill.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
