"""Kernel guards attached to a cell before it is allowed to run guest code.

The supervisor calls `attach` between the cell's hello and its "go", so whatever holds
here holds before any guest code runs. What a cell gets, and where it comes from:

  no_new_privs, base seccomp filter   the cell itself, in sitecustomize, before any thread
                                      (pyisolate.kernel.prepare_cell); reported in hello
  Landlock + seccomp allow-list       each sandbox's own thread, before its interpreter
                                      runs (pyisolate.kernel.restrict_thread); reported in
                                      the create reply, i.e. `Sandbox.guards`
  rlimits                             the cell, per sandbox, where it hosts only that one
  host BPF guards                     the supervisor, loaded once per process at its first
  (cgroup-bpf, exec-kill)             cell (pyisolate.bpf; `preflight` before it); each
                                      sandbox's thread is marked after its create reply,
                                      before the caller gets it;
                                      the operator's PYISOLATE_HOST_BPF=net leaves exec-kill
                                      out, =off both (reported missing, with that reason)
  BPF-LSM programs                    the supervisor, loaded once per process at its first
                                      cell where the kernel runs them (pyisolate.lsm); each
                                      sandbox's thread is marked next to the host BPF mark

`attach` checks the cell's preparation against what the kernel says about the cell
(/proc/PID/status: seccomp mode 2, no_new_privs) and reports the mode:
  "full"      BPF-LSM (lsm.bpf.o loaded and attached) + everything "landlock" needs; only
              where the kernel loads LSM programs and runs the bpf LSM (proven in the VM test)
  "landlock"  seccomp + Landlock + rlimits (+ the host BPF guards where they load, which
              do not change the mode): the design's reduced-guarantees fallback
  "none"      the cell could not prepare its guards; sandboxes are refused unless their
              policy says `[guards] accept_reduced = true`
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType

from . import bpf, kernel, lsm


@dataclass(frozen=True)
class GuardReport:
    mode: str  # "full", "landlock", or "none"
    attached: tuple[str, ...] = ()
    missing: tuple[str, ...] = ("seccomp", "landlock", "bpf-lsm", "cgroup")
    # mechanism -> what it does for this cell, or why it is missing
    details: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))


def _uids(pid: int) -> tuple[int, ...]:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Uid:"):
                    return tuple(int(v) for v in line.split()[1:])
    except OSError:
        pass
    return ()


_checked = False


def preflight() -> None:
    """What refuses a spawn before any cell starts, checked once per process: an invalid
    PYISOLATE_HOST_BPF (BpfSwitchError) and a tampered object (BpfIntegrityError: each is
    hashed against the shipped manifest). The kernel's load and attach (~20 ms: the
    verifier, the LSM probe) then run in `attach`, beside the cell's start; an object that
    changed in between is still refused there, and the cell with it."""
    global _checked
    if _checked:
        return
    objects = [lsm.OBJECT] if bpf.switch() == "off" else [bpf.GUARD_OBJECT, lsm.OBJECT]
    for name in objects:
        try:
            bpf.verified_object(name)
        except bpf.BpfUnavailable:
            pass  # unreadable: the load says so (unavailable()), it refuses nothing
    _checked = True


def _load_or_refuse(cell, load, refusals):
    """The process's loaded guard (or None); a refusal (a tampered object, an invalid
    switch) ends the cell before it ever gets "go", and is raised to the spawn."""
    try:
        return load()
    except refusals:
        cell.kill()
        raise


def attach(cell) -> GuardReport:
    """Check and report the guards of `cell` (its pid is `cell.pid`, its hello `cell.hello`)."""
    prep = (getattr(cell, "hello", None) or {}).get("guards") or {}
    status = kernel.task_status(pid=cell.pid)
    attached: list[str] = []
    details: dict[str, str] = {}
    missing: list[str] = []
    # The cell's cgroup (pyisolate.cgroups, placed by the supervisor before this): attached
    # only where the kernel took every limit and lists the cell in the group.
    quota = getattr(cell, "quota", None)
    placed = quota.report() if quota is not None else {"memory": "not enforced: no placement"}
    for controller, text in placed.items():
        details[f"cgroup-{controller}"] = text
    (attached if all(not t.startswith("not enforced") for t in placed.values()) else missing).append("cgroup")
    details["cgroup"] = "; ".join(f"{c}: {t}" for c, t in placed.items())

    if status.get("no_new_privs") == 1:
        attached.append("no-new-privs")
        details["no-new-privs"] = "set for the whole cell (kernel: NoNewPrivs 1)"
    else:
        missing.append("no-new-privs")
        details["no-new-privs"] = f"not set (kernel: {status})"
    base = prep.get("base_filter")
    if base and status.get("seccomp") == 2:
        attached.append("seccomp-base")
        details["seccomp-base"] = f"{base['rules']}-rule deny-list on every thread of the cell (kernel: Seccomp 2)"
    else:
        missing.append("seccomp-base")
        details["seccomp-base"] = prep.get("error") or f"not installed (kernel: {status})"

    levels = {"landlock": "landlock_abi", "seccomp": "seccomp_api"}
    unavailable = [name for name, key in levels.items() if not prep.get(key)]
    for name in unavailable:
        missing.append(name)
        details[name] = prep.get(f"{levels[name]}_error") or prep.get("error") or "unavailable"
    if not unavailable:
        attached += ["landlock", "seccomp"]
        details["landlock"] = f"per sandbox thread, ABI {prep['landlock_abi']}: the policy's filesystem and TCP rules"
        details["seccomp"] = "per sandbox thread: an allow-list, EPERM for the rest"
    if prep.get("rlimit_core") == 0:
        attached.append("rlimits")
        details["rlimits"] = "RLIMIT_CORE=0; open files and CPU time where the cell hosts one sandbox"
    else:
        missing.append("rlimits")
        details["rlimits"] = prep.get("rlimit_core_error") or "RLIMIT_CORE not set by the cell preparation"
    # Host BPF guards: loaded here at the first cell (`preflight` refused a bad switch or
    # a tampered object before it started; what changed since ends the cell here).
    guard = _load_or_refuse(cell, bpf.shared, (bpf.BpfIntegrityError, bpf.BpfSwitchError))
    if guard is not None:
        attached.append("cgroup-bpf")
        details["cgroup-bpf"] = (
            "cgroup/connect4, connect6, sock_create: each sandbox thread (task storage) connects only to its "
            "policy's IP:PORT rules, no IPv4/IPv6 socket at all without rules (EPERM); "
            "tp_btf/sched_process_fork marks its new threads"
        )
        if guard.exec_kill:
            attached.append("exec-kill")
            details["exec-kill"] = (
                "tp_btf/sys_enter: a sandbox task reaching execve/execveat/ptrace/bpf is SIGKILLed with its cell "
                "(after the call ran: seccomp is what prevents it)"
            )
        else:
            missing.append("exec-kill")
            details["exec-kill"] = bpf.NO_EXEC_KILL
    else:
        missing += ["cgroup-bpf", "exec-kill"]
        details["cgroup-bpf"] = details["exec-kill"] = f"host BPF guards not loaded: {bpf.unavailable()}"
    # BPF-LSM (lsm.py): loaded here at the first cell, where the kernel runs it.
    lsm_guard = _load_or_refuse(cell, lsm.shared, bpf.BpfIntegrityError)
    if lsm_guard is not None:
        attached.append("bpf-lsm")
        details["bpf-lsm"] = (
            "lsm/file_open, inode_unlink, socket_connect, bprm_check_security, ptrace_access_check, bpf, task_alloc: "
            "each sandbox thread (and what it creates) opens and unlinks only beneath its policy's paths (EACCES), "
            "connects only per its rules, never execs, ptraces or calls bpf() (EPERM)"
        )
    else:
        missing.append("bpf-lsm")
        details["bpf-lsm"] = f"BPF-LSM programs not loaded: {lsm.unavailable()}"
    # Who the cell runs as, in the kernel's words (all four of real/effective/saved/fs uid).
    uids = _uids(cell.pid)
    note = getattr(getattr(cell, "user", None), "note", "")
    if uids and 0 not in uids:
        attached.append("unprivileged-uid")
        details["unprivileged-uid"] = f"{note} (kernel: Uid {' '.join(map(str, uids))})"
    else:
        missing.append("unprivileged-uid")
        details["unprivileged-uid"] = f"{note or 'the cell runs as root'} (kernel: Uid {' '.join(map(str, uids))})"
    complete = {"no-new-privs", "seccomp-base", "landlock", "seccomp"} <= set(attached)
    mode = ("full" if lsm_guard is not None else "landlock") if complete else "none"
    return GuardReport(mode, tuple(attached), tuple(missing), MappingProxyType(details))
