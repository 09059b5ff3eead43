"""benchmarks/learning_curve.py's recipe seeds: ``--seeds`` trains each recipe
once per run seed and the tables report each recipe's mean over its seeds."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def curve() -> ModuleType:
    spec = importlib.util.spec_from_file_location("learning_curve", ROOT / "benchmarks" / "learning_curve.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


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
