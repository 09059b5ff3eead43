"""The state of the launcher's jobs, read from ``squeue``.

submitit reads job states with ``sacct``, which needs Slurm's accounting
database; many small clusters (and the one-node cluster of the tests) run
without one. ``squeue --states=all`` needs nothing but the controller and
still lists a job for ``MinJobAge`` seconds after it ended (300 by default),
far longer than the driver takes to look again. One call answers for every
job of the grid, at most once per :data:`MIN_INTERVAL` seconds.
"""

from __future__ import annotations

import getpass
import subprocess
import time
from dataclasses import dataclass

#: Seconds between two calls to squeue, however often the driver polls.
MIN_INTERVAL = 1.0

#: States after which a job will not run again (unless the launcher submits it again).
ENDED = frozenset({
    "COMPLETED", "FAILED", "CANCELLED", "NODE_FAIL", "TIMEOUT", "OUT_OF_MEMORY",
    "BOOT_FAIL", "DEADLINE", "PREEMPTED", "SPECIAL_EXIT", "REVOKED",
})


@dataclass(frozen=True)
class JobState:
    """One job as squeue shows it: its state and the node it runs or ran on (empty while pending)."""

    state: str
    node: str

    @property
    def ended(self) -> bool:
        return self.state in ENDED


class Queue:
    """This user's jobs as the controller last described them."""

    def __init__(self) -> None:
        self._states: dict[str, JobState] = {}
        self._read_at = float("-inf")
        self.reachable = False
        self.problem = ""

    def state(self, job_id: str) -> JobState | None:
        """``job_id``'s state, or ``None`` when the controller does not list it (or cannot be reached:
        then :attr:`reachable` is false)."""
        if time.monotonic() - self._read_at >= MIN_INTERVAL:
            self.refresh()
        return self._states.get(job_id)

    def refresh(self) -> None:
        """Ask the controller again (``-r``: one line per array task)."""
        command = ["squeue", "--states=all", "-r", "-h", "-u", getpass.getuser(), "-o", "%i|%T|%N"]
        self._read_at = time.monotonic()
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.reachable, self.problem = False, str(exc)
            return
        if done.returncode != 0:
            self.reachable, self.problem = False, done.stderr.strip()
            return
        states = {}
        for line in done.stdout.splitlines():
            job_id, _, rest = line.partition("|")
            state, _, node = rest.partition("|")
            states[job_id.strip()] = JobState(state.strip().split()[0] if state.strip() else "", node.strip())
        self._states, self.reachable, self.problem = states, True, ""
