"""Finding plugins and what they register.

Plugins are found through entry points in the ``modiff`` group and loaded one
at a time, so that one broken plugin is recorded (and listed by
``modiff plugins``) while the others keep working. Set
``MODIFF_STRICT_PLUGINS=1`` to make a broken plugin fatal, and
``MODIFF_LOAD_PLUGINS=a,b`` to load only the named entry points or
distributions (an empty value loads none).

Registrations are attributed to the distribution that made them, which is
what lets two plugins register the same name: looking the bare name up is then
an error naming both, and ``"distribution:name"`` picks one. Two
distributions that declare the same entry-point name are both loaded and
reported as a conflict (:meth:`Registry.entry_point_conflicts`).

The rule for component names lives here, once: :data:`COMPONENT_NAME`.
"""

from __future__ import annotations

import difflib
import functools
import importlib
import importlib.metadata
import os
import re
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ConfigDict

from . import hookspecs
from .errors import PluginError
from .protocols import TaskProtocol

ENTRY_POINT_GROUP = "modiff"

#: The core's own plugins: plugin name -> module. Every plugin manager holds
#: them before any entry point, loaded by module name as an entry point is, so
#: that the registry imports none of them: the built-in tasks register through
#: ``register_tasks`` like a plugin's, and the registry knows no task.
#: The ``local`` launcher registers through ``register_launchers`` the same way.
BUILTIN_PLUGINS: dict[str, str] = {"modiff": "modiff.builtin_tasks", "modiff-launchers": "modiff.builtin_launchers"}

#: Settings-file table name -> registration hook.
ROLE_HOOKS: dict[str, str] = {
    "data": "register_datasets",
    "encoder": "register_encoders",
    "text_embedder": "register_text_embedders",
    "conditioner": "register_conditioners",
    "denoiser": "register_denoisers",
    "scheduler": "register_schedulers",
    "evaluator": "register_evaluators",
}
ROLES: tuple[str, ...] = tuple(ROLE_HOOKS)

#: The role of trackers, which a run fills with several plugins at once (the
#: ``[track]`` table lists them), so it is no settings table of its own.
TRACKER = "tracker"
#: The role of launchers, where an ablation's runs execute (an ablation file's
#: ``[launcher]`` table or ``modiff ablate --launcher``), no run's settings table.
LAUNCHER = "launcher"
#: Every role's registration hook: the settings-table roles, the trackers and the launchers.
ALL_ROLE_HOOKS: dict[str, str] = {**ROLE_HOOKS, TRACKER: "register_trackers", LAUNCHER: "register_launchers"}
ALL_ROLES: tuple[str, ...] = tuple(ALL_ROLE_HOOKS)

#: The one rule for component names (what settings files write as ``plugin =
#: "name"``): lower-case letters and digits in words joined by single dashes,
#: starting with a letter. ``modiff plugins new`` derives the distribution
#: (``modiff-NAME``) and the package (``modiff_NAME``) from such a name, so
#: every valid name also makes a valid Python package name.
COMPONENT_NAME = re.compile(r"^[a-z][a-z0-9]*(-[a-z0-9]+)*$")
COMPONENT_NAME_RULE = "lower-case letters and digits in words joined by single dashes, starting with a letter"


def name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid component name, or ``None`` when it is."""
    if isinstance(name, str) and COMPONENT_NAME.match(name):
        return None
    message = f"component name {name!r} is not valid: use {COMPONENT_NAME_RULE} (for example 'kl-autoencoder')"
    if isinstance(name, str):
        suggestion = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
        suggestion = re.sub(r"^[0-9-]+", "", suggestion)
        if suggestion and COMPONENT_NAME.match(suggestion):
            message += f"; {suggestion!r} would do"
    return message


class ComponentSettings(BaseModel):
    """Base for a component's parameters: unknown keys are errors.

    Subclass it and declare fields with defaults and descriptions; the fields
    become the keys a settings table accepts next to ``plugin``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class NoSettings(ComponentSettings):
    """Parameters of a component that takes none."""


Factory = hookspecs.Factory


@dataclass(frozen=True)
class Registration:
    """One component a plugin registered."""

    role: str
    name: str
    factory: Factory
    settings_model: type[BaseModel]
    distribution: str
    version: str
    plugin: str
    description: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.distribution}:{self.name}"

    def validate(self, params: dict[str, Any]) -> BaseModel:
        return self.settings_model.model_validate(params)


@dataclass(frozen=True)
class PluginInfo:
    """A loaded plugin and the distribution it came from.

    ``plugin`` is its name in the plugin manager: the entry-point name, or
    ``"distribution:entry-point"`` when several distributions declare that
    entry point; ``entry_point`` is the declared name (empty for a plugin
    registered directly, as tests do).
    """

    plugin: str
    distribution: str
    version: str
    entry_point: str = ""


