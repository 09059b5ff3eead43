"""The ``ray`` launcher on a real two-node Ray cluster on this machine (issue 36, items 2 and 4).

A head and a second node, one CPU each, on loopback, started with ``ray start``
once for the module and stopped in the fixture's ``finally`` (by the processes
it started, never ``ray stop``, which would end other Ray clusters of this
user). The same tiny grid, 3 cells x 2 seeds, runs with the ``local``
launcher (the reference) and on the cluster: both nodes run runs, and the
weights, evaluations, losses and the report's numbers are equal bit for bit.
A Ray worker killed with SIGKILL mid-run is retried and its run ends equal
to the reference; a driver killed and started again trains no finished run
and no kept stage twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from modiff.ablation import read_ablation, run_ablation
from modiff.runs import RunDir

pytest.importorskip("modiff_launcher_ray", reason="the Ray launcher's distribution is not installed")
from modiff_launcher_ray.cluster import LocalCluster, local_cluster  # noqa: E402 (after the skip)

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("loopback_only")]  # Ray binds every interface

ROOT = Path(__file__).resolve().parents[2]
# The tiny run of tests/tiny-run.toml with the text transformer (so that two stages are shareable).
TINY = (ROOT / "tests" / "tiny-run.toml").read_text().format(
    runs="{runs}", steps=10, stage_steps=2, checkpoint_every=2
) + '[text_embedder]\nplugin = "transformer"\nwidth = 16\nheads = 2\ndepth = 1\npretext = "layout"\npretext_grid = 4\n'
LRS = ["1e-3", "2e-3", "5e-4"]  # 6 runs: enough for both nodes, a retried worker and shared stages
# The first cell: its runs train their own stages; the other cells' start from copies of them.
FIRST = "train.lr=0.001"
# Timings and where a run ran differ between launchers; everything else must not.
NOT_COMPARED = re.compile(r"seconds|_at$|^launch$|^timing$|^span|^wall|^traceback$")


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """A head and a second node, one CPU each, on 127.0.0.1."""
    with local_cluster(nodes=2, cpus=1) as running:
        yield running


def ray_env(cluster: LocalCluster | None = None) -> dict[str, str]:
    return {**(cluster.env if cluster else os.environ), "OMP_NUM_THREADS": "1"}


def write_grid(folder: Path, lrs: list[str], launcher: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "base.toml").write_text(TINY.format(runs=(folder / "runs").as_posix()))
    path = folder / "grid.toml"
    path.write_text(f'base = "base.toml"\nname = "grid"\nseeds = [0, 1]\nimages_per_prompt = 1\n'
                    f'[grid]\n"train.lr" = [{", ".join(lrs)}]\n{launcher}')
    return path


def ablate(path: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "modiff", "ablate", str(path), "--quiet", *extra],
                          env=env or ray_env(), capture_output=True, text=True, timeout=900)


def compared(value: Any) -> Any:
    """``value`` without timings and placement (recursively)."""
    if isinstance(value, dict):
        return {k: compared(v) for k, v in value.items() if not NOT_COMPARED.search(k)}
    if isinstance(value, list):
        return [compared(v) for v in value]
    return value


def weights_hash(path: Path) -> str:
    """A digest of a weights file's tensors and metadata (its bytes are not one: the
    header's keys come in an order of the writing process's own)."""
    from safetensors import safe_open

    digest = hashlib.sha256()
    with safe_open(str(path), "pt") as weights:
        digest.update(json.dumps(weights.metadata(), sort_keys=True).encode())
        for key in sorted(weights.keys()):
            digest.update(key.encode() + weights.get_tensor(key).flatten().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def results(out: Path) -> dict[str, Any]:
    """Per run: the hash of every weights file, the evaluation, losses and curve; and the report's numbers."""
    runs = {}
    for record_path in sorted(out.glob("*/cell.json")):
        run = record_path.parent
        weights = {p.relative_to(run).as_posix(): weights_hash(p)
                   for p in sorted(run.glob("checkpoints/*/components/*.safetensors"))}
        assert weights, f"{run} has no weights"
        runs[run.name] = {"record": compared(json.loads(record_path.read_text())), "weights": weights}
    summary = (out / "summary.json").read_text().replace(str(out.parent.parent), "ROOT")
    return {"runs": runs, "summary": compared(json.loads(summary))}


def differences(reference: dict[str, Any], got: dict[str, Any]) -> list[str]:
    """What differs between two grids' :func:`results` (runs of ``got`` only), one line each."""
    found = []
    for name, run in got["runs"].items():
        other = reference["runs"].get(name, {"record": {}, "weights": {}})
        for part in ("record", "weights"):
            for key in sorted(set(run[part]) | set(other[part])):
                mine, theirs = run[part].get(key), other[part].get(key)
                if mine != theirs:
                    found.append(f"{name} {part} {key}: {str(theirs)[:200]} != {str(mine)[:200]}")
    return found


