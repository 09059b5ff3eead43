"""Tabulate the smaller students' in-training evaluations (each run's ``[train] eval_every`` rows).

    python benchmarks/results/distill/small-4/curves.py > benchmarks/results/distill/small-4/curves.md
"""

import json

RUNS = {
    "first try: skip mid_block, up_blocks.1.resnets.1, up_blocks.1.attentions.1": ["lcm6-small4-s0", "lcm6-small4-s1"],
    "small: skip mid_block, up_blocks.0.resnets.0, down_blocks.0.attentions.0 (small-4.toml)": [
        "lcm7-c1-s0", "lcm7-c1-s1"],
    "smaller: small's three and up_blocks.0.resnets.1": ["lcm7-c4-s0", "lcm7-c4-s1"],
    "ms4, the full-size student (multistep-4.toml), for comparison": ["lcm4-seg4-ois4-s0", "lcm4-seg4-ois4-s1"],
}

print("# The smaller 4-step students' curves during distillation\n")
print("From each run's `runs/NAME/metrics.jsonl` by `curves.py` (its `[train] eval_every` rows: the evaluator's")
print("300 prompts, seed 0, the student's own sampler, ddim at 4 steps). Distillation seconds exclude evaluation;")
print("the six smaller runs shared the two cores (four at a time, and a test run).\n")
for title, names in RUNS.items():
    print(f"## {title}\n")
    print("| run | step | distillation s | one-object | two-object |\n|---|---|---|---|---|")
    for name in names:
        for line in open(f"runs/{name}/metrics.jsonl"):
            row = json.loads(line)
            if row.get("kind") == "eval":
                e = row["eval"]
                print(f"| {name} | {row['step']} | {row['train_seconds']:.0f} | {e['one_object_accuracy']:.3f} "
                      f"| {e['two_object_accuracy']:.3f} |")
    print()