@dataclass(frozen=True)
class BrokenPlugin(PluginInfo):
    """A plugin that failed to import or whose registration hook raised."""

    error: str = ""


@dataclass(frozen=True)
class EntryPointConflict:
    """One entry-point name declared by more than one distribution."""

    name: str
    distributions: tuple[str, ...]


@dataclass
class Registry:
    """Everything the loaded plugins registered, by role and name."""

    plugins: list[PluginInfo] = field(default_factory=list)
    broken: list[BrokenPlugin] = field(default_factory=list)
    components: dict[str, dict[str, list[Registration]]] = field(
        default_factory=lambda: {role: {} for role in ALL_ROLES}
    )
    manager: pluggy.PluginManager | None = None
    _tasks: dict[str, TaskProtocol] | None = field(default=None, repr=False)

    def tasks(self) -> dict[str, TaskProtocol]:
        """Every task a run may name in ``[run] task``: what the ``register_tasks``
        hooks register, the core's own (:data:`BUILTIN_PLUGINS`) first.
        Collected on first use (tasks import torch)."""
        if self._tasks is None:
            tasks: dict[str, TaskProtocol] = {}
            owners: dict[str, str] = {}
            for impl in self.manager.hook.register_tasks.get_hookimpls() if self.manager is not None else []:

                def register(task: Any, plugin: str = impl.plugin_name) -> None:
                    name = getattr(task, "name", None)
                    if isinstance(task, type) or not isinstance(name, str) or not COMPONENT_NAME.match(name):
                        raise PluginError(
                            f"plugin {plugin!r} registered {task!r} as a task: a task is an instance of a "
                            f"modiff.tasks.Task subclass with a name of {COMPONENT_NAME_RULE}"
                        )
                    if task.name in tasks:
                        raise PluginError(
                            f"task {task.name!r} is registered by both {owners[task.name]!r} and {plugin!r}; "
                            "uninstall one of them"
                        )
                    tasks[task.name], owners[task.name] = task, plugin

                impl.function(register=register)
            self._tasks = tasks
        return self._tasks

    def task(self, name: str) -> TaskProtocol:
        """The task called ``name``; a :class:`PluginError` listing the known ones."""
        found = self.tasks().get(name)
        if found is None:
            raise PluginError(f"no task named {name!r}; tasks: {', '.join(sorted(self.tasks()))}")
        return found

    def add(self, registration: Registration) -> None:
        self.components[registration.role].setdefault(registration.name, []).append(registration)

    def names(self, role: str) -> list[str]:
        """Names a settings file may use for ``role``, sorted."""
        return sorted(self.components[role])

    def all(self, role: str | None = None) -> Iterator[Registration]:
        roles = ALL_ROLES if role is None else (role,)
        for r in roles:
            for regs in self.components[r].values():
                yield from regs

    def conflicts(self) -> list[list[Registration]]:
        """Names registered by more than one distribution in one role."""
        return [regs for regs in (r for role in ALL_ROLES for r in self.components[role].values()) if len(regs) > 1]

    def entry_point_conflicts(self) -> list[EntryPointConflict]:
        """Entry-point names declared by more than one installed distribution
        (all of them are loaded; ``MODIFF_LOAD_PLUGINS`` should then name
        distributions rather than the shared entry point)."""
        by_name: dict[str, list[str]] = {}
        for info in [*self.plugins, *self.broken]:
            if info.entry_point and info.distribution not in by_name.setdefault(info.entry_point, []):
                by_name[info.entry_point].append(info.distribution)
        return [EntryPointConflict(n, tuple(d)) for n, d in sorted(by_name.items()) if len(d) > 1]

    def lookup(self, role: str, name: str) -> Registration:
        """The registration for ``name`` (or ``distribution:name``) in ``role``.

        Raises :class:`PluginError` for an unknown name (listing the installed
        ones and the closest match) or an ambiguous one (naming every
        distribution that registered it).
        """
        if role not in self.components:
            raise PluginError(f"unknown role {role!r}; the roles are: {', '.join(ALL_ROLES)}")
        dist, _, bare = name.rpartition(":")
        candidates = self.components[role].get(bare, [])
        if dist:
            chosen = [r for r in candidates if _same_dist(r.distribution, dist)]
            if not chosen:
                if candidates:
                    others = ", ".join(r.qualified_name for r in candidates)
                    raise PluginError(
                        f"no {role} {bare!r} from distribution {dist!r}; it is registered by: {others}"
                    )
                raise PluginError(self._unknown(role, bare))
            return chosen[0]
        if not candidates:
            raise PluginError(self._unknown(role, name))
        if len(candidates) > 1:
            both = " and ".join(f"{r.distribution} {r.version}" for r in candidates)
            choices = ", ".join(f'"{r.qualified_name}"' for r in candidates)
            raise PluginError(
                f"the {role} name {name!r} is registered by more than one distribution ({both}); "
                f"write one of {choices} to choose, or uninstall one of them"
            )
        return candidates[0]

    def _unknown(self, role: str, name: str) -> str:
        installed = self.names(role)
        message = f"no {role} plugin named {name!r}."
        close = difflib.get_close_matches(name, installed, n=1, cutoff=0.5)
        if close:
            message = message[:-1] + f"; did you mean {close[0]!r}?"
        if installed:
            message += f" Installed {role} plugins: {', '.join(installed)}."
        else:
            message += f" No {role} plugin is installed."
        if self.broken:
            message += " Broken plugins (see `modiff plugins`): " + ", ".join(
                f"{b.plugin} ({b.distribution})" for b in self.broken
            )
        return message


