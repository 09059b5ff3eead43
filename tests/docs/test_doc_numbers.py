"""Every marked number in README.md and docs/*.md is what its committed result file says
(benchmarks/doc_numbers.py): one source for each measured number."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def numbers(benchmark_script: Callable[[str], ModuleType]) -> ModuleType:
    return benchmark_script("doc_numbers")


def test_the_docs_numbers_agree_with_their_result_files(numbers: ModuleType) -> None:
    problems = numbers.check()
    assert not problems, "\n".join(map(str, problems))


def test_the_readme_quotes_the_demo_from_a_result_file(numbers: ModuleType) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    sources = {m["file"] for m in numbers.MARKER.finditer(readme)}
    assert sources, "the README's demo accuracies carry no result markers"
    assert all((ROOT / s).is_file() for s in sources)


def _tree(tmp_path: Path, doc: str, result: dict) -> Path:
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text(doc, encoding="utf-8")
    (tmp_path / "README.md").write_text("no numbers\n", encoding="utf-8")
    (tmp_path / "r.json").write_text(json.dumps(result), encoding="utf-8")
    return tmp_path


def test_a_number_that_disagrees_with_its_file_is_reported_with_its_page_and_line(
        numbers: ModuleType, tmp_path: Path) -> None:
    root = _tree(tmp_path, "intro\none object <!-- result r.json#new.acc pct -->87 %<!-- /result -->\n",
                 {"new": {"acc": 0.83}})
    [problem] = numbers.check(root)
    assert (problem.doc.name, problem.line, problem.shown, problem.expected) == ("page.md", 2, "87 %", "83 %")


def test_write_rewrites_the_numbers_from_their_files(numbers: ModuleType, tmp_path: Path) -> None:
    root = _tree(tmp_path, "a <!-- result r.json#rows.1.v .2f -->0.10<!-- /result --> and "
                 "<!-- result r.json#ratio x -->1.00×<!-- /result -->\n",
                 {"rows": [{"v": 0}, {"v": 0.456}], "ratio": 0.5})
    assert numbers.check(root, write=True) == []
    assert (root / "docs" / "page.md").read_text() == ("a <!-- result r.json#rows.1.v .2f -->0.46<!-- /result --> and "
                                                       "<!-- result r.json#ratio x -->0.50×<!-- /result -->\n")
    assert numbers.check(root) == []


def test_a_missing_key_or_file_is_a_problem_that_write_leaves_alone(numbers: ModuleType, tmp_path: Path) -> None:
    text = "<!-- result r.json#nope .2f -->0.10<!-- /result --> <!-- result gone.json#a .2f -->1<!-- /result -->\n"
    root = _tree(tmp_path, text, {"a": 1})
    problems = numbers.check(root, write=True)
    assert [p.expected for p in problems] == ["<no key nope>", "<unreadable: FileNotFoundError>"]
    assert (root / "docs" / "page.md").read_text() == text


def test_every_number_comes_from_a_committed_file(numbers: ModuleType) -> None:
    """A number read from a file that is not in the repository would hold only on the machine that has it."""
    import subprocess

    listed = subprocess.run(["git", "ls-files", "benchmarks"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = set(listed.stdout.splitlines())
    sources = {m["file"] for doc in numbers.documents() if doc.is_file()
               for m in numbers.MARKER.finditer(doc.read_text(encoding="utf-8"))}
    assert sources and sources <= tracked, sorted(sources - tracked)
