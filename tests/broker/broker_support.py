"""Fixtures of the broker tests (imported by each test module): the C core in this (host)
built interpreter's `_pyisolate` extension through tests/broker/peer.py."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from conftest import need

HERE = Path(__file__).resolve().parent
VECTORS = HERE.parent / "vectors"


@pytest.fixture(scope="session")
def broker_lib(dist: Path) -> Path:
    libs = sorted(dist.glob("lib/python3.14t/site-packages/pyisolate/libpyisolate_broker.so"))
    need(bool(libs), f"{dist} has no libpyisolate_broker.so; run `./dev dist`")
    return libs[0]


@pytest.fixture(scope="session")
def c(broker_lib: Path):
    """The broker's C core (libpyisolate_broker.so) in this process."""
    os.environ["PYISOLATE_BROKER_LIB"] = str(broker_lib)
    from pyisolate import _broker_ctypes

    return _broker_ctypes


@pytest.fixture(scope="session")
def peer(python: Path, cell_python: str):
    """Run tests/broker/peer.py in the built interpreter with a config; its JSON result."""

    def run(config: dict, pass_fds: tuple[int, ...] = ()) -> dict | list:
        proc = subprocess.run(
            [str(python), "-I", str(HERE / "peer.py"), json.dumps(config)],
            pass_fds=pass_fds,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    return run
