"""Damaged weights are refused, never used: a weights file records a checksum of
its tensors when written and is checked against it when read, and NaN or
infinite values are refused at load, naming the file and the tensor."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from modiff.cli import main
from modiff.errors import WeightsError
from modiff.files import CHECKSUM_KEY, atomic_save_tensors, read_tensors
from modiff.runs import RunDir
from modiff.testing import plugin_registry
from modiff.testing.toys import TOY_SETTINGS, ToyPlugin
from modiff.toml_io import dumps


def tensors() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"conv_in.weight": torch.randn(8, 4, 3, 3, generator=g), "conv_in.bias": torch.randn(8, generator=g),
            "steps": torch.arange(4)}


def flip_data_bytes(path: Path, count: int = 64) -> None:
    """Invert ``count`` bytes in the middle of the file's tensor data (its header stays readable)."""
    raw = bytearray(path.read_bytes())
    (header,) = struct.unpack("<Q", raw[:8])
    start = 8 + header + (len(raw) - 8 - header) // 2 - count // 2
    raw[start:start + count] = bytes(b ^ 0xFF for b in raw[start:start + count])
    path.write_bytes(bytes(raw))


def metadata_of(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as fh:
        return dict(fh.metadata() or {})


def test_a_weights_file_records_a_checksum_and_reads_back(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    atomic_save_tensors(path, tensors(), {"role": "encoder"})
    assert metadata_of(path)["role"] == "encoder" and metadata_of(path)[CHECKSUM_KEY].startswith("crc32:")
    got, metadata = read_tensors(path)
    assert all(torch.equal(got[k], v) for k, v in tensors().items()) and metadata["role"] == "encoder"


def test_flipped_bytes_in_a_tensor_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    atomic_save_tensors(path, tensors())
    flip_data_bytes(path)
    with pytest.raises(WeightsError, match=r"w\.safetensors is damaged: .* checksum"):
        read_tensors(path)


def test_non_finite_values_are_refused_naming_the_file_and_the_tensor(tmp_path: Path) -> None:
    path = tmp_path / "w.safetensors"
    bad = tensors()
    bad["conv_in.weight"][0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])
    atomic_save_tensors(path, bad)  # its checksum is right: the values themselves are refused
    with pytest.raises(WeightsError, match=r"w\.safetensors: tensor 'conv_in.weight' holds 2 NaN or infinite"):
        read_tensors(path)


def test_files_written_before_checksums_still_load(tmp_path: Path) -> None:
    path = tmp_path / "old.safetensors"
    save_file(tensors(), str(path), metadata={"format": "modiff/1"})
    got, _ = read_tensors(path)
    assert torch.equal(got["conv_in.weight"], tensors()["conv_in.weight"])


# -- through the command line, on a toy run ---------------------------------------------------------


@pytest.fixture
def run(tmp_path: Path, use_registry) -> Path:
    use_registry(plugin_registry(ToyPlugin(), entry_points=True))
    data = json.loads(json.dumps(TOY_SETTINGS))
    data["run"]["runs_dir"] = str(tmp_path / "runs")
    data["encoder"]["trainable"] = True
    path = tmp_path / "toy.toml"
    path.write_text(dumps(data))
    assert main(["train", str(path), "--quiet"]) == 0
    return tmp_path / "runs" / "toy"


def rewrite(path: Path, change) -> None:
    """Rewrite a weights file (a new inode: checkpoints share files by hard links) with ``change`` applied."""
    found, metadata = read_tensors(path, verify=False)
    change(found)
    path.unlink()
    atomic_save_tensors(path, found, {k: v for k, v in metadata.items() if k != CHECKSUM_KEY})


def test_generate_and_resume_refuse_nan_in_the_encoder_naming_file_and_tensor(run: Path, tmp_path: Path,
                                                                               capsys) -> None:
    # back to the denoiser's step-2 checkpoint, so that a resume has steps to train
    previous = RunDir(run).checkpoint().state["previous"]
    (run / "LATEST").write_text(previous + "\n")
    weights = RunDir(run).weights("encoder")
    assert weights.parent.parent.name == previous
    rewrite(weights, lambda t: t["mix.weight"].view(-1)[0].fill_(float("nan")))
    capsys.readouterr()
    assert main(["generate", str(run), "a red square", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert str(weights) in err and "'mix.weight' holds 1 NaN" in err and "Traceback" not in err
    assert not (tmp_path / "g.png").exists()
    assert main(["train", str(run), "--resume", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "encoder.safetensors" in err and "'mix.weight'" in err and "learning rate" not in err


def test_generate_refuses_a_denoiser_with_64_bytes_flipped(run: Path, tmp_path: Path, capsys) -> None:
    weights = RunDir(run).weights("denoiser")
    flip_data_bytes(weights)
    capsys.readouterr()
    assert main(["generate", str(run), "a red square", "--out", str(tmp_path / "g.png")]) == 2
    err = capsys.readouterr().err
    assert f"{weights} is damaged" in err and "checksum" in err
