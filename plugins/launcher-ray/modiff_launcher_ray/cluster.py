"""A Ray cluster of several nodes on this machine's loopback, for tests and benchmarks.

Each node is a ``ray start --block`` process of its own (one CPU each by
default), with a temporary folder of its own, so that stopping it ends its
processes and nothing else: ``ray stop`` would end every Ray process of this
user, other clusters' included. Ports are free ones, never Ray's defaults,
which another cluster on the machine may hold. The cluster takes a token of
its own (Ray's token authentication, the token in that folder), so that it
neither depends on nor writes ``~/.ray/auth_token``: whoever joins it uses
:attr:`LocalCluster.env`.
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

# Joins the cluster as soon as its head answers (ray.init fails while it starts), then waits for every node.
_WAIT_FOR_NODES = """
import ray, sys, time
deadline = time.monotonic() + float(sys.argv[3])
while True:
    try:
        ray.init(address=sys.argv[1], log_to_driver=False)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise
        time.sleep(1)
while sum(n["Alive"] for n in ray.nodes()) < int(sys.argv[2]):
    if time.monotonic() > deadline:
        sys.exit("the cluster's nodes did not all join in time")
    time.sleep(0.3)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass(frozen=True)
class LocalCluster:
    """A running cluster: the head's address, and the environment a process
    needs to join it (its token; Ray's usage statistics off)."""

    address: str
    env: dict[str, str]


def _processes_under(folder: str) -> list[int]:
    """Pids of the processes whose command line names ``folder``, and of their descendants."""
    parents: dict[int, int] = {}
    named: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            if folder in (entry / "cmdline").read_bytes().decode(errors="replace"):
                named.add(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue
    found = set(named)
    while more := {pid for pid, parent in parents.items() if parent in found} - found:
        found |= more
    return sorted(found)


@contextmanager
def local_cluster(nodes: int = 2, cpus: int = 1, timeout: float = 300) -> Iterator[LocalCluster]:
    """Start a head and ``nodes - 1`` more nodes of ``cpus`` CPUs each on
    127.0.0.1 (dashboard off), wait until all joined, and yield the cluster;
    stop them all on the way out, also after a failure."""
    temp = tempfile.mkdtemp(prefix="mray", dir="/tmp")  # short: Ray's socket paths must fit in 107 bytes
    token = Path(temp) / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    port = _free_port()
    ray = str(Path(sys.executable).with_name("ray"))
    common = ["--num-cpus", str(cpus), "--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats",
              "--dashboard-agent-listen-port", "0", "--metrics-export-port", "0"]
    commands = [[ray, "start", "--head", "--port", str(port), "--include-dashboard", "false", "--temp-dir", temp,
                 "--ray-client-server-port", str(_free_port()), *common]]
    commands += [[ray, "start", "--address", f"127.0.0.1:{port}", *common]] * (nodes - 1)
    started: list[subprocess.Popen[bytes]] = []
    try:
        for i, command in enumerate(commands):
            with open(Path(temp) / f"node{i}.log", "wb") as log:
                started.append(subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True))
            time.sleep(1)  # the head first: the others join it
        address = f"127.0.0.1:{port}"
        joined = subprocess.run([sys.executable, "-c", _WAIT_FOR_NODES, address, str(nodes), str(timeout)],
                                env=env, capture_output=True, text=True, timeout=timeout + 60)
        if joined.returncode != 0:
            raise RuntimeError(f"the Ray cluster in {temp} did not start: {joined.stderr[-2000:]}")
        yield LocalCluster(address, env)
    finally:
        for node in reversed(started):  # `ray start --block` stops its node's processes when it ends
            node.send_signal(signal.SIGTERM)
        for node in started:
            try:
                node.wait(60)
            except subprocess.TimeoutExpired:
                node.kill()
        for pid in _processes_under(temp):  # anything left of this cluster, and nothing of any other
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
