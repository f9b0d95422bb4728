"""build/profiles.toml: the schema the driver accepts, and what it refuses (naming the
flavour and the key)."""

import pytest

from conftest import ROOT
from pyisolate_build import profiles
from pyisolate_build.errors import LockError

MINIMAL = """
[flavour.x]
description = "x"
cc = "gcc"
opt = "-O2"
"""


def load(tmp_path, text):
    path = tmp_path / "profiles.toml"
    path.write_text(text)
    return profiles.load(path)


def test_shipped_profiles_load():
    flavours = profiles.load(ROOT / "build" / "profiles.toml")
    assert {"hardened", "plain", "cfi"} <= set(flavours)
    cfi = flavours["cfi"]
    assert cfi.audit.cfi == "require" and flavours["hardened"].audit.cfi == "report"
    assert dict(cfi.env) == {
        "AR": "llvm-ar-19",
        "RANLIB": "llvm-ranlib-19",
        "LLVM_PROFDATA": "/usr/bin/llvm-profdata-19",
    }
    assert cfi.repo_files() == ["cpython-patches/cfi-ignorelist.txt"]


def test_flavours_without_the_new_keys_keep_their_key_shape(tmp_path):
    (flavour,) = load(tmp_path, MINIMAL).values()
    assert set(flavour.key()) == {"cc", "opt", "cflags", "ldflags", "exe_ldflags", "configure"}
    assert flavour.audit.cfi == "report"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('env = { CC = "clang" }', "CC is set by the driver"),
        ('env = { ar = "x" }', "not an environment variable name"),
        ("env = { AR = 1 }", "'env' must be a table of strings"),
        ('cflags = ["-I{build}"]', "placeholders are only for build_cflags/build_ldflags"),
        # A per-machine path would land in sysconfig and the compile records.
        ('build_ldflags = ["-Wl,--thinlto-cache-dir={cache}/t"]', "unknown placeholder"),
        ('build_ldflags = ["-L{home}"]', "unknown placeholder"),
        ('ldflgs = ["-s"]', "unknown keys ['ldflgs']"),
        ('[flavour.x.audit]\ncfi = "yes"', "'cfi' must be one of"),
    ],
)
def test_bad_profiles_are_refused(tmp_path, extra, message):
    with pytest.raises(LockError, match=r"flavour\.x") as info:
        load(tmp_path, MINIMAL + extra + "\n")
    assert message in str(info.value)


def test_placeholders_are_filled_in(tmp_path):
    (flavour,) = load(
        tmp_path, MINIMAL + 'build_cflags = ["-fsanitize-ignorelist={repo}/a/b.txt", "-DX={build}/y"]\n'
    ).values()
    assert flavour.expand(flavour.build_cflags, tmp_path / "c", tmp_path / "r") == [
        f"-fsanitize-ignorelist={tmp_path / 'r'}/a/b.txt",
        f"-DX={tmp_path / 'c'}/y",
    ]
    assert flavour.repo_files() == ["a/b.txt"]
