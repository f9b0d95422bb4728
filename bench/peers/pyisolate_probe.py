"""PyIsolate through its API, as one more peer: runs on the built interpreter.

    out/dist/current/bin/python3 bench/peers/pyisolate_probe.py WORKLOAD.py N_SPAWN N_EXTRA

First measures, in running supervisors (BATCH sandboxes each), `print(1+1)` as untrusted
code in a sandbox spawned cold (a new interpreter in a running cell) and from the warm
pool, and the RSS a cell gains per extra idle sandbox. Then prints `ready {json}` and serves the line
protocol of bench/peers/workload.py with one sandbox: "E…" goes through
`Sandbox.call("builtins.str", …)`, "R<n>" times n such 1 kB calls here (the supervisor is
the caller, as an application would be: one hop, like the pipe to the other peers), and
"C<scale>" runs the workload inside the sandbox (exec + post: call() reaches importable
modules only).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pyisolate as iso

PRINT = "print(1+1)"
KEEP: list = []
BATCH = 8


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def spawn_and_print(sup: iso.Supervisor, name: str | None, warm: bool) -> float | None:
    """Seconds for spawn + exec(print(1+1)); None when the pool had nothing warm yet."""
    t0 = time.perf_counter()
    sb = sup.spawn(name, "compute-only")
    sb.exec(PRINT)
    took = time.perf_counter() - t0
    KEEP.append(sb)  # closed with its supervisor: tearing one down would overlap the next spawn
    return took if sb.spawn_info["warm"] == warm else None


def spawns(n: int, warm: bool, info: dict) -> list[float]:
    """n samples, BATCH sandboxes per supervisor (a cell each): the sandboxes stay alive
    until their batch ends, so no teardown overlaps a measured spawn."""
    samples: list[float] = []
    try:
        while len(samples) < n:
            with iso.Supervisor(pool=2 if warm else 0, stdout=subprocess.DEVNULL) as sup:
                sup.spawn("prime", "compute-only").close()  # the cell exists; the sandbox is measured
                kept, deadline = 0, time.monotonic() + 60
                while kept < BATCH and len(samples) < n and time.monotonic() < deadline:
                    if warm:
                        time.sleep(0.05)  # the pool refills in the background
                    took = spawn_and_print(sup, None, warm)
                    kept += 1
                    if took is not None:
                        samples.append(took)
    except iso.PyIsolateError as exc:  # reported with the samples taken so far
        kind = "warm" if warm else "cold"
        info["spawn_error"] = f"{kind} spawn {len(samples) + 1} of {n}: {type(exc).__name__}: {exc}"
    return samples


def main() -> int:
    workload, n_spawn, n_extra = Path(sys.argv[1]).read_text(), int(sys.argv[2]), int(sys.argv[3])
    info: dict = {}
    info["spawn_cold"] = spawns(n_spawn, warm=False, info=info)
    info["spawn_warm"] = spawns(n_spawn, warm=True, info=info)
    with iso.Supervisor(pool=0, stdout=subprocess.DEVNULL) as sup:
        sb = sup.spawn("server", "compute-only")
        sb.exec(workload.split("\nif __name__")[0])
        time.sleep(0.3)
        before = rss_kib(sb.cell.pid)
        extra = []
        try:
            for i in range(n_extra):
                extra.append(sup.spawn(f"idle{i}", "compute-only"))
        except iso.PyIsolateError as exc:
            info["spawn_error"] = f"idle sandbox {len(extra) + 1} of {n_extra}: {type(exc).__name__}: {exc}"
        time.sleep(0.3)
        info["rss_per_sandbox_kib"] = (rss_kib(sb.cell.pid) - before) / max(1, len(extra))
        info["idle_sandboxes"] = len(extra)
        for other in extra:
            other.close()
        info["cell_pid"] = sb.cell.pid
        out = sys.stdout
        out.write("ready " + json.dumps(info) + "\n")
        out.flush()
        for line in sys.stdin:
            if line[:1] == "E":
                out.write(sb.call("builtins.str", line))
            elif line[:1] == "R":  # n round trips timed here: the supervisor is the caller, one hop
                payload, samples = "E" + "x" * 1023, []
                for _ in range(int(line[1:])):
                    t0 = time.perf_counter()
                    sb.call("builtins.str", payload)
                    samples.append(time.perf_counter() - t0)
                out.write(json.dumps(samples) + "\n")
            elif line[:1] == "C":
                sb.exec(f"post(timed_cpu({int(line[1:])}))", timeout=600)  # call() reaches modules only
                out.write(repr(sb.recv(timeout=60)) + "\n")
            else:
                out.write("?\n")
            out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
