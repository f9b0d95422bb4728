"""Quotas: memory caps, CPU and wall time, the watchdog, heartbeats and fault reports.

Cell side (called from pyisolate.cell):
  cell_start()        crash handlers (native crash_guard) on the fault pipe, a heartbeat
                      thread on the control channel;
  set_cap()           a sandbox interpreter's memory cap (cpython-patches/interp-memory-cap.patch)
                      from `limits.memory`, before its thread starts;
  cell_op()           "interrupt" (cpython-patches/interp-quota-interrupt.patch) and "usage".
Supervisor side:
  CellQuota           per cell: its cgroup placement (cgroups.py), fault pipe, heartbeat;
  EventReader         per supervisor: drains the host BPF guards' ring buffer (pyisolate.bpf)
                      and watches its drop counter;
  Watchdog            per supervisor: one thread that measures every busy request's CPU time
                      (every thread of the sandbox: its cpuacct group, cgroups.py; else the
                      sandbox thread's own clock, /proc/PID/task/TID/stat) and wall time
                      (monotonic) and, on a breach, interrupts the sandbox's interpreter, then
                      escalates on the cell: SIGXCPU, SIGTERM, SIGKILL, one grace period
                      apart. Between requests it watches the CPU of threads a guest left
                      running (idle watches: cpu_time again, counted from the request's end).
                      It also ends a cell whose heartbeat stalls, and every cell with
                      BPF-guarded sandboxes when the guard event stream stalls or loses
                      events (fail-closed). It never waits on a cell or on the reader: it
                      only reads /proc and timestamps, sends frames and signals.
See docs/quotas.md.
"""

from __future__ import annotations

import os
import signal
import threading
import time

from .errors import QuotaExceeded

HEARTBEAT_INTERVAL = 0.1  # the cell beats this often
HEARTBEAT_LIMIT = 2.0  # a cell silent this long is ended (fail-closed)
GRACE = 1.0  # between the interrupt and each signal of the escalation
EVENTS_INTERVAL = 0.25  # the BPF guard events are drained this often
EVENTS_LIMIT = 2.0  # a drain that has not completed for this long fails closed
TICK = 0.02  # the watchdog's period
ESCALATION = ("interrupt", "SIGXCPU", "SIGTERM", "SIGKILL")
_CLK_TCK = os.sysconf("SC_CLK_TCK")


# --- cell side -----------------------------------------------------------------------------


def cell_start(cell) -> dict:
    """Crash handlers and the heartbeat, before the cell serves anything (main thread)."""
    report: dict = {}
    fd = os.environ.pop("PYISOLATE_FAULT_FD", None)  # popped: sandbox interpreters need not see it
    from . import kernel

    lib = kernel.native()
    if fd and fd.isdigit() and lib is not None and hasattr(lib, "crash_guard_install"):
        try:
            # Moved to the lowest free number: it keeps the supervisor's (possibly high)
            # number otherwise, which RLIMIT_NOFILE's count of the cell's descriptors misjudges.
            low = os.dup(int(fd))
            os.close(int(fd))
            lib.crash_guard_install(low)
            report["crash_guard"] = "fault handlers on alternate stacks; reports on the fault pipe"
        except OSError as exc:
            report["crash_guard_error"] = f"{type(exc).__name__}: {exc}"
    else:
        report["crash_guard_error"] = "no fault pipe or no crash_guard in the _pyisolate extension"

    def beat() -> None:
        while True:
            time.sleep(HEARTBEAT_INTERVAL)
            cell.send({"op": "beat", "t": time.monotonic()})

    threading.Thread(target=beat, name="heartbeat", daemon=True).start()
    return report


def guard_thread(name: str) -> None:
    """On a sandbox thread, before its restrictions: its alternate stack and name."""
    from . import kernel

    lib = kernel.native()
    if lib is not None and hasattr(lib, "crash_guard_thread"):
        lib.crash_guard_thread(name)


def cap_lowered(before: int | None, after: int | None) -> bool:
    """Whether `limits.memory` going from `before` to `after` tightens the allocator cap
    (None: no cap), the only change the cap takes after creation."""
    return after is not None and (before is None or after < before)


