"""pyisolate-python: a drop-in `python3` that runs the code in a sandbox.

    pyisolate-python [--policy FILE|NAME] [--memory SIZE] [--cpu-time SECONDS]
                     [--wall-time SECONDS] [-c CODE | -m MODULE | SCRIPT | -] [ARGS…]

The launcher is the supervisor of one cell: it starts the cell, attaches the guards,
and only then lets the sandbox run the code. stdin/stdout/stderr are the caller's;
sys.argv is what python3 would set; the exit status is the code's own. --memory (e.g.
64M), --cpu-time and --wall-time override the policy's [limits] for this run.

Exit statuses of our own (python3 uses 1 for uncaught exceptions and 2 for bad usage):
    121  the memory quota: the sandbox's allocator cap refused memory and the run failed
    122  the cpu-time quota: the watchdog stopped the run
    124  the wall-time quota: the watchdog stopped the run
         (each with one line on stderr naming the quota, the limit and the measured value)
    125  PyIsolate could not run the code (bad policy, cell failed to start, …)
    128+N  the cell was killed by signal N (one line on stderr says which)
"""

from __future__ import annotations

import os
import sys

USAGE = (
    "usage: pyisolate-python [--policy FILE|NAME] [--memory SIZE] [--cpu-time SECONDS] [--wall-time SECONDS]\n"
    "                        [-c CODE | -m MODULE | SCRIPT | -] [ARGS...]"
)
EXIT_MEMORY = 121
EXIT_CPU_TIME = 122
EXIT_WALL_TIME = 124
EXIT_QUOTA = {"memory": EXIT_MEMORY, "cpu_time": EXIT_CPU_TIME, "wall_time": EXIT_WALL_TIME}
LIMIT_OPTIONS = {"--memory": "memory", "--cpu-time": "cpu_time", "--wall-time": "wall_time"}
EXIT_INTERNAL = 125


def parse(argv: list[str], limits: dict | None = None) -> tuple[str, str, str, list[str]]:
    """→ (policy, mode, target, guest argv), with python3's argv conventions; limit
    options go into `limits` (name -> the option's text)."""
    policy = "default-script"
    limits = {} if limits is None else limits
    i = 0
    while i < len(argv):
        arg = argv[i]
        option, eq, value = arg.partition("=")
        if option in LIMIT_OPTIONS and (eq or i + 1 < len(argv)):
            limits[LIMIT_OPTIONS[option]] = value if eq else argv[i + 1]
            i += 1 if eq else 2
        elif arg == "--policy" and i + 1 < len(argv):
            policy, i = argv[i + 1], i + 2
        elif arg.startswith("--policy="):
            policy, i = arg.split("=", 1)[1], i + 1
        elif arg in ("-h", "--help"):
            print(USAGE + "\n\n" + (__doc__ or "").split("\n\n", 1)[1])
            sys.exit(0)
        elif arg == "-c" and i + 1 < len(argv):
            return policy, "code", argv[i + 1], ["-c", *argv[i + 2 :]]
        elif arg.startswith("-c") and len(arg) > 2:
            return policy, "code", arg[2:], ["-c", *argv[i + 1 :]]
        elif arg == "-m" and i + 1 < len(argv):
            return policy, "module", argv[i + 1], [argv[i + 1], *argv[i + 2 :]]
        elif arg == "-":
            return policy, "stdin", "", ["-", *argv[i + 1 :]]
        elif arg.startswith("-"):
            print(f"pyisolate-python: unknown option {arg}\n{USAGE}", file=sys.stderr)
            sys.exit(2)
        else:
            return policy, "file", arg, argv[i:]
    return policy, "stdin", "", [""]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    overrides: dict = {}
    policy_ref, mode, target, guest_argv = parse(argv, overrides)

    from . import policy as policy_mod
    from .errors import CellCrashed, PyIsolateError, QuotaExceeded, SandboxTimeout
    from .supervisor import Supervisor

    script_dir = os.getcwd()
    if mode == "file":
        target = os.path.abspath(target)
        if not os.path.isfile(target):
            print(f"pyisolate-python: can't open file {target!r}: [Errno 2] No such file or directory", file=sys.stderr)
            return 2
        script_dir = os.path.dirname(target)
    try:
        pol = policy_mod.load(policy_ref)
    except PyIsolateError as exc:
        print(f"pyisolate-python: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    try:
        pol = with_limits(pol, overrides)
    except ValueError as exc:
        print(f"pyisolate-python: {exc}\n{USAGE}", file=sys.stderr)
        return 2

    sys.stdout.flush()
    try:
        with Supervisor(python=sys.executable, pool=0, stdin=None) as supervisor:
            sandbox = supervisor.spawn("main", pol, isolation="process", script_dir=script_dir)
            sandbox.run(mode, target, guest_argv)
            try:
                while True:
                    message = sandbox.recv(timeout=sandbox._timeout(None))
                    if isinstance(message, dict) and set(message) == {"exit"} and isinstance(message["exit"], int):
                        break
            except PyIsolateError:
                if sandbox.run_done() is None:
                    raise
            breach = sandbox.run_done()
            if breach is None and message["exit"] == 1:
                try:
                    sandbox._memory_quota()  # a MemoryError the cap caused
                except QuotaExceeded as exc:
                    breach = exc
            if breach is not None:
                print(f"pyisolate-python: {breach}", file=sys.stderr)
                return EXIT_QUOTA[breach.quota]
            return message["exit"] & 0xFF
    except SandboxTimeout:
        print(f"pyisolate-python: wall-time limit of {pol.limits.wall_time:g}s reached; stopped", file=sys.stderr)
        return EXIT_WALL_TIME
    except CellCrashed as exc:
        fault = f"; fault report: {exc.fault}" if exc.fault else ""
        print(f"pyisolate-python: the sandbox's cell {exc.status}{fault}", file=sys.stderr)
        signame = exc.status.rsplit(" ", 1)[-1]
        import signal

        number = getattr(signal, signame, None)
        return 128 + int(number) if number is not None else EXIT_INTERNAL
    except PyIsolateError as exc:
        print(f"pyisolate-python: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130


def with_limits(pol, overrides: dict):
    """The policy with --memory/--cpu-time/--wall-time applied (ValueError names the bad one)."""
    import dataclasses

    from . import policy as policy_mod

    changes = {}
    for name, text in overrides.items():
        option = "--" + name.replace("_", "-")
        if name == "memory":
            try:
                changes[name] = policy_mod.parse_size(text)
            except ValueError as exc:
                raise ValueError(f"{option}: {exc}") from None
        else:
            try:
                value = float(text)
            except ValueError:
                value = -1.0
            if not value > 0:
                raise ValueError(f"{option}: expected a positive number of seconds, found {text!r}")
            changes[name] = value
    return dataclasses.replace(pol, limits=dataclasses.replace(pol.limits, **changes)) if changes else pol


if __name__ == "__main__":
    sys.exit(main())
