"""An ``mlflow server`` on loopback over a store, for as long as a ``with`` block lasts.

What the tests use to read runs back through a real server, and what
``benchmarks/mlflow_screenshot.py`` opens in a browser: the process runs with
MLflow's telemetry off, answers on 127.0.0.1 only, and is stopped (its whole
process group) when the block ends, however it ends.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def running_server(
    backend_store_uri: str, log: Path, *, artifacts: Path | None = None, start_seconds: float = 180
) -> Iterator[str]:
    """Start ``mlflow server`` on a free loopback port and yield its URL once it answers.

    ``artifacts``: where the server keeps the artifacts clients send it (it
    then serves them, as a team's server does); runs whose artifacts are
    local files are read from where they are.
    """
    port = free_port()
    command = [
        sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port),
        "--backend-store-uri", backend_store_uri, "--workers", "1",
    ]
    if artifacts is not None:
        command += ["--artifacts-destination", str(artifacts)]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + start_seconds
        while not _answers(f"{url}/health"):
            if server.poll() is not None:
                raise RuntimeError(f"mlflow server exited with code {server.returncode}; see {log}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not answer within {start_seconds:.0f} s; see {log}")
            time.sleep(0.5)
        yield url
    finally:
        _stop(server)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as answer:
            return bool(answer.status == 200)
    except OSError:
        return False


def _stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the server's process group (it forks workers), SIGKILL if it lingers."""
    if server.poll() is not None:
        return
    os.killpg(server.pid, signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
