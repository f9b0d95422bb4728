"""The libsodium step: the pinned libsodium built by the local conan recipe, cached.

    build/sources.lock "libsodium" → fetch.fetch (size + SHA-256 checked)
      → conan create libsodium/ --no-remote, CONAN_HOME=<cache>/conan, a profile written
        here: the built interpreter's compiler and hardening flags
      → <cache>/sodium/libsodium-1.0.22-<key>/{include,lib/libsodium.a,licenses}

The native step (native.py) hands that prefix to CMake as PYISOLATE_SODIUM_PREFIX.

Flags: the interpreter's CONFIGURE_CFLAGS and LDFLAGS (the flavour's hardening profile),
without link-time optimisation, CFI and visibility flags: the archive holds plain
objects any linker of the flavour accepts, and --exclude-libs,ALL hides them anyway.

Inputs of the key: the lock entry, the recipe, this module, the compiler and flags, and
the conan version (requirements/build.txt pins it).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from . import cache, cpython, fetch, lock
from .errors import BuildError
from .progress import Reporter

_DROPPED_PREFIXES = ("-flto", "-fsanitize", "-fvisibility", "-fuse-ld", "-fprofile")


def _interpreter_config(base: Path) -> dict[str, str]:
    code = (
        "import json, sysconfig as s; print(json.dumps({k: s.get_config_var(k) or '' "
        "for k in ('CC', 'CONFIGURE_CFLAGS', 'LDFLAGS')}))"
    )
    proc = subprocess.run(
        [str(base / "bin" / "python3.14t"), "-I", "-c", code], capture_output=True, text=True, check=True
    )
    return json.loads(proc.stdout)


def _flags(text: str) -> list[str]:
    return [f for f in shlex.split(text) if not f.startswith(_DROPPED_PREFIXES)]


def _compiler(cc: str) -> tuple[str, str]:
    """Conan's (compiler, major version) for the interpreter's C compiler."""
    version = subprocess.run([cc, "-dumpversion"], capture_output=True, text=True, check=True).stdout.strip()
    name = "clang" if "clang" in Path(cc).name else "gcc"
    return name, version.split(".")[0]


def _conan() -> str:
    exe = Path(sys.executable).parent / "conan"
    if not exe.exists():
        raise BuildError("sodium: conan is not installed next to the driver's Python (requirements/build.txt pins it)")
    return str(exe)


def _conan_version(conan: str) -> str:
    return subprocess.run([conan, "--version"], capture_output=True, text=True, check=True).stdout.strip()


def sodium_key(repo: cpython.Repo, source: lock.Source, config: dict[str, str], conan_version: str) -> str:
    recipe = repo.root / "libsodium" / "conanfile.py"
    digest = cache.file_digest(Path(__file__), recipe)
    return cache.key({"source": source.key(), "digest": digest, "config": config, "conan": conan_version})


def _profile(compiler: str, version: str, cc: str, cflags: list[str], ldflags: list[str]) -> str:
    return "\n".join(
        [
            "[settings]",
            "os=Linux",
            "arch=x86_64",
            "build_type=Release",
            f"compiler={compiler}",
            f"compiler.version={version}",
            "[conf]",
            f"tools.build:compiler_executables={json.dumps({'c': cc})}",
            f"tools.build:cflags={json.dumps(cflags)}",
            f"tools.build:sharedlinkflags={json.dumps(ldflags)}",
            f"tools.build:exelinkflags={json.dumps(ldflags)}",
            "",
        ]
    )


def build(repo: cpython.Repo, base: Path, reporter: Reporter) -> Path:
    """Return the install prefix of the static libsodium (cached)."""
    source = lock.load(repo.lock)["libsodium"]
    config = _interpreter_config(base)
    conan = _conan()
    key = sodium_key(repo, source, config, _conan_version(conan))
    artefact = cache.root() / "sodium" / f"libsodium-{source.version}-{key[:12]}"
    info = artefact / "sodium.json"
    if info.is_file():
        reporter.skip("sodium", f"cached: {artefact}")
        return artefact
    with reporter.phase("sodium", f"libsodium {source.version} (conan, static, PIC)"):
        tarball = fetch.fetch(source, cache.root() / "downloads", log=reporter.info)
        fetch.verify(source, tarball, str(tarball))
        work = cache.work_dir(artefact.name)
        compiler, version = _compiler(config["CC"])
        cflags, ldflags = _flags(config["CONFIGURE_CFLAGS"]), _flags(config["LDFLAGS"])
        profile = work / "profile"
        profile.write_text(_profile(compiler, version, config["CC"], cflags, ldflags))
        env = {k: v for k, v in os.environ.items() if k not in cpython._SCRUB_ENV}
        env.update(LC_ALL="C", CONAN_HOME=str(cache.root() / "conan"))
        graph = work / "graph.json"
        cmd = [
            *[conan, "create", str(repo.root / "libsodium"), "--no-remote", "--build=missing"],
            *["-pr:a", str(profile), "-c", f"user.pyisolate:tarball={tarball}"],
            *["-c", f"user.pyisolate:sha256={source.sha256}", "--format=json", "--out-file", str(graph)],
        ]
        log = reporter.run("sodium-conan", cmd, work, env)
        nodes = json.loads(graph.read_text())["graph"]["nodes"].values()
        folders = [n["package_folder"] for n in nodes if str(n.get("ref")).startswith("libsodium/")]
        if len(folders) != 1 or not folders[0]:
            raise BuildError(f"sodium: conan reported no package folder for libsodium (log: {log})")
        package = Path(folders[0])
        staged = work / "artefact"
        for part in ("include", "lib", "licenses"):
            shutil.copytree(package / part, staged / part)
        if not (staged / "lib" / "libsodium.a").is_file():
            raise BuildError(f"sodium: {package} has no lib/libsodium.a")
        meta = {"key": key, "version": source.version, "compiler": [compiler, version], "cflags": cflags}
        (staged / "sodium.json").write_text(json.dumps(meta, indent=1) + "\n")
        cache.publish(staged, artefact)
        shutil.rmtree(work, ignore_errors=True)
    return artefact
