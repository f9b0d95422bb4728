"""Allocator cost of the per-interpreter memory cap (cpython-patches/interp-memory-cap.patch).

    python3 bench/alloc_cap.py [--quick] [--runs N] [--baseline PYTHON] [--json out/bench/alloc_cap.json]

Runs allocation-heavy workloads in two interpreters of the same flavour, measured in the
same run: the distribution's (out/dist/current, with the patch) and a baseline built from
the same flavour, flags and sources WITHOUT interp-memory-cap.patch. By default the
baseline is the newest build in the driver's cache (~/.cache/pyisolate/dist) whose
buildinfo.json has the same flavour flags (the same configure arguments preferred) and
whose patch series is the distribution's minus that patch (and the interrupt patch after it); pass
--baseline to name one. A host without such a build has no baseline: the script says how
to make one and exits 2. The workloads run in an isolated sub-interpreter in both (a
sandbox's situation), with a 1 GiB cap where the interpreter has the patch; both start
afresh (-I -S -B), in alternating order from run to run, and the table shows per-workload
medians of CPU time and their ratio. Goal: <= 1.02.

The workloads, fixed: small_objects (tuples, lists and dicts created and dropped: the
block allocator's hot path), strings (str building and joins), churn (1 MiB bytes objects
made and dropped: page allocation and freeing, where the accounting sits), bigints
(arbitrary-precision multiplication: growing object sizes).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("PYISOLATE_CACHE", Path.home() / ".cache" / "pyisolate"))
PATCHES = ("interp-memory-cap.patch", "interp-quota-interrupt.patch")

WORKLOADS = r"""
import time

def small_objects(n):
    keep = None
    for i in range(n):
        t = (i, i + 1, i + 2)
        l = [t, t, i]
        d = {"a": l, "b": t}
        keep = d if i % 1000 == 0 else keep
    return keep is not None

def strings(n):
    parts = []
    for i in range(n):
        parts.append(f"item-{i}-" + str(i * 7))
        if len(parts) > 1000:
            "".join(parts)
            parts = []
    return len(parts)

def churn(n):
    total = 0
    for i in range(n):
        b = bytes(1 << 20)
        total += len(b)
        del b
    return total

def bigints(n):
    x = 1
    for i in range(n):
        x = (x * 3 ** 50 + i) % (1 << 40000)
    return x.bit_length()