def set_cap(iid: int, memory: int | None, moment: str = "creation") -> dict:
    """Cap a sandbox interpreter's allocator pages at `memory` bytes (tighten-only: at
    creation, or lowered by a reload)."""
    import _imp

    if not hasattr(_imp, "_pyisolate_set_memory_cap"):
        return {"memory": "not enforced: this interpreter lacks the per-interpreter memory cap patch"}
    if memory is None:
        return {"memory": "no limit in the policy", "iid": iid}
    _imp._pyisolate_set_memory_cap(int(memory), iid)
    used = _imp._pyisolate_memory(iid)[0]
    return {
        "memory": f"per-interpreter cap {memory} bytes in the allocator (held at {moment}: {used})",
        "iid": iid,
    }


def memory_of(iid: int) -> dict | None:
    import _imp

    if not hasattr(_imp, "_pyisolate_memory"):
        return None
    try:
        used, peak, cap, refused = _imp._pyisolate_memory(iid)
    except ValueError:
        return None
    return {"used": used, "peak": peak, "cap": cap, "refused": refused}


def cell_op(cell, op: str, message: dict) -> object:
    """The cell's quota requests: "interrupt" and "usage" of one sandbox."""
    import _imp

    sandbox = cell.sandboxes.get(message.get("sb"))
    if sandbox is None:
        raise ValueError(f"no sandbox {message.get('sb')!r} in this cell")
    if op == "interrupt":
        if not hasattr(_imp, "_pyisolate_interrupt"):
            return False
        return _imp._pyisolate_interrupt(sandbox.iid, str(message.get("message", "quota exceeded")))
    return {"memory": memory_of(sandbox.iid)}


CELL_OPS = ("interrupt", "usage")


# --- supervisor side -----------------------------------------------------------------------


def fault_status(fault: str | None, returncode: int | None) -> str | None:
    """The status ("killed by SIGSEGV") of a cell its fault handler ended (128 + signal)."""
    if not fault or returncode is None:
        return None
    fields = dict(part.split("=", 1) for part in fault.split() if "=" in part)
    name, number = fields.get("signal", ""), fields.get("number", "")
    if name.startswith("SIG") and number.isdigit() and returncode == 128 + int(number):
        return f"killed by {name}"
    return None


def sandbox_cpu(sandbox) -> float | None:
    """CPU seconds a sandbox has used: all its threads, ended ones too, where it has a
    cpuacct group (cgroups.Placement.sandbox_group); else its own thread's."""
    group = getattr(sandbox, "cpu_group", None)
    if group:
        from .cgroups import cpu_seconds

        return cpu_seconds(group)
    tid = sandbox.quota_info.get("tid")
    return thread_cpu_time(sandbox.cell.pid, tid) if tid else None


