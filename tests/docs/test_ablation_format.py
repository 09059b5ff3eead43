"""Issue 37: the ablation file's format has its own JSON Schema (``modiff
settings schema --ablation``, beside the settings' ``modiff settings schema``)
and docs/ablations.md documents every key of it, checked against the model."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from modiff.ablation import AblationFile
from modiff.cli import main

ROOT = Path(__file__).resolve().parents[2]


def schema_from_the_command(capsys) -> dict:
    assert main(["settings", "schema", "--ablation"]) == 0
    return json.loads(capsys.readouterr().out)


def test_the_command_prints_the_ablation_files_schema(capsys) -> None:
    schema = schema_from_the_command(capsys)
    assert schema["title"] == "modiff ablation file"
    assert set(schema["properties"]) == set(AblationFile.model_fields)
    assert schema["required"] == ["base"] and schema["additionalProperties"] is False
    assert {"Variant", "Threshold", "Compare"} <= set(schema["$defs"])


def test_the_committed_ablation_files_use_only_the_schemas_keys(capsys) -> None:
    schema = schema_from_the_command(capsys)
    files = sorted((ROOT / "ablations").glob("*.toml"))
    assert files
    for path in files:
        data = tomllib.loads(path.read_text())
        assert set(data) <= set(schema["properties"]), path
        assert "base" in data, path


def format_section() -> str:
    text = (ROOT / "docs" / "ablations.md").read_text()
    match = re.search(r"^## The ablation file\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, "docs/ablations.md has no '## The ablation file' section"
    return match.group(1)


def test_docs_ablations_md_documents_every_key_of_the_format(capsys) -> None:
    section = format_section()
    schema = schema_from_the_command(capsys)
    tables = {"variant": "Variant", "threshold": "Threshold", "compare": "Compare", "timing": "Timing"}
    missing = [k for k in schema["properties"] if f"`{k}`" not in section and f"`[{k}]`" not in section
               and f"`[[{k}]]`" not in section]
    for table, model in tables.items():
        starts = (f"| `[{table}]`", f"| `[[{table}]]`")
        row = next((line for line in section.splitlines() if line.startswith(starts)), "")
        missing += [f"{table}.{k}" for k in schema["$defs"][model]["properties"] if f"`{k}`" not in row]
    assert not missing, f"docs/ablations.md's format section leaves out {missing}"


def test_an_unknown_key_of_an_ablation_file_names_the_nearest_one(tmp_path: Path) -> None:
    import pytest

    from modiff.ablation import read_ablation
    from modiff.errors import SettingsError

    path = tmp_path / "typos.toml"
    path.write_text('base = "base.toml"\nseed = [0]\n[[variant]]\nname = "x"\nsett = {}\n')
    with pytest.raises(SettingsError) as info:
        read_ablation(path)
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert any("'seed'" in p and "(did you mean 'seeds'?)" in p for p in problems), problems
    assert any("'variant.0.sett'" in p and "(did you mean 'set'?)" in p for p in problems), problems


def test_every_committed_ablation_file_validates_with_every_run(capsys) -> None:
    """`modiff ablate FILE --dry-run` on each file under ablations/: every run resolves
    against the installed plugins (ablations/recipe-levers.toml regenerates the recipe's
    table of levers; a lever whose key a plugin renamed fails here, not hours into a grid)."""
    files = sorted((ROOT / "ablations").glob("*.toml"))
    assert any(p.name == "recipe-levers.toml" for p in files)
    for path in files:
        assert main(["ablate", str(path), "--dry-run"]) == 0, (path, capsys.readouterr().err)
    assert "compare 23: jit0 vs recipe" in capsys.readouterr().out
