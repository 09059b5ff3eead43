"""The GPU check: the cuda test tier, the demo on CUDA, and generation speed against diffusers, in one command.

    python benchmarks/gpu_check.py OUT [--wheels .gpu-wheels] [--dry-run] [--only tier,demo,bench]

It writes ``OUT/gpu-check.json`` (everything measured), ``OUT/gpu-check.md``
(the same as tables, ready for ``docs/benchmarks.md``), the tier's JUnit XML
and the demo's sample grid; at most five files, so that all of them come
back from a lent GPU machine. Work files (the demo's run, the imported
pipelines) go to a temporary folder (``--work``).

Stages, each a subprocess with its own time limit so that the whole check
ends within its budget (8 minutes on an H200, installs included):

1. installs: with ``--wheels DIR``, ``pip install --no-index --no-deps
   --target`` of the wheels ``benchmarks/gpu_wheels.sh`` downloaded and built
   (the GPU machine has no network); refused if they were built from other
   sources than the ones here;
2. the ``cuda`` tier: ``pytest -m cuda tests/cuda/test_cuda.py`` with
   ``MODIFF_CHECK_DEVICE=cuda``;
3. ``modiff demo --set run.device="cuda"``: wall time, training time, prompt
   accuracy;
4. ``bench_generation.py`` on CUDA: an SD 1.5-shaped pipeline with random
   weights at 512 px in fp16 (batch 1 and 8, 25 steps), and the demo's model
   in fp32 (TF32 off, so its outputs can be held to diffusers' to 1e-4).

``--dry-run`` runs every stage on the CPU at tiny sizes (the tier with
``MODIFF_CHECK_DEVICE=cpu``, a demo of a few steps, a two-step bench): what
CI runs, so that the check works before it ever meets a GPU. The exit code
is 0 when every stage passed, 1 otherwise (the reports are written either
way). Only the standard library is imported here, so it runs before the
installs.
"""

from __future__ import annotations

import argparse
import collections
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("tier", "demo", "bench")
#: Files the wheels script writes next to the wheels: what they were built from.
MANIFEST = "SOURCES.json"

#: Seconds each stage may take on the GPU and in the dry run (CPU). On the GPU they add up to 470 s, and
#: ``BUDGET`` caps the whole check (installs included) there: under the 8 minutes it is promised to take.
#: Estimates for an H200 (nothing measured yet): installs 15 s; the tier 150 s (compiling the UNet's
#: training step three times is half of it); the demo 70 s (3000 + 1000 + 600 launch-bound steps);
#: SD 1.5 in fp16 70 s (writing and importing 4 GB of weights is most of it); the demo's model 25 s.
LIMITS = {
    "gpu": {"install": 30, "tier": 200, "demo": 100, "bench-sd15": 100, "bench-demo": 40},
    "dry-run": {"install": 120, "tier": 900, "demo": 600, "bench-sd15": 0, "bench-demo": 400},
}
BUDGET = {"gpu": 470.0, "dry-run": float("inf")}

# The dry run's demo: the demo's settings at a few steps (a smoke test, not a model).
DRY_DEMO_SETS = [
    'run.device="cpu"', "data.size=256", "train.steps=20", "train.encoder.steps=6", "train.text_embedder.steps=6",
    "train.checkpoint_every=1000", "sample.steps=3", "evaluator.num_prompts=8",
]


@dataclass
class Stage:
    """What one stage did: its command, exit status, time and the end of its output."""

    name: str
    command: list[str] = field(default_factory=list)
    status: str = "not run"  # passed, failed, timed out, skipped, not run
    seconds: float = 0.0
    returncode: int | None = None
    tail: list[str] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    output: list[str] = field(default_factory=list, repr=False)  # all of it (not written to the report)


# ---------------------------------------------------------------- running things


def run(name: str, command: list[str], env: dict[str, str], limit: float, cwd: Path = ROOT) -> Stage:
    """Run ``command``, echoing its output, killing its whole process group after ``limit`` seconds."""
    stage = Stage(name, [str(c) for c in command])
    if limit <= 0:
        stage.status = "skipped"
        return stage
    print(f"\n=== {name}: {' '.join(stage.command)}", flush=True)
    tail: collections.deque[str] = collections.deque(maxlen=80)
    lines: list[str] = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        stage.command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        errors="replace", start_new_session=True,
    )

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip("\n"))
            lines.append(line.rstrip("\n"))
        sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        proc.wait(timeout=limit)
        stage.status = "passed" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        stage.status = "timed out"
        tail.append(f"(stopped after {limit:.0f} s)")
    reader.join(timeout=10)
    stage.seconds = round(time.perf_counter() - start, 1)
    stage.returncode = proc.returncode
    stage.tail = list(tail)[-40:]
    stage.output = lines
    print(f"=== {name}: {stage.status} in {stage.seconds:.0f} s", flush=True)
    return stage


