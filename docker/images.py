"""The Docker images, made without any container registry (run by `nox -s docker`).

    base      docker/rootfs.sh: debootstrap --variant=minbase of Debian bookworm → `docker import`
    builder   docker/builder.Dockerfile on the base: the build driver's system packages and
              its Python dependencies (wheels downloaded on the host, hashes checked)
    build     the same commit built twice: natively (host, its cache) and in the builder
              (a fresh cache, another host name); the release tarballs must be identical
    runtime   docker/runtime.Dockerfile on the base: runtime libraries + the unpacked tarball,
              entrypoint pyisolate-python, uid 10001, no compiler
    smoke     the runtime image runs demo/untrusted.py with --network none; every hostile
              attempt is refused; every shared library resolves; no compiler is present

Results (durations, digests, checks) go to out/docker/results.json. Exit status 0 when
every check passed, 3 when the tarballs differ (both paths are in the results; the nox
session runs diffoscope on them), 1 on any other failure. Needs a running daemon:
`docker/dockerd.sh start` (and DOCKER_HOST from `docker/dockerd.sh env`).
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "build"))
from pyisolate_build import cache  # noqa: E402  (the driver's cache location)

DOCKER = os.environ.get("DOCKER", "/usr/bin/docker")
BASE_REPO = "pyisolate/bookworm-minbase"
BUILDER = "pyisolate/builder:local"
RUNTIME = "pyisolate/runtime:local"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")  # the host's trust store, for HTTPS downloads
BUILD = "python -m pyisolate_build dist && python -m pyisolate_build release --ephemeral-key"
SEEDED = "/root/.cache/pyisolate"  # the driver's default cache in the builder (HOME=/root)


class Failed(Exception):
    pass


def log(message: str) -> None:
    print(f"docker: {message}", flush=True)


def run(*cmd: str | Path, capture: bool = False, **kwargs) -> subprocess.CompletedProcess:
    args = [str(c) for c in cmd]
    proc = subprocess.run(args, text=True, capture_output=capture, **kwargs)
    if proc.returncode != 0:
        detail = f"\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}" if capture else ""
        raise Failed(f"`{' '.join(args)[:300]}` exited with {proc.returncode}{detail}")
    return proc


def docker(*args: str | Path, capture: bool = False, **kwargs) -> subprocess.CompletedProcess:
    return run(DOCKER, *args, capture=capture, **kwargs)


class Results:
    """Durations and facts, written to out/docker/results.json after every step."""

    def __init__(self, path: Path):
        self.path, self.data = path, {"durations_s": {}, "checks": {}}

    def timed(self, name: str, fn, *args):
        start = time.monotonic()
        try:
            return fn(*args)
        finally:
            seconds = round(time.monotonic() - start, 1)
            self.data["durations_s"][name] = seconds
            log(f"{name}: {seconds} s")
            self.save()

    def check(self, name: str, ok: bool, detail: str) -> None:
        self.data["checks"][name] = {"ok": ok, "detail": detail}
        log(f"{'ok  ' if ok else 'FAIL'} {name}: {detail}")
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".partial")
        tmp.write_text(json.dumps(self.data, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, self.path)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# --- base ------------------------------------------------------------------------------


def make_rootfs(tar: Path) -> None:
    run(ROOT / "docker" / "rootfs.sh", tar)


def base_image(results: Results, fresh: bool) -> str:
    """The minbase root file system of today (UTC), imported as BASE_REPO:YYYYMMDD."""
    day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
    tar = cache.root() / "docker" / f"bookworm-minbase-{day}.tar"
    tar.parent.mkdir(parents=True, exist_ok=True)
    if fresh or not tar.is_file():
        results.timed("debootstrap", make_rootfs, tar)
    else:
        log(f"reusing today's root file system {tar} (--fresh-base makes a new one)")
    tag = f"{BASE_REPO}:{day}"
    known = subprocess.run([DOCKER, "image", "inspect", tag], capture_output=True).returncode == 0
    if fresh or not known:  # a new import is a new image, and the builder's layers start over
        results.timed("import", docker, "import", "--change", 'CMD ["/bin/bash"]', tar, tag)
    manifest = tar.with_name(tar.name + ".manifest").read_text()
    results.data["base"] = {
        "tag": tag,
        "rootfs": str(tar),
        "archive": [x for x in manifest.splitlines() if x[:1] == "#"],
    }
    return tag


# --- builder and the two builds ----------------------------------------------------------


def builder_image(base: str, work: Path) -> str:
    ctx = work / "builder-context"
    shutil.rmtree(ctx, ignore_errors=True)
    (ctx / "wheels").mkdir(parents=True)
    shutil.copy(ROOT / "docker" / "builder.Dockerfile", ctx / "Dockerfile")
    shutil.copy(ROOT / "build" / "system-packages.txt", ctx / "system-packages.txt")
    shutil.copy(ROOT / "requirements" / "build.txt", ctx / "build.txt")
    # The host fetches the driver's wheels (its Python is bookworm's 3.11 too; hashes are
    # checked again inside): the image build needs the network only for Debian's archive.
    run(
        sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--require-hashes",
        "--only-binary=:all:", "-r", ctx / "build.txt", "-d", ctx / "wheels",
    )  # fmt: skip
    docker("build", "-q", "--network", "host", "--build-arg", f"BASE={base}", "-t", BUILDER, ctx, capture=True)
    return BUILDER


def clone(dest: Path, commit: str = "HEAD") -> Path:
    """A fresh clone of the checkout at `commit` (both builds take the same one, however
    the checkout moves meanwhile)."""
    shutil.rmtree(dest.parent, ignore_errors=True)
    run("git", "clone", "-q", "--no-hardlinks", ROOT, dest)
    run("git", "checkout", "-q", "--detach", commit, cwd=dest)
    return dest


def host_build(src: Path, epoch: str) -> Path:
    env = dict(os.environ, PYTHONPATH=str(src / "build"), SOURCE_DATE_EPOCH=epoch)
    run("bash", "-c", BUILD, cwd=src, env=env)
    return next((src / "out" / "release").glob("*.tar.xz"))


def container_build(src: Path, epoch: str) -> Path:
    """A cold build in the builder: the container's own cache (only the verified downloads
    are seeded, so no source is fetched twice; it lives in the container's file system,
    where the fixed build directory is too, because the driver publishes artefacts by
    rename), another host name, the container's own /var/tmp."""
    seed = cache.root() / "downloads"
    seed.mkdir(parents=True, exist_ok=True)
    docker(
        "run", "--rm", "--name", "pyisolate-docker-build", "--network", "host", "--hostname", "pyisolate-builder",
        "-v", f"{src}:/src", "-v", f"{seed}:/seed:ro", "-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro",
        "-e", f"SOURCE_DATE_EPOCH={epoch}",
        BUILDER, "sh", "-c", f"mkdir -p {SEEDED} && cp -r /seed {SEEDED}/downloads && {BUILD}",
    )  # fmt: skip
    return next((src / "out" / "release").glob("*.tar.xz"))


