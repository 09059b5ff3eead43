"""Fixtures of the distributed room: a real one-node Slurm cluster on this machine.

No scheduler is mocked: the launcher's tests submit to Debian's ``slurm-wlm``
(``munged``, ``slurmctld`` and ``slurmd`` on 127.0.0.1), started here once per
test session and stopped in the fixture's ``finally``. Everything the cluster
writes (configuration, state, spool, logs, munge's socket) lives in one
temporary folder; outside it only the munge key that Debian's package made
(``/etc/munge/munge.key``) is read, or written when missing. The daemons are
stopped by their pid files, after every job of this cluster was cancelled.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

MUNGE_KEY = Path("/etc/munge/munge.key")
#: What a one-node cluster needs on PATH (Debian: ``apt-get install slurm-wlm``).
SLURM_PROGRAMS = ("munged", "slurmctld", "slurmd", "sbatch", "squeue", "scancel", "sinfo")


@dataclass(frozen=True)
class SlurmCluster:
    """A running one-node cluster: its ``slurm.conf`` and the environment that reaches it."""

    folder: Path
    conf: Path
    node: str
    partition: str = "debug"

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *command: str, check: bool = True) -> str:
        """A Slurm client command (``squeue``, ``scancel``...) against this cluster."""
        done = subprocess.run(command, env=self.env, capture_output=True, text=True, timeout=60)
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def jobs(self) -> dict[str, str]:
        """Every job the controller still knows, id -> state (ended ones too, until MinJobAge)."""
        out = self.run("squeue", "--states=all", "-h", "-o", "%i|%T")
        return dict(line.split("|", 1) for line in out.split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _why_not() -> str | None:
    """Why no cluster can start here, or ``None``."""
    missing = [p for p in SLURM_PROGRAMS if shutil.which(p) is None]
    if missing:
        return f"Slurm is not installed ({', '.join(missing)} missing; Debian: apt-get install slurm-wlm)"
    if os.geteuid() != 0:
        return "a one-node Slurm cluster needs root here (SlurmUser=root, munged as the munge user)"
    try:
        pwd.getpwnam("munge")
    except KeyError:
        return "no munge user (Debian's munge package makes it)"
    return None


def _munge_key() -> None:
    """The key every munge daemon of a cluster shares; made once if the package did not."""
    if MUNGE_KEY.is_file():
        return
    user = pwd.getpwnam("munge")
    MUNGE_KEY.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    MUNGE_KEY.write_bytes(os.urandom(1024))
    os.chmod(MUNGE_KEY, 0o400)
    os.chown(MUNGE_KEY, user.pw_uid, user.pw_gid)


def _slurm_conf(folder: Path, node: str, munge_socket: Path) -> str:
    return "\n".join([
        "ClusterName=modifftest",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={_free_port()}",
        f"SlurmdPort={_free_port()}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: a requeued job waits this long before it starts again (default 120 s)
        f"AuthInfo=socket={munge_socket},cred_expire=10",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        # listen on 127.0.0.1 (NodeAddr, SlurmctldHost's address), not on every interface
        "CommunicationParameters=NoCtldInAddrAny,NoInAddrAny",
        f"StateSaveLocation={folder / 'state'}",
        f"SlurmdSpoolDir={folder / 'spool'}",
        f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
        f"SlurmdPidFile={folder / 'slurmd.pid'}",
        f"SlurmctldLogFile={folder / 'slurmctld.log'}",
        f"SlurmdLogFile={folder / 'slurmd.log'}",
        "ReturnToService=2",
        "KillWait=2",
        "MinJobAge=600",
        "SchedulerParameters=sched_interval=1",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN",
        f"PartitionName=debug Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


def _stop(pid_file: Path) -> None:
    """Stop the daemon this fixture started, by its pid file (and wait for it to go)."""
    try:
        pid = int(pid_file.read_text().strip())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(100):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """munged, slurmctld and slurmd on 127.0.0.1 with two CPUs, for the whole session."""
    reason = _why_not()
    if reason is not None:
        pytest.skip(reason)
    _munge_key()
    # not under pytest's tmp_path: munged needs every folder above its socket open to its user
    folder = Path(tempfile.mkdtemp(prefix="modiff-slurm-"))
    folder.chmod(0o755)
    munge = folder / "munge"
    munge.mkdir(mode=0o755)
    user = pwd.getpwnam("munge")
    os.chown(munge, user.pw_uid, user.pw_gid)
    for sub in ("state", "spool"):
        (folder / sub).mkdir()
    node = socket.gethostname().split(".")[0]
    conf = folder / "slurm.conf"
    conf.write_text(_slurm_conf(folder, node, munge / "munge.socket"))
    cluster = SlurmCluster(folder, conf, node)
    daemons = [munge / "munged.pid", folder / "slurmctld.pid", folder / "slurmd.pid"]
    try:
        subprocess.run(
            ["runuser", "-u", "munge", "--", "munged", f"--socket={munge / 'munge.socket'}",
             f"--pid-file={daemons[0]}", f"--log-file={munge / 'munged.log'}", f"--seed-file={munge / 'seed'}"],
            check=True, timeout=30,
        )
        subprocess.run(["slurmctld", "-f", str(conf)], env=cluster.env, check=True, timeout=30)
        subprocess.run(["slurmd", "-f", str(conf)], env=cluster.env, check=True, timeout=30)
        deadline = time.monotonic() + 60
        while cluster.run("sinfo", "-h", "-o", "%T", check=False).strip() != "idle":
            if time.monotonic() > deadline:
                logs = "".join(p.read_text()[-800:] for p in folder.glob("slurm*.log"))
                raise RuntimeError(f"the one-node Slurm cluster did not come up within 60 s:\n{logs}")
            time.sleep(0.5)
        yield cluster
    finally:
        if (folder / "slurmctld.pid").is_file():
            cluster.run("scancel", f"--partition={cluster.partition}", check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                states = cluster.run("squeue", "-h", "-o", "%T", check=False).split()
                if not states:
                    break
                time.sleep(0.5)
        for pid_file in reversed(daemons):
            _stop(pid_file)
        shutil.rmtree(folder, ignore_errors=True)
