"""Time `modiff demo` end to end and print its prompt accuracy.

    python benchmarks/demo.py [--out DIR] [--set train.steps=...]
    python benchmarks/demo.py --compare configs/demo-baseline.toml [--json FILE]
    python benchmarks/demo.py --read DIR --json FILE

Runs the demo exactly as a new user would (a fresh output directory), then
prints the wall time, the training time and the accuracy figures the demo's
evaluator wrote (overall, per attribute, one- and two-object, held-out pairs).

``--compare FILE`` runs the demo twice in one go, one after the other on the
same machine: first with the settings in FILE (the old demo, kept as a file),
then with the demo's own settings; it prints both, the wall-time ratio
new / old, and the machine's load before, between and after (``uptime``),
since other work on the machine slows both runs alike only when it is steady.
Each demo is evaluated by its own settings' evaluator (the defaults: 300
prompts, half of them two-object, at least 90 naming a held-out pair, a
fifth naming no place).

``--read DIR`` runs nothing: it reads a demo that ``modiff demo --out DIR``
already trained and evaluated (its ``evaluation.json`` and
``environment.json``), so that a demo run on a busy machine, whose wall time
means nothing, still gives a result file of its accuracies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

KEYS = ("accuracy", "one_object_accuracy", "two_object_accuracy", "holdout_accuracy", "unplaced_accuracy",
        "placed_accuracy", "colour_accuracy", "shape_accuracy", "position_accuracy", "count_accuracy", "num_prompts",
        "num_two_object", "num_holdout", "num_unplaced")
TARGETS = {"one_object_accuracy": 0.95, "two_object_accuracy": 0.6, "holdout_accuracy": 0.5}
#: The accuracies given with a 95 % interval (and, with --compare, a paired verdict): the targets and the
#: two halves of the prompts split by whether they name a place.
INTERVALS = (*TARGETS, "unplaced_accuracy", "placed_accuracy")
MAX_RATIO = 0.55

# `modiff demo` trains the settings packaged with modiff; to run it on another
# settings file (the old demo) this boot script points the command at that file.
_BOOT = (
    "import sys\n"
    "from pathlib import Path\n"
    "import modiff.commands.demo as demo\n"
    "settings = sys.argv.pop(1)\n"
    "if settings:\n"
    "    demo.demo_settings_path = lambda: Path(settings)\n"
    "from modiff.cli import main\n"
    "sys.exit(main(sys.argv[1:]))\n"
)


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def run_demo(out: Path, sets: list[str], settings: str | None = None) -> dict[str, object]:
    """One `modiff demo` into a fresh ``out``: its wall time and evaluation."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", _BOOT, str(Path(settings).resolve()) if settings else "", "demo", "--out", str(out),
           "--quiet"]
    for s in sets:
        cmd += ["--set", s]
    started = time.perf_counter()
    result = subprocess.run(cmd, check=False)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"returncode": result.returncode, "wall_seconds": wall}
    return {"returncode": 0, "wall_seconds": wall, **read_demo(out)}


def read_demo(out: Path) -> dict[str, object]:
    """The figures of a demo already in ``out``: its training seconds, the accuracies and counts of KEYS,
    the per-prompt outcomes, who read the images (the evaluator's stated error) and the run's environment."""
    from modiff.runs import RunDir

    ev = json.loads((out / "evaluation.json").read_text())
    env = out / "environment.json"
    # The run's training seconds (every stage, every call), as `modiff demo` writes them: from its checkpoint,
    # which a demo written before it did so (its evaluation.json held the last call's own time) has too.
    seconds = RunDir(out).train_seconds()
    return {"train_seconds": seconds if seconds is not None else ev.get("train_seconds"),
            **{k: ev[k] for k in KEYS if k in ev},
            "evaluator_error": ev.get("evaluator_error"),
            "environment": json.loads(env.read_text()) if env.is_file() else None, "per_item": ev.get("per_item")}


def intervals(r: dict[str, object]) -> dict[str, dict[str, float]]:
    """Each target accuracy with its 95 % bootstrap interval over the prompts (modiff.stats)."""
    from modiff import stats

    per_item = r.get("per_item") or {}
    out = {}
    for key in INTERVALS:
        values = (per_item.get("metrics") or {}).get(key)  # type: ignore[union-attr]
        if values is not None:
            interval = stats.bootstrap([stats.seed_items(0, per_item["ids"], values)])  # type: ignore[index]
            if interval is not None:
                out[key] = interval.as_dict()
    return out


def verdicts(new: dict[str, object], old: dict[str, object]) -> dict[str, dict[str, object]]:
    """new - old per target accuracy, paired over the same prompts, with the verdict modiff.stats computes."""
    from modiff import stats

    a, b = new.get("per_item") or {}, old.get("per_item") or {}
    out = {}
    for key in INTERVALS:
        va, vb = (a.get("metrics") or {}).get(key), (b.get("metrics") or {}).get(key)  # type: ignore[union-attr]
        if va is not None and vb is not None:
            cmp = stats.compare([stats.seed_items(0, a["ids"], va)], [stats.seed_items(0, b["ids"], vb)])  # type: ignore[index]
            out[key] = cmp.as_dict()
    return out


