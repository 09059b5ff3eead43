"""``modiff plugins new``: skeletons for every role that install, are found,
work in a settings file, and pass their own generated tests.

The end-to-end test installs the skeletons the way pip installs any
distribution, but into a temporary folder (``pip install --no-deps
--no-build-isolation --no-index --target``) that only its subprocesses see
through ``PYTHONPATH``: nothing is downloaded and the running environment is
left as it was.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from modiff.cli import main
from modiff.plugins import ROLES
from modiff.runs import RunDir
from modiff.scaffold import check_role, new_plugin, render

#: Role -> the component name its skeleton gets in these tests.
NAMES = {role: "kit-" + role.replace("_", "-") for role in ROLES}


def test_every_role_has_a_skeleton_with_its_contract(tmp_path: Path) -> None:
    for role, name in NAMES.items():
        assert main(["plugins", "new", name, "--role", role, "--dir", str(tmp_path)]) == 0
        root = tmp_path / f"modiff-{name}"
        package = "modiff_" + name.replace("-", "_")
        project = tomllib.loads((root / "pyproject.toml").read_text())
        assert project["project"]["name"] == f"modiff-{name}"
        # the entry point is named after the distribution: two authors' plugins never share it
        assert project["project"]["entry-points"]["modiff"] == {f"modiff-{name}": package}
        for path in [*root.joinpath(package).glob("*.py"), *root.joinpath("tests").glob("*.py")]:
            compile(path.read_text(), str(path), "exec")  # valid Python, placeholders all filled
            assert "$" not in path.read_text().replace("$$", ""), path
        init = (root / package / "__init__.py").read_text()
        assert "import torch" not in init, "the registering module must stay light"
        tests = (root / "tests" / f"test_{package}.py").read_text()
        contract = f"{ {'data': 'Dataset', 'text_embedder': 'TextEmbedder'}.get(role, role.capitalize())}Contract"
        assert f"from modiff.testing.contracts import {contract}" in tests and f"({contract}):" in tests


def test_dashes_become_underscores_and_aliases_name_roles(tmp_path: Path) -> None:
    skeleton = new_plugin("my-2nd-thing", "text-embedder", tmp_path)
    assert skeleton.role == "text_embedder" and skeleton.package == "modiff_my_2nd_thing"
    assert (tmp_path / "modiff-my-2nd-thing" / "modiff_my_2nd_thing" / "component.py").is_file()
    assert check_role("dataset") == "data" and check_role("Denoiser") == "denoiser"
    files = render("x", "scheduler")
    assert set(files) == {
        "pyproject.toml",
        "README.md",
        ".gitignore",
        "modiff_x/__init__.py",
        "modiff_x/settings.py",
        "modiff_x/component.py",
        "tests/test_modiff_x.py",
    }


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["Bad_Name", "--role", "denoiser"], "not valid: use lower-case letters"),
        (["2fast", "--role", "denoiser"], "starting with a letter"),
        (["modiff-thing", "--role", "denoiser"], "leave out the 'modiff-' prefix"),
        (["thing", "--role", "denoise"], "unknown role 'denoise'; the roles are: data, encoder"),
        (["thing", "--role", "vae"], "unknown role 'vae'"),
    ],
)
def test_mistakes_exit_2_with_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert main(["plugins", "new", *args, "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not any(tmp_path.iterdir()), "nothing is written after a mistake"


def test_existing_target_is_never_overwritten(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "modiff-thing"
    target.mkdir()
    (target / "mine.txt").write_text("keep me")
    assert main(["plugins", "new", "thing", "--role", "data", "--dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "already exists" in err and str(target) in err
    assert [p.name for p in target.iterdir()] == ["mine.txt"]
    assert main(["plugins", "new", "thing", "--role", "data", "--dir", str(target / "mine.txt")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_the_name_of_an_installed_distribution_is_refused_naming_it(
    fake_distribution, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``plugins new zebra`` would write modiff-zebra, whose install replaces
    the installed modiff-zebra: refused, naming it, and nothing is written."""
    fake_distribution("modiff-zebra", "modiff_zebra", "import modiff\n")
    out = tmp_path / "out"
    assert main(["plugins", "new", "zebra", "--role", "denoiser", "--dir", str(out)]) == 2
    err = capsys.readouterr().err
    assert "modiff-zebra 0.0.1 is installed" in err and "would replace" in err and "Traceback" not in err
    assert "'my-zebra'" in err  # a name that is free
    assert not out.exists()
    # a package of that name from a distribution of another name counts too
    fake_distribution("zebra-tools", "modiff_okapi", "import modiff\n")
    assert main(["plugins", "new", "okapi", "--role", "denoiser", "--dir", str(out)]) == 2
    assert "zebra-tools 0.0.1 (its package modiff_okapi)" in capsys.readouterr().err


def test_printed_advice_installs_tests_and_names_the_qualified_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from modiff.plugins import registry_from, set_registry
    from modiff.testing.toys import ToyPlugin

    set_registry(registry_from(ToyPlugin()))  # registers the scheduler "toy"
    try:
        assert main(["plugins", "new", "toy", "--role", "scheduler", "--dir", str(tmp_path)]) == 0
    finally:
        set_registry(None)
    out = capsys.readouterr().out
    target = (tmp_path / "modiff-toy").as_posix()
    assert f'pip install -e "{target}[test]"' in out  # pytest and hypothesis come with the [test] extra
    assert f"python -m pytest {target}" in out
    assert 'plugin = "modiff-toy:toy"' in out


