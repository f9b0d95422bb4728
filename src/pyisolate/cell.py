"""The cell: a worker process of the distribution's interpreter that hosts sandboxes.

    python3.14t -I -B -m pyisolate.cell FD

FD is the cell's end of a Unix socket to the supervisor (the control channel). The cell
says hello and then waits until the supervisor has attached the guards and says "go":
no sandbox is created and no guest code runs before that.

Each sandbox is one isolated sub-interpreter. Its own OS thread enters the interpreter
once and stays there, serving requests that arrive on a socket the supervisor created
and passed over the control channel (SCM_RIGHTS): supervisor and sandbox talk directly,
in plain JSON frames, so no guest object and no pickle ever reaches the cell's own
interpreter, and a request costs a socket round trip rather than an interpreter switch.

Kernel guards (`kernel.py`): sitecustomize prepared the process before this module ran
(no_new_privs, the base seccomp filter); each sandbox's thread restricts itself with
Landlock and the seccomp allow-list before it enters its interpreter, and the create
reply says what it got. The cell's own threads (main, pool) stay unrestricted by those.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import threading
import time

import _interpreters

from . import broker, framing, kernel, quotas, rulebook

_HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(_HERE, "_guest.py"), encoding="utf-8") as _f:
    GUEST_SOURCE = _f.read()
# Imported into warm-pool interpreters before any policy applies (from the distribution's
# own bytecode); the boot drops whichever of them a policy denies.
PRELOAD = (
    "import json, re, math, collections, functools, itertools, operator, statistics, "
    "traceback, linecache, io, random, datetime, typing, dataclasses, enum, textwrap, tempfile"
)
# What a sandbox needs before its boot can run, for interpreters made on demand.
BOOT_IMPORTS = "import json, traceback, io, tempfile"
GUARD_TIMEOUT = 30.0
# Set by the supervisor for a cell it starts without a warm pool (see Spare).
SPARE_ENV = "PYISOLATE_CELL_SPARE"


class GuardError(Exception):
    """Sent to the supervisor as the create reply's error type: the sandbox was refused."""


def _excinfo(info) -> dict:
    type_name = getattr(getattr(info, "type", None), "__name__", None) or "Exception"
    return {
        "type": type_name,
        "msg": str(getattr(info, "msg", "") or ""),
        "tb": str(getattr(info, "errdisplay", "") or getattr(info, "formatted", "") or ""),
    }


def new_interpreter(preload: str) -> int:
    iid = _interpreters.create("isolated", reqrefs=False)
    info = _interpreters.exec(iid, preload)
    if info is not None:
        raise RuntimeError(f"interpreter preparation failed: {_excinfo(info)['msg']}")
    return iid


class Spare:
    """One interpreter made with BOOT_IMPORTS while the supervisor places the cell and
    attaches its guards, for a cell without a warm pool (pyisolate-python, isolation=
    "process"): its first sandbox does not wait ~40 ms for it. Only the distribution's
    own modules run in it before "go" (the cell is in its cgroup by then)."""

    def __init__(self):
        self._made: list[int] = []
        self._thread = threading.Thread(target=self._make, name="spare", daemon=True)
        self._thread.start()

    def _make(self) -> None:
        try:
            self._made.append(new_interpreter(BOOT_IMPORTS))
        except Exception:  # take() returns None; the create then meets the error itself
            pass

    def take(self) -> int | None:
        self._thread.join()
        return self._made.pop() if self._made else None


class Pool:
    """Pre-created interpreters with PRELOAD done, refilled in the background."""

    def __init__(self, size: int, spare: Spare | None = None):
        self.size = size
        self._spare = spare
        self._ready: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wanted = threading.Semaphore(size)
        if size > 0:
            threading.Thread(target=self._fill, name="pool", daemon=True).start()

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            self._ready.put(new_interpreter(PRELOAD))

    def take(self) -> tuple[int, str]:
        """An interpreter id, and where it came from: "pool" (warm, PRELOAD done),
        "spare" (made during the cell's start) or "new" (made now)."""
        spare, self._spare = self._spare, None
        if spare is not None and (iid := spare.take()) is not None:
            return iid, "spare"
        if self.size:
            try:
                iid = self._ready.get_nowait()
            except queue.Empty:
                pass
            else:
                self._wanted.release()
                return iid, "pool"
        return new_interpreter(BOOT_IMPORTS), "new"


