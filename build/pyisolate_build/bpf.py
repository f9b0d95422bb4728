"""The BPF step: every bpf/*.bpf.c compiled to a CO-RE object, its skeleton generated,
and each object's SHA-256 checked against bpf/manifest.lock.

    bpf/X.bpf.c (+ bpf/*.h, the pinned bpf/vmlinux.h, libbpf-dev's bpf_helpers.h)
      → clang-19 -target bpf -D__TARGET_ARCH_x86 -O2 -g, paths mapped to "bpf/"   X.raw.o
      → bpftool gen object (the BPF static linker: keeps .BTF/.BTF.ext, drops DWARF) X.bpf.o
      → the object's sections checked: BTF present, no .debug_*
      → bpftool gen skeleton                                                         X.skel.h
      (+ bpf/*.h but vmlinux.h, copied next to the skeletons for the loader)
      → SHA-256 of X.bpf.o compared with bpf/manifest.lock (a mismatch fails the build,
        naming the object, expected and actual; `python -m pyisolate_build bpf
        --update-manifest` records the new hashes after a deliberate change)

The objects ship in the distribution (site-packages/pyisolate/bpf/, with the manifest);
the skeletons are compiled into the native extension (native.py passes their directory
to CMake). Inputs of the key: bpf/'s sources (not the manifest: it is what the output is
checked against), this module, and the versions of the tools and headers used.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

from . import cache, cpython, system
from .errors import BuildError
from .progress import Reporter

CLANG = "clang-19"
BPFTOOL = "bpftool"
# Debian packages whose versions change the objects (compiler, linker, libbpf's headers).
TOOL_PACKAGES = ("clang-19", "llvm-19", "bpftool", "libbpf-dev")
CFLAGS = ("-target", "bpf", "-D__TARGET_ARCH_x86", "-O2", "-g", "-Wall")
MANIFEST_HEADER = """\
# bpf/manifest.lock: the SHA-256 of every compiled BPF object, checked by the build
# (build/pyisolate_build/bpf.py fails on a mismatch) and by the runtime loader
# (pyisolate/bpf.py refuses an object whose bytes do not match) — the objects are
# bit-reproducible from the checkout (clang-19 and bpftool from bookworm, the pinned
# bpf/vmlinux.h). Regenerate after a deliberate change:
#     python -m pyisolate_build bpf --update-manifest
# Keys: [objects."NAME.bpf.o"] sha256 = hex digest of the object file; size = its bytes.
"""


def _dir(repo: cpython.Repo) -> Path:
    return repo.root / "bpf"


def manifest_path(repo: cpython.Repo) -> Path:
    return _dir(repo) / "manifest.lock"


def programs(repo: cpython.Repo) -> list[Path]:
    """Every bpf/*.bpf.c: adding a program is adding a file."""
    return sorted(_dir(repo).glob("*.bpf.c"))


def _inputs(repo: cpython.Repo) -> list[Path]:
    root = _dir(repo)
    return sorted(p for p in root.iterdir() if p.is_file() and p.name.endswith((".bpf.c", ".h")))


def bpf_key(repo: cpython.Repo, tools: dict[str, str | None] | None = None) -> str:
    files = _inputs(repo)
    tools = tools if tools is not None else system.installed_versions(list(TOOL_PACKAGES))
    digest = cache.file_digest(Path(__file__), *files)
    rel = [str(p.relative_to(repo.root)) for p in files]
    return cache.key({"files": rel, "digest": digest, "tools": tools, "cflags": CFLAGS})


def compile_object(repo: cpython.Repo, source: Path, out: Path, reporter: Reporter) -> None:
    """clang: one CO-RE object with BTF and DWARF; the checkout's path becomes "bpf"."""
    root = _dir(repo)
    cmd = [CLANG, *CFLAGS, f"-ffile-prefix-map={root}=bpf", f"-I{root}", "-c", str(source), "-o", str(out)]
    reporter.run(f"bpf-cc-{source.name}", cmd, root, _env())


def strip_object(raw: Path, out: Path, reporter: Reporter) -> None:
    """The BPF static linker writes the object again without DWARF, keeping BTF."""
    reporter.run(f"bpf-strip-{out.name}", [BPFTOOL, "gen", "object", str(out), str(raw)], out.parent, _env())


def check_sections(path: Path) -> list[str]:
    """Section names of a compiled object; raise unless BTF is there and DWARF is not."""
    from elftools.elf.elffile import ELFFile

    with path.open("rb") as f:
        names = [section.name for section in ELFFile(f).iter_sections()]
    if ".BTF" not in names or ".BTF.ext" not in names:
        raise BuildError(f"{path.name}: no .BTF/.BTF.ext after stripping (CO-RE needs them); sections: {names}")
    debug = [name for name in names if name.startswith(".debug")]
    if debug:
        raise BuildError(f"{path.name}: debug sections left after stripping: {debug}")
    return names


def gen_skeleton(obj: Path, out: Path) -> None:
    """`bpftool gen skeleton`: the typed loader header the native extension compiles in."""
    with out.open("w") as f:
        proc = subprocess.run([BPFTOOL, "gen", "skeleton", str(obj)], stdout=f, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        raise BuildError(f"bpftool gen skeleton {obj.name} failed: {proc.stderr.strip()}")


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_manifest(path: Path) -> dict[str, dict]:
    """name → {"sha256", "size"}; a missing file is an empty manifest."""
    import tomllib

    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BuildError(f"{path}: not valid TOML: {exc}") from None
    objects = data.get("objects", {})
    for name, entry in objects.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
            raise BuildError(f'{path}: objects.{name!r}: needs sha256 = "<hex>"')
    return objects


def write_manifest(path: Path, objects: dict[str, Path]) -> None:
    lines = [MANIFEST_HEADER]
    for name in sorted(objects):
        obj = objects[name]
        lines.append(f'\n[objects."{name}"]\nsha256 = "{sha256(obj)}"\nsize = {obj.stat().st_size}\n')
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(lines), encoding="utf-8")
    os.replace(tmp, path)


def check_manifest(path: Path, objects: dict[str, Path]) -> None:
    """Every built object must be in the manifest with its hash, and nothing else."""
    recorded = read_manifest(path)
    fix = "if the change is deliberate: python -m pyisolate_build bpf --update-manifest"
    for name in sorted(objects):
        actual = sha256(objects[name])
        expected = recorded.get(name, {}).get("sha256")
        if expected is None:
            raise BuildError(f"{path}: {name} is not recorded (actual sha256 {actual}); {fix}")
        if expected != actual:
            raise BuildError(
                f"{name}: sha256 differs from {path}\n  expected: {expected}\n  actual:   {actual}\n"
                f"  the object is not what the checkout pins (another compiler or bpftool?); {fix}"
            )
    stale = sorted(set(recorded) - set(objects))
    if stale:
        raise BuildError(f"{path}: records objects no bpf/*.bpf.c builds: {stale}; {fix}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in cpython._SCRUB_ENV}
    env["LC_ALL"] = "C"
    return env


def build(repo: cpython.Repo, reporter: Reporter, update_manifest: bool = False) -> Path:
    """Return the directory holding every X.bpf.o and X.skel.h (cached), checked
    against bpf/manifest.lock (or, with `update_manifest`, recorded in it)."""
    system.ensure_packages(list(TOOL_PACKAGES), log=reporter.info)
    key = bpf_key(repo)
    artefact = cache.root() / "bpf" / f"bpf-{key[:16]}"
    if (artefact / "bpf.json").is_file():
        reporter.skip("bpf", f"cached: {artefact}")
    else:
        with reporter.phase("bpf", ", ".join(p.name for p in programs(repo)) or "no programs"):
            work = cache.work_dir(artefact.name)
            names = []
            for source in programs(repo):
                stem = source.name.removesuffix(".bpf.c")
                raw, obj = work / f"{stem}.raw.o", work / f"{stem}.bpf.o"
                compile_object(repo, source, raw, reporter)
                strip_object(raw, obj, reporter)
                raw.unlink()
                check_sections(obj)
                gen_skeleton(obj, work / f"{stem}.skel.h")
                names.append(obj.name)
            for header in sorted(_dir(repo).glob("*.h")):  # the structs the loader shares
                if header.name != "vmlinux.h":
                    shutil.copy(header, work / header.name)
            (work / "bpf.json").write_text(json.dumps({"key": key, "objects": names}, indent=1) + "\n")
            cache.publish(work, artefact)
    objects = {p.name: p for p in sorted(artefact.glob("*.bpf.o"))}
    if update_manifest:
        write_manifest(manifest_path(repo), objects)
        reporter.info(f"recorded {len(objects)} object(s) in {manifest_path(repo)}")
    check_manifest(manifest_path(repo), objects)
    return artefact
