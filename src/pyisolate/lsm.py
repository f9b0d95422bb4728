"""The BPF-LSM programs (bpf/lsm.bpf.c) on the supervisor's side: the guards of mode "full".

Loaded once per supervisor process, at its first cell, and only where the kernel
runs them: `why_not()` says why not otherwise, in the kernel's words (on hosts that
refuse LSM program loads: EPERM from the probe, bpf.probe()'s smallest lsm/ program).

  LsmGuard         lsm.bpf.o loaded from its verified bytes (bpf.verified_object, the
                   same manifest as guard.bpf.o) and attached (all seven programs);
                   rule sets of path and connect rules per policy; marks per thread
  shared()         the process's one LsmGuard, or None (then `unavailable()` says why)
  mark_sandbox()   a sandbox's rules from its resolved policy, and its thread's mark
  replace_sandbox_rules()   a reload's new rules, switched in one map update

What a marked sandbox thread (and every thread or process it creates) gets:
  file_open / inode_unlink   only beneath its rules (device, inode of each root): the
                             stdlib and fs_read read, fs_write read+write+unlink, the
                             dynamic loader's files (kernel.library_files) read; EACCES
  socket_connect             only its policy's connect rules (none: no connect at all;
                             AF_UNIX and other families: never); EPERM
  bprm_check_security, ptrace_access_check, bpf   refused outright; EPERM
"""

from __future__ import annotations

import os
import socket
import threading

from . import bpf, kernel

OBJECT = "lsm.bpf.o"

MARK_NET = bpf.MARK_NET  # bpf/guard.h: connect only per rule
MARK_FS = 0x100  # bpf/lsm.h PYI_MARK_FS
MARK_NOEXEC = 0x200
MARK_NOPTRACE = 0x400
MARK_NOBPF = 0x800
SANDBOX_FLAGS = MARK_FS | MARK_NET | MARK_NOEXEC | MARK_NOPTRACE | MARK_NOBPF

FS_READ, FS_WRITE, FS_UNLINK = 0x1, 0x2, 0x4  # bpf/lsm.h PYI_FS_*
HOOKS = {16: "file_open", 17: "inode_unlink", 18: "socket_connect", 19: "exec", 20: "ptrace", 21: "bpf"}
ACTIVE_LSMS = "/sys/kernel/security/lsm"


def _native():
    lib = bpf._native()  # the plain reasons first (wrong interpreter, no BPF loader)
    if not hasattr(lib, "bpf_lsm_open"):
        raise bpf.BpfUnavailable("this _pyisolate was built without the BPF-LSM loader")
    return lib


def why_not() -> str | None:
    """Why lsm.bpf.o cannot guard sandboxes here (None: it can). An LSM program that loads
    and attaches does nothing unless the kernel runs the bpf LSM (`lsm=...,bpf`), so both
    the probe load and the kernel's list of active LSMs must agree."""
    try:
        lib = _native()
    except bpf.BpfUnavailable as exc:
        return str(exc)
    if os.geteuid() != 0:
        return "the supervisor is not root (loading BPF-LSM programs needs CAP_BPF, CAP_SYS_ADMIN)"
    # bpf.probe()'s LSM half (the smallest lsm/file_open program), without its guard.bpf.o load
    loads, _err, detail = lib.bpf_probe_lsm()
    if not loads:
        return f"the kernel refuses BPF-LSM programs: {detail}"
    try:
        with open(ACTIVE_LSMS, encoding="ascii") as f:
            active = f.read().strip()
    except OSError as exc:
        return f"cannot tell whether the kernel runs the bpf LSM: {ACTIVE_LSMS}: {exc.strerror} (securityfs mounted?)"
    if "bpf" not in active.split(","):
        return f"the kernel does not run the bpf LSM (active: {active}; boot with lsm=...,bpf): never called"
    return None


def fs_entries(paths_read, paths_write) -> tuple[dict[tuple[int, int], int], list[str]]:
    """(dev, ino) → access bits for these roots (stat follows symlinks: the kernel walks
    the real file's parents), and the paths that do not exist (skipped, as Landlock does)."""
    entries: dict[tuple[int, int], int] = {}
    missing = []
    for paths, bits in ((paths_read, FS_READ), (paths_write, FS_READ | FS_WRITE | FS_UNLINK)):
        for path in paths:
            try:
                st = os.stat(path)
            except OSError:
                missing.append(path)
                continue
            key = (st.st_dev, st.st_ino)
            entries[key] = entries.get(key, 0) | bits
    return entries, missing


def policy_rules(resolved, stdlib: str) -> tuple[dict, list, list[str]]:
    """A resolved policy's path rules (what its Landlock domain reads: the stdlib, fs_read,
    the dynamic loader's files; fs_write read+write+unlink), its connect rules as map
    entries, and the roots that do not exist."""
    fs, missing = fs_entries([stdlib, *resolved.fs_read, *kernel.library_files()], resolved.fs_write)
    return fs, bpf.rule_entries(resolved.net_connect), missing


def _event(raw: tuple) -> dict:
    event, (hook, nr, port, family, addr) = bpf.decode_event(raw, HOOKS)
    if hook in (16, 17):
        event.update(ino=int.from_bytes(addr[:8], "little"), dev=int.from_bytes(addr[8:12], "little"), access=nr)
    elif hook == 18 and family in (socket.AF_INET, socket.AF_INET6):
        import ipaddress

        event["address"] = f"{ipaddress.ip_address(addr[:4] if family == socket.AF_INET else addr)}:{port}"
    elif hook == 18:
        event["family"] = family
    elif hook == 20:
        event["target_pid"] = nr
    elif hook == 21:
        event["bpf_cmd"] = nr
    return event


