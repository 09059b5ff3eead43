"""Finding, on a CPU, the code that would make the host wait for a GPU.

On a GPU, kernels are queued and run while Python goes on; anything that
needs a value back on the host (``float(t)``, ``t.item()``, ``bool(t)``, an
``if`` on a tensor, a boolean-mask index, whose result size depends on the
data) waits until the GPU has caught up. Once per sampling or training step,
that stall costs the overlap of CPU and GPU work. A CPU run cannot feel it,
but it can see it: every such read goes through an operator that
:func:`host_syncs` records, with the line of code that asked for it::

    from modiff.testing.devices import host_syncs

    with host_syncs() as syncs:
        loss = component.training_loss(batch)
    assert not syncs, syncs

Calls of ``.cpu()``, ``.numpy()`` and ``.tolist()`` are recorded too (a no-op
on a CPU tensor, a copy to the host on a GPU one). It also records tensors
made on the CPU by a factory called without
``device=`` (``torch.zeros(n)``, ``torch.tensor([...])``): on a GPU run those
are CPU tensors that something must copy over, a copy the host waits for
unless it is made from pinned memory (see ``modiff.noise.to_device``).
Pass ``factories=False`` to leave them out.

On a CUDA device, ``torch.cuda.set_sync_debug_mode("error")`` is the direct
check; this one needs no GPU.
"""

from __future__ import annotations

import os
import traceback
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

#: Operators whose result the host must read, or whose output size depends on tensor values.
SYNCING_OPS = {
    "aten._local_scalar_dense": "a tensor read as a Python number (float(), int(), bool(), .item(), .tolist())",
    "aten.is_nonzero": "a tensor used as a truth value",
    "aten.equal": "torch.equal",
    "aten.nonzero": "torch.nonzero (output size depends on values)",
    "aten.nonzero_static": None,  # sized by its argument: no wait
    "aten.masked_select": "masked_select (output size depends on values)",
    "aten._unique2": "unique (output size depends on values)",
    "aten.unique_dim": "unique (output size depends on values)",
    "aten.unique_consecutive": "unique_consecutive (output size depends on values)",
}

#: Factories that make a new tensor on the default (CPU) device unless given ``device=``.
FACTORIES = (
    "tensor", "as_tensor", "zeros", "ones", "empty", "full", "arange", "linspace", "logspace", "eye",
    "rand", "randn", "randint", "randperm", "scalar_tensor",
)

#: Tensor methods that copy to the host: on a CPU tensor a no-op, on a GPU one a wait.
_HOST_METHODS = {
    torch.Tensor.tolist: "Tensor.tolist (a copy to the host)",
    torch.Tensor.numpy: "Tensor.numpy (a copy to the host)",
    torch.Tensor.cpu: "Tensor.cpu (a copy to the host)",
}

_TORCH_DIR = os.path.dirname(torch.__file__)


def _caller() -> str:
    """``file:line`` of the innermost frame outside torch and this module."""
    here = os.path.abspath(__file__)
    for frame in reversed(traceback.extract_stack()[:-2]):
        path = os.path.abspath(frame.filename)
        if path.startswith(_TORCH_DIR) or path == here or "contextlib" in path:
            continue
        return f"{frame.filename}:{frame.lineno}"
    return "?"


class _SyncRecorder(TorchDispatchMode):
    def __init__(self, events: list[str]):
        super().__init__()
        self.events = events

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = func.overloadpacket._qualified_op_name.replace("::", ".")
        what = SYNCING_OPS.get(name)
        if what is None and name == "aten.index" and any(
            isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in (args[1] if len(args) > 1 else ())
        ):
            what = "a boolean-mask index (output size depends on values)"
        if what is None and name in ("aten._to_copy", "aten.copy_"):
            what = _device_to_host(name, args, kwargs or {})
        if what is not None:
            self.events.append(f"{what} at {_caller()}")
        return func(*args, **(kwargs or {}))


def _device_to_host(name: str, args: Any, kwargs: dict[str, Any]) -> str | None:
    """A copy from an accelerator to the CPU (never seen on a CPU-only run, but on a GPU one)."""
    if name == "aten._to_copy":
        source, target = args[0], kwargs.get("device")
    else:
        target, source = args[0].device, args[1]
    on_device = isinstance(source, torch.Tensor) and source.device.type not in ("cpu", "meta")
    if on_device and target is not None and torch.device(target).type == "cpu":
        return "a copy to the host"
    return None


class _CallRecorder(TorchFunctionMode):
    def __init__(self, events: list[str], factories: bool):
        super().__init__()
        self.events = events
        self.watched = {getattr(torch, n) for n in FACTORIES if hasattr(torch, n)} if factories else set()

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func in _HOST_METHODS:
            self.events.append(f"{_HOST_METHODS[func]} at {_caller()}")
        elif func in self.watched and kwargs.get("device") is None and not _from_tensor(func, args):
            self.events.append(f"torch.{func.__name__} without device= at {_caller()}")
        return func(*args, **kwargs)


def _from_tensor(func: Any, args: Any) -> bool:
    """``torch.as_tensor(t)`` of a tensor keeps its device: not a new CPU tensor."""
    return func is torch.as_tensor and bool(args) and isinstance(args[0], torch.Tensor)


@contextmanager
def host_syncs(*, factories: bool = True) -> Iterator[list[str]]:
    """Record, as readable lines, every host read and copy to the host (and with
    ``factories``, every CPU tensor factory without ``device=``) made inside the
    block."""
    events: list[str] = []
    with ExitStack() as stack:
        stack.enter_context(_CallRecorder(events, factories))
        stack.enter_context(_SyncRecorder(events))
        yield events


__all__ = ["FACTORIES", "SYNCING_OPS", "host_syncs"]
