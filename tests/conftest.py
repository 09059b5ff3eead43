"""Fixtures for the cross-package tests."""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from modiff.plugins import reset_registry

#: ``unshare`` flag: a network namespace of the calling process's own (Linux).
_CLONE_NEWNET = 0x40000000


@pytest.fixture(scope="module")
def loopback_only() -> Iterator[None]:
    """Keep every server the tests of one module start reachable from this
    machine only: for the module's tests the process moves into a network
    namespace of its own whose one interface is the loopback, and every process
    it starts meanwhile inherits it. Ray's GCS and raylets bind every interface
    and have no setting that confines them, so a test module of them asks for this.

    When the module's tests are done the process goes back to the namespace it
    came from: a later module in the same worker (the Slurm fixture's daemons,
    which bind 127.0.0.1 of the host's namespace) must not find itself in an
    empty one. Servers still running in the old namespace stay there, out of
    reach. Skips, saying why, where impossible: it needs root on Linux and
    iproute2's ``ip`` (CI has both).
    """
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("Ray binds every interface: its tests run in a network namespace of their "
                    "own, which needs root on Linux and iproute2's ip")
    libc = ctypes.CDLL(None, use_errno=True)
    host = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            pytest.skip(f"cannot make a network namespace here: {os.strerror(ctypes.get_errno())}")
        try:
            subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
            yield
        finally:
            if libc.setns(host, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), f"cannot go back to the host's network namespace: "
                                                  f"{os.strerror(ctypes.get_errno())}")
    finally:
        os.close(host)


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Install a fake distribution on ``sys.path``: ``make(dist, module, source,
    entry_point=module)`` writes ``module.py`` with ``source`` and a dist-info
    whose ``modiff`` entry point ``entry_point`` names that module, exactly as
    ``pip install`` would."""
    monkeypatch.syspath_prepend(str(tmp_path))
    reset_registry()

    def make(dist: str, module: str, source: str, entry_point: str | None = None) -> None:
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(source))
        info = tmp_path / f"{dist.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        (info / "entry_points.txt").write_text(f"[modiff]\n{entry_point or module} = {module}\n")
        (info / "top_level.txt").write_text(f"{module}\n")
        import importlib

        importlib.invalidate_caches()

    yield make
    for name in list(sys.modules):
        if name.startswith("fake_"):
            del sys.modules[name]
    reset_registry()


TOY_PLUGIN_MODULE = """
from modiff.testing.toys import ToyPlugin as _ToyPlugin

_plugin = _ToyPlugin()
register_datasets = _plugin.register_datasets
register_encoders = _plugin.register_encoders
register_text_embedders = _plugin.register_text_embedders
register_conditioners = _plugin.register_conditioners
register_denoisers = _plugin.register_denoisers
register_schedulers = _plugin.register_schedulers
register_evaluators = _plugin.register_evaluators
"""


@pytest.fixture
def toy_subprocess_env(fake_distribution, tmp_path: Path) -> dict[str, str]:
    """Environment for subprocesses (``modiff``, ``torchrun``) in which the
    toy components are an installed plugin distribution, ``fake-toys``."""
    import os

    fake_distribution("fake-toys", "fake_toys", TOY_PLUGIN_MODULE)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["MODIFF_LOAD_PLUGINS"] = "fake_toys"
    env.pop("WORLD_SIZE", None)
    return env


@pytest.fixture(scope="session")
def benchmark_script() -> Callable[[str], ModuleType]:
    """``load("name")``: ``benchmarks/name.py`` imported as module ``name``, for
    tests of a benchmark script's own logic (the scripts are not a package)."""
    root = Path(__file__).resolve().parents[1] / "benchmarks"

    def load(name: str) -> ModuleType:
        spec = importlib.util.spec_from_file_location(name, root / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up by name
        spec.loader.exec_module(module)
        return module

    return load
