"""The native step's cache key: stable when nothing changes, different when any input does
(native/'s files, requirements/native.txt, the CPython artefact it builds against)."""

import shutil
from pathlib import Path

import pytest

from conftest import ROOT
from pyisolate_build import cpython, native

BASE = Path("/cache/dist/cpython-3.14.7-hardened-0123456789abcdef/prefix")


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(ROOT / "native", tmp_path / "native", ignore=shutil.ignore_patterns("build"))
    (tmp_path / "requirements").mkdir()
    shutil.copy(ROOT / "requirements" / "native.txt", tmp_path / "requirements" / "native.txt")
    return cpython.Repo(tmp_path)


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


def test_key_is_stable(repo):
    assert native.native_key(repo, BASE) == native.native_key(repo, BASE)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: append(r.root / "native" / "src" / "seccomp_filters.c", "\n/* changed */\n"),
        lambda r: append(r.root / "native" / "CMakeLists.txt", "\n# changed\n"),
        lambda r: (r.root / "native" / "src" / "extra.c").write_text("/* new */\n"),
        lambda r: append(r.root / "requirements" / "native.txt", "\n# changed\n"),
    ],
    ids=["source", "cmake", "new-file", "requirements"],
)
def test_each_input_changes_the_key(repo, change):
    before = native.native_key(repo, BASE)
    change(repo)
    assert native.native_key(repo, BASE) != before


def test_another_cpython_changes_the_key(repo):
    other = BASE.parent.parent / "cpython-3.14.7-cfi-fedcba9876543210" / "prefix"
    assert native.native_key(repo, other) != native.native_key(repo, BASE)


def test_a_build_directory_in_the_checkout_is_not_an_input(repo):
    before = native.native_key(repo, BASE)
    (repo.root / "native" / "build").mkdir()
    (repo.root / "native" / "build" / "CMakeCache.txt").write_text("left over\n")
    assert native.native_key(repo, BASE) == before
