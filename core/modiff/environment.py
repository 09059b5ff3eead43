"""What a run was trained with, beyond its settings: the software and machine
that decide its bits.

modiff's bit-for-bit promise (the same settings give the same weights and
images) holds on one environment: another torch, another CPU (its vector
instructions), another thread count or another version of a plugin can
change the floating-point rounding. A run records its environment at the
start of training in ``RUN/environment.json``; ``modiff evaluate`` and
``modiff generate`` compare it with the one they run in and warn, in one
line, when what changes bits differs, so a number or an image that does not
match says why.
"""

from __future__ import annotations

import importlib.metadata
import json
import platform
import sys
from pathlib import Path
from typing import Any

import numpy
import torch

from .files import atomic_write_json
from .runs import RunDir

#: The file in the run folder.
FILE = "environment.json"
#: What changes a run's bits when it differs (Python and the git commit are
#: recorded for the reader, but a commit without code changes, or another
#: Python, gives the same numbers).
DECIDES_BITS = ("torch", "numpy", "cpu", "threads", "distributions")


def current() -> dict[str, Any]:
    """This process's environment: Python, torch and numpy versions, CPU model,
    torch's thread count, the installed modiff distributions (``modiff`` and
    every ``modiff-*`` plugin) with their versions, and the git commit of the
    checkout modiff runs from (``None`` for an installed copy)."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "distributions": distributions(),
        "git_commit": git_commit(Path(__file__).resolve().parent),
    }


def record(run: RunDir) -> None:
    """Write :func:`current` into ``run`` when it has none: a resumed run keeps
    the environment it started in (a resume elsewhere is warned about, see
    :func:`warn_if_changed`)."""
    path = run.path / FILE
    if path.is_file():
        warn_if_changed(run, "resuming")
        return
    atomic_write_json(path, current())


def recorded(run: RunDir) -> dict[str, Any] | None:
    """The environment ``run`` was trained in; ``None`` for a run trained before
    it was recorded, or whose file cannot be read."""
    path = run.path / FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def differences(then: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """What differs between two environments in what changes bits, one short
    phrase each (``torch 2.1.0 -> 2.2.0``, ``modiff-unet 0.1 -> 0.2``)."""
    found = []
    for key in DECIDES_BITS:
        before, after = then.get(key), now.get(key)
        if key == "distributions":
            before, after = before or {}, after or {}
            for name in sorted(set(before) | set(after)):
                if before.get(name) != after.get(name):
                    found.append(f"{name} {before.get(name, 'absent')} -> {after.get(name, 'absent')}")
        elif before is not None and before != after:
            found.append(f"{key} {before} -> {after}")
    return found


def warn_if_changed(run: RunDir, doing: str) -> None:
    """One line on stderr when the environment differs from the one ``run`` was
    trained in, in what changes bits (nothing for a run that recorded none)."""
    then = recorded(run)
    if then is None:
        return
    changed = differences(then, current())
    if changed:
        print(
            f"modiff: warning: {doing} {run.path} in another environment than it was trained in "
            f"({'; '.join(changed)}); numbers and images may differ from the run's (see {run.path / FILE})",
            file=sys.stderr,
        )


def cpu_model() -> str:
    """The CPU's model name (Linux's /proc/cpuinfo, else what the platform says)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def distributions() -> dict[str, str]:
    """The installed distributions named ``modiff`` or ``modiff-*`` and their versions."""
    names = set()
    for entry in sys.path:  # the metadata folders' names alone: parsing every distribution's costs a fifth of a second
        folder = Path(entry or ".")
        if folder.is_dir():
            for info in folder.glob("modiff*.dist-info"):
                name = info.name.removesuffix(".dist-info").rsplit("-", 1)[0].lower().replace("_", "-")
                if name == "modiff" or name.startswith("modiff-"):
                    names.add(name)
    found = {}
    for name in sorted(names):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def git_commit(start: Path) -> str | None:
    """The commit checked out in the git work tree holding ``start``, read from
    ``.git`` without running git (uncommitted edits are not seen); ``None``
    outside a checkout or when the files cannot be read."""
    for folder in (start, *start.parents):
        git = folder / ".git"
        if git.is_file():  # a worktree or submodule: "gitdir: PATH"
            text = git.read_text().strip()
            git = (folder / text.removeprefix("gitdir:").strip()).resolve()
        if git.is_dir():
            return _resolve_head(git)
    return None


def _resolve_head(git: Path) -> str | None:
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref:"):
            return head
        ref = head.removeprefix("ref:").strip()
        common = git / "commondir"
        roots = [git, (git / common.read_text().strip()).resolve()] if common.is_file() else [git]
        for root in roots:
            if (root / ref).is_file():
                return (root / ref).read_text().strip()
            packed = root / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
    except OSError:
        return None
    return None
