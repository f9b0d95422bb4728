"""Runtime benchmarks, each with a baseline measured in the same run.

    out/dist/current/bin/python3 bench/runtime.py [--quick] [--json out/bench/runtime.json]

Runs on the distribution's interpreter (it hosts the supervisor). Prints one table:
median, spread (p10–p90), the baseline and the ratio. Targets are goals, not assertions.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
from concurrent import interpreters
from pathlib import Path

import pyisolate as iso
from pyisolate import framing

BIN = Path(sys.executable).parent


def summary(samples: list[float]) -> dict:
    samples = sorted(samples)
    n = len(samples)
    return {
        "samples": n,
        "median": statistics.median(samples),
        "p10": samples[int(n * 0.1)],
        "p90": samples[min(n - 1, int(n * 0.9))],
    }


def timed(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def bench_spawn(n: int) -> tuple[dict, dict, dict]:
    baseline = timed(lambda: interpreters.create().close(), n)
    with iso.Supervisor(pool=0) as sup:
        sup.spawn("prime").close()  # the cell exists; what is measured is the sandbox
        cold = []
        for i in range(n):
            t0 = time.perf_counter()
            sb = sup.spawn(f"cold{i}")
            cold.append(time.perf_counter() - t0)
            assert not sb.spawn_info["warm"]
    with iso.Supervisor(pool=n) as sup:
        sup.spawn("prime")
        time.sleep(0.1)
        deadline = time.time() + 60 + n
        warm = []
        while len(warm) < n and time.time() < deadline:
            t0 = time.perf_counter()
            sb = sup.spawn()
            took = time.perf_counter() - t0
            if sb.spawn_info["warm"]:
                warm.append(took)
            else:
                time.sleep(0.05)
    return summary(cold), summary(warm), summary(baseline)


def _echo_server(fd: int) -> None:  # runs in a child process: the transport floor
    chan = framing.Channel(socket.socket(fileno=fd))
    while (msg := chan.recv()) is not None:
        chan.send({"id": msg["id"], "ok": True, "v": msg["args"][0]})


def bench_round_trip(n: int) -> tuple[dict, dict]:
    payload = "x" * 1024
    with iso.Supervisor(pool=0) as sup:
        sb = sup.spawn("rt", "compute-only")
        for _ in range(50):
            sb.call("builtins.str", payload)
        sandboxed = timed(lambda: sb.call("builtins.str", payload), n)
    ours, theirs = socket.socketpair()
    here = str(Path(__file__).parent)
    child = subprocess.Popen(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {here!r}); import runtime; runtime._echo_server({theirs.fileno()})",
        ],
        pass_fds=[theirs.fileno()],
    )
    theirs.close()
    chan = framing.Channel(ours)
    rid = 0

    def echo():
        nonlocal rid
        rid += 1
        chan.send({"id": rid, "op": "call", "args": [payload]})
        chan.recv()

    for _ in range(50):
        echo()
    plain = timed(echo, n)
    chan.close()
    child.wait(timeout=10)
    return summary(sandboxed), summary(plain)


def bench_rss(count: int) -> tuple[float, float]:
    with iso.Supervisor(pool=0) as sup:
        first = sup.spawn("rss0")
        time.sleep(0.2)
        before = rss_kib(first.cell.pid)
        for i in range(count):
            sup.spawn(f"rss{i + 1}")
        time.sleep(0.2)
        after = rss_kib(first.cell.pid)
    per_sandbox = (after - before) / count
    proc = subprocess.Popen([sys.executable, "-I", "-c", "import time; time.sleep(3)"])
    time.sleep(1.0)
    per_process = rss_kib(proc.pid)
    proc.kill()
    proc.wait()
    return per_sandbox, float(per_process)


def _open_close_worker(restrict, jobs: queue.SimpleQueue, results: queue.SimpleQueue) -> None:
    if restrict is not None:
        restrict()
    path = os.path.join(os.path.dirname(os.__file__), "os.py")  # inside the policy's read roots
    while (n := jobs.get()) is not None:
        t0 = time.perf_counter()
        for _ in range(n):
            os.close(os.open(path, os.O_RDONLY))
        results.put((time.perf_counter() - t0) / n)


def bench_guard_syscall(rounds: int, per_round: int) -> tuple[dict, dict]:
    """open()+close() in a thread with a sandbox's kernel guards (Landlock + the seccomp
    allow-list, applied by the same code a cell uses) vs a thread without, interleaved."""
    from pyisolate import kernel
    from pyisolate import policy as policy_mod

    stdlib = os.path.dirname(os.__file__)
    wire = policy_mod.load("stdlib-readonly").resolve(stdlib=stdlib, cwd=os.getcwd()).to_wire()
    workers = {}
    for name, restrict in (("plain", None), ("guarded", lambda: kernel.restrict_thread(wire, stdlib))):
        jobs, results = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(target=_open_close_worker, args=(restrict, jobs, results), daemon=True).start()
        workers[name] = (jobs, results)
    samples: dict[str, list[float]] = {"plain": [], "guarded": []}
    for i in range(rounds + 2):  # two warm-up rounds
        for name, (jobs, results) in workers.items():
            jobs.put(per_round)
            took = results.get()
            if i >= 2:
                samples[name].append(took)
    for jobs, _ in workers.values():
        jobs.put(None)
    return summary(samples["guarded"]), summary(samples["plain"])


def _syscall_worker(jobs: queue.SimpleQueue, results: queue.SimpleQueue) -> None:
    """Runs `kind` n times per job: "getppid" (one system call) or "socket" (socket+close)."""
    while (job := jobs.get()) is not None:
        kind, n = job
        t0 = time.perf_counter()
        if kind == "getppid":
            for _ in range(n):
                os.getppid()
        else:
            for _ in range(n):
                socket.socket().close()
        results.put((time.perf_counter() - t0) / n)


def bench_bpf_guards(rounds: int, per_round: int) -> dict[str, tuple[dict, dict, dict]] | None:
    """The host BPF guards' cost per system call: a thread marked as a sandbox's (rules
    allow any TCP connect, so socket() succeeds) and an unmarked thread, each round with
    guard.bpf.o attached, against the same threads with no programs attached (the round's
    baseline, measured between detaching and attaching again). None without root/BPF."""
    from pyisolate import bpf

    try:
        bpf.Guard().close()
    except (bpf.BpfUnavailable, OSError) as exc:
        print(f"(host BPF guards not benchmarked: {exc})", file=sys.stderr)
        return None
    workers = {}
    for name in ("unmarked", "marked"):
        jobs, results = queue.SimpleQueue(), queue.SimpleQueue()
        t = threading.Thread(target=_syscall_worker, args=(jobs, results), daemon=True)
        t.start()
        workers[name] = (jobs, results, t)
    samples = {(kind, name): [] for kind in ("getppid", "socket") for name in ("baseline", "unmarked", "marked")}

    def measure(kind: str, name: str, keep: bool) -> None:
        jobs, results, _ = workers["marked" if name == "marked" else "unmarked"]
        jobs.put((kind, per_round if kind == "getppid" else per_round // 10))
        took = results.get()
        if keep:
            samples[(kind, name)].append(took)

    for i in range(rounds + 1):  # one warm-up round
        for kind in ("getppid", "socket"):
            measure(kind, "baseline", i > 0)
        guard = bpf.Guard()
        policy = guard.add_policy([("*", "*")])
        guard.mark_thread(workers["marked"][2].native_id, policy, bpf.MARK_NET | bpf.MARK_KILL)
        for kind in ("getppid", "socket"):
            for name in ("unmarked", "marked") if i % 2 else ("marked", "unmarked"):  # no order bias
                measure(kind, name, i > 0)
        guard.close()
    for jobs, _, _ in workers.values():
        jobs.put(None)
    return {
        kind: (
            summary(samples[(kind, "marked")]),
            summary(samples[(kind, "unmarked")]),
            summary(samples[(kind, "baseline")]),
        )
        for kind in ("getppid", "socket")
    }


def bench_launcher(n: int) -> tuple[dict, dict]:
    launcher = [str(BIN / "pyisolate-python"), "-c", "pass"]
    plain = [sys.executable, "-I", "-c", "pass"]
    for cmd in (launcher, plain):
        subprocess.run(cmd, check=True)
    return (
        summary(timed(lambda: subprocess.run(launcher, check=True), n)),
        summary(timed(lambda: subprocess.run(plain, check=True), n)),
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="few samples: a smoke run")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    n = 5 if args.quick else 40
    results = []

    def record(metric, unit, value, baseline, baseline_name, target):
        results.append(
            {
                "metric": metric,
                "unit": unit,
                **value,
                "baseline": baseline_name,
                "baseline_median": baseline,
                "ratio": value["median"] / baseline if baseline else None,
                "target": target,
            }
        )

    cold, warm, base = bench_spawn(n)
    record(
        "sandbox spawn, cold (new interpreter in a running cell)",
        "s",
        cold,
        base["median"],
        "interpreters.create()+close() in-process",
        "≤ 5 ms",
    )
    record(
        "sandbox spawn, warm pool", "s", warm, base["median"], "interpreters.create()+close() in-process", "≤ 0.5 ms"
    )
    sandboxed, plain = bench_round_trip(200 if args.quick else 3000)
    record(
        "call round trip, 1 kB each way", "s", sandboxed, plain["median"], "same framing, plain echo process", "≤ 30 µs"
    )
    per_sandbox, per_process = bench_rss(5 if args.quick else 50)
    results.append(
        {
            "metric": "RSS per idle sandbox",
            "unit": "KiB",
            "samples": 1,
            "median": per_sandbox,
            "p10": per_sandbox,
            "p90": per_sandbox,
            "baseline": "one python3.14t process",
            "baseline_median": per_process,
            "ratio": per_sandbox / per_process,
            "target": "≤ 2 MiB",
        }
    )
    guarded, unguarded = bench_guard_syscall(5 if args.quick else 40, 2000)
    record(
        "open()+close(), sandbox thread (Landlock + seccomp)",
        "s",
        guarded,
        unguarded["median"],
        "open()+close() in an unguarded thread, same process",
        "",
    )
    bpf_costs = bench_bpf_guards(3 if args.quick else 15, 20000)
    for kind, what in (("getppid", "getppid()"), ("socket", "socket()+close()")):
        if bpf_costs is None:
            break
        marked, unmarked, base = bpf_costs[kind]
        baseline = f"{what}, unmarked thread, no BPF programs attached"
        record(f"{what}, sandbox-marked thread (host BPF guards)", "s", marked, base["median"], baseline, "")
        record(f"{what}, unmarked thread (host BPF guards attached)", "s", unmarked, base["median"], baseline, "")
    launched, bare = bench_launcher(5 if args.quick else 20)
    record("pyisolate-python -c pass", "s", launched, bare["median"], "python3.14t -I -c pass", "")

    def fmt(value, unit):
        if unit == "s":
            if value < 1e-5:
                return f"{value * 1e9:9.0f} ns"
            return f"{value * 1e6:9.1f} µs" if value < 1e-3 else f"{value * 1e3:9.2f} ms"
        return f"{value:9.0f} {unit}"

    print(
        f"PyIsolate runtime benchmarks — {platform.node()} {os.cpu_count()} CPUs, {platform.python_version()}"
        f"{' (quick)' if args.quick else ''}"
    )
    print(f"{'metric':58} {'median':>12} {'p10–p90':>25} {'baseline':>12} {'ratio':>7}  target")
    for r in results:
        spread = f"{fmt(r['p10'], r['unit']).strip()}–{fmt(r['p90'], r['unit']).strip()}"
        ratio = f"{r['ratio']:6.2f}x" if r["ratio"] is not None else ""
        print(
            f"{r['metric']:58} {fmt(r['median'], r['unit'])} {spread:>25} "
            f"{fmt(r['baseline_median'], r['unit'])} {ratio:>7}  {r['target']}"
        )
        print(f"{'':58}   baseline: {r['baseline']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"date": time.strftime("%Y-%m-%d"), "quick": args.quick, "results": results}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