def _same_dist(a: str, b: str) -> bool:
    """Distribution names compare as pip compares them (PEP 503 normalisation)."""
    return re.sub(r"[-_.]+", "-", a).lower() == re.sub(r"[-_.]+", "-", b).lower()


def new_plugin_manager() -> pluggy.PluginManager:
    """A plugin manager that knows modiff's hook specs and holds no plugins."""
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    return pm


def register_builtins(pm: pluggy.PluginManager) -> None:
    """Register the core's own plugins (:data:`BUILTIN_PLUGINS`) in ``pm``."""
    for name, module in BUILTIN_PLUGINS.items():
        if pm.get_plugin(name) is None:
            pm.register(importlib.import_module(module), name=name)


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def _allow_list() -> set[str] | None:
    raw = os.environ.get("MODIFF_LOAD_PLUGINS")
    if raw is None:
        return None
    return {item.strip() for item in raw.split(",") if item.strip()}


def load_entry_points(
    pm: pluggy.PluginManager,
    *,
    allow: set[str] | None = None,
    strict: bool = False,
) -> tuple[list[PluginInfo], list[BrokenPlugin]]:
    """Import every ``modiff`` entry point into ``pm``, one at a time.

    A plugin that raises on import is returned as broken (or re-raised as a
    :class:`PluginError` when ``strict``); the others load regardless. When
    several distributions declare the same entry-point name, each is loaded
    under ``"distribution:name"`` (none silently hides another) and
    :meth:`Registry.entry_point_conflicts` reports them.
    """
    loaded: list[PluginInfo] = []
    broken: list[BrokenPlugin] = []
    found: list[tuple[importlib.metadata.EntryPoint, str, str]] = []
    seen: set[tuple[str, str]] = set()
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else "?"
        version = ep.dist.version if ep.dist is not None else "?"
        if (dist, ep.name) in seen:  # the same distribution seen twice on sys.path
            continue
        seen.add((dist, ep.name))
        found.append((ep, dist, version))
    declared_by: dict[str, set[str]] = {}
    for ep, dist, _ in found:
        declared_by.setdefault(ep.name, set()).add(dist)
    for ep, dist, version in found:
        if allow is not None and ep.name not in allow and dist not in allow:
            continue
        shared = len(declared_by[ep.name]) > 1
        name = f"{dist}:{ep.name}" if shared else ep.name
        if pm.get_plugin(name) is not None:
            continue
        try:
            module = ep.load()
            pm.register(module, name=name)
        except (Exception, SystemExit) as exc:  # a broken plugin must not take the others (or modiff) down
            error = f"{type(exc).__name__}: {exc}"
            if isinstance(exc, SystemExit):
                error = f"it called sys.exit({exc.code!r}) while being imported"
            if strict:
                raise PluginError(
                    f"plugin {ep.name!r} from distribution {dist} {version} failed to load: {error}. "
                    "Fix or uninstall it, or unset MODIFF_STRICT_PLUGINS to continue without it."
                ) from exc
            broken.append(BrokenPlugin(name, dist, version, ep.name, error=error))
            continue
        loaded.append(PluginInfo(name, dist, version, ep.name))
    return loaded, broken


