"""The core's layers: no import circle among its modules; loading a run reads the run.

docs/concepts.md draws the layers. These tests hold the code to them: a scan of
every core module's import statements (at module level and inside functions)
finds no circle, the plugin registry knows no settings and no task, and loading
a trained run imports no training module and builds no dataset, so that a run
whose training images are gone still generates.
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

import modiff
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps

CORE = Path(modiff.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def core_modules() -> dict[str, Path]:
    """Every module of the core package."""
    return {module_name(p): p for p in sorted(CORE.rglob("*.py"))}


def imported_modules(path: Path, name: str, known: set[str]) -> set[str]:
    """The core modules ``path`` imports anywhere in its code (type-only imports included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([node.module] if node.module else [])])
            # `from pkg import mod` imports the module pkg.mod when there is one
            targets = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        else:
            continue
        for target in targets:
            # importing a.b.c runs a, a.b and a.b.c; the package `modiff` itself only hands names on
            parts = target.split(".")
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1) if ".".join(parts[:i]) in known)
    # a module's own packages are imported before it, whatever it says
    return {m for m in found if m != name and not name.startswith(m + ".")}


def import_graph() -> dict[str, set[str]]:
    modules = core_modules()
    return {name: imported_modules(path, name, set(modules)) for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)) is not None:
            return found
    return None


def test_the_cycle_finder_finds_a_circle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_core_has_no_import_circle() -> None:
    graph = import_graph()
    assert "modiff.pipeline" in graph and "modiff.assembly" in graph["modiff.pipeline"], "the scan reads imports"
    cycle = find_cycle(graph)
    assert cycle is None, "core modules import each other in a circle: " + " -> ".join(cycle or [])


def test_an_import_inside_a_function_says_why() -> None:
    """Inside a function a core module is imported only to keep start-up light, and
    a comment on the import block says so (a command's handler: see
    ``modiff/commands/__init__.py``), never to dodge a circle."""
    silent = []
    for name, path in core_modules().items():
        if name.startswith("modiff.commands."):
            continue
        lines = path.read_text().splitlines()
        for function in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, ast.ImportFrom) or not (node.level or (node.module or "").startswith("modiff")):
                    continue
                first = node.lineno - 1  # the import block it belongs to, and the line above it
                while first > 0 and lines[first - 1].strip().startswith(("from ", "import ", "#")):
                    first -= 1
                if not any("#" in line for line in lines[first : node.end_lineno]):
                    silent.append(f"{path.relative_to(CORE.parent)}:{node.lineno}")
    assert not silent, "imports inside functions without a comment saying why: " + ", ".join(silent)


def test_the_registry_knows_no_settings_and_no_task() -> None:
    imported = import_graph()["modiff.plugins"]
    assert not {m for m in imported if m == "modiff.settings" or m.startswith("modiff.tasks")}, imported


def test_hook_specs_know_only_what_lies_below_them() -> None:
    allowed = {"modiff.errors", "modiff.protocols"}
    assert import_graph()["modiff.hookspecs"] <= allowed


# -- loading a run reads the run ------------------------------------------------

LOAD_AND_REPORT = """
import json, sys
import modiff.pipeline
from modiff.pipeline import Pipeline
from modiff.testing import plugin_registry
from modiff.testing.toys import ToyPlugin
pipe = Pipeline.load(sys.argv[1], registry=plugin_registry(ToyPlugin()))
pipe.generate(["a red square"], steps=2)
print(json.dumps({"training": sorted(m for m in sys.modules if m.split(".")[:2] == ["modiff", "training"]),
                  "dataset": pipe.components.dataset is not None}))
"""


def train_toy_run(tmp_path: Path) -> Path:
    from modiff.settings import load_settings, resolve
    from modiff.testing import plugin_registry
    from modiff.workflows import run_dir_for, train_run

    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"].update(runs_dir=str(tmp_path / "runs"), name="toy")
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    resolved = resolve(load_settings([path]), plugin_registry(ToyPlugin()))
    run = run_dir_for(resolved)
    train_run(resolved, run, progress=False)
    return run.path


