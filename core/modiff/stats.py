"""Intervals and verdicts for ablations: is a difference real at this budget?

Two kinds of numbers are compared.

**Per-item metrics** (accuracies, IoU). An evaluator that wants intervals
returns, beside its flat numbers, a ``per_item`` entry::

    "per_item": {
        "ids": ["a red circle", ...],           # what each item is (pairs cells)
        "metrics": {
            "one_object_accuracy": [1, 0, None, ...],    # a mean: None = not counted
            "mean_iou": {"num": [[i0, i1, ...], ...],    # a ratio of sums per class,
                         "den": [[u0, u1, ...], ...]},   # averaged over classes
        },
    }

A list is the mean of its non-``None`` values; a ``num``/``den`` pair is, per
class ``k``, ``sum(num[:, k]) / sum(den[:, k])``, averaged over the classes
whose ``den`` sum is positive (mean IoU). One seed's value is that statistic;
a cell's value is the mean over its seeds.

The interval is a percentile bootstrap that resamples both seeds and items:
prompts differ in difficulty and seeds differ in luck, and both are samples
of what a rerun would see. When every seed scored the same items (the
evaluator's fixed prompt list) the item resample is shared across seeds (a
crossed design); otherwise each seed's items are resampled on their own. A
difference between two cells that scored the same items under the same seeds
is *paired*: the same resample is applied to both, which removes the items'
shared difficulty from the comparison.

**Per-seed numbers** (seconds to reach an accuracy). Three seeds are too few
for a bootstrap (resampling three values never leaves their range), so these
get Student's t interval for one cell and Welch's for a difference, both from
``scipy.stats`` (a maintained t distribution, not one written here).

A verdict is read off the interval of ``a - b``: entirely on the better side
of zero, that cell is better; containing zero, "not separable at this
budget". Nothing here knows what a metric means beyond whether higher or
lower is better.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

A_BETTER = "a better"
B_BETTER = "b better"
NOT_SEPARABLE = "not separable at this budget"

#: Resamples per bootstrap: the 2.5 % and 97.5 % quantiles of 4000 draws move
#: by about 0.1 of a standard error between reruns.
RESAMPLES = 4000
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval (``low <= value <= high`` unless degenerate)."""

    value: float
    low: float
    high: float

    def as_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


@dataclass(frozen=True)
class Comparison:
    """``a - b`` with its interval and the verdict read from it."""

    difference: Interval | None
    verdict: str
    paired: bool = False
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "difference": None if self.difference is None else self.difference.as_dict(),
            "verdict": self.verdict,
            "paired": self.paired,
            "note": self.note,
        }


def verdict(low: float, high: float, *, higher_is_better: bool = True) -> str:
    """The verdict of an interval of ``a - b``: a side only when zero is outside it."""
    if not (math.isfinite(low) or math.isfinite(high)) or math.isnan(low) or math.isnan(high):
        return NOT_SEPARABLE
    if low > 0:
        return A_BETTER if higher_is_better else B_BETTER
    if high < 0:
        return B_BETTER if higher_is_better else A_BETTER
    return NOT_SEPARABLE


# ---------------------------------------------------------------------------
# Per-item metrics
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SeedItems:
    """One seed's items for one metric: ``num``/``den`` are ``[items, classes]``."""

    seed: int
    ids: tuple[str, ...]
    num: np.ndarray
    den: np.ndarray


def seed_items(seed: int, ids: Sequence[Any], values: Any) -> SeedItems:
    """One metric of one ``per_item`` entry as arrays.

    ``values`` is a list (a mean; ``None`` where an item does not count) or a
    ``{"num": [[...]], "den": [[...]]}`` ratio of sums per class.
    """
    ids = tuple(str(i) for i in ids)
    if isinstance(values, Mapping):
        num = np.asarray(values["num"], dtype=np.float64)
        den = np.asarray(values["den"], dtype=np.float64)
        if num.ndim == 1:
            num, den = num[:, None], den[:, None]
        if num.shape != den.shape or num.shape[0] != len(ids):
            raise ValueError(f"num {num.shape} and den {den.shape} must both be [{len(ids)} items, classes]")
    else:
        values = list(values)
        if len(values) != len(ids):
            raise ValueError(f"{len(values)} values for {len(ids)} items")
        counted = np.array([v is not None for v in values])
        num = np.array([float(v) if v is not None else 0.0 for v in values])[:, None]
        den = counted.astype(np.float64)[:, None]
    return SeedItems(int(seed), ids, num, den)


