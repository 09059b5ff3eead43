"""Files every plugin skeleton has, whatever its role."""

from __future__ import annotations

PYPROJECT = r'''[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "$summary_sentence"
readme = "README.md"
requires-python = ">=3.11"
license = { text = "MIT" }
dependencies = ["modiff>=$modiff_version", "torch>=2.4"]

[project.optional-dependencies]
test = ["pytest>=8", "hypothesis>=6.100"]

# This is what makes modiff find the plugin once it is installed: an entry
# point in the "modiff" group naming the module with the hook implementations.
# Its name is the distribution's, so that it collides with no other plugin's.
[project.entry-points.modiff]
$dist = "$package"

[tool.setuptools.packages.find]
include = ["$package*"]

[tool.pytest.ini_options]
testpaths = ["tests"]
addopts = "--import-mode=importlib -p no:cacheprovider"
'''

README = r'''# $dist

A modiff plugin: the $role component `$name`, $summary.

## Use

```sh
pip install -e .          # or, once published: pip install $dist
modiff plugins            # lists $dist and its $role "$name"
```

and in a settings file:

```toml
[$role]
plugin = "$name"          # "$dist:$name" if another plugin uses the name too
```

`modiff settings show FILE` prints the table with every default filled in;
`modiff settings schema` lists the keys it accepts.

## Develop

```sh
pip install -e ".[test]"
python -m pytest
```

`tests/test_$package.py` runs the `$contract` from `modiff.testing.contracts`
(the properties every $role is held to) against `$name`, plus the tests of
its own behaviour. Keep both passing as you replace the example component in
`$package/component.py` with yours.

Layout:

- `$package/__init__.py` registers the component (no heavy imports here, so
  that `modiff plugins` stays fast);
- `$package/settings.py` is its settings model: the keys a settings table
  accepts next to `plugin`;
- `$package/component.py` is the component, built by `build_component(settings, context)`.

## Publish

```sh
python -m pip install build twine
python -m build
python -m twine check dist/*
python -m twine upload dist/*
```
'''

INIT = r'''"""$dist: the $role component ``$name``, $summary.

modiff finds this module through the entry point in ``pyproject.toml`` and
calls ``$hook``. Only ``modiff`` and the settings model are imported here:
the component (and torch) are imported inside the factory, so that listing
plugins stays fast.
"""

from __future__ import annotations

from typing import Any

import modiff

from .settings import $settings_class

__version__ = "0.1.0"


def build(settings: $settings_class, context: modiff.BuildContext) -> Any:
    """$summary_sentence"""
    from .component import build_component

    return build_component(settings, context)


@modiff.hookimpl
def $hook(register: modiff.Register) -> None:
    register("$name", build, $settings_class)


__all__ = ["$settings_class", "$hook", "build"]
'''

TEST_HEADER = r'''"""Tests of the $role ``$name``.

``$test_class`` inherits every test of modiff's ``$contract``:
the properties all built-in $role components pass. The tests below it check
what is particular to this component; add yours next to them.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any, ClassVar
$test_imports
import modiff
from modiff.testing import plugin_registry
from modiff.testing.contracts import $contract

import $package

#: The package registered directly on a fresh plugin manager: the tests run
#: before (and regardless of) installation, and no other plugin interferes.
REGISTRY = plugin_registry($package)
'''

TEST_ENTRY_POINT = r'''

def test_installed_through_its_entry_point() -> None:
    """modiff finds ``$name`` through the ``modiff`` entry point once the
    distribution is installed (``pip install -e .``)."""
    values = {ep.value for ep in importlib.metadata.entry_points(group="modiff")}
    assert "$package" in values, "$dist is not installed: run `pip install -e .` in the plugin's folder"
    registration = modiff.registry().lookup("$role", "$dist:$name")
    assert registration.settings_model is $package.$settings_class
'''

GITIGNORE = r'''__pycache__/
*.egg-info/
build/
dist/
.hypothesis/
'''
