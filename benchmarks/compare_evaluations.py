"""Two evaluations of the same prompts side by side, with paired intervals.

    python benchmarks/compare_evaluations.py OLD.json NEW.json --out FILE.json [--note TEXT]

OLD and NEW are what ``modiff evaluate RUN --json`` prints (the evaluator's
numbers with ``per_item``). The result keeps each side's accuracies and
counts (``benchmarks/demo.py``'s keys), and for every accuracy both have,
new - old paired over the prompts with its 95 % interval and verdict
(``modiff.stats.compare``), so that a change of training data can be read
against the run it changes. Both must have scored the same prompts with the
same judge.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from demo import KEYS

from modiff import stats


def paired(old: dict, new: dict) -> dict[str, dict]:
    """new - old for each accuracy with per-prompt outcomes on both sides."""
    a, b = new["per_item"], old["per_item"]
    if a["ids"] != b["ids"]:
        raise SystemExit("the two evaluations scored different prompts; compare evaluations of the same list")
    out = {}
    for key in KEYS:
        va, vb = a["metrics"].get(key), b["metrics"].get(key)
        if key.endswith("_accuracy") and va is not None and vb is not None and any(v is not None for v in va):
            cmp = stats.compare([stats.seed_items(0, a["ids"], va)], [stats.seed_items(0, b["ids"], vb)])
            out[key] = cmp.as_dict()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, help="`modiff evaluate RUN --json` of the run before")
    parser.add_argument("new", type=Path, help="`modiff evaluate RUN --json` of the run after")
    parser.add_argument("--out", type=Path, required=True, help="the result file to write")
    parser.add_argument("--note", default="", help="what the two runs are, kept in the result")
    args = parser.parse_args()
    old, new = (json.loads(p.read_text()) for p in (args.old, args.new))
    judges = [(r.get("evaluator_error") or {}).get("judge") for r in (old, new)]
    if judges[0] != judges[1]:
        raise SystemExit(f"the evaluations were read by different judges ({judges[0]} and {judges[1]}); "
                         "evaluate both with the same one")
    result = {
        "note": args.note,
        "old": {k: old.get(k) for k in KEYS},
        "new": {k: new.get(k) for k in KEYS},
        "new_minus_old": paired(old, new),
        "evaluator_error": new.get("evaluator_error"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for key, cmp in result["new_minus_old"].items():
        print(f"{key:<22} {result['old'][key]:.3f} -> {result['new'][key]:.3f}  {cmp}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
