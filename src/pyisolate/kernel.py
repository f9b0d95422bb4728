"""The kernel guards a cell applies to itself, and what the host kernel offers.

Cell side (the native extension `_pyisolate` does the system calls):
  prepare_cell()      once, from sitecustomize, before the cell runs anything: no_new_privs,
                      the process-wide base seccomp filter (TSYNC), no core dumps;
  restrict_thread()   on a sandbox's own OS thread before its interpreter runs guest code:
                      Landlock (this thread only) and the seccomp allow-list (no TSYNC);
  apply_rlimits()     process-wide limits, applied where a cell hosts a single sandbox.
Anywhere:
  probe()             the host's mechanisms (Landlock ABI, seccomp, BPF-LSM, cgroups), for
                      `pyisolate doctor` and the supervisor's guard report.

Nothing here raises for a missing mechanism: every function reports what holds, and the
caller decides (a sandbox whose policy does not accept reduced guarantees is refused).
"""

from __future__ import annotations

import functools
import os
import sys

# Set by prepare_cell() in a cell process (sitecustomize runs it); read by the cell's hello.
cell_preparation: dict | None = None


def native():
    """The `_pyisolate` extension, or None when the distribution lacks it."""
    try:
        import _pyisolate
    except ImportError:
        return None
    return _pyisolate


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def task_status(tid: int | None = None, pid: int | str = "self") -> dict:
    """Seccomp mode, filter count and no_new_privs of a task, as the kernel reports them."""
    path = f"/proc/{pid}/task/{tid}/status" if tid else f"/proc/{pid}/status"
    wanted = {"Seccomp": "seccomp", "Seccomp_filters": "seccomp_filters", "NoNewPrivs": "no_new_privs"}
    out: dict = {}
    try:
        with open(path, encoding="ascii") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in wanted:
                    out[wanted[key]] = int(value.split()[0])
    except OSError as exc:
        out["error"] = _error(exc)
    return out


# --- cell preparation (sitecustomize) ------------------------------------------------------


def prepare_cell() -> dict:
    """no_new_privs, the base seccomp filter and RLIMIT_CORE=0 for this whole cell process.

    Runs before the cell has started any thread, so what is set here holds for every
    thread the cell will ever have. Returns (and records) what was applied."""
    global cell_preparation
    report: dict = {"native": False}
    try:
        import resource

        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # guest memory never lands in a core file
        report["rlimit_core"] = 0
    except (ImportError, OSError, ValueError) as exc:
        report["rlimit_core_error"] = _error(exc)
    lib = native()
    if lib is None:
        report["error"] = "the _pyisolate extension is not installed in this distribution"
    else:
        report["native"] = True
        try:
            report["base_filter"] = lib.seccomp_cell_filter()  # sets no_new_privs too
        except OSError as exc:
            report["error"] = f"base seccomp filter: {_error(exc)}"
        for name, call in (("landlock_abi", lib.landlock_abi), ("seccomp_api", lib.seccomp_api_level)):
            try:
                report[name] = call()
            except OSError as exc:
                report[name] = 0
                report[f"{name}_error"] = _error(exc)
    report["status"] = task_status()
    cell_preparation = report
    return report


# --- per sandbox thread --------------------------------------------------------------------


@functools.cache
def library_files() -> tuple[str, ...]:
    """What the dynamic loader reads when an extension module is imported: its cache and
    the directories of the system's shared libraries (libz, libcrypto, libffi … that
    lib-dynload modules link against). Granted read-by-name only: no listing."""
    arch = getattr(sys.implementation, "_multiarch", "")
    candidates = ["/etc/ld.so.cache", "/lib64", "/usr/lib64"] + ([f"/lib/{arch}", f"/usr/lib/{arch}"] if arch else [])
    out: list[str] = []
    for path in candidates:
        real = os.path.realpath(path)
        if os.path.exists(real) and real not in out:
            out.append(real)
    return tuple(out)


def connect_ports(rules: list) -> list[int] | None:
    """The TCP ports a policy's connect rules name; None when a rule allows any port."""
    ports: list[int] = []
    for _host, port in rules:
        if port == "*":
            return None
        if int(port) not in ports:
            ports.append(int(port))
    return ports


class GuardUnavailable(Exception):
    """A kernel guard a policy requires could not be applied (the sandbox is refused)."""