class CellSandbox:
    """A sandbox's thread: boots the interpreter and serves inside it until closed."""

    def __init__(self, cell: Cell, name: str, iid: int, sock: socket.socket, config: dict):
        self.cell, self.name, self.iid, self.sock = cell, name, iid, sock
        self.policy = config["policy"]
        self._guarded = threading.Event()
        self.guards: dict | None = None
        self.guard_error: Exception | None = None
        # The rules the guest's checks read (rulebook.py): version 1 is the create's policy.
        self.book = rulebook.RuleBook(name)
        self.book.publish(self.policy)
        try:
            config = dict(
                config,
                fd=sock.fileno(),
                stdlib=cell.stdlib,
                rules_fd=self.book.fd,  # the guest maps it read-only and closes it
                rules_size=rulebook.SIZE,
                rules_layout=[rulebook.HEADER, rulebook.SLOT],
            )
            _interpreters.set___main___attrs(iid, {"__pyisolate_config__": json.dumps(config)})
            thread = threading.Thread(target=self._run, name=name, daemon=True)
            thread.start()
        except BaseException:
            sock.close()
            os.close(self.book.fd)
            self.book.close()
            _interpreters.destroy(iid)
            raise
        # From here on the thread owns the socket and the interpreter.
        # The thread restricts itself first; what it got goes into the create reply.
        if not self._guarded.wait(GUARD_TIMEOUT):  # the thread sees the error and runs nothing
            self.guard_error = kernel.GuardUnavailable(f"sandbox {name}: guards not applied within {GUARD_TIMEOUT}s")
        if self.guard_error is not None:
            raise self.guard_error
        # Read from outside: the sandbox thread itself can no longer open /proc.
        self.guards["status"] = kernel.task_status(tid=thread.native_id)
        self.tid = thread.native_id  # the supervisor marks it for the BPF guards (bpf.py)

    def _run(self) -> None:
        self.native_tid = threading.get_native_id()  # the watchdog reads its CPU clock
        try:
            quotas.guard_thread(self.name)  # alternate signal stack, name for fault reports
            self.guards = kernel.restrict_thread(self.policy, self.cell.stdlib)
        except Exception as exc:  # refused (GuardUnavailable) or broken: no guest code runs
            self.guard_error = exc
        finally:
            self._guarded.set()
        if self.guard_error is not None:
            os.close(self.book.fd)  # no guest boot will take it
        else:
            self.cell.mark_first_code()
            info = _interpreters.exec(self.iid, self.cell.guest_code)  # returns when the sandbox closes
            if info is not None:
                # Boot failed, or the serve loop died: tell the supervisor on the same socket.
                frame = framing.encode({"k": "fatal", "error": _excinfo(info)})
                try:
                    self.sock.sendall(len(frame).to_bytes(4, "big") + frame)
                except OSError:
                    pass
        try:
            _interpreters.destroy(self.iid)
        except Exception as exc:  # e.g. guest threads still running in it
            print(f"pyisolate cell: sandbox {self.name}: {exc}", file=sys.stderr)
        finally:
            self.sock.close()
            self.book.close()
            if self.cell.sandboxes.get(self.name) is self:
                del self.cell.sandboxes[self.name]


