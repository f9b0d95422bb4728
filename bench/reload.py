"""Policy reload latency: `Supervisor.reload_policy` until every running sandbox using the
policy has switched (its rule book holds the new version; for connect rules also the host
BPF guards' rule set, where the supervisor runs as root), against a same-run baseline of
one control request that changes nothing (the cell's `stats`), for 1 and 10 sandboxes.
The RCU grace period before an old BPF rule set is removed runs in the background
(bpf.py's reaper) and is not part of the latency.

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


def _policy(field: str, values: list[str]) -> policy_mod.Policy:
    listed = ", ".join(f'"{p}"' for p in values)
    table = "filesystem]\nread" if field == "fs" else "network]\nconnect"
    return policy_mod.loads(f'[policy]\nname = "bench-reload"\n[{table} = [{listed}]\n', "<bench>")


def measure(count: int, rounds: int, field: str) -> tuple[list[float], list[float]]:
    with tempfile.TemporaryDirectory() as tmp:
        if field == "fs":
            a, b = str(Path(tmp, "a")), str(Path(tmp, "b"))
            Path(a).mkdir()
            Path(b).mkdir()
        else:  # connect rules: the host BPF guards' rule set is swapped too (where attached)
            a, b = "127.0.0.1:9", "127.0.0.2:9"
        both, only_a, only_b = _policy(field, [a, b]), _policy(field, [a]), _policy(field, [b])
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
    for field, count in (("fs", 1), ("fs", 10), ("net", 1)):
        reloads, baseline = measure(count, rounds, field)
        base = results.summary(baseline)["median"]
        what = "path rules" if field == "fs" else "connect rules (+ BPF rule set where attached)"
        r = results.Result.of(
            SUITE,
            "reload.latency" if field == "fs" else "reload.latency.net",
            "pyisolate",
            "s",
            reloads,
            baseline=("control round trip (stats) to the same cells", base),
            label=f"reload_policy of {what}, {count} running sandbox(es) switched",
            params={"sandboxes": count, "rules": field},
        )
        out.append(r)
        print(
            f"reload of {field:3} rules, {count:2} sandbox(es): median {r.median * 1e6:8.1f} µs"
            f"  p90 {r.p90 * 1e6:8.1f} µs  (control round trip {base * 1e6:.1f} µs, ratio {r.ratio:.2f}x)"
        )
    results.write_part(SUITE, out, quick=args.quick)
    return 0


if __name__ == "__main__":
    sys.exit(main())