def test_a_suggestion_for_a_near_miss(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "new", "thing", "--role", "schedular", "--dir", str(tmp_path)]) == 2
    assert "Did you mean 'scheduler'?" in capsys.readouterr().err


@pytest.mark.parametrize("role", ROLES)
def test_each_skeleton_passes_its_contract_in_process(
    role: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast tier's check of the skeletons: the contract class of each generated test module,
    imported from the folder it was written to (no installation), passes every contract test.
    The slow test below installs them and runs their whole generated suites."""
    import importlib.util

    from modiff.testing.mutants.runner import run_contract

    name = "fast-" + role.replace("_", "-")
    skeleton = new_plugin(name, role, tmp_path)
    monkeypatch.syspath_prepend(str(skeleton.path))
    try:
        path = skeleton.path / "tests" / f"test_{skeleton.package}.py"
        spec = importlib.util.spec_from_file_location(f"test_{skeleton.package}", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        contracts = [v for k, v in vars(module).items() if k.startswith("Test") and isinstance(v, type)]
        assert contracts, f"no contract class in {path.name}"
        for cls in contracts:
            failed = [o for o in run_contract(cls) if o.status == "failed"]
            assert not failed, f"{cls.__name__}: " + "; ".join(f"{o.test}: {o.message}" for o in failed)
    finally:
        for module_name in [m for m in sys.modules if m.startswith(skeleton.package)]:
            del sys.modules[module_name]


def _setuptools_can_build_wheels() -> str | None:
    """Why ``pip install --no-build-isolation`` cannot build here, or None."""
    try:
        version = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return "setuptools is not installed"
    major, minor = (int(p) for p in version.split(".")[:2])
    if (major, minor) < (70, 1):
        try:
            importlib.metadata.version("wheel")
        except importlib.metadata.PackageNotFoundError:
            return f"setuptools {version} needs the 'wheel' package to build wheels"
    return None


SETTINGS = """
[run]
name = "kit"
runs_dir = "{runs}"
device = "cpu"

[data]
plugin = "kit-data"
image_size = 8
size = 16

[encoder]
plugin = "kit-encoder"
downscale = 2

[text_embedder]
plugin = "kit-text-embedder"
dim = 8
max_tokens = 8
joint_training = true

[conditioner]
plugin = "kit-conditioner"
width = 8

[denoiser]
plugin = "modiff-kit-denoiser:kit-denoiser"
width = 8
blocks = 1
groups = 2

[scheduler]
plugin = "kit-scheduler"
num_train_timesteps = 100

[evaluator]
plugin = "kit-evaluator"
num_prompts = 3
steps = 2

[train]
steps = 3
batch_size = 4
warmup_steps = 1
checkpoint_every = 2
log_every = 1

[sample]
steps = 2
prompts = ["wide red vertical stripes", "thin blue horizontal stripes"]
"""


@pytest.mark.slow
def test_skeletons_install_are_discovered_configured_and_pass_their_tests(tmp_path: Path) -> None:
    """Every role at once: one pip call, one settings file built only from the
    skeletons (trained for 3 steps and evaluated), one pytest session over
    all their generated tests."""
    problem = _setuptools_can_build_wheels()
    if problem:
        pytest.fail(f"{problem}: add `setuptools>=70.1` to requirements-test.txt")
    src, site = tmp_path / "src", tmp_path / "site"
    for role, name in NAMES.items():
        new_plugin(name, role, src)
    projects = sorted(str(p) for p in src.iterdir())
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    pip += ["--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), *projects]
    installed = subprocess.run(pip, capture_output=True, text=True, timeout=300, check=False)
    assert installed.returncode == 0, installed.stderr

    env = {k: v for k, v in os.environ.items() if k not in {"MODIFF_LOAD_PLUGINS", "WORLD_SIZE", "RANK"}}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH")]))
    env["OMP_NUM_THREADS"] = "1"  # tiny networks: a second thread only adds contention

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300, check=False)
        assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    # discovered through its entry point
    listing = json.loads(run(sys.executable, "-m", "modiff", "plugins", "--json").stdout)
    dists = {d["distribution"]: d for d in listing["distributions"]}
    for role, name in NAMES.items():
        assert dists[f"modiff-{name}"]["components"] == {role: [name]}, dists.get(f"modiff-{name}")
        assert dists[f"modiff-{name}"]["version"] == "0.1.0"
    assert not [b for b in listing["broken"] if b["distribution"].startswith("modiff-kit")]

    # used from a settings file: resolved with defaults, trained, evaluated
    settings = tmp_path / "kit.toml"
    settings.write_text(SETTINGS.format(runs=(tmp_path / "runs").as_posix()))
    shown = run(sys.executable, "-m", "modiff", "settings", "show", str(settings), "--json").stdout
    resolved = json.loads(shown)
    assert resolved["denoiser"]["attention"] is True and resolved["scheduler"]["prediction_type"] == "epsilon"
    run(sys.executable, "-m", "modiff", "train", str(settings), "--quiet")
    assert RunDir(tmp_path / "runs" / "kit").weights("denoiser").is_file()
    result = json.loads(
        run(sys.executable, "-m", "modiff", "evaluate", str(tmp_path / "runs" / "kit"), "--json").stdout
    )
    assert result["num_prompts"] == 3 and result["prompt_sensitivity"] > 0

    # the generated tests pass as generated
    tests = [str(Path(p) / "tests") for p in projects]
    session = run(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--import-mode=importlib", *tests)
    summary = session.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "failed" not in summary and "error" not in summary, session.stdout[-3000:]
