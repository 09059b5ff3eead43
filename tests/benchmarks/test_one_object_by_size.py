"""benchmarks/one_object_by_size.py: where one-object prompts fail, from runs' per-prompt evaluations."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType


def test_one_object_misses_are_split_by_the_size_the_prompt_says(
    tmp_path: Path, capsys, benchmark_script: Callable[[str], ModuleType]
) -> None:
    by_size = benchmark_script("one_object_by_size")
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