def measure(scale):
    out = {}
    for name, fn, size in (("small_objects", small_objects, 4000000), ("strings", strings, 3000000),
                           ("churn", churn, 30000), ("bigints", bigints, 100000)):
        fn(max(1, size // 10 // scale))  # warm-up
        t0 = time.process_time()
        fn(max(1, size // scale))
        out[name] = time.process_time() - t0
    return out
"""

RUNNER = r"""
import json, sys, _imp, _interpreters
scale = int(sys.argv[1])
iid = _interpreters.create("isolated")  # a sandbox's situation, in both interpreters
if hasattr(_imp, "_pyisolate_set_memory_cap"):
    _imp._pyisolate_set_memory_cap(1 << 30, iid)
_interpreters.set___main___attrs(iid, {"SRC": SRC, "SCALE": scale})
err = _interpreters.exec(iid, "ns = {}; exec(SRC, ns); import json, os; "
                               "os.write(1, json.dumps(ns['measure'](SCALE)).encode())")
if err is not None:
    sys.exit(f"workload failed: {err.msg}")
"""


def find_baseline(dist: Path) -> Path | None:
    """A cached build of the same flavour whose series is the distribution's minus PATCHES."""
    # out/dist/current -> …/dist/pyisolate-3.14.7-FLAVOUR-KEY-rtX/prefix; its CPython build
    # is …/dist/cpython-3.14.7-FLAVOUR-KEY (buildinfo.json: flags, configure, patches).
    runtime_dir = dist.resolve().parent.name
    cpython_dir = "cpython-" + runtime_dir.removeprefix("pyisolate-").rsplit("-rt", 1)[0]
    try:
        mine = json.loads((dist.resolve().parent.parent / cpython_dir / "buildinfo.json").read_text())
    except (OSError, ValueError):
        mine = None
    # Same flavour flags required; among those, one with the same configure arguments first.
    ranked = []
    for build in sorted(CACHE.glob("dist/cpython-*"), key=lambda p: p.stat().st_mtime, reverse=True):
        try:
            info = json.loads((build / "buildinfo.json").read_text())
        except (OSError, ValueError):
            continue
        names = [name for name, _ in info.get("patches", [])]
        if any(p in names for p in PATCHES) or "interp-sandbox-gate.patch" not in names:
            continue
        if mine is not None and info.get("flavour") != mine.get("flavour"):
            continue
        python = build / "prefix" / "bin" / "python3.14t"
        if python.is_file():
            ranked.append((mine is not None and info.get("configure") != mine.get("configure"), python))
    return min(ranked, key=lambda r: r[0])[1] if ranked else None


def run_once(python: Path, scale: int) -> dict:
    code = f"SRC = {WORKLOADS!r}\n" + RUNNER
    out = subprocess.run(
        [str(python), "-I", "-S", "-B", "-c", code, str(scale)], capture_output=True, text=True, timeout=600
    )
    if out.returncode != 0:
        raise SystemExit(f"{python}: {out.stderr.strip()}")
    return json.loads(out.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller workloads, 3 runs")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--baseline", type=Path, help="an interpreter without interp-memory-cap.patch")
    parser.add_argument("--python", type=Path, default=ROOT / "out" / "dist" / "current" / "bin" / "python3.14t")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    baseline = args.baseline or find_baseline(args.python.parent.parent)
    if baseline is None:
        print(
            "alloc_cap: no baseline interpreter without interp-memory-cap.patch in the cache; build the same "
            "flavour with those lines commented out of cpython-patches/series (./dev dist), keep its "
            "prefix, restore the series, and pass --baseline PREFIX/bin/python3.14t",
            file=sys.stderr,
        )
        return 2
    runs, scale = (3, 4) if args.quick else (args.runs, 1)
    results: dict[str, dict[str, list[float]]] = {"patched": {}, "baseline": {}}
    for i in range(runs):
        order = [("patched", args.python), ("baseline", baseline)]
        for label, python in order if i % 2 == 0 else order[::-1]:
            for name, seconds in run_once(python, scale).items():
                results[label].setdefault(name, []).append(seconds)
    rows = []
    print(f"allocator cost of the memory cap: {args.python} vs {baseline} ({runs} runs, CPU s, medians)")
    print(f"  {'workload':15} {'baseline':>9} {'patched':>9} {'ratio':>7}")
    ratios = []
    for name in results["baseline"]:
        base = statistics.median(results["baseline"][name])
        mine = statistics.median(results["patched"][name])
        ratio = mine / base
        ratios.append(ratio)
        rows.append({"workload": name, "baseline": base, "patched": mine, "ratio": ratio})
        print(f"  {name:15} {base:9.3f} {mine:9.3f} {ratio:7.3f}")
    geo = statistics.geometric_mean(ratios)
    print(f"  {'geometric mean':15} {'':9} {'':9} {geo:7.3f}   (goal <= 1.02)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps({"rows": rows, "geomean": geo, "baseline": str(baseline), "runs": runs}, indent=1))
        tmp.replace(args.json)
    # The same figures in the common results format (bench/results.py), for results.json and the report.
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import results as common

    parts = [
        common.Result.of(
            "alloc_cap",
            f"alloc_cap.{name}",
            "memory-cap patch",
            "s",
            results["patched"][name],
            baseline=("the same flavour without the patch", statistics.median(results["baseline"][name])),
            label=f"{name}: CPU time with the per-interpreter memory cap",
            target="≤ 1.02x (geomean)",
        )
        for name in results["baseline"]
    ]
    common.write_part("alloc_cap", parts, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
