"""Every PyIsolate workflow, as a nox session.

    ./dev demo              build the distribution and run the demo with it
    ./dev tests [-- ARGS]   the test suite (ARGS go to pytest, e.g. -- -k audit)
    ./dev dist [-- --flavour plain]
    ./dev audit [-- PREFIX]
    ./dev lint

`./dev` makes .venv with the pinned nox, then runs `nox -s …`; with nox on your PATH,
`nox -s tests` is the same thing. Python packages come from requirements/*.txt, pinned
with hashes; system packages from build/system-packages.txt (installed by the driver).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_venv = "yes"
nox.options.error_on_external_run = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).resolve().parent
DIST = ROOT / "out" / "dist" / "current"
DRIVER_ENV = {"PYTHONPATH": str(ROOT / "build")}


def install(session: nox.Session, name: str, binary_only: bool = True) -> None:
    """The one install helper: every Python dependency comes pinned, with hashes."""
    only_binary = ["--only-binary=:all:"] if binary_only else []
    session.install("--require-hashes", *only_binary, "-r", str(ROOT / "requirements" / f"{name}.txt"))


def driver(session: nox.Session, *args: str) -> None:
    session.run("python", "-m", "pyisolate_build", *args, env=DRIVER_ENV)


# --- development -------------------------------------------------------------------------


@nox.session
def demo(session: nox.Session) -> None:
    """Build the distribution (cached) and run the demo with the built interpreter."""
    install(session, "build")
    driver(session, "dist")
    session.run(str(DIST / "bin" / "python3"), str(ROOT / "demo" / "freethreaded.py"), external=True)
    session.log("The same untrusted script, first with the plain interpreter, then sandboxed:")
    session.run(str(DIST / "bin" / "python3"), str(ROOT / "demo" / "untrusted.py"), external=True)
    session.run(str(DIST / "bin" / "pyisolate-python"), str(ROOT / "demo" / "untrusted.py"), external=True)


@nox.session
def tests(session: nox.Session) -> None:
    """Unit tests of the driver, then integration tests against the built prefix."""
    install(session, "tests")
    driver(session, "deps", "--list", str(ROOT / "tests" / "system-packages.txt"))
    driver(session, "dist")  # the default flavour, cfi: out/dist/current
    driver(session, "dist", "--flavour", "hardened")  # the gcc builds test_cfi.py compares with
    driver(session, "dist", "--flavour", "plain")  # (bench uses plain too: built once, cached)
    env = dict(DRIVER_ENV, PYISOLATE_DIST=str(DIST))
    if "PYISOLATE_REQUIRE_ALL" in os.environ:
        env["PYISOLATE_REQUIRE_ALL"] = os.environ["PYISOLATE_REQUIRE_ALL"]
    session.run("pytest", *(session.posargs or ["tests"]), env=env)


@nox.session
def lint(session: nox.Session) -> None:
    install(session, "lint")
    paths = ["build", "src", "sitecustomize", "tests", "demo", "bench", "docker", "fuzz", "noxfile.py"]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)


@nox.session
def vmtest(session: nox.Session) -> None:
    """The BPF-LSM programs in QEMU guests booting Debian's 6.1 and 6.12 kernels, the built
    distribution's runtime in them, and a negative control without `bpf` in lsm=
    (tests/vm/vmtest.py; `-- --kernel 6.1`, `-- --no-runtime` etc.)."""
    install(session, "build")
    driver(session, "deps", "--list", str(ROOT / "tests" / "vm" / "system-packages.txt"))
    driver(session, "dist")  # --runtime runs it in the guests (`-- --no-runtime` skips that)
    harness, out = ROOT / "tests" / "vm" / "vmtest.py", ROOT / "out" / "vmtest" / "results.json"
    session.run("python", str(harness), "--runtime", "--json", str(out), *session.posargs, env=DRIVER_ENV)


@nox.session
def fuzz(session: nox.Session) -> None:
    """atheris on the sealed broker's frame decoder and handshake parser, a bounded time per
    target (`-- --seconds N`, default 60); the C core built for the host Python with ASan
    and coverage (fuzz/run.py says why)."""
    install(session, "fuzz")
    driver(session, "dist")  # the cached static libsodium and the interpreter's compiler flags
    session.run("python", str(ROOT / "fuzz" / "run.py"), *(session.posargs or ["--seconds", "60"]), env=DRIVER_ENV)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks with same-run baselines (`-- --quick` for a smoke run)."""
    install(session, "build")
    driver(session, "dist")
    driver(session, "dist", "--flavour", "plain")  # the baseline of bench/interp.py
    driver(session, "dist", "--flavour", "hardened")
    install(session, "bench")  # report, schema check, RestrictedPython and nsjail (peers)
    driver(session, "deps", "--list", str(ROOT / "bench" / "system-packages.txt"))  # the other peers
    out = ROOT / "out" / "bench"
    session.run("rm", "-rf", str(out / "parts"), external=True)  # each suite writes its part afresh
    session.run(
        str(DIST / "bin" / "python3"),
        str(ROOT / "bench" / "runtime.py"),
        "--json",
        str(out / "runtime.json"),
        *session.posargs,
        external=True,
    )
    session.run(
        str(DIST / "bin" / "python3"),
        str(ROOT / "bench" / "interp.py"),
        "--json",
        str(out / "interp.json"),
        *session.posargs,
        external=True,
    )
    session.run(str(DIST / "bin" / "python3"), str(ROOT / "bench" / "scaling.py"), *session.posargs, external=True)
    session.run(str(DIST / "bin" / "python3"), str(ROOT / "bench" / "reload.py"), *session.posargs, external=True)
    session.run(str(DIST / "bin" / "python3"), str(ROOT / "bench" / "broker.py"), *session.posargs, external=True)
    # the memory cap's allocator cost on the gcc build against a cached gcc build without the
    # patch (exit 2: none here); gcc, because only gcc builds without it were ever made
    hardened = ROOT / "out" / "dist" / "hardened" / "bin" / "python3.14t"
    session.run(
        str(DIST / "bin" / "python3"),
        str(ROOT / "bench" / "alloc_cap.py"),
        "--python",
        str(hardened),
        "--json",
        str(out / "alloc_cap.json"),
        *session.posargs,
        external=True,
        success_codes=[0, 2],
    )
    session.run("python", str(ROOT / "bench" / "peers" / "run.py"), "--dist", str(DIST), *session.posargs)
    # every suite's part (and runtime.json, interp.json) → results.json, validated, then the report
    session.run("python", str(ROOT / "bench" / "results.py"), "merge")
    session.run("python", str(ROOT / "bench" / "results.py"), "check", str(out / "results.json"), "--min-results", "20")
    session.run("python", str(ROOT / "bench" / "report.py"))


