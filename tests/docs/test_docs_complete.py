"""Issue 37: the settings reference is complete, checked against the code.

Where each key is documented:

- the core's tables (``[run]``, ``[train]``, ``[sample]``, ``[track]``) in
  ``docs/settings.md``, each key in its table's section;
- a plugin's own parameters on its plugin's page: the page of its role in
  ``docs/`` (``unet.md`` for denoisers, ...), a ``docs/`` page that names
  its distribution (``modiff-mlflow`` in ``tracking.md``), or the
  distribution's own ``README.md`` (the ``contrib/`` plugins);
- every component of a distribution under ``plugins/`` in the roles table
  of ``docs/concepts.md`` (``contrib/`` ones may be listed there too);
- every ``[launcher]`` option of every installed launcher (its settings
  model's fields) as a row of the ``[launcher]`` key table in its own
  ``### On ...`` section of ``docs/ablations.md``'s "Beyond one machine",
  the section whose table names it (```"ray"```): two launchers' ``retries``
  mean different things, so one's row does not document the other's.

A key is documented when it appears in backticks (```key``` or a table row's
```key```).
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from modiff.plugins import LAUNCHER, ROLES, TRACKER, Registration, registry
from modiff.settings import RunSettings, SampleSettings, StageSettings, TrackSettings, TrainSettings

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"

#: The page of each role's plugins in docs/.
ROLE_PAGES = {
    "data": "datasets.md",
    "encoder": "autoencoders.md",
    "text_embedder": "text-embedders.md",
    "conditioner": "conditioners.md",
    "denoiser": "unet.md",
    "scheduler": "schedulers.md",
    "evaluator": "datasets.md",
    TRACKER: "tracking.md",
}


def section(page: str, heading: str) -> str:
    """The text of ``page`` under the ``## heading`` line, up to the next ``## ``."""
    text = (DOCS / page).read_text()
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"docs/{page} has no section '## {heading}'"
    return match.group(1)


def mentions(text: str, key: str) -> bool:
    return f"`{key}`" in text or f"`{key} " in text or f"`{key}=" in text


CORE_TABLES = {"run": RunSettings, "train": TrainSettings, "sample": SampleSettings, "track": TrackSettings}


@pytest.mark.parametrize("table", CORE_TABLES)
def test_every_key_of_a_core_table_is_in_settings_md(table: str) -> None:
    text = section("settings.md", f"`[{table}]`")
    missing = [
        key for key in CORE_TABLES[table].model_fields if not (mentions(text, key) or f"`[{table}.{key}]`" in text)
    ]
    assert not missing, f"docs/settings.md's [{table}] leaves out {missing}"


def test_every_key_of_a_training_stage_is_in_settings_md() -> None:
    text = section("settings.md", "`[train]`")
    assert "`[train.encoder]`" in text and "`[train.text_embedder]`" in text
    missing = [key for key in StageSettings.model_fields if not mentions(text, key)]
    assert not missing, f"docs/settings.md's [train] leaves out the stage keys {missing}"


def plugin_folder(reg: Registration) -> Path | None:
    """The plugins/ or contrib/ folder of the distribution that registered ``reg`` (None: not in this repo)."""
    source = Path(inspect.getsourcefile(reg.settings_model) or "").resolve()
    for parent in source.parents:
        if parent.parent.parent == ROOT and parent.parent.name in ("plugins", "contrib"):
            return parent
    return None


def plugin_pages(reg: Registration) -> dict[str, str]:
    """The pages where ``reg``'s parameters may be documented, by name."""
    pages = {f"docs/{ROLE_PAGES[reg.role]}": (DOCS / ROLE_PAGES[reg.role]).read_text()}
    for page in sorted(DOCS.glob("*.md")):
        text = page.read_text()
        if f"`{reg.distribution}`" in text or f"# {reg.distribution}" in text:
            pages[f"docs/{page.name}"] = text
    folder = plugin_folder(reg)
    if folder is not None and (folder / "README.md").is_file():
        pages[str((folder / "README.md").relative_to(ROOT))] = (folder / "README.md").read_text()
    return pages


def installed() -> list[Registration]:
    reg = registry()
    return [r for role in (*ROLES, TRACKER) for r in reg.all(role) if plugin_folder(r) is not None]


def test_every_parameter_of_every_plugin_in_this_repository_is_on_its_page() -> None:
    problems = []
    for reg in installed():
        pages = plugin_pages(reg)
        missing = [k for k in reg.settings_model.model_fields if not any(mentions(t, k) for t in pages.values())]
        if missing:
            problems.append(f"{reg.role} {reg.name!r} ({reg.distribution}): {missing} not in {', '.join(pages)}")
    assert not problems, "\n".join(problems)


def test_concepts_lists_every_component_of_the_first_party_plugins() -> None:
    rows = {
        m.group(1): m.group(0)
        for m in re.finditer(r"^\| `(\w+)` \|.*$", (DOCS / "concepts.md").read_text(), re.M)
    }
    missing = [
        f"{r.role}: {r.name}"
        for r in installed()
        if r.role in ROLES and plugin_folder(r).parent.name == "plugins" and f"`{r.name}`" not in rows.get(r.role, "")
    ]
    assert not missing, f"docs/concepts.md's roles table leaves out {missing}"


def test_the_walk_sees_the_plugins_of_this_repository() -> None:
    names = {(r.role, r.name) for r in installed()}
    assert {("denoiser", "unet"), ("text_embedder", "transformer"), ("scheduler", "ddim")} <= names


def launcher_sections() -> dict[str, str]:
    """The ``### `` sections of docs/ablations.md's "Beyond one machine", by heading."""
    text = section("ablations.md", "Beyond one machine")
    return {m.group(1): m.group(2) for m in re.finditer(r"^### ([^\n]+)\n(.*?)(?=^### |\Z)", text, re.M | re.S)}


def table_keys(text: str) -> set[str]:
    """The keys of a key table's rows (``| `key` | default | meaning |``)."""
    return set(re.findall(r"^\| `(\w+)` \|", text, re.M))


def test_every_option_of_every_installed_launcher_is_in_its_section_of_ablations_md() -> None:
    launchers = list(registry().all(LAUNCHER))
    assert {"local", "ray", "slurm"} <= {r.name for r in launchers}, "the walk sees this repository's launchers"
    sections = launcher_sections()
    problems = []
    for reg in launchers:
        options = list(reg.settings_model.model_fields)
        if not options:  # local: --jobs only, no [launcher] options
            continue
        mine = [(h, t) for h, t in sections.items() if f'`"{reg.name}"`' in t and "name" in table_keys(t)]
        if len(mine) != 1:
            problems.append(f"launcher {reg.name!r} ({reg.distribution}): docs/ablations.md has "
                            f"{len(mine)} '### On ...' sections whose [launcher] table names `\"{reg.name}\"`")
            continue
        heading, text = mine[0]
        missing = [k for k in options if k not in table_keys(text)]
        if missing:
            problems.append(f"launcher {reg.name!r}: {missing} not rows of the [launcher] table under '### {heading}'")
    assert not problems, "\n".join(problems)
