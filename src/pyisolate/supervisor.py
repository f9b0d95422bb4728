"""The supervisor: trusted, never runs guest code. It starts cells (worker processes of
the distribution's interpreter), attaches the guards to each before letting it go, and
talks to them through `framing.Channel`.

Sandboxes of different tenants never share a cell; `isolation="process"` gives a sandbox
a cell of its own. A cell that dies is reported to every caller waiting on it as
`CellCrashed`, naming its sandboxes and how it ended; other cells keep serving.
"""

from __future__ import annotations

import collections
import itertools
import math
import os
import queue
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import MappingProxyType

from . import bpf, broker, celluser, framing, guards, lsm, quotas, reload
from . import policy as policy_mod
from .errors import (
    CellCrashed,
    GuardError,
    PolicyError,
    PyIsolateError,
    QuotaExceeded,
    ReloadRefused,
    SandboxClosed,
    SandboxError,
    SandboxTimeout,
)

DEFAULT_POOL = 2
CELL_START_TIMEOUT = 30.0


def default_python() -> str:
    """The interpreter cells run on: $PYISOLATE_PYTHON, else this one if it is the
    free-threaded distribution interpreter."""
    if env := os.environ.get("PYISOLATE_PYTHON"):
        return env
    import sysconfig

    if sysconfig.get_config_var("Py_GIL_DISABLED") and sys.version_info[:2] >= (3, 14):
        return sys.executable
    raise PyIsolateError(
        "cells need PyIsolate's free-threaded interpreter: run under out/dist/current/bin/python3, "
        "or pass Supervisor(python=...) / set PYISOLATE_PYTHON"
    )


def describe_status(returncode: int | None) -> str:
    if returncode is None:
        return "still running"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exited with status {returncode}"


class _Reply:
    """One awaited answer on the control channel (concurrent.futures is too heavy to
    import for this at launcher start-up)."""

    __slots__ = ("_done", "_error", "_value")

    def __init__(self):
        self._done = threading.Event()
        self._value = self._error = None

    def set_result(self, value) -> None:
        self._value = value
        self._done.set()

    def set_exception(self, error: BaseException) -> None:
        self._error = error
        self._done.set()

    def result(self, timeout: float | None):
        if not self._done.wait(timeout):
            raise TimeoutError
        if self._error is not None:
            raise self._error
        return self._value