def source_digest() -> str:
    """A hash of the code the wheels are built from: the distributions' Python files, package data
    and pyproject files. Only files that travel to the GPU machine count (no hidden folders, caches,
    build leftovers or tests), so that the hash is the same here and there."""
    h = hashlib.sha256()
    roots = [ROOT / "core", *sorted((ROOT / "plugins").glob("*")), *sorted((ROOT / "contrib").glob("*"))]
    skip = {"__pycache__", "build", "dist", "tests", "benchmarks"}
    for folder in roots:
        for path in sorted(folder.rglob("*")):
            parts = path.relative_to(ROOT).parts
            if (not path.is_file() or path.suffix not in (".py", ".toml", ".typed")
                    or any(p.startswith(".") or p in skip or p.endswith(".egg-info") for p in parts)):
                continue
            h.update("/".join(parts).encode() + b"\0" + path.read_bytes() + b"\0")
    h.update(b"pyproject.toml\0" + (ROOT / "pyproject.toml").read_bytes())
    return h.hexdigest()


def install(wheels: Path, site: Path, env: dict[str, str], limit: float) -> Stage:
    """The carried wheels into ``site`` (put first on PYTHONPATH for every later stage)."""
    manifest = wheels / MANIFEST
    stage = Stage("install")
    if not manifest.is_file():
        stage.status, stage.tail = "failed", [f"{manifest} is missing: run benchmarks/gpu_wheels.sh first"]
        return stage
    built_from = json.loads(manifest.read_text()).get("sources")
    if built_from != source_digest():
        stage.status = "failed"
        stage.tail = [
            f"the wheels in {wheels} were built from other sources than these; run benchmarks/gpu_wheels.sh again"
        ]
        return stage
    files = sorted(str(p) for p in wheels.glob("*.whl"))
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site), *files]
    stage = run("install", command, env, limit)
    stage.result = {"wheels": [Path(f).name for f in files]}
    return stage


