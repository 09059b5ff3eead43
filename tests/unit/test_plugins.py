"""Discovery through entry points, broken plugins, duplicate names, lookups."""

from __future__ import annotations

from pathlib import Path

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


@pytest.mark.parametrize("name", ["under_score", "dot.ted", "2fast", "double--dash", "trailing-", "-leading", "Upper"])
def test_one_name_rule_for_registering_and_for_the_skeleton(name: str, tmp_path: Path) -> None:
    """The registry and ``modiff plugins new`` apply the same rule, stated once
    in ``modiff.plugins``: what one refuses, the other refuses too."""
    from modiff.plugins import COMPONENT_NAME, name_problem
    from modiff.scaffold import check_name

    class Named:
        __name__ = "named"

        @modiff.hookimpl
        def register_denoisers(self, register):
            register(name, lambda s, c: None)

    assert not COMPONENT_NAME.match(name)
    reg = registry_from(Named())
    assert reg.broken and name_problem(name) in reg.broken[0].error
    with pytest.raises(modiff.ModiffError, match="not valid"):
        check_name(name)
    for good in ("dpmpp-2m", "kl-autoencoder", "x", "sd-clip"):
        assert name_problem(good) is None and check_name(good) == good


SCHEDULER_PLUGIN = """
import modiff

@modiff.hookimpl
def register_schedulers(register):
    register("{name}", lambda settings, context: None)
"""


def test_two_distributions_with_one_entry_point_name_are_both_loaded_and_a_conflict(
    fake_distribution, capsys: pytest.CaptureFixture[str]
) -> None:
    """Two authors who both call their entry point ``sampler``: neither
    vanishes, and ``modiff plugins`` names both as a conflict."""
    fake_distribution("fake-alpha", "fake_alpha", SCHEDULER_PLUGIN.format(name="alpha"), entry_point="sampler")
    fake_distribution("fake-beta", "fake_beta", SCHEDULER_PLUGIN.format(name="beta"), entry_point="sampler")
    reg = registry_from(entry_points=True)
    assert reg.lookup("scheduler", "alpha").distribution == "fake-alpha"
    assert reg.lookup("scheduler", "beta").distribution == "fake-beta"
    [conflict] = reg.entry_point_conflicts()
    assert conflict.name == "sampler" and sorted(conflict.distributions) == ["fake-alpha", "fake-beta"]
    assert {p.plugin for p in reg.plugins} >= {"fake-alpha:sampler", "fake-beta:sampler"}

    from modiff.cli import main
    from modiff.plugins import set_registry

    set_registry(reg)
    try:
        assert main(["plugins"]) == 0
    finally:
        set_registry(None)
    out = capsys.readouterr().out
    [line] = [x for x in out.splitlines() if "entry point 'sampler'" in x]
    assert line.startswith("conflict:") and "fake-alpha" in line and "fake-beta" in line


def test_hook_parameters_are_typed() -> None:
    """Every registration hook takes a ``modiff.Register``; the callback the
    registry hands out has its signature."""
    import inspect
    import typing

    from modiff import hookspecs

    for role, hook in __import__("modiff.plugins", fromlist=["ROLE_HOOKS"]).ROLE_HOOKS.items():
        hints = typing.get_type_hints(getattr(hookspecs, hook))
        assert hints["register"] is modiff.Register, role
        assert getattr(hookspecs, hook).__doc__.count("Example") == 1, role
    seen: list[inspect.Signature] = []

    class Probe:
        __name__ = "probe"

        @modiff.hookimpl
        def register_denoisers(self, register: modiff.Register) -> None:
            seen.append(inspect.signature(register))

    registry_from(Probe())
    [signature] = seen
    assert list(signature.parameters) == list(inspect.signature(modiff.Register.__call__).parameters)[1:]


def test_pipeline_is_public_and_is_what_evaluators_get() -> None:
    """``modiff.Pipeline`` works as the package docstring says, and satisfies
    the protocol evaluators are typed against."""
    from modiff.assembly import build
    from modiff.pipeline import Pipeline
    from modiff.settings import load_settings, resolve
    from modiff.testing.toys import TOY_SETTINGS

    assert modiff.Pipeline is Pipeline and "Pipeline" in modiff.__all__
    resolved = resolve(load_settings(base=TOY_SETTINGS, environ={}), registry_from(ToyPlugin()))
    pipe = modiff.Pipeline(build(resolved))
    assert isinstance(pipe, modiff.GeneratingPipeline)
    assert pipe.components.dataset is not None