def collect(
    pm: pluggy.PluginManager,
    *,
    plugins: Iterable[PluginInfo] = (),
    broken: Iterable[BrokenPlugin] = (),
    strict: bool = False,
) -> Registry:
    """Call every registration hook of every plugin in ``pm``, attributing
    each registration to the plugin's distribution."""
    registry = Registry(plugins=list(plugins), broken=list(broken), manager=pm)
    known = {p.plugin: p for p in registry.plugins}
    for plugin in pm.get_plugins():
        name = pm.get_name(plugin) or repr(plugin)
        if name in BUILTIN_PLUGINS:  # the core itself, not an installed plugin: its components are modiff's
            known[name] = PluginInfo(name, "modiff", _version_of(plugin))
            continue
        if name not in known:  # registered directly, e.g. by a test
            info = PluginInfo(name, _distribution_of(plugin) or name, _version_of(plugin))
            known[name] = info
            registry.plugins.append(info)
    failed: set[str] = set()
    for role, hook_name in ALL_ROLE_HOOKS.items():
        hook = getattr(pm.hook, hook_name)
        for impl in hook.get_hookimpls():
            info = known[impl.plugin_name]
            if info.plugin in failed:
                continue
            pending: list[Registration] = []
            register = _register_callback(role, info, pending)
            try:
                impl.function(register=register)
            except (Exception, SystemExit) as exc:  # sys.exit in a hook must not end modiff either
                error = f"{type(exc).__name__} in {hook_name}: {exc}"
                if strict:
                    raise PluginError(
                        f"plugin {info.plugin!r} from distribution {info.distribution} failed to register: {error}"
                    ) from exc
                failed.add(info.plugin)
                registry.broken.append(
                    BrokenPlugin(info.plugin, info.distribution, info.version, info.entry_point, error=error)
                )
                continue
            for reg in pending:
                registry.add(reg)
    if failed:  # a plugin that failed in one hook is dropped from every role
        for role in ALL_ROLES:
            for name in list(registry.components[role]):
                regs = [r for r in registry.components[role][name] if r.plugin not in failed]
                if regs:
                    registry.components[role][name] = regs
                else:
                    del registry.components[role][name]
        registry.plugins = [p for p in registry.plugins if p.plugin not in failed]
    return registry


def _register_callback(role: str, info: PluginInfo, out: list[Registration]) -> hookspecs.Register:
    def register(
        name: str,
        factory: Factory,
        settings_model: type[BaseModel] | None = None,
        *,
        description: str | None = None,
    ) -> None:
        problem = name_problem(name)
        if problem is not None:
            raise ValueError(f"{role} {problem}")
        if not callable(factory):
            raise TypeError(f"the factory for {role} {name!r} is not callable")
        model = settings_model or NoSettings
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise TypeError(f"the settings model for {role} {name!r} must be a pydantic model class")
        doc = description if description is not None else (factory.__doc__ or "").strip().splitlines()
        if isinstance(doc, list):
            doc = doc[0] if doc else ""
        if any(r.name == name for r in out):
            raise ValueError(f"{role} {name!r} registered twice by plugin {info.plugin!r}")
        out.append(Registration(role, name, factory, model, info.distribution, info.version, info.plugin, doc))

    return register


def _distribution_of(plugin: Any) -> str | None:
    import types

    module = plugin.__name__ if isinstance(plugin, types.ModuleType) else type(plugin).__module__
    top = module.split(".")[0]
    dists = _packages_distributions().get(top)
    return dists[0] if dists else None


@functools.lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    """Top-level package -> distributions; scanning every installed
    distribution takes a tenth of a second, so it is done once."""
    return dict(importlib.metadata.packages_distributions())


def _version_of(plugin: Any) -> str:
    dist = _distribution_of(plugin)
    if dist is None:
        return "?"
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "?"


_default: Registry | None = None
_lock = threading.Lock()


def registry() -> Registry:
    """The process-wide registry of installed plugins, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            strict = _truthy(os.environ.get("MODIFF_STRICT_PLUGINS"))
            pm = new_plugin_manager()
            register_builtins(pm)
            loaded, broken = load_entry_points(pm, allow=_allow_list(), strict=strict)
            _default = collect(pm, plugins=loaded, broken=broken, strict=strict)
        return _default


def registry_from(*plugins: Any, entry_points: bool = False, strict: bool = False) -> Registry:
    """A fresh registry of the given plugin objects (modules or instances with
    hook implementations), optionally plus the installed entry points. Tests
    use this to register plugins without installing anything."""
    pm = new_plugin_manager()
    register_builtins(pm)
    loaded: list[PluginInfo] = []
    broken: list[BrokenPlugin] = []
    if entry_points:
        loaded, broken = load_entry_points(pm, allow=_allow_list(), strict=strict)
    for i, plugin in enumerate(plugins):
        name = getattr(plugin, "__name__", None) or f"{type(plugin).__name__}-{i}"
        pm.register(plugin, name=name)
    return collect(pm, plugins=loaded, broken=broken, strict=strict)


def set_registry(reg: Registry | None) -> None:
    """Use ``reg`` as the process-wide registry (tests that drive the CLI with
    plugins that are not installed); ``None`` reloads from entry points."""
    global _default
    with _lock:
        _default = reg


def reset_registry() -> None:
    """Forget the process-wide registry (tests that install plugins call this)."""
    global _default
    with _lock:
        _default = None