def _interval_text(i: dict[str, float] | None) -> str:
    return "–" if i is None else f"{i['value']:.3f} [{i['low']:.3f}, {i['high']:.3f}]"


def show(name: str, r: dict[str, object]) -> None:
    print(f"\n{name}: wall time {r['wall_seconds']:.0f} s; training {r.get('train_seconds') or 0:.0f} s")
    for key in KEYS:
        if key in r:
            print(f"  {key:<22} {r[key]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("bench-demo"))
    parser.add_argument("--set", dest="sets", action="append", default=[], help="override a setting of the (new) demo")
    parser.add_argument("--compare", metavar="SETTINGS", default=None,
                        help="also run the demo on these settings first (the old demo) and compare")
    parser.add_argument("--json", type=Path, default=None, help="write the figures to this JSON file")
    parser.add_argument("--read", type=Path, default=None, metavar="DIR",
                        help="run nothing: read the demo that `modiff demo --out DIR` trained and evaluated")
    parser.add_argument("--note", default="", help="with --read: how the demo was run, kept in the JSON file")
    args = parser.parse_args()

    if args.read is not None:
        return read_only(args.read, args.json, args.note)

    if args.compare is None:
        r = run_demo(args.out, args.sets)
        if r["returncode"]:
            print(f"modiff demo failed with exit code {r['returncode']}")
            return int(r["returncode"])  # type: ignore[arg-type]
        show("modiff demo", r)
        for key, i in intervals(r).items():
            print(f"  {key:<22} 95 % interval {_interval_text(i)}")
        print(f"targets: one-object >= {TARGETS['one_object_accuracy']}, two-object >= "
              f"{TARGETS['two_object_accuracy']}, held-out pairs >= {TARGETS['holdout_accuracy']}; wall < 600 s")
        if args.json:
            r.pop("per_item", None)
            args.json.write_text(json.dumps({"demo": r, "intervals": intervals(r), "uptime": uptime()}, indent=1))
        return 0

    if not Path(args.compare).is_file():
        print(f"--compare: {args.compare} does not exist")
        return 2
    loads = {"before": uptime()}
    old = run_demo(args.out / "old", [], args.compare)
    loads["between"] = uptime()
    new = run_demo(args.out / "new", args.sets)
    loads["after"] = uptime()
    for name, r in (("old demo (" + args.compare + ")", old), ("new demo", new)):
        if r["returncode"]:
            print(f"{name} failed with exit code {r['returncode']}")
            return int(r["returncode"])  # type: ignore[arg-type]
        show(name, r)
    ratio = float(new["wall_seconds"]) / float(old["wall_seconds"])  # type: ignore[arg-type]
    print(f"\nwall-time ratio new / old: {ratio:.2f} (target <= {MAX_RATIO})")
    print("| | old | new | target |\n|---|---|---|---|")
    print(f"| wall s | {old['wall_seconds']:.0f} | {new['wall_seconds']:.0f} | ratio {ratio:.2f} <= {MAX_RATIO} |")
    old_i, new_i, diffs = intervals(old), intervals(new), verdicts(new, old)
    print("\nAccuracies with 95 % bootstrap intervals over the prompts; new - old paired over the same prompts, "
          "the verdict computed from its interval (modiff.stats):\n")
    print("| | old | new | new - old | verdict | target |\n|---|---|---|---|---|---|")
    for key, target in TARGETS.items():
        d = diffs.get(key) or {}
        diff = _interval_text(d.get("difference")) if d else "–"
        verdict = {"a better": "new better", "b better": "old better"}.get(str(d.get("verdict")), d.get("verdict", "–"))
        print(f"| {key} | {_interval_text(old_i.get(key))} | {_interval_text(new_i.get(key))} | {diff} | {verdict} | "
              f">= {target} |")
    for when, text in loads.items():
        print(f"uptime {when}: {text}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        for r in (old, new):
            r.pop("per_item", None)
        args.json.write_text(json.dumps({"old": old, "new": new, "ratio": ratio, "compare": args.compare,
                                         "sets": args.sets, "intervals": {"old": old_i, "new": new_i},
                                         "new_minus_old": diffs, "uptime": loads}, indent=1))
    return 0


def read_only(out: Path, json_path: Path | None, note: str = "") -> int:
    """``--read``: show (and with ``json_path`` write) the figures of the demo in ``out``."""
    if not (out / "evaluation.json").is_file():
        print(f"--read: {out} holds no evaluation.json (is it a finished `modiff demo --out {out}`?)")
        return 2
    r = read_demo(out)
    print(f"\nmodiff demo in {out}: training {r.get('train_seconds') or 0:.0f} s")
    for key in KEYS:
        if key in r:
            print(f"  {key:<22} {r[key]}")
    spans = intervals(r)
    for key, i in spans.items():
        print(f"  {key:<22} 95 % interval {_interval_text(i)}")
    if json_path:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        r.pop("per_item", None)
        written = {"note": note, "demo": r, "intervals": spans, "read": str(out)}
        json_path.write_text(json.dumps(written, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
