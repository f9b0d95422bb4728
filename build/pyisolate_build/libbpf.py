"""The libbpf step: the pinned libbpf source built as a static, position-independent
archive for the native extension's BPF loader (native/src/bpf_guard.c), cached.

    build/sources.lock "libbpf" → fetch.fetch (size + SHA-256 checked)
      → libbpf's own Makefile: BUILD_STATIC_ONLY=1, the interpreter's CFLAGS + -fPIC
      → <cache>/libbpf/libbpf-1.1.2-<key>/{lib/libbpf.a, include/bpf/*.h}

Why not bookworm's libbpf.a: it is compiled as PIE code (PC-relative references to
glibc's `stderr`), which `ld -shared` refuses in an extension module. The version is
bookworm's (1.1.2, what its bpftool 7.1 generates skeletons for). libelf.a and libz.a
still come from bookworm (libelf-dev, zlib1g-dev); native/src/libelf_errno.c covers the
one libelf member that cannot be linked (see there). The native step hands the prefix to
CMake as PYI_LIBBPF_PREFIX.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path

from . import archives, cache, cpython, fetch, lock
from .progress import Reporter


def _interpreter_compiler(base: Path) -> tuple[str, str]:
    """The distribution's compiler and hardening flags (what every extension is built with)."""
    code = "import sysconfig as s; print(s.get_config_var('CC')); print(s.get_config_var('CFLAGS'))"
    proc = subprocess.run(
        [str(base / "bin" / "python3.14t"), "-I", "-c", code], capture_output=True, text=True, check=True
    )
    cc, cflags = proc.stdout.splitlines()[:2]
    # The archive goes into a shared object: position-independent code, no debug info; no
    # LTO bitcode or CFI instrumentation (the cfi flavour): a plain archive for either linker.
    flags = [f for f in shlex.split(cflags) if not f.startswith(("-g", "-flto", "-fsanitize"))]
    return cc, " ".join([*flags, "-fPIC", "-g0"])


def libbpf_key(source: lock.Source, cc: str, cflags: str) -> str:
    digest = cache.file_digest(Path(__file__))
    return cache.key({"source": source.key(), "digest": digest, "cc": cc, "cflags": cflags})


def build(repo: cpython.Repo, base: Path, reporter: Reporter) -> Path:
    """Return the prefix holding lib/libbpf.a and include/bpf/ (cached)."""
    source = lock.load(repo.lock)["libbpf"]
    cc, cflags = _interpreter_compiler(base)
    key = libbpf_key(source, cc, cflags)
    artefact = cache.root() / "libbpf" / f"libbpf-{source.version}-{key[:12]}"
    if (artefact / "libbpf.json").is_file():
        reporter.skip("libbpf", f"cached: {artefact}")
        return artefact
    with reporter.phase("libbpf", f"libbpf {source.version} (static, PIC)"):
        tarball = fetch.fetch(source, cache.root() / "downloads", log=reporter.info)
        fetch.verify(source, tarball, str(tarball))
        work = cache.work_dir(artefact.name)
        with tarfile.open(tarball) as tf:
            archives.extract(tf, work / "src")
        tree = next((work / "src").glob("libbpf-*")) / "src"
        staged = work / "artefact"
        # OBJDIR relative to the tree: the compile lines name their output file, and clang
        # records each object's whole command line (a path in the cache would differ per cache).
        (tree / "obj").mkdir()  # libbpf's Makefile writes libbpf.pc there before making it
        env = {k: v for k, v in os.environ.items() if k not in cpython._SCRUB_ENV} | {"LC_ALL": "C"}
        make = [
            *["make", "-C", str(tree), f"-j{os.cpu_count() or 1}", "BUILD_STATIC_ONLY=1", "OBJDIR=obj"],
            *[f"DESTDIR={staged}", "PREFIX=/", "LIBDIR=/lib", "INCLUDEDIR=/include", f"CC={cc}", f"CFLAGS={cflags}"],
            "install",
        ]
        reporter.run("libbpf-make", make, tree, env)
        shutil.rmtree(staged / "lib" / "pkgconfig", ignore_errors=True)  # holds the build's paths
        (staged / "libbpf.json").write_text(json.dumps({"key": key, "cc": cc, "cflags": cflags}, indent=1) + "\n")
        cache.publish(staged, artefact)
        shutil.rmtree(work, ignore_errors=True)
    return artefact