class LsmGuard(bpf.RuleSets):
    """lsm.bpf.o loaded (verified bytes) and attached. Policies and rule sets as in
    bpf.Guard (bpf.RuleSets); a policy's rules are path entries and connect entries."""

    KIND = "BPF-LSM"

    def __init__(self, directory=None):
        data = bpf.verified_object(OBJECT, directory)  # refused before anything loads
        self._lib = _native()
        self._handle = self._lib.bpf_lsm_open(data)
        try:
            self.attached = self._lib.bpf_lsm_attach(self._handle)
        except BaseException:
            self._lib.bpf_lsm_close(self._handle)
            raise
        self._start_sets("pyisolate-lsm-reaper")

    def _fill(self, rule_set: int, fs: dict, net: list) -> None:
        for (dev, ino), bits in fs.items():
            self._lib.bpf_lsm_fs_rule(self._handle, rule_set, dev, ino, bits)
        for family, addr, port in net:
            self._lib.bpf_lsm_net_rule(self._handle, rule_set, family, addr, port, True)

    def _drop_set(self, rule_set: int, fs: dict, net: list) -> None:
        for dev, ino in fs:
            self._lib.bpf_lsm_fs_rule(self._handle, rule_set, dev, ino, 0)
        for family, addr, port in net:
            self._lib.bpf_lsm_net_rule(self._handle, rule_set, family, addr, port, False)

    def _point(self, policy: int, rule_set: int | None) -> None:
        self._lib.bpf_lsm_rule_set(self._handle, policy, rule_set)

    def _read_events(self) -> list:
        return self._lib.bpf_lsm_events(self._handle)

    _decode = staticmethod(_event)

    def add_policy(self, fs: dict, net: list) -> int:
        return self._add(fs, net)

    def replace_rules(self, policy: int, fs: dict, net: list) -> None:
        self._replace(policy, fs, net)

    def mark_thread(self, tid: int, policy: int, flags: int = SANDBOX_FLAGS) -> str:
        """Mark a thread; returns how ("PIDFD_THREAD", or "pending" before Linux 6.9)."""
        return self._lib.bpf_lsm_mark_task(self._handle, tid, policy, flags)

    def forget_pending(self, tid: int) -> bool:
        return self._lib.bpf_lsm_forget_pending(self._handle, tid)

    def pending(self) -> int:
        return self._lib.bpf_lsm_pending(self._handle)

    def close(self) -> None:
        self._reaper.close()
        self._lib.bpf_lsm_close(self._handle)


_shared: LsmGuard | None = None
_shared_error: str | None = None
_shared_lock = threading.Lock()


def shared() -> LsmGuard | None:
    """The process's LsmGuard, loaded at the first call where `why_not()` finds nothing
    against it; None otherwise (`unavailable()` says why). A tampered object raises
    BpfIntegrityError every time."""
    global _shared, _shared_error
    with _shared_lock:
        if _shared is None and _shared_error is None:
            try:  # a tampered object is refused even where the kernel would not load it
                bpf.verified_object(OBJECT)
            except bpf.BpfUnavailable as exc:
                _shared_error = str(exc)
                return None
            _shared_error = why_not()
            if _shared_error is None:
                try:
                    _shared = LsmGuard()
                except bpf.BpfIntegrityError:
                    raise
                except (bpf.BpfUnavailable, OSError) as exc:
                    _shared_error = str(exc)
        return _shared


def unavailable() -> str | None:
    return _shared_error


def mark_sandbox(tid: int | None, resolved, stdlib: str) -> dict:
    """Fill a sandbox's rules and mark its thread. Returns `Sandbox.guards["lsm"]`."""
    guard = _shared
    if guard is None:
        return {"attached": False, "why": _shared_error or "the BPF-LSM programs were not loaded"}
    if not tid:
        return {"attached": False, "why": "the cell's create reply carries no thread id"}
    fs, net, missing = policy_rules(resolved, stdlib)
    policy = guard.add_policy(fs, net)
    try:
        how = guard.mark_thread(tid, policy)
    except OSError:
        guard.drop_policy(policy)
        raise
    return {
        "attached": True,
        "tid": tid,
        "policy": policy,
        "marked_via": how,
        "path_rules": len(fs),
        "connect_rules": len(net),
        "missing_paths": missing,
        "programs": list(guard.attached),
    }


def unmark_sandbox(report: dict) -> None:
    """The sandbox is closed: its rule set goes (its threads, if any still run, reach
    nothing), and an unconsumed `pending` entry of its tid is removed."""
    guard = _shared
    if guard is None or not report.get("attached"):
        return
    if report.get("marked_via") == "pending":
        guard.forget_pending(report["tid"])
    guard.drop_policy(report["policy"])


def replace_sandbox_rules(report: dict, resolved, stdlib: str) -> bool:
    """A reload's rules for a running sandbox (`resolved`: what it keeps, within the kernel
    domain made at creation), switched whole. Unlike its Landlock domain, which keeps the
    spawn-time rules, the LSM rules narrow to the new policy and widen back up to the
    spawn-time ones. False when the sandbox has no BPF-LSM mark."""
    guard = _shared
    if guard is None or not report.get("attached"):
        return False
    fs, net, _missing = policy_rules(resolved, stdlib)
    guard.replace_rules(report["policy"], fs, net)
    return True


def events_of(policies) -> list[dict]:
    """The BPF-LSM denials of these policy ids (a supervisor's sandboxes), newest last."""
    return bpf.policy_events(_shared, policies)
