"""benchmarks/learning_curve.py's recipe seeds: ``--seeds`` trains each recipe
once per run seed and the tables report each recipe's mean over its seeds."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def curve(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("learning_curve")


def test_seeds_make_one_recipe_per_seed_with_the_seed_set_last(curve: ModuleType) -> None:
    a = curve.parse_recipe("a:train.lr=1e-3,run.seed=7,@threads=2", "configs/demo-baseline.toml")
    b = curve.parse_recipe("b", "configs/demo-baseline.toml")
    out = curve.with_seeds([a, b], curve.parse_seeds("0,2"))
    assert [r.name for r in out] == ["a.s0", "a.s2", "b.s0", "b.s2"]
    assert out[1].sets == ["train.lr=1e-3", "run.seed=7", "run.seed=2"]  # the seed wins over the recipe's own
    assert out[1].threads == 2 and out[3].sets == ["run.seed=2"]


@pytest.mark.parametrize("bad", ["", "0,x", "1,1", "-1"])
def test_bad_seeds_are_a_usage_error(curve: ModuleType, bad: str) -> None:
    with pytest.raises(curve.UsageError, match="--seeds"):
        curve.parse_seeds(bad)


def test_bad_seeds_exit_2_naming_the_flag(curve: ModuleType, tmp_path: Path, capsys) -> None:
    assert curve.main(["--out", str(tmp_path / "o"), "--recipe", "a", "--seeds", "0,0"]) == 2
    assert "--seeds '0,0'" in capsys.readouterr().err


def test_the_tables_give_each_recipes_mean_over_its_seeds(curve: ModuleType) -> None:
    def point(one: float, two: float) -> dict:
        return {"step": 3000, "one_object_accuracy": one, "two_object_accuracy": two, "holdout_accuracy": None}

    recipes = {
        "ref.s0": [point(0.8, 0.4)], "ref.s1": [point(0.6, 0.2)],
        "alone": [point(0.9, 0.5)], "x.s1": [point(0.5, 0.1)],  # one seed only: no mean row
    }
    result = {
        "plan": {"common": [], "recipes": {n: {"file": "f.toml", "sets": [], "threads": 1, "nproc": 1}
                                           for n in recipes}},
        "costs": {},
        "recipes": {n: {"status": {"status": "done"}, "points": p, "cost": None} for n, p in recipes.items()},
    }
    text = curve.markdown(result)
    assert "| ref | 2 | 3000 | 0.70 (0.80, 0.60) | 0.30 (0.40, 0.20) | – |" in text
    assert "| alone | 2" not in text and "| x | " not in text
    assert curve.seed_groups(["a.s0", "a.s1", "b", "c.s3", "d.sx", "d.s1"]) == {"a": ["a.s0", "a.s1"]}


def test_a_common_key_given_again_is_listed_once_with_its_last_value(curve: ModuleType) -> None:
    args = curve.parse_args(
        ["--out", "o", "--recipe", "a", "--eval-every", "250", "--common", "train.eval_every=500",
         "--common", "train.lr=1e-3", "--common", "train.lr = 2e-3"]
    )
    sets = curve.common_sets(args)
    assert [s for s in sets if s.startswith("train.eval_every")] == ["train.eval_every=500"]
    assert [s for s in sets if s.startswith("train.lr")] == ["train.lr = 2e-3"]
    assert sets[0] == "train.eval_every=500"  # in the flag's place, before the evaluator's keys


def _final(layout, name: str, correct: list[bool]) -> None:  # type: ignore[no-untyped-def]
    """A final evaluation as the evaluator writes it: one-object accuracy per prompt."""
    import json

    ids = [f"p{i}" for i in range(len(correct))]
    per_item = {"ids": ids, "metrics": {"one_object_accuracy": [float(c) for c in correct]}}
    layout.final(name).parent.mkdir(parents=True, exist_ok=True)
    layout.final(name).write_text(json.dumps({"prompts": len(ids), "per_item": per_item}))


def test_final_models_are_compared_to_the_reference_prompt_by_prompt_with_computed_verdicts(
    curve: ModuleType, tmp_path: Path
) -> None:
    import random

    layout = curve.Layout(tmp_path)
    rng = random.Random(0)
    plan = {"reference": "ref.s0", "recipes": {}}
    for seed in (0, 1):
        same = [rng.random() < 0.6 for _ in range(300)]
        _final(layout, f"ref.s{seed}", same)
        _final(layout, f"same.s{seed}", [c if rng.random() < 0.9 else not c for c in same])  # the same, some noise
        _final(layout, f"better.s{seed}", [c or rng.random() < 0.8 for c in same])  # most misses fixed
        for stem in ("ref", "same", "better"):
            plan["recipes"][f"{stem}.s{seed}"] = {}
    final = curve.final_comparisons(plan, layout)
    assert final["reference"] == "ref"
    rows = final["recipes"]
    assert rows["ref"]["against_reference"] == {} and rows["better"]["paired_seeds"] == [0, 1]
    better = rows["better"]["against_reference"]["one_object_accuracy"]
    same = rows["same"]["against_reference"]["one_object_accuracy"]
    assert better["verdict"] == "a better" and better["paired"] and better["difference"]["low"] > 0
    assert same["verdict"] == "not separable at this budget"
    assert rows["ref"]["accuracy"].get("two_object_accuracy") is None  # no per-prompt values: no interval
    text = "\n".join(curve.final_markdown(final))
    assert "| better | 0, 1 |" in text and "a better: +" in text


def test_a_recipe_without_seeds_is_its_own_stem_at_seed_0(curve: ModuleType) -> None:
    assert curve.stem_and_seed("lr.s2") == ("lr", 2)
    assert curve.stem_and_seed("lr") == ("lr", 0)
    assert curve.stem_and_seed("w.s") == ("w.s", 0)


def test_negative_final_prompts_exit_2(curve: ModuleType, tmp_path: Path, capsys) -> None:
    assert curve.main(["--out", str(tmp_path / "o"), "--recipe", "a", "--final-prompts", "-1"]) == 2
    assert "--final-prompts -1" in capsys.readouterr().err


def test_the_mean_curve_averages_each_recipes_seeds_at_the_steps_all_of_them_evaluated(curve: ModuleType) -> None:
    def points(*rows: tuple[int, float]) -> list[dict[str, float]]:
        return [{"step": s, "one_object_accuracy": a, "two_object_accuracy": a / 2, "holdout_accuracy": a}
                for s, a in rows]

    result = {"recipes": {"a.s0": {"points": points((500, 0.2), (1000, 0.6))},
                          "a.s1": {"points": points((500, 0.4))},  # stopped early: step 1000 is left out
                          "b": {"points": points((500, 0.9))}}}
    means = curve.mean_over_seeds(result)
    assert list(means) == ["a"]
    assert [p["step"] for p in means["a"]] == [500]
    assert means["a"][0]["one_object_accuracy"] == pytest.approx(0.3)
    assert means["a"][0]["two_object_accuracy"] == pytest.approx(0.15)


def test_the_final_chart_draws_one_row_per_recipe_and_nothing_without_comparisons(
    curve: ModuleType, tmp_path: Path
) -> None:
    from PIL import Image

    diff = {"difference": {"value": 0.1, "low": 0.02, "high": 0.2}, "verdict": "a better", "paired": True}
    final = {"reference": "ref", "recipes": {"ref": {"against_reference": {}},
                                             "lr": {"against_reference": {"one_object_accuracy": diff}}}}
    path = curve.final_chart(final, tmp_path, "t")
    assert path == tmp_path / "final.png"
    with Image.open(path) as img:
        assert img.width > 600 and img.height > 100
        # the row is drawn in the "a better" colour somewhere in the first panel
        assert (0, 140, 90) in {img.getpixel((x, y)) for x in range(img.width // 3) for y in range(img.height)}
    assert curve.final_chart({"reference": "ref", "recipes": {"ref": {"against_reference": {}}}}, tmp_path / "x",
                             "t") is None


def test_one_object_misses_are_split_by_the_size_the_prompt_says(tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("one_object_by_size", ROOT / "benchmarks" / "one_object_by_size.py")
    assert spec is not None and spec.loader is not None
    by_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(by_size)
    ids = [
        "a small red square in the center",
        "a red square at the top",
        "a blue square at the top",
        "a red circle at the top and a blue square at the left",
    ]
    metrics = {"one_object_accuracy": [1.0, 0.0, 1.0, None], "one_object_shape_accuracy": [1.0, 0.0, 0.0, None]}
    final = {"per_item": {"ids": ids, "metrics": metrics}}
    paths = [tmp_path / "a.json", tmp_path / "b.json"]
    for path in paths:
        path.write_text(json.dumps(final))
    cells = by_size.split(paths)
    assert cells == {("none", "square"): (4, 0.5, 0.0), ("small", "square"): (2, 1.0, 1.0)}
    assert by_size.main([str(p) for p in paths]) == 0
    assert "| none | square | 4 | 0.50 | 0.00 |" in capsys.readouterr().out