class Cell:
    """Supervisor-side handle of one cell process (its control channel)."""

    _ids = itertools.count(1)

    def __init__(self, supervisor: Supervisor, tenant: str, pool: int, exclusive: bool = False):
        self.supervisor = supervisor
        self.tenant = tenant
        self.exclusive = exclusive  # one sandbox only (isolation="process")
        self.name = f"cell-{next(self._ids)}"
        self.sandboxes: dict[str, Sandbox] = {}
        self.pending: dict[int, _Reply] = {}
        self.lock = threading.Lock()
        self.dead: CellCrashed | None = None
        self._rids = itertools.count(1)
        # A bad PYISOLATE_HOST_BPF or a tampered BPF object refuses the spawn before any cell
        # process exists; the programs themselves load in guards.attach, beside its start.
        guards.preflight()
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = framing.Channel(ours)
        self.quota = quotas.CellQuota()  # fault pipe, heartbeat, cgroup (docs/quotas.md)
        # The sealed broker: this cell's identity, handed over in a pipe (docs/broker-protocol.md §2).
        self.identity, secret = supervisor.broker_keys.issue()
        secret_r = broker.hand_over(secret)
        self.user = celluser.choose(supervisor.cell_user, supervisor.python)
        switch = {} if self.user.uid is None else {"user": self.user.uid, "group": self.user.gid, "extra_groups": []}
        self.proc = subprocess.Popen(
            [supervisor.python, "-I", "-B", "-m", "pyisolate.cell", str(theirs.fileno())],
            pass_fds=[theirs.fileno(), secret_r, self.quota.fault_w],
            env={
                **supervisor.cell_env,
                **broker.child_env(secret_r),
                "PYISOLATE_CELL": "1",
                **({"PYISOLATE_CELL_SPARE": "1"} if pool == 0 else {}),  # cell.Spare
                **self.quota.child_env(),
            },
            stdin=supervisor.stdin,
            stdout=supervisor.stdout,
            stderr=supervisor.stderr,
            **switch,
        )
        theirs.close()
        os.close(secret_r)
        # Its cgroup (memory, pids) while it starts: before the guards are checked and
        # before "go", and its start-up's own pages are charged there from now on.
        self.quota.place(self, [])
        try:
            transport = broker.respond(ours, broker.label_control(), supervisor.broker_keys, self.identity)
        except broker.HandshakeError as exc:
            self.kill()
            self.proc.wait()
            self.quota.close()
            raise PyIsolateError(f"{self.name}: no sealed channel: {exc}") from None
        self.channel.seal(transport)
        hello_box: queue.SimpleQueue = queue.SimpleQueue()
        self._hello = hello_box
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-reader", daemon=True)
        self._reader.start()
        try:
            self.hello = hello_box.get(timeout=CELL_START_TIMEOUT)
        except queue.Empty:
            self.kill()
            raise PyIsolateError(f"{self.name} did not start within {CELL_START_TIMEOUT}s") from None
        if self.hello is None:
            raise self.dead or PyIsolateError(f"{self.name} ended during start-up")
        # Guards first, then go: the cell refuses to run anything before "go".
        self.guards = guards.attach(self)
        self.guards_attached_at = time.monotonic()
        self.request({"op": "go", "pool": pool, "exclusive": exclusive}, timeout=CELL_START_TIMEOUT)
        self.quota.last_beat = time.monotonic()
        supervisor.watchdog()  # watches its heartbeat from now on

    @property
    def pid(self) -> int:
        return self.proc.pid

    def budget(self) -> None:
        """Its cgroup's limits, for the sandboxes it hosts now (quotas.CellQuota.budget)."""
        self.quota.budget([sb.policy.limits for sb in list(self.sandboxes.values())])

    def _read(self) -> None:
        first = True
        try:
            while True:
                message = self.channel.recv()
                if message is None:
                    break
                if first:
                    first = False
                    self._hello.put(message)
                    continue
                if message.get("op") == "beat":
                    self.quota.last_beat = time.monotonic()
                    continue
                with self.lock:
                    future = self.pending.pop(message.get("id"), None)
                if future is not None:
                    future.set_result(message)
        except (PyIsolateError, OSError):
            pass
        self._died()
        if first:
            self._hello.put(None)

    def _died(self) -> None:
        try:
            returncode = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            returncode = self.proc.wait()
        with self.lock:
            fault = self.quota.read_fault()
            # The fault handler ends the cell with exit_group(128 + signal): say which.
            status = quotas.fault_status(fault, returncode) or describe_status(returncode)
            if self.quota.stopped:
                status += f" ({self.quota.stopped})"
            self.dead = CellCrashed(self.name, list(self.sandboxes), status)
            self.dead.fault = fault
            pending, self.pending = self.pending, {}
        for future in pending.values():
            future.set_exception(self.dead)
        self.channel.close()
        self.quota.close()
        self.supervisor._cell_ended(self)

    def crash_report(self, timeout: float) -> CellCrashed | None:
        """Once the cell has ended: how (waits up to `timeout` for the process)."""
        if self.dead is None and self.proc.poll() is None:
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                return None
        deadline = time.monotonic() + timeout
        while self.dead is None and time.monotonic() < deadline:
            time.sleep(0.005)  # the control reader is filing the report
        return self.dead

    def submit(self, message: dict, fds: list[int] | None = None) -> _Reply:
        future = _Reply()
        with self.lock:
            if self.dead is not None:
                raise self.dead
            rid = next(self._rids)
            message["id"] = rid
            self.pending[rid] = future
        try:
            self.channel.send(message, fds)
        except OSError:
            with self.lock:
                self.pending.pop(rid, None)
            raise self.dead or CellCrashed(self.name, list(self.sandboxes), "channel closed") from None
        return future

    def request(
        self, message: dict, timeout: float | None = None, sandbox: str = "", fds: list[int] | None = None
    ) -> object:
        future = self.submit(message, fds)
        try:
            reply = future.result(timeout)
        except TimeoutError:
            raise SandboxTimeout(
                f"{sandbox or self.name}: no answer to {message['op']} within {timeout}s "
                "(the guest may still be running; close the sandbox to stop waiting for it)"
            ) from None
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise SandboxError(str(err.get("type")), str(err.get("msg", "")), str(err.get("tb", "")), sandbox)
        return reply.get("v")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()


