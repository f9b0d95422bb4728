"""Shared test helpers: where the built distribution is, and the skip-or-fail rule.

A test that needs something this host lacks skips with a reason, and fails instead when
PYISOLATE_REQUIRE_ALL=1 (CI sets it), so nothing silently skips where it should run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build"))


def need(condition: bool, reason: str) -> None:
    """Skip (or fail under PYISOLATE_REQUIRE_ALL=1) unless `condition` holds."""
    if condition:
        return
    if os.environ.get("PYISOLATE_REQUIRE_ALL") == "1":
        pytest.fail(f"required but unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def dist() -> Path:
    """The built prefix (PYISOLATE_DIST, default out/dist/current)."""
    prefix = Path(os.environ.get("PYISOLATE_DIST", ROOT / "out" / "dist" / "current"))
    need((prefix / "bin" / "python3.14t").is_file(), f"no built distribution at {prefix}; run `./dev dist`")
    return prefix.resolve()


@pytest.fixture(scope="session")
def python(dist: Path) -> Path:
    return dist / "bin" / "python3.14t"


@pytest.fixture(scope="session")
def cfi_dist() -> Path:
    """The prefix of the `cfi` flavour (PYISOLATE_CFI_DIST, default out/dist/cfi)."""
    prefix = Path(os.environ.get("PYISOLATE_CFI_DIST", ROOT / "out" / "dist" / "cfi"))
    need(
        (prefix / "bin" / "python3.14t").is_file(),
        f"no cfi build at {prefix}; run `./dev dist -- --flavour cfi`",
    )
    return prefix.resolve()


def flavour_dist(flavour: str) -> Path:
    """The prefix of a built flavour (PYISOLATE_<FLAVOUR>_DIST, default out/dist/<flavour>)."""
    prefix = Path(os.environ.get(f"PYISOLATE_{flavour.upper()}_DIST", ROOT / "out" / "dist" / flavour))
    need(
        (prefix / "bin" / "python3.14t").is_file(),
        f"no {flavour} build at {prefix}; run `./dev dist -- --flavour {flavour}`",
    )
    return prefix.resolve()


@pytest.fixture(scope="session")
def hardened_dist() -> Path:
    """The gcc `hardened` flavour: what the cfi tests compare with."""
    return flavour_dist("hardened")


@pytest.fixture(scope="session")
def cell_python(python: Path) -> str:
    """Cells run on the built interpreter, with the runtime installed in it."""
    need(
        (python.parent.parent / "lib" / "python3.14t" / "site-packages" / "pyisolate" / "cell.py").is_file(),
        "the distribution has no pyisolate runtime; run `./dev dist`",
    )
    os.environ["PYISOLATE_PYTHON"] = str(python)
    return str(python)


@pytest.fixture
def supervisor(cell_python):
    from pyisolate import Supervisor

    with Supervisor(python=cell_python, pool=1) as sup:
        yield sup
