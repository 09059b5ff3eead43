"""docs/recipe-results.md, the full record of the recipe's levers, written from the committed result files.

Every learning-curve sweep of the recipe's levers (written by the sweep script
of that time, since folded into ``modiff ablate``: ``ablations/recipe-levers.toml``)
into ``benchmarks/results/recipe/`` (its ``curves.md``, kept under the sweep's name)
becomes one section: the sweep's reference recipe, each other recipe's
settings where they differ from the reference's (the lever), each recipe's last
evaluation with its 95 % Wilson intervals and, for sweeps trained with
``--final-prompts``, the final models' paired verdicts. The sampler sweeps
(``samplers-*.json``, ``benchmarks/sampler_sweep.py``) follow. Nothing on the
page is typed by hand, so the page and the files cannot disagree:

    python benchmarks/results_page.py           # rewrite docs/recipe-results.md
    python benchmarks/results_page.py --check   # exit 1 when the committed page is not what the files give
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "recipe"
PAGE = ROOT / "docs" / "recipe-results.md"

#: The sweeps in the order the recipe was built, each with what it compared.
SWEEPS = [
    ("text-embedders", "Text embedders, at the first demo's denoiser width"),
    ("levers", "The small denoiser: loss levers, the layout pretext, attention positions, learning rate, batch, CLIP"),
    ("pretext", "The layout pretext's length, the text transformer frozen or trained on"),
    ("attention", "Attention levels, timestep shift, EMA, a shorter autoencoder stage"),
    ("equal-seconds", "Recipes that trade step cost for learning, at about equal seconds"),
    ("final-lr", "Learning-rate decay to zero"),
    ("depth", "Depth"),
    ("autoencoder", "The autoencoder's KL weight and reconstructions (run seed 1)"),
    ("two-seeds", "Levers on two seeds, on the demo's recipe, with paired verdicts"),
    ("twice-the-steps", "Twice the denoiser steps, on two seeds"),
]

#: The plots of a sweep kept in docs/images/ (its curves-*.png, under a name of the page's), with their captions.
PLOTS = {
    "text-embedders": [("recipe-text-embedders-steps.png", "Accuracy against denoiser steps: CLIP against the text "
                        "transformer")],
    "levers": [("recipe-levers-steps.png", "Accuracy against denoiser steps for the levers on the small denoiser"),
               ("recipe-two-objects-before.png", "Two-object prompts without the layout pretext (fast): colours "
                "and shapes swapped"),
               ("recipe-two-objects-after.png", "The same prompts with it (layout-pos): each in its place")],
    "pretext": [("recipe-pretext-steps.png", "Accuracy against denoiser steps: the pretext's length, frozen or "
                 "trained on")],
    "attention": [("recipe-attention-steps.png", "Accuracy against denoiser steps: attention levels, the timestep "
                   "shift, EMA, a shorter autoencoder stage")],
    "equal-seconds": [("recipe-equal-seconds.png", "Accuracy against reference-equivalent seconds")],
    "autoencoder": [("recipe-autoencoder-steps.png", "Accuracy against denoiser steps: the autoencoder's levers")],
    "two-seeds": [("recipe-two-seeds-steps.png", "Each lever's mean over seeds 0 and 1 against denoiser steps"),
                  ("recipe-two-seeds-final.png", "Each lever minus the reference on the final models, with 95 % "
                   "intervals, coloured by verdict")],
}

SETTINGS_HEADER = "| recipe | settings |"
LAST_HEADER = "| recipe | step | one object | two objects | held-out pairs |"


@dataclass
class Sweep:
    """What one learning-curve sweep's ``curves.md`` records."""

    reference: str
    shared: list[str] = field(default_factory=list)
    settings: dict[str, list[str]] = field(default_factory=dict)
    last: list[str] = field(default_factory=list)
    final: list[str] = field(default_factory=list)


def _table(lines: list[str], header: str) -> list[str]:
    """The rows of the table that starts with ``header`` (header and rule left out)."""
    for i, line in enumerate(lines):
        if line.startswith(header):
            rows = []
            for row in lines[i + 2:]:
                if not row.startswith("|"):
                    break
                rows.append(row)
            return rows
    return []


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def read_sweep(path: Path) -> Sweep:
    """The recipes, settings, last evaluations and final verdicts of a learning-curve ``curves.md``."""
    lines = path.read_text(encoding="utf-8").splitlines()
    settings = {}
    for row in _table(lines, SETTINGS_HEADER):
        name, how = _cells(row)[:2]
        settings[name] = how.strip("`").split()
    named = re.search(r"Reference recipe `([^`]+)`", "\n".join(lines))
    reference = named[1] if named else next(iter(settings))
    final: list[str] = []
    for i, line in enumerate(lines):
        if line.startswith("Final models"):
            final = [line, "", *_table_with_header(lines[i + 1:])]
    shared_line = next((line for line in lines if line.startswith("Shared settings:")), "")
    shared = {_key(s): s for s in re.findall(r"`([^`]+)`", shared_line)}  # a key set twice: the last wins
    return Sweep(reference, list(shared.values()), settings, _table(lines, LAST_HEADER), final)


