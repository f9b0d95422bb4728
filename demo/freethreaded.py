"""A short tour of the built interpreter: free-threaded, with isolated sub-interpreters
running Python code in parallel on their own OS threads.

Run with the distribution: out/dist/current/bin/python3 demo/freethreaded.py
"""

import os
import sys
import sysconfig
import threading
import time
from concurrent import interpreters

WORK = """
def _spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total
"""
N = 3_000_000


def run_in_interpreters(count: int) -> float:
    interps = [interpreters.create() for _ in range(count)]
    for interp in interps:
        interp.exec(WORK)
    results = [None] * count

    def worker(i: int) -> None:
        results[i] = interps[i].call(_spin, N)

    start = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.perf_counter() - start
    for interp in interps:
        interp.close()
    assert all(r == results[0] for r in results)
    return took


def _spin(n):  # `call` sends a reference to __main__._spin; WORK defines it in each interpreter
    total = 0
    for i in range(n):
        total += i * i
    return total


def main() -> None:
    print(f"interpreter     {sys.executable}")
    print(
        f"version         {sys.version.split()[0]}  ({sysconfig.get_config_var('Py_GIL_DISABLED') and 'free-threaded'})"
    )
    print(f"GIL enabled     {sys._is_gil_enabled()}")
    print(f"prefix          {sys.prefix}")
    print(f"CFLAGS          {sysconfig.get_config_var('CONFIGURE_CFLAGS')}")
    one = run_in_interpreters(1)
    cores = min(os.cpu_count() or 1, 2)
    many = run_in_interpreters(cores)
    print(f"1 interpreter   {one * 1000:7.1f} ms")
    print(f"{cores} interpreters  {many * 1000:7.1f} ms  (same work each, in parallel threads)")
    print(f"parallel speed-up {cores * one / many:4.2f}x on {cores} cores")


if __name__ == "__main__":
    main()