def test_process_registry_is_loaded_once() -> None:
    assert registry() is registry()


def test_a_factory_that_raises_is_reported_with_plugin_and_distribution() -> None:
    from modiff.assembly import build
    from modiff.settings import load_settings, resolve
    from modiff.testing.toys import TOY_SETTINGS

    class Faulty:
        __name__ = "faulty"

        @modiff.hookimpl
        def register_denoisers(self, register):
            def factory(settings, context):
                raise RuntimeError("out of cheese")

            register("faulty", factory)

    reg = registry_from(ToyPlugin(), Faulty())
    resolved = resolve(load_settings(base={**TOY_SETTINGS, "denoiser": {"plugin": "faulty"}}, environ={}), reg)
    with pytest.raises(
        PluginError,
        match=r"denoiser plugin 'faulty' \(distribution faulty .*failed to build: RuntimeError: out of cheese",
    ):
        build(resolved)


# --------------------------------------------------------------------------
# What the first-party and contrib distributions import and declare
# --------------------------------------------------------------------------

ROOT = Path(__file__).resolve().parents[2]
DISTRIBUTIONS = sorted(
    p.parent for p in [*ROOT.glob("plugins/*/pyproject.toml"), *ROOT.glob("contrib/*/pyproject.toml")]
)
#: Modules of modiff that plugins may import besides the package itself.
PUBLIC_MODULES = {"protocols", "sampler_swap", "tasks", "testing"}
#: Distributions modiff's public API hands to plugins: a settings model is a
#: pydantic model (``modiff.ComponentSettings``), so pydantic comes with modiff.
WITH_MODIFF = {"pydantic"}


def _sources(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("modiff_*/**/*.py") if "tests" not in p.parts)


def _imports(path: Path) -> list[tuple[str, int]]:
    """Every module ``path`` imports (absolute imports), with its line."""
    import ast

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module, node.lineno))
    return found


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=lambda p: p.name)
def test_plugins_import_only_modiffs_public_api(folder: Path) -> None:
    import ast

    private = []
    for path in _sources(folder):
        for module, line in _imports(path):
            parts = module.split(".")
            if parts[0] == "modiff" and len(parts) > 1 and parts[1] not in PUBLIC_MODULES:
                private.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id == "modiff"
                and node.attr not in modiff.__all__
                and node.attr not in PUBLIC_MODULES
            ):
                private.append(f"{path.relative_to(ROOT)}:{node.lineno} uses modiff.{node.attr}")
    assert not private, "plugins must use only modiff's public API:\n" + "\n".join(private)


@pytest.mark.parametrize("folder", DISTRIBUTIONS, ids=lambda p: p.name)
def test_plugins_declare_the_distributions_they_import(folder: Path) -> None:
    """Every third-party module a plugin's package imports comes from a
    distribution its pyproject declares (an editable checkout hides the
    difference; a user's ``pip install modiff-<thing>`` does not)."""
    import importlib.metadata
    import re
    import sys
    import tomllib

    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    def norm(name: str) -> str:
        return re.sub(r"[-_.]+", "-", name).lower()

    requirements = [*project.get("dependencies", [])]
    for extra in project.get("optional-dependencies", {}).values():  # e.g. hypothesis for a testing module
        requirements += extra
    declared = {norm(re.split(r"[\s<>=!~;\[]", d, maxsplit=1)[0]) for d in requirements} | WITH_MODIFF
    own = {p.name for p in folder.glob("modiff_*")}
    owners = importlib.metadata.packages_distributions()
    missing = []
    for path in _sources(folder):
        for module, line in _imports(path):
            top = module.split(".")[0]
            if top in sys.stdlib_module_names or top in own or top == "__future__":
                continue
            dists = {norm(d) for d in owners.get(top, [top])}
            if not dists & declared:
                missing.append(f"{path.relative_to(ROOT)}:{line} imports {top} ({', '.join(sorted(dists))})")
    assert not missing, f"{project['name']} does not declare:\n" + "\n".join(sorted(set(missing)))
