"""PyIsolate's start-up hook, installed into the distribution's site-packages.

Plain `python3.14t` stays a normal interpreter: this does nothing unless the process was
started as a cell by a PyIsolate supervisor (PYISOLATE_CELL=1 in its environment). In a
cell it runs before any other import of the cell's own code and prepares the process:
  - closes every inherited file descriptor except stdin/stdout/stderr and the
    supervisor channel named on the command line;
  - sets a private umask;
  - applies the cell's process-wide kernel guards (`pyisolate.kernel.prepare_cell`):
    no_new_privs, the base seccomp filter (exec, ptrace, bpf, kexec, mounts, namespaces,
    new processes … refused for every thread, TSYNC) and no core dumps. It runs before
    the cell starts any thread; what it applied is in the cell's hello.
"""


def _prepare_cell() -> None:
    import os
    import sys

    keep = {0, 1, 2}
    if len(sys.argv) >= 2 and sys.argv[-1].isdigit():
        keep.add(int(sys.argv[-1]))
    broker_fd = os.environ.get("PYISOLATE_BROKER_FD", "")  # the spawn secret's pipe (pyisolate/broker.py)
    if broker_fd.isdigit():
        keep.add(int(broker_fd))
    fault_fd = os.environ.get("PYISOLATE_FAULT_FD", "")  # the fault-report pipe (pyisolate/quotas.py)
    if fault_fd.isdigit():
        keep.add(int(fault_fd))
    for fd in sorted(int(name) for name in os.listdir("/proc/self/fd") if name.isdigit()):
        if fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass
    os.umask(0o077)
    from pyisolate import kernel

    kernel.prepare_cell()


def _main() -> None:
    import os

    # Popped at once: sub-interpreters re-run site (and so this hook) and share the
    # process environment; only the process's first interpreter prepares the cell.
    if os.environ.pop("PYISOLATE_CELL", None) == "1":
        _prepare_cell()


_main()