def report_lines(out: Path) -> list[str]:
    """report.md without its timings (the sentence that sums them up, the tables'
    seconds columns), with the folder the grid lives in left out."""
    kept, timing = [], set()
    for line in (out / "report.md").read_text().replace(str(out.parent.parent), "ROOT").splitlines():
        if "took" in line or "wall time" in line:
            continue
        if not line.startswith("|"):
            timing = set()
            kept.append(line)
            continue
        cells = line.strip().strip("|").split("|")
        if any(c.strip().endswith((" s", "s / image")) for c in cells):  # a header: which columns are seconds
            timing = {i for i, c in enumerate(cells) if c.strip().endswith((" s", "s / image"))}
        kept.append("|".join(c for i, c in enumerate(cells) if i not in timing))
    return kept


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The reference: the grid with the ``local`` launcher, one run after the other in this
    process, on one thread as every Ray run here (no process to start for each run)."""
    path = write_grid(tmp_path_factory.mktemp("local"), LRS)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        records = run_ablation(read_ablation(path), progress=False, log=lambda *_: None)
    finally:
        torch.set_num_threads(threads)
    assert [r["status"] for r in records] == ["done"] * 2 * len(LRS), [r.get("error") for r in records]
    return path.parent / "runs" / "grid"


def lock_pid(run: Path) -> int | None:
    found = re.match(r"process (\d+)", (run / ".lock").read_text()) if (run / ".lock").is_file() else None
    return int(found.group(1)) if found else None


def denoiser_steps(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    lines = metrics.read_text().splitlines() if metrics.is_file() else []
    return sum('"stage": "denoiser"' in line and '"loss"' in line for line in lines)


def stage_lines(run: Path) -> list[str]:
    """The metrics lines of the stages before the denoiser's (with the times they were written at)."""
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [line for line in lines if '"stage": "encoder"' in line or '"stage": "text_embedder"' in line]


def test_a_grid_on_two_ray_nodes_equals_local_and_a_killed_worker_is_retried(
    cluster: LocalCluster, local: Path, tmp_path: Path
) -> None:
    path = write_grid(tmp_path, LRS, f'[launcher]\nname = "ray"\naddress = "{cluster.address}"\n')
    out = tmp_path / "runs" / "grid"
    driver = subprocess.Popen([sys.executable, "-m", "modiff", "ablate", str(path), "--quiet"], env=ray_env(cluster),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, killed = None, None
    deadline = time.monotonic() + 600
    while victim is None and driver.poll() is None and time.monotonic() < deadline:
        # a run of the first cell mid-denoiser: kill its Ray worker
        for run in sorted(out.glob(f"{FIRST}*")) if out.is_dir() else []:
            pid = lock_pid(run)
            if pid and denoiser_steps(run) >= 2 and not (run / "cell.json").exists() and RunDir(run).writer():
                worker = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
                os.kill(worker, signal.SIGKILL)
                victim, killed = run, pid
                break
        time.sleep(0.05)
    output, _ = driver.communicate(timeout=max(1, deadline - time.monotonic()))
    assert driver.returncode == 0, output[-3000:]
    assert victim is not None, "no run was caught mid-training"
    assert lock_pid(victim) != killed, "the killed run was not run again"

    nodes = {json.loads(p.read_text())["launch"]["node"] for p in out.glob("*/cell.json")}
    assert len(nodes) == 2, f"the runs ran on {nodes}, not on both nodes"
    assert not differences(results(local), results(out))
    assert results(out)["summary"] == results(local)["summary"]
    assert report_lines(out) == report_lines(local)


def test_a_killed_driver_started_again_trains_nothing_twice(cluster: LocalCluster, local: Path, tmp_path: Path) -> None:
    """Killed while the second cell's runs (started from the first's stages) are mid-denoiser."""
    path = write_grid(tmp_path, LRS[:2], f'[launcher]\nname = "ray"\naddress = "{cluster.address}"\n')
    out = tmp_path / "runs" / "grid"
    command = [sys.executable, "-m", "modiff", "ablate", str(path), "--quiet"]
    driver = subprocess.Popen(command, env=ray_env(cluster), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not any(denoiser_steps(run) >= 2 and not (run / "cell.json").exists() for run in out.glob("*lr=0.002*")):
        assert driver.poll() is None and time.monotonic() < deadline, "the grid ended before the kill"
        time.sleep(0.05)
    driver.kill()
    driver.wait()
    finished = {p.parent.name: p.read_bytes() for p in out.glob("*/cell.json")}
    stages = {p.name: p.stat().st_mtime_ns for p in (out / ".stages").iterdir() if not p.name.startswith(".")}
    assert sorted(finished) == [f"{FIRST},seed=0", f"{FIRST},seed=1"] and len(stages) == 4, (finished, stages)

    again = ablate(path, env=ray_env(cluster))
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    for name, record in finished.items():
        assert f"{name}: finished earlier, skipped" in again.stdout
        assert (out / name / "cell.json").read_bytes() == record, f"{name} was trained again"
    kept = {p.name: p.stat().st_mtime_ns for p in (out / ".stages").iterdir() if not p.name.startswith(".")}
    assert kept == stages, "a stage was trained and kept again"
    records = {p.parent.name: json.loads(p.read_text()) for p in out.glob("*/cell.json")}
    assert [r["status"] for r in records.values()] == ["done"] * 4
    for seed in (0, 1):  # the runs cut off resumed their denoiser; their stages are still the copies they started from
        assert stage_lines(out / f"train.lr=0.002,seed={seed}") == stage_lines(out / f"{FIRST},seed={seed}")
    # the runs cut off mid-denoiser, started from shared stages, too end as the local reference's, and
    # their records, written after the restart, still say which stages they started from
    assert differences(results(local), results(out)) == []
