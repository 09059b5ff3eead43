"""Sampling a trained model with another sampler: what carries over, and what does not.

A model is trained under one noise schedule and prediction type; any sampler
of that schedule can sample it without retraining. When the sampler is
swapped (``Pipeline.with_sampler``, ``modiff generate --scheduler``, a
scheduler object's own ``with_sampler``, an imported configuration), exactly
two kinds of settings exist:

* the run's **schedule keys** — the noise schedule and the prediction type,
  everything the trained model depends on. They carry over, always: a run
  trained with another schedule is sampled with *its* schedule, never with
  the new sampler's defaults.
* the new sampler's **own options** (``eta``, ``order``, ``solver_type``,
  ``s_churn``, ``use_karras_sigmas``, ...) — they start at the new sampler's
  defaults unless given as overrides. An option the old sampler happened to
  share is *not* carried: ``eta = 0`` of DDIM would silently turn the noise of
  Euler ancestral off, ``order`` of UniPC means something else to LMS.

Which fields are the schedule is declared by the scheduler's settings model,
as a class attribute the core reads without knowing the plugin::

    class MySchedule(modiff.ComponentSettings):
        schedule_keys: ClassVar[tuple[str, ...]] = ("num_train_timesteps", "beta_schedule", "prediction_type")
        num_train_timesteps: int = 1000
        ...

A model that declares none can only be swapped for a sampler with the same
settings model (its schedule is then all of its fields).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ValidationError

from .errors import ModiffError

#: The class attribute of a scheduler settings model naming its schedule keys.
SCHEDULE_KEYS = "schedule_keys"


def schedule_keys(model: type[BaseModel]) -> tuple[str, ...] | None:
    """The schedule keys ``model`` declares (in field order), or ``None``."""
    declared = getattr(model, SCHEDULE_KEYS, None)
    if declared is None:
        return None
    keys = tuple(declared)
    unknown = [k for k in keys if k not in model.model_fields]
    if unknown:
        raise TypeError(f"{model.__name__}.{SCHEDULE_KEYS} names {unknown}, which are not fields of the model")
    return keys


def own_options(model: type[BaseModel]) -> tuple[str, ...]:
    """A sampler's own options: the fields of ``model`` that are not schedule keys."""
    keys = set(schedule_keys(model) or ())
    return tuple(k for k in model.model_fields if k not in keys)


def carried(current: BaseModel, new_model: type[BaseModel]) -> dict[str, Any]:
    """The run's settings that ``new_model`` takes over: the schedule keys of ``current``.

    Raises:
        ModiffError: the new sampler cannot take the schedule over: a model
            that declares no schedule keys (and is not ``new_model`` itself),
            or a schedule key of the run that the new sampler does not accept.
    """
    old_model = type(current)
    old_keys, new_keys = schedule_keys(old_model), schedule_keys(new_model)
    values = current.model_dump()
    if old_keys is None or new_keys is None:
        if old_model is new_model:
            return {k: values[k] for k in (old_keys or new_model.model_fields)}
        which = old_model if old_keys is None else new_model
        raise ModiffError(
            f"the settings of {which.__name__} do not declare which keys are the noise schedule "
            f"({SCHEDULE_KEYS}), so the run's schedule cannot be carried from {old_model.__name__} to "
            f"{new_model.__name__}; sample with the run's own scheduler, or declare {SCHEDULE_KEYS} on the model"
        )
    missing = [k for k in old_keys if k not in new_keys]
    if missing:
        raise ModiffError(
            f"the run's noise schedule has {', '.join(missing)}, which {new_model.__name__} does not take: "
            "it samples another kind of schedule, so it cannot sample this model"
        )
    return {k: values[k] for k in old_keys}


def swap(current: BaseModel, new_model: type[BaseModel], overrides: Mapping[str, Any] | None = None) -> BaseModel:
    """Settings of the new sampler: the run's schedule (:func:`carried`), the
    new sampler's defaults, and ``overrides`` on top.

    ``overrides`` may set the new sampler's own options and any schedule key
    (that changes what the model is sampled with; callers that must keep the
    model's meaning check the prediction type of the result).

    Raises:
        ModiffError: the schedule cannot be carried, an override names no key
            of the new sampler (with the closest one), or a value is invalid.
    """
    overrides = dict(overrides or {})
    unknown = [k for k in overrides if k not in new_model.model_fields]
    if unknown:
        problems = []
        for key in unknown:
            close = difflib.get_close_matches(key, list(new_model.model_fields), n=1, cutoff=0.6)
            problems.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise ModiffError(
            f"{new_model.__name__} has no option {', '.join(problems)}; its own options: "
            f"{', '.join(own_options(new_model)) or 'none'}"
        )
    try:
        return new_model.model_validate({**carried(current, new_model), **overrides})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'settings'}: {e['msg']}" for e in exc.errors())
        raise ModiffError(f"{new_model.__name__} cannot use these settings: {problems}") from None


__all__ = ["SCHEDULE_KEYS", "carried", "own_options", "schedule_keys", "swap"]
