"""A grid of 2 variants x 2 seeds tracked in MLflow, and a picture of MLflow's UI comparing its runs.

    python benchmarks/mlflow_screenshot.py [--out docs/images/mlflow-grid-compare.png] [--work DIR]

Trains the demo's settings at a tiny budget (``modiff ablate``, two learning
rates x seeds 0 and 1, ``[track] plugins = ["mlflow"]``) into the default
local store, ``<runs>/mlflow.db``; then serves that store with ``mlflow
server`` on loopback and has headless Chromium take a screenshot of MLflow's
compare view of the experiment's four runs (their variant and seed side by
side, the loss charts overlaid). Nothing leaves the machine: MLflow's
telemetry is off and Chromium's background networking too. Needs the
modiff-mlflow plugin and a Chromium (Debian: ``apt-get install chromium``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

from PIL import Image

from modiff_mlflow.server import running_server

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "core" / "modiff" / "configs" / "demo.toml"
#: the demo at a tiny budget (as benchmarks/same_images.py trains it), tracked in MLflow
TINY = {
    "train.encoder.steps": 20,
    "train.encoder.batch_size": 8,
    "train.text_embedder.steps": 10,
    "train.text_embedder.batch_size": 16,
    "train.steps": 40,
    "train.batch_size": 8,
    "train.log_every": 2,
    "train.checkpoint_every": 20,
    "data.size": 256,
    "evaluator.num_prompts": 8,
    "run.device": "cpu",
    "track.plugins": ["mlflow"],
}
GRID_NAME = "mlflow-grid"
WINDOW = (1800, 1800)


def ablation_file(work: Path) -> Path:
    lines = [f"base = {json.dumps(str(DEMO))}", f'name = "{GRID_NAME}"', "seeds = [0, 1]", 'prompts = ["a red circle"]']
    lines += ["[set]", f'"run.runs_dir" = {json.dumps(str(work / "runs"))}']
    lines += [f'"{k}" = {json.dumps(v)}' for k, v in TINY.items()]
    lines += ['[[variant]]', 'name = "lr-2e-3"', 'set = { "train.lr" = 2e-3 }']
    lines += ['[[variant]]', 'name = "lr-5e-4"', 'set = { "train.lr" = 5e-4 }']
    path = work / f"{GRID_NAME}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if found is None:
        sys.exit("no Chromium found (Debian: apt-get install -y chromium)")
    return found


def compare_url(server: str) -> str:
    """MLflow's compare view of the grid's runs, in file order."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=server)
    experiment = client.get_experiment_by_name(GRID_NAME)
    if experiment is None:
        sys.exit(f"no MLflow experiment named {GRID_NAME!r} in the store")
    runs = sorted(client.search_runs([experiment.experiment_id]), key=lambda r: r.info.run_name)
    print(f"experiment {GRID_NAME!r}: {len(runs)} runs: " + ", ".join(r.info.run_name for r in runs))
    query = urllib.parse.urlencode(
        {"runs": json.dumps([r.info.run_id for r in runs]), "experiments": json.dumps([experiment.experiment_id])}
    )
    return f"{server}/#/compare-runs?{query}"


def screenshot(url: str, out: Path, profile: Path) -> None:
    command = [
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic", "--hide-scrollbars",
        f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--virtual-time-budget=30000",
        f"--screenshot={out}", url,
    ]
    subprocess.run(command, check=True, capture_output=True, timeout=300)


def shrink(png: Path) -> None:
    """A palette PNG: the UI's flat colours lose nothing visible, the file a few times smaller."""
    with Image.open(png) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(png, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images" / "mlflow-grid-compare.png")
    parser.add_argument("--work", type=Path, default=None, help="keep the runs here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="modiff-mlflow-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    env.pop("MLFLOW_TRACKING_URI", None)  # the default store: <runs>/mlflow.db
    subprocess.run([sys.executable, "-m", "modiff", "ablate", str(ablation_file(work)), "--quiet"], check=True, env=env)
    store = f"sqlite:///{work / 'runs' / 'mlflow.db'}"
    with running_server(store, work / "server.log") as server:
        url = compare_url(server)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        screenshot(url, args.out, work / "chromium-profile")
    shrink(args.out)
    print(f"{args.out}: {args.out.stat().st_size // 1024} KiB ({url.split('#')[1][:60]}...)")


if __name__ == "__main__":
    main()
