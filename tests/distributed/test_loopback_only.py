"""The ``loopback_only`` fixture gives the process its network namespace back.

Ray's test modules move the worker into a loopback-only namespace; a later
module in the same xdist worker (the one-node Slurm cluster, whose daemons bind
127.0.0.1 of the host) must find the host's namespace again, whatever order
xdist deals the modules out in. Checked in a pytest of its own, two modules in
a fixed order, because the fixture changes the namespace of the process it runs in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CONFTEST = Path(__file__).resolve().parents[1] / "conftest.py"


def test_a_later_module_is_back_in_the_hosts_namespace(tmp_path: Path) -> None:
    if not sys.platform.startswith("linux") or os.geteuid() != 0:
        pytest.skip("the fixture needs root on Linux")
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""
        import importlib.util, os
        spec = importlib.util.spec_from_file_location("modiff_tests_conftest", {str(CONFTEST)!r})
        real = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(real)
        loopback_only = real.loopback_only
        HOST = os.stat("/proc/thread-self/ns/net").st_ino
    """))
    (tmp_path / "test_1_ray_like.py").write_text(textwrap.dedent("""
        import os, pytest, socket
        from conftest import HOST
        pytestmark = pytest.mark.usefixtures("loopback_only")
        def test_inside():
            assert os.stat("/proc/thread-self/ns/net").st_ino != HOST
            with socket.socket() as s:  # the loopback is up
                s.bind(("127.0.0.1", 0)); s.listen()
    """))
    (tmp_path / "test_2_slurm_like.py").write_text(textwrap.dedent("""
        import os
        from conftest import HOST
        def test_back_home():
            assert os.stat("/proc/thread-self/ns/net").st_ino == HOST
    """))
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", "-p", "no:xdist", "-p", "no:cacheprovider",
         "--rootdir", str(tmp_path), "-c", os.devnull, str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    if "cannot make a network namespace" in done.stdout:
        pytest.skip("no network namespace can be made here")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 passed" in done.stdout, done.stdout[-2000:]
