"""Numbers in README.md and docs/*.md, each read from the committed result file that holds it.

A measured number in the documentation is written between two markers that
name its source, so that there is one place for it (the result file) and a
test notices when the prose and the file disagree:

    <!-- result benchmarks/results/recipe/demo-compare.json#new.one_object_accuracy pct -->87 %<!-- /result -->

The key is a dotted path into the JSON file (list items by their index). The
format is ``pct`` (a share as a whole percentage, "87 %"), ``x`` (a ratio,
"0.53×") or a Python format specification (``.2f``, ``.0f``, ...).

    python benchmarks/doc_numbers.py           # list every number that disagrees with its file (exit 1 if any)
    python benchmarks/doc_numbers.py --write   # rewrite them from the files
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

#: One marked number: the source file, the key inside it, the format, and the text the doc shows.
MARKER = re.compile(r"<!-- result (?P<file>\S+)#(?P<key>\S+)(?: (?P<fmt>\S+))? -->(?P<text>.*?)<!-- /result -->")


@dataclass(frozen=True)
class Mismatch:
    """A marked number whose text is not what its source gives (``expected`` says why when unreadable)."""

    doc: Path
    line: int
    source: str
    shown: str
    expected: str

    def __str__(self) -> str:
        return (f"{self.doc.relative_to(ROOT)}:{self.line}: shows {self.shown!r} but {self.source} "
                f"gives {self.expected!r}")


def documents(root: Path = ROOT) -> list[Path]:
    """The pages whose numbers are checked: the README and every page of docs/."""
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def lookup(data: Any, key: str) -> Any:
    """``data``'s value at the dotted ``key`` (``a.b.0.c``; ``-1`` is a list's last item; a name that itself
    holds dots, such as a run ``ref.s0``, is matched as a whole); KeyError when the path is not there."""
    parts = key.split(".")
    while parts:
        if isinstance(data, list):
            data, parts = data[int(parts[0])], parts[1:]
            continue
        if not isinstance(data, dict):
            raise KeyError(key)
        for n in range(1, len(parts) + 1):
            name = ".".join(parts[:n])
            if name in data:
                data, parts = data[name], parts[n:]
                break
        else:
            raise KeyError(key)
    return data


def render(value: Any, fmt: str | None) -> str:
    """The text a doc shows for ``value`` in the marker's format."""
    if fmt == "pct":
        return f"{round(float(value) * 100)} %"
    if fmt == "x":
        return f"{float(value):.2f}×"
    return format(value, fmt or "")


def expected_text(match: re.Match[str], root: Path = ROOT) -> str:
    """What the marker's source gives, or a sentence saying why it cannot be read."""
    path = root / match["file"]
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return f"<unreadable: {type(exc).__name__}>"
    try:
        return render(lookup(data, match["key"]), match["fmt"])
    except (KeyError, IndexError, ValueError, TypeError):
        return f"<no key {match['key']}>"


def check(root: Path = ROOT, write: bool = False) -> list[Mismatch]:
    """Every marked number that disagrees with its source; with ``write``, the docs are rewritten from the
    sources (numbers whose source cannot be read are left as they are and still reported)."""
    problems: list[Mismatch] = []
    for doc in documents(root):
        if not doc.is_file():
            continue
        text = doc.read_text(encoding="utf-8")

        def replace(match: re.Match[str], doc: Path = doc, text: str = text) -> str:
            want = expected_text(match, root)
            if match["text"] == want:
                return match[0]
            line = text.count("\n", 0, match.start()) + 1
            readable = not want.startswith("<")
            if not (write and readable):
                problems.append(Mismatch(doc, line, f"{match['file']}#{match['key']}", match["text"], want))
                return match[0]
            return match[0].replace(f"-->{match['text']}<!--", f"-->{want}<!--", 1)

        new = MARKER.sub(replace, text)
        if write and new != text:
            doc.write_text(new, encoding="utf-8")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the marked numbers from their result files")
    args = parser.parse_args(argv)
    problems = check(write=args.write)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
