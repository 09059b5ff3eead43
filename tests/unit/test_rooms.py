"""Every cross-package test lives in one of the rooms that tests/README.md names."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]


def rooms() -> set[str]:
    return {p.name for p in TESTS.iterdir() if p.is_dir() and not p.name.startswith(("_", "."))}


def test_no_test_file_lies_outside_a_room() -> None:
    loose = sorted(p.name for p in TESTS.glob("test_*.py"))
    assert not loose, f"put these in one of the rooms {sorted(rooms())}: {loose}"


def test_every_room_is_described_in_the_readme_and_holds_tests() -> None:
    readme = (TESTS / "README.md").read_text()
    for room in rooms():
        assert f"`{room}/`" in readme, f"tests/README.md does not describe tests/{room}/"
        assert any((TESTS / room).glob("test_*.py")), f"tests/{room}/ holds no test file"
