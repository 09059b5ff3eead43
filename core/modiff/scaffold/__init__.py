"""``modiff plugins new``: write a working plugin skeleton for any role.

The skeleton is a complete distribution, ``modiff-NAME``::

    modiff-NAME/
      pyproject.toml            entry point in the ``modiff`` group
      README.md                 install, use, test, publish
      modiff_NAME/__init__.py   the ``register_*`` hook (no heavy imports)
      modiff_NAME/settings.py   the component's settings model
      modiff_NAME/component.py  a small, honest implementation of the role
      tests/test_modiff_NAME.py the role's contract tests, plus a few of its own

and its tests pass as generated (once it is installed, ``pip install -e .``):
an author starts from something that works and changes it step by step,
keeping the contract green.
"""

from __future__ import annotations

import difflib
import importlib.metadata
import keyword
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import __version__
from ..errors import ModiffError
from ..plugins import COMPONENT_NAME, ROLES, name_problem
from .templates import (
    RoleTemplate,
    common,
    conditioner,
    data,
    denoiser,
    encoder,
    evaluator,
    scheduler,
    text_embedder,
)

#: The component-name rule, which lives in :mod:`modiff.plugins` (one rule for
#: registering and for the skeleton); kept under this name for callers.
NAME_PATTERN = COMPONENT_NAME

#: Other spellings people write for a role, mapped to its settings table.
ROLE_ALIASES = {
    "dataset": "data",
    "datasets": "data",
    "text-embedder": "text_embedder",
    "textembedder": "text_embedder",
    "embedder": "text_embedder",
    "sampler": "scheduler",
}


def templates() -> dict[str, RoleTemplate]:
    """Role -> its template, for every role modiff knows."""
    found = {
        m.TEMPLATE.role: m.TEMPLATE
        for m in (data, encoder, text_embedder, conditioner, denoiser, scheduler, evaluator)
    }
    missing = set(ROLES) - set(found)
    assert not missing, f"no skeleton for roles {missing}"
    return found


def check_name(name: str) -> str:
    """The component name, or a :class:`ModiffError` saying what is allowed."""
    if name.startswith(("modiff-", "modiff_")):
        raise ModiffError(
            f"plugin name {name!r}: leave out the 'modiff-' prefix, it is added to the distribution name "
            f"(write `modiff plugins new {name[7:] or 'NAME'} ...` to get modiff-{name[7:] or 'NAME'})"
        )
    problem = name_problem(name)
    if problem is not None:
        raise ModiffError(f"plugin {problem} (it becomes the component name in settings files)")
    return name


def installed_owner(name: str) -> str | None:
    """The installed distribution (``"modiff-clip 0.1.0"``) that the skeleton
    of ``name`` would replace, or ``None``.

    The skeleton is the distribution ``modiff-NAME`` with the package
    ``modiff_NAME``: installing it over a distribution of that name (or over
    another distribution's package of that name) silently replaces the
    installed one, as ``modiff plugins new clip`` once replaced the
    first-party CLIP plugin.
    """
    n = names(name)
    try:
        dist = importlib.metadata.distribution(n["dist"])
        return f"{dist.metadata['Name']} {dist.version}"
    except importlib.metadata.PackageNotFoundError:
        pass
    owners = importlib.metadata.packages_distributions().get(n["package"], [])
    if owners:
        owner = owners[0]
        try:
            return f"{owner} {importlib.metadata.version(owner)} (its package {n['package']})"
        except importlib.metadata.PackageNotFoundError:
            return f"{owner} (its package {n['package']})"
    return None


def _free_names(name: str) -> list[str]:
    """A few names near ``name`` whose skeleton would replace nothing installed."""
    candidates = [f"my-{name}", f"{name}-2", f"{name}-plus"]
    return [c for c in candidates if name_problem(c) is None and installed_owner(c) is None][:2]


def check_role(role: str) -> str:
    """The settings-table name of ``role`` (aliases accepted), or a :class:`ModiffError`."""
    key = role.strip().lower()
    key = ROLE_ALIASES.get(key, key).replace("-", "_")
    if key in ROLES:
        return key
    close = difflib.get_close_matches(key, [*ROLES, *ROLE_ALIASES], n=1, cutoff=0.6)
    hint = f" Did you mean {ROLE_ALIASES.get(close[0], close[0])!r}?" if close else ""
    raise ModiffError(f"unknown role {role!r}; the roles are: {', '.join(ROLES)}.{hint}")


@dataclass(frozen=True)
class Skeleton:
    """Where a generated plugin went and what it is called."""

    path: Path
    name: str
    role: str
    distribution: str
    package: str
    files: tuple[Path, ...]


