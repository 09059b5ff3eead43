"""What a mutant is, and the plugin object that registers them all."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ...hookspecs import hookimpl
from ...plugins import ROLE_HOOKS, NoSettings
from .. import toys

#: How each role's toy is built from its settings and the build context, and its settings model.
TOY_FACTORIES: dict[str, tuple[type, Callable[[type], Callable[[Any, Any], Any]]]] = {
    "data": (toys.ToyDataSettings, lambda cls: lambda s, ctx: cls(s)),
    "encoder": (toys.ToyEncoderSettings, lambda cls: lambda s, ctx: cls(s)),
    "text_embedder": (toys.ToyTextSettings, lambda cls: lambda s, ctx: cls(s)),
    "conditioner": (toys.ToyConditionerSettings, lambda cls: lambda s, ctx: cls(s, *cls.arguments(ctx))),
    "denoiser": (toys.ToyDenoiserSettings, lambda cls: lambda s, ctx: cls(s, ctx)),
    "scheduler": (toys.ToySchedulerSettings, lambda cls: lambda s, ctx: cls(s)),
    "evaluator": (NoSettings, lambda cls: lambda s, ctx: cls()),
}

#: The kinds of mistake, as the issue that asked for mutants lists them.
KINDS = (
    "ignores an input",
    "leaks across the batch",
    "sign or off-by-one",
    "global random state",
    "wrong dtype",
    "wrong device",
    "state kept between calls",
    "padding leaks",
    "wrong shape",
    "modifies its input",
    "wrong range or type",
    "wrong formula",
)


@dataclass(frozen=True)
class Mutant:
    """One toy component with one mistake.

    Attributes:
        role: the role (``data``, ``encoder``, ...).
        name: the registered component name (``mutant-...``).
        kind: one of :data:`KINDS`.
        mistake: what the author got wrong, in one sentence (the class docstring).
        cls: the mutant class (a subclass of the role's toy).
        killed_by: the contract tests that must fail for it.
    """

    role: str
    name: str
    kind: str
    mistake: str
    cls: type
    killed_by: tuple[str, ...]

    def factory(self) -> Callable[[Any, Any], Any]:
        return TOY_FACTORIES[self.role][1](self.cls)

    @property
    def settings_model(self) -> type:
        return TOY_FACTORIES[self.role][0]


#: Every mutant, in definition order.
MUTANTS: list[Mutant] = []


def _kebab(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "-", name).lower()


def mutant(role: str, kind: str, *killed_by: str) -> Callable[[type], type]:
    """Class decorator: register the class as a mutant of ``role``'s toy, caught by ``killed_by``."""
    if role not in TOY_FACTORIES:
        raise ValueError(f"unknown role {role!r}")
    if kind not in KINDS:
        raise ValueError(f"unknown kind of mistake {kind!r}; the kinds are {KINDS}")
    if not killed_by:
        raise ValueError("name the contract test(s) that must catch the mutant")

    def register(cls: type) -> type:
        name = f"mutant-{_kebab(cls.__name__)}"
        if any(m.name == name and m.role == role for m in MUTANTS):
            raise ValueError(f"two mutants of {role} are called {name}")
        doc = " ".join((cls.__doc__ or "").split())
        MUTANTS.append(Mutant(role, name, kind, doc, cls, tuple(killed_by)))
        return cls

    return register


class MutantPlugin:
    """Registers every mutant under its name in its role (next to the ``toy`` components)."""

    __name__ = "mutants"

    def _register(self, role: str, register: Any) -> None:
        for m in MUTANTS:
            if m.role == role:
                register(m.name, m.factory(), m.settings_model, description=m.mistake[:80])

    @hookimpl
    def register_datasets(self, register: Any) -> None:
        self._register("data", register)

    @hookimpl
    def register_encoders(self, register: Any) -> None:
        self._register("encoder", register)

    @hookimpl
    def register_text_embedders(self, register: Any) -> None:
        self._register("text_embedder", register)

    @hookimpl
    def register_conditioners(self, register: Any) -> None:
        self._register("conditioner", register)

    @hookimpl
    def register_denoisers(self, register: Any) -> None:
        self._register("denoiser", register)

    @hookimpl
    def register_schedulers(self, register: Any) -> None:
        self._register("scheduler", register)

    @hookimpl
    def register_evaluators(self, register: Any) -> None:
        self._register("evaluator", register)


assert set(TOY_FACTORIES) == set(ROLE_HOOKS), "a role without a toy factory"