def restrict_thread(policy: dict, stdlib: str) -> dict:
    """Landlock and the seccomp allow-list on the CALLING thread, from a policy in wire
    form (`Policy.to_wire()`). Threads it creates later inherit both.

    Reports what holds. If a mechanism is unavailable, or the kernel cannot enforce part
    of the policy, raises GuardUnavailable unless the policy accepts reduced guarantees
    (`[guards] accept_reduced = true`), in which case the report lists it under "reduced".
    """
    lib = native()
    report: dict = {"landlock": None, "seccomp": None, "reduced": []}
    reduced = report["reduced"]
    rules = [tuple(rule) for rule in policy.get("net_connect", ())]
    if lib is None:
        reduced += ["landlock: the _pyisolate extension is missing", "seccomp: the _pyisolate extension is missing"]
    else:
        ports = connect_ports(rules)
        try:
            report["landlock"] = lib.landlock_restrict_thread(
                [stdlib, *policy["fs_read"]], list(policy["fs_write"]), list(library_files()), ports
            )
        except OSError as exc:
            reduced.append(f"landlock: {_error(exc)}")
        else:
            abi = report["landlock"]["abi"]
            if rules and abi < 4:
                reduced.append(f"network: Landlock ABI {abi} < 4 cannot restrict TCP ports")
        try:
            truncate = bool(report["landlock"]) and report["landlock"]["abi"] >= 3
            # ctypes re-enabled by the policy: libffi's closures need memfd_create.
            ffi = not {"ctypes", "_ctypes"} & set(policy.get("modules_deny", ()))
            report["seccomp"] = lib.seccomp_restrict_thread(network=bool(rules), truncate_path=truncate, ffi=ffi)
        except OSError as exc:
            reduced.append(f"seccomp: {_error(exc)}")
    if reduced and not policy.get("accept_reduced", False):
        raise GuardUnavailable(
            "kernel guards unavailable and the policy does not accept reduced guarantees "
            f"([guards] accept_reduced): {'; '.join(reduced)}"
        )
    return report


# --- process-wide limits ------------------------------------------------------------------


RLIMIT_CPU_BACKSTOP = 6  # seconds past a policy's cpu_time; the watchdog escalates within ~3 grace periods


def _rule_books_open() -> int:
    count = 0
    for entry in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{entry}").startswith("/memfd:pyisolate-rules-")
        except OSError:
            pass
    return count


def apply_rlimits(limits: dict, exclusive: bool) -> dict:
    """rlimits from a policy's [limits]. They are per process, so they are applied only
    where the cell hosts this one sandbox (`exclusive`); the report says what holds."""
    import resource

    shared = "not enforced: rlimits are per process and this cell is shared (use isolation='process')"
    prepared = cell_preparation or {}
    report: dict = {
        "core": "RLIMIT_CORE=0 (every cell)"
        if prepared.get("rlimit_core") == 0
        else f"core dumps not disabled: {prepared.get('rlimit_core_error', 'the cell preparation did not run')}"
    }
    open_files, cpu_time = limits.get("open_files"), limits.get("cpu_time")
    if open_files is None:
        report["open_files"] = "no limit in the policy"
    elif not exclusive:
        report["open_files"] = shared
    else:
        # RLIMIT_NOFILE bounds descriptor numbers, and new descriptors take the lowest free
        # one: the cell's open descriptors (less listdir's own, and rule books, which the
        # guest's boot closes before any guest code) plus the guest's share.
        base = len(os.listdir("/proc/self/fd")) - 1 - _rule_books_open()
        limit = _lower(resource.RLIMIT_NOFILE, base + int(open_files))
        report["open_files"] = f"RLIMIT_NOFILE={limit} (the cell's {base} descriptors + {open_files})"
    if cpu_time is None:
        report["cpu_time"] = "no limit in the policy"
    elif not exclusive:
        report["cpu_time"] = shared
    else:
        # A backstop behind the supervisor's watchdog, which interrupts at the limit and then
        # escalates (SIGXCPU, SIGTERM, SIGKILL a grace period apart): the kernel's own
        # SIGXCPU must not overtake that, so it comes BACKSTOP seconds after the limit.
        used = resource.getrusage(resource.RUSAGE_SELF)
        soft = int(used.ru_utime + used.ru_stime + float(cpu_time)) + RLIMIT_CPU_BACKSTOP
        limit = _lower(resource.RLIMIT_CPU, soft, hard=soft + 2)
        report["cpu_time"] = (
            f"RLIMIT_CPU={limit}s for the cell, a backstop {RLIMIT_CPU_BACKSTOP}s behind the watchdog "
            "(SIGXCPU, then SIGKILL 2 s later)"
        )
    if limits.get("threads") is not None:
        report["threads"] = (
            "not enforced: RLIMIT_NPROC counts every process of the user (and root is exempt); "
            "new processes are refused by seccomp, threads are not counted yet"
        )
    if limits.get("memory") is not None:
        report["memory"] = "not enforced yet (memory quotas: cgroups, a later part)"
    return report


