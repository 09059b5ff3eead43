"""Device handling that only a GPU run would feel, checked on a CPU.

* Noise drawn on the CPU goes to a CUDA device from pinned memory without
  blocking (``modiff.noise.to_device``): a plain copy from pageable memory
  makes the host wait for the GPU at every sampler step that draws noise.
* ``Conditioning.where`` (condition dropout, at every training step) builds
  its row index on the condition's device: with CPU indices and a CUDA
  condition ``torch.where`` refuses to mix devices. The ``meta`` device
  stands in for the GPU here: it mixes with the CPU no better.
* ``modiff.testing.devices.host_syncs`` sees each kind of host read.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

import modiff
from modiff.noise import to_device
from modiff.protocols import Conditioning
from modiff.testing.devices import host_syncs


class _Copies:
    """Records ``pin_memory`` and ``.to`` calls; a CUDA target returns the tensor unmoved."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch):
        self.pinned = 0
        self.moves: list[dict[str, Any]] = []
        real_to = torch.Tensor.to

        def pin_memory(t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            self.pinned += 1
            return t.clone()

        def to(t: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            target = args[0] if args else kwargs.get("device")
            if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
                self.moves.append({"device": torch.device(target), "non_blocking": kwargs.get("non_blocking", False)})
                return t
            return real_to(t, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
        monkeypatch.setattr(torch.Tensor, "to", to)


def test_cpu_to_cuda_copies_are_pinned_and_non_blocking(monkeypatch: pytest.MonkeyPatch) -> None:
    copies = _Copies(monkeypatch)
    x = torch.randn(2, 3)
    assert torch.equal(to_device(x, "cuda"), x)
    assert copies.pinned == 1 and copies.moves == [{"device": torch.device("cuda"), "non_blocking": True}]


def test_per_sample_noise_for_cuda_goes_through_pinned_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    expected = modiff.randn((3, 4, 2, 2), modiff.generators([5, 6, 7]))
    copies = _Copies(monkeypatch)
    noise = modiff.randn((3, 4, 2, 2), modiff.generators([5, 6, 7]), device="cuda:0")
    single = modiff.randn((3, 4), torch.Generator().manual_seed(0), device="cuda")
    assert torch.equal(noise, expected), "the numbers are the CPU generators' whatever the device"
    assert single.shape == (3, 4)
    assert copies.pinned == 2 and all(m["non_blocking"] for m in copies.moves) and len(copies.moves) == 2


def test_cpu_targets_are_plain_copies(monkeypatch: pytest.MonkeyPatch) -> None:
    copies = _Copies(monkeypatch)
    x = torch.randn(2)
    assert to_device(x, "cpu") is x
    assert to_device(x, torch.device("meta")).device.type == "meta"
    assert copies.pinned == 0 and not copies.moves


def _conditioning(device: str, length: int) -> Conditioning:
    context = torch.arange(2 * length * 3, dtype=torch.float32).view(2, length, 3).to(device)
    return Conditioning(context=context, context_mask=torch.ones(2, length, dtype=torch.bool).to(device))


def test_where_builds_its_index_on_the_condition_device() -> None:
    cond, null = _conditioning("meta", 4), _conditioning("meta", 1)
    out = cond.where(torch.tensor([True, False], device="meta"), null)
    assert out.context.device.type == "meta" and out.context.shape == (2, 4, 3)


def test_where_takes_rows_from_the_other_where_asked() -> None:
    cond = _conditioning("cpu", 4)
    null = Conditioning(context=-torch.ones(2, 1, 3), context_mask=torch.ones(2, 1, dtype=torch.bool))
    out = cond.where(torch.tensor([True, False]), null)
    assert torch.equal(out.context[1], cond.context[1])
    assert torch.equal(out.context[0, 0], -torch.ones(3)) and not out.context_mask[0, 1:].any()
    assert cond.where(torch.tensor([False, False]), null) is cond


def test_host_syncs_sees_every_kind_of_read() -> None:
    x = torch.randn(4)
    with host_syncs() as syncs:
        float(x.sum())
        x[x > 0]
        torch.zeros(2)
        x.tolist()
        torch.zeros(2, device=x.device)
    kinds = [s.split(" at ")[0] for s in syncs]
    assert kinds == [
        "a tensor read as a Python number (float(), int(), bool(), .item(), .tolist())",
        "a boolean-mask index (output size depends on values)",
        "torch.zeros without device=",
        "Tensor.tolist (a copy to the host)",
    ]
    assert all(s.endswith(f"{__file__}:{s.rsplit(':', 1)[1]}") for s in syncs), "each names the line that asked"
