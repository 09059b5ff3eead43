"""The ``[launcher]`` options of ``name = "ray"``."""

from __future__ import annotations

from pydantic import Field

import modiff


class RaySettings(modiff.ComponentSettings):
    """Where the Ray cluster is and what each run asks of it."""

    address: str | None = Field(
        None,
        description="an existing cluster's address (host:port, as `ray start --head` prints); "
        "none: a Ray instance of its own on this machine, stopped when the grid ends",
    )
    cpus: int = Field(1, ge=1, description="CPUs each run declares, and the threads it trains with")
    retries: int = Field(3, ge=0, description="times Ray runs a task again whose worker or node died")
    slots: int | None = Field(
        None, ge=1, description="runs in flight at once (default: the cluster's CPUs / cpus, capped by --jobs)"
    )
