"""Checks several contracts share: random state, dtypes, devices, untouched inputs.

They are written once here so that every role asks the same question the
same way: "draws only from the generator it is given", "the output has the
input's dtype", "the output lives where the input lives", "the input is
left as it was".
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TypeVar

import pytest
import torch

T = TypeVar("T")

#: Words in the errors torch raises when tensors on two devices meet.
_DEVICE_MISMATCH = ("expected device", "same device", "two devices", "device type")


@contextmanager
def global_random_state_unchanged(what: str) -> Iterator[None]:
    """Fail if the block draws from (or reseeds) torch's or Python's global random state.

    A component handed a generator must draw from it alone; one that draws
    from the global state makes training or sampling depend on whatever else
    ran before it, and one that reseeds the global state changes everyone
    else's draws.
    """
    torch_before = torch.random.get_rng_state()
    python_before = random.getstate()
    yield
    assert torch.equal(torch_before, torch.random.get_rng_state()), (
        f"{what} used torch's global random state (torch.randn/rand/randint/manual_seed without a generator); "
        "draw from the generator it is given"
    )
    assert random.getstate() == python_before, f"{what} used Python's global `random` state"


def floating_tensors(value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every floating tensor in a tensor, a dataclass of them or a mapping."""
    for name, item in all_tensors(value):
        if item.is_floating_point():
            yield name, item


def all_tensors(value: Any) -> Iterator[tuple[str, torch.Tensor]]:
    """``(name, tensor)`` for every tensor (floating or not) in a tensor, a dataclass of them or a mapping."""
    fields: Mapping[str, Any]
    if isinstance(value, torch.Tensor):
        fields = {"output": value}
    elif isinstance(value, Mapping):
        fields = value
    elif hasattr(value, "__dataclass_fields__"):
        fields = {name: getattr(value, name) for name in value.__dataclass_fields__}
    else:
        fields = {}
    for name, item in fields.items():
        if isinstance(item, torch.Tensor):
            yield name, item


def assert_dtype(value: Any, dtype: torch.dtype, what: str) -> None:
    """Every floating tensor of ``value`` has ``dtype``."""
    for name, tensor in floating_tensors(value):
        assert tensor.dtype == dtype, f"{what}: {name} is {tensor.dtype}, expected {dtype} (the input's dtype)"


def assert_device(value: Any, device: torch.device, what: str) -> None:
    """Every tensor of ``value`` lives on ``device``."""
    for name, tensor in all_tensors(value):
        assert tensor.device.type == device.type, f"{what}: {name} is on {tensor.device}, expected {device}"


def floating_dtype_of(module: Any) -> torch.dtype | None:
    """The dtype of a module's first floating parameter or buffer (``None`` without any)."""
    if not isinstance(module, torch.nn.Module):
        return None
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype
    return None


def has_tensors(module: Any) -> bool:
    return isinstance(module, torch.nn.Module) and any(True for _ in [*module.parameters(), *module.buffers()])


def other_device() -> torch.device:
    """Where device checks run: the first accelerator, else torch's ``meta`` device.

    On the meta device tensors have shapes and dtypes but no data, so mixing a
    meta tensor with a CPU tensor of more than one element fails just as
    mixing a CUDA and a CPU tensor does: a CPU-only machine still catches a
    tensor created without ``device=``. What cannot run without data (an
    ``.item()``, indexing a table with a tensor moved to the CPU) skips.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("meta")


class DeviceCheck:
    """Runs calls on :func:`other_device` and checks where their outputs live.

    ``check(what, call)`` returns ``call()``'s result after asserting that its
    tensors are on the device. On the meta device a call that fails for
    another reason than a device mismatch (it needs data: an ``.item()``, a
    table on the CPU indexed by a moved tensor) is noted and gives ``None``;
    ``finish()`` then skips, naming what could not be checked, after every
    other call was checked. A device mismatch, or any error on a real
    device, fails.
    """

    def __init__(self) -> None:
        self.device = other_device()
        self.unchecked: list[str] = []
        self.checked: list[str] = []

    def check(self, what: str, call: Callable[[], T]) -> T | None:
        try:
            out = call()
        except Exception as exc:
            message = str(exc)
            if self.device.type == "meta" and not any(words in message for words in _DEVICE_MISMATCH):
                first = message.splitlines()[0][:160] if message else ""
                self.unchecked.append(f"{what} ({type(exc).__name__}: {first})")
                return None
            raise
        assert_device(out, self.device, what)
        self.checked.append(what)
        return out

    def finish(self) -> None:
        if self.unchecked:
            pytest.skip(
                f"on torch's meta device (no GPU here) these cannot run without data: {'; '.join(self.unchecked)}; "
                f"checked: {', '.join(self.checked) or 'nothing'}. The full check runs where a GPU is."
            )


def snapshot(value: Any) -> Any:
    """A deep copy of the tensors in ``value`` (tensors, dataclasses of tensors, lists)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (list, tuple)):
        return type(value)(snapshot(v) for v in value)
    if hasattr(value, "__dataclass_fields__"):
        return {name: snapshot(getattr(value, name)) for name in value.__dataclass_fields__}
    return value


def assert_unchanged(before: Any, after: Any, what: str) -> None:
    """``after`` (the live inputs) still equal their ``snapshot`` ``before``."""
    if isinstance(after, torch.Tensor):
        assert torch.equal(before, after.detach()), f"{what} modified its input in place"
    elif isinstance(after, (list, tuple)):
        for b, a in zip(before, after):
            assert_unchanged(b, a, what)
    elif hasattr(after, "__dataclass_fields__"):
        for name in after.__dataclass_fields__:
            value = getattr(after, name)
            if isinstance(value, torch.Tensor):
                assert torch.equal(before[name], value.detach()), f"{what} modified its input's {name} in place"