def _per_seed(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """Statistic from summed ``num``/``den`` ``[..., classes]``: the mean over
    classes with a positive ``den`` of ``num / den``; NaN when there is none."""
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
    valid = den > 0
    count = valid.sum(-1)
    total = np.where(valid, ratio, 0.0).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _crossed(seeds: Sequence[SeedItems]) -> bool:
    return len({s.ids for s in seeds}) == 1


def _multinomial(rng: np.random.Generator, n: int, draws: int) -> np.ndarray:
    """``[draws, n]`` resampling counts (each row sums to ``n``)."""
    picks = rng.integers(0, n, size=(draws, n))
    counts = np.zeros((draws, n), dtype=np.float64)
    np.add.at(counts, (np.arange(draws)[:, None], picks), 1.0)
    return counts


def _item_weights(rng: np.random.Generator, seeds: Sequence[SeedItems], draws: int) -> list[np.ndarray]:
    """Item resampling counts per seed, shared when every seed scored the same items."""
    if _crossed(seeds):
        shared = _multinomial(rng, len(seeds[0].ids), draws)
        return [shared] * len(seeds)
    return [_multinomial(rng, len(s.ids), draws) for s in seeds]


def _resampled(seeds: Sequence[SeedItems], item_w: Sequence[np.ndarray], seed_w: np.ndarray) -> np.ndarray:
    """``[draws]`` cell statistics under the given item and seed weights."""
    per_seed = np.stack(
        [_per_seed(np.einsum("bp,pk->bk", w, s.num), np.einsum("bp,pk->bk", w, s.den)) for s, w in zip(seeds, item_w)],
        axis=1,
    )  # [draws, seeds]
    present = ~np.isnan(per_seed)
    weights = seed_w * present
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(
            total > 0, (np.where(present, per_seed, 0.0) * weights).sum(1) / np.where(total > 0, total, 1), np.nan
        )


def point(seeds: Sequence[SeedItems]) -> float:
    """The cell's value: the mean over seeds of each seed's statistic (NaN seeds skipped)."""
    values = [float(_per_seed(s.num.sum(0), s.den.sum(0))) for s in seeds]
    values = [v for v in values if not math.isnan(v)]
    return float(np.mean(values)) if values else math.nan


def _quantiles(draws: np.ndarray, level: float) -> tuple[float, float]:
    draws = draws[~np.isnan(draws)]
    if draws.size == 0:
        return math.nan, math.nan
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap(
    seeds: Sequence[SeedItems], *, resamples: int = RESAMPLES, level: float = LEVEL, rng: int | np.random.Generator = 0
) -> Interval | None:
    """A cell's value and its interval (``None`` when no seed has a counted item)."""
    if not seeds:
        return None
    value = point(seeds)
    if math.isnan(value):
        return None
    gen = np.random.default_rng(rng)
    draws = _resampled(seeds, _item_weights(gen, seeds, resamples), _multinomial(gen, len(seeds), resamples))
    low, high = _quantiles(draws, level)
    return Interval(value, low, high)


def is_paired(a: Sequence[SeedItems], b: Sequence[SeedItems]) -> bool:
    """Whether two cells scored the same items under the same seeds."""
    return [s.seed for s in a] == [s.seed for s in b] and all(x.ids == y.ids for x, y in zip(a, b))


def compare(
    a: Sequence[SeedItems],
    b: Sequence[SeedItems],
    *,
    higher_is_better: bool = True,
    resamples: int = RESAMPLES,
    level: float = LEVEL,
    rng: int | np.random.Generator = 0,
) -> Comparison:
    """``a - b`` with a bootstrap interval (paired when the cells share items and
    seeds, two independent resamples otherwise) and its verdict."""
    va, vb = point(a) if a else math.nan, point(b) if b else math.nan
    if math.isnan(va) or math.isnan(vb):
        missing = " and ".join(n for n, v in (("a", va), ("b", vb)) if math.isnan(v))
        return Comparison(None, NOT_SEPARABLE, note=f"no counted items in {missing}")
    gen = np.random.default_rng(rng)
    paired = is_paired(a, b)
    if paired:
        item_w = _item_weights(gen, [*a, *b] if _crossed([*a, *b]) else a, resamples)
        seed_w = _multinomial(gen, len(a), resamples)
        draws = _resampled(a, item_w[: len(a)], seed_w) - _resampled(b, item_w[: len(b)], seed_w)
    else:
        da = _resampled(a, _item_weights(gen, a, resamples), _multinomial(gen, len(a), resamples))
        db = _resampled(b, _item_weights(gen, b, resamples), _multinomial(gen, len(b), resamples))
        draws = da - db
    low, high = _quantiles(draws, level)
    diff = Interval(va - vb, low, high)
    return Comparison(diff, verdict(low, high, higher_is_better=higher_is_better), paired=paired)


# ---------------------------------------------------------------------------
# Per-seed numbers: Student's and Welch's t
# ---------------------------------------------------------------------------


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (``0 < p < 1``)."""
    if not 0 < p < 1 or df <= 0:
        raise ValueError(f"need 0 < p < 1 and df > 0, got p={p}, df={df}")
    from scipy import stats as scipy_stats  # loads when a verdict is computed, not with the CLI

    return float(scipy_stats.t.ppf(p, df))


def normal_quantile(p: float) -> float:
    """The standard normal quantile (inverse CDF)."""
    from scipy import stats as scipy_stats

    return float(scipy_stats.norm.ppf(p))


def wilson(successes: float, n: int, level: float = LEVEL) -> Interval | None:
    """A proportion ``successes / n`` with Wilson's score interval.

    For a summary that kept only counts (a learning curve's evaluations log
    accuracies and the number of prompts, not each prompt's outcome): unlike
    ``p +- z sqrt(p(1-p)/n)`` it stays inside [0, 1] and is not zero-width at
    0 or 1, where small evaluations often sit. ``successes`` is rounded to a
    whole count (an accuracy times its number of prompts).
    """
    if n <= 0:
        return None
    from scipy import stats as scipy_stats

    k = min(max(round(float(successes)), 0), int(n))
    ci = scipy_stats.binomtest(k, int(n)).proportion_ci(confidence_level=level, method="wilson")
    return Interval(float(successes) / n, max(0.0, float(ci.low)), min(1.0, float(ci.high)))


def t_interval(values: Sequence[float], level: float = LEVEL) -> Interval | None:
    """Mean of per-seed numbers with Student's t interval (a point for one value)."""
    x = np.asarray(list(values), dtype=np.float64)
    if x.size == 0:
        return None
    mean = float(x.mean())
    if x.size == 1:
        return Interval(mean, mean, mean)
    sem = float(x.std(ddof=1)) / math.sqrt(x.size)
    if sem == 0:
        return Interval(mean, mean, mean)
    from scipy import stats as scipy_stats

    low, high = scipy_stats.t.interval(level, x.size - 1, loc=mean, scale=sem)
    return Interval(mean, float(low), float(high))


def welch(a: Sequence[float], b: Sequence[float], level: float = LEVEL) -> Interval | None:
    """``mean(a) - mean(b)`` with Welch's interval; ``None`` without two values on each side
    (unless both sides have no spread at all, when the difference is exact)."""
    x, y = np.asarray(list(a), dtype=np.float64), np.asarray(list(b), dtype=np.float64)
    if x.size < 2 or y.size < 2:
        return None
    diff = float(x.mean() - y.mean())
    if float(x.var(ddof=1)) + float(y.var(ddof=1)) == 0:
        return Interval(diff, diff, diff)
    from scipy import stats as scipy_stats

    ci = scipy_stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence_level=level)
    return Interval(diff, float(ci.low), float(ci.high))


@dataclass(frozen=True)
class Cost:
    """Per seed: the seconds to reach a level, or ``None`` with the seconds the seed trained."""

    reached: tuple[float | None, ...]
    budgets: tuple[float, ...]

    @property
    def all_reached(self) -> bool:
        return bool(self.reached) and all(r is not None for r in self.reached)

    @property
    def none_reached(self) -> bool:
        return all(r is None for r in self.reached)

    def summary(self) -> Interval | None:
        """Mean seconds with a t interval when every seed reached the level."""
        return t_interval([r for r in self.reached if r is not None]) if self.all_reached else None


def compare_costs(a: Cost, b: Cost, level: float = LEVEL) -> Comparison:
    """Which cell reaches the level sooner (lower is better).

    Every seed reached it in both cells: Welch's interval of ``a - b``. One
    cell reached it in every seed and the other in none: the first is better
    when each of its seeds got there before any seed of the other stopped
    training (the difference is then below ``max(a) - min(budget of b)``).
    Anything else (neither reached it, or only some seeds of a cell did) is
    not separable.
    """
    if a.all_reached and b.all_reached:
        diff = welch([float(r) for r in a.reached], [float(r) for r in b.reached], level)  # type: ignore[arg-type]
        if diff is None:
            return Comparison(None, NOT_SEPARABLE, note="one seed per cell: no interval")
        return Comparison(diff, verdict(diff.low, diff.high, higher_is_better=False))
    for first, second, name, other in ((a, b, "a", "b"), (b, a, "b", "a")):
        if first.all_reached and second.none_reached and second.reached:
            bound = max(float(r) for r in first.reached) - min(second.budgets)  # type: ignore[arg-type]
            upper = bound if name == "a" else -bound
            note = f"{other} did not reach it within its budget"
            if bound < 0:
                diff = Interval(-math.inf, -math.inf, upper) if name == "a" else Interval(math.inf, upper, math.inf)
                return Comparison(diff, A_BETTER if name == "a" else B_BETTER, note=note)
            return Comparison(None, NOT_SEPARABLE, note=note + f", but {name} reached it only after that budget")
    def share(cost: Cost) -> str:
        return f"{sum(r is not None for r in cost.reached)}/{len(cost.reached)}"

    return Comparison(None, NOT_SEPARABLE, note=f"a: {share(a)}, b: {share(b)} seeds reached it")


def seconds_to_reach(curve: Sequence[tuple[float, float]], level: float) -> float | None:
    """Training seconds at which a learning curve ``[(seconds, value), ...]``
    first reaches ``level``, interpolated linearly from the point before;
    ``None`` when it never does."""
    previous: tuple[float, float] | None = None
    for seconds, value in sorted(curve):
        if value >= level:
            if previous is None or previous[1] >= value:
                return float(seconds)
            s0, v0 = previous
            return float(s0 + (seconds - s0) * (level - v0) / (value - v0))
        previous = (seconds, value)
    return None


def evaluator_error(evaluation: Mapping[str, Any] | None) -> dict[str, float]:
    """The error an evaluator states it was measured to make, per metric.

    An evaluator whose reading of an image can be wrong may report, beside its
    numbers, ``"evaluator_error": {"measured": true, "error": {metric: rate},
    ...}``: for each metric, the share of items it was measured to score wrong
    on a set with known answers (the prompt-accuracy evaluator does). Empty
    when it states none or says it was not measured for this run.
    """
    stated = (evaluation or {}).get("evaluator_error")
    if not isinstance(stated, Mapping) or not stated.get("measured"):
        return {}
    rates = stated.get("error") or {}
    return {k: float(v) for k, v in rates.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
