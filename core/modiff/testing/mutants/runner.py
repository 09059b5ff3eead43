"""Running a contract's tests in-process, outside a pytest session.

Each test method of a contract class is called directly on a fresh instance
(the way pytest calls it), with a temporary directory for the one fixture
contracts use (``tmp_path``). That is much faster than a pytest session per
mutant (no collection, no plugin loading), and it reports, per test, passed,
failed (with the message) or skipped (with the reason). Hypothesis tests run
with fewer examples and without shrinking: a mutant needs one failing
example, not the smallest one.
"""

from __future__ import annotations

import inspect
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import Phase
from hypothesis import settings as hsettings

from ..contracts import Contract
from .base import Mutant
from .reference import contracts_for


@dataclass(frozen=True)
class Outcome:
    """What one contract test did: ``passed``, ``failed`` or ``skipped``, and why."""

    contract: str
    test: str
    status: str
    message: str = ""


def contract_tests(cls: type[Contract]) -> list[str]:
    """The names of a contract class's test methods, in definition order."""
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if name.startswith("test_") and callable(value) and name not in names:
                names.append(name)
    return names


@contextmanager
def fewer_examples(function: object, max_examples: int) -> Iterator[None]:
    """Run a Hypothesis test with at most ``max_examples`` examples and no shrinking."""
    inner = getattr(function, "__func__", function)
    if not hasattr(inner, "hypothesis"):
        yield
        return
    before = inner._hypothesis_internal_use_settings  # type: ignore[attr-defined]
    inner._hypothesis_internal_use_settings = hsettings(  # type: ignore[attr-defined]
        before,
        max_examples=min(max_examples, before.max_examples),
        phases=[Phase.explicit, Phase.generate],
        print_blob=False,
    )
    try:
        yield
    finally:
        inner._hypothesis_internal_use_settings = before  # type: ignore[attr-defined]


def run_test(cls: type[Contract], name: str, *, max_examples: int = 3) -> Outcome:
    """Run one test method of ``cls`` on a fresh instance."""
    instance = cls()
    method = getattr(instance, name)
    params = [p for p in inspect.signature(method).parameters if p != "self"]
    unknown = set(params) - {"tmp_path"}
    if unknown:
        raise TypeError(f"{cls.__name__}.{name} asks for fixtures the runner does not provide: {sorted(unknown)}")
    with tempfile.TemporaryDirectory(prefix="modiff-mutant-") as tmp:
        kwargs = {"tmp_path": Path(tmp)} if "tmp_path" in params else {}
        try:
            with fewer_examples(method, max_examples), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a mutant's warnings are noise here; pytest.warns still records
                method(**kwargs)
        except pytest.skip.Exception as exc:
            return Outcome(cls.__name__, name, "skipped", str(exc))
        except (Exception, pytest.fail.Exception) as exc:  # noqa: BLE001 (any error is the test failing)
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            return Outcome(cls.__name__, name, "failed", f"{type(exc).__name__}: {first}"[:300])
    return Outcome(cls.__name__, name, "passed")


def run_contract(
    cls: type[Contract], *, first: Sequence[str] = (), stop_at_failure: bool = False, max_examples: int = 3
) -> list[Outcome]:
    """Every test of ``cls`` (those named in ``first`` before the others); with
    ``stop_at_failure``, stop at the first failing one."""
    names = contract_tests(cls)
    order = [n for n in first if n in names] + [n for n in names if n not in first]
    outcomes: list[Outcome] = []
    for name in order:
        outcomes.append(run_test(cls, name, max_examples=max_examples))
        if stop_at_failure and outcomes[-1].status == "failed":
            break
    return outcomes


def run_mutant(m: Mutant, *, only_killers: bool = False, max_examples: int = 3) -> list[Outcome]:
    """Every contract test of every toy configuration of the mutant's role, run on the mutant
    (with ``only_killers``, just the tests the mutant names)."""
    outcomes: list[Outcome] = []
    for cls in contracts_for(m.role, m.name):
        if only_killers:
            outcomes += [
                run_test(cls, name, max_examples=max_examples) for name in m.killed_by if name in contract_tests(cls)
            ]
        else:
            outcomes += run_contract(cls, first=m.killed_by, max_examples=max_examples)
    return outcomes


def killing_tests(outcomes: Sequence[Outcome]) -> list[str]:
    """The tests that failed, each once, as ``Contract.test``."""
    return sorted({f"{o.contract}.{o.test}" for o in outcomes if o.status == "failed"})
