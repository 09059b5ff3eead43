"""One process or many: the few collective operations training needs.

Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) :func:`World.from_env` joins
the process group — NCCL on GPUs, gloo on CPUs. Gradients are averaged with
one all-reduce per step over a flat buffer rather than by wrapping modules in
``DistributedDataParallel``: components are called through their protocol
methods (``condition``, ``embed``), which a DDP wrapper would hide, and one
flat all-reduce per step is what DDP itself amounts to at these sizes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @classmethod
    def single(cls) -> World:
        return cls()

    @classmethod
    def from_env(cls) -> World:
        """The world torchrun describes, joining its process group; one process otherwise."""
        size = int(os.environ.get("WORLD_SIZE", "1"))
        if size <= 1:
            return cls.single()
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if not dist.is_initialized():
            backend = "nccl" if torch.cuda.is_available() else "gloo"
            if backend == "nccl":
                torch.cuda.set_device(local)
            dist.init_process_group(backend=backend)
        return cls(rank, size, local)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        if self.size == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self._device())
        dist.all_reduce(t)
        return float(t) / self.size

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any (one all-reduce): ranks
        that decide to stop must decide it together."""
        if self.size == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self._device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def all_reduce_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks (one flat all-reduce).

        A parameter that no rank used this step (the null context of a step
        that dropped no caption, a pretext head outside its stage) keeps
        ``grad = None``, as on one process: given a zero gradient instead,
        AdamW would count the step, decay its moments and weights, and N
        processes would drift from one. A flag per parameter travels in the
        same buffer.
        """
        if self.size == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        unused_here = [i for i, p in enumerate(params) if p.grad is None]
        flags = [torch.full((1,), float(p.grad is not None), dtype=g.dtype, device=g.device)
                 for p, g in zip(params, grads)]
        flat = torch.cat([g.reshape(-1) for g in grads] + flags)
        dist.all_reduce(flat)
        unused_everywhere: set[int] = set()
        if unused_here:  # one host read, only on a step where this rank left a parameter without a gradient
            counts = flat[flat.numel() - len(params):].tolist()
            unused_everywhere = {i for i in unused_here if counts[i] == 0}
        flat = flat[: flat.numel() - len(params)] / self.size
        offset = 0
        for i, (p, g) in enumerate(zip(params, grads)):
            n = g.numel()
            chunk = flat[offset : offset + n].view_as(g)
            offset += n
            if i in unused_everywhere:
                p.grad = None
            elif p.grad is None:
                p.grad = chunk.clone()
            else:
                p.grad.copy_(chunk)

    def _device(self) -> torch.device:
        if dist.is_initialized() and dist.get_backend() == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")

    def shutdown(self) -> None:
        if self.size > 1 and dist.is_initialized():
            dist.destroy_process_group()
