"""Process-level quotas for cells: a cgroup per cell with a memory and a pids limit.

The supervisor makes the group as soon as a cell's process exists, while it starts (so
it holds long before its "go" and any guest code), moves the cell into it, adjusts the limits as sandboxes come and go,
and removes it when the cell has ended. What the host offers is detected, never assumed:

  cgroup v2   a controller counts only if the v2 root lists it in cgroup.controllers and
              the group's parent enables it in cgroup.subtree_control;
  cgroup v1   a hierarchy mounted with the controller (the hybrid layout of the
              development host: v1 memory and pids; its cgroup2 mount has neither).

CPU per sandbox (`cpuacct`, v1 only): the cell's group has one child per sandbox, into
which the supervisor moves the sandbox's thread (v1 places single threads). Threads the
guest starts are born in it, and the kernel keeps counting the CPU of those that ended,
so `cpuacct.usage` is all the CPU the sandbox's threads used. Without it (cgroup v2 only:
per-thread groups there need threaded subtrees, not done) only the sandbox thread's own
clock is known; `Placement.why["cpuacct"]` says why.

Each controller is taken from v2 where v2 has it, else from v1. Groups are made beneath the
supervisor's own group in that hierarchy (read from /proc/self/cgroup), so whatever limits
the supervisor itself runs under still apply. `Placement.report()` says what holds and
what does not, with the file the limit was written to; nothing is reported as enforced
unless the kernel accepted the limit and the cell's pid is listed in the group.

Memory outside the per-interpreter cap (the RAW allocator domain, C libraries, the cell's
own interpreter, thread stacks) is bounded here. Without a memory controller the cell gets
no process-level memory limit (RLIMIT_AS is unusable: mimalloc reserves address space in
1 GiB arenas); the report says so.
"""

from __future__ import annotations

import errno
import os
import time
from dataclasses import dataclass, field

from .errors import PyIsolateError

# What a cell needs beyond its sandboxes' own limits: its interpreter, the pool's
# pre-made interpreters, thread stacks, the extension's libraries.
CELL_BASE_MEMORY = 256 << 20
# Sandboxes without a memory limit count as this much towards their cell's limit.
DEFAULT_SANDBOX_MEMORY = 1 << 30
# Tasks (threads) a cell has besides its sandboxes: main, pool, a few helpers.
CELL_BASE_TASKS = 16
# Tasks a sandbox without a thread limit counts as (its own thread + guest threads).
DEFAULT_SANDBOX_TASKS = 16


class CgroupError(PyIsolateError):
    """A cgroup could not be made or written (the message names the file)."""


@dataclass(frozen=True)
class Controller:
    name: str  # "memory", "pids" or "cpuacct"
    version: int  # 1 or 2
    parent: str  # the directory groups are made in


def _mounts() -> list[tuple[str, str, list[str]]]:
    out = []
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 4 and fields[2] in ("cgroup", "cgroup2"):
                    out.append((fields[2], fields[1], fields[3].split(",")))
    except OSError:
        pass
    return out


def _own_paths() -> tuple[dict[str, str], str | None]:
    """This process's group per v1 controller, and its v2 group."""
    v1: dict[str, str] = {}
    v2 = None
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                if controllers == "":
                    v2 = path
                for name in controllers.split(","):
                    v1[name] = path
    except OSError:
        pass
    return v1, v2


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def _write(path: str, value: str) -> None:
    try:
        with open(path, "w", encoding="ascii") as f:
            f.write(value)
    except OSError as exc:
        raise CgroupError(f"writing {value!r} to {path}: {exc.strerror}") from None


