"""Starting a UNet from another run's weights: every tensor whose name and shape match.

The use: a segmentation UNet that starts from a text-to-image denoiser's
trained backbone. The two share their residual blocks, attention and
resolution changes, but not the parts that depend on the task (the time
embedding and its projections exist only in the denoising head, the output
layer has classes instead of channels, cross-attention exists only with a
text context, the first layer may see a different number of channels). Those
are skipped and keep their fresh initialisation; what was skipped is reported
so that a mismatch (another UNet shape, a file from another component) is
visible rather than silent.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger("modiff_unet")


@dataclass
class InitReport:
    """What :func:`init_from` did: tensors loaded, and those skipped with why."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # in the UNet, not in the file
    mismatched: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(default_factory=dict)  # file, here
    unused: list[str] = field(default_factory=list)  # in the file, not in the UNet
    loaded_parameters: int = 0
    total_parameters: int = 0

    def summary(self) -> str:
        """One paragraph for the log: counts, then the skipped names grouped by their first parts."""
        loaded = f"{self.loaded_parameters:,} of {self.total_parameters:,} values"
        parts = [f"init_from {self.path}: loaded {len(self.loaded)} tensors ({loaded})"]
        if self.missing:
            parts.append(f"kept fresh, not in the file: {_grouped(self.missing)}")
        if self.mismatched:
            shapes = ", ".join(f"{k} {list(a)} in the file vs {list(b)} here" for k, (a, b) in self.mismatched.items())
            parts.append(f"kept fresh, other shape: {shapes}")
        if self.unused:
            parts.append(f"in the file but not in this UNet: {_grouped(self.unused)}")
        return "; ".join(parts)


def _grouped(names: list[str]) -> str:
    """Names grouped by the module they belong to, wherever it sits:
    ``down_blocks.0.resnets.1.time_emb_proj.weight`` and its kin as ``*.resnets.time_emb_proj (n)``."""
    groups: dict[str, int] = {}
    for name in names:
        parts = [p for p in name.split(".")[:-1] if not p.isdigit()]  # the module path without indices
        key = ".".join(parts[-2:]) or name
        if len(parts) > 2:
            key = "*." + key
        groups[key] = groups.get(key, 0) + 1
    return ", ".join(f"{k} ({n})" if n > 1 else k for k, n in groups.items())


def weights_file(source: str | Path) -> Path:
    """The weights ``init_from`` names: a ``.safetensors`` file as it is, or a
    run folder's denoiser in its committed checkpoint."""
    path = Path(source)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise ValueError(
                f"init_from = {str(source)!r} does not exist (relative paths are read from the current directory)"
            )
        return path
    if not path.is_dir():
        raise ValueError(
            f"init_from = {str(source)!r} is neither a .safetensors file nor a run folder (relative paths are read "
            "from the current directory); train that run first"
        )
    from modiff import RunDir  # the core's reader of committed checkpoints

    try:
        return RunDir(path).weights("denoiser")
    except Exception as exc:  # noqa: BLE001 (any unreadable run is the same mistake for the user)
        raise ValueError(f"init_from = {str(source)!r}: no trained denoiser in that run folder ({exc})") from None


def init_from(module: nn.Module, source: str | Path) -> InitReport:
    """Copy into ``module`` every tensor of ``source`` (a ``.safetensors`` file or
    a run folder, see :func:`weights_file`) whose name and shape match its own;
    return what was loaded and skipped (also logged).

    A missing file, or one that shares no tensor with the module, is a
    ``ValueError`` naming it: nothing loaded means the setting is wrong.
    """
    from safetensors import safe_open

    path = weights_file(source)
    own = module.state_dict()
    report = InitReport(str(path), total_parameters=sum(v.numel() for v in own.values()))
    updated: dict[str, torch.Tensor] = {}
    with safe_open(str(path), framework="pt") as f:
        names = set(f.keys())
        for name, tensor in own.items():
            if name not in names:
                report.missing.append(name)
                continue
            shape = tuple(f.get_slice(name).get_shape())
            if shape != tuple(tensor.shape):
                report.mismatched[name] = (shape, tuple(tensor.shape))
                continue
            updated[name] = f.get_tensor(name).to(dtype=tensor.dtype)
            report.loaded.append(name)
            report.loaded_parameters += tensor.numel()
        report.unused = sorted(names - set(own))
    if not updated:
        raise ValueError(
            f"init_from = {str(source)!r} shares no tensor (name and shape) with this UNet: {report.summary()}"
        )
    module.load_state_dict(updated, strict=False)
    log.warning(report.summary())
    return report