def thread_cpu_time(pid: int, tid: int) -> float | None:
    """CPU time (user + system) of one thread, from the kernel's accounting."""
    try:
        with open(f"/proc/{pid}/task/{tid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


class CellQuota:
    """Per cell: the cgroup placement, the fault pipe's read end, the last heartbeat."""

    def __init__(self):
        self.fault_r, self.fault_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.last_beat = time.monotonic()
        self.placement = None
        self.stopped: str | None = None  # why the watchdog ended the cell, if it did
        self.fault: str | None = None

    def child_env(self) -> dict:
        return {"PYISOLATE_FAULT_FD": str(self.fault_w)}

    def place(self, cell, budgets: list) -> None:
        """The cell's cgroup (memory, pids), made and joined before "go"."""
        from . import cgroups

        memory, tasks = cgroups.cell_budget(budgets)
        try:
            self.placement = cgroups.Placement.create(f"pyisolate-{os.getpid()}-{cell.name}", memory, tasks)
            self.placement.add(cell.pid)
        except cgroups.CgroupError as exc:
            self.placement = None
            self.place_error = str(exc)

    def budget(self, budgets: list) -> None:
        """Raise or lower the cell's limits for the sandboxes it hosts (best effort)."""
        from . import cgroups

        if self.placement is None:
            return
        memory, tasks = cgroups.cell_budget(budgets)
        for controller, value in (("memory", memory), ("pids", tasks)):
            try:
                self.placement.set_limit(controller, value)
            except cgroups.CgroupError:
                pass  # lowering below current usage: keep the higher limit

    def report(self) -> dict:
        if self.placement is None:
            return {"memory": f"not enforced: {getattr(self, 'place_error', 'no cgroup')}", "pids": "not enforced"}
        return self.placement.report()

    def read_fault(self) -> str | None:
        """The fault report the cell's handler wrote, if any (non-blocking)."""
        if self.fault is None:
            try:
                data = os.read(self.fault_r, 4096)
            except (BlockingIOError, OSError):
                data = b""
            if data:
                self.fault = data.decode("ascii", "replace").strip()
        return self.fault

    def close(self) -> None:
        for fd in (self.fault_r, self.fault_w):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.placement is not None:
            self.placement.remove()


class EventReader:
    """Drains the host BPF guards' ring buffer (pyisolate.bpf) every EVENTS_INTERVAL in a
    thread of its own, recording when a drain last completed and how many events the
    kernel side dropped (ring full). The watchdog judges staleness from those two."""

    def __init__(self):
        self.last_drain = time.monotonic()
        self.dropped = 0
        self.error: str | None = None
        self.stop = threading.Event()
        threading.Thread(target=self._run, name="pyisolate-bpf-events", daemon=True).start()

    def _run(self) -> None:
        from . import bpf

        while not self.stop.wait(EVENTS_INTERVAL):
            guard = bpf._shared
            if guard is None:
                self.last_drain = time.monotonic()
                continue
            try:
                guard.events()  # takes the guard's lock: a stuck reader shows as a stale drain
                self.dropped = int(guard.counters().get("dropped", 0))
                self.last_drain = time.monotonic()
                self.error = None
            except Exception as exc:  # reported by the watchdog as the stall's cause
                self.error = f"{type(exc).__name__}: {exc}"


class Watch:
    """One busy request under watch, or (idle) a sandbox between requests."""

    __slots__ = (
        "breach",
        "cpu0",
        "cpu_at_step",
        "cpu_limit",
        "done",
        "idle",
        "interrupt",
        "rid",
        "sandbox",
        "step",
        "step_at",
        "t0",
        "wall_limit",
    )

    def __init__(self, sandbox, rid, cpu_limit, wall_limit, idle=False):
        self.sandbox, self.rid = sandbox, rid
        self.cpu_limit, self.wall_limit = cpu_limit, wall_limit
        self.idle = idle
        self.t0 = time.monotonic()
        self.cpu0 = sandbox_cpu(sandbox)
        self.cpu_at_step: float | None = None
        self.breach: QuotaExceeded | None = None
        self.step = -1
        self.step_at = 0.0
        self.done = False
        self.interrupt = None  # the cell's reply to the interrupt request, once sent


class Watchdog:
    """The supervisor's watchdog thread (started with the first watch)."""

    def __init__(
        self,
        supervisor,
        grace: float = GRACE,
        heartbeat_limit: float = HEARTBEAT_LIMIT,
        events_limit: float = EVENTS_LIMIT,
    ):
        self.supervisor = supervisor
        self.grace = grace
        self.heartbeat_limit = heartbeat_limit
        self.events_limit = events_limit
        self.events = EventReader()
        self._dropped_seen = 0
        self.watches: set[Watch] = set()
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="pyisolate-watchdog", daemon=True)
        self.thread.start()

    def watch(self, sandbox, rid) -> Watch | None:
        limits = sandbox.policy.limits
        if limits.cpu_time is None and limits.wall_time is None:
            return None
        w = Watch(sandbox, rid, limits.cpu_time, limits.wall_time)
        with self.lock:
            self.watches.add(w)
        return w

    def watch_idle(self, sandbox) -> Watch | None:
        """After a request: threads the guest left running may use `cpu_time` more, counted
        from now, until the next request (where the sandbox's cpuacct group sees them)."""
        limit = sandbox.policy.limits.cpu_time
        if limit is None or not getattr(sandbox, "cpu_group", None) or sandbox.closed:
            return None
        w = Watch(sandbox, None, limit, None, idle=True)
        with self.lock:
            self.watches.add(w)
        return w

    def unwatch(self, w: Watch | None) -> None:
        if w is not None:
            w.done = True
            with self.lock:
                self.watches.discard(w)

    def _run(self) -> None:
        while not self.stop.wait(TICK):
            now = time.monotonic()
            with self.lock:
                watches = list(self.watches)
            for w in watches:
                try:
                    self._check(w, now)
                except Exception:  # one odd watch never stops the others
                    pass
            for cell in list(self.supervisor.cells):
                q = getattr(cell, "quota", None)
                if q is None or cell.dead is not None or q.stopped:
                    continue
                silent = now - q.last_beat
                if silent > self.heartbeat_limit and cell.proc.poll() is None:
                    q.stopped = (
                        f"fail-closed: the cell's heartbeat stalled for {silent:.2f}s "
                        f"(limit {self.heartbeat_limit:g}s); the watchdog killed it"
                    )
                    cell.kill()
            self._check_events(now)

    def _check_events(self, now: float) -> None:
        """The guard events must keep flowing: a drain that stalls, or events the kernel
        dropped, end every cell whose sandboxes the BPF guards watch (what they reported
        can no longer be known)."""
        stale = now - self.events.last_drain
        why = None
        if stale > self.events_limit:
            cause = f" ({self.events.error})" if self.events.error else ""
            why = f"the BPF guard event stream stalled for {stale:.2f}s (limit {self.events_limit:g}s){cause}"
        elif self.events.dropped > self._dropped_seen:
            why = f"the BPF guard ring buffer dropped {self.events.dropped - self._dropped_seen} events"
            self._dropped_seen = self.events.dropped
        if why is None:
            return
        for cell in list(self.supervisor.cells):
            q = getattr(cell, "quota", None)
            guarded = any((sb.guards.get("bpf") or {}).get("attached") for sb in list(cell.sandboxes.values()))
            if q is None or q.stopped or cell.dead is not None or not guarded:
                continue
            q.stopped = f"fail-closed: {why}; the watchdog killed it"
            cell.kill()

    def _check(self, w: Watch, now: float) -> None:
        if w.done:
            return
        sb = w.sandbox
        if w.breach is None:
            if w.cpu_limit is not None and w.cpu0 is not None:
                cpu = sandbox_cpu(sb)
                if cpu is not None and cpu - w.cpu0 > w.cpu_limit:
                    w.breach = QuotaExceeded(sb.name, "cpu_time", w.cpu_limit, cpu - w.cpu0, "s")
            wall = now - w.t0
            if w.breach is None and w.wall_limit is not None and wall > w.wall_limit:
                w.breach = QuotaExceeded(sb.name, "wall_time", w.wall_limit, wall, "s")
            if w.breach is None:
                return
            w.breach.at = now
            self._escalate(w, now)
        elif now - w.step_at >= self.grace and w.step + 1 < len(ESCALATION):
            if w.idle:  # no request ends an idle watch: did the last step stop the threads?
                cpu = sandbox_cpu(sb)
                if cpu is not None and w.cpu_at_step is not None and cpu - w.cpu_at_step < self.grace / 2:
                    w.breach, w.step, w.cpu0 = None, -1, cpu  # yes: watch what is left afresh
                    return
            self._escalate(w, now)

    def _escalate(self, w: Watch, now: float) -> None:
        w.step += 1
        w.step_at = now
        action = ESCALATION[w.step]
        w.breach.action = action
        if w.idle:  # _check compares the CPU at the next step with this
            w.cpu_at_step = sandbox_cpu(w.sandbox)
            w.sandbox.breach = w.breach  # nobody waits on an idle watch: the sandbox keeps it
        cell = w.sandbox.cell
        if action == "interrupt":
            message = f"{w.breach.quota} quota exceeded: limit {w.breach.limit:g}s, used {w.breach.measured:.2f}s"
            try:
                w.interrupt = cell.submit({"op": "interrupt", "sb": w.sandbox.name, "message": message})  # no waiting
            except Exception:
                pass
            return
        if cell.quota is not None and cell.quota.stopped is None:
            cell.quota.stopped = f"the watchdog stopped it: {w.breach}"
        try:
            os.kill(cell.pid, getattr(signal, action))
        except ProcessLookupError:
            pass

    def close(self) -> None:
        self.stop.set()
        self.events.stop.set()
