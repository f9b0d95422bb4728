"""Run by the distribution's python3 inside the VM guest (the trusted side of the runtime).

Two sandboxes of one tenant share a cell, each on its own thread; both policies read
DATA. lsm_test marks only sandbox "a"'s thread for the BPF-LSM programs, whose path rules
reach DATA/public but not DATA/secret. Protocol on stdin/stdout with lsm_test:

    -> TARGET <cell pid> <tid of a> <tid of b>
    <- any line, once the mark is set
    -> RESULT <name> ok|<exception>          one per attempt
    -> DONE
"""

import os
import sys

import pyisolate
from pyisolate import policy

DATA = sys.argv[1] if len(sys.argv) > 1 else "/srv/data"
POLICY = f"""
[policy]
name = "vmtest"
description = "reads {DATA}; the BPF-LSM rules narrow sandbox a to {DATA}/public"

[filesystem]
read = ["{{stdlib}}", "{DATA}"]
write = []

[network]
connect = []

[modules]
allow = ["*"]

[builtins]
enable = ["open"]
"""


def attempt(sandbox, path: str) -> str:
    try:
        sandbox.exec(f"open({path!r}).read()", timeout=120)
    except Exception as exc:  # the guest's error, as the supervisor reports it
        return f"{type(exc).__name__}: {exc}".replace("\n", " ")
    return "ok"


def thread_of(sandbox) -> int:
    """The tid of a sandbox's thread in its cell: the create reply's, else the thread the
    cell named after the sandbox (3.14 gives OS threads their Python names)."""
    for info in ("quota_info", "spawn_info"):
        tid = getattr(sandbox, info, {}).get("tid")
        if tid:
            return tid
    task = f"/proc/{sandbox.cell.pid}/task"
    for tid in os.listdir(task):
        with open(f"{task}/{tid}/comm") as f:
            if f.read().strip() == sandbox.name:
                return int(tid)
    raise RuntimeError(f"no thread named {sandbox.name!r} in cell {sandbox.cell.pid}")


def main() -> int:
    pol = policy.loads(POLICY, "vmtest")
    with pyisolate.Supervisor(pool=0) as supervisor:
        a = supervisor.spawn("vmtest-a", pol, tenant="vm")
        b = supervisor.spawn("vmtest-b", pol, tenant="vm")
        print(f"TARGET {a.cell.pid} {thread_of(a)} {thread_of(b)}", flush=True)
        sys.stdin.readline()
        for name, sandbox, path in (
            ("a.public", a, f"{DATA}/public"),
            ("a.secret", a, f"{DATA}/secret"),
            ("b.secret", b, f"{DATA}/secret"),
        ):
            print(f"RESULT {name} {attempt(sandbox, path)}", flush=True)
        try:
            with open(f"{DATA}/secret") as f:
                f.read()
            print("RESULT supervisor.secret ok", flush=True)
        except OSError as exc:
            print(f"RESULT supervisor.secret {exc}", flush=True)
    print("DONE", flush=True)
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