def names(name: str) -> dict[str, str]:
    """The names derived from a component name: distribution, package, test class."""
    package = "modiff_" + name.replace("-", "_")
    assert package.isidentifier() and not keyword.iskeyword(package)
    return {
        "name": name,
        "dist": f"modiff-{name}",
        "package": package,
        "test_class": "Test" + "".join(part.capitalize() for part in name.split("-")),
    }


def render(name: str, role: str) -> dict[str, str]:
    """Relative path -> file contents of the skeleton of ``name`` in ``role``."""
    template = templates()[role]
    values = {
        **names(name),
        "role": role,
        "hook": template.hook,
        "contract": template.contract,
        "summary": template.summary,
        "summary_sentence": template.summary[:1].upper() + template.summary[1:] + ".",
        "settings_class": template.settings_class,
        "modiff_version": _release(__version__),
        "test_imports": "".join(f"\n{line}" for line in template.test_imports)
        + ("\n" if template.test_imports else ""),
    }

    def fill(text: str) -> str:
        return string.Template(text).substitute(values)

    package = values["package"]
    return {
        "pyproject.toml": fill(common.PYPROJECT),
        "README.md": fill(common.README),
        ".gitignore": common.GITIGNORE,
        f"{package}/__init__.py": fill(common.INIT),
        f"{package}/settings.py": fill(template.settings),
        f"{package}/component.py": fill(template.component),
        f"tests/test_{package}.py": fill(common.TEST_HEADER) + fill(template.tests) + fill(common.TEST_ENTRY_POINT),
    }


def _release(version: str) -> str:
    """``0.1.0`` -> ``0.1``: the skeleton asks for this minor release or later."""
    parts = re.findall(r"\d+", version)[:2]
    return ".".join(parts) if len(parts) == 2 else version


def new_plugin(name: str, role: str, directory: str | Path = ".") -> Skeleton:
    """Write the skeleton of plugin ``name`` for ``role`` into ``directory/modiff-NAME``.

    Raises :class:`ModiffError` for a bad name, an unknown role, or a target
    that exists already (nothing is ever overwritten).
    """
    name = check_name(name)
    role = check_role(role)
    owner = installed_owner(name)
    if owner is not None:
        free = _free_names(name)
        hint = f", for example {' or '.join(repr(f) for f in free)}" if free else ""
        raise ModiffError(
            f"plugin name {name!r}: {owner} is installed, and the skeleton would be the distribution "
            f"modiff-{name} with the package modiff_{name.replace('-', '_')}, so installing it would replace "
            f"that one. Choose another name{hint} (nothing was written)"
        )
    parent = Path(directory)
    if parent.exists() and not parent.is_dir():
        raise ModiffError(f"--dir {parent} is a file, not a directory")
    target = parent / f"modiff-{name}"
    if target.exists():
        raise ModiffError(
            f"{target} already exists; choose another name or --dir, or remove it first (nothing was written)"
        )
    files = render(name, role)
    written = []
    try:
        for relative, text in files.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            written.append(path)
    except OSError as exc:
        raise ModiffError(f"cannot write the plugin into {target}: {exc}") from None
    n = names(name)
    return Skeleton(target, name, role, n["dist"], n["package"], tuple(written))


def next_steps(skeleton: Skeleton, taken: Sequence[str] = ()) -> list[str]:
    """What ``modiff plugins new`` prints after writing ``skeleton``.

    ``taken`` lists other installed distributions that register the same
    component name in the same role: settings files must then qualify it.
    """
    path = skeleton.path.as_posix()
    if not (path.startswith(("/", ".")) or ":" in path[:3]):
        path = f"./{path}"  # what pip reads as a folder, not a project name
    lines = [f"wrote {skeleton.distribution} ({skeleton.role} {skeleton.name!r}) into {skeleton.path}"]
    if taken:
        lines.append(
            f"note: the {skeleton.role} name {skeleton.name!r} is also registered by {', '.join(taken)}; "
            f"once both are installed, settings files write plugin = \"{skeleton.distribution}:{skeleton.name}\""
        )
    lines += [
        "next:",
        f"  pip install -e \"{path}[test]\"   # the plugin, plus pytest and hypothesis for its tests",
        f"  python -m pytest {path}",
        f"  modiff plugins   # lists {skeleton.distribution} and its {skeleton.role} {skeleton.name!r}",
    ]
    return lines


__all__ = [
    "NAME_PATTERN",
    "Skeleton",
    "check_name",
    "check_role",
    "installed_owner",
    "new_plugin",
    "next_steps",
    "render",
    "templates",
]
