"""pyisolate-python: a drop-in `python3` that runs the code in a sandbox.

    pyisolate-python [--policy FILE|NAME] [-c CODE | -m MODULE | SCRIPT | -] [ARGS…]

The launcher is the supervisor of one cell: it starts the cell, attaches the guards,
and only then lets the sandbox run the code. stdin/stdout/stderr are the caller's;
sys.argv is what python3 would set; the exit status is the code's own.

Exit statuses of our own (python3 uses 1 for uncaught exceptions and 2 for bad usage):
    124  the policy's wall-time limit passed (one line on stderr says so)
    125  PyIsolate could not run the code (bad policy, cell failed to start, …)
    128+N  the cell was killed by signal N (one line on stderr says which)
"""

from __future__ import annotations

import os
import sys

USAGE = "usage: pyisolate-python [--policy FILE|NAME] [-c CODE | -m MODULE | SCRIPT | -] [ARGS...]"
EXIT_WALL_TIME = 124
EXIT_INTERNAL = 125


def parse(argv: list[str]) -> tuple[str, str, str, list[str]]:
    """→ (policy, mode, target, guest argv), with python3's argv conventions."""
    policy = "default-script"
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--policy" and i + 1 < len(argv):
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
    policy_ref, mode, target, guest_argv = parse(argv)

    from . import policy as policy_mod
    from .errors import CellCrashed, PyIsolateError, SandboxTimeout
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

    sys.stdout.flush()
    try:
        with Supervisor(python=sys.executable, pool=0, stdin=None) as supervisor:
            sandbox = supervisor.spawn("main", pol, isolation="process", script_dir=script_dir)
            sandbox.run(mode, target, guest_argv)
            while True:
                message = sandbox.recv(timeout=pol.limits.wall_time)
                if isinstance(message, dict) and set(message) == {"exit"} and isinstance(message["exit"], int):
                    return message["exit"] & 0xFF
    except SandboxTimeout:
        print(f"pyisolate-python: wall-time limit of {pol.limits.wall_time:g}s reached; stopped", file=sys.stderr)
        return EXIT_WALL_TIME
    except CellCrashed as exc:
        print(f"pyisolate-python: the sandbox's cell {exc.status}", file=sys.stderr)
        signame = exc.status.rsplit(" ", 1)[-1]
        import signal

        number = getattr(signal, signame, None)
        return 128 + int(number) if number is not None else EXIT_INTERNAL
    except PyIsolateError as exc:
        print(f"pyisolate-python: {exc}", file=sys.stderr)
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
