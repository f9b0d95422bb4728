"""What every peer runs: a pure-Python CPU workload and a line-protocol server.

Kept to the subset RestrictedPython compiles (no augmented item assignment, no names
starting with "_"), so the in-process reference runs the very same code. The server runs
inside each process sandbox as `python -I -S -c SOURCE`; bench/peers/run.py drives it:

    → "E<1 kB>"    ← the same line (the round trip)
    → "C<scale>"   ← seconds cpu(scale) took, timed inside the sandbox
"""

import time


def cpu(scale):
    """A sieve, a dict count and a keyed sort: loops, integer arithmetic, lists, dicts, strings."""
    total = 0
    for rnd in range(scale):
        limit = 30000 + rnd
        sieve = [True] * limit
        primes = []
        for n in range(2, limit):
            if sieve[n]:
                primes.append(n)
                for m in range(n * n, limit, n):
                    sieve[m] = False
        counts = {}
        for p in primes:
            key = str(p % 97)
            counts[key] = counts.get(key, 0) + 1
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        total = total + len(primes) + sum(len(k) * v for k, v in ranked)
    return total


def timed_cpu(scale):
    start = time.perf_counter()
    cpu(scale)
    return time.perf_counter() - start


def serve():
    import sys  # here, not above: the sandboxed copy defines only cpu/timed_cpu

    stdin, stdout = sys.stdin, sys.stdout
    stdout.write("ready\n")
    stdout.flush()
    for line in stdin:
        if line[:1] == "E":
            stdout.write(line)
        elif line[:1] == "C":
            stdout.write(repr(timed_cpu(int(line[1:]))) + "\n")
        else:
            stdout.write("?\n")
        stdout.flush()


if __name__ == "__main__":
    serve()
