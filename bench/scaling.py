"""Scaling: 1 → 1000 idle sandboxes in one supervisor (64 per cell, the default), against
one plain python3.14t process per sandbox.

    out/dist/current/bin/python3 bench/scaling.py [--quick] [--counts 1,10,100,1000]

For each count N, in a fresh supervisor: spawn N sandboxes (the default policy,
stdlib-readonly) one after another (cold, no pool); then, with all N alive and idle, the
memory of every cell (RSS and PSS summed); then 1 kB round trips: one caller cycling over
all N sandboxes (p50, p99), and up to 8 callers at once on disjoint sandboxes ("under
load": p50, p99 and calls per second). The same N as plain `python3.14t -I -S` echo
processes (the process-per-sandbox model) give the baselines for spawn and memory. A count
whose memory estimate (from the previous count) exceeds 60 % of MemAvailable is skipped
with that reason, and so is a count that cannot be reached (with the error), and every
larger one. Output: out/bench/parts/scaling.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyisolate as iso

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results  # noqa: E402

SUITE = "scaling"
POLICY = "stdlib-readonly"  # Supervisor.spawn's default
PAYLOAD = "x" * 1024
ECHO = "import sys\nfor line in sys.stdin:\n    sys.stdout.write(line)\n    sys.stdout.flush()\n"


class StepFailed(Exception):
    """A count could not be reached (reported in the part's skipped list)."""


def log(msg: str) -> None:
    print(f"[scaling {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def memory_kib(pids: list[int]) -> tuple[int, int]:
    rss = pss = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1])
            elif line.startswith("Pss:"):
                pss += int(line.split()[1])
    return rss, pss


def mem_available_kib() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1])
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def calls(sandboxes: list, n: int) -> list[float]:
    out = []
    for i in range(n):
        sb = sandboxes[i % len(sandboxes)]
        t0 = time.perf_counter()
        sb.call("builtins.str", PAYLOAD)
        out.append(time.perf_counter() - t0)
    return out


def under_load(sandboxes: list, per_caller: int) -> tuple[list[float], float]:
    """min(8, N) threads, each calling its own share of the sandboxes; (latencies, calls/s)."""
    callers = min(8, len(sandboxes))
    shares = [sandboxes[i::callers] for i in range(callers)]
    found: list[list[float]] = [[] for _ in range(callers)]
    errors: list[BaseException] = []
    gate = threading.Barrier(callers + 1)

    def work(i: int) -> None:
        gate.wait()
        try:
            found[i] = calls(shares[i], per_caller)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(callers)]
    for t in threads:
        t.start()
    gate.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise errors[0]
    flat = [x for xs in found for x in xs]
    return flat, len(flat) / wall


