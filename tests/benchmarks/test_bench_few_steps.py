"""benchmarks/bench_few_steps.py (issue 40) on a toy run: both configurations
are timed in one process, and the JSON reports each one's denoiser rows per
image as counted, not assumed (4 lcm steps without guidance: 4; 10 UniPC
steps with the run's guidance 2.0: 20)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from modiff.cli import main as modiff_main
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("modiff_schedulers", reason="the benchmark draws with the lcm and unipc samplers")


@pytest.fixture
def bench(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("bench_few_steps")


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["scheduler"] = {"plugin": "ddim", "num_train_timesteps": 100}  # a real schedule: lcm and unipc can take it
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert modiff_main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def test_times_a_run_against_itself_and_counts_evaluations(bench: ModuleType, run: Path, tmp_path: Path) -> None:
    out = tmp_path / "few.json"
    assert bench.main([str(run), "--steps", "2,4", "--repeats", "2", "--batch", "2", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    teacher = result["teacher"]
    assert (teacher["sampler"], teacher["steps"], teacher["guidance"]) == ("unipc", 10, 2.0)
    assert teacher["denoiser_rows_per_image"] == 20  # 10 steps, guidance doubles each
    assert len(teacher["seconds"]) == 2 and teacher["seconds_per_image"] > 0
    students = {s["steps"]: s for s in result["students"]}
    assert sorted(students) == [2, 4]
    for steps, s in students.items():
        assert (s["sampler"], s["guidance"]) == ("lcm", 1.0)
        assert s["denoiser_rows_per_image"] == steps and s["evaluation_ratio"] == steps / 20
        assert s["ratio"] == pytest.approx(s["seconds_per_image"] / teacher["seconds_per_image"])
        assert s["meets_target"] == (s["ratio"] <= result["target_ratio"] == 0.25)


@pytest.mark.parametrize(
    ("args", "words"),
    [(["{missing}"], "does not exist"), (["{run}", "--steps", "0"], "--steps '0'"),
     (["{run}", "--repeats", "0"], "--repeats 0"), (["{run}", "--student-sampler", "nope"], "nope")],
)
def test_usage_mistakes_are_one_line_and_exit_2(
    bench: ModuleType, run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    argv = [a.format(run=run, missing=tmp_path / "nowhere") for a in args]
    assert bench.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_several_batch_sizes_are_timed_in_one_run_with_each_images_parts(
    bench: ModuleType, run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "few.json"
    assert bench.main([str(run), "--steps", "1,4", "--repeats", "2", "--batch", "1,3", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [b["batch"] for b in result["batches"]] == [1, 3]
    assert result["teacher"] == result["batches"][0]["teacher"]  # the top-level keys stay the first batch's
    for batch in result["batches"]:
        teacher = batch["teacher"]
        assert len(teacher["seconds"]) == 2
        for config in (teacher, *batch["students"]):
            parts = config["parts"]
            assert set(parts) == {"conditioning", "denoiser", "decode", "other", "total"}
            assert all(v >= 0 for v in parts.values())
            assert parts["total"] == pytest.approx(sum(v for k, v in parts.items() if k != "total"))
        one, four = batch["students"]
        assert (one["steps"], four["steps"]) == (1, 4)
        assert four["ratio"] == pytest.approx(four["seconds_per_image"] / teacher["seconds_per_image"])
