"""``World.all_reduce_grads`` on two real gloo processes: gradients are averaged, and a
parameter no rank used keeps ``grad = None`` as it would on one process (given zeros,
AdamW would count the step and decay its moments, and two processes would drift from one)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from modiff.distributed import World


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _rank(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2",
                      LOCAL_RANK=str(rank))
    world = World.from_env()
    try:
        both, one_only, nobody = (torch.nn.Parameter(torch.zeros(3)) for _ in range(3))
        both.grad = torch.full((3,), float(rank + 1))  # 1 on rank 0, 2 on rank 1
        if rank == 0:
            one_only.grad = torch.full((3,), 4.0)
        world.all_reduce_grads([both, one_only, nobody])
        torch.save({"both": both.grad, "one_only": one_only.grad, "nobody": nobody.grad}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_gradients_are_averaged_and_a_parameter_nobody_used_has_none(tmp_path: Path) -> None:
    mp.spawn(_rank, args=(_free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"{rank}.pt", weights_only=True)
        assert torch.equal(got["both"], torch.full((3,), 1.5))
        assert torch.equal(got["one_only"], torch.full((3,), 2.0)), "used on one rank: averaged with zeros"
        assert got["nobody"] is None