def build_inputs(tarball: Path) -> dict:
    """What the CPython build hashed (toolchain, package versions, …), from the provenance."""
    provenance = json.loads(next(tarball.parent.glob("*.provenance.json")).read_text())
    return provenance["buildDefinition"]["internalParameters"]["buildinfo"]


# --- runtime image and smoke test ---------------------------------------------------------


def runtime_image(base: str, tarball: Path, work: Path) -> str:
    ctx = work / "runtime-context"
    shutil.rmtree(ctx, ignore_errors=True)
    ctx.mkdir(parents=True)
    shutil.copy(ROOT / "docker" / "runtime.Dockerfile", ctx / "Dockerfile")
    shutil.copy(ROOT / "docker" / "runtime-packages.txt", ctx / "runtime-packages.txt")
    os.link(tarball, ctx / tarball.name)
    release = tarball.name.removesuffix(".tar.xz")
    docker(
        "build", "-q", "--network", "host", "--build-arg", f"BASE={base}", "--build-arg", f"RELEASE={release}",
        "-t", RUNTIME, ctx, capture=True,
    )  # fmt: skip
    return RUNTIME


def smoke(results: Results, image: str) -> None:
    def in_image(*args: str, entrypoint: str | None = None, **kw) -> subprocess.CompletedProcess:
        cmd = [DOCKER, "run", "--rm", "--network", "none"]
        cmd += ["--entrypoint", entrypoint] if entrypoint else []
        return subprocess.run([*cmd, *kw.get("mounts", []), image, *args], text=True, capture_output=True)

    demo = in_image("/demo/untrusted.py", mounts=["-v", f"{ROOT / 'demo'}:/demo:ro"])
    lines = demo.stdout.splitlines()
    attempts = [line.split()[0] for line in lines[1:] if line.startswith("  ")]
    allowed = [line.strip() for line in lines if line.startswith("  ALLOWED")]
    ok = (
        demo.returncode == 0
        and lines[:1] == ['honest work: mean=2.8, json={"argv": []}']
        and len(attempts) >= 10
        and len(allowed) == 1
        and "read this script's own directory" in allowed[0]
    )
    results.check(
        "untrusted script sandboxed",
        ok,
        f"exit {demo.returncode}, {attempts.count('blocked')} of {len(attempts)} attempts blocked"
        + ("" if ok else f"\n{demo.stdout}{demo.stderr[-2000:]}"),
    )
    uid = in_image("-u", entrypoint="/usr/bin/id")
    results.check("non-root user", uid.stdout.strip() == "10001", f"uid {uid.stdout.strip()}{uid.stderr}")
    tools = in_image(
        "-c",
        "for t in cc gcc c99 c++ g++ clang cpp as ld tcc; do command -v $t; done;"
        " dpkg-query -W -f '${Package}\\n' | grep -E '^(gcc|g\\+\\+|cpp|clang|llvm|binutils|tcc)'"
        " | grep -v -- '-base$'",
        entrypoint="/bin/sh",
    )
    found = tools.stdout.split()
    results.check("no compiler", not found, "none found" if not found else f"found: {' '.join(found)}")
    libs = in_image(
        "-c",
        "find /opt/pyisolate/ \\( -name '*.so' -o -name python3.14t \\) -type f -exec ldd {} + | grep 'not found'",
        entrypoint="/bin/sh",
    )
    missing = sorted(set(libs.stdout.split("\n")) - {""})
    results.check(
        "shared libraries resolve", not missing, "all resolve" if not missing else "missing: " + "; ".join(missing)
    )
    # Which kernel guards Docker's own seccomp profile leaves to the sandbox (recorded, not judged).
    doctor = in_image("doctor", "--json", entrypoint="/opt/pyisolate/bin/pyisolate")
    try:
        results.data["doctor_in_container"] = json.loads(doctor.stdout)
    except ValueError:
        results.data["doctor_in_container"] = {"error": (doctor.stdout + doctor.stderr)[-2000:]}
    size = docker("image", "inspect", "-f", "{{.Size}}", image, capture=True).stdout.strip()
    results.data["runtime_image_bytes"] = int(size)


