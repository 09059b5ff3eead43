"""modiff.stats: intervals against known answers, and verdicts that follow the data.

The calibration tests draw many pairs of simulated cells: from one
distribution, a 95 % interval of the difference must exclude zero about 5 % of
the time (never "separated" as a rule); from clearly different ones, almost
always.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from modiff import stats
from modiff.stats import A_BETTER, B_BETTER, NOT_SEPARABLE, Cost, seed_items

PROMPTS = [f"prompt {i}" for i in range(120)]


def cell(rng: np.random.Generator, p: float | np.ndarray, seeds=(0, 1, 2), ids=PROMPTS) -> list[stats.SeedItems]:
    """A cell whose per-prompt outcomes are Bernoulli(p) (p may differ per prompt)."""
    probs = np.broadcast_to(np.asarray(p, dtype=float), (len(ids),))
    return [seed_items(s, ids, (rng.random(len(ids)) < probs).astype(int).tolist()) for s in seeds]


# -- the point estimate and the per-item formats -------------------------------------------------


def test_a_list_is_a_mean_of_counted_items_and_num_den_is_a_mean_of_class_ratios() -> None:
    means = seed_items(0, ["a", "b", "c", "d"], [1, 0, None, 1])
    assert stats.point([means]) == pytest.approx(2 / 3)
    iou = seed_items(0, ["x", "y"], {"num": [[2, 0, 1], [2, 0, 0]], "den": [[4, 0, 1], [4, 0, 3]]})
    # class 0: 4/8, class 1: never present (skipped), class 2: 1/4
    assert stats.point([iou]) == pytest.approx((0.5 + 0.25) / 2)
    # the cell's value is the mean of its seeds' values
    two = [seed_items(0, ["a"], [1]), seed_items(1, ["a", "b"], [0, 1])]
    assert stats.point(two) == pytest.approx((1 + 0.5) / 2)
    with pytest.raises(ValueError, match="3 values for 2 items"):
        seed_items(0, ["a", "b"], [1, 0, 1])


def test_no_counted_item_has_no_estimate() -> None:
    empty = [seed_items(0, ["a", "b"], [None, None])]
    assert stats.bootstrap(empty) is None
    result = stats.compare(empty, [seed_items(0, ["a", "b"], [1, 0])])
    assert result.verdict == NOT_SEPARABLE and result.difference is None and "no counted items in a" in result.note


# -- the bootstrap interval ---------------------------------------------------------------------


def test_the_interval_of_a_large_binomial_sample_matches_the_normal_approximation() -> None:
    rng = np.random.default_rng(1)
    ids = [str(i) for i in range(2000)]
    one = cell(rng, 0.3, seeds=(0,), ids=ids)
    est = stats.bootstrap(one, rng=2)
    p = est.value
    half = 1.96 * math.sqrt(p * (1 - p) / len(ids))
    assert est.low == pytest.approx(p - half, abs=0.006)
    assert est.high == pytest.approx(p + half, abs=0.006)


def test_constant_outcomes_have_a_zero_width_interval() -> None:
    ones = [seed_items(s, PROMPTS, [1] * len(PROMPTS)) for s in range(3)]
    est = stats.bootstrap(ones)
    assert (est.value, est.low, est.high) == (1.0, 1.0, 1.0)
    zeros = [seed_items(s, PROMPTS, [0] * len(PROMPTS)) for s in range(3)]
    result = stats.compare(zeros, zeros)
    assert result.verdict == NOT_SEPARABLE and result.difference.low == result.difference.high == 0.0


def test_seed_to_seed_spread_widens_the_interval() -> None:
    """Seeds that disagree (one lucky, one not) must give a wider interval than
    seeds that agree, at the same number of prompts: the seeds are resampled too."""
    rng = np.random.default_rng(3)
    agree = cell(rng, 0.5)
    disagree = [cell(rng, p, seeds=(s,))[0] for s, p in ((0, 0.2), (1, 0.5), (2, 0.8))]
    def width(e: stats.Interval) -> float:
        return e.high - e.low

    assert width(stats.bootstrap(disagree)) > 2 * width(stats.bootstrap(agree))


def test_null_pairs_are_not_separable_at_the_nominal_rate_and_different_ones_are() -> None:
    """Calibration: two cells from the same distribution are called different
    in about 5 % of draws (not more than 12 % of 200), clearly different ones in
    all but a few."""
    rng = np.random.default_rng(4)
    difficulty = rng.uniform(0.1, 0.9, len(PROMPTS))  # prompts differ; both cells see the same ones
    null, different = [], []
    for _ in range(200):
        a, b = cell(rng, difficulty), cell(rng, difficulty)
        null.append(stats.compare(a, b, resamples=800, rng=rng).verdict)
        better = cell(rng, np.clip(difficulty + 0.2, 0, 1))
        different.append(stats.compare(better, b, resamples=800, rng=rng).verdict)
    assert null.count(NOT_SEPARABLE) >= 176, null.count(NOT_SEPARABLE)
    assert different.count(A_BETTER) >= 190 and different.count(B_BETTER) == 0


def test_the_verdict_follows_the_data_in_both_directions() -> None:
    rng = np.random.default_rng(5)
    good, bad = cell(rng, 0.8), cell(rng, 0.3)
    forward = stats.compare(good, bad)
    backward = stats.compare(bad, good)
    assert forward.verdict == A_BETTER and backward.verdict == B_BETTER
    assert forward.paired and forward.difference.low > 0
    assert forward.difference.value == pytest.approx(-backward.difference.value)
    # when lower is better the same interval reads the other way
    assert stats.compare(good, bad, higher_is_better=False).verdict == B_BETTER


def test_pairing_removes_the_shared_difficulty_of_prompts() -> None:
    """Two cells that fail on the same hard prompts differ by a little; paired, the
    difference is resolved; the same numbers with the pairing broken are not."""
    n = 400
    ids = [f"p{i}" for i in range(n)]
    easy = np.arange(n) % 2 == 0
    a_out = easy.astype(int)
    b_out = a_out.copy()
    b_out[np.flatnonzero(easy)[:15]] = 0  # b misses 15 of the easy ones
    a = [seed_items(0, ids, a_out.tolist())]
    b = [seed_items(0, ids, b_out.tolist())]
    paired = stats.compare(a, b)
    assert paired.paired and paired.verdict == A_BETTER
    shuffled = [seed_items(0, [f"q{i}" for i in range(n)], b_out.tolist())]
    unpaired = stats.compare(a, shuffled)
    assert not unpaired.paired and unpaired.verdict == NOT_SEPARABLE
    assert unpaired.difference.value == pytest.approx(paired.difference.value)


def test_seeds_with_their_own_items_are_resampled_on_their_own() -> None:
    """Held-out images drawn per seed (different ids per seed) still pair two cells
    seed by seed."""
    rng = np.random.default_rng(6)
    per_seed = [[f"s{s}-{i}" for i in range(150)] for s in range(3)]
    a = [seed_items(s, per_seed[s], (rng.random(150) < 0.9).astype(int).tolist()) for s in range(3)]
    b = [seed_items(s, per_seed[s], (rng.random(150) < 0.5).astype(int).tolist()) for s in range(3)]
    result = stats.compare(a, b)
    assert result.paired and result.verdict == A_BETTER


# -- per-seed numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("df", "expected"), [(1, 12.706), (2, 4.303), (5, 2.571), (10, 2.228), (30, 2.042), (1e6, 1.960)]
)
def test_t_quantiles_match_the_tables(df: float, expected: float) -> None:
    assert stats.t_quantile(0.975, df) == pytest.approx(expected, abs=1e-3)
    assert stats.t_quantile(0.025, df) == pytest.approx(-expected, abs=1e-3)


def test_t_interval_of_three_values() -> None:
    est = stats.t_interval([10.0, 12.0, 14.0])
    half = 4.303 * 2.0 / math.sqrt(3)
    assert (
        est.value == 12.0
        and est.low == pytest.approx(12 - half, abs=1e-3)
        and est.high == pytest.approx(12 + half, abs=1e-3)
    )
    assert stats.t_interval([5.0]).low == 5.0


def test_costs_of_one_distribution_are_not_separable_and_far_apart_ones_are() -> None:
    rng = np.random.default_rng(7)
    calls = []
    for _ in range(300):
        a, b = rng.normal(300, 40, 3), rng.normal(300, 40, 3)
        calls.append(stats.compare_costs(Cost(tuple(a), (900.0,) * 3), Cost(tuple(b), (900.0,) * 3)).verdict)
    assert calls.count(NOT_SEPARABLE) >= 270
    fast = Cost((100.0, 110.0, 120.0), (900.0,) * 3)
    slow = Cost((400.0, 430.0, 410.0), (900.0,) * 3)
    assert stats.compare_costs(fast, slow).verdict == A_BETTER  # lower cost is better
    assert stats.compare_costs(slow, fast).verdict == B_BETTER


def test_a_cell_that_never_reaches_the_level_loses_only_if_the_other_got_there_within_its_budget() -> None:
    reached = Cost((100.0, 150.0, 120.0), (900.0,) * 3)
    never = Cost((None, None, None), (600.0, 610.0, 605.0))
    result = stats.compare_costs(reached, never)
    assert result.verdict == A_BETTER and result.difference.high == pytest.approx(150 - 600)
    assert stats.compare_costs(never, reached).verdict == B_BETTER
    late = Cost((700.0, 650.0, 800.0), (900.0,) * 3)
    assert stats.compare_costs(late, never).verdict == NOT_SEPARABLE  # never may have got there later
    some = Cost((100.0, None, 120.0), (900.0,) * 3)
    mixed = stats.compare_costs(some, never)
    assert mixed.verdict == NOT_SEPARABLE and "a: 2/3" in mixed.note
    assert stats.compare_costs(never, never).verdict == NOT_SEPARABLE


def test_seconds_to_reach_interpolates_between_evaluations() -> None:
    curve = [(100.0, 0.2), (200.0, 0.6), (300.0, 0.9), (400.0, 0.85)]
    assert stats.seconds_to_reach(curve, 0.8) == pytest.approx(200 + 100 * (0.2 / 0.3))
    assert stats.seconds_to_reach(curve, 0.1) == 100.0
    assert stats.seconds_to_reach(curve, 0.95) is None
    assert stats.seconds_to_reach([], 0.5) is None


def test_verdict_needs_zero_outside_the_interval() -> None:
    assert stats.verdict(0.01, 0.2) == A_BETTER
    assert stats.verdict(-0.2, -0.01) == B_BETTER
    assert stats.verdict(-0.01, 0.2) == NOT_SEPARABLE
    assert stats.verdict(0.0, 0.2) == NOT_SEPARABLE
    assert stats.verdict(math.nan, math.nan) == NOT_SEPARABLE


def test_wilson_matches_the_textbook_and_stays_in_the_unit_interval() -> None:
    assert stats.normal_quantile(0.975) == pytest.approx(1.959964, abs=1e-5)
    i = stats.wilson(41, 75)  # 0.547: Wilson 95 % [0.434, 0.654] (computed by hand from the formula)
    assert i is not None and i.value == pytest.approx(41 / 75)
    assert (i.low, i.high) == (pytest.approx(0.4345, abs=1e-3), pytest.approx(0.6543, abs=1e-3))
    zero, one = stats.wilson(0, 20), stats.wilson(20, 20)
    assert zero.low == pytest.approx(0.0, abs=1e-12) and 0.1 < zero.high < 0.2
    assert one.high == pytest.approx(1.0, abs=1e-12) and 0.8 < one.low < 0.9
    assert stats.wilson(0, 0) is None
    wide, narrow = stats.wilson(5, 10), stats.wilson(500, 1000)
    assert wide.high - wide.low > 5 * (narrow.high - narrow.low)
