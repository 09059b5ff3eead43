"""Reading TOML values and writing settings back as TOML.

Python reads TOML (``tomllib``) but does not write it; runs store their
resolved settings as TOML, so this module writes the subset settings use:
tables of strings, numbers, booleans, and (nested) lists of those.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Mapping
from typing import Any

_BARE_KEY = re.compile(r"^[A-Za-z0-9_-]+$")


def parse_value(text: str) -> Any:
    """A TOML value (``[64, 128]``, ``2e-4``, ``true``, ``"x"``), or the text
    itself when it is not one, so ``--set scheduler.plugin=ddim`` needs no quotes."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _key(key: str) -> str:
    return key if _BARE_KEY.match(key) else json.dumps(key)


def format_value(value: Any) -> str:
    """The TOML spelling of a value (``[64, 128]``, ``\"text\"``, ``true``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_key(str(k))} = {format_value(v)}" for k, v in value.items() if v is not None) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def dumps(data: Mapping[str, Any]) -> str:
    """TOML text for ``data``: scalars first, then one ``[table]`` per mapping
    (nested tables as ``[a.b]``). ``None`` values are left out."""
    lines: list[str] = []
    _emit(data, (), lines)
    return "\n".join(lines).strip() + "\n"


def _emit(table: Mapping[str, Any], path: tuple[str, ...], lines: list[str]) -> None:
    scalars = [(k, v) for k, v in table.items() if v is not None and not isinstance(v, Mapping)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    if path and (scalars or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for k, v in scalars:
        lines.append(f"{_key(k)} = {format_value(v)}")
    for k, v in tables:
        _emit(v, (*path, k), lines)
