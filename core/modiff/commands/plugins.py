"""``modiff plugins``: what is installed, what it registered, what is broken."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..plugins import ALL_ROLES, COMPONENT_NAME_RULE, ROLES, Registry, registry


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "plugins",
        help="list installed plugins and their components, or start a new plugin",
        description="Without an action: list installed plugins, what they register, conflicts and broken ones. "
        "`modiff plugins new NAME --role ROLE` writes a working plugin skeleton.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=run)
    actions = p.add_subparsers(dest="plugins_command", metavar="ACTION")
    new = actions.add_parser(
        "new",
        help="write a plugin skeleton that passes its own tests",
        description="Write modiff-NAME/ (pyproject with the entry point, a component with a settings model, "
        "tests using the role's contract) into DIR. Install it with `pip install -e modiff-NAME`.",
    )
    new.add_argument("name", metavar="NAME", help=f"component name: {COMPONENT_NAME_RULE}")
    new.add_argument("--role", required=True, help=f"the role it fills: {', '.join(ROLES)}")
    new.add_argument("--dir", default=".", metavar="DIR", help="where to create modiff-NAME/ (default: here)")
    new.set_defaults(func=run_new)


def run_new(args: argparse.Namespace) -> int:
    from ..scaffold import new_plugin, next_steps

    skeleton = new_plugin(args.name, args.role, args.dir)
    print("\n".join(next_steps(skeleton, _registered_elsewhere(skeleton.role, skeleton.name))))
    return 0


def _registered_elsewhere(role: str, name: str) -> list[str]:
    """Distributions that already register ``name`` in ``role`` (a later conflict)."""
    try:
        return sorted({r.distribution for r in registry().components[role].get(name, [])})
    except Exception:  # listing is a courtesy; a broken environment must not stop the skeleton
        return []


def as_json(reg: Registry) -> dict[str, Any]:
    dists: dict[tuple[str, str], dict[str, Any]] = {}
    for info in reg.plugins:
        dists.setdefault(
            (info.distribution, info.version),
            {"distribution": info.distribution, "version": info.version, "plugins": [], "components": {}},
        )["plugins"].append(info.plugin)
    for r in reg.all():
        entry = dists.setdefault(
            (r.distribution, r.version),
            {"distribution": r.distribution, "version": r.version, "plugins": [r.plugin], "components": {}},
        )
        entry["components"].setdefault(r.role, []).append(r.name)
    conflicts = [
        {"role": regs[0].role, "name": regs[0].name, "distributions": [r.distribution for r in regs]}
        for regs in reg.conflicts()
    ]
    return {
        "distributions": sorted(dists.values(), key=lambda d: d["distribution"]),
        "broken": [b.__dict__ for b in reg.broken],
        "conflicts": conflicts,
        "entry_point_conflicts": [
            {"entry_point": c.name, "distributions": list(c.distributions)} for c in reg.entry_point_conflicts()
        ],
    }


def run(args: argparse.Namespace) -> int:
    reg = registry()
    data = as_json(reg)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    for dist in data["distributions"]:
        print(f"{dist['distribution']} {dist['version']}")
        for role in ALL_ROLES:  # the settings tables' roles, then the trackers
            names = dist["components"].get(role)
            if names:
                print(f"  {role:<14} {', '.join(sorted(names))}")
        if not dist["components"]:
            print("  (registers no components)")
    for c in data["conflicts"]:
        print(
            f"conflict: {c['role']} {c['name']!r} is registered by {' and '.join(c['distributions'])}; "
            f"settings must write \"distribution:{c['name']}\""
        )
    for c in data["entry_point_conflicts"]:
        print(
            f"conflict: entry point {c['entry_point']!r} is declared by {' and '.join(c['distributions'])}; "
            f"both are loaded, as \"distribution:{c['entry_point']}\" (name distributions, not this entry point, "
            "in MODIFF_LOAD_PLUGINS)"
        )
    for b in data["broken"]:
        print(f"broken: {b['plugin']} ({b['distribution']} {b['version']}): {b['error']}")
    if not data["distributions"] and not data["broken"]:
        print('no plugins installed; `pip install "modiff[all]"` installs the built-in ones')
    return 0
