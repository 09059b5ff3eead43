"""``modiff ablate``: train a grid of settings and compare them in one report."""

from __future__ import annotations

import argparse
from pathlib import Path

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
        default=None,
        metavar="N",
        help="train N runs side by side, each a process with 1/N of the cores (default 1); "
        "with another launcher, at most N at once",
    )
    p.add_argument(
        "--launcher",
        default=None,
        metavar="NAME",
        help="where the runs execute: local (default), or an installed launcher such as ray; "
        "overrides the file's [launcher] name",
    )
    p.add_argument("--run", dest="only_run", default=None, help=argparse.SUPPRESS)  # one job of a launcher
    p.add_argument("--threads", type=_positive, default=None, help=argparse.SUPPRESS)  # that job's threads
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
    from ..launching import launcher_settings

    ablation = read_ablation(args.ablation, tuple(args.sets))
    validate(ablation)
    out = output_dir(ablation)
    if args.dry_run:
        launcher_settings(ablation.spec.launcher_table, args.launcher, args.ablation)
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
    if args.only_run is not None:  # one job of a launcher: train one run, write its record
        cell = next((c for c in ablation.cells if c.name == args.only_run), None)
        if cell is None:
            raise ModiffError(f"{args.ablation} has no run named {args.only_run!r}")
        _runs_folder_visible(out)
        if args.threads is not None:  # the driver's choice: a run's stage keys and bits depend on it
            import torch

            torch.set_num_threads(args.threads)
        record = run_and_record(ablation, cell, out, progress=not args.quiet)
        return 0 if record["status"] == "done" else 1
    records = run_ablation(ablation, progress=not args.quiet, jobs=args.jobs, launcher=args.launcher)
    failed = [r["name"] for r in records if r.get("status") != "done"]
    print(f"report: {out / 'report.html'} and {out / 'report.md'}")
    if failed:
        print(f"{len(failed)} run(s) failed: {', '.join(failed)} (errors are in the report; run again to retry them)")
        return 1
    return 0


def _runs_folder_visible(out: Path) -> None:
    """A job on a worker that cannot see the grid's folder (the driver made it
    before starting any job) fails at once, naming the path, instead of
    training a run nobody will find."""
    if not out.is_dir():
        import socket

        raise ModiffError(
            f"the runs folder {out.resolve()} does not exist on {socket.gethostname()}: runs_dir must be on "
            "storage every node mounts, at the same path (the driver writes there, the runs train there)"
        )
