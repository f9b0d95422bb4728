"""The native step: native/ (the `_pyisolate` extension) built against the BUILT
interpreter, never the host's, and cached under a key of its inputs.

    venv of <cpython prefix>/bin/python3.14t (no pip in it)
      → requirements/native.txt into its site-packages (hashes checked), installed by the
        driver's own pip (pure-Python wheels; the built interpreter does not run pip)
      → scikit-build-core's build_wheel run by the venv's interpreter in native/ (the
        system's CMake; flags from the interpreter's sysconfig; libseccomp.a linked in)
      → the module file, which the overlay installs into site-packages
    all of it in /var/tmp/pyisolate-build/<artefact>/ from copies of native/ and of every
    include directory (clang records each object's command line: see build()).

Inputs of the key: the CPython artefact (its name hashes the toolchain and the versions
of build/system-packages.txt, cmake, libseccomp-dev and libbpf-dev included), native/'s
files, requirements/native.txt, this module's source, the BPF artefact (bpf.py) whose
skeletons the loader compiles in and the static libbpf (libbpf.py) it links: their
directories reach CMake as PYI_BPF_SKEL_DIR and PYI_LIBBPF_PREFIX.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from . import cache, cpython, sodium
from .errors import BuildError
from .progress import Reporter

MODULE = "_pyisolate"
BROKER_LIBRARY = "libpyisolate_broker.so"  # the broker's C core for ctypes (sodium.py, CMakeLists.txt)


def _sources(repo: cpython.Repo) -> list[Path]:
    root = repo.root / "native"
    return sorted(p for p in root.rglob("*") if p.is_file() and "build" not in p.relative_to(root).parts[:1])


def _requirements(repo: cpython.Repo) -> Path:
    return repo.root / "requirements" / "native.txt"


def native_key(repo: cpython.Repo, base: Path, bpf_dir: Path | None = None, libbpf_dir: Path | None = None) -> str:
    files = _sources(repo)
    digest = cache.file_digest(Path(__file__), _requirements(repo), *files)
    rel = [str(p.relative_to(repo.root)) for p in files]
    inputs = {"cpython": base.parent.name, "files": rel, "digest": digest}
    if bpf_dir is not None:  # both named after the hash of their inputs
        inputs["bpf"] = bpf_dir.name
    if libbpf_dir is not None:
        inputs["libbpf"] = libbpf_dir.name
    return cache.key(inputs)


def build(
    repo: cpython.Repo, base: Path, reporter: Reporter, bpf_dir: Path | None = None, libbpf_dir: Path | None = None
) -> Path:
    """Return the built extension module file (cached)."""
    key = native_key(repo, base, bpf_dir, libbpf_dir)
    # The static libsodium of the sealed broker (sodium.py); its artefact is named after its inputs.
    sodium_prefix = sodium.build(repo, base, reporter)
    key = cache.key({"native": key, "sodium": sodium_prefix.name})
    name = base.parent.name.replace("cpython-", "native-", 1) + f"-{key[:12]}"
    artefact = cache.root() / "native" / name
    info = artefact / "native.json"
    if info.is_file():
        reporter.skip("native", f"cached: {artefact}")
        return artefact / json.loads(info.read_text())["module"]
    phase = reporter.phase("native", f"{MODULE} (scikit-build-core, CMake, libseccomp)")
    with phase, cpython._build_dir(name) as fixed:
        work = cache.work_dir(name)
        venv, wheels, staged = fixed / "venv", fixed / "wheel", work / "artefact"
        # clang's -frecord-command-line keeps each object's whole command line (the audit
        # reads it back), -I paths and the source file's path included: so the sources and
        # every directory CMake hands to the compiler are copied under the fixed build
        # directory (cpython._build_dir), the same for every checkout and cache, and the
        # module is byte-identical wherever it is built.
        source = fixed / "native"
        shutil.copytree(repo.root / "native", source, ignore=shutil.ignore_patterns("build", "_skbuild", "__pycache__"))
        shutil.copytree(sodium_prefix, fixed / "sodium")
        shutil.copytree(base / "include", fixed / "python-include")
        env = {k: v for k, v in os.environ.items() if k not in cpython._SCRUB_ENV and not k.startswith("PIP_")}
        env.update(LC_ALL="C", CMAKE_GENERATOR="Unix Makefiles", PIP_DISABLE_PIP_VERSION_CHECK="1")
        env["PYI_SODIUM_PREFIX"] = str(fixed / "sodium")
        headers = next((fixed / "python-include").glob("python3*"))
        defines = [env.get("SKBUILD_CMAKE_DEFINE", ""), f"PYI_PYTHON_INCLUDE={headers}"]
        if bpf_dir is not None:
            shutil.copytree(bpf_dir, fixed / "bpf")
            defines += [f"PYI_BPF_SKEL_DIR={fixed / 'bpf'}"]
        if libbpf_dir is not None:
            shutil.copytree(libbpf_dir, fixed / "libbpf")
            defines += [f"PYI_LIBBPF_PREFIX={fixed / 'libbpf'}"]
        env["SKBUILD_CMAKE_DEFINE"] = ";".join(d for d in defines if d)
        python = str(base / "bin" / "python3.14t")
        # The interpreter's own compiler (CMake reads $CC; its flags come from sysconfig in CMakeLists.txt).
        proc = subprocess.run(
            [python, "-I", "-c", "import sysconfig; print(sysconfig.get_config_var('CC'))"],
            capture_output=True,
            text=True,
            check=True,
        )
        env["CC"] = proc.stdout.strip()
        reporter.run("native-venv", [python, "-I", "-m", "venv", "--without-pip", str(venv)], work, env)
        # The backend's pure-Python wheels go straight into the venv, installed by the
        # driver's own pip: the built interpreter only runs the build itself.
        site = next(venv.glob("lib/python3*/site-packages"))
        reporter.run(
            "native-deps",
            [
                *[sys.executable, "-m", "pip", "install", "--require-hashes", "--only-binary=:all:", "--no-compile"],
                *["--target", str(site), "--python-version", "3.14", "-r", str(_requirements(repo))],
            ],
            work,
            env,
        )
        # PEP 517 build_wheel, called directly with the venv's (the built) interpreter.
        wheels.mkdir()
        backend = (
            "import sys; from scikit_build_core.build import build_wheel; "
            "print(build_wheel(sys.argv[1], {'build-dir': sys.argv[2]}))"
        )
        reporter.run(
            "native-wheel",
            [str(venv / "bin" / "python"), "-I", "-c", backend, str(wheels), str(fixed / "cmake")],
            source,
            env,
        )
        modules = []
        for wheel in wheels.glob("*.whl"):
            with zipfile.ZipFile(wheel) as zf:
                for member in zf.namelist():
                    if member.startswith(f"{MODULE}.") and member.endswith(".so") and "/" not in member:
                        staged.mkdir(exist_ok=True)
                        (staged / member).write_bytes(zf.read(member))
                        modules.append(member)
                    elif member == f"pyisolate/{BROKER_LIBRARY}":
                        staged.mkdir(exist_ok=True)
                        (staged / BROKER_LIBRARY).write_bytes(zf.read(member))
        if len(modules) != 1:
            raise BuildError(f"native: expected one {MODULE}*.so in the wheel, found {modules or 'none'}")
        (staged / "native.json").write_text(json.dumps({"key": key, "module": modules[0]}, indent=1) + "\n")
        cache.publish(staged, artefact)
        shutil.rmtree(work, ignore_errors=True)
    return artefact / modules[0]