def _lower(which: int, soft: int, hard: int | None = None) -> int:
    """Lower a limit (never raise it); returns the soft limit in force."""
    import resource

    cur_soft, cur_hard = resource.getrlimit(which)
    hard = soft if hard is None else hard
    if cur_hard != resource.RLIM_INFINITY:
        hard = min(hard, cur_hard)
    soft = min(soft, hard)
    if cur_soft != resource.RLIM_INFINITY and cur_soft < soft:
        soft = cur_soft
    resource.setrlimit(which, (soft, hard))
    return soft


# --- host probe ----------------------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return None


def probe() -> dict:
    """What this host's kernel offers, each with the evidence it was read from."""
    lib = native()
    host: dict = {"kernel": os.uname().release, "native": lib is not None}
    landlock = {"abi": 0}
    seccomp = {"api": 0}
    if lib is None:
        landlock["why"] = seccomp["why"] = "the _pyisolate extension is not installed in this distribution"
    else:
        try:
            landlock["abi"] = lib.landlock_abi()
        except OSError as exc:
            landlock["why"] = f"landlock_create_ruleset: {exc.strerror}"
        seccomp["api"] = lib.seccomp_api_level()
        if not seccomp["api"]:
            seccomp["why"] = "libseccomp finds no usable seccomp in this kernel"
    seccomp["mode_of_this_process"] = task_status().get("seccomp")
    host["landlock"], host["seccomp"] = landlock, seccomp

    lsm = _read("/sys/kernel/security/lsm")
    bpf_lsm: dict = {"active_lsms": lsm}
    if lsm is None:
        bpf_lsm["bpf_in_lsm_list"] = None
        configured, source = _configured_lsms()
        bpf_lsm["configured_lsms"] = configured
        bpf_lsm["why"] = "/sys/kernel/security/lsm unreadable (securityfs not mounted?)" + (
            f"; {source} {'lists' if 'bpf' in configured.split(',') else 'does not list'} bpf" if configured else ""
        )
    else:
        bpf_lsm["bpf_in_lsm_list"] = "bpf" in lsm.split(",")
        if not bpf_lsm["bpf_in_lsm_list"]:
            bpf_lsm["why"] = "the kernel runs without the bpf LSM (not in its lsm= list)"
    host["bpf_lsm"] = bpf_lsm
    host["cgroup"] = _probe_cgroups()
    return host


def _configured_lsms() -> tuple[str, str]:
    """The LSM list the kernel was told to start (lsm= on its command line, else its
    CONFIG_LSM): evidence only, when the active list cannot be read."""
    for word in (_read("/proc/cmdline") or "").split():
        if word.startswith("lsm="):
            return word[4:], "the kernel command line's lsm="
    try:
        import gzip

        with gzip.open("/proc/config.gz", "rt") as f:
            for line in f:
                if line.startswith("CONFIG_LSM="):
                    return line.split("=", 1)[1].strip().strip('"'), "the kernel's CONFIG_LSM"
    except (OSError, EOFError):
        pass
    return "", ""


def _probe_cgroups() -> dict:
    v2_root = None
    v1: list[str] = []
    try:
        with open("/proc/self/mounts", encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 4:
                    continue
                if fields[2] == "cgroup2" and v2_root is None:
                    v2_root = fields[1]
                elif fields[2] == "cgroup":
                    v1 += [o for o in fields[3].split(",") if o in _V1_CONTROLLERS]
    except OSError:
        pass
    v2 = (_read(f"{v2_root}/cgroup.controllers") or "").split() if v2_root else []
    layout = _LAYOUTS[bool(v2_root), bool(v1)]
    return {"layout": layout, "v2_mount": v2_root, "v2_controllers": v2, "v1_controllers": sorted(set(v1))}


_LAYOUTS = {
    (True, True): "hybrid (v1 + v2)",
    (True, False): "unified (v2 only)",
    (False, True): "v1 only",
    (False, False): "none",
}
_V1_CONTROLLERS = frozenset(
    {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids", "net_cls", "hugetlb", "rdma"}
)
