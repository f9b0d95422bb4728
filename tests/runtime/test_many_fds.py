"""A supervisor whose sandbox sockets are numbered above 1023 (about 1000 sandboxes in
one process, as bench/scaling.py makes) still waits on them: select() cannot."""

import gc
import os
import resource
import time

import pyisolate as iso


def test_sandbox_socket_above_fd_1023(cell_python):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2048:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(2048, hard), hard))
    fillers = []

    def fill():  # every free descriptor below 1100 taken: the next ones come above it
        while True:  # the lowest free number comes first, so a high one means no holes left
            fillers.append(os.open(os.devnull, os.O_RDONLY))
            if fillers[-1] >= 1100:
                return

    try:
        # Descriptors can be freed low down while the test runs: earlier tests' objects
        # collected by the GC, their supervisors' threads still closing cells and watchdogs.
        # Each such close opens a hole the next socket takes, so collect, settle, fill, and
        # spawn again (a few times at most) until the sandbox's socket is numbered high.
        gc.collect()
        time.sleep(1)
        fill()
        with iso.Supervisor(python=cell_python, pool=0) as sup:
            for attempt in range(5):
                gc.collect()
                fill()  # holes opened meanwhile
                sb = sup.spawn(f"high-fd-{attempt}", "compute-only")
                if sb._channel.sock.fileno() > 1023:
                    break
                sb.close()
            assert sb._channel.sock.fileno() > 1023
            assert sb.call("builtins.len", "x" * 1024) == 1024
            sb.exec("post(6 * 7)")
            assert sb.recv(timeout=30) == 42
    finally:
        for fd in fillers:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
