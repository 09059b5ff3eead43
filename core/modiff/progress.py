"""Progress with an estimate of the time left, for work that makes a user
wait: sampling (steps over a generation's batches), evaluation, a grid of
ablation runs. One switch silences it all: ``--quiet`` on the command line,
:func:`quiet` in Python. Bars are tqdm's, like the training loop's
(:meth:`modiff.training.reporting.TrainingReporter.bar`), on stderr.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
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


def _last_accuracy(numbers: dict[str, Any]) -> str | None:
    """``name 0.812`` of an evaluation's first accuracy-like number, if any."""
    for key, value in numbers.items():
        if ("accuracy" in key or "iou" in key.lower()) and isinstance(value, (int, float)):
            return f"{key} {value:.3f}"
    return None


@dataclass
class RunStatus:
    """Where one running run of a grid stands, read from its ``metrics.jsonl``
    as the run writes it (only the lines added since the last look)."""

    name: str
    metrics: Path
    #: steps of each stage (``{"encoder": 200, "denoiser": 1500}``), for ``step/steps``
    steps: dict[str, int]
    started: float = field(default_factory=time.monotonic)
    offset: int = 0
    stage: str = "starting"
    step: int = 0
    accuracy: str | None = None

    def read_new(self) -> bool:
        """Read the complete lines written since the last call; whether the
        stage or the last accuracy changed (a state change worth a log line)."""
        try:
            with open(self.metrics, "rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except OSError:  # not written yet
            return False
        end = chunk.rfind(b"\n") + 1  # a line still being written is read next time
        self.offset += end
        before = (self.stage, self.accuracy)
        for line in chunk[:end].splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            self.stage = str(entry.get("stage", self.stage))
            self.step = int(entry.get("step", self.step))
            if entry.get("kind") == "eval":
                self.accuracy = _last_accuracy(entry.get("eval") or {}) or self.accuracy
        return (self.stage, self.accuracy) != before

    def text(self) -> str:
        steps = self.steps.get(self.stage)
        where = f"{self.stage} {self.step}/{steps}" if steps else self.stage
        text = f"{self.name}: {where}, {time.monotonic() - self.started:.0f} s"
        return text + (f", {self.accuracy}" if self.accuracy else "")


class GridWatch:
    """What a user watching an ablation grid sees: one bar over its runs (done /
    total, time left) and one status line per running run (stage, step/steps,
    seconds, last accuracy), refreshed from the runs' ``metrics.jsonl``.

    On a terminal the bar and the lines redraw in place (tqdm, on stderr) and
    the driver's own lines are written above them; in a log file (stderr not a
    terminal) nothing redraws: a run's status is one line each time its stage
    or its last accuracy changes. Quiet (:func:`quiet`): nothing at all.
    """

    #: Seconds between two reads of the runs' metrics files.
    EVERY = 1.0

    def __init__(self, total: int, done: int, log: Callable[[str], Any], *, terminal: bool | None = None):
        self.shown = enabled()
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self._log = log
        self._lock = threading.Lock()
        self._last = 0.0
        self.runs: dict[str, RunStatus] = {}
        self._lines: dict[str, Any] = {}
        self.bar: Any = None
        if self.shown and self.terminal:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, initial=done, desc="runs", unit="run", position=0, dynamic_ncols=True)

    def log(self, line: str) -> None:
        """A line of the driver's, above the bars on a terminal."""
        if self.bar is not None:
            from tqdm.auto import tqdm

            tqdm.write(line)
        else:
            self._log(line)

    def started(self, name: str, metrics: Path, steps: dict[str, int]) -> None:
        """Follow a run that starts now (skipping what an earlier attempt wrote)."""
        with self._lock:
            status = RunStatus(name, metrics, steps)
            status.read_new()  # a resumed run: where its earlier attempt stopped
            self.runs[name] = status
            if self.bar is not None:
                from tqdm.auto import tqdm

                taken = {getattr(line, "watch_position", 0) for line in self._lines.values()}
                position = next(p for p in range(1, len(taken) + 2) if p not in taken)
                self._lines[name] = tqdm(total=0, position=position, bar_format="{desc}", desc=status.text(),
                                         leave=False, dynamic_ncols=True)
                self._lines[name].watch_position = position  # the row it keeps until its run ends

    def poll(self, force: bool = False) -> None:
        """Read what the running runs wrote since the last look (at most every :attr:`EVERY` s)."""
        if not self.shown or (not force and time.monotonic() - self._last < self.EVERY):
            return
        with self._lock:
            self._last = time.monotonic()
            for name, status in self.runs.items():
                changed = status.read_new()
                if name in self._lines:
                    self._lines[name].set_description_str(status.text())
                elif changed:
                    self._log(f"  {status.text()}")
            if self.bar is not None:
                self.bar.refresh()

    def ended(self, name: str) -> None:
        """A run finished (or failed): its line goes, the bar counts it; in a
        log file its last state is said if it changed since the last look."""
        with self._lock:
            status = self.runs.pop(name, None)
            if status is not None and self.shown and name not in self._lines and status.read_new():
                self._log(f"  {status.text()}")
            line = self._lines.pop(name, None)
            if line is not None:
                line.close()
            if self.bar is not None:
                self.bar.update(1)

    @contextmanager
    def polling(self) -> Iterator[None]:
        """Poll from a background thread inside the block (a run trained in this process)."""
        stop = threading.Event()

        def watch() -> None:
            while not stop.wait(self.EVERY):
                self.poll()

        thread = threading.Thread(target=watch, name="grid-watch", daemon=True)
        if self.shown:
            thread.start()
        try:
            yield
        finally:
            stop.set()
            if thread.is_alive():
                thread.join()

    def close(self) -> None:
        for line in self._lines.values():
            line.close()
        self._lines.clear()
        if self.bar is not None:
            self.bar.close()
