"""Policy reload latency: `Supervisor.reload_policy` until every running sandbox using the
policy has switched (its rule book holds the new version), against a same-run baseline of
one control request that changes nothing (the cell's `stats`), for 1 and 10 sandboxes.

    out/dist/current/bin/python3 bench/reload.py [--quick]

Output: out/bench/parts/reload.json (bench/results.py format).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pyisolate as iso
from pyisolate import policy as policy_mod

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import results  # noqa: E402

SUITE = "reload"


def _policy(read: list[str]) -> policy_mod.Policy:
    listed = ", ".join(f'"{p}"' for p in read)
    return policy_mod.loads(f'[policy]\nname = "bench-reload"\n[filesystem]\nread = [{listed}]\n', "<bench>")


def measure(count: int, rounds: int) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp, "a"), Path(tmp, "b")
        a.mkdir()
        b.mkdir()
        both, only_a, only_b = _policy([str(a), str(b)]), _policy([str(a)]), _policy([str(b)])
        with iso.Supervisor(pool=0) as sup:
            sandboxes = [sup.spawn(f"r{i}", both) for i in range(count)]
            cells = {sb.cell.name: sb.cell for sb in sandboxes}
            reloads, baseline = [], []
            for i in range(rounds):
                t0 = time.perf_counter()
                sup.reload_policy(only_a if i % 2 == 0 else only_b)
                reloads.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                for cell in cells.values():
                    cell.request({"op": "stats"}, timeout=10)
                baseline.append(time.perf_counter() - t0)
            for sb in sandboxes:
                sb.close()
    return reloads, baseline


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    rounds = 50 if args.quick else 500
    out = []
    for count in (1, 10):
        reloads, baseline = measure(count, rounds)
        base = results.summary(baseline)["median"]
        r = results.Result.of(
            SUITE,
            "reload.latency",
            "pyisolate",
            "s",
            reloads,
            baseline=("control round trip (stats) to the same cells", base),
            label=f"reload_policy, {count} running sandbox(es) switched",
            params={"sandboxes": count},
        )
        out.append(r)
        print(
            f"reload, {count:2} sandbox(es): median {r.median * 1e6:8.1f} µs  p90 {r.p90 * 1e6:8.1f} µs"
            f"  (control round trip {base * 1e6:.1f} µs, ratio {r.ratio:.2f}x)"
        )
    results.write_part(SUITE, out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