def _table_with_header(lines: list[str]) -> list[str]:
    out = []
    for line in lines:
        if line.startswith("|"):
            out.append(line)
        elif out:
            break
    return out


def _key(setting: str) -> str:
    return setting.split("=", 1)[0]


def lever(settings: list[str], reference: list[str]) -> str:
    """The settings of a recipe that its reference does not have (a changed value or a new key)."""
    changed = [s for s in settings if s not in reference and _key(s) != "run.seed"]
    dropped = sorted({_key(s) for s in reference} - {_key(s) for s in settings} - {"run.seed"})
    parts = [f"`{s}`" for s in changed] + [f"without `{k}`" for k in dropped]
    return ", ".join(parts) or "the reference's"


def stem(name: str) -> str:
    """A recipe's name without the ``.sN`` its run seed adds."""
    return re.sub(r"\.s\d+$", "", name)


def sweep_section(name: str, title: str, sweep: Sweep) -> list[str]:
    """One sweep's section of the page."""
    ref = sweep.settings.get(sweep.reference, [])
    lines = [f"## {title}", "", f"Source: `benchmarks/results/recipe/{name}.md`. Reference recipe "
             f"`{stem(sweep.reference)}`: `{' '.join(s for s in ref if _key(s) != 'run.seed')}`; every run also "
             f"`{' '.join(sweep.shared)}`.", "",
             "| recipe | its lever (settings that differ from the reference) |", "|---|---|",
             f"| {stem(sweep.reference)} | (the reference) |"]
    seen = {stem(sweep.reference)}
    for recipe, settings in sweep.settings.items():
        if stem(recipe) in seen:
            continue
        seen.add(stem(recipe))
        lines.append(f"| {stem(recipe)} | {lever(settings, ref)} |")
    for image, caption in PLOTS.get(name, []):
        lines += ["", f"![{caption}](images/{image})"]
    if sweep.last:
        lines += ["", "Each run's last evaluation (95 % Wilson intervals over its prompts):", "", LAST_HEADER,
                  "|---|---|---|---|---|", *sweep.last]
    if sweep.final:
        lines += ["", *sweep.final]
    return [*lines, ""]


def _pct(value: object) -> str:
    return "–" if value is None else f"{float(value):.2f}"  # type: ignore[arg-type]


def samplers_section() -> list[str]:
    """The sampler sweeps: samplers, steps and guidance on one trained run each."""
    lines = ["## Samplers, steps and guidance", ""]
    for path in sorted(RESULTS.glob("samplers-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        lines += [f"`benchmarks/results/recipe/{path.name}` ({data['run']}):", "",
                  "| sampler | steps | guidance | one object | two objects | held-out pairs | seconds |",
                  "|---|---|---|---|---|---|---|"]
        for row in data["rows"]:
            lines.append(f"| {row['sampler']} | {row['steps']} | {row['guidance']} | "
                         f"{_pct(row.get('one_object_accuracy'))} | {_pct(row.get('two_object_accuracy'))} | "
                         f"{_pct(row.get('holdout_accuracy'))} | {row['seconds']:.1f} |")
        lines.append("")
    return lines


def page() -> str:
    """The whole page, from the files as they are now."""
    lines = ["# The recipe's levers: every result", "",
             "<!-- Written by `python benchmarks/results_page.py` from `benchmarks/results/recipe/`; "
             "do not edit by hand. -->", "",
             "Every lever measured while the demo's recipe was chosen (how to read them: "
             "[recipe.md](recipe.md)). Each section is one learning-curve sweep (of the sweep script of that "
             "time; `modiff ablate ablations/recipe-levers.toml` measures the two-seed table again); its file "
             "has every evaluation of every run, and the settings in full.", ""]
    for name, title in SWEEPS:
        lines += sweep_section(name, title, read_sweep(RESULTS / f"{name}.md"))
    lines += samplers_section()
    return "\n".join(lines).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only say whether the committed page is up to date")
    args = parser.parse_args(argv)
    text = page()
    if args.check:
        same = PAGE.is_file() and PAGE.read_text(encoding="utf-8") == text
        print(f"{PAGE.relative_to(ROOT)} is {'up to date' if same else 'out of date: run benchmarks/results_page.py'}")
        return 0 if same else 1
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
