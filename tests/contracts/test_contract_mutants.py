"""The contracts can fail: every mutant of every toy is caught, by the test it names.

``modiff.testing.mutants`` holds, per role, the reference toy with one
plausible mistake each. Here:

* the toys pass every configuration of their own contract (pytest runs the
  ``Test*`` classes below like any plugin's contract tests);
* each mutant is run against the contract tests it names, in-process, with
  few Hypothesis examples, and must fail every one of them; since a mutant is
  caught as soon as one contract test fails, this is "every contract against
  every mutant" with the answer known early;
* every contract test has a mutant that it catches (or a written reason why
  it cannot have one), so a new contract test comes with its mutant;
* the full matrix (every contract test of every configuration against every
  mutant) runs in the ``slow`` tier.

The runner calls the contract classes' test methods directly rather than
starting a pytest session per mutant (``pytester``): a session costs about
a second of collection and plugin loading, a direct call milliseconds, and
the outcome (passed, failed with its message, skipped with its reason) is
the same. ``python -m modiff.testing.mutants`` prints the matrix.
"""

from __future__ import annotations

import random

import pytest
import torch

from modiff.testing.mutants import MUTANTS, REFERENCE_CONTRACTS, Mutant, run_mutant
from modiff.testing.mutants.base import KINDS
from modiff.testing.mutants.reference import (
    ToyConditionerContract,
    ToyConditionerWithImageContract,
    ToyDatasetContract,
    ToyDenoiserContract,
    ToyDeterministicSchedulerContract,
    ToyEncoderContract,
    ToyEvaluatorContract,
    ToyJointTextEmbedderContract,
    ToyPixelEncoderContract,
    ToySamplingEncoderContract,
    ToySchedulerContract,
    ToyTextEmbedderContract,
)
from modiff.testing.mutants.runner import contract_tests, killing_tests

ROLES = tuple(REFERENCE_CONTRACTS)

#: Contract tests without a mutant of their own, and why.
WITHOUT_MUTANT: dict[tuple[str, str], str] = {
    ("text_embedder", "test_restores_from_assets_and_state_dict"): (
        "the toy has no fitted or trained state: a restore of it cannot go wrong"
    ),
    ("conditioner", "test_is_a_conditioner"): "",
    ("conditioner", "test_text_is_ignored_when_unused"): "the toy conditions on the text (uses_text = True)",
    ("denoiser", "test_is_a_denoiser"): "",
    ("evaluator", "test_is_an_evaluator"): "",
}
"""``test_is_a_*`` only check that the protocol's attributes exist (a mutant without them
would not be a component of the role at all); the others say why."""


# -- the toys pass their contracts, configuration by configuration -------------------


class TestToyDataset(ToyDatasetContract):
    pass


class TestToyEncoder(ToyEncoderContract):
    pass


class TestToyPixelEncoder(ToyPixelEncoderContract):
    pass


class TestToySamplingEncoder(ToySamplingEncoderContract):
    pass


class TestToyTextEmbedder(ToyTextEmbedderContract):
    pass


class TestToyJointTextEmbedder(ToyJointTextEmbedderContract):
    pass


class TestToyConditioner(ToyConditionerContract):
    pass


class TestToyConditionerWithImage(ToyConditionerWithImageContract):
    pass


class TestToyDenoiser(ToyDenoiserContract):
    pass


class TestToyScheduler(ToySchedulerContract):
    pass


class TestToyDeterministicScheduler(ToyDeterministicSchedulerContract):
    pass


class TestToyEvaluator(ToyEvaluatorContract):
    pass


# -- every mutant is caught ----------------------------------------------------------


@pytest.mark.parametrize("m", MUTANTS, ids=lambda m: f"{m.role}:{m.name}")
def test_the_mutant_is_caught_by_the_tests_it_names(m: Mutant) -> None:
    outcomes = run_mutant(m, only_killers=True)
    assert outcomes, f"{m.name} names no test of the {m.role} contract: {m.killed_by}"
    failed = {o.test for o in outcomes if o.status == "failed"}
    survived = [f"{o.contract}.{o.test} ({o.status}{': ' + o.message if o.message else ''})" for o in outcomes]
    missing = [name for name in m.killed_by if name not in failed]
    assert not missing, f"{m.name} ({m.mistake}) survives {missing}: {survived}"


@pytest.mark.parametrize("role", ROLES)
def test_every_role_has_eight_mutants_of_several_kinds(role: str) -> None:
    mine = [m for m in MUTANTS if m.role == role]
    assert len(mine) >= 8, f"{role} has {len(mine)} mutants; at least 8 are required"
    assert len({m.kind for m in mine}) >= 4, f"{role}'s mutants are of too few kinds: {sorted({m.kind for m in mine})}"
    assert all(m.kind in KINDS and m.mistake for m in mine)


@pytest.mark.parametrize("role", ROLES)
def test_every_contract_test_has_a_mutant_it_catches(role: str) -> None:
    """A contract test comes with the mutant it kills (or a reason it cannot have one)."""
    tests = {name for cls in REFERENCE_CONTRACTS[role] for name in contract_tests(cls)}
    named = {name for m in MUTANTS if m.role == role for name in m.killed_by}
    exempt = {name for (r, name) in WITHOUT_MUTANT if r == role}
    assert not (named - tests), f"mutants name tests the {role} contract does not have: {sorted(named - tests)}"
    assert not (exempt & named), f"tests listed as without a mutant have one: {sorted(exempt & named)}"
    assert not (exempt - tests), f"WITHOUT_MUTANT lists tests that do not exist: {sorted(exempt - tests)}"
    lonely = sorted(tests - named - exempt)
    assert not lonely, f"{role} contract tests that no mutant shows can fail: {lonely}"


@pytest.mark.slow
@pytest.mark.parametrize("role", ROLES)
def test_every_contract_against_every_mutant(role: str) -> None:
    """The full matrix: every test of every configuration of the role against each of its
    mutants; each is caught, and by (at least) the tests it names."""
    for m in (m for m in MUTANTS if m.role == role):
        outcomes = run_mutant(m)
        kills = killing_tests(outcomes)
        assert kills, f"{m.name} ({m.mistake}) survives every contract test"
        missing = [name for name in m.killed_by if not any(k.endswith("." + name) for k in kills)]
        assert not missing, f"{m.name} is not caught by {missing}; it is caught by {kills}"


#: Python ``random`` seeds after which the old corpus check (two reads compared) let the
#: corpus-shuffling mutant through: a shuffle of the toy's six captions can come out in order.
STATES_THAT_HID_A_MUTANT = (28, 112, 126, 218, 232)


@pytest.mark.parametrize("mutant", [m for m in MUTANTS if m.kind == "global random state"], ids=lambda m: m.name)
def test_a_global_state_mutant_is_caught_whatever_state_earlier_tests_left(mutant: Mutant) -> None:
    """Whether a mutant that draws from a global generator is caught must not depend on
    what an earlier test in the same worker did to that generator (xdist deals tests out
    differently from run to run)."""
    python, torch_state = random.getstate(), torch.random.get_rng_state()
    try:
        for seed in STATES_THAT_HID_A_MUTANT:
            random.seed(seed)
            torch.manual_seed(seed)
            kills = killing_tests(run_mutant(mutant, only_killers=True))
            assert kills, f"{mutant.name} survives with the global generators seeded {seed}"
    finally:
        random.setstate(python)
        torch.random.set_rng_state(torch_state)
