"""Discovery through entry points, broken plugins, duplicate names, lookups."""

from __future__ import annotations

import pytest

import modiff
from modiff.errors import PluginError
from modiff.plugins import load_entry_points, new_plugin_manager, registry, registry_from
from modiff.testing.toys import ToyPlugin

BROKEN = """
raise ImportError("this plugin needs a library that is not installed")
"""

DUPLICATE_DDIM = """
import modiff

def build(settings, context):
    return "not a scheduler"

@modiff.hookimpl
def register_schedulers(register):
    register("ddim", build)
"""


def test_installed_schedulers_are_found_through_their_entry_point() -> None:
    reg = registry_from(entry_points=True)
    ddim = reg.lookup("scheduler", "ddim")
    assert ddim.distribution == "modiff-schedulers"
    assert ddim.plugin == "schedulers"
    assert any(p.distribution == "modiff-schedulers" for p in reg.plugins)


def test_a_broken_plugin_is_listed_and_the_others_keep_working(fake_distribution) -> None:
    fake_distribution("fake-broken", "fake_broken", BROKEN)
    reg = registry_from(entry_points=True)
    [broken] = [b for b in reg.broken if b.distribution == "fake-broken"]
    assert "ImportError" in broken.error and "not installed" in broken.error
    assert reg.lookup("scheduler", "ddim").distribution == "modiff-schedulers"


def test_strict_mode_makes_a_broken_plugin_fatal(fake_distribution) -> None:
    fake_distribution("fake-broken", "fake_broken", BROKEN)
    with pytest.raises(PluginError, match="fake_broken.*fake-broken.*MODIFF_STRICT_PLUGINS"):
        load_entry_points(new_plugin_manager(), strict=True)


def test_allow_list_loads_only_the_named_plugins(fake_distribution, monkeypatch) -> None:
    fake_distribution("fake-broken", "fake_broken", BROKEN)
    monkeypatch.setenv("MODIFF_LOAD_PLUGINS", "schedulers")
    reg = registry_from(entry_points=True)
    assert not reg.broken
    assert {p.distribution for p in reg.plugins} == {"modiff-schedulers"}
    monkeypatch.setenv("MODIFF_LOAD_PLUGINS", "")
    assert registry_from(entry_points=True).plugins == []


def test_a_hook_that_raises_marks_its_plugin_broken() -> None:
    class Exploding:
        __name__ = "exploding"

        @modiff.hookimpl
        def register_schedulers(self, register):
            register("boom", lambda s, c: None)
            raise RuntimeError("cannot register")

    reg = registry_from(Exploding(), ToyPlugin())
    assert [b.plugin for b in reg.broken] == ["exploding"]
    assert "RuntimeError" in reg.broken[0].error
    assert "boom" not in reg.names("scheduler")
    assert "toy" in reg.names("scheduler")


def test_duplicate_names_across_distributions_are_an_error_naming_both(fake_distribution) -> None:
    fake_distribution("fake-dup", "fake_dup", DUPLICATE_DDIM)
    reg = registry_from(entry_points=True)
    with pytest.raises(PluginError) as info:
        reg.lookup("scheduler", "ddim")
    message = str(info.value)
    assert "modiff-schedulers" in message and "fake-dup" in message
    assert '"fake-dup:ddim"' in message
    assert reg.lookup("scheduler", "fake-dup:ddim").distribution == "fake-dup"
    assert reg.lookup("scheduler", "modiff-schedulers:ddim").distribution == "modiff-schedulers"
    assert reg.lookup("scheduler", "modiff_schedulers:ddim").distribution == "modiff-schedulers"
    assert [[r.distribution for r in regs] for regs in reg.conflicts()] in (
        [["modiff-schedulers", "fake-dup"]],
        [["fake-dup", "modiff-schedulers"]],
    )


def test_unknown_name_suggests_the_closest_match_and_lists_installed() -> None:
    reg = registry_from(entry_points=True)
    with pytest.raises(PluginError, match=r"did you mean 'ddim'\?.*Installed scheduler plugins: .*ddpm"):
        reg.lookup("scheduler", "ddin")


def test_registration_validates_names_and_models() -> None:
    class Bad:
        __name__ = "bad"

        @modiff.hookimpl
        def register_denoisers(self, register):
            register("Has Spaces", lambda s, c: None)

    reg = registry_from(Bad())
    assert reg.broken and "not valid" in reg.broken[0].error


def test_process_registry_is_loaded_once() -> None:
    assert registry() is registry()


def test_a_factory_that_raises_is_reported_with_plugin_and_distribution() -> None:
    from modiff.settings import load_settings, resolve
    from modiff.testing.toys import TOY_SETTINGS
    from modiff.assembly import build

    class Faulty:
        __name__ = "faulty"

        @modiff.hookimpl
        def register_denoisers(self, register):
            def factory(settings, context):
                raise RuntimeError("out of cheese")

            register("faulty", factory)

    reg = registry_from(ToyPlugin(), Faulty())
    resolved = resolve(load_settings(base={**TOY_SETTINGS, "denoiser": {"plugin": "faulty"}}, environ={}), reg)
    with pytest.raises(PluginError, match=r"denoiser plugin 'faulty' \(distribution faulty .*failed to build: RuntimeError: out of cheese"):
        build(resolved)
