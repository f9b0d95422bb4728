"""Build steps for the free-threaded CPython prefix: one function per step.

    fetch → verify → extract → patch → configure (after a toolchain probe) → compile
          → install → audit

The finished prefix lives in the cache under a key that hashes every input (lock entry,
patch series, flavour flags, configure arguments, toolchain and -dev package versions, and
the source of this module); `out/dist/current` links to it.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import signal
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from . import archives, audit, cache, fetch, lock, patches, profiles, system
from .errors import BuildError
from .progress import Reporter

BYTECODE_SCRIPT = Path(__file__).with_name("bytecode.py")
BUILD_ROOT = Path("/var/tmp/pyisolate-build")  # fixed on purpose: see _build_dir
PREFIX = "/opt/pyisolate"  # configure-time prefix; the installed tree is relocatable
CONFIGURE_ARGS = (
    f"--prefix={PREFIX}",
    "--disable-gil",
    "--with-ensurepip=no",
    "--without-static-libpython",  # the interpreter links libpython statically; no .a shipped
    "--without-system-libmpdec",  # bookworm has no libmpdec-dev; the bundled copy is pinned with CPython
    "--enable-option-checking=fatal",
    # What configure would otherwise take from whatever else the host has (a Docker
    # builder with only build/system-packages.txt must produce the same bytes): Tcl/Tk
    # headers would build _tkinter (the tarball leaves tkinter out), an ndbm library _dbm,
    # and the Makefile would record the first python3.X on PATH for regeneration (never run).
    "py_cv_module__tkinter=n/a",
    "py_cv_module__dbm=n/a",
    "PYTHON_FOR_REGEN=python3",
)
# Variables from the caller's environment that would silently change the build.
_SCRUB_ENV = (
    "SOURCE_DATE_EPOCH",
    "CFLAGS",
    "CPPFLAGS",
    "CXXFLAGS",
    "LDFLAGS",
    "LIBS",
    "CC",
    "CXX",
    "OPT",
    "CFLAGS_NODIST",
    "LDFLAGS_NODIST",
    "LINKFORSHARED",
    "AR",
    "RANLIB",
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "MAKEFLAGS",
)


@dataclass(frozen=True)
class Repo:
    """Where the driver's inputs live in the checkout."""

    root: Path

    @property
    def lock(self) -> Path:
        return self.root / "build" / "sources.lock"

    @property
    def profiles(self) -> Path:
        return self.root / "build" / "profiles.toml"

    @property
    def packages(self) -> Path:
        return self.root / "build" / "system-packages.txt"

    @property
    def patches(self) -> Path:
        return self.root / "cpython-patches"

    @property
    def probe(self) -> Path:
        return self.root / "build" / "toolchain-probe.c"

    @property
    def runtime(self) -> list[Path]:
        """What the overlay step installs on top of CPython."""
        return [self.root / "src" / "pyisolate", self.root / "sitecustomize"]

    @property
    def out(self) -> Path:
        return self.root / "out"


@dataclass(frozen=True)
class Plan:
    """Everything a build of one flavour depends on, resolved before any work starts."""

    source: lock.Source
    series: list[patches.Patch]
    flavour: profiles.Flavour
    toolchain: dict[str, str]
    packages: dict[str, str]
    step_digest: str
    flavour_files: dict[str, str] = field(default_factory=dict)

    def inputs(self) -> dict:
        inputs = {
            "source": self.source.key(),
            "patches": [(p.name, p.sha256) for p in self.series],
            "flavour": self.flavour.key(),
            "configure": list(CONFIGURE_ARGS),
            "toolchain": self.toolchain,
            "packages": self.packages,
            "step": self.step_digest,
        }
        if self.flavour_files:  # e.g. a sanitizer ignore list the flags name
            inputs["flavour_files"] = self.flavour_files
        return inputs

    @property
    def key(self) -> str:
        return cache.key(self.inputs())

    @property
    def artefact_name(self) -> str:
        return f"cpython-{self.source.version}-{self.flavour.name}-{self.key[:16]}"


