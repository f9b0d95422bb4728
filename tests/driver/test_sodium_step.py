"""The libsodium step (build/pyisolate_build/sodium.py): what its cache key depends on,
which of the interpreter's flags reach libsodium, the conan profile it writes, and the
recipe's refusal to build from anything but the verified tarball. The build itself runs in
every `./dev dist` (tests/broker/test_static_link.py checks its result)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, need
from pyisolate_build import cpython, lock, sodium

CONFIG = {"CC": "gcc", "CONFIGURE_CFLAGS": "-fstack-protector-strong -D_FORTIFY_SOURCE=3", "LDFLAGS": "-Wl,-z,now"}


@pytest.fixture
def repo(tmp_path):
    shutil.copytree(ROOT / "libsodium", tmp_path / "libsodium")
    (tmp_path / "build").mkdir()
    shutil.copy(ROOT / "build" / "sources.lock", tmp_path / "build" / "sources.lock")
    return cpython.Repo(tmp_path)


def _key(repo, config=CONFIG, conan="Conan version 2.34.0"):
    return sodium.sodium_key(repo, lock.load(repo.lock)["libsodium"], config, conan)


def test_lock_pins_1_0_22_upstream_first():
    source = lock.load(ROOT / "build" / "sources.lock")["libsodium"]
    assert source.version == "1.0.22" and source.size == 2269468
    assert source.sha256 == "5838bb0c3da6148c24ebe531d1ed1297de9a87aea77d426bcd99f289e681631c"
    assert source.urls[0].startswith("https://download.libsodium.org/")
    assert "deb.debian.org" in source.urls[1] and "minisign" in source.identity


def test_key_follows_every_input(repo):
    base = _key(repo)
    assert _key(repo) == base
    assert _key(repo, dict(CONFIG, CC="clang-19")) != base
    assert _key(repo, dict(CONFIG, CONFIGURE_CFLAGS="")) != base
    assert _key(repo, conan="Conan version 2.35.0") != base
    recipe = repo.root / "libsodium" / "conanfile.py"
    recipe.write_text(recipe.read_text() + "\n# changed\n")
    assert _key(repo) != base


def test_flags_keep_hardening_and_drop_lto_and_cfi():
    cfi = "-flto=thin -fvisibility=hidden -fsanitize=cfi-icall -fsanitize-cfi-cross-dso -fstack-protector-strong"
    assert sodium._flags(cfi + " -fcf-protection=full") == ["-fstack-protector-strong", "-fcf-protection=full"]
    assert sodium._flags("-fuse-ld=lld -Wl,-z,relro") == ["-Wl,-z,relro"]


def test_profile_names_compiler_and_flags():
    text = sodium._profile("gcc", "12", "gcc", ["-fstack-protector-strong"], ["-Wl,-z,now"])
    assert "compiler=gcc\ncompiler.version=12" in text
    assert 'tools.build:cflags=["-fstack-protector-strong"]' in text
    assert 'tools.build:compiler_executables={"c": "gcc"}' in text


def test_recipe_refuses_without_the_verified_tarball(tmp_path):
    conan = Path(sys.executable).parent / "conan"
    need(conan.is_file(), "conan is not installed next to this Python (requirements/build.txt pins it)")
    env = {"CONAN_HOME": str(tmp_path / "conan"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run(
        [str(conan), "source", str(ROOT / "libsodium")], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "verified tarball" in proc.stderr + proc.stdout
