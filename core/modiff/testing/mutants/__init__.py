"""Mutants of the toy components: the contracts tested on mistakes they must catch.

A contract that passes a component says little unless it can fail. Each
mutant here is one of the reference toys (:mod:`modiff.testing.toys`) with one
plausible mistake a plugin author makes: an input ignored, a leak across the
batch, a flipped sign or an off-by-one, the global random state, a wrong
dtype or device, state kept between calls, padding that leaks, a wrong shape
for odd sizes. Every contract must fail for every mutant; modiff's own test
suite (``tests/contracts/test_contract_mutants.py``) checks that, and that each mutant
is caught by the contract test it names. A new contract test comes with the
mutant it kills::

    from modiff.testing.mutants import MUTANTS, killing_tests

    for m in MUTANTS:
        print(m.role, m.name, killing_tests(m))
"""

from __future__ import annotations

from . import conditioner, data, denoiser, encoder, evaluator, scheduler, text_embedder  # noqa: F401 (registers)
from .base import MUTANTS, Mutant, MutantPlugin, mutant
from .reference import REFERENCE_CONTRACTS, REGISTRY, contracts_for
from .runner import Outcome, killing_tests, run_contract, run_mutant

__all__ = [
    "MUTANTS",
    "REFERENCE_CONTRACTS",
    "REGISTRY",
    "Mutant",
    "MutantPlugin",
    "Outcome",
    "contracts_for",
    "killing_tests",
    "mutant",
    "run_contract",
    "run_mutant",
]
