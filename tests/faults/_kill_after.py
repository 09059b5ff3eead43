"""Run ``modiff`` and SIGKILL it right after a chosen file is renamed or linked into place.

    python tests/faults/_kill_after.py PATTERN N -- train settings.toml --quiet

The process kills itself the ``N``-th time a rename, replace or hard link
puts a file whose name matches the glob ``PATTERN`` in place: a real,
uncatchable kill at a chosen moment of a checkpoint's commit, repeatable to
the instruction, which random kills are not.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path


def arm(pattern: str, count: int) -> None:
    seen = {"n": 0}

    def watch(real):  # type: ignore[no-untyped-def]
        def wrapped(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
            result = real(src, dst, *args, **kwargs)
            if fnmatch.fnmatch(Path(os.fspath(dst)).name, pattern):
                seen["n"] += 1
                if seen["n"] == count:
                    os.kill(os.getpid(), signal.SIGKILL)
            return result

        return wrapped

    os.replace = watch(os.replace)
    os.rename = watch(os.rename)
    os.link = watch(os.link)


if __name__ == "__main__":
    pattern, count, dashes, *argv = sys.argv[1:]
    assert dashes == "--", "usage: _kill_after.py PATTERN N -- modiff-args..."
    arm(pattern, int(count))
    from modiff.cli import main

    sys.exit(main(argv))
