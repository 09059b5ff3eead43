"""Choosing where a grid's runs execute: ``--launcher NAME`` or an ablation file's ``[launcher]`` table.

The table names a launcher and gives its options::

    [launcher]
    name = "ray"                 # a launcher registered by an installed plugin
    address = "10.0.0.1:6379"    # the launcher's own options

``--launcher NAME`` on the command line wins over the table's ``name`` (the
table's options then apply only to the launcher it names). Without either,
the grid runs on ``local``: one run at a time in the driver's own process,
or ``--jobs N`` processes side by side. A launcher is found in the plugin
registry under the ``launcher`` role, like any other component, so a
mistyped name gets the installed names and the closest one, and the name
of a launcher whose distribution is not installed gets what to install.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import SettingsError
from .plugins import LAUNCHER, Registration, registry
from .protocols import LaunchContext, Launcher
from .settings import did_you_mean

#: The launcher a grid runs on when neither the file nor the command line names one.
DEFAULT = "local"

#: Launchers of this repository shipped as their own distributions: what to install for each.
KNOWN_DISTRIBUTIONS = {"ray": "modiff-launcher-ray", "slurm": "modiff-launcher-slurm"}


def chosen_name(table: dict[str, Any] | None, override: str | None) -> str:
    """The launcher's name: ``--launcher``, else the table's ``name``, else :data:`DEFAULT`."""
    return override or (table or {}).get("name") or DEFAULT


def launcher_settings(table: dict[str, Any] | None, override: str | None, source: str) -> tuple[Registration, Any]:
    """The registration of the chosen launcher and its validated options.

    Raises :class:`SettingsError` (one line naming ``source``) for an unknown
    name, a launcher whose distribution is not installed, or an option the
    launcher does not take.
    """
    name = chosen_name(table, override)
    options = {k: v for k, v in (table or {}).items() if k != "name"}
    if override and table and table.get("name") not in (None, override):
        options = {}  # the table's options belong to the launcher it names
    launchers = registry().components[LAUNCHER]
    if name.rpartition(":")[2] not in launchers:
        installed = ", ".join(sorted(launchers)) or "none"
        hint = did_you_mean(name, list(launchers)) if name not in KNOWN_DISTRIBUTIONS else ""
        message = f"{source}: [launcher] name = {name!r} is not an installed launcher{hint}; installed: {installed}"
        if name in KNOWN_DISTRIBUTIONS:
            message += f"; pip install {KNOWN_DISTRIBUTIONS[name]} to run grids on it"
        raise SettingsError([message])
    try:
        registration = registry().lookup(LAUNCHER, name)
    except Exception as exc:  # two distributions register the name: the registry says which to write
        raise SettingsError([f"{source}: [launcher] {exc}"]) from None
    try:
        settings = registration.validate(options)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'launcher'}: {e['msg']}" for e in exc.errors()
        )
        allowed = ", ".join(registration.settings_model.model_fields) or "none but name"
        raise SettingsError([f"{source}: [launcher] for {name!r}: {problems} (its options: {allowed})"]) from None
    return registration, settings


def build_launcher(
    table: dict[str, Any] | None,
    override: str | None,
    *,
    jobs: int | None,
    runs_dir: Path,
    source: str,
    log: Callable[[str], None] | None = None,
) -> Launcher:
    """The chosen launcher, built by its plugin's factory; ``log`` is the
    driver's output, for what the launcher says on its own."""
    registration, settings = launcher_settings(table, override, source)
    return registration.factory(settings, LaunchContext(jobs=jobs, runs_dir=runs_dir, log=log))
