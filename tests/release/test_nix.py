"""The Nix flake cannot be built here (nixpkgs is unreachable); what can be checked is:
every .nix file parses, the parts that need no nixpkgs evaluate, and the pins hold."""

import json
import shutil
import subprocess

import pytest

from conftest import ROOT, need
from pyisolate_build import lock

NIX_FILES = sorted([ROOT / "flake.nix", *(ROOT / "nix").glob("*.nix")])


@pytest.fixture(scope="module")
def nix_instantiate():
    path = shutil.which("nix-instantiate")
    need(path is not None, "nix-instantiate not installed (Debian's nix-bin)")
    return path


def nix_eval(nix_instantiate, expr):
    proc = subprocess.run(
        [nix_instantiate, "--eval", "--strict", "--json", "-E", expr],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("path", NIX_FILES, ids=[p.name for p in NIX_FILES])
def test_nix_file_parses(nix_instantiate, path):
    proc = subprocess.run([nix_instantiate, "--parse", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_sources_nix_is_the_lock(nix_instantiate):
    sources = lock.load(ROOT / "build" / "sources.lock")
    evaluated = nix_eval(nix_instantiate, "import ./nix/sources.nix")
    assert set(evaluated) == set(sources)
    for name, source in sources.items():
        assert evaluated[name]["sha256"] == source.sha256
        assert evaluated[name]["urls"] == list(source.urls)
        assert evaluated[name]["size"] == source.size


def test_flake_shape(nix_instantiate):
    assert "untrusted code" in nix_eval(nix_instantiate, "(import ./flake.nix).description")
    assert nix_eval(nix_instantiate, "(import ./flake.nix).inputs.nixpkgs.url") == "github:NixOS/nixpkgs/nixos-24.11"
    assert nix_eval(nix_instantiate, "builtins.isFunction (import ./flake.nix).outputs") is True


def test_flake_lock_pins_nixpkgs():
    locked = json.loads((ROOT / "flake.lock").read_text())["nodes"]["nixpkgs"]["locked"]
    assert len(locked["rev"]) == 40 and locked["narHash"].startswith("sha256-")
