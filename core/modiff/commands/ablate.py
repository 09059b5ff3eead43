"""``modiff ablate``: train a grid of settings and compare them in one report."""

from __future__ import annotations

import argparse

from ..errors import ModiffError


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ablate",
        help="train every cell of an ablation grid and write a report",
        description="Train every cell (a variant of the base settings, once per seed) of an ablation file, "
        "evaluate each run and compare the cells in report.md and report.html under the runs folder. "
        "Run it again to retry failed runs; finished ones are kept. The file's format: docs/ablations.md.",
    )
    p.add_argument("ablation", metavar="ABLATION", help="ablation TOML file")
    p.add_argument("--dry-run", action="store_true", help="list and validate the cells; train nothing")
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override a value in every cell",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--jobs",
        type=_positive,
        default=1,
        metavar="N",
        help="train N runs side by side, each a process with 1/N of the cores (default 1)",
    )
    p.add_argument("--run", dest="only_run", default=None, help=argparse.SUPPRESS)  # one job of --jobs
    p.set_defaults(func=run)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1, got {text!r}")
    return value


def run(args: argparse.Namespace) -> int:
    from ..ablation import output_dir, read_ablation, run_ablation, run_and_record, validate

    ablation = read_ablation(args.ablation, tuple(args.sets))
    validate(ablation)
    out = output_dir(ablation)
    if args.dry_run:
        groups = ablation.groups
        seeds = {g: [c.seed for c in ablation.cells if c.group == g] for g in groups}
        counts = {len(v) for v in seeds.values()}
        shape = f"{len(groups)} cells x {counts.pop()} seeds = " if len(counts) == 1 else f"{len(groups)} cells, "
        print(f"{shape}{len(ablation.cells)} runs, all valid; output in {out}")
        for group in groups:
            cell = next(c for c in ablation.cells if c.group == group)
            resolved = ablation.resolved[cell.name]
            plugins = ", ".join(f"{role}={c.name}" for role, c in resolved.components.items())
            changes = ", ".join(f"{k}={v!r}" for k, v in cell.changes.items()) or "(base)"
            print(f"- {group}: {changes}; seeds {', '.join(map(str, seeds[group]))}\n    {plugins}")
        for i, c in enumerate(ablation.spec.compare):
            print(f"compare {i + 1}: {c.a} vs {c.b} on {', '.join(c.metrics)}" + (f" ({c.claim})" if c.claim else ""))
        return 0
    if args.only_run is not None:  # one job of a --jobs parent: train one run, write its record
        cell = next((c for c in ablation.cells if c.name == args.only_run), None)
        if cell is None:
            raise ModiffError(f"{args.ablation} has no run named {args.only_run!r}")
        record = run_and_record(ablation, cell, out, progress=not args.quiet)
        return 0 if record["status"] == "done" else 1
    records = run_ablation(ablation, progress=not args.quiet, jobs=args.jobs)
    failed = [r["name"] for r in records if r.get("status") != "done"]
    print(f"report: {out / 'report.html'} and {out / 'report.md'}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (errors are in the report; run again to retry them)")
        return 1
    return 0