def plan(repo: Repo, flavour_name: str, packages: dict[str, str] | None = None) -> Plan:
    sources = lock.load(repo.lock)
    if "cpython" not in sources:
        raise BuildError(f"{repo.lock}: no [[source]] named 'cpython'")
    flavours = profiles.load(repo.profiles)
    if flavour_name not in flavours:
        raise BuildError(f"unknown flavour {flavour_name!r}; {repo.profiles} defines: {', '.join(flavours)}")
    flavour = flavours[flavour_name]
    flavour_files = {}
    for rel in flavour.repo_files():
        path = repo.root / rel
        if not path.is_file():
            raise BuildError(f"{repo.profiles}: flavour {flavour_name} names {{repo}}/{rel}, which does not exist")
        flavour_files[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    if packages is None:
        wanted = system.read_package_list(repo.packages)
        packages = {k: v for k, v in system.installed_versions(wanted).items() if v}
    return Plan(
        source=sources["cpython"],
        series=patches.read_series(repo.patches),
        flavour=flavour,
        toolchain=system.toolchain_identity(flavour.cc, flavour.ldflags, dict(flavour.env)),
        packages=dict(sorted(packages.items())),
        step_digest=cache.file_digest(Path(__file__), BYTECODE_SCRIPT, repo.probe),
        flavour_files=flavour_files,
    )


def build(repo: Repo, flavour_name: str, reporter: Reporter, jobs: int | None = None) -> Path:
    """Return the prefix of a built (or cached) CPython of this flavour."""
    wanted = system.read_package_list(repo.packages)
    packages = system.ensure_packages(wanted, log=reporter.info)
    the_plan = plan(repo, flavour_name, packages)
    cache_root = cache.root()
    artefact = cache_root / "dist" / the_plan.artefact_name
    prefix = artefact / "prefix"
    if (artefact / "buildinfo.json").is_file() and (prefix / "bin" / "python3.14t").is_file():
        reporter.skip("build", f"cached: {artefact} (key {the_plan.key[:16]})")
    else:
        with _build_dir(the_plan.artefact_name) as work:
            tarball = step_fetch(the_plan, cache_root / "downloads", reporter)
            src = step_extract(tarball, work, reporter)
            step_patch(the_plan, src, reporter)
            step_configure(the_plan, repo, src, work, reporter)
            step_compile(src, reporter, jobs or os.cpu_count() or 2, source_epoch(tarball))
            staged = step_install(the_plan, src, work, reporter)
            info = json.dumps(the_plan.inputs(), indent=1, sort_keys=True) + "\n"
            (staged.parent / "buildinfo.json").write_text(info)
            cache.publish(staged.parent, artefact)
    return prefix


@contextlib.contextmanager
def _build_dir(name: str):
    """A clean build directory at a fixed path, locked while in use. CPython records its
    build directory in sysconfig data and Makefiles, so only builds made in the same place
    can be byte-identical, whatever checkout or cache they come from."""
    BUILD_ROOT.mkdir(parents=True, exist_ok=True)
    with open(BUILD_ROOT / f".{name}.lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        work = BUILD_ROOT / name
        if work.exists():
            shutil.rmtree(work)  # leftovers of an interrupted build are never reused
        work.mkdir()
        try:
            yield work
        finally:
            shutil.rmtree(work, ignore_errors=True)


def source_epoch(tarball: Path) -> int:
    """The newest mtime in the source tarball: a build time that depends only on inputs."""
    with tarfile.open(tarball) as tar:
        return max(int(m.mtime) for m in tar.getmembers())


def step_fetch(the_plan: Plan, downloads: Path, reporter: Reporter) -> Path:
    with reporter.phase("fetch", the_plan.source.filename):
        path = fetch.fetch(the_plan.source, downloads, log=reporter.info)
    with reporter.phase("verify", f"sha256 {the_plan.source.sha256[:16]}…"):
        fetch.verify(the_plan.source, path, str(path))  # re-check the bytes we will unpack
    return path


def step_extract(tarball: Path, work: Path, reporter: Reporter) -> Path:
    with reporter.phase("extract"):
        with tarfile.open(tarball) as tar:
            top = {m.name.split("/", 1)[0] for m in tar.getmembers()}
            if len(top) != 1:
                raise BuildError(f"{tarball}: expected one top-level directory, found {sorted(top)}")
            archives.extract(tar, work)
        return work / top.pop()


def step_patch(the_plan: Plan, src: Path, reporter: Reporter) -> None:
    with reporter.phase("patch", f"{len(the_plan.series)} patch(es)"):
        for line in patches.apply_series(the_plan.series, src):
            reporter.info(line)


def build_env(flavour: profiles.Flavour, tree: Path) -> dict[str, str]:
    """configure's environment: CFLAGS/LDFLAGS end up in sysconfig (extensions inherit
    them); the build-only flags go in CFLAGS_NODIST/LDFLAGS_NODIST, which only CPython's
    own build (the interpreter and the stdlib's extension modules) uses. `tree` holds the
    copies of the checkout files those flags name (`stage_flavour_files`)."""
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV}
    env.update(
        LC_ALL="C",
        CC=flavour.cc,
        OPT=flavour.opt,
        CFLAGS=" ".join(flavour.cflags),
        LDFLAGS=" ".join(flavour.ldflags),
        LINKFORSHARED=" ".join(flavour.exe_ldflags),
    )
    if flavour.build_cflags:
        env["CFLAGS_NODIST"] = " ".join(flavour.expand(flavour.build_cflags, BUILD_ROOT, tree))
    if flavour.build_ldflags:
        env["LDFLAGS_NODIST"] = " ".join(flavour.expand(flavour.build_ldflags, BUILD_ROOT, tree))
    env.update(flavour.env)
    return env


def stage_flavour_files(the_plan: Plan, repo: Repo, tree: Path) -> None:
    """Copy the checkout files the build-only flags name ({repo}/PATH) to tree/PATH, so
    that the flags, which sysconfig and clang's compile records keep, name the fixed build
    tree rather than wherever the checkout is (builds from two checkouts are identical)."""
    for rel, digest in the_plan.flavour_files.items():
        data = (repo.root / rel).read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise BuildError(f"{repo.root / rel} changed while building; run the build again")
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        (tree / rel).write_bytes(data)


def probe_toolchain(flavour: profiles.Flavour, probe_src: Path, work: Path, tree: Path) -> audit.ElfReport:
    """Compile the probe with the flavour's flags and audit it: the flags must work.
    For a flavour that requires CFI, also run it: it must run, and a call through a
    pointer of the wrong function type (`toolchain-probe forge`) must die with SIGILL."""
    exe = work / "toolchain-probe"
    cmd = [
        flavour.cc,
        *flavour.opt.split(),
        *flavour.cflags,
        *flavour.expand(flavour.build_cflags, BUILD_ROOT, tree),
        *flavour.ldflags,
        *flavour.expand(flavour.build_ldflags, BUILD_ROOT, tree),
        *flavour.exe_ldflags,
        str(probe_src),
        "-o",
        str(exe),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=build_env(flavour, tree))
    if proc.returncode != 0:
        raise BuildError(f"toolchain probe does not compile with flavour {flavour.name}:\n{proc.stderr}")
    report = audit.audit_file(exe, flavour.audit)
    problems = [f"{prop}: {c.detail}" for prop, c in report.checks.items() if c.status == audit.FAIL]
    policy = flavour.audit
    if policy.stack_protector and "canaries present" not in report.checks["stack_protector"].detail:
        problems.append("stack_protector: the probe's stack buffer got no canary")
    if policy.fortify and report.checks["fortify"].status != audit.OK:
        problems.append("fortify: the probe's memcpy into a known-size buffer was not fortified")
    if policy.cfi == "require":
        problems += _probe_cfi_traps(exe)
    if problems:
        raise BuildError(
            f"flavour {flavour.name}: the toolchain probe shows the flags do not harden:\n  " + "\n  ".join(problems)
        )
    return report


def _probe_cfi_traps(exe: Path) -> list[str]:
    problems = []
    plain = subprocess.run([str(exe)], capture_output=True, timeout=60)
    if plain.returncode != 0:
        problems.append(f"cfi: the probe does not run (exit {plain.returncode}): {plain.stderr[-500:]!r}")
    forged = subprocess.run([str(exe), "forge"], capture_output=True, timeout=60)
    if forged.returncode != -signal.SIGILL:
        problems.append(f"cfi: a call through a pointer of the wrong type did not trap (exit {forged.returncode})")
    return problems


def step_configure(the_plan: Plan, repo: Repo, src: Path, work: Path, reporter: Reporter) -> None:
    with reporter.phase("configure", the_plan.flavour.name):
        stage_flavour_files(the_plan, repo, src)
        probe_toolchain(the_plan.flavour, repo.probe, work, src)
        reporter.info("toolchain probe: the flavour's flags give canaries, fortified calls, PIE, RELRO, NX")
        if the_plan.flavour.audit.cfi == "require":
            reporter.info("toolchain probe: cross-DSO CFI present; a forged indirect call traps (SIGILL)")
        reporter.run(
            "configure",
            ["./configure", *CONFIGURE_ARGS, *the_plan.flavour.configure],
            src,
            build_env(the_plan.flavour, src),
        )


def step_compile(src: Path, reporter: Reporter, jobs: int, epoch: int) -> None:
    # SOURCE_DATE_EPOCH makes __DATE__/__TIME__ (sys.version's build date) reproducible.
    # It is set for compiling only: at install it would also switch every .pyc to hash
    # validation (slower imports); the release packer normalises timestamp .pyc headers.
    with reporter.phase("compile", f"make -j{jobs}"):
        env = build_env_from_configure() | {"SOURCE_DATE_EPOCH": str(epoch)}
        reporter.run("compile", ["make", f"-j{jobs}"], src, env)


def build_env_from_configure() -> dict[str, str]:
    # configure has baked the flags into the Makefile; keep the caller's flags out of make.
    return {k: v for k, v in os.environ.items() if k not in _SCRUB_ENV} | {"LC_ALL": "C"}


def step_install(the_plan: Plan, src: Path, work: Path, reporter: Reporter) -> Path:
    """Install into a staging tree and make it relocatable; return the staged prefix."""
    destdir = work / "destdir"
    with reporter.phase("install"):
        # COMPILEALL_OPTS=-j1: with parallel workers, which files share a process decides
        # marshal's reference flags, and the .pyc bytes vary from build to build.
        reporter.run(
            "install", ["make", "install", "COMPILEALL_OPTS=-j1", f"DESTDIR={destdir}"], src, build_env_from_configure()
        )
        staged = work / "artefact" / "prefix"
        staged.parent.mkdir(parents=True)
        os.rename(destdir / PREFIX.lstrip("/"), staged)
        recompile_bytecode(staged, staged / "lib" / "python3.14t", f"{PREFIX}/lib/python3.14t", reporter)
        make_relocatable(staged)
    return staged


def recompile_bytecode(prefix: Path, tree: Path, recorded: str, reporter: Reporter, *, hashed: bool = False) -> None:
    """Rewrite every .pyc under `tree` reproducibly (see bytecode.py for why)."""
    env = build_env_from_configure() | {"PYTHONHASHSEED": "0"}
    cmd = [str(prefix / "bin" / "python3.14t"), "-S", str(BYTECODE_SCRIPT), str(tree), recorded]
    reporter.run(f"bytecode-{tree.name}", [*cmd, *(["--hash"] if hashed else [])], prefix, env)


# A script that is valid sh and valid Python: sh re-executes it with the interpreter next
# to it, wherever the prefix was copied; Python sees a string literal and moves on.
_RELOCATABLE_SHEBANG = (
    '#!/bin/sh\n\'\'\'\'exec "$(dirname -- "$(readlink -f -- "$0")")/python3.14t" "$0" "$@" #\'\'\'\n'
)


def make_relocatable(prefix: Path) -> None:
    bindir = prefix / "bin"
    for script in bindir.iterdir():
        if script.is_symlink() or not script.is_file():
            continue
        head = script.read_bytes()[:128]
        if head.startswith(b"#!") and PREFIX.encode() in head.split(b"\n", 1)[0]:
            body = script.read_text().split("\n", 1)[1]
            script.write_text(_RELOCATABLE_SHEBANG + body)
    python3 = bindir / "python3"
    if not python3.exists():
        python3.symlink_to("python3.14t")
