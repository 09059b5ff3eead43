"""``modiff settings show|schema``: resolved settings and their JSON Schema."""

from __future__ import annotations

import argparse
import json

from ..settings import json_schema, load


def add_settings_arguments(p: argparse.ArgumentParser, *, files_required: bool = True) -> None:
    """``FILE...`` and ``--set``, shared by every command that reads settings."""
    p.add_argument(
        "files",
        nargs="+" if files_required else "*",
        metavar="SETTINGS",
        help="settings TOML file(s); later files override earlier ones",
    )
    p.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="TABLE.KEY=VALUE",
        help="override one value (parsed as TOML), e.g. --set denoiser.channels=[64,128]",
    )


def add(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "settings",
        help="show resolved settings or their JSON Schema",
        description="Read settings as a command would (files, MODIFF_ variables, --set) and show the result, "
        "or write the JSON Schema of the settings the installed plugins accept.",
    )
    actions = p.add_subparsers(dest="settings_command", metavar="ACTION", required=True)
    show = actions.add_parser(
        "show",
        help="the resolved settings with every default filled in",
        description="Resolve the settings (every problem reported at once) and print them with every "
        "default filled in: what a run of them would record as its settings.toml.",
    )
    add_settings_arguments(show)
    show.add_argument("--json", action="store_true", help="print JSON instead of TOML")
    show.set_defaults(func=run_show)
    schema = actions.add_parser(
        "schema",
        help="JSON Schema of the settings the installed plugins accept",
        description="Print the JSON Schema of settings files: the core's tables, and for each role a choice "
        "of the installed plugins with their parameters. Editors that read JSON Schema check and complete "
        "settings files with it.",
    )
    schema.add_argument(
        "--ablation",
        action="store_true",
        help="the JSON Schema of an ablation file (modiff ablate's input) instead",
    )
    schema.set_defaults(func=run_schema)


def run_show(args: argparse.Namespace) -> int:
    resolved = load(args.files, args.sets)
    if args.json:
        print(json.dumps(resolved.to_dict(), indent=2))
    else:
        print(resolved.to_toml(), end="")
    return 0


def run_schema(args: argparse.Namespace) -> int:
    if args.ablation:
        from ..ablation import ablation_json_schema

        print(json.dumps(ablation_json_schema(), indent=2))
    else:
        print(json.dumps(json_schema(), indent=2))
    return 0