class Cell:
    def __init__(self, fd: int):
        self.channel = framing.Channel(socket.socket(fileno=fd))
        self.sandboxes: dict[str, CellSandbox] = {}
        self.stdlib = os.path.dirname(os.path.abspath(os.__file__))
        self.guest_code = compile(GUEST_SOURCE, "<pyisolate-guest>", "exec")
        self.go_at: float | None = None
        self.first_code_at: float | None = None
        self.pool: Pool | None = None
        self.exclusive = False  # hosts a single sandbox: process-wide limits apply to it alone

    def send(self, message: dict) -> None:
        try:
            self.channel.send(message)
        except OSError:
            os._exit(0)  # the supervisor is gone: nobody to serve

    def mark_first_code(self) -> None:
        if self.first_code_at is None:
            self.first_code_at = time.monotonic()

    def serve(self) -> None:
        import _imp

        self.send(
            {
                "op": "hello",
                "pid": os.getpid(),
                "stdlib": self.stdlib,
                "prefix": sys.prefix,
                "version": sys.version,
                "c_gate": hasattr(_imp, "_pyisolate_restrict"),
                "guards": kernel.cell_preparation
                or {"native": kernel.native() is not None, "error": "the cell preparation did not run"},
            }
        )
        self.quota_report = quotas.cell_start(self)  # crash handlers, heartbeat (before any other thread)
        spare = Spare() if os.environ.get(SPARE_ENV) == "1" else None
        while True:
            message, fds = self.channel.recv_with_fds()
            if message is None:
                return
            op, rid = message.get("op"), message.get("id")
            if op == "go":
                self.go_at = time.monotonic()
                self.exclusive = bool(message.get("exclusive", False))
                self.pool = Pool(int(message.get("pool", 0)), spare)
                self.send({"id": rid, "ok": True, "v": {"go_at": self.go_at}})
            elif self.go_at is None:
                # The guards are not attached yet: refuse everything that could run code.
                self.send({"id": rid, "ok": False, "error": {"type": "NotReady", "msg": f"{op!r} before go"}})
            else:
                try:
                    self.dispatch(op, rid, message, fds)  # takes (pops) the descriptors it keeps
                except Exception as exc:
                    self.send({"id": rid, "ok": False, "error": {"type": type(exc).__name__, "msg": str(exc)}})
            for fd in fds:  # descriptors nobody took are not kept
                os.close(fd)

    def dispatch(self, op: str, rid: int, message: dict, fds: list[int]) -> None:
        broker.check_request(message)  # a known opcode with typed arguments, or refused
        if op == "create":
            name = message["sb"]
            if len(fds) != 1:
                raise ValueError("create needs exactly one socket for the sandbox")
            if name in self.sandboxes:
                raise ValueError(f"sandbox {name!r} already exists in this cell")
            t0 = time.perf_counter()
            if self.exclusive and self.sandboxes:
                raise ValueError("this cell hosts a single sandbox (isolation='process')")
            iid, origin = self.pool.take()
            quota = quotas.set_cap(iid, (message["policy"].get("limits") or {}).get("memory"))
            config = {"policy": message["policy"], "tmp": message.get("tmp")}
            sock = socket.socket(fileno=fds.pop())  # the sandbox owns it from here on
            if message.get("broker"):  # sealed: the guest gets a plain end, the cell's relay seals
                secret = broker.SpawnSecret.from_bytes(bytes.fromhex(message["broker"]))
                sock = broker.seal_sandbox_socket(sock, broker.label_sandbox(name), secret)
            try:
                sandbox = CellSandbox(self, name, iid, sock, config)
            except kernel.GuardUnavailable as exc:
                raise GuardError(str(exc)) from None
            self.sandboxes[name] = sandbox
            # After the sandbox's own descriptors exist (its socket, the relay's, the rule
            # book), before any request can reach it: the guest's share is what remains.
            rlimits = kernel.apply_rlimits(message["policy"].get("limits") or {}, self.exclusive)
            reply = {
                "warm": origin == "pool",
                "origin": origin,
                "seconds": time.perf_counter() - t0,
                "guards": dict(sandbox.guards, rlimits=rlimits),
            }
            reply["quota"] = dict(quota, tid=sandbox.native_tid)  # the watchdog's handles (quotas.py)
            reply["tid"] = sandbox.tid
            self.send({"id": rid, "ok": True, "v": reply})
        elif op == "reload":
            # A new policy version for a running sandbox's Python layer (the supervisor
            # decided what else a reload may change; see supervisor.reload_policy).
            sandbox = self.sandboxes.get(message["sb"])
            if sandbox is None:
                raise ValueError(f"no sandbox {message['sb']!r} in this cell")
            before = (sandbox.policy.get("limits") or {}).get("memory")
            after = (message["policy"].get("limits") or {}).get("memory")
            sandbox.policy = message["policy"]
            reply = {"version": sandbox.book.publish(message["policy"])}
            if quotas.cap_lowered(before, after):  # as the supervisor's plan (reload.plan) decided
                reply["memory"] = quotas.set_cap(sandbox.iid, after, "the reload")
            self.send({"id": rid, "ok": True, "v": reply})
        elif op in quotas.CELL_OPS:
            self.send({"id": rid, "ok": True, "v": quotas.cell_op(self, op, message)})
        elif op == "stats":
            self.send(
                {
                    "id": rid,
                    "ok": True,
                    "v": {
                        "go_at": self.go_at,
                        "first_code_at": self.first_code_at,
                        "sandboxes": sorted(self.sandboxes),
                        "pid": os.getpid(),
                    },
                }
            )
        elif op == "exit":
            self.send({"id": rid, "ok": True, "v": None})
            os._exit(0)
        else:
            raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m pyisolate.cell FD (started by the supervisor)", file=sys.stderr)
        return 2
    secret = broker.read_spawn_secret()  # first: the secret's pipe is closed after this
    cell = Cell(int(argv[1]))
    if secret is not None:  # a supervisor always gives one; a cell started by hand talks plain
        cell.channel.seal(broker.initiate(cell.channel.sock, broker.label_control(), secret))
    cell.serve()
    # The supervisor hung up. Sandbox threads may still be inside guest code, so skip
    # interpreter finalisation (which would wait for them, or warn about them).
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
