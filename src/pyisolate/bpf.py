"""The host BPF guards (bpf/guard.bpf.c), on the supervisor's side.

The supervisor process (root) loads them once, at its first sandbox, and marks every
sandbox's thread before handing the sandbox to its caller:

  verified_object()   the object's bytes, checked against the shipped manifest
                      (pyisolate/bpf-objects/manifest.lock, a copy of bpf/manifest.lock)
                      with SHA-256 before the loader sees them; a mismatch is refused
  Guard               the loaded and attached programs (the `_pyisolate` extension's
                      libbpf loader): connect rules per policy, marks per thread (task
                      storage) or per cgroup v2, the ring buffer of denials
  shared()            the process's one Guard, or why there is none
  mark_sandbox()      a sandbox's rules and its thread's mark (exec/ptrace/bpf kill for
                      every sandbox; network: only its policy's connect rules, none for a
                      policy without them)

What a mark does on this host (no BPF-LSM needed): cgroup/connect4+6 refuse (EPERM)
connects outside the policy's rules, cgroup/sock_create refuses IPv4/IPv6 sockets other
than TCP (all of them without rules), tp_btf/sys_enter SIGKILLs the process of a marked
task that reaches execve/execveat/ptrace/bpf, tp_btf/sched_process_fork copies the mark
to the task's new threads and processes.

The operator's switch, process-wide and read once, when shared() first loads the guards:
PYISOLATE_HOST_BPF=all (the default: every program), net (everything but tp_btf/sys_enter,
the exec kill that runs on every system call of the host: seccomp still refuses those calls
on sandbox threads), off (nothing loaded; unavailable() says so). Any other value raises
BpfSwitchError there (and in guards.preflight, before the first cell starts), so the
spawn fails rather than run with less.
"""

from __future__ import annotations

import itertools
import os
import socket
import threading
import tomllib
from collections import deque
from pathlib import Path

try:  # hashlib's own SHA-256 (HACL*), without loading OpenSSL at every start
    from _sha2 import sha256
except ImportError:  # not CPython >= 3.12 (the test harness may run 3.11)
    from hashlib import sha256

from .errors import PyIsolateError

OBJECTS = Path(__file__).resolve().parent / "bpf-objects"
GUARD_OBJECT = "guard.bpf.o"
MANIFEST = "manifest.lock"

MARK_NET = 0x1  # bpf/guard.h PYI_MARK_NET: the policy has connect rules
MARK_KILL = 0x2  # PYI_MARK_KILL: SIGKILL on execve/execveat/ptrace/bpf
HOOKS = {1: "connect4", 2: "connect6", 3: "sock_create", 4: "exec-kill"}
SOURCES = {1: "task", 2: "cgroup"}
SYSCALLS = {59: "execve", 101: "ptrace", 321: "bpf", 322: "execveat"}
EVENT_LOG = 4096  # denials kept for guard_events() (oldest dropped first)
SWITCH = "PYISOLATE_HOST_BPF"  # the operator's choice of host guards (module docstring)
SWITCH_VALUES = ("all", "net", "off")


class BpfIntegrityError(PyIsolateError):
    """A BPF object's bytes are not the ones its manifest records: nothing is loaded."""

    def __init__(self, name: str, expected: str, actual: str, manifest: Path):
        self.name, self.expected, self.actual = name, expected, actual
        super().__init__(
            f"{name}: SHA-256 mismatch, refusing to load it\n"
            f"  expected: {expected} ({manifest})\n"
            f"  actual:   {actual}\n"
            "  the distribution's BPF objects were changed after the build; reinstall it"
        )


class BpfUnavailable(PyIsolateError):
    """The host BPF guards cannot be loaded here (the message says why)."""


class BpfSwitchError(PyIsolateError, ValueError):
    """PYISOLATE_HOST_BPF holds a value that is not one of SWITCH_VALUES: nothing is loaded
    and no cell starts (raised at every load attempt, never cached)."""


def switch() -> str:
    """The operator's PYISOLATE_HOST_BPF now: "all" (also when unset or empty), "net" or
    "off"; BpfSwitchError for anything else."""
    value = os.environ.get(SWITCH, "") or "all"
    if value not in SWITCH_VALUES:
        raise BpfSwitchError(
            f"{SWITCH}={value!r} is not a valid value: use one of {', '.join(SWITCH_VALUES)} "
            "(all: every host BPF guard; net: all but the tp_btf/sys_enter exec kill; off: none)"
        )
    return value


