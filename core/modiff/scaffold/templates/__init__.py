"""The files ``modiff plugins new`` writes, as Python string constants.

Keeping them in modules (not data files) means they ship with the ``modiff``
package without any package-data rule. Each role has a module with the same
constants (see :class:`RoleTemplate`); :mod:`.common` holds the files every
skeleton has. Placeholders use :class:`string.Template` syntax (``$name``),
so the braces of Python code need no escaping.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RoleTemplate:
    """What a skeleton of one role is made of.

    Attributes:
        role: the settings-file table (``denoiser``).
        hook: the registration hook (``register_denoisers``).
        contract: the contract class in ``modiff.testing.contracts``.
        summary: one line on what the example component does.
        settings_class: name of the component's settings model.
        settings: source of ``settings.py`` (no torch: ``modiff plugins`` imports it).
        component: source of ``component.py``; defines ``build_component(settings, context)``.
        tests: source of ``tests/test_<package>.py`` after the imports.
    """

    role: str
    hook: str
    contract: str
    summary: str
    settings_class: str
    settings: str
    component: str
    tests: str
    #: Third-party imports the test module needs besides modiff (``import torch``).
    test_imports: tuple[str, ...] = ()
