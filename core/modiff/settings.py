"""Settings: one TOML file (plus overlays), environment and ``--set``.

Precedence, lowest to highest: the built-in defaults, each settings file in
the order given (a base file, then overlays), environment variables
``MODIFF_<TABLE>__<KEY>=value``, then ``--set table.key=value``. Values from
the environment and ``--set`` are parsed as TOML values (``[64,128]``,
``2e-4``, ``true``), falling back to a plain string.

Resolution has two phases, so that a user sees every mistake at once:

1. :func:`load_settings` merges the layers and validates the core's own tables
   (``[run]``, ``[train]``, ``[sample]``) and the shape of each role table.
2. :func:`resolve` looks every role's ``plugin`` up in the registry and
   validates the rest of its table against that plugin's settings model.

Nothing in a settings file is imported or evaluated: a plugin name is only
ever looked up among registered plugins.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from .errors import ModiffError, SettingsError
from .names import FOLDER_NAME_RULE, is_folder_name
from .plugins import ROLES, TRACKER, Registration, Registry
from .plugins import registry as default_registry
from .protocols import TaskProtocol
from .toml_io import dumps, parse_value

ENV_PREFIX = "MODIFF_"

#: The largest seed a torch generator takes: ``[run] seed`` and every generation seed lie in 0..MAX_SEED.
MAX_SEED = 2**64 - 1

#: Roles a settings file must fill; the others may be left out. ``data`` may
#: also be left out when ``[run] image_size`` is set: a run that only
#: generates (imported weights) needs the image size, not a dataset.
REQUIRED_ROLES = ("data", "encoder", "denoiser", "scheduler")


class _Table(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class RunSettings(_Table):
    """``[run]``: what the run is called, where it goes and what it runs on."""

    name: str = Field(
        "run",
        description="Run directory name under runs_dir: one folder name (no '/', not starting with '.').",
    )
    runs_dir: str = Field("runs", description="Folder that holds run directories.")
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description=f"Seed for weights, data order and noise: 0 to {MAX_SEED} (64 bits)."
    )
    device: str = Field("auto", description="cpu, cuda, cuda:N or auto (CUDA when present).")
    precision: Literal["fp32", "bf16", "fp16"] = Field("fp32", description="Autocast precision.")
    task: str = Field(
        "text-to-image",
        description="What the run learns: text-to-image, mask-to-image, inpainting, segmentation, or a task a "
        "plugin registers.",
    )
    channels_last: bool = Field(False, description="Use channels_last memory format for convolutions.")
    compile: bool = Field(False, description="torch.compile the denoiser.")
    deterministic: bool = Field(False, description="Ask torch for deterministic algorithms.")
    image_size: int | None = Field(None, ge=1, description="Image size when no dataset gives one.")

    @field_validator("name")
    @classmethod
    def _one_folder(cls, name: str) -> str:
        if not is_folder_name(name):
            raise ValueError(f"a run name is {FOLDER_NAME_RULE}")
        return name


class StageSettings(_Table):
    """Optimisation of one training stage (autoencoder or text embedder)."""

    steps: int = Field(1000, ge=0)
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    warmup_steps: int = Field(50, ge=0)
    final_lr: float = Field(
        0.1, ge=0, le=1, description="Where the cosine decay ends, as a fraction of lr (0: decay to zero)."
    )
    weight_decay: float = Field(0.0, ge=0)
    adam_betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = Field(
        (0.9, 0.999),
        description="AdamW's (beta1, beta2), each in [0, 1): a smaller beta2 forgets old gradient scales "
        "sooner, which can matter in a run of a few thousand steps.",
    )
    grad_clip: float = Field(1.0, ge=0, description="Max gradient norm; 0 disables clipping.")


class TrainSettings(StageSettings):
    """``[train]``: the denoiser stage (the optimisation keys of :class:`StageSettings`
    with its own defaults, and what only the denoiser stage has), and
    ``[train.encoder]``/``[train.text_embedder]``."""

    steps: int = Field(4000, ge=0)
    batch_size: int = Field(64, ge=1)
    lr: float = Field(2e-4, gt=0)
    warmup_steps: int = Field(100, ge=0)
    ema_decay: float = Field(0.999, ge=0, lt=1, description="0 disables EMA.")
    ema_warmup: bool = Field(
        False,
        description="Warm the EMA up: decay min(ema_decay, (1 + n) / (10 + n)) at update n, so the averaged "
        "weights follow the model early instead of its random initialisation.",
    )
    condition_dropout: float = Field(0.1, ge=0, le=1, description="Fraction of captions dropped for guidance.")
    checkpoint_every: int = Field(500, ge=1)
    sample_every: int = Field(0, ge=0, description="Write a sample grid every N steps (0: only at the end).")
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(
        0,
        ge=0,
        description="Run the evaluator every N denoiser steps (EMA weights) and log its numbers with the "
        "training seconds so far to metrics.jsonl: a learning curve (0: off).",
    )
    encoder: StageSettings = Field(default_factory=StageSettings)
    text_embedder: StageSettings = Field(default_factory=StageSettings)


class SampleSettings(_Table):
    """``[sample]``: defaults for generation."""

    steps: int = Field(50, ge=1)
    guidance: float = Field(3.0, ge=0, description="Classifier-free guidance scale; 1 disables it.")
    scheduler: str | None = Field(None, description="Sampler to use instead of the training scheduler.")
    batch_guidance: bool = Field(
        True,
        description="Run guidance's conditional and unconditional passes as one batch of 2B (faster); "
        "false runs them one after the other (less memory per pass, same samples within float tolerance).",
    )
    prompts: list[str] = Field(default_factory=list, description="Prompts for sample grids.")


class TrackSettings(BaseModel):
    """``[track]``: the trackers that watch the run, several at once, none by default.

    Each tracker's options go in a table of its own, ``[track.NAME]``
    (checked against that tracker's settings model in phase 2)::

        [track]
        plugins = ["tensorboard", "mlflow"]

        [track.mlflow]
        tracking_uri = "http://mlflow.example:5000"
    """

    model_config = ConfigDict(extra="allow", protected_namespaces=())

    plugins: list[str] = Field(default_factory=list, description="Trackers to feed, e.g. ['tensorboard'].")
    group: str | None = Field(
        None, description="The experiment the run belongs to in its trackers (an ablation sets its name)."
    )
    tags: dict[str, str] = Field(
        default_factory=dict, description="Tags that tell the run from its group's others (variant, seed)."
    )

    def options(self) -> dict[str, Any]:
        """The ``[track.NAME]`` tables, by name."""
        return dict(self.model_extra or {})


class ComponentChoice(BaseModel):
    """A role table: ``plugin`` plus that plugin's parameters (checked later)."""

    model_config = ConfigDict(extra="allow")

    plugin: str

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class Settings(BaseSettings):
    """Every table of a settings file, before the plugins are looked up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", protected_namespaces=()
    )

    run: RunSettings = Field(default_factory=RunSettings)
    data: ComponentChoice | None = None
    encoder: ComponentChoice | None = None
    text_embedder: ComponentChoice | None = None
    conditioner: ComponentChoice | None = None
    denoiser: ComponentChoice | None = None
    scheduler: ComponentChoice | None = None
    evaluator: ComponentChoice | None = None
    train: TrainSettings = Field(default_factory=TrainSettings)
    sample: SampleSettings = Field(default_factory=SampleSettings)
    track: TrackSettings = Field(default_factory=TrackSettings)

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, *args: Any, **kwargs: Any):  # type: ignore[no-untyped-def]
        # Only explicit data: the layers are merged by load_settings, which
        # keeps track of where each value came from for error messages.
        return (init_settings,)


# --------------------------------------------------------------------------
# Layers
# --------------------------------------------------------------------------


@dataclass
class Layers:
    """Merged raw settings and, for every key path, the layer that set it last."""

    data: dict[str, Any] = field(default_factory=dict)
    origins: dict[tuple[str, ...], str] = field(default_factory=dict)

    def merge(self, incoming: Mapping[str, Any], origin: str) -> None:
        _deep_merge(self.data, incoming, (), origin, self.origins)

    def origin(self, *path: str) -> str:
        """Where ``path`` (or the nearest table above it) was set."""
        for n in range(len(path), 0, -1):
            if path[:n] in self.origins:
                return self.origins[path[:n]]
        return "the defaults"


def _deep_merge(
    into: dict[str, Any],
    incoming: Mapping[str, Any],
    path: tuple[str, ...],
    origin: str,
    origins: dict[tuple[str, ...], str],
) -> None:
    for key, value in incoming.items():
        here = (*path, str(key))
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            # A new plugin in an overlay replaces the table rather than mixing
            # two plugins' parameters.
            if "plugin" in value and value.get("plugin") != into[key].get("plugin") and len(path) == 0:
                into[key] = {}
            _deep_merge(into[key], value, here, origin, origins)
        elif isinstance(value, Mapping):
            into[key] = {}
            _deep_merge(into[key], value, here, origin, origins)
        else:
            into[key] = value
        origins[here] = origin


@contextmanager
def nesting_refused(origin: str) -> Iterator[None]:
    """A value nested deeper than Python's recursion limit (``[[[[...]]]]``, a
    thousand levels) as one :class:`SettingsError` naming where it came from,
    instead of the ``RecursionError`` the TOML parser or validation would raise."""
    try:
        yield
    except RecursionError:
        raise SettingsError(
            [f"a value in {origin} nests arrays or tables too deeply to read (hundreds of levels); "
             "no setting needs that"]
        ) from None


def read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """A settings file as a dict (read with pydantic-settings' TOML source)."""
    p = Path(path)
    if not p.is_file():
        raise SettingsError([f"settings file {str(p)!r} does not exist"])
    try:
        with nesting_refused(str(p)), p.open("rb") as fh:  # parse first for an error message with a line number
            tomllib.load(fh)
        with nesting_refused(str(p)):
            return dict(TomlConfigSettingsSource(Settings, toml_file=p)())
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError([f"{p} is not valid TOML: {exc}"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError([f"cannot read settings file {p}: {exc}"]) from None


def env_layer(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``MODIFF_TABLE__KEY=value`` variables as nested settings, values parsed as TOML.

    A variable whose TABLE names no settings table (``MODIFF_DENOSIER__WIDTH``)
    is an error naming the variable, the closest table and the allowed ones,
    as the same typo in a settings file is: left unreported, the setting it
    meant would silently keep its old value. So is a variable that starts with
    a table's name but has one underscore before the key (``MODIFF_TRAIN_STEPS``).
    """
    import difflib

    environ = os.environ if environ is None else environ
    relevant = {
        k: v
        for k, v in environ.items()
        if k.upper().startswith(ENV_PREFIX) and "__" in k[len(ENV_PREFIX) :]
    }
    tables = list(Settings.model_fields)
    problems = [_one_underscore(k, tables) for k in sorted(environ) if k not in relevant]
    problems = [p for p in problems if p]
    if not relevant and not problems:
        return {}
    for variable in sorted(relevant):
        table = variable[len(ENV_PREFIX) :].split("__", 1)[0].lower()
        if table not in tables:
            close = difflib.get_close_matches(table, tables, n=1, cutoff=0.6)
            rest = variable[len(ENV_PREFIX) :].split("__", 1)[1]
            hint = f" (did you mean {ENV_PREFIX}{close[0].upper()}__{rest}?)" if close else ""
            problems.append(
                f"unknown table {table!r} in environment variable {variable}{hint}; "
                f"allowed tables: {', '.join(tables)}"
            )
    if problems:
        raise SettingsError(problems)
    source = EnvSettingsSource(
        Settings, env_prefix=ENV_PREFIX, env_nested_delimiter="__", case_sensitive=False
    )
    source.env_vars = {k.lower(): v for k, v in relevant.items()}
    with nesting_refused("the MODIFF_ environment variables"):
        try:
            raw = source()
        except RecursionError:
            raise
        except Exception as exc:  # pydantic-settings refuses malformed nesting
            raise SettingsError([f"cannot read MODIFF_ environment variables: {exc}"]) from None
        return _parse_leaves(raw)


def _one_underscore(variable: str, tables: list[str]) -> str | None:
    """The problem with ``variable`` if it reads as a setting written with one
    underscore between table and key (``MODIFF_TRAIN_STEPS``): it names no
    setting, and left unreported the setting it meant keeps its old value.
    modiff's other variables (``MODIFF_LOAD_PLUGINS``) start with no table name."""
    rest = variable[len(ENV_PREFIX) :].lower() if variable.upper().startswith(ENV_PREFIX) else ""
    table = next((t for t in sorted(tables, key=len, reverse=True) if rest.startswith(f"{t}_")), None)
    if table is None:
        return None
    meant = f"{ENV_PREFIX}{table.upper()}__{rest[len(table) + 1 :].upper()}"
    return (
        f"environment variable {variable} names no setting (did you mean {meant}?); a setting's variable is "
        f"{ENV_PREFIX}<TABLE>__<KEY>, with two underscores between table and key"
    )


def _parse_leaves(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _parse_leaves(v) for k, v in value.items()}
    if isinstance(value, str):
        return parse_value(value)
    return value


def parse_set(assignment: str) -> dict[str, Any]:
    """``"denoiser.channels=[64,128]"`` -> ``{"denoiser": {"channels": [64, 128]}}``."""
    key, sep, value = assignment.partition("=")
    parts = [p.strip() for p in key.strip().split(".")]
    if not sep or not all(parts):
        raise SettingsError(
            [f"--set {assignment!r} is not of the form table.key=value (for example denoiser.channels=[64,128])"]
        )
    with nesting_refused(f"--set {key.strip()}"):
        nested: dict[str, Any] = {parts[-1]: parse_value(value.strip())}
    for part in reversed(parts[:-1]):
        nested = {part: nested}
    return nested


def load_layers(
    files: Sequence[str | os.PathLike[str]] = (),
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> Layers:
    """Merge the layers, lowest first; every file, variable and ``--set`` that
    cannot be read is reported together in one :class:`SettingsError`."""
    layers = Layers()
    problems: list[str] = []
    if base:
        layers.merge(base, "the built-in settings")
    for f in files:
        _merge_or_note(layers, lambda f=f: read_toml(f), str(f), problems)
    _merge_or_note(layers, lambda: env_layer(environ), "the environment", problems)
    for s in sets:
        _merge_or_note(layers, lambda s=s: parse_set(s), f"--set {s}", problems)
    if problems:
        raise SettingsError(problems)
    return layers


def _merge_or_note(layers: Layers, read: Any, origin: str, problems: list[str]) -> None:
    """Merge what ``read()`` returns, or add its problems to ``problems``."""
    try:
        incoming = read()
    except SettingsError as exc:
        problems.extend(exc.problems)
        return
    if incoming:
        layers.merge(incoming, origin)


# --------------------------------------------------------------------------
# Phase 1 and phase 2
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class LoadedSettings:
    """Phase 1: validated core tables, unresolved role tables, and origins."""

    settings: Settings
    layers: Layers


def load_settings(
    files: Sequence[str | os.PathLike[str]] = (),
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
) -> LoadedSettings:
    """Merge the layers and validate everything the core itself defines."""
    layers = load_layers(files, sets, environ, base)
    settings, problems, _ = _validate_core(layers)
    if problems:
        raise SettingsError(problems)
    assert settings is not None
    return LoadedSettings(settings, layers)


def _validate_core(layers: Layers) -> tuple[Settings | None, list[str], set[str]]:
    """Phase 1 that goes on past its problems: (the settings with every table
    that has a problem left at its default or out, the problems, the tables
    left so). Phase 2 then still checks the role tables that were fine, so a
    typo in ``[train]`` and one in ``[denoiser]`` are reported together."""
    data = dict(layers.data)
    problems: list[str] = []
    dropped: set[str] = set()
    for _ in range(len(data) + 1):  # each round leaves at least one more table out
        try:
            with nesting_refused(", ".join(dict.fromkeys(layers.origins.values())) or "the settings"):
                return Settings(**data), problems, dropped
        except ValidationError as exc:
            problems.extend(_describe(exc, layers, (), None))
            bad = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            if not bad & data.keys():
                break
            dropped |= bad
            data = {k: v for k, v in data.items() if k not in bad}
        except TypeError as exc:  # keys that are not strings, etc.
            problems.append(f"settings are malformed: {exc}")
            break
    return None, problems, dropped


@dataclass(frozen=True)
class ResolvedComponent:
    """One role: the registration that will build it and its validated parameters."""

    role: str
    registration: Registration
    params: BaseModel

    @property
    def name(self) -> str:
        return self.registration.name


@dataclass(frozen=True)
class ResolvedSettings:
    """Phase 2: every role looked up and validated; ready to build."""

    settings: Settings
    components: dict[str, ResolvedComponent]
    layers: Layers
    #: the :class:`modiff.tasks.Task` that ``[run] task`` names
    task: TaskProtocol | None = None
    #: the trackers ``[track] plugins`` names, in its order, by the name written there
    trackers: dict[str, ResolvedComponent] = field(default_factory=dict)

    @property
    def run(self) -> RunSettings:
        return self.settings.run

    @property
    def train(self) -> TrainSettings:
        return self.settings.train

    @property
    def sample(self) -> SampleSettings:
        return self.settings.sample

    def to_dict(self) -> dict[str, Any]:
        """Every table with every default filled in."""
        out: dict[str, Any] = {"run": self.settings.run.model_dump(mode="json")}
        for role in ROLES:
            comp = self.components.get(role)
            if comp is not None:
                out[role] = {"plugin": _written_name(self.settings, role, comp), **comp.params.model_dump(mode="json")}
        out["train"] = self.settings.train.model_dump(mode="json")
        out["sample"] = self.settings.sample.model_dump(mode="json")
        track = self.settings.track
        if track != TrackSettings():  # left out when unused, so untracked runs' settings read as before
            out["track"] = {k: v for k, v in track.model_dump(mode="json").items() if k in TrackSettings.model_fields}
            for name, comp in self.trackers.items():
                out["track"][name] = comp.params.model_dump(mode="json")
        return out

    def to_toml(self) -> str:
        return dumps(self.to_dict())


def _written_name(settings: Settings, role: str, comp: ResolvedComponent) -> str:
    choice: ComponentChoice | None = getattr(settings, role)
    return choice.plugin if choice is not None else comp.name


def resolve(loaded: LoadedSettings, registry: Registry | None = None) -> ResolvedSettings:
    """Look every role's plugin up and validate its parameters; report all problems together."""
    return _resolve(loaded.settings, loaded.layers, registry or default_registry(), [], set())


def _resolve(
    settings: Settings, layers: Layers, registry: Registry, problems: list[str], reported: set[str]
) -> ResolvedSettings:
    """Phase 2 after phase 1's ``problems``; a table in ``reported`` had its
    problem reported already and is not called missing."""
    components: dict[str, ResolvedComponent] = {}
    task = registry.tasks().get(settings.run.task)
    if task is None:
        known = ", ".join(sorted(registry.tasks()))
        problems.append(
            f"[run] task = {settings.run.task!r} in {layers.origin('run', 'task')} is unknown; tasks: {known}"
        )
    for role in ROLES:
        choice: ComponentChoice | None = getattr(settings, role)
        if choice is None:
            needed = role in REQUIRED_ROLES and role not in reported and not (
                (role == "scheduler" and task is not None and not task.uses_scheduler)
                or (role == "data" and settings.run.image_size is not None)
            )
            if needed:
                installed = ", ".join(registry.names(role)) or "none installed"
                hint = " or set [run] image_size for a run that only generates" if role == "data" else ""
                problems.append(f"the settings have no [{role}] table; choose a plugin ({installed}){hint}")
            continue
        try:
            registration = registry.lookup(role, choice.plugin)
        except ModiffError as exc:
            problems.append(f"[{role}] plugin = {choice.plugin!r} in {layers.origin(role, 'plugin')}: {exc}")
            continue
        try:
            params = registration.validate(choice.params())
        except ValidationError as exc:
            problems.extend(_describe(exc, layers, (role,), registration))
            continue
        except Exception as exc:  # a plugin's own validator that raised something else
            problems.append(
                f"[{role}] could not be validated by {registration.name!r} "
                f"({registration.distribution}): {type(exc).__name__}: {exc}"
            )
            continue
        components[role] = ResolvedComponent(role, registration, params)
    trackers = _resolve_trackers(settings.track, layers, registry, problems)
    if problems:
        raise SettingsError(problems)
    return ResolvedSettings(settings, components, layers, task, trackers)


def _resolve_trackers(
    track: TrackSettings, layers: Layers, registry: Registry, problems: list[str]
) -> dict[str, ResolvedComponent]:
    """Look up every tracker ``[track] plugins`` names and validate its ``[track.NAME]``
    table; an options table that names no installed tracker is a typo, reported."""
    trackers: dict[str, ResolvedComponent] = {}
    options = track.options()
    for name in track.plugins:
        if name in trackers:
            problems.append(f"[track] plugins in {layers.origin('track', 'plugins')} names {name!r} twice")
            continue
        try:
            registration = registry.lookup(TRACKER, name)
        except ModiffError as exc:
            problems.append(f"[track] plugins = {track.plugins!r} in {layers.origin('track', 'plugins')}: {exc}")
            continue
        params = options.get(name, {})
        if not isinstance(params, dict):
            problems.append(
                f"[track] {name} = {params!r} in {layers.origin('track', name)}: a tracker's options are a "
                f"table, [track.{name}]"
            )
            continue
        try:
            trackers[name] = ResolvedComponent(TRACKER, registration, registration.validate(params))
        except ValidationError as exc:
            problems.extend(_describe(exc, layers, ("track", name), registration))
    for name in options:
        if name not in trackers and not registry.components[TRACKER].get(name.rpartition(":")[2]):
            installed = ", ".join(registry.names(TRACKER)) or "none installed"
            allowed = ", ".join(TrackSettings.model_fields)
            hint = did_you_mean(name, [*TrackSettings.model_fields, *registry.names(TRACKER)])
            problems.append(
                f"unknown key {name!r} in [track] of {layers.origin('track', name)}{hint}; allowed keys: {allowed}, "
                f"or a table of options for an installed tracker ({installed})"
            )
    return trackers


def load(
    files: Sequence[str | os.PathLike[str]] = (),
    sets: Sequence[str] = (),
    *,
    environ: Mapping[str, str] | None = None,
    base: Mapping[str, Any] | None = None,
    registry: Registry | None = None,
) -> ResolvedSettings:
    """Both phases, every problem of either reported together: the usual way to read settings."""
    layers = load_layers(files, sets, environ, base)
    settings, problems, dropped = _validate_core(layers)
    if settings is None:
        raise SettingsError(problems)
    return _resolve(settings, layers, registry or default_registry(), problems, dropped)


def _describe(
    exc: ValidationError,
    layers: Layers,
    prefix: tuple[str, ...],
    registration: Registration | None,
) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(str(p) for p in (*prefix, *err["loc"]))
        table = ".".join(loc[:-1]) or "(top level)"
        key = loc[-1] if loc else "?"
        origin = layers.origin(*loc)
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(loc[:-1], registration)
            who = f" for {registration.name!r} ({registration.distribution})" if registration else ""
            problems.append(
                f"unknown key {key!r} in [{table}] of {origin}{who}{did_you_mean(key, allowed)}; "
                f"allowed keys: {', '.join(allowed) or 'none'}"
            )
        elif err["type"] == "missing":
            problems.append(f"[{table}] of {origin} is missing the required key {key!r}")
        else:
            value = err.get("input")
            shown = repr(value)
            if len(shown) > 60:
                shown = shown[:57] + "..."
            problems.append(f"[{table}] {key} = {shown} in {origin}: {err['msg']}")
    return problems


def did_you_mean(word: str, known: Sequence[str]) -> str:
    """`` (did you mean 'NEAREST'?)`` for the known word nearest ``word`` by
    difflib's ratio, or nothing when none is near: the one hint every unknown
    key, table and name gets."""
    import difflib

    close = difflib.get_close_matches(word, [k for k in known if not k.startswith("(")], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _allowed_keys(table: tuple[str, ...], registration: Registration | None) -> list[str]:
    model: type[BaseModel] | None
    if registration is not None and registration.role == TRACKER:  # [track.NAME]: the options alone
        model, table, extra = registration.settings_model, table[2:], []
    elif registration is not None:
        model = registration.settings_model
        table = table[1:]
        extra = ["plugin"]
    else:
        model, extra = Settings, []
    for part in table:
        field_info = model.model_fields.get(part) if model else None
        annotation = field_info.annotation if field_info else None
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is ComponentChoice:
            return ["plugin", "(the plugin's own keys)"]
    if model is None:
        return []
    return extra + list(model.model_fields)


def json_schema(registry: Registry | None = None) -> dict[str, Any]:
    """JSON Schema for settings files accepted by the installed plugins.

    Each role table is a ``oneOf`` over the installed plugins, each branch
    fixing ``plugin`` and listing that plugin's parameters.
    """
    registry = registry or default_registry()
    schema = Settings.model_json_schema()
    defs = schema.setdefault("$defs", {})
    for role in ROLES:
        branches = []
        for reg in registry.all(role):
            sub = reg.settings_model.model_json_schema(ref_template="#/$defs/{model}")
            for name, d in sub.pop("$defs", {}).items():
                defs.setdefault(name, d)
            props = {"plugin": {"enum": [reg.name, reg.qualified_name]}, **sub.get("properties", {})}
            branches.append(
                {
                    "type": "object",
                    "title": f"{reg.name} ({reg.distribution})",
                    "description": reg.description,
                    "properties": props,
                    "required": ["plugin", *sub.get("required", [])],
                    "additionalProperties": False,
                }
            )
        schema["properties"][role] = {"oneOf": branches} if branches else {"type": "object"}
    return schema
