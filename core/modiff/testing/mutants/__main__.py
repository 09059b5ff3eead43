"""``python -m modiff.testing.mutants [ROLE...]``: the kill matrix, as a Markdown table.

Runs every contract test of every toy configuration against every mutant
(of the given roles) and prints, per mutant, the contract tests that caught
it; exits 1 if a mutant survives.
"""

from __future__ import annotations

import sys

from . import MUTANTS, killing_tests, run_mutant


def main(argv: list[str]) -> int:
    roles = set(argv)
    survivors = 0
    print("| role | mutant | mistake | caught by |")
    print("|---|---|---|---|")
    for m in MUTANTS:
        if roles and m.role not in roles:
            continue
        kills = killing_tests(run_mutant(m))
        survivors += not kills
        tests = sorted({k.split(".", 1)[1] for k in kills})
        shown = ", ".join(f"**{t}**" if t in m.killed_by else t for t in tests) or "SURVIVES"
        print(f"| {m.role} | {m.name} | {m.mistake} | {shown} |")
    return 1 if survivors else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
