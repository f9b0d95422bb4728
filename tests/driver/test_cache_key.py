"""The build's cache key: stable when nothing changes, different when any input changes."""

import shutil

import pytest

from conftest import ROOT
from pyisolate_build import cache, cpython

PACKAGES = {"libssl-dev": "3.0.19-1~deb12u2"}


@pytest.fixture
def repo(tmp_path):
    for rel in (
        "build/sources.lock",
        "build/profiles.toml",
        "build/system-packages.txt",
        "build/toolchain-probe.c",
        "cpython-patches/series",
        "cpython-patches/cfi-ignorelist.txt",
    ):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, tmp_path / rel)
    for patch in (ROOT / "cpython-patches").glob("*.patch"):
        shutil.copy(patch, tmp_path / "cpython-patches" / patch.name)
    return cpython.Repo(tmp_path)


def key(repo, flavour="hardened", packages=PACKAGES):
    return cpython.plan(repo, flavour, packages).key


def edit(path, old, new):
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def add_patch(repo, text):
    (repo.patches / "x-y.patch").write_text(text)
    edit(repo.patches / "series", "\n", "\nx-y.patch\n")


def test_key_is_stable(repo):
    assert key(repo) == key(repo)
    assert len(key(repo)) == 64


def test_flavours_have_different_keys(repo):
    assert key(repo, "hardened") != key(repo, "plain")


@pytest.mark.parametrize(
    "change",
    [
        lambda r: edit(r.lock, 'version = "3.14.7"', 'version = "3.14.8"'),
        lambda r: edit(r.lock, "3b48dac8", "4b48dac8"),
        lambda r: edit(r.profiles, '"-fstack-clash-protection",', ""),
        lambda r: edit(r.profiles, 'opt = "-DNDEBUG -O2 -Wall"', 'opt = "-DNDEBUG -O3 -Wall"'),
        lambda r: r.probe.write_text(r.probe.read_text() + "\n/* changed */\n"),
        lambda r: add_patch(r, "--- a/x\n+++ b/x\n"),
    ],
    ids=["version", "sha256", "cflags", "opt", "probe", "patch-added"],
)
def test_any_input_changes_the_key(repo, change):
    before = key(repo)
    change(repo)
    assert key(repo) != before


def test_patch_content_changes_the_key(repo):
    add_patch(repo, "--- a/x\n+++ b/x\n")
    before = key(repo)
    (repo.patches / "x-y.patch").write_text("--- a/x\n+++ b/x\n@@ changed @@\n")
    assert key(repo) != before


def test_system_package_versions_change_the_key(repo):
    assert key(repo, packages={"libssl-dev": "3.0.20"}) != key(repo)


def test_toolchain_changes_the_key(repo, monkeypatch):
    before = key(repo)
    real = cpython.system.toolchain_identity
    monkeypatch.setattr(cpython.system, "toolchain_identity", lambda cc, *rest: real(cc, *rest) | {"cc": "gcc 99"})
    assert key(repo) != before


def test_canonical_json_key():
    assert cache.key({"b": 1, "a": [1, 2]}) == cache.key({"a": [1, 2], "b": 1})
    assert cache.key({"a": 1}) != cache.key({"a": "1"})


# --- the cfi flavour: build-only flags, placeholders, files named by the flags -------------


@pytest.fixture
def clang(repo):
    from conftest import need

    need(shutil.which("clang-19") is not None, "clang-19 is not installed (build/system-packages.txt)")
    return repo


def test_cfi_ignore_list_content_changes_the_key(clang):
    before = key(clang, "cfi")
    ignorelist = clang.patches / "cfi-ignorelist.txt"
    ignorelist.write_text(ignorelist.read_text() + "src:*/Modules/other.c\n")
    assert key(clang, "cfi") != before
    assert "cpython-patches/cfi-ignorelist.txt" in cpython.plan(clang, "cfi", PACKAGES).inputs()["flavour_files"]


def test_cfi_build_ldflags_and_env_change_the_key(clang):
    before = key(clang, "cfi")
    edit(clang.profiles, '"-Wl,-mllvm,-tail-dup-pred-size=5000",', "")
    after_flags = key(clang, "cfi")
    edit(clang.profiles, 'RANLIB = "llvm-ranlib-19"', 'RANLIB = "ranlib"')
    assert len({before, after_flags, key(clang, "cfi")}) == 3


def test_cache_and_checkout_location_do_not_change_the_key(clang, tmp_path, monkeypatch):
    before = key(clang, "cfi")
    monkeypatch.setenv("PYISOLATE_CACHE", str(tmp_path / "elsewhere"))
    moved = tmp_path / "moved"
    shutil.copytree(clang.root, moved)
    assert key(cpython.Repo(moved), "cfi") == before


def test_build_env_fills_in_placeholders_and_keeps_build_flags_apart(clang, tmp_path, monkeypatch):
    monkeypatch.setenv("PYISOLATE_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("CFLAGS_NODIST", "-O0")  # the caller's flags never reach the build
    flavour = cpython.profiles.load(clang.profiles)["cfi"]
    tree = tmp_path / "build-tree"
    env = cpython.build_env(flavour, tree)
    # Paths the same for every checkout and cache (sysconfig and clang's compile records
    # keep them): the fixed build root and the build tree's copy of the ignore list.
    assert f"-Wl,--thinlto-cache-dir={cpython.BUILD_ROOT}/thinlto" in env["LDFLAGS_NODIST"].split()
    assert env["CFLAGS_NODIST"] == f"-fsanitize-ignorelist={tree}/cpython-patches/cfi-ignorelist.txt"
    for where in (f"{tmp_path / 'c'}/", f"{clang.root}/cpython-patches"):
        assert where not in env["CFLAGS_NODIST"] + env["LDFLAGS_NODIST"]
    assert "{" not in env["CFLAGS"] + env["LDFLAGS"] and "thinlto" not in env["LDFLAGS"]
    assert (env["CC"], env["AR"], env["RANLIB"]) == ("clang-19", "llvm-ar-19", "llvm-ranlib-19")


def test_missing_file_named_by_the_flags_stops_the_plan(clang):
    (clang.patches / "cfi-ignorelist.txt").unlink()
    with pytest.raises(cpython.BuildError, match=r"cfi-ignorelist\.txt"):
        key(clang, "cfi")
