"""The distribution: CPython (cpython.py) + the native extension (native.py) + the
PyIsolate runtime overlay, audited and linked at out/dist/<flavour> (and out/dist/current
for the default flavour).

The native extension and the overlay are cached steps of their own, keyed by the CPython
artefact and their sources, so editing the runtime re-runs only the overlay (seconds),
editing native/ only the extension and the overlay, never CPython.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from . import audit, bpf, cache, cpython, libbpf, native, profiles
from .errors import AuditError
from .progress import Reporter

DEFAULT_FLAVOUR = "cfi"  # the release default since it met its cost bar (docs/cfi.md); hardened, plain on request

# Entry points in bin/: plain sh that finds the interpreter next to itself (relocatable)
# and starts it isolated (-I: no PYTHON* variables, no user site) so nothing from the
# caller's environment reaches the trusted supervisor.
_ENTRY = '#!/bin/sh\nd=$(readlink -f -- "$0")\nexec "${{d%/*}}/python3.14t" -I -B -m {module} "$@"\n'
ENTRY_POINTS = {"pyisolate-python": "pyisolate.launcher", "pyisolate": "pyisolate.cli"}


def build(repo: cpython.Repo, flavour_name: str, reporter: Reporter, jobs: int | None = None) -> Path:
    base = cpython.build(repo, flavour_name, reporter, jobs)
    bpf_dir = bpf.build(repo, reporter)
    extension = native.build(repo, base, reporter, bpf_dir, libbpf.build(repo, base, reporter))
    prefix = overlay(repo, base, extension, reporter, bpf_dir)
    policy = profiles.load(repo.profiles)[flavour_name].audit
    step_audit(prefix, policy, repo.out / "logs", reporter)
    link(repo.out / "dist", prefix, flavour_name)
    return prefix


def _runtime_files(repo: cpython.Repo) -> list[Path]:
    files = []
    for root in repo.runtime:
        files += sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return files


def overlay_key(repo: cpython.Repo, base: Path, extension: Path, bpf_dir: Path | None = None) -> str:
    digest = cache.file_digest(Path(__file__), cpython.BYTECODE_SCRIPT, *_runtime_files(repo))
    rel = [str(p.relative_to(repo.root)) for p in _runtime_files(repo)]
    native_artefact = f"{extension.parent.name}/{extension.name}"
    inputs = {"cpython": base.parent.name, "native": native_artefact, "files": rel, "digest": digest, "entry": _ENTRY}
    if bpf_dir is not None:  # the objects and bpf/manifest.lock ship in pyisolate/bpf-objects/
        inputs["bpf"] = [bpf_dir.name, cache.file_digest(bpf.manifest_path(repo))]
    return cache.key(inputs)


def overlay(repo: cpython.Repo, base: Path, extension: Path, reporter: Reporter, bpf_dir: Path | None = None) -> Path:
    """The runtime, sitecustomize, the native `extension` module, the BPF objects with
    their manifest, and bin/ entry points."""
    key = overlay_key(repo, base, extension, bpf_dir)
    name = base.parent.name.replace("cpython-", "pyisolate-", 1) + f"-rt{key[:12]}"
    artefact = cache.root() / "dist" / name
    prefix = artefact / "prefix"
    if (artefact / "overlay.json").is_file():
        reporter.skip("overlay", f"cached: {artefact}")
        return prefix
    with reporter.phase("overlay", "pyisolate runtime, sitecustomize, _pyisolate, bin/ entry points"):
        work = cache.work_dir(name)
        staged = work / "prefix"
        # Hard links: the CPython tree is never modified in place, so sharing its inodes
        # with the cached CPython artefact costs no space and takes a second.
        shutil.copytree(base, staged, symlinks=True, copy_function=os.link)
        site = staged / "lib" / "python3.14t" / "site-packages"
        shutil.copytree(
            repo.root / "src" / "pyisolate", site / "pyisolate", ignore=shutil.ignore_patterns("__pycache__")
        )
        shutil.copy(repo.root / "sitecustomize" / "sitecustomize.py", site / "sitecustomize.py")
        shutil.copy(extension, site / extension.name)
        if (extension.parent / native.BROKER_LIBRARY).is_file():  # the broker's C core for ctypes
            shutil.copy(extension.parent / native.BROKER_LIBRARY, site / "pyisolate" / native.BROKER_LIBRARY)
        if bpf_dir is not None:
            shipped = site / "pyisolate" / "bpf-objects"
            shipped.mkdir()
            for obj in sorted(bpf_dir.glob("*.bpf.o")):
                shutil.copy(obj, shipped / obj.name)
            shutil.copy(bpf.manifest_path(repo), shipped / "manifest.lock")
        for entry, module in ENTRY_POINTS.items():
            path = staged / "bin" / entry
            path.write_text(_ENTRY.format(module=module))
            path.chmod(0o755)
        # Bytecode now, so cells (run with -B) never compile the runtime at start-up.
        cpython.recompile_bytecode(
            staged, site, f"{cpython.PREFIX}/lib/python3.14t/site-packages", reporter, hashed=True
        )
        (work / "overlay.json").write_text(json.dumps({"key": key, "base": str(base)}, indent=1) + "\n")
        cache.publish(work, artefact)
    return prefix


def step_audit(prefix: Path, policy: profiles.AuditPolicy, log_dir: Path, reporter: Reporter) -> list:
    with reporter.phase("audit", str(prefix)):
        reports = audit.audit_tree(prefix, policy)
        audit.write_json(reports, log_dir / "audit.json")
        audit.render(reports, reporter.console)
        try:
            audit.check(reports)
        except AuditError:
            reporter.info(f"full report: {log_dir / 'audit.json'}")
            raise
    return reports


def link(dist_dir: Path, prefix: Path, flavour_name: str) -> None:
    """out/dist/<flavour> and (for the default flavour) out/dist/current → the prefix."""
    dist_dir.mkdir(parents=True, exist_ok=True)
    names = [flavour_name] + (["current"] if flavour_name == DEFAULT_FLAVOUR else [])
    for name in names:
        link_path = dist_dir / name
        tmp = dist_dir / f".{name}.tmp"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(prefix)
        if link_path.is_dir() and not link_path.is_symlink():
            shutil.rmtree(link_path)
        os.replace(tmp, link_path)
