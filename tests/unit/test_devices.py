"""Device names from settings and the command line: what this machine has, or a clear error."""

from __future__ import annotations

import pytest
import torch

import modiff
from modiff.devices import resolve_device
from modiff.plugins import registry_from
from modiff.settings import load_settings, resolve
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin


@pytest.mark.parametrize("name", ["foo", "", "cuda:x", "cuda:-1", "xpu", "gpu"])
def test_a_name_that_is_no_device_is_an_error_naming_it_and_the_choices(name: str) -> None:
    with pytest.raises(modiff.ModiffError) as info:
        resolve_device(name, source="--device")
    message = str(info.value)
    assert message.startswith(f"--device = {name!r} is not a device") and "auto" in message and "cpu" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_an_error_saying_so(name: str) -> None:
    with pytest.raises(modiff.ModiffError, match=rf"\[run\] device = {name!r}, but .*CUDA.*use auto or cpu"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: checks a device index beyond the machine's")
def test_a_cuda_index_beyond_the_machine_is_an_error_naming_the_count() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(modiff.ModiffError, match=f"has {count} CUDA device"):
        resolve_device(f"cuda:{count}")


def test_valid_names() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(" CPU ") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(torch.device("meta")) == torch.device("meta")


def test_the_device_argument_of_build_is_checked_like_the_setting() -> None:
    """``modiff generate RUN --device foo`` reaches ``build(device="foo")``:
    a ModiffError (exit status 2), not torch's RuntimeError."""
    from modiff.assembly import build

    resolved = resolve(load_settings(base=TOY_SETTINGS, environ={}), registry_from(ToyPlugin()))
    with pytest.raises(modiff.ModiffError, match="device = 'foo' is not a device"):
        build(resolved, device="foo")
    assert build(resolved, device="cpu").device == torch.device("cpu")