def environment(env: dict[str, str]) -> dict[str, Any]:
    """Python, torch, the GPU and the versions that matter, as the stages will see them."""
    probe = r"""
import json, platform, sys
from importlib import metadata
import torch
out = {"python": platform.python_version(), "executable": sys.executable, "torch": torch.__version__,
       "cuda_available": torch.cuda.is_available(), "cpu_threads": torch.get_num_threads()}
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    out.update(gpu=p.name, capability=f"{p.major}.{p.minor}", gpu_memory_gib=round(p.total_memory / 2**30, 1),
               cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
versions = {}
for name in ("modiff", "modiff-unet", "modiff-sd", "transformers", "diffusers", "gensim", "pydantic",
             "pydantic-settings", "safetensors", "numpy", "huggingface-hub", "pytest", "hypothesis"):
    try:
        versions[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
        versions[name] = None
out["versions"] = versions
print("ENV" + json.dumps(out))
"""
    proc = subprocess.run(
        [sys.executable, "-c", probe], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    for line in proc.stdout.splitlines():
        if line.startswith("ENV"):
            return json.loads(line[3:])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


# ---------------------------------------------------------------- reading results


def junit(path: Path) -> dict[str, Any]:
    """Counts and the non-passing tests of a pytest JUnit XML report."""
    if not path.is_file():
        return {}
    root = ET.parse(path).getroot()
    counts = collections.Counter()
    cases = []
    for case in root.iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[child.tag]
                text = (child.get("message") or child.text or "").strip()
                message = text.splitlines()[0][:300] if text else ""
        counts[outcome] += 1
        cases.append({"test": f"{case.get('classname', '')}::{case.get('name')}", "outcome": outcome,
                      "seconds": round(float(case.get("time", 0)), 2), "message": message})
    return {"counts": dict(counts), "tests": cases}


#: pytest -v's line for one test: ``tests/cuda/test_cuda.py::test_x[id] PASSED   [ 12%]``.
VERBOSE_LINE = re.compile(r"^(\S+::\S+) (PASSED|FAILED|SKIPPED|ERROR|XFAIL|XPASS)\b")


def pytest_lines(output: list[str]) -> dict[str, Any]:
    """Counts and outcomes from pytest's verbose output: what is known of a run that was stopped
    before it could write its JUnit report."""
    outcomes = {"PASSED": "passed", "FAILED": "failed", "SKIPPED": "skipped", "ERROR": "error",
                "XFAIL": "skipped", "XPASS": "passed"}
    tests, counts = [], collections.Counter()
    for line in output:
        m = VERBOSE_LINE.match(line)
        if m:
            outcome = outcomes[m.group(2)]
            counts[outcome] += 1
            tests.append({"test": m.group(1), "outcome": outcome, "seconds": None, "message": ""})
    return {"counts": dict(counts), "tests": tests, "from": "pytest -v output (no JUnit report)"}


def demo_result(out: Path) -> dict[str, Any]:
    path = out / "evaluation.json"
    if not path.is_file():
        return {}
    ev = json.loads(path.read_text())
    keys = ("accuracy", "one_object_accuracy", "two_object_accuracy", "holdout_accuracy", "colour_accuracy",
            "shape_accuracy", "position_accuracy", "num_prompts", "train_seconds", "total_seconds")
    return {k: ev[k] for k in keys if k in ev}


# ---------------------------------------------------------------- reports


def fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return "" if value is None else str(value)


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    stages: dict[str, Any] = report["stages"]
    lines = ["# GPU check" + (" (dry run on the CPU)" if report["dry_run"] else ""), ""]
    machine = env.get("gpu") or "no GPU"
    lines.append(
        f"{report['started']}: {machine}"
        + (f" (compute capability {env.get('capability')}, {env.get('gpu_memory_gib')} GiB, CUDA {env.get('cuda')})"
           if env.get("gpu") else "")
        + f"; Python {env.get('python')}, torch {env.get('torch')}, "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items() if v and k in ("transformers", "diffusers"))
        + f"; {report['total_seconds']:.0f} s in all."
    )
    lines += ["", "| stage | status | seconds | result |", "|---|---|---|---|"]
    for name, st in stages.items():
        lines.append(f"| {name} | {st['status']} | {st['seconds']:.0f} | {summary(name, st)} |")
    tier = stages.get("tier", {}).get("result", {})
    bad = [t for t in tier.get("tests", []) if t["outcome"] != "passed"]
    if bad:
        lines += [
            "",
            "## cuda tier: tests that failed or were skipped",
            "",
            "| test | outcome | message |",
            "|---|---|---|",
        ]
        lines += [f"| `{t['test'].split('::')[-1]}` | {t['outcome']} | {t['message'].replace('|', '/')} |" for t in bad]
    for name, st in stages.items():
        if name.startswith("bench") and st.get("result", {}).get("markdown"):
            lines += ["", f"## {name}: modiff against diffusers", "", st["result"]["markdown"]]
            lines += [f"- {n}" for n in st["result"].get("notes", [])]
    failed = [(n, st) for n, st in stages.items() if st["status"] in ("failed", "timed out")]
    for name, st in failed:
        lines += ["", f"## {name}: {st['status']}", "", "```", *st["tail"][-25:], "```"]
    return "\n".join(lines) + "\n"


def summary(name: str, st: dict[str, Any]) -> str:
    r = st.get("result", {})
    if name == "tier" and r.get("counts"):
        return ", ".join(f"{v} {k}" for k, v in sorted(r["counts"].items()))
    if name == "demo" and r:
        parts = [f"{k.replace('_accuracy', '').replace('_', '-')} {fmt(r[k])}" for k in
                 ("one_object_accuracy", "two_object_accuracy", "holdout_accuracy") if k in r]
        return ", ".join(parts) + (f"; training {r['train_seconds']:.0f} s" if "train_seconds" in r else "")
    if name.startswith("bench") and r.get("rows"):
        return "; ".join(f"{row['measure']}: {row['modiff/diffusers']}x" for row in r["rows"] if
                         row["measure"].startswith("generation") and row["measure"].endswith(": s"))
    if name == "install" and r.get("wheels"):
        return f"{len(r['wheels'])} wheels"
    return ""


