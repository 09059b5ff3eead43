"""What the demo's settings train and generate stays the same, bit for bit.

Each committed fingerprint under ``benchmarks/fingerprints/`` holds the
SHA-256 of every component's weights and of generated images after a tiny
training of one settings file (``benchmarks/same_images.py``). A refactor of
the core (the training loop, the assembly, the pipeline) must reproduce them
exactly; a change that means to alter the bits rewrites the fingerprint in the
same commit and says why.

Floating-point results depend on the CPU's kernels and on torch, so a
fingerprint is compared only on the kind of machine that wrote it; elsewhere
the test skips, naming both machines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "same_images.py"
FINGERPRINTS = sorted((ROOT / "benchmarks" / "fingerprints").glob("*.json"))

pytestmark = pytest.mark.slow


def test_every_fingerprint_names_a_settings_file_that_exists() -> None:
    assert {p.name for p in FINGERPRINTS} >= {"demo.json", "demo-baseline.json"}
    for path in FINGERPRINTS:
        recorded = json.loads(path.read_text())
        assert (ROOT / recorded["settings"]).is_file(), f"{path.name} names {recorded['settings']}, which is gone"


@pytest.mark.parametrize("path", FINGERPRINTS, ids=[p.stem for p in FINGERPRINTS])
def test_training_and_generation_reproduce_the_fingerprint(path: Path) -> None:
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import same_images
    finally:
        sys.path.remove(str(SCRIPT.parent))
    recorded = json.loads(path.read_text())
    here = same_images.machine() | {"threads": "1"}
    if {k: recorded["machine"][k] for k in ("cpu", "torch")} != {k: here[k] for k in ("cpu", "torch")}:
        pytest.skip(f"{path.name} was written on {recorded['machine']}; this machine is {here}")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--settings", str(ROOT / recorded["settings"]), "--check", str(path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout
