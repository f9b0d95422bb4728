"""build/sources.lock parsing: the real lock loads; malformed locks are refused with the
file, entry and field named."""

from pathlib import Path

import pytest

from conftest import ROOT
from pyisolate_build import lock
from pyisolate_build.errors import LockError

GOOD = """
schema = 1
[[source]]
name = "thing"
version = "1.0"
filename = "thing-1.0.tar.gz"
size = 3
sha256 = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
urls = ["https://example.invalid/thing-1.0.tar.gz"]
license = "MIT"
why = "test"
identity = "test"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.lock"
    path.write_text(text)
    return path


def test_project_lock_pins_cpython():
    sources = lock.load(ROOT / "build" / "sources.lock")
    cpython = sources["cpython"]
    assert cpython.version == "3.14.7"
    assert cpython.size == 24053924
    assert cpython.sha256 == "3b48dac8fb59f62eaa67ac83c1eb12bda1b7a08406dd286e252c11a66be27f81"
    assert cpython.urls[0].startswith("https://www.python.org/")  # canonical first
    assert any("deb.debian.org" in u for u in cpython.urls[1:])  # reachable mirror


def test_good_lock(tmp_path):
    assert lock.load(write(tmp_path, GOOD))["thing"].size == 3


@pytest.mark.parametrize(
    ("mutation", "message"),
    [
        (lambda s: s.replace("schema = 1", "schema = 2"), "schema"),
        (lambda s: s + "\n[[source\n", "syntax"),
        (lambda s: s.replace('sha256 = "ba78', 'sha = "ba78'), "missing required field 'sha256'"),
        (lambda s: s.replace("size = 3", 'size = "3"'), "field 'size' must be int"),
        (lambda s: s.replace("size = 3", "size = true"), "field 'size' must be int"),
        (lambda s: s.replace("size = 3", "size = 0"), "'size' must be positive"),
        (lambda s: s.replace('"ba7816bf', '"BA7816BF'), "64 lower-case hex"),
        (lambda s: s.replace("ba7816bf8f01", "ba7816bf8f0"), "64 lower-case hex"),
        (lambda s: s.replace('urls = ["https', 'urls = ["ftp'), "http(s)/file URLs"),
        (lambda s: s.replace('urls = ["https://example.invalid/thing-1.0.tar.gz"]', "urls = []"), "urls"),
        (lambda s: s.replace('filename = "thing-1.0.tar.gz"', 'filename = "../x"'), "bare name"),
        (lambda s: s + GOOD.split("schema = 1", 1)[1], "duplicate name 'thing'"),
        (lambda s: s.replace('why = "test"', 'why = "test"\ncolour = "red"'), "unknown fields"),
        (lambda s: "schema = 1\n", "at least one [[source]]"),
    ],
)
def test_bad_locks_name_the_problem(tmp_path, mutation, message):
    path = write(tmp_path, mutation(GOOD))
    with pytest.raises(LockError) as info:
        lock.load(path)
    assert str(path) in str(info.value)
    assert message in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(LockError, match="cannot read"):
        lock.load(tmp_path / "nope.lock")
