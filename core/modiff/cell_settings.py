"""Which run an ablation's cell may reuse: the one trained under the cell's settings.

A cell is matched to the run in its folder by the run's resolved settings
(the ``settings.toml`` the run writes when it starts), not by its name: a
variant edited after its run finished names the same folder, and reusing
that run would put the old numbers under the new settings. A run folder
whose settings differ from the cell's is moved aside to a sibling folder,
never deleted, and the cell is trained anew.

The digest leaves out what decides where a run lives or who watches it,
not its bits:

- ``[run] name`` and ``runs_dir``: the folder (moving a grid's runs folder,
  or giving it through ``--set run.runs_dir=...``, is not a new run);
- ``[track]``: trackers only copy what the run logs (the grid's group and
  tags, a tracker added to a finished grid), and change no weight or number.

Everything else counts, the sampler's settings too: they decide the
evaluation the report reads.
"""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from pathlib import Path
from typing import Any

from .settings import ResolvedSettings

#: ``(table, key)`` pairs, or ``(table, None)`` for a whole table, left out of the digest (see above).
NOT_IN_DIGEST: tuple[tuple[str, str | None], ...] = (("run", "name"), ("run", "runs_dir"), ("track", None))

#: What a run folder set aside is renamed to: ``NAME`` + this + the first digits of its settings' digest.
ASIDE = ".superseded-"


def digest(settings: dict[str, Any]) -> str:
    """The SHA-256 of ``settings`` (as read from a ``settings.toml``) without :data:`NOT_IN_DIGEST`."""
    kept = {table: dict(values) if isinstance(values, dict) else values for table, values in settings.items()}
    for table, key in NOT_IN_DIGEST:
        if key is None:
            kept.pop(table, None)
        elif isinstance(kept.get(table), dict):
            kept[table].pop(key, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()


def cell_digest(resolved: ResolvedSettings) -> str:
    """The digest of the settings a run of ``resolved`` writes (read back as TOML, as a run's own are)."""
    return digest(tomllib.loads(resolved.to_toml()))


def run_digest(folder: Path) -> str | None:
    """The digest of the settings the run in ``folder`` started with; ``None`` when it has none to read."""
    try:
        return digest(tomllib.loads((folder / "settings.toml").read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        return None


def set_aside_if_changed(folder: Path, resolved: ResolvedSettings) -> Path | None:
    """Move the run in ``folder`` to a sibling ``NAME.superseded-<digest8>`` (numbered
    if taken) when it started under other settings than ``resolved``; returns where
    it went, or ``None`` when there is no run or it is the one asked for."""
    old = run_digest(folder)
    if old is None or old == cell_digest(resolved):
        return None
    aside = folder.with_name(f"{folder.name}{ASIDE}{old[:8]}")
    number = 1
    while aside.exists():
        number += 1
        aside = folder.with_name(f"{folder.name}{ASIDE}{old[:8]}-{number}")
    os.rename(folder, aside)
    return aside


def kept_aside(folder: Path) -> list[Path]:
    """The earlier runs of ``folder``'s cell set aside because its settings changed, oldest name first."""
    return sorted(folder.parent.glob(f"{folder.name}{ASIDE}*"))
