"""The BPF step (build/pyisolate_build/bpf.py), run for real with clang-19 and bpftool:
the objects are the bytes bpf/manifest.lock pins, from any checkout path; BTF stays and
DWARF goes; a manifest that disagrees fails the build naming object, expected, actual."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rich.console import Console

from conftest import ROOT, need
from pyisolate_build import bpf, cpython
from pyisolate_build.errors import BuildError
from pyisolate_build.progress import Reporter


@pytest.fixture
def repo(tmp_path, monkeypatch):
    """A copy of bpf/ at another path, built into a private cache."""
    need(shutil.which(bpf.CLANG) is not None and shutil.which(bpf.BPFTOOL) is not None, "no clang-19/bpftool")
    monkeypatch.setenv("PYISOLATE_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "some" / "other" / "checkout"
    shutil.copytree(ROOT / "bpf", root / "bpf")
    return cpython.Repo(root)


@pytest.fixture
def reporter(tmp_path):
    return Reporter(tmp_path / "logs", Console(file=open(tmp_path / "console.txt", "w"), width=150))


def test_objects_are_the_pinned_bytes_from_another_path(repo, reporter):
    artefact = bpf.build(repo, reporter)
    pinned = bpf.read_manifest(ROOT / "bpf" / "manifest.lock")
    built = {p.name: bpf.sha256(p) for p in artefact.glob("*.bpf.o")}
    assert built == {name: entry["sha256"] for name, entry in pinned.items()}
    assert {p.name.removesuffix(".bpf.c") for p in bpf.programs(repo)} == {
        p.name.removesuffix(".bpf.o") for p in artefact.glob("*.bpf.o")
    }
    for obj in artefact.glob("*.bpf.o"):
        names = bpf.check_sections(obj)  # raises unless .BTF/.BTF.ext and no .debug_*
        assert ".BTF" in names and not any(n.startswith(".debug") for n in names)
        assert (artefact / obj.name.replace(".bpf.o", ".skel.h")).is_file()
        assert str(repo.root).encode() not in obj.read_bytes()  # the checkout's path does not leak
    assert (artefact / "guard.h").is_file() and not (artefact / "vmlinux.h").exists()


def test_a_manifest_that_disagrees_fails_the_build(repo, reporter):
    manifest = bpf.manifest_path(repo)
    actual = bpf.read_manifest(manifest)["guard.bpf.o"]["sha256"]
    wrong = "0" * 64
    manifest.write_text(manifest.read_text().replace(actual, wrong))
    with pytest.raises(BuildError) as info:
        bpf.build(repo, reporter)
    message = str(info.value)
    assert "guard.bpf.o" in message and wrong in message and actual in message
    assert "--update-manifest" in message


def test_a_changed_program_fails_until_the_manifest_is_updated(repo, reporter):
    source = repo.root / "bpf" / "guard.bpf.c"
    source.write_text(source.read_text().replace("__u64 dropped = 0;", "__u64 dropped = 0;\n__u64 extra = 0;"))
    with pytest.raises(BuildError, match=r"guard\.bpf\.o"):
        bpf.build(repo, reporter)
    artefact = bpf.build(repo, reporter, update_manifest=True)  # records the new hashes
    recorded = bpf.read_manifest(bpf.manifest_path(repo))["guard.bpf.o"]
    assert recorded["sha256"] == bpf.sha256(artefact / "guard.bpf.o")
    assert recorded["sha256"] != bpf.read_manifest(ROOT / "bpf" / "manifest.lock")["guard.bpf.o"]["sha256"]
    bpf.build(repo, reporter)  # and now it passes


def test_key_follows_sources_not_the_manifest(repo):
    tools = {"clang-19": "1", "llvm-19": "1", "bpftool": "1", "libbpf-dev": "1"}
    before = bpf.bpf_key(repo, tools)
    manifest = bpf.manifest_path(repo)
    manifest.write_text(manifest.read_text() + "\n# edited\n")
    assert bpf.bpf_key(repo, tools) == before
    (repo.root / "bpf" / "guard.h").write_text((repo.root / "bpf" / "guard.h").read_text() + "\n")
    assert bpf.bpf_key(repo, tools) != before
    assert bpf.bpf_key(repo, {**tools, "bpftool": "2"}) != bpf.bpf_key(repo, tools)


def test_unit_rule_entries():
    """The policy's connect rules as map entries (runtime side, pure Python)."""
    import socket

    from pyisolate import bpf as runtime_bpf

    assert runtime_bpf.rule_entries([("*", "*"), ("127.0.0.1", "80"), ("::1", "*"), ("::ffff:10.0.0.1", "53")]) == [
        (0, b"", 0),
        (socket.AF_INET, bytes([127, 0, 0, 1]), 80),
        (socket.AF_INET6, bytes(15) + b"\x01", 0),
        (socket.AF_INET, bytes([10, 0, 0, 1]), 53),
    ]


def test_unit_manifest_check_refuses_tampered_bytes(tmp_path):
    """The runtime's check (pyisolate/bpf.py) on a copy of the checked-in manifest."""
    from pyisolate import bpf as runtime_bpf

    shutil.copy(ROOT / "bpf" / "manifest.lock", tmp_path / "manifest.lock")
    (tmp_path / "guard.bpf.o").write_bytes(b"\x7fELF not the object")
    with pytest.raises(runtime_bpf.BpfIntegrityError) as info:
        runtime_bpf.verified_object("guard.bpf.o", Path(tmp_path))
    expected = bpf.read_manifest(ROOT / "bpf" / "manifest.lock")["guard.bpf.o"]["sha256"]
    assert info.value.expected == expected and expected in str(info.value)