# --- main --------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fresh-base", action="store_true", help="debootstrap even if today's root fs exists")
    parser.add_argument("--work", type=Path, default=ROOT / "out" / "docker")
    args = parser.parse_args(argv)
    work = args.work
    results = Results(work / "results.json")
    try:
        base = base_image(results, args.fresh_base)
        results.timed("builder image", builder_image, base, work)
        host_src = clone(work / "host" / "src")
        epoch = run("git", "log", "-1", "--format=%ct", cwd=host_src, capture=True).stdout.strip()
        commit = run("git", "rev-parse", "HEAD", cwd=host_src, capture=True).stdout.strip()
        results.data.update(commit=commit, source_date_epoch=int(epoch))
        native = results.timed("host build", host_build, host_src, epoch)
        box_src = clone(work / "builder" / "src", commit)
        boxed = results.timed("container build", container_build, box_src, epoch)
        digests = {"host": sha256(native), "container": sha256(boxed)}
        results.data["tarballs"] = {"host": str(native), "container": str(boxed), "sha256": digests}
        host_inputs, box_inputs = build_inputs(native), build_inputs(boxed)
        differing = sorted(k for k in host_inputs.keys() | box_inputs.keys() if host_inputs.get(k) != box_inputs.get(k))
        results.check("same build inputs", not differing, "identical" if not differing else f"differ in {differing}")
        same = digests["host"] == digests["container"]
        results.check(
            "same tarball",
            same,
            f"{native.name} sha256 {digests['host']}"
            + ("" if same else f" (host) != {digests['container']} (container)"),
        )
        if not same:
            return 3
        results.timed("runtime image", runtime_image, base, native, work)
        smoke(results, RUNTIME)
    except Failed as exc:
        log(f"error: {exc}")
        return 1
    results.save()
    failed = [name for name, c in results.data["checks"].items() if not c["ok"]]
    log(f"{len(results.data['checks']) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