SWITCHED_OFF = f"switched off by the operator ({SWITCH}=off); seccomp and Landlock still hold"
NO_EXEC_KILL = (
    f"tp_btf/sys_enter switched off by the operator ({SWITCH}=net): it would run on every system call of the "
    "host; seccomp still refuses execve/execveat/ptrace/bpf on sandbox threads (EPERM)"
)


def read_manifest(directory: Path | None = None) -> dict[str, str]:
    """Object name → SHA-256 hex, from the manifest next to the objects."""
    path = (directory or OBJECTS) / MANIFEST
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BpfUnavailable(f"{path}: cannot read the BPF manifest: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BpfIntegrityError(MANIFEST, "valid TOML", f"unreadable ({exc})", path) from None
    objects = data.get("objects")
    if not isinstance(objects, dict):
        raise BpfIntegrityError(MANIFEST, "an [objects] table", "none", path)
    return {name: str(entry.get("sha256", "")) for name, entry in objects.items() if isinstance(entry, dict)}


def verified_object(name: str = GUARD_OBJECT, directory: Path | None = None) -> bytes:
    """The object's bytes, read once and checked against the manifest: the same bytes
    object goes to the loader, so what is loaded is what was hashed."""
    directory = directory or OBJECTS
    expected = read_manifest(directory).get(name)
    if not expected:
        raise BpfIntegrityError(name, "an entry in the manifest", "none", directory / MANIFEST)
    try:
        data = (directory / name).read_bytes()
    except OSError as exc:
        raise BpfUnavailable(f"{directory / name}: cannot read the BPF object: {exc}") from None
    actual = sha256(data).hexdigest()
    if actual != expected:
        raise BpfIntegrityError(name, expected, actual, directory / MANIFEST)
    return data


def cgroup2_root() -> str:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup/unified on a hybrid host)."""
    with open("/proc/self/mountinfo", encoding="utf-8") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            if right.split(" ", 1)[0] == "cgroup2":
                return left.split()[4]
    raise BpfUnavailable("no cgroup2 hierarchy is mounted: the cgroup sock programs need one")


def rule_entries(connect) -> list[tuple[int, bytes, int]]:
    """The policy's ("host", "port") connect rules as map entries (family, address, port):
    "*" host → family 0; "*" port → 0; an IPv4-mapped IPv6 address → its IPv4 form."""
    entries = []
    for host, port in connect:
        number = 0 if port == "*" else int(port)
        if host == "*":
            entries.append((0, b"", number))
            continue
        import ipaddress  # here: most policies have no connect rules, and start-up counts

        address = ipaddress.ip_address(host)
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        family = socket.AF_INET if address.version == 4 else socket.AF_INET6
        entries.append((family, address.packed, number))
    return entries


def _native():
    try:
        import _pyisolate
    except ImportError:
        raise BpfUnavailable(
            "the _pyisolate extension is not importable in the supervisor's interpreter "
            "(run the supervisor on the PyIsolate distribution's python3.14t)"
        ) from None
    if not hasattr(_pyisolate, "bpf_guard_open"):
        raise BpfUnavailable("this _pyisolate was built without the BPF loader")
    return _pyisolate


def decode_event(raw: tuple, hooks: dict) -> tuple[dict, tuple]:
    """A ring-buffer record (bpf/guard.h's struct pyi_event, as either loader returns it):
    the fields every hook reports, and (hook, nr, port, family, addr) for its own."""
    time_ns, cgroup, tid, tgid, policy, hook, nr, port, family, source, addr, comm = raw
    event = {
        "time_ns": time_ns,
        "hook": hooks.get(hook, str(hook)),
        "tid": tid,
        "pid": tgid,
        "policy": policy,
        "comm": comm.decode("utf-8", "replace"),
        "marked_by": SOURCES.get(source, str(source)),
        "cgroup": cgroup,
    }
    return event, (hook, nr, port, family, addr)


def _event(raw: tuple) -> dict:
    event, (hook, nr, port, family, addr) = decode_event(raw, HOOKS)
    if hook in (1, 2):
        import ipaddress

        host = ipaddress.ip_address(addr[:4] if family == socket.AF_INET else addr)
        event["address"] = f"{host}:{port}" if host.version == 4 else f"[{host}]:{port}"
    elif hook == 3:
        event.update(family=family, type=nr, protocol=port)
    elif hook == 4:
        event["syscall"] = SYSCALLS.get(nr, nr)
    return event


_MEMBARRIER = 324  # x86-64 syscall number
_MEMBARRIER_CMD_GLOBAL = 1


def rcu_grace_period() -> None:
    """Wait until every BPF program running now has returned. The cgroup and tracing
    programs run inside RCU read-side sections, and membarrier(MEMBARRIER_CMD_GLOBAL)
    returns after synchronize_rcu() (kernel/sched/membarrier.c): the standard wait before
    freeing what such a program may still be reading. ~10 ms; reloads only."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_MEMBARRIER, _MEMBARRIER_CMD_GLOBAL, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"membarrier(MEMBARRIER_CMD_GLOBAL): {os.strerror(err)}")


class Reaper:
    """Removes retired rule sets once no BPF program can still be reading them: every set
    in a batch was unhooked before the grace period started. One wait serves a whole batch,
    so reloads at any rate cost one grace period per ~10 ms, not one each. `drop(*entry)`
    removes one retired entry; `close()` drains what is left, then returns."""

    def __init__(self, drop, name: str):
        self._drop = drop
        self._retired: list[tuple] = []
        self._cv = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def retire(self, entry: tuple) -> None:
        with self._cv:
            self._retired.append(entry)
            self._cv.notify()

    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._retired and not self._closing:
                    self._cv.wait()
                batch, self._retired = self._retired, []
                if not batch and self._closing:
                    return
            rcu_grace_period()
            for entry in batch:
                self._drop(*entry)

    def close(self) -> None:
        with self._cv:
            self._closing = True
            self._cv.notify()
        self._thread.join()


class RuleSets:
    """What the host guard (Guard) and the BPF-LSM guard (lsm.LsmGuard) share: a policy id
    points at one rule set in the `rule_sets` map; a reload fills a new set, switches the
    policy in one map update (every hook sees the old rules or the new ones, never a mix),
    and retires the old set to the Reaper, which removes it after an RCU grace period.
    A subclass names its map calls: `_fill(set, *rules)`, `_drop_set(set, *rules)`,
    `_point(policy, set or None)`, `_read_events()`, and decodes events with `_decode`."""

    KIND = "BPF"  # in errors
    RETIRE_DROPPED = True  # False: a dropped policy's set is removed at once (fail closed)

    def _start_sets(self, reaper_name: str) -> None:
        self._ids = itertools.count(1)  # policy ids and rule-set ids, never reused
        self._sets: dict[int, tuple] = {}  # policy -> (its rule set, *the set's rules)
        self._lock = threading.Lock()
        self._events: deque = deque(maxlen=EVENT_LOG)
        self._reaper = Reaper(self._drop_set, reaper_name)

    def _new_set(self, *rules) -> tuple:
        with self._lock:
            rule_set = next(self._ids)
        self._fill(rule_set, *rules)
        return (rule_set, *rules)

    def _add(self, *rules) -> int:
        with self._lock:
            policy = next(self._ids)
        self._sets[policy] = self._new_set(*rules)
        self._point(policy, self._sets[policy][0])
        return policy

    def _replace(self, policy: int, *rules) -> None:
        old = self._sets.get(policy)
        if old is None:
            raise KeyError(f"no {self.KIND} policy {policy}")
        self._sets[policy] = self._new_set(*rules)
        self._point(policy, self._sets[policy][0])
        # A program that read the old set's id just before the switch may still be looking
        # its rules up: they are removed only after every such program has returned.
        self._reaper.retire(old)

    def drop_policy(self, policy: int) -> None:
        """The policy allows nothing from now on (its rule set is gone)."""
        old = self._sets.pop(policy, None)
        self._point(policy, None)
        if old is not None:
            if self.RETIRE_DROPPED:
                self._reaper.retire(old)
            else:
                self._drop_set(*old)

    def events(self) -> list[dict]:
        """Every denial kept so far (newest last), after reading the ring buffer."""
        with self._lock:
            self._events.extend(self._decode(raw) for raw in self._read_events())
            return list(self._events)


class Guard(RuleSets):
    """guard.bpf.o loaded (verified bytes) and attached: tp_btf programs globally, the
    cgroup sock programs to `cgroup_dir` (default: the cgroup v2 root, so every process
    is covered; unmarked tasks are never refused). exec_kill=False (PYISOLATE_HOST_BPF=net)
    never loads tp_btf/sys_enter."""

    RETIRE_DROPPED = False  # a closed sandbox's connects are refused from the drop on

    def __init__(self, directory: Path | None = None, cgroup_dir: str | None = None, *, exec_kill: bool = True):
        data = verified_object(GUARD_OBJECT, directory or OBJECTS)  # refused before anything loads
        self._lib = _native()
        self.cgroup_dir = cgroup_dir or cgroup2_root()
        self.exec_kill = exec_kill
        self._handle = self._lib.bpf_guard_open(data if exec_kill else (data, False))
        try:
            self.attached = self._lib.bpf_guard_attach(self._handle, self.cgroup_dir)
        except BaseException:
            self._lib.bpf_guard_close(self._handle)
            raise
        self._start_sets("pyisolate-bpf-reaper")

    def _fill(self, rule_set: int, entries: list) -> None:
        for family, addr, port in entries:
            self._lib.bpf_guard_rule(self._handle, rule_set, family, addr, port, True)

    def _drop_set(self, rule_set: int, entries: list) -> None:
        for family, addr, port in entries:
            self._lib.bpf_guard_rule(self._handle, rule_set, family, addr, port, False)

    def _point(self, policy: int, rule_set: int | None) -> None:
        self._lib.bpf_guard_rule_set(self._handle, policy, rule_set)

    def _read_events(self) -> list:
        return self._lib.bpf_guard_events(self._handle)

    _decode = staticmethod(_event)

    def add_policy(self, connect) -> int:
        """A new policy id holding these connect rules (("host", "port") pairs)."""
        return self._add(rule_entries(connect))

    def replace_rules(self, policy: int, connect) -> None:
        """Give a policy new connect rules, atomically for its tasks: the new set is filled
        first, then the policy is pointed at it in one map update (a connect sees the old
        rules or the new ones, never a mix), then the old set is removed."""
        self._replace(policy, rule_entries(connect))

    def mark_thread(self, tid: int, policy: int, flags: int) -> None:
        self._lib.bpf_guard_mark_task(self._handle, tid, policy, flags)

    def thread_mark(self, tid: int) -> tuple[int, int] | None:
        """(policy, flags) the thread carries, or None."""
        return self._lib.bpf_guard_task_mark(self._handle, tid)

    def unmark_thread(self, tid: int) -> bool:
        return self._lib.bpf_guard_unmark_task(self._handle, tid)

    def mark_cgroup(self, cgroup_id: int, policy: int, flags: int | None) -> None:
        """Mark every task of a cgroup v2 (its id: the inode of its directory) that has
        no task mark of its own; flags None removes the mark."""
        self._lib.bpf_guard_mark_cgroup(self._handle, cgroup_id, policy, flags)

    def counters(self) -> dict:
        return self._lib.bpf_guard_counters(self._handle)

    def close(self) -> None:
        self._reaper.close()
        self._lib.bpf_guard_close(self._handle)


_shared: Guard | None = None
_shared_error: str | None = None
_shared_switch: str | None = None  # PYISOLATE_HOST_BPF as read at the load
_shared_lock = threading.Lock()


def shared() -> Guard | None:
    """The process's Guard, loaded at the first call; None when it cannot be (then
    `unavailable()` says why). A tampered object raises BpfIntegrityError every time, an
    invalid PYISOLATE_HOST_BPF BpfSwitchError every time."""
    global _shared, _shared_error, _shared_switch
    with _shared_lock:
        if _shared is None and _shared_error is None:
            chosen = switch()  # read once: the first load that gets past it fixes it
            _shared_switch = chosen
            if chosen == "off":
                _shared_error = SWITCHED_OFF
                return None
            try:
                _native()  # first: the most likely reason, named plainly
                if os.geteuid() != 0:
                    raise BpfUnavailable("the supervisor is not root (loading BPF programs needs CAP_BPF and more)")
                _shared = Guard(exec_kill=chosen == "all")
            except BpfIntegrityError:
                raise
            except (BpfUnavailable, OSError) as exc:
                _shared_error = str(exc)
        return _shared


def unavailable() -> str | None:
    return _shared_error


def switched() -> str | None:
    """PYISOLATE_HOST_BPF as the guards' load read it ("all", "net", "off"); None before."""
    return _shared_switch


def mark_sandbox(tid: int | None, connect) -> dict:
    """Mark a sandbox's thread: its policy's connect rules, the exec kill. Returns what
    the sandbox got, for `Sandbox.guards["bpf"]` (never raises for a host without BPF:
    the report says why, and the mode does not depend on it)."""
    guard = shared()
    if guard is None:
        return {"attached": False, "why": unavailable()}
    if not tid:
        return {"attached": False, "why": "the cell's create reply carries no thread id"}
    policy = guard.add_policy(connect)
    flags = MARK_KILL | (MARK_NET if connect else 0)
    try:
        guard.mark_thread(tid, policy, flags)
    except OSError:
        guard.drop_policy(policy)
        raise
    return {
        "attached": True,
        "tid": tid,
        "policy": policy,
        "network": "connect rules: " + ", ".join(f"{h}:{p}" for h, p in connect) if connect else "no network",
        "exec_kill": guard.exec_kill,
        **({} if guard.exec_kill else {"exec_kill_why": NO_EXEC_KILL}),
        "programs": list(guard.attached),
    }


def unmark_sandbox(report: dict) -> None:
    """The sandbox is closed: its rules go. Its threads keep their marks (a thread still
    running then may connect nowhere) until they end; they are not unmarked by thread id,
    which the kernel may already have given to another thread."""
    guard = _shared
    if guard is not None and report.get("attached"):
        guard.drop_policy(report["policy"])


def replace_sandbox_rules(report: dict, connect) -> bool:
    """A policy reload's new connect rules for a running sandbox (its `Sandbox.guards["bpf"]`):
    swapped in atomically for all its threads. Only hosts and ports within what its thread
    had at creation can work (Landlock's ports and seccomp's socket() stay as they were);
    a sandbox created without connect rules stays without network. False when the sandbox
    has no BPF mark."""
    guard = _shared
    if guard is None or not report.get("attached"):
        return False
    guard.replace_rules(report["policy"], connect)
    return True


def policy_events(guard, policies) -> list[dict]:
    """The denials of these policy ids that `guard` (a Guard, an lsm.LsmGuard, or None: not
    loaded) has read, newest last."""
    if guard is None:
        return []
    wanted = set(policies)
    return [event for event in guard.events() if event["policy"] in wanted]


def events_of(policies) -> list[dict]:
    """The denials of these policy ids (a supervisor's sandboxes), newest last."""
    return policy_events(_shared, policies)


def probe() -> dict:
    """For `pyisolate doctor`: what this kernel does with PyIsolate's BPF programs, by
    trying (loading without attaching): the host guards (guard.bpf.o, verified), and the
    smallest BPF-LSM program (lsm/file_open)."""
    try:
        lib = _native()
        if os.geteuid() != 0:
            raise BpfUnavailable("not root: BPF program loads are refused to this user")
    except BpfUnavailable as exc:
        return {
            "host_guards": {"loads": False, "why": str(exc), **_switch_report()},
            "lsm": {"loads": False, "why": str(exc)},
        }
    loads, err, detail = lib.bpf_probe_lsm()
    out: dict = {"lsm": {"loads": loads, "errno": err, ("detail" if loads else "why"): detail}}
    try:
        lib.bpf_guard_close(lib.bpf_guard_open(verified_object()))
        out["host_guards"] = {"loads": True}
    except (BpfUnavailable, BpfIntegrityError, OSError) as exc:
        out["host_guards"] = {"loads": False, "why": str(exc)}
    out["host_guards"].update(_switch_report())
    return out


def _switch_report() -> dict:
    """What a supervisor started with this environment would load (PYISOLATE_HOST_BPF)."""
    try:
        return {"switch": switch()}
    except BpfSwitchError as exc:
        return {"switch": None, "switch_error": str(exc)}