class Sandbox:
    """One isolated sub-interpreter on its own thread inside a cell.

    The supervisor talks to it over its own socket: requests go out as frames, and
    replies and posted values come back on the same stream. Whichever calling thread is
    waiting reads the stream and files what it reads (a reply by request id, a post in
    the inbox), so no extra thread sits between caller and sandbox."""

    def __init__(
        self, cell: Cell, name: str, policy: policy_mod.Policy, sock: socket.socket, tmpdir: str | None, owner=None
    ):
        self.cell, self.name, self.policy = cell, name, policy
        self._channel = framing.Channel(sock)
        self._cond = threading.Condition()
        self._reading = False
        self._inbox: collections.deque = collections.deque()
        self._replies: dict[int, dict] = {}
        self._rids = itertools.count(1)
        self._ended: PyIsolateError | None = None
        self._tmpdir = tmpdir
        self._owner = owner  # a private Supervisor that spawn() made for this sandbox
        self.closed = False
        self.values: dict[str, str] = {}  # the placeholders its policy was resolved with
        self.spawned = policy  # what its kernel guards were built from (never changes)
        self.spawn_info: dict = {}
        self._drain = False
        self.quota_info: dict = {}  # the sandbox thread's tid, its interpreter, its caps (create reply)
        self.breach: QuotaExceeded | None = None  # the last quota the watchdog enforced
        self.cpu_group: str | None = None  # its cpuacct group: all its threads' CPU (cgroups.py)
        self._idle: quotas.Watch | None = None  # between requests (Watchdog.watch_idle)
        # What the kernel enforces for this sandbox (its thread's Landlock and seccomp,
        # the cell's rlimits; "reduced" lists what is missing), from the create reply.
        self.guards: dict = {}

    # -- the stream ---------------------------------------------------------------------
    def _pump(self, done, timeout: float | None) -> bool:
        """Read frames until done() holds; False on timeout. Raises once the stream ends."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not done():
                if self._ended is not None:
                    raise self._ended
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                if self._reading:  # another thread reads; it will file our frame
                    self._cond.wait(remaining)
                    continue
                self._reading = True
                self._cond.release()
                try:
                    frame = self._read_frame(remaining)
                finally:
                    self._cond.acquire()
                    self._reading = False
                    self._cond.notify_all()
                if frame is not None:
                    self._file(frame)
            return True

    def _read_frame(self, timeout: float | None) -> dict | None:
        # poll, not select: select() refuses descriptors above 1023, which a supervisor
        # reaches at about 1000 sandboxes (one socket each).
        poller = select.poll()
        poller.register(self._channel.sock, select.POLLIN)
        if not poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))):
            return None
        try:
            frame = self._channel.recv()
        except PyIsolateError as exc:
            frame, problem = None, f"sandbox {self.name} broke the protocol: {exc}"
        else:
            problem = None if frame is not None else f"sandbox {self.name} closed its channel"
        if frame is None:
            self._ended = self.cell.crash_report(timeout=2) or SandboxClosed(problem)
        return frame

    def _file(self, frame: dict) -> None:
        kind = frame.get("k")
        if kind == "post":
            self._inbox.append(frame.get("v"))
        elif kind in ("ret", "err") and isinstance(frame.get("rid"), int):
            self._replies[frame["rid"]] = frame
        elif kind == "ready":
            self._replies[0] = frame
        elif kind == "fatal":
            err = frame.get("error") or {}
            self._ended = SandboxError(str(err.get("type")), str(err.get("msg", "")), str(err.get("tb", "")), self.name)
            self._replies[0] = frame

    def _request(self, message: dict, timeout: float | None):
        if self.closed:
            raise SandboxClosed(f"sandbox {self.name} is closed")
        if self._ended is not None:
            raise self._ended
        rid = next(self._rids)
        message["rid"] = rid
        watchdog = self.cell.supervisor.watchdog()
        idle, self._idle = self._idle, None
        watchdog.unwatch(idle)
        if idle is not None and idle.interrupt is not None:  # it stopped a thread left running
            try:
                idle.interrupt.result(1.0)
            except Exception:
                pass
            self._drain = True
        watch = watchdog.watch(self, rid)
        try:
            try:
                if self._drain:  # a late interrupt may be pending in the guest: it takes this frame
                    self._channel.send_bytes(b"")
                    self._drain = False
                self._channel.send(message)
            except OSError:
                raise self.cell.crash_report(timeout=2) or SandboxClosed(f"sandbox {self.name} is gone") from None
            if not self._pump(lambda: rid in self._replies, timeout):
                raise SandboxTimeout(
                    f"{self.name}: no answer to {message['op']} within {timeout}s "
                    "(the guest may still be running; close the sandbox to stop waiting for it)"
                )
        except PyIsolateError as exc:
            if watch is not None and watch.breach is not None:  # the watchdog ended the cell
                self.breach = watch.breach
                raise watch.breach from exc
            raise
        finally:
            watchdog.unwatch(watch)
            self._idle = watchdog.watch_idle(self)  # threads the request left running
        reply = self._replies.pop(rid)
        interrupted = (reply.get("error") or {}).get("type") == "QuotaExceeded"
        if watch is not None and watch.interrupt is not None and not interrupted:
            try:
                watch.interrupt.result(1.0)  # queued in the guest: drain it before the next request
            except Exception:
                pass
            self._drain = True
        if watch is not None and watch.breach is not None:
            self.breach = watch.breach
            raise watch.breach
        if reply["k"] == "err":
            err = reply.get("error") or {}
            if err.get("type") == "MemoryError":
                self._memory_quota()
            raise SandboxError(str(err.get("type")), str(err.get("msg", "")), str(err.get("tb", "")), self.name)
        return reply.get("v")

    def _wait_ready(self, timeout: float) -> None:
        if not self._pump(lambda: 0 in self._replies, timeout):
            raise SandboxTimeout(f"{self.name}: not ready within {timeout}s")
        if self._replies.pop(0).get("k") == "fatal":
            raise self._ended

    # -- the API -------------------------------------------------------------------------
    def exec(self, code: str, timeout: float | None = None) -> None:
        """Run source code in the sandbox's __main__."""
        self._request({"op": "exec", "code": code}, self._timeout(timeout))

    def call(self, target: str, *args, timeout: float | None = None):
        """Call `module.function` (importable in the sandbox) with plain-data args and
        return its plain-data result."""
        return self._request({"op": "call", "target": target, "args": list(args)}, self._timeout(timeout))

    def recv(self, timeout: float | None = None):
        """The next value the guest passed to post()."""
        if not self._inbox:
            if self.closed:
                raise SandboxClosed(f"sandbox {self.name} is closed")
            if not self._pump(lambda: bool(self._inbox), timeout):
                raise SandboxTimeout(f"{self.name}: nothing posted within {timeout}s")
        return self._inbox.popleft()

    def _memory_quota(self) -> None:
        """A MemoryError from a sandbox whose cap refused an allocation is the memory quota."""
        try:
            memory = self.cell.request({"op": "usage", "sb": self.name}, 5, self.name).get("memory") or {}
        except PyIsolateError:
            return
        if memory.get("cap") and memory.get("refused"):
            self.breach = QuotaExceeded(self.name, "memory", memory["cap"], memory["peak"], "", "MemoryError")
            raise self.breach

    def stats(self) -> dict:
        """What this sandbox uses now: its interpreter's allocator pages against its cap
        (`memory`: used, peak, cap, refused), its thread's CPU time, and its cell's cgroup
        usage (bytes, tasks, limit hits)."""
        out = dict(self.cell.request({"op": "usage", "sb": self.name}, 5, self.name))
        out["cpu_time"] = quotas.sandbox_cpu(self)  # all its threads where cpu_group, else its own
        placement = self.cell.quota.placement
        out["cell"] = placement.usage() if placement is not None else {}
        return out

    def run(self, mode: str, target: str, argv: list[str]) -> None:
        """Start a script/-c/-m/stdin run (the launcher's entry point); its exit status
        arrives as a posted {"exit": code}. The watchdog watches it until run_done()."""
        rid = next(self._rids)
        self._run_watch = self.cell.supervisor.watchdog().watch(self, rid)
        self._channel.send({"op": "run", "rid": rid, "mode": mode, "target": target, "argv": argv})

    def run_done(self) -> QuotaExceeded | None:
        """End the watch of run(); the quota the watchdog enforced on it, if any."""
        watch, self._run_watch = getattr(self, "_run_watch", None), None
        self.cell.supervisor.watchdog().unwatch(watch)
        if watch is not None and watch.breach is not None:
            self.breach = watch.breach
        return self.breach

    def _timeout(self, timeout: float | None) -> float | None:
        if timeout is not None:
            return timeout
        wall = self.policy.limits.wall_time
        # The watchdog enforces wall_time (interrupt, then signals); this is only a backstop.
        return None if wall is None else wall + 4 * self.cell.supervisor.watchdog_grace + 5

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._channel.send({"op": "close"})
        except (OSError, PyIsolateError):
            pass
        self._channel.close()
        self.cell.sandboxes.pop(self.name, None)
        idle, self._idle = self._idle, None
        if idle is not None:
            self.cell.supervisor.watchdog().unwatch(idle)
        placement = self.cell.quota.placement
        if self.cpu_group and placement is not None:
            placement.sandbox_ungroup(self.cpu_group)
        bpf.unmark_sandbox(self.guards.get("bpf") or {})
        lsm.unmark_sandbox(self.guards.get("lsm") or {})
        if self._tmpdir:
            _rmtree(self._tmpdir)
        if self._owner is not None:
            self._owner.close()

    def guard_events(self) -> list[dict]:
        """Denials the host BPF guards reported for this sandbox's threads (newest last),
        then those of the BPF-LSM programs (mode "full": hooks file_open, socket_connect, ...)."""
        lsm_events = lsm.events_of([(self.guards.get("lsm") or {}).get("policy", 0)])
        return bpf.events_of([(self.guards.get("bpf") or {}).get("policy", 0)]) + lsm_events

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Sandbox {self.name} policy={self.policy.name} {self.cell.name} pid={self.cell.pid}>"