def _mkdir(path: str) -> None:
    """A group directory (an existing one is taken as it is)."""
    try:
        os.mkdir(path, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        raise CgroupError(f"mkdir {path}: {exc.strerror}") from None


def detect() -> dict:
    """{"memory": Controller | None, "pids": Controller | None, "why": {name: reason}}:
    where each controller can be used for cells on this host, or why not."""
    mounts = _mounts()
    own_v1, own_v2 = _own_paths()
    found: dict = {"memory": None, "pids": None, "cpuacct": None, "why": {}}
    v2_root = next((where for kind, where, _ in mounts if kind == "cgroup2"), None)
    v2_available: set[str] = set()
    v2_parent = None
    if v2_root is not None and own_v2 is not None:
        v2_available = set((_read(f"{v2_root}/cgroup.controllers") or "").split())
        v2_parent = os.path.join(v2_root, own_v2.lstrip("/"))
        enabled = set((_read(f"{v2_parent}/cgroup.subtree_control") or "").split())
        v2_available &= enabled | {c for c in v2_available if _try_enable(v2_parent, c)}
    for name in ("memory", "pids", "cpuacct"):
        if name in v2_available and v2_parent is not None:
            found[name] = Controller(name, 2, v2_parent)
            continue
        mount = next((where for kind, where, opts in mounts if kind == "cgroup" and name in opts), None)
        reasons = []
        if v2_root is not None and name != "cpuacct":
            reasons.append(f"cgroup2 at {v2_root} has no usable {name} controller")
        if mount is None:
            if name == "cpuacct":
                reasons.append(
                    "no cgroup v1 cpuacct hierarchy (per-thread groups on cgroup v2 need threaded "
                    "subtrees: not done), so only the sandbox thread's own CPU clock counts"
                )
            else:
                reasons.append(f"no cgroup v1 hierarchy has the {name} controller")
            found["why"][name] = "; ".join(reasons)
            continue
        parent = os.path.join(mount, own_v1.get(name, "/").lstrip("/"))
        if not os.access(parent, os.W_OK):
            found["why"][name] = f"{parent} is not writable by this process (uid {os.getuid()})"
            continue
        found[name] = Controller(name, 1, parent)
    return found


def _try_enable(parent: str, controller: str) -> bool:
    """Enable a v2 controller for the children of `parent` (needs the right to write its
    subtree_control; fails when the parent has processes of its own: the v2 rule)."""
    try:
        _write(f"{parent}/cgroup.subtree_control", f"+{controller}")
    except CgroupError:
        return False
    return True


@dataclass
class Placement:
    """A cell's groups (one per controller) and the limits in force."""

    name: str
    groups: dict[str, tuple[Controller, str]] = field(default_factory=dict)  # controller -> (ctl, dir)
    limits: dict[str, int] = field(default_factory=dict)
    why: dict[str, str] = field(default_factory=dict)
    pid: int | None = None

    @classmethod
    def create(cls, name: str, memory: int | None, tasks: int | None, found: dict | None = None) -> Placement:
        """Make the groups (memory, pids; cpuacct, without a limit, for its sandboxes' CPU)
        for a cell named `name` and set their limits."""
        found = detect() if found is None else found
        placement = cls(name, why=dict(found["why"]))
        for controller, value in (("memory", memory), ("pids", tasks), ("cpuacct", None)):
            ctl = found.get(controller)
            if ctl is None:
                continue
            path = os.path.join(ctl.parent, name)
            try:
                _mkdir(path)
            except CgroupError as exc:
                placement.why[controller] = str(exc)
                continue
            placement.groups[controller] = (ctl, path)
            if value is not None:
                try:
                    placement.set_limit(controller, value)
                except CgroupError as exc:
                    placement.why[controller] = str(exc)
        return placement

    def _files(self, controller: str) -> list[str]:
        ctl, path = self.groups[controller]
        if controller == "memory":
            if ctl.version == 2:
                return [f"{path}/memory.max", f"{path}/memory.swap.max"]
            # memsw (memory + swap) where the kernel has it, so swap is no way around.
            return [f"{path}/memory.limit_in_bytes", f"{path}/memory.memsw.limit_in_bytes"]
        return [f"{path}/pids.max"]

    def set_limit(self, controller: str, value: int) -> None:
        """Set (raise or lower) a limit. v1 refuses a memsw limit below the memory limit
        and a memory limit above memsw, so the order depends on the direction."""
        if controller not in self.groups:
            return
        files = self._files(controller)
        if controller == "memory" and self.groups[controller][0].version == 1:
            current = int(_read(files[0]) or 0)
            if value > current:
                files = files[::-1]
        for path in files:
            if not os.path.exists(path):
                continue  # no swap accounting on this kernel
            if path.endswith("memory.swap.max"):
                _write(path, "0")
                continue
            _write(path, str(value))
        self.limits[controller] = value

    def add(self, pid: int) -> None:
        """Move a process (all its threads) into every group but cpuacct's, which only
        holds its sandboxes' groups (each move costs the kernel an RCU grace period)."""
        self.pid = pid
        for controller, (_ctl, path) in list(self.groups.items()):
            if controller == "cpuacct":
                continue
            try:
                _write(f"{path}/cgroup.procs", str(pid))
            except CgroupError as exc:
                self.why[controller] = str(exc)
                del self.groups[controller]
                self.limits.pop(controller, None)

    def sandbox_group(self, name: str, tid: int) -> str:
        """A cpuacct group for one sandbox, its thread (`tid`) moved in: what the guest's
        threads use is counted there (cpu_seconds). CgroupError says why not."""
        if "cpuacct" not in self.groups:
            raise CgroupError(self.why.get("cpuacct") or "no cpuacct group for the cell")
        path = os.path.join(self.groups["cpuacct"][1], name)
        _mkdir(path)
        _write(f"{path}/tasks", str(tid))
        return path

    def sandbox_ungroup(self, path: str) -> None:
        """Remove a sandbox's group: threads still in it (a guest's, still ending) go back
        to where the cell's threads are (the supervisor's group; v1 refuses to remove a
        group with tasks)."""
        ctl = self.groups.get("cpuacct")
        for tid in (_read(f"{path}/tasks") or "").split() if ctl is not None else ():
            try:
                _write(f"{ctl[0].parent}/tasks", tid)
            except CgroupError:
                pass  # it ended meanwhile
        try:
            os.rmdir(path)
        except OSError:
            pass  # removed with the cell's group (remove)

    def holds(self, controller: str) -> bool:
        """The limit is in force: the kernel took it and lists the cell in the group."""
        if controller not in self.groups or controller not in self.limits or self.pid is None:
            return False
        _ctl, path = self.groups[controller]
        procs = (_read(f"{path}/cgroup.procs") or "").split()
        in_force = int(_read(self._files(controller)[0]) or -1)  # v1 rounds memory down to pages
        return str(self.pid) in procs and abs(in_force - self.limits[controller]) < 4096

    def usage(self) -> dict:
        """What the kernel counts for the group now (bytes, tasks, limit hits)."""
        out: dict = {}
        if "memory" in self.groups:
            ctl, path = self.groups["memory"]
            if ctl.version == 1:
                out["memory"] = int(_read(f"{path}/memory.usage_in_bytes") or 0)
                out["memory_failcnt"] = int(_read(f"{path}/memory.failcnt") or 0)
                oom = dict(line.split() for line in (_read(f"{path}/memory.oom_control") or "").splitlines())
                out["oom_kills"] = int(oom.get("oom_kill", 0))
            else:
                out["memory"] = int(_read(f"{path}/memory.current") or 0)
                events = dict(line.split() for line in (_read(f"{path}/memory.events") or "").splitlines())
                out["oom_kills"] = int(events.get("oom_kill", 0))
        if "cpuacct" in self.groups:  # the CPU of its sandboxes' groups (cpuacct is hierarchical)
            out["sandboxes_cpu"] = cpu_seconds(self.groups["cpuacct"][1]) or 0.0
        if "pids" in self.groups:
            _ctl, path = self.groups["pids"]
            out["tasks"] = int(_read(f"{path}/pids.current") or 0)
            events = dict(line.split() for line in (_read(f"{path}/pids.events") or "").splitlines())
            out["tasks_refused"] = int(events.get("max", 0))
        return out

    def report(self) -> dict:
        """controller -> what holds (with the file) or why it does not."""
        out = {}
        for controller in ("memory", "pids"):
            if self.holds(controller):
                ctl, _path = self.groups[controller]
                out[controller] = f"cgroup v{ctl.version} {self._files(controller)[0]} = {self.limits[controller]}"
            else:
                out[controller] = "not enforced: " + self.why.get(controller, "no group made")
        return out

    def remove(self, timeout: float = 2.0) -> None:
        """Remove the groups once the cell has ended (rmdir fails while tasks remain)."""
        deadline = time.monotonic() + timeout
        if "cpuacct" in self.groups:  # its sandboxes' groups first (empty once the cell ended)
            parent = self.groups["cpuacct"][1]
            for child in os.scandir(parent) if os.path.isdir(parent) else ():
                if child.is_dir(follow_symlinks=False):
                    try:
                        os.rmdir(child.path)
                    except OSError:
                        pass
        for _ctl, path in self.groups.values():
            while True:
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError as exc:
                    if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                        break
                    time.sleep(0.01)
        self.groups.clear()


def cpu_seconds(path: str) -> float | None:
    """The CPU (user + system) every task of a cpuacct group has used, ended ones too."""
    value = _read(f"{path}/cpuacct.usage")
    return int(value) / 1e9 if value is not None and value.isdigit() else None


def cell_budget(sandboxes: list) -> tuple[int, int]:
    """(memory bytes, tasks) for a cell hosting sandboxes with these Limits."""
    memory = CELL_BASE_MEMORY + sum(lim.memory or DEFAULT_SANDBOX_MEMORY for lim in sandboxes)
    tasks = CELL_BASE_TASKS + sum((lim.threads or DEFAULT_SANDBOX_TASKS) + 1 for lim in sandboxes)
    return memory, tasks
