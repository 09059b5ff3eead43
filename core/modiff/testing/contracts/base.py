"""What every contract class shares: how the component under test is built."""

from __future__ import annotations

from typing import Any, ClassVar

from hypothesis import HealthCheck
from hypothesis import settings as hsettings

from ...assembly import BuildContext
from ...plugins import Registry
from .. import build_one

#: Hypothesis settings for contract properties: few examples, no deadline,
#: because each example may run a small network.
CONTRACT_SETTINGS = hsettings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.differing_executors],
    derandomize=True,
)


class Contract:
    """Base of the contract classes.

    Attributes to set in a subclass:
        role: filled in by each contract class.
        plugin: the registered component name (``"dist:name"`` works too).
        settings: parameters for the component, as in a settings table.
    """

    role: ClassVar[str] = ""
    plugin: ClassVar[str] = ""
    settings: ClassVar[dict[str, Any]] = {}
    #: Absolute tolerance for "the same output" comparisons.
    atol: ClassVar[float] = 1e-5

    def registry(self) -> Registry | None:
        """The registry to find ``plugin`` in; ``None`` means the installed plugins."""
        return None

    def context(self) -> Any:
        """The :class:`modiff.BuildContext` handed to the factory."""
        return BuildContext()

    def shared(self) -> Any:
        """One component per test, reused across the examples of a Hypothesis test."""
        if "_shared_component" not in self.__dict__:
            self.__dict__["_shared_component"] = self.build()
        return self.__dict__["_shared_component"]

    def build(self, **overrides: Any) -> Any:
        """A fresh component, seeded so that two builds are identical."""
        import torch

        if not self.plugin:
            raise AssertionError(f"{type(self).__name__} must set `plugin` to the component's registered name")
        torch.manual_seed(0)
        component = build_one(
            self.role, self.plugin, {**self.settings, **overrides}, context=self.context(), registry_=self.registry()
        )
        if isinstance(component, torch.nn.Module):
            component.eval()
        return component