def test_loading_a_run_imports_no_training_and_builds_no_dataset(tmp_path: Path) -> None:
    run = train_toy_run(tmp_path)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(LOAD_AND_REPORT), str(run)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen == {"training": [], "dataset": False}


def test_a_run_trained_before_its_data_facts_were_saved_builds_its_dataset(tmp_path: Path) -> None:
    from modiff.pipeline import Pipeline
    from modiff.testing import plugin_registry

    run = train_toy_run(tmp_path)
    (run / "data.json").unlink()
    pipe = Pipeline.load(run, registry=plugin_registry(ToyPlugin()))
    assert pipe.components.dataset is not None, "without data.json, loading builds the dataset as it used to"


def test_evaluating_asks_for_the_dataset_that_loading_leaves_out(tmp_path: Path) -> None:
    from modiff.errors import ModiffError
    from modiff.pipeline import Pipeline
    from modiff.testing import plugin_registry
    from modiff.workflows import evaluate_run

    run = train_toy_run(tmp_path)
    registry = plugin_registry(ToyPlugin())
    with pytest.raises(ModiffError, match="with_data=True"):
        evaluate_run(Pipeline.load(run, registry=registry))
    assert evaluate_run(Pipeline.load(run, registry=registry, with_data=True))


def write_image_folder(root: Path, count: int = 8, size: int = 16) -> Path:
    root.mkdir(parents=True)
    colours = {"red": (220, 30, 30), "blue": (30, 30, 220)}
    for i in range(count):
        name = list(colours)[i % 2]
        Image.new("RGB", (size, size), colours[name]).save(root / f"{i}.png")
        (root / f"{i}.txt").write_text(f"a {name} square")
    return root


IMAGE_FOLDER_RUN = """
[run]
runs_dir = "{runs}"
name = "folder"
[data]
plugin = "image-folder"
root = "{root}"
image_size = 16
[encoder]
plugin = "identity"
{text_embedder}
[conditioner]
plugin = "cross-attention"
[denoiser]
plugin = "unet"
channels = [8, 16]
layers_per_block = 1
attention_levels = [1]
norm_num_groups = 4
[scheduler]
plugin = "ddim"
[train]
steps = 2
batch_size = 4
checkpoint_every = 2
warmup_steps = 1
[train.text_embedder]
steps = 2
batch_size = 4
warmup_steps = 1
[sample]
steps = 2
prompts = ["a red square"]
"""


#: Text embedders that learn from the captions (a vocabulary, a tokenizer): what they learnt is in the run.
TEXT_EMBEDDERS = {
    "transformer": 'plugin = "transformer"\nwidth = 16\ndepth = 1\nheads = 2',
    "word2vec": 'plugin = "word2vec"\ndim = 8\nepochs = 1\ndepth = 0',
    "clip": 'plugin = "clip"\nwidth = 16\nlayers = 1\nheads = 2\nvision_width = 16\nvision_layers = 1'
    '\nvision_heads = 2\nprojection_dim = 16',
}


@pytest.mark.parametrize(
    "text_embedder", ["transformer", "word2vec", pytest.param("clip", marks=pytest.mark.slow)]  # clip: 11 s
)
def test_an_image_folder_run_generates_after_its_folder_is_deleted(tmp_path: Path, text_embedder: str) -> None:
    from modiff.pipeline import Pipeline
    from modiff.settings import load
    from modiff.workflows import run_dir_for, train_run

    root = write_image_folder(tmp_path / "images")
    path = tmp_path / "folder.toml"
    table = "[text_embedder]\n" + TEXT_EMBEDDERS[text_embedder]
    path.write_text(IMAGE_FOLDER_RUN.format(runs=tmp_path / "runs", root=root, text_embedder=table))
    resolved = load([path])
    run = run_dir_for(resolved)
    train_run(resolved, run, progress=False)
    expected = Pipeline.load(run.path).generate_tensor(["a red square"], seed=3, steps=2)

    shutil.rmtree(root)
    pipe = Pipeline.load(run.path)
    assert pipe.components.dataset is None and pipe.image_size == 16
    assert pipe.generate_tensor(["a red square"], seed=3, steps=2).equal(expected), "the same images as before"
