"""Progress with an estimate of the time left, for work that makes a user
wait: sampling (steps over a generation's batches), evaluation, a grid of
ablation runs. One switch silences it all: ``--quiet`` on the command line,
:func:`quiet` in Python. Bars are tqdm's, like the training loop's
(:meth:`modiff.training.reporting.TrainingReporter.bar`), on stderr.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

_state = {"enabled": True, "label": "sampling"}


class ProgressBar(Protocol):
    """What callers use of a bar (tqdm's, or one that shows nothing)."""

    n: int

    def update(self, n: int = 1) -> Any: ...
    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None: ...
    def close(self) -> None: ...


class _NoBar:
    n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def enabled() -> bool:
    """Whether progress is shown (not inside :func:`quiet`)."""
    return bool(_state["enabled"])


@contextmanager
def quiet(on: bool = True) -> Iterator[None]:
    """No progress inside the block when ``on`` (``quiet(args.quiet)``)."""
    before = _state["enabled"]
    _state["enabled"] = before and not on
    try:
        yield
    finally:
        _state["enabled"] = before


@contextmanager
def labelled(label: str) -> Iterator[None]:
    """Sampling bars inside the block are named ``label`` (``evaluating``), so a
    bar says what the wait is for."""
    before = _state["label"]
    _state["label"] = label
    try:
        yield
    finally:
        _state["label"] = before


def bar(total: int, unit: str, desc: str | None = None) -> ProgressBar:
    """A tqdm bar with the time left, or one that shows nothing when quiet."""
    if not enabled():
        return _NoBar()
    from tqdm.auto import tqdm  # tqdm.auto picks the notebook widget where there is one

    return tqdm(total=total, desc=desc or str(_state["label"]), unit=unit, dynamic_ncols=True, leave=False)


class RunsClock:
    """Runs done out of a total and the time left at the pace of the runs done
    so far (tqdm's estimate: ``2/6 runs done, 02:20 left``), for a grid
    whose runs each show their own training bar."""

    def __init__(self, total: int):
        self.total = total
        self.done = 0
        self.started = time.monotonic()

    def finished(self) -> None:
        self.done += 1

    def meter(self) -> str:
        """Runs done / total with the time left; empty when quiet."""
        if not enabled():
            return ""
        from tqdm import tqdm

        return tqdm.format_meter(self.done, self.total, time.monotonic() - self.started, unit="run",
                                 bar_format="{n_fmt}/{total_fmt} runs done, {remaining} left")