def _kept_fields(
    spawned: policy_mod.Policy, old: policy_mod.Policy, new: policy_mod.Policy, plan: reload.SandboxPlan
) -> policy_mod.Policy:
    """What a running sandbox actually runs with after a best-effort reload: the new policy,
    except what its plan could not apply (so its rule book never claims, say, a path its
    Landlock domain refuses): path and network rules are cut to the kernel's domain, other
    refused fields keep their old values."""
    import dataclasses

    kept = {c.field for c in plan.changes if c.disposition == reload.NOT_APPLIED}
    if not kept:
        return new
    limits = new.limits
    limit_names = {f.split(".", 1)[1] for f in kept if f.startswith("limits.")}
    if limit_names:
        limits = dataclasses.replace(limits, **{n: getattr(old.limits, n) for n in limit_names})
    top = {}
    for f in kept - {f"limits.{n}" for n in limit_names}:
        if f in ("fs_read", "fs_write", "net_connect"):
            top[f] = tuple(x for x in getattr(new, f) if x in set(getattr(spawned, f)))
        else:
            top[f] = getattr(old, f)
    return dataclasses.replace(new, limits=limits, **top)


def _group_cpu(sandbox: Sandbox, cell: Cell) -> None:
    """Move the sandbox's thread into a cpuacct group of its own (cgroups.py) before any
    guest code runs; `quota_info["cpu"]` says what the cpu_time quota counts."""
    placement, tid = cell.quota.placement, sandbox.spawn_info.get("tid")
    why = "the cell has no cgroup placement" if placement is None else "no thread id in the create reply"
    if placement is not None and tid:
        try:
            sandbox.cpu_group = placement.sandbox_group(f"sandbox-{tid}", tid)
        except PyIsolateError as exc:
            why = str(exc)
    sandbox.quota_info["cpu"] = (
        f"every thread of the sandbox, ended ones too (cgroup v1 {sandbox.cpu_group}/cpuacct.usage)"
        if sandbox.cpu_group
        else f"the sandbox thread only: {why}"
    )


