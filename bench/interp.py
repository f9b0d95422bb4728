"""Interpreter speed: the same pure-Python workloads on each build flavour, with the
plain gcc build (no hardening flags) as the baseline measured in the same run.

    python3 bench/interp.py [--quick] [--runs N] [--json out/bench/interp.json]

Needs out/dist/plain, out/dist/hardened and out/dist/cfi (`./dev dist -- --flavour NAME`;
`./dev bench` builds them). Each run starts every interpreter afresh (`-I -S -B`) in a
rotating order and times each workload once after a warm-up (CPU time of the process; wall
time goes to the JSON too); the table shows per-workload medians over the runs, each
flavour's ratio to plain, and the geometric mean of the ratios.
The goal for the cfi flavour is a geometric mean ≤ 1.05; nothing here asserts it.

The workloads are shipped in this file and fixed (sizes, seeds): nbody (float arithmetic),
richards (an OS-scheduler simulation: objects, method calls, attributes), fannkuch
(list permutations), json (dumps/loads through the C accelerator), dict_str (word counts,
formatting, joins), and generators (closures, generator pipelines, sorting with keys).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FLAVOURS = ("plain", "hardened", "cfi")
BASELINE = "plain"

# --- workloads (run inside the measured interpreter) ---------------------------------------


def nbody(scale: int) -> float:
    pi = 3.14159265358979323
    solar_mass = 4 * pi * pi
    days_per_year = 365.24
    bodies = [
        [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0], solar_mass],
        [
            [4.84143144246472090e00, -1.16032004402742839e00, -1.03622044471123109e-01],
            [
                1.66007664274403694e-03 * days_per_year,
                7.69901118419740425e-03 * days_per_year,
                -6.90460016972063023e-05 * days_per_year,
            ],
            9.54791938424326609e-04 * solar_mass,
        ],
        [
            [8.34336671824457987e00, 4.12479856412430479e00, -4.03523417114321381e-01],
            [
                -2.76742510726862411e-03 * days_per_year,
                4.99852801234917238e-03 * days_per_year,
                2.30417297573763929e-05 * days_per_year,
            ],
            2.85885980666130812e-04 * solar_mass,
        ],
        [
            [1.28943695621391310e01, -1.51111514016986312e01, -2.23307578892655734e-01],
            [
                2.96460137564761618e-03 * days_per_year,
                2.37847173959480950e-03 * days_per_year,
                -2.96589568540237556e-05 * days_per_year,
            ],
            4.36624404335156298e-05 * solar_mass,
        ],
        [
            [1.53796971148509165e01, -2.59193146099879641e01, 1.79258772950371181e-01],
            [
                2.68067772490389322e-03 * days_per_year,
                1.62824170038242295e-03 * days_per_year,
                -9.51592254519715870e-05 * days_per_year,
            ],
            5.15138902046611451e-05 * solar_mass,
        ],
    ]
    pairs = [(bodies[i], bodies[j]) for i in range(len(bodies)) for j in range(i + 1, len(bodies))]
    dt = 0.01
    for _ in range(scale * 10000):
        for ([x1, y1, z1], v1, m1), ([x2, y2, z2], v2, m2) in pairs:
            dx, dy, dz = x1 - x2, y1 - y2, z1 - z2
            mag = dt * ((dx * dx + dy * dy + dz * dz) ** -1.5)
            b1m, b2m = m1 * mag, m2 * mag
            v1[0] -= dx * b2m
            v1[1] -= dy * b2m
            v1[2] -= dz * b2m
            v2[0] += dx * b1m
            v2[1] += dy * b1m
            v2[2] += dz * b1m
        for r, [vx, vy, vz], _m in bodies:
            r[0] += dt * vx
            r[1] += dt * vy
            r[2] += dt * vz
    return round(sum(abs(c) for body in bodies for c in body[0]), 9)


class _Packet:
    __slots__ = ("data", "kind", "link", "target")

    def __init__(self, link, target, kind):
        self.link, self.target, self.kind, self.data = link, target, kind, [0] * 4


class _Task:
    def __init__(self, scheduler, ident, priority, queue):
        self.scheduler, self.ident, self.priority, self.queue = scheduler, ident, priority, queue
        self.held = False
        self.count = 0
        scheduler.tasks[ident] = self

    def runnable(self):
        return self.queue is not None and not self.held

    def take(self):
        packet = self.queue
        self.queue = packet.link
        packet.link = None
        return packet

    def run(self, packet):
        raise NotImplementedError


class _Idle(_Task):
    def __init__(self, scheduler, ident, seed, limit):
        super().__init__(scheduler, ident, 0, None)
        self.seed, self.limit = seed, limit

    def runnable(self):
        return not self.held

    def run(self, packet):
        self.limit -= 1
        if self.limit == 0:
            return False
        self.seed = (self.seed * 1103515245 + 12345) & 0x7FFFFFFF
        target = 2 + (self.seed >> 8) % 4
        self.scheduler.wake(target)
        return True


class _Worker(_Task):
    def run(self, packet):
        self.count += 1
        if packet is None:
            return True
        packet.data = [(d + self.count + i) % 26 for i, d in enumerate(packet.data)]
        packet.target = 4 + self.count % 2
        self.scheduler.send(packet)
        return True


class _Device(_Task):
    def run(self, packet):
        if packet is None:
            return True
        self.count += sum(packet.data)
        packet.target = 2 + self.count % 2
        self.scheduler.send(packet)
        self.held = self.count % 7 == 0
        return True


class _Scheduler:
    def __init__(self):
        self.tasks = {}
        self.holds = 0

    def wake(self, ident):
        task = self.tasks[ident]
        if task.held:
            task.held = False
            self.holds += 1

    def send(self, packet):
        task = self.tasks[packet.target]
        packet.link = None
        if task.queue is None:
            task.queue = packet
        else:
            last = task.queue
            while last.link is not None:
                last = last.link
            last.link = packet

    def schedule(self):
        order = sorted(self.tasks.values(), key=lambda t: -t.priority)
        steps = 0
        while True:
            for task in order:
                if task.runnable():
                    packet = task.take() if task.queue is not None else None
                    if not task.run(packet):
                        return steps
                    steps += 1
                    break
            else:
                for task in order:
                    task.held = False


def richards(scale: int) -> int:
    total = 0
    for round_ in range(scale * 4):
        sched = _Scheduler()
        _Idle(sched, 1, round_ + 1, 2500)
        for ident in (2, 3):
            worker = _Worker(sched, ident, 1000 + ident, None)
            for k in range(3):
                sched.send(_Packet(None, ident, k))
            worker.held = False
        for ident in (4, 5):
            _Device(sched, ident, 4000 + ident, None)
        total += sched.schedule() + sched.holds
    return total


def fannkuch(scale: int) -> int:
    n = 8 + (scale > 2)
    best = 0
    checksum = 0
    perm1 = list(range(n))
    count = [i + 1 for i in range(n)]
    sign = 1
    runs = 0
    while True:
        perm = perm1[:]
        flips = 0
        k = perm[0]
        while k:
            perm[: k + 1] = perm[k::-1]
            flips += 1
            k = perm[0]
        best = max(best, flips)
        checksum += sign * flips
        runs += 1
        # next permutation (counting order)
        sign = -sign
        i = 1
        while i < n:
            perm1.insert(i, perm1.pop(0))
            count[i] -= 1
            if count[i] > 0:
                break
            count[i] = i + 1
            i += 1
        else:
            return best * 1000000 + checksum % 1000 + runs
        if runs >= 50000 * scale:
            return best * 1000000 + checksum % 1000 + runs


def json_roundtrip(scale: int) -> int:
    doc = {
        "users": [
            {
                "id": i,
                "name": f"user{i}",
                "email": f"user{i}@example.org",
                "score": i * 1.25,
                "tags": ["a", "b", "c"][: i % 4],
                "active": i % 3 == 0,
                "address": {"street": f"{i} Main St", "zip": f"{10000 + i}", "geo": [i / 7, -i / 11]},
            }
            for i in range(200)
        ],
        "meta": {"version": 3, "note": "ünïcödé ✓ " * 4},
    }
    size = 0
    for _ in range(scale * 40):
        text = json.dumps(doc, sort_keys=True)
        back = json.loads(text)
        size += len(text) + len(back["users"])
    return size


def dict_str(scale: int) -> int:
    words = [f"w{(i * 7919) % 1009}" for i in range(5000)]
    total = 0
    for round_ in range(scale * 30):
        counts: dict[str, int] = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        lines = [f"{w}={c}:{round_}" for w, c in sorted(counts.items())]
        text = ";".join(lines)
        parsed = dict(item.split("=", 1) for item in text.split(";"))
        total += len(parsed) + len(text.upper().replace("W", "v"))
    return total


def generators(scale: int) -> int:
    def pipeline(n):
        evens = (x for x in range(n) if x % 2 == 0)
        squares = (x * x for x in evens)
        return sum(sq % 1013 for sq in squares)

    def make_adder(k):
        return lambda v: v + k

    adders = [make_adder(k) for k in range(50)]
    total = 0
    for _ in range(scale * 18):
        total += pipeline(20000)
        records = [(i * 37 % 101, str(i), -i) for i in range(3000)]
        records.sort(key=lambda r: (r[0], r[2]))
        total += sum(f(r[0]) for r in records[:500] for f in adders[:5])
    return total


WORKLOADS = {
    "nbody": nbody,
    "richards": richards,
    "fannkuch": fannkuch,
    "json": json_roundtrip,
    "dict_str": dict_str,
    "generators": generators,
}


def worker(scale: int) -> dict:
    """Inside the measured interpreter: warm up, then time each workload once. The time
    compared is the process's CPU time (the workloads are single-threaded), which other
    processes on a shared machine disturb less than wall time; wall time is recorded too."""
    out = {}
    for name, fn in WORKLOADS.items():
        fn(1)  # warm-up: imports, specialisation
        c0, t0 = time.process_time(), time.perf_counter()
        check = fn(scale)
        out[name] = {"seconds": time.process_time() - c0, "wall": time.perf_counter() - t0, "check": check}
    return out


# --- the driver (runs on any Python >= 3.11) ------------------------------------------------


def interpreters(dist_dir: Path, flavours: tuple[str, ...]) -> dict[str, Path]:
    found = {}
    for flavour in flavours:
        python = dist_dir / flavour / "bin" / "python3.14t"
        if not python.is_file():
            sys.exit(f"error: no {flavour} build at {python.parent.parent}; run `./dev dist -- --flavour {flavour}`")
        found[flavour] = python
    return found


def describe(python: Path) -> str:
    out = subprocess.run(
        [str(python), "-I", "-S", "-c", "import sys; print(sys.version)"], capture_output=True, text=True
    )
    return out.stdout.strip()


def measure(pythons: dict[str, Path], runs: int, scale: int) -> tuple[dict, dict]:
    """CPU-time and wall-time samples: flavour → workload → one value per run."""
    samples: dict[str, dict[str, list[float]]] = {f: {w: [] for w in WORKLOADS} for f in pythons}
    walls: dict[str, dict[str, list[float]]] = {f: {w: [] for w in WORKLOADS} for f in pythons}
    checks: dict[str, set] = {w: set() for w in WORKLOADS}
    names = list(pythons)
    for run in range(runs):
        order = names[run % len(names) :] + names[: run % len(names)]  # rotate: no flavour always first
        for flavour in order:
            proc = subprocess.run(
                [str(pythons[flavour]), "-I", "-S", "-B", str(Path(__file__).resolve()), "--worker", str(scale)],
                capture_output=True,
                text=True,
            )
            if proc.returncode != 0:
                sys.exit(f"error: {flavour} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
            result = json.loads(proc.stdout)
            for name, value in result.items():
                samples[flavour][name].append(value["seconds"])
                walls[flavour][name].append(value["wall"])
                checks[name].add(value["check"])
        print(f"  run {run + 1}/{runs} done", file=sys.stderr, flush=True)
    bad = [name for name, values in checks.items() if len(values) != 1]
    if bad:
        sys.exit(f"error: the builds computed different results for {bad}")
    return samples, walls


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="3 runs at the smallest size: a smoke run")
    parser.add_argument("--runs", type=int, default=None, help="runs per interpreter (default 7; 3 with --quick)")
    parser.add_argument("--scale", type=int, default=None, help="workload size (default 3; 1 with --quick)")
    parser.add_argument(
        "--flavours", default=",".join(FLAVOURS), help=f"comma-separated (default {','.join(FLAVOURS)})"
    )
    parser.add_argument("--dist-dir", type=Path, default=ROOT / "out" / "dist")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker is not None:
        print(json.dumps(worker(args.worker)))
        return 0

    runs = args.runs or (3 if args.quick else 7)
    scale = args.scale or (1 if args.quick else 3)
    flavours = tuple(f for f in args.flavours.split(",") if f)
    if BASELINE not in flavours:
        flavours = (BASELINE, *flavours)
    pythons = interpreters(args.dist_dir, flavours)
    print(f"interpreter benchmark: {runs} runs x {len(WORKLOADS)} workloads, scale {scale}", file=sys.stderr)
    samples, walls = measure(pythons, runs, scale)

    medians = {f: {w: statistics.median(v) for w, v in per.items()} for f, per in samples.items()}
    ratios = {f: {w: medians[f][w] / medians[BASELINE][w] for w in WORKLOADS} for f in flavours}
    geomean = {f: math.exp(statistics.fmean(math.log(r) for r in ratios[f].values())) for f in flavours}

    width = max(len(w) for w in WORKLOADS) + 2
    header = f"{'workload':<{width}}" + "".join(f"{f:>22}" for f in flavours)
    print(header)
    print("-" * len(header))
    for w in WORKLOADS:
        cells = []
        for f in flavours:
            cell = f"{medians[f][w] * 1e3:8.1f} ms"
            cell += "        " if f == BASELINE else f"  {ratios[f][w]:5.3f}x"
            cells.append(f"{cell:>22}")
        print(f"{w:<{width}}" + "".join(cells))
    print(f"{'geomean':<{width}}" + "".join(f"{'' if f == BASELINE else f'{geomean[f]:.3f}x':>22}" for f in flavours))
    print(f"CPU time; ratios: median / median of '{BASELINE}' in this run; goal for cfi: ≤ 1.05")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        record = {
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "host": {"machine": platform.machine(), "cpus": os.cpu_count()},
            "runs": runs,
            "scale": scale,
            "baseline": BASELINE,
            "interpreters": {f: {"path": str(p), "version": describe(p)} for f, p in pythons.items()},
            "results": [
                {
                    "flavour": f,
                    "workload": w,
                    "unit": "s",
                    "samples": samples[f][w],
                    "median": medians[f][w],
                    "ratio": ratios[f][w],
                    "wall_samples": walls[f][w],
                    "wall_median": statistics.median(walls[f][w]),
                }
                for f in flavours
                for w in WORKLOADS
            ],
            "geomean_ratio": geomean,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