def pyisolate_step(n: int, rt_calls: int) -> dict:
    with iso.Supervisor(pool=0, stdout=subprocess.DEVNULL) as sup:
        spawn, sandboxes = [], []
        t_all = time.perf_counter()
        for i in range(n):
            t0 = time.perf_counter()
            try:
                sandboxes.append(sup.spawn(f"s{i}", POLICY, timeout=60))
            except iso.PyIsolateError as exc:
                raise StepFailed(f"sandbox {i + 1} of {n} failed: {type(exc).__name__}: {exc}") from exc
            spawn.append(time.perf_counter() - t0)
            if n >= 100 and (i + 1) % 100 == 0:
                log(f"  {i + 1}/{n} sandboxes up")
        total = time.perf_counter() - t_all
        time.sleep(1.0)  # idle: the cells' threads settle
        cells = [c.pid for c in sup.cells]
        rss, pss = memory_kib(cells)
        calls(sandboxes, min(len(sandboxes), 50) + 20)  # warm-up: every socket once (first 50)
        seq = calls(sandboxes, rt_calls)
        load, rate = under_load(sandboxes, max(20, rt_calls // min(8, n)))
        return {
            "spawn": spawn,
            "total": total,
            "cells": len(cells),
            "rss": rss,
            "pss": pss,
            "seq": seq,
            "load": load,
            "rate": rate,
        }


def process_step(python: str, n: int) -> dict:
    """N plain interpreters each running an idle echo loop: one process per sandbox."""
    procs, spawn = [], []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            p = subprocess.Popen([python, "-I", "-S", "-c", ECHO], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            p.stdin.write(b"ping\n")
            p.stdin.flush()
            p.stdout.readline()  # up and answering
            spawn.append(time.perf_counter() - t0)
            procs.append(p)
        time.sleep(1.0)
        rss, pss = memory_kib([p.pid for p in procs])
    finally:
        for p in procs:
            p.stdin.close()
        for p in procs:
            p.wait(timeout=30)
    return {"spawn": spawn, "rss": rss, "pss": pss}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1, 4, 16 sandboxes: a smoke run")
    parser.add_argument("--counts", default=None, help="comma-separated sandbox counts (default 1,10,100,1000)")
    parser.add_argument("--out", type=Path, default=None, help="default out/bench/parts/scaling.json")
    args = parser.parse_args()
    counts = [int(x) for x in (args.counts or ("1,4,16" if args.quick else "1,10,100,1000")).split(",")]
    rt_calls = 200 if args.quick else 2000
    python = sys.executable
    records: list[results.Result] = []
    skipped: list[results.Skip] = []
    per_sandbox_est = per_process_est = 12 * 1024  # KiB, until measured
    base: dict = {}  # round-trip percentiles at the first count
    failed = ""  # a count that failed: larger ones are not attempted
    for n in counts:
        avail = mem_available_kib()
        need = n * per_sandbox_est * 1.2
        if need > avail * 0.6:
            reason = (
                f"needs ~{need / 1024**2:.1f} GiB by the last step's figures; MemAvailable {avail / 1024**2:.1f} GiB"
            )
            log(f"N={n}: skipped ({reason})")
            skipped.append(results.Skip(SUITE, "pyisolate", reason, f"sandboxes={n}"))
            continue
        if failed:
            skipped.append(results.Skip(SUITE, "pyisolate", f"not attempted: {failed}", f"sandboxes={n}"))
            continue
        log(f"N={n}: PyIsolate")
        try:
            ours = pyisolate_step(n, rt_calls)
        except StepFailed as exc:
            failed = f"N={n}: {exc}"
            log(failed)
            skipped.append(results.Skip(SUITE, "pyisolate", str(exc), f"sandboxes={n}"))
            continue
        per_sandbox_est = ours["pss"] / n
        need = n * per_process_est * 1.2
        avail = mem_available_kib()
        if need > avail * 0.6:
            reason = f"needs ~{need / 1024**2:.1f} GiB; MemAvailable {avail / 1024**2:.1f} GiB"
            log(f"N={n}: no process-per-sandbox baseline ({reason})")
            skipped.append(results.Skip(SUITE, "process-per-sandbox", reason, f"sandboxes={n}"))
            theirs = None
        else:
            log(f"N={n}: one process per sandbox")
            theirs = process_step(python, n)
            per_process_est = theirs["pss"] / n
        params = {"sandboxes": n, "cells": ours["cells"]}

        def vs(what: str, value: float | None) -> tuple[str, float] | None:
            return (what, value) if value is not None else None

        def mine(name: str, unit: str, samples: list[float], label: str, baseline=None, p=params, **extra):
            return results.Result.of(
                SUITE, name, "pyisolate", unit, samples, baseline=baseline, params=p, label=label, **extra
            )

        per = "one python3.14t process per sandbox"
        records += [
            mine(
                "spawn",
                "s",
                ours["spawn"],
                "spawn one more sandbox (cold, sequential; a new cell every 64)",
                vs(f"{per}: started and answering", theirs and results.summary(theirs["spawn"])["median"]),
            ),
            mine("spawn.total", "s", [ours["total"]], f"all {n} sandboxes up, one after another"),
            mine(
                "rss.per_sandbox",
                "KiB",
                [ours["rss"] / n],
                "RSS of all cells / N",
                vs(f"{per} (RSS)", theirs and theirs["rss"] / n),
                notes="RSS counts shared pages in each process",
            ),
            mine(
                "pss.per_sandbox",
                "KiB",
                [ours["pss"] / n],
                "PSS of all cells / N",
                vs(f"{per} (PSS)", theirs and theirs["pss"] / n),
            ),
            mine(
                "rss.total",
                "MiB",
                [ours["rss"] / 1024],
                "RSS of all cells",
                vs("N python3.14t processes (RSS)", theirs and theirs["rss"] / 1024),
            ),
            mine(
                "pss.total",
                "MiB",
                [ours["pss"] / 1024],
                "PSS of all cells",
                vs("N python3.14t processes (PSS)", theirs and theirs["pss"] / 1024),
            ),
            mine("rt.1k.load.rate", "1/s", [ours["rate"]], "1 kB calls per second, min(8, N) callers"),
        ]
        if theirs:
            records.append(
                results.Result.of(
                    SUITE,
                    "spawn",
                    "process-per-sandbox",
                    "s",
                    theirs["spawn"],
                    params=params,
                    label="start one more python3.14t -I -S (answering)",
                )
            )
        for key, label in (("seq", "one caller cycling over all sandboxes"), ("load", "min(8, N) callers at once")):
            xs = ours[key]
            base.setdefault(key, (results.percentile(xs, 50), results.percentile(xs, 99)))
            for q, first in zip((50, 99), base[key], strict=True):
                v = results.percentile(xs, q)
                records.append(
                    results.Result(
                        SUITE,
                        f"rt.1k.{key}.p{q}",
                        "pyisolate",
                        "s",
                        v,
                        v,
                        v,
                        label=f"1 kB call round trip, p{q}, {label}",
                        params=params,
                        baseline=f"the same at N={counts[0]}",
                        baseline_median=first,
                        ratio=v / first,
                        notes=f"{len(xs)} calls",
                    )
                )
        log(
            f"N={n}: spawn p50 {results.summary(ours['spawn'])['median'] * 1e3:.1f} ms, "
            f"PSS/sandbox {ours['pss'] / n / 1024:.1f} MiB"
            + (f" (process: {theirs['pss'] / n / 1024:.1f} MiB)" if theirs else "")
            + f", rt p99 under load {results.percentile(ours['load'], 99) * 1e6:.0f} µs"
        )
    path = results.write_part(SUITE, records, skipped=skipped, quick=args.quick, path=args.out)
    log(f"{len(records)} results, {len(skipped)} skipped → {path}")
    return 0 if records else 1


if __name__ == "__main__":
    sys.exit(main())
