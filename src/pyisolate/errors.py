"""PyIsolate's exceptions: one shallow tree, each message naming what went wrong."""

from __future__ import annotations


class PyIsolateError(Exception):
    """Base of every error PyIsolate raises on purpose."""


class PolicyError(PyIsolateError):
    """A policy file or object is invalid. `where` names the file, line and field."""

    def __init__(self, where: str, problem: str):
        self.where, self.problem = where, problem
        super().__init__(f"{where}: {problem}")


class SandboxError(PyIsolateError):
    """Guest code raised an exception. Carries the guest's type name, message and
    traceback text (strings only: no guest object ever crosses the boundary)."""

    def __init__(self, type_name: str, message: str, traceback: str = "", sandbox: str = ""):
        self.type_name, self.message, self.traceback, self.sandbox = type_name, message, traceback, sandbox
        super().__init__(f"[{sandbox}] {type_name}: {message}" if sandbox else f"{type_name}: {message}")


class SandboxTimeout(PyIsolateError, TimeoutError):
    """Nothing arrived (recv) or the guest did not finish (exec/call) in time."""


class SandboxClosed(PyIsolateError):
    """The sandbox was closed, or its cell is gone."""


class CellCrashed(SandboxClosed):
    """The cell process hosting these sandboxes died. `status` is how it ended; `fault`
    is the cell's fault report (signal, address, thread) when a fault ended it."""

    fault: str | None = None

    def __str__(self) -> str:
        return super().__str__() + (f"; fault report: {self.fault}" if self.fault else "")

    def __init__(self, cell: str, sandboxes: list[str], status: str):
        self.cell, self.sandboxes, self.status = cell, list(sandboxes), status
        names = ", ".join(self.sandboxes) or "no sandboxes"
        super().__init__(f"cell {cell} ({names}) ended: {status}")


class GuardError(PyIsolateError):
    """A sandbox was refused because the kernel guards its policy requires could not be
    applied on this host (see `pyisolate doctor`; a policy may accept reduced guarantees
    with `[guards] accept_reduced = true`)."""


class ProtocolError(PyIsolateError):
    """A peer sent a frame that breaks the protocol; the channel is closed."""


class ReloadRefused(PyIsolateError):
    """A policy reload changed nothing: the new policy is invalid, the caller is not the
    supervisor's owner, or (running="strict") a running sandbox could not take it whole."""


class QuotaExceeded(SandboxError):
    """A sandbox passed a quota of its policy's [limits]: `quota` ("memory", "cpu_time",
    "wall_time"), the `limit`, the `measured` value (bytes or seconds, see `unit`) and
    `action`: what stopped it ("MemoryError" in the guest, "interrupt" at its next
    bytecode, or the signal that ended its cell: "SIGXCPU", "SIGTERM", "SIGKILL")."""

    def __init__(self, sandbox: str, quota: str, limit: float, measured: float, unit: str = "", action: str = ""):
        self.quota, self.limit, self.measured, self.unit, self.action = quota, limit, measured, unit, action
        self.at: float | None = None  # time.monotonic() when the watchdog saw the breach
        super().__init__("QuotaExceeded", "", "", sandbox)

    def __str__(self) -> str:
        if self.unit == "s":
            numbers = f"limit {self.limit:g}s, measured {self.measured:.2f}s"
        else:  # the allocation that would have passed the cap was refused
            numbers = f"limit {self.limit} bytes, held {self.measured} bytes when an allocation past it was refused"
        how = {"interrupt": "interrupted at its next bytecode"}.get(self.action, self.action)
        if self.action.startswith("SIG"):
            how = f"its cell was ended with {self.action}"
        return f"[{self.sandbox}] {self.quota} quota exceeded: {numbers}" + (f"; {how}" if how else "")