# --- distribution ------------------------------------------------------------------------


@nox.session
def dist(session: nox.Session) -> None:
    """Build (or reuse from the cache) the prefix; `-- --flavour plain` for another flavour."""
    install(session, "build")
    driver(session, "dist", *session.posargs)


@nox.session
def release(session: nox.Session) -> None:
    """Signed release artefacts in out/release/ (`-- --key FILE` or `-- --ephemeral-key`)."""
    install(session, "build")
    driver(session, "dist")
    driver(session, "release", *session.posargs)


@nox.session
def repro(session: nox.Session) -> None:
    """Build the release twice from scratch (two clones, two caches, two times, another
    umask, locale and time zone) and compare the tarballs; diffoscope shows differences."""
    install(session, "build")
    epoch = session.run("git", "log", "-1", "--format=%ct", external=True, silent=True).strip()
    work = ROOT / "out" / "repro"
    session.run("rm", "-rf", str(work), external=True)
    digests = []
    for n, (umask, lang, tz) in enumerate([("022", "C.UTF-8", "UTC"), ("077", "C", "Asia/Tokyo")]):
        clone, cache_dir = work / f"build-{n}" / "src", work / f"build-{n}" / "cache"
        session.run("git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone), external=True)
        env = {
            "PYISOLATE_CACHE": str(cache_dir),
            "SOURCE_DATE_EPOCH": epoch,
            "LC_ALL": lang,
            "TZ": tz,
            "PYTHONPATH": str(clone / "build"),
        }
        script = f"umask {umask} && python -m pyisolate_build dist && python -m pyisolate_build release --ephemeral-key"
        session.run("bash", "-c", f"cd {clone} && {script}", env=env, external=True)
        tarball = next((clone / "out" / "release").glob("*.tar.xz"))
        digests.append((tarball, session.run("sha256sum", str(tarball), external=True, silent=True).split()[0]))
        session.run("sleep", "2", external=True)  # the second build starts at another time
    (first, a), (second, b) = digests
    session.log(f"build 1: {a}\nbuild 2: {b}")
    if a != b:
        install(session, "repro", binary_only=False)  # diffoscope: sdist only on PyPI; pinned with hashes
        session.run("diffoscope", "--text", str(work / "diffoscope.txt"), str(first), str(second), success_codes=[0, 1])
        session.error(f"the two builds differ; see {work / 'diffoscope.txt'}")
    session.log("reproducible: both builds gave the same tarball")


@nox.session
def docker(session: nox.Session) -> None:
    """Builder and runtime images from a debootstrap'ed Debian bookworm, no registry
    (docker/images.py): the builder's release tarball must equal the native build's, and
    the runtime image must run an untrusted script sandboxed. Starts the project's own
    dockerd (docker/dockerd.sh) when none runs, and then stops it at the end, also on failure."""
    install(session, "build")
    driver(session, "deps", "--list", str(ROOT / "docker" / "system-packages.txt"))
    dockerd = str(ROOT / "docker" / "dockerd.sh")
    ours = session.run(dockerd, "status", external=True, success_codes=[0, 3], silent=True).startswith("dockerd: not")
    session.run(dockerd, "start", external=True)  # reuses a running one (then left running)
    try:
        host = session.run(dockerd, "env", external=True, silent=True).strip().split("=", 1)[1]
        images = str(ROOT / "docker" / "images.py")
        session.run("python", images, *session.posargs, env=dict(DRIVER_ENV, DOCKER_HOST=host), success_codes=[0, 3])
        results = json.loads((ROOT / "out" / "docker" / "results.json").read_text())
        if not results["checks"]["same tarball"]["ok"]:  # exit status 3
            install(session, "repro", binary_only=False)
            report = ROOT / "out" / "docker" / "diffoscope.txt"
            tarballs = [results["tarballs"]["host"], results["tarballs"]["container"]]
            session.run("diffoscope", "--text", str(report), *tarballs, success_codes=[0, 1])
            session.error(f"the builder image's tarball differs from the native one; see {report}")
    finally:
        if ours:
            session.run(dockerd, "stop", external=True)


@nox.session
def audit(session: nox.Session) -> None:
    """ELF hardening audit of out/dist/current (or `-- PREFIX [--flavour NAME]`)."""
    install(session, "build")
    driver(session, "audit", *session.posargs)