# ---------------------------------------------------------------- the check


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="folder for gpu-check.json, gpu-check.md and the few files beside")
    parser.add_argument("--dry-run", action="store_true", help="every stage on the CPU at tiny sizes (what CI runs)")
    parser.add_argument("--wheels", type=Path, help="install these wheels first (benchmarks/gpu_wheels.sh)")
    parser.add_argument("--only", default=",".join(STAGES), help=f"stages to run, of {','.join(STAGES)}")
    parser.add_argument("--work", type=Path, help="folder for work files (default: a temporary one, removed)")
    args = parser.parse_args(argv)
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    if only - set(STAGES):
        parser.error(f"--only takes {', '.join(STAGES)}; got {', '.join(sorted(only - set(STAGES)))}")
    kind = "dry-run" if args.dry_run else "gpu"
    deadline = time.perf_counter() + BUDGET[kind]

    def limit(stage: str) -> float:
        """The stage's own limit, or what is left of the whole check's budget if that is less."""
        return min(LIMITS[kind][stage], max(0.0, deadline - time.perf_counter()))

    device = "cpu" if args.dry_run else "cuda"
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    t0 = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env.update(PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1",
               TOKENIZERS_PARALLELISM="false", CUBLAS_WORKSPACE_CONFIG=":4096:8", MODIFF_CHECK_DEVICE=device)
    if args.dry_run:
        env.setdefault("OMP_NUM_THREADS", "1")
    stages: dict[str, Stage] = {}
    if args.wheels:
        site = work / "site"
        stages["install"] = install(args.wheels, site, env, limit("install"))
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(site), env.get("PYTHONPATH", "")) if p)
    report: dict[str, Any] = {"started": started, "dry_run": args.dry_run, "device": device,
                              "host": platform.node(), "environment": environment(env)}
    ready = stages.get("install") is None or stages["install"].status == "passed"

    if "tier" in only and ready:
        xml = work / "tier-junit.xml"
        command = [sys.executable, "-m", "pytest", "-m", "cuda", "tests/cuda/test_cuda.py", "-v", "-rfEs",
                   "-p", "no:cacheprovider", f"--junitxml={xml}"]
        stage = run("tier", command, env, limit("tier"))
        stage.result = junit(xml) or pytest_lines(stage.output)
        counts = stage.result.get("counts", {})
        if stage.status == "passed" and not counts.get("passed"):
            stage.status = "failed"  # nothing ran: every test skipped (no GPU seen?)
            stage.tail.append("no test of the tier passed (all skipped): is the device visible?")
        if xml.is_file():
            shutil.copy(xml, args.out / "tier-junit.xml")
        stages["tier"] = stage

    if "demo" in only and ready:
        out = work / "demo"
        sets = DRY_DEMO_SETS if args.dry_run else ['run.device="cuda"']
        command = [sys.executable, "-m", "modiff", "demo", "--out", str(out), "--quiet"]
        for s in sets:
            command += ["--set", s]
        stage = run("demo", command, env, limit("demo"))
        stage.result = {"sets": sets, **demo_result(out)}
        if (out / "samples.png").is_file():
            shutil.copy(out / "samples.png", args.out / "demo-samples.png")
        stages["demo"] = stage

    if "bench" in only and ready:
        common = [sys.executable, "benchmarks/bench_generation.py", "--device", device]
        if args.dry_run:
            runs = {
                "bench-demo": ["--config", "demo", "--steps", "2", "--batch", "1", "--repeats", "1", "--threads", "1"]
            }
        else:
            runs = {
                "bench-sd15": ["--config", "sd15", "--dtype", "fp16", "--skip-unet", "--batch", "1", "--batch", "8",
                               "--steps", "25", "--repeats", "3", "--threads", "0"],
                "bench-demo": ["--config", "demo", "--no-tf32", "--batch", "1", "--batch", "8", "--steps", "25",
                               "--repeats", "5", "--threads", "0"],
            }
        for name, options in runs.items():
            path = work / f"{name}.json"
            stage = run(name, [*common, *options, "--json", str(path)], env, limit(name))
            if path.is_file():
                stage.result = json.loads(path.read_text())
            stages[name] = stage

    report["stages"] = {name: {k: v for k, v in asdict(st).items() if k != "output"} for name, st in stages.items()}
    report["total_seconds"] = round(time.perf_counter() - t0, 1)
    ok = all(st.status in ("passed", "skipped") for st in stages.values()) and bool(stages)
    report["passed"] = ok
    (args.out / "gpu-check.json").write_text(json.dumps(report, indent=1, default=str))
    text = markdown(report)
    (args.out / "gpu-check.md").write_text(text)
    print("\n" + text, flush=True)
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
