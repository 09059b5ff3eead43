"""benchmarks/gpu_check.py: its dry run on the CPU (slow), and the parts that decide what it reports.

The dry run is the GPU check with every stage on the CPU at tiny sizes: the
``cuda`` tier with ``MODIFF_CHECK_DEVICE=cpu``, a demo of a few steps, a
two-step bench against diffusers. It is what makes the check trustworthy
before it meets a GPU: the same code, the same reports.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


def gpu_check() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


@pytest.mark.slow
def test_dry_run_writes_a_complete_report(tmp_path: Path) -> None:
    """About 4 minutes on a 2-core CPU: the tier (about 90 s), a tiny demo and a tiny bench."""
    pytest.importorskip("diffusers", reason="the bench stage compares against diffusers")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("MODIFF_CHECK_DEVICE", None)
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out), "--dry-run"], cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=1800, check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["demo-samples.png", "gpu-check.json", "gpu-check.md", "tier-junit.xml"]
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f) for f in files), "names the device tool brings back"

    report = json.loads((out / "gpu-check.json").read_text())
    assert report["passed"] and report["dry_run"] and report["device"] == "cpu"
    stages = report["stages"]
    assert {name: st["status"] for name, st in stages.items()} == {
        "tier": "passed", "demo": "passed", "bench-demo": "passed",
    }
    counts = stages["tier"]["result"]["counts"]
    assert counts.get("passed", 0) > 50 and not counts.get("failed") and not counts.get("error"), counts
    tests = {t["test"].split("::")[-1]: t for t in stages["tier"]["result"]["tests"]}
    assert tests["test_same_seed_same_initial_noise"]["outcome"] == "passed"
    demo = stages["demo"]["result"]
    assert 'run.device="cpu"' in demo["sets"]
    assert 0 <= demo["one_object_accuracy"] <= 1 and demo["train_seconds"] > 0
    bench = stages["bench-demo"]["result"]
    assert bench["device"] == "cpu" and bench["images"] and all(i["agree"] for i in bench["images"])
    measures = {row["measure"]: float(row["modiff/diffusers"]) for row in bench["rows"]}
    assert measures["generation, batch 1: s"] > 0 and "UNet, batch 32: train step ms" in measures

    md = (out / "gpu-check.md").read_text()
    assert md.startswith("# GPU check (dry run on the CPU)")
    assert "| tier | passed |" in md and "| demo | passed |" in md
    assert "## bench-demo: modiff against diffusers" in md and "| demo | generation, batch 1: s |" in md


def test_stale_wheels_are_refused(tmp_path: Path) -> None:
    """Wheels built from other sources would test other code than this checkout's."""
    gc = gpu_check()
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    stage = gc.install(wheels, tmp_path / "site", dict(os.environ), 60)
    assert stage.status == "failed" and "gpu_wheels.sh" in stage.tail[0]
    (wheels / gc.MANIFEST).write_text(json.dumps({"sources": "0" * 64}))
    stage = gc.install(wheels, tmp_path / "site", dict(os.environ), 60)
    assert stage.status == "failed" and "other sources" in stage.tail[0]
    assert not (tmp_path / "site").exists(), "nothing was installed"


def test_source_digest_follows_the_code_that_travels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The same on the GPU machine as here: only files that travel there (no caches, hidden folders,
    build leftovers) and that go into the wheels (no tests) count."""
    gc = gpu_check()
    assert re.fullmatch(r"[0-9a-f]{64}", gc.source_digest())
    for path, text in {
        "pyproject.toml": "[project]", "core/modiff/a.py": "A = 1", "plugins/x/pyproject.toml": "[project]",
        "plugins/x/modiff_x/b.py": "B = 1", "contrib/y/modiff_y/c.py": "C = 1",
    }.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    monkeypatch.setattr(gc, "ROOT", tmp_path)
    before = gc.source_digest()
    for path in ("plugins/x/.hypothesis/examples/1", "core/modiff/__pycache__/a.cpython-312.pyc",
                 "plugins/x/build/lib/modiff_x/b.py", "plugins/x/modiff_x.egg-info/PKG-INFO",
                 "plugins/x/tests/test_b.py", "contrib/y/README.md"):
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text("anything")
    assert gc.source_digest() == before
    (tmp_path / "contrib/y/modiff_y/c.py").write_text("C = 2")
    assert gc.source_digest() != before


@pytest.mark.slow  # subprocesses, one stopped after its 2 s limit
def test_a_stage_over_its_limit_is_stopped(tmp_path: Path) -> None:
    gc = gpu_check()
    stage = gc.run("sleepy", [sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                   dict(os.environ), 2, cwd=tmp_path)
    assert stage.status == "timed out" and stage.seconds < 30 and stage.tail[0] == "started"
    quick = gc.run("quick", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ), 30, cwd=tmp_path)
    assert quick.status == "failed" and quick.returncode == 3
    assert gc.run("none", ["true"], dict(os.environ), 0).status == "skipped"


def test_junit_report_is_read_into_counts_and_messages(tmp_path: Path) -> None:
    xml = tmp_path / "junit.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.test_cuda" name="test_a" time="1.5"/>'
        '<testcase classname="tests.test_cuda" name="test_b" time="0.1"><failure message="assert 0.2 &lt;= 0.1">'
        "long text</failure></testcase>"
        '<testcase classname="tests.test_cuda" name="test_c" time="0"><skipped message="no CUDA device here"/>'
        "</testcase></testsuite></testsuites>"
    )
    result = gpu_check().junit(xml)
    assert result["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert [(t["test"], t["outcome"], t["message"]) for t in result["tests"]] == [
        ("tests.test_cuda::test_a", "passed", ""),
        ("tests.test_cuda::test_b", "failed", "assert 0.2 <= 0.1"),
        ("tests.test_cuda::test_c", "skipped", "no CUDA device here"),
    ]


def test_a_stopped_tier_is_read_from_its_verbose_output() -> None:
    """Stopped at its time limit, pytest writes no JUnit report: what it printed still counts."""
    lines = [
        "tests/cuda/test_cuda.py::test_component_gives_the_cpu_outputs[encoder:kl-autoencoder-fp32] PASSED [  1%]",
        "tests/cuda/test_cuda.py::test_same_seed_same_images[fp16] FAILED [  2%]",
        "tests/cuda/test_cuda.py::test_training_lowers_the_loss_and_resumes_bit_identically[compile] SKIPPED (no) [3%]",
        "some other output",
    ]
    result = gpu_check().pytest_lines(lines)
    assert result["counts"] == {"passed": 1, "failed": 1, "skipped": 1}
    assert [t["outcome"] for t in result["tests"]] == ["passed", "failed", "skipped"]
    assert result["tests"][1]["test"] == "tests/cuda/test_cuda.py::test_same_seed_same_images[fp16]"
