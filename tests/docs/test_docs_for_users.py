"""The documentation speaks to users: no paths outside the repository, no talk of
how the project is developed, a short recipe guide, and the full record of
levers written by a script from the committed result files."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: What a user's documentation does not say, each with why (case-insensitive).
NOT_FOR_USERS = {
    r"(?<![\w.-])(?:\.\./)*shared/": "a folder that is not in the repository",
    r"\bFINDINGS\b|/tmp/prompts|/work/main": "a file outside the repository",
    r"\bissues? #?\d+|\bthe [\w-]+ issue\b|\bissue (?:asks|allows|names)\b": "the project's issues",
    r"\b(?:never|not) committed\b|\bscratch (?:scripts?|experiments?)\b": "work that is not in the repository",
    r"\blent\b|\blender\b|\bdevice tool\b|\bproject's sessions?\b": "how the project's developers are given machines",
}


def _hits(text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for pattern, why in NOT_FOR_USERS.items():
            match = re.search(pattern, line, re.IGNORECASE)
            if match:
                found.append(f"{number}: {match[0]!r} ({why})")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_a_page_speaks_to_users(page: Path) -> None:
    hits = _hits(page.read_text(encoding="utf-8"))
    assert not hits, f"{page.relative_to(ROOT)}:\n" + "\n".join(hits)


@pytest.mark.parametrize("text", [
    "The world follows `shared/SHAPES.md`.", "see ../shared/seeds/", "the ablation issue asks 0.8",
    "issue 40's target", "a scratch experiment, not committed", "A session that is lent one runs it",
])
def test_the_check_finds_what_it_looks_for(text: str) -> None:
    assert _hits(text)


@pytest.mark.parametrize("text", [
    "shared settings: `train.lr`", "weights shared between the two", "a session of MLflow's UI",
    "from scratch, more labels help", "silently ignored", "committed result files",
])
def test_the_check_leaves_ordinary_words_alone(text: str) -> None:
    assert not _hits(text)


@pytest.fixture(scope="module")
def results_page(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("results_page")


def test_the_results_page_is_what_the_result_files_give(results_page: ModuleType) -> None:
    committed = (ROOT / "docs" / "recipe-results.md").read_text(encoding="utf-8")
    assert committed == results_page.page(), "docs/recipe-results.md is stale: run python benchmarks/results_page.py"


def test_the_results_page_has_every_lever_of_every_sweep(results_page: ModuleType) -> None:
    text = results_page.page()
    for name, _ in results_page.SWEEPS:
        sweep = results_page.read_sweep(results_page.RESULTS / f"{name}.md")
        assert sweep.settings, name
        for recipe in sweep.settings:
            assert f"| {results_page.stem(recipe)} |" in text, (name, recipe)
    for lever in ("`scheduler.loss_weighting=\"none\"`", "`denoiser.attention_levels=[0]`", "`train.final_lr=0`"):
        assert lever in text
    images = re.findall(r"\]\((images/[^)]+)\)", text)
    assert images and all((ROOT / "docs" / image).is_file() for image in images), images


def test_a_lever_is_the_settings_that_differ_from_the_reference(results_page: ModuleType) -> None:
    ref = ["base.toml", "train.lr=2e-3", "run.seed=0", "denoiser.heads=1"]
    assert results_page.lever(["base.toml", "train.lr=1e-3", "run.seed=1", "denoiser.heads=1"], ref) == \
        "`train.lr=1e-3`"
    assert results_page.lever(["base.toml", "train.lr=2e-3"], ref) == "without `denoiser.heads`"


def test_the_recipe_page_is_a_short_guide_that_links_the_results() -> None:
    recipe = (ROOT / "docs" / "recipe.md").read_text(encoding="utf-8")
    assert len(recipe.splitlines()) <= 160
    assert "(recipe-results.md)" in recipe
    shown = re.sub(r"<!-- /?result[^>]*-->", "", recipe)  # the number markers are not what a reader sees
    assert max(len(row) for row in shown.splitlines() if row.startswith("|")) < 200, "a table cell is an essay"
    assert not re.search(r"`att0`|`cand`|`w32-tt`", recipe), "run labels belong on the results page"