def _mkdtemp(name: str) -> str:
    """A sandbox's {tmp}: a new 0700 directory under $TMPDIR (else /tmp), named as
    tempfile.mkdtemp would (pyisolate-NAME-random). Not tempfile itself: it imports
    random, shutil and four compression modules, ~8 ms of every pyisolate-python run."""
    base = os.path.abspath(os.environ.get("TMPDIR") or "/tmp")
    while True:
        path = os.path.join(base, f"pyisolate-{name}-{os.urandom(6).hex()}")
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            continue
        except OSError as exc:
            raise PyIsolateError(f"{name}: cannot make its {{tmp}} directory under {base}: {exc.strerror}") from None
        return path


def _rmtree(path: str) -> None:
    try:
        os.rmdir(path)  # what a guest left nothing in (most runs): no shutil import
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


class Supervisor:
    """Starts and owns cells; hands out sandboxes. Use as a context manager."""

    def __init__(
        self,
        python: str | None = None,
        pool: int = DEFAULT_POOL,
        *,
        stdin=subprocess.DEVNULL,
        stdout=None,
        stderr=None,
        max_sandboxes_per_cell: int = 64,
        cell_user: str | int = "auto",
        broker_hybrid: bool = False,
    ):
        self.python = python or default_python()
        self.pool = pool
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.max_per_cell = max_sandboxes_per_cell
        self.cell_user = cell_user  # who cells run as (celluser.py): an unprivileged uid, not root
        # Every channel is sealed; hybrid adds X-Wing to each handshake (docs/broker-protocol.md).
        self.broker_keys = broker.SupervisorKeys(hybrid=broker_hybrid, python=self.python)
        self.cells: list[Cell] = []
        self.lock = threading.Lock()
        self.cell_env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "HOME")}
        self._names = itertools.count(1)
        self.closed = False
        self.bpf_policies: set[int] = set()  # BPF policy ids of its sandboxes (guard_events)
        self._watchdog: quotas.Watchdog | None = None
        self.watchdog_grace = quotas.GRACE  # interrupt -> SIGXCPU -> SIGTERM -> SIGKILL, this far apart
        self.heartbeat_limit = quotas.HEARTBEAT_LIMIT  # a cell silent this long is ended
        # Policies published by reload_policy, by name: replaced as a whole (one reference
        # swap), so a reader sees the mapping before or after a reload, never in between.
        self.policies: MappingProxyType = MappingProxyType({})
        self._reload_lock = threading.Lock()
        self._control = None

    def _cell_for(self, tenant: str, isolation: str) -> Cell:
        with self.lock:
            if isolation == "thread":
                for cell in self.cells:
                    if (
                        cell.tenant == tenant
                        and cell.dead is None
                        and not cell.exclusive
                        and len(cell.sandboxes) < self.max_per_cell
                    ):
                        return cell
        exclusive = isolation == "process"
        cell = Cell(self, tenant, 0 if exclusive else self.pool, exclusive)
        with self.lock:
            self.cells.append(cell)
        return cell

    def spawn(
        self,
        name: str | None = None,
        policy: str | Path | policy_mod.Policy = "stdlib-readonly",
        *,
        tenant: str = "default",
        isolation: str = "thread",
        script_dir: str | None = None,
        timeout: float | None = None,
        _owner=None,
    ) -> Sandbox:
        """Create a sandbox. `policy` is a Policy, a policy file or a template name."""
        if self.closed:
            raise SandboxClosed("supervisor is closed")
        if isolation not in ("thread", "process"):
            raise ValueError("isolation must be 'thread' or 'process'")
        if isinstance(policy, policy_mod.Policy):
            pol = policy
        elif isinstance(policy, str) and policy in self.policies:  # the reloaded version
            pol = self.policies[policy][1]
        else:
            pol = policy_mod.load(policy)
        name = name or f"sandbox-{next(self._names)}"
        cell = self._cell_for(tenant, isolation)
        if name in cell.sandboxes:
            raise ValueError(f"a sandbox named {name!r} already exists in {cell.name}")
        tmpdir = _mkdtemp(name) if any("{tmp}" in p for p in pol.fs_read + pol.fs_write) else None
        if tmpdir and cell.user.uid is not None:
            os.chown(tmpdir, cell.user.uid, cell.user.gid)  # the sandbox's own, under its cell's uid
        values = {"stdlib": cell.hello["stdlib"], "cwd": os.getcwd()}
        if tmpdir:
            values["tmp"] = tmpdir
        if script_dir:
            values["script_dir"] = script_dir
        resolved = pol.resolve(**values)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        sandbox = Sandbox(cell, name, resolved, ours, tmpdir, _owner)
        sandbox.values = values
        cell.sandboxes[name] = sandbox
        cell.budget()
        identity, secret = self.broker_keys.issue()  # the sandbox socket's own, sent sealed
        sealing = broker.respond_in_background(ours, broker.label_sandbox(name), self.broker_keys, identity)
        try:
            sandbox.spawn_info = cell.request(
                {"op": "create", "sb": name, "policy": resolved.to_wire(), "tmp": tmpdir, "broker": secret.to_hex()},
                timeout or 60,
                name,
                fds=[theirs.fileno()],
            )
            theirs.close()
            sandbox._channel.seal(sealing.result())  # the cell finished its side before replying
            sandbox.guards = sandbox.spawn_info.get("guards") or {}
            sandbox.quota_info = sandbox.spawn_info.get("quota") or {}
            # Its CPU: a cpuacct group of its own, where the threads its guest starts are born
            # (the move waits for an RCU grace period, ~10 ms here; running it beside the
            # marks and the boot gained nothing measurable).
            _group_cpu(sandbox, cell)
            # Host BPF guards (bpf.py): its thread is marked before the caller gets the sandbox.
            sandbox.guards["bpf"] = bpf.mark_sandbox(sandbox.spawn_info.get("tid"), resolved.net_connect)
            self.bpf_policies.add(sandbox.guards["bpf"].get("policy", 0))
            # BPF-LSM (lsm.py, mode "full"): its rules from the resolved policy, its thread marked.
            sandbox.guards["lsm"] = lsm.mark_sandbox(sandbox.spawn_info.get("tid"), resolved, values["stdlib"])
            if sandbox.guards.get("reduced"):
                print(
                    f"pyisolate: WARNING: sandbox {name} runs with REDUCED GUARANTEES (its policy accepts them): "
                    + "; ".join(sandbox.guards["reduced"]),
                    file=sys.stderr,
                )
            sandbox._wait_ready(timeout or 60)
        except SandboxError as exc:
            theirs.close()
            sandbox.close()
            if exc.type_name == "GuardError":
                raise GuardError(f"sandbox {name} refused: {exc.message}") from None
            raise
        except BaseException:
            theirs.close()
            sandbox.close()
            raise
        return sandbox

    def reload_policy(
        self, new: str | Path | policy_mod.Policy, *, running: str = "strict", timeout: float = 10.0
    ) -> reload.ReloadReport:
        """Publish a new version of the policy named `new.name`: sandboxes spawned from now on
        with that name get it, and running sandboxes using it switch at their next check as
        far as their kernel guards allow (see pyisolate/reload.py for each field).

        Everything is validated before anything changes: an invalid policy, or (with
        running="strict", the default) a change some running sandbox could not take,
        raises ReloadRefused and leaves every sandbox and the published policies as they
        were. running="best-effort" applies what can be applied and reports the rest;
        "new-only" leaves running sandboxes alone."""
        if running not in reload.RUNNING_MODES:
            raise ValueError(f"running must be one of {', '.join(reload.RUNNING_MODES)}")
        try:
            pol = new if isinstance(new, policy_mod.Policy) else policy_mod.load(new)
        except PolicyError as exc:
            raise ReloadRefused(f"invalid policy: {exc}") from None
        with self._reload_lock:
            version = self.policies.get(pol.name, (1, None))[0] + 1
            report = reload.ReloadReport(pol.name, version, running)
            targets = []
            with self.lock:
                live = [sb for cell in self.cells for sb in cell.sandboxes.values() if not sb.closed]
            for sb in live:
                if sb.policy.name != pol.name:
                    continue
                if running == "new-only":
                    report.skipped[sb.name] = "running='new-only'"
                    continue
                try:
                    resolved = pol.resolve(**sb.values)
                except PolicyError as exc:
                    raise ReloadRefused(f"sandbox {sb.name}: {exc}") from None
                # Which kernel rules of this sandbox a reload can switch (BPF maps), beyond the
                # Python layer: they make a narrowing kernel-enforced, not Python-only.
                kernel = set()
                if (sb.guards.get("lsm") or {}).get("attached"):
                    kernel |= {"fs_read", "fs_write", "net_connect"}
                if (sb.guards.get("bpf") or {}).get("attached"):
                    kernel.add("net_connect")
                plan = reload.plan(sb.name, sb.spawned, sb.policy, resolved, switchable=frozenset(kernel))
                report.plans.append(plan)
                targets.append((sb, resolved, plan))
            if running == "strict":
                refused = [
                    f"{p.sandbox}: {c.field} ({c.why})"
                    for p in report.plans
                    for c in p.changes
                    if c.disposition == reload.NOT_APPLIED
                ]
                if refused:
                    raise ReloadRefused(
                        f"policy {pol.name!r}: running sandboxes cannot take this reload whole, nothing changed: "
                        + "; ".join(refused)
                        + " (use running='best-effort' or 'new-only')"
                    )
            # Publish for new sandboxes, then switch the running ones one by one.
            self.policies = MappingProxyType({**self.policies, pol.name: (version, pol)})
            plan_net_before = {sb.name: sb.policy.net_connect for sb, _, _ in targets}
            for sb, resolved, plan in targets:
                kept = _kept_fields(sb.spawned, sb.policy, resolved, plan)
                reply = sb.cell.request({"op": "reload", "sb": sb.name, "policy": kept.to_wire()}, timeout, sb.name)
                sb.policy = kept  # one reference swap: the supervisor's limits read it
                report.book_versions[sb.name] = reply["version"]
                if "memory" in reply:  # lowered: the interpreter's cap now, the cell's cgroup budget too
                    report.memory_caps[sb.name] = reply["memory"]["memory"]
                    sb.cell.budget()
                # The kernel's per-thread connect rules (host BPF guards), in one map update.
                if set(kept.net_connect) != set(plan_net_before[sb.name]):
                    marks = sb.guards.get("bpf") or {}
                    report.bpf_switched[sb.name] = bpf.replace_sandbox_rules(marks, kept.net_connect)
                # The BPF-LSM path and connect rules (mode "full"), in one map update.
                lsm_marks = sb.guards.get("lsm") or {}
                if lsm_marks.get("attached"):
                    report.lsm_switched[sb.name] = lsm.replace_sandbox_rules(lsm_marks, kept, sb.values["stdlib"])
            return report

    def watchdog(self) -> quotas.Watchdog:
        """The watchdog thread (started on first use; see quotas.py)."""
        if self._watchdog is None:
            with self.lock:
                if self._watchdog is None:
                    self._watchdog = quotas.Watchdog(self, self.watchdog_grace, self.heartbeat_limit)
        return self._watchdog

    def serve_control(self, path: str | Path):
        """Listen on a Unix socket at `path` for administration by the supervisor's owner
        (`pyisolate policy reload FILE --socket PATH`); closed with the supervisor."""
        from . import control

        self._control = control.serve(self, path)
        return self._control

    def _cell_ended(self, cell: Cell) -> None:
        with self.lock:
            if cell in self.cells:
                self.cells.remove(cell)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._control is not None:
            self._control.close()
        if self._watchdog is not None:
            self._watchdog.close()
        for cell in list(self.cells):
            for sandbox in list(cell.sandboxes.values()):
                if sandbox._tmpdir:
                    _rmtree(sandbox._tmpdir)
            cell.channel.close()
            try:
                cell.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                cell.kill()
                cell.proc.wait()
            # Its reader files the ending and removes the cell's cgroup (Cell._died): done
            # before close() returns, so a program that exits next leaves no group behind.
            cell._reader.join(timeout=10)

    def guard_events(self) -> list[dict]:
        """Denials the host BPF guards reported for this supervisor's sandboxes (newest
        last): refused connects and sockets, exec/ptrace/bpf kills (bpf.py)."""
        return bpf.events_of(self.bpf_policies)

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def spawn(name: str | None = None, policy: str | Path | policy_mod.Policy = "stdlib-readonly", **kwargs) -> Sandbox:
    """One sandbox with a private supervisor; closing the sandbox closes both."""
    python = kwargs.pop("python", None)
    supervisor = Supervisor(python=python, pool=kwargs.pop("pool", 0))
    try:
        return supervisor.spawn(name, policy, _owner=supervisor, **kwargs)
    except BaseException:
        supervisor.close()
        raise
