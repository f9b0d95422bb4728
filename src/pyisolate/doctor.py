"""`pyisolate doctor`: each guarantee of the security contract (SECURITY.md §2) with the
mechanism that provides it on this host, or why it is missing.

The host is probed, not assumed (`kernel.probe`): Landlock ABI, seccomp, the bpf LSM in
/sys/kernel/security/lsm, cgroup v1/v2 controllers; and `bpf.probe`: loading (never
attaching) the host guards and the smallest lsm/file_open program. Status words: "holds", "partial"
(some of it holds, the rest is named), "missing".
"""

from __future__ import annotations

import sys

from . import bpf, kernel

LANDLOCK_FEATURES = (
    (1, "filesystem"),
    (2, "file reparenting"),
    (3, "truncate"),
    (4, "TCP bind/connect"),
    (5, "device ioctl"),
    (6, "signal and abstract-socket scoping"),
)


def mode_of(host: dict) -> str:
    """The guard mode sandboxes get on this host: "full" where the runtime's BPF-LSM object
    can guard them too (lsm.why_not() is None), "landlock" with seccomp and Landlock alone."""
    if not (host["native"] and host["landlock"]["abi"] > 0 and host["seccomp"]["api"] > 0):
        return "none"
    return "full" if host.get("lsm_why_not") is None else "landlock"


def report() -> dict:
    from . import lsm

    host = kernel.probe()
    host["bpf"] = bpf.probe()
    host["lsm_why_not"] = lsm.why_not()
    mode = mode_of(host)
    abi = host["landlock"]["abi"]
    lsm = host["bpf_lsm"]
    probed = host["bpf"]
    lsm_load = (
        "an lsm/file_open program loads"
        if probed["lsm"]["loads"]
        else f"an lsm/file_open program is refused ({probed['lsm']['why']})"
    )
    bpf_state = host["lsm_why_not"] or f"the kernel runs the bpf LSM; {lsm_load}"
    if not lsm["bpf_in_lsm_list"] and host["lsm_why_not"]:
        bpf_state = f"{host['lsm_why_not']}; {lsm.get('why', 'the kernel does not list the bpf LSM')}"
    switch = probed["host_guards"].get("switch")
    host_guards = (
        " + host BPF guards on every sandbox thread (cgroup/connect4/6 and sock_create: connects only to the "
        "policy's IP:PORT rules"
        + (
            "; tp_btf/sys_enter: SIGKILL on execve/execveat/ptrace/bpf)"
            if switch == "all"
            else f"; no exec kill: {bpf.SWITCH}=net)"
        )
        if probed["host_guards"]["loads"] and switch in ("all", "net")
        else ""
    )

    if mode == "full":
        containment = {
            "status": "holds",
            "mechanism": (
                "BPF-LSM (lsm.bpf.o, loaded by the runtime): per sandbox thread, file_open/inode_unlink against "
                "the policy's (dev, inode) roots, socket_connect against its IP:PORT rules, exec, ptrace and bpf() "
                "refused, marks inherited by new tasks; + the seccomp allow-list and Landlock ABI "
                f"{abi} on every sandbox thread and the cell's base filter" + host_guards
            ),
            "missing": "",
        }
    elif mode == "landlock":
        containment = {
            "status": "partial",
            "mechanism": (
                "seccomp allow-list on every sandbox thread (EPERM for the rest: no exec, fork, "
                "ptrace, bpf, mount, namespaces, sockets unless the policy connects, no executable "
                f"anonymous memory) + the cell's base filter + Landlock ABI {abi} on every sandbox "
                "thread (the policy's read/write roots; TCP connect ports, no bind)" + host_guards
            ),
            "missing": f"BPF-LSM (mode 'full'): {bpf_state}"
            + ("" if host_guards else f"; host BPF guards: {host_guards_why(probed['host_guards'])}")
            + (f"; the host BPF exec kill: {bpf.NO_EXEC_KILL}" if host_guards and switch == "net" else ""),
        }
    else:
        containment = {
            "status": "missing",
            "mechanism": "the Python-level layer only (audit hook, import gate, C-level gate)",
            "missing": "; ".join(
                f"{name}: {host[name].get('why', 'unavailable')}"
                for name in ("landlock", "seccomp")
                if not (host[name].get("abi") or host[name].get("api"))
            )
            + f"; BPF-LSM: {bpf_state}",
        }
    guarantees = [
        {"id": 1, "name": "Process containment", **containment},
        {
            "id": 2,
            "name": "Memory safety (per-interpreter RAM caps)",
            **memory_guarantee(host),
        },
        {"id": 3, "name": "Broker integrity & replay protection", **broker_guarantee()},
        {"id": 4, "name": "Policy hot-reload atomicity", **reload_guarantee(mode, probed)},
        {
            "id": 5,
            "name": "Crash isolation",
            **crash_guarantee(host),
        },
    ]
    return {"mode": mode, "host": host, "guarantees": guarantees}


def switch_text(host_guards: dict) -> str:
    """The operator's PYISOLATE_HOST_BPF, as a supervisor started here would read it."""
    switch = host_guards.get("switch")
    if switch is None:
        return f"INVALID: {host_guards.get('switch_error')} (a supervisor would start no cell)"
    return {
        "all": f"{bpf.SWITCH}=all (default): every host guard",
        "net": f"{bpf.SWITCH}=net: connect gating and fork propagation, no tp_btf/sys_enter exec kill",
        "off": f"{bpf.SWITCH}=off: no host guard is loaded",
    }[switch]


def host_guards_why(host_guards: dict) -> str:
    """Why a supervisor started here would run without the host BPF guards."""
    if host_guards.get("switch") is None:
        return f"INVALID: {host_guards.get('switch_error')}"
    if host_guards.get("switch") == "off":
        return bpf.SWITCHED_OFF
    return host_guards.get("why", "")


def broker_guarantee() -> dict:
    from . import broker

    try:
        version = broker.sodium_version()
    except Exception as exc:  # no C core for this interpreter: say why
        return {"status": "missing", "mechanism": "", "missing": f"the broker's C core does not load here: {exc}"}
    return {
        "status": "holds",
        "mechanism": (
            "every supervisor ↔ cell frame sealed: Noise_IK_25519_ChaChaPoly_SHA256 with a key issued per cell and "
            "per sandbox at spawn (optional X-Wing hybrid), ChaCha20-Poly1305 frames with per-direction counters; "
            f"a bad, replayed or reordered frame closes the channel (libsodium {version}, linked statically)"
        ),
        "missing": "",
    }


def reload_guarantee(mode: str, probed: dict) -> dict:
    kernel_side = (
        "; the BPF-LSM path and connect rules switch in one map update"
        if mode == "full"
        else "; the host BPF connect rules switch in one map update"
        if probed["host_guards"]["loads"] and probed["host_guards"].get("switch") in ("all", "net")
        else ""
    )
    return {
        "status": "holds",
        "mechanism": (
            "validated before anything changes; each check reads one version whole from the sandbox's read-only "
            "rule book (memfd, seqlock)" + kernel_side + "; owner-only control socket (SO_PEERCRED + sealed "
            "channel with an owner-only key)"
        ),
        "missing": "Landlock and seccomp keep the domain made at creation: a running sandbox cannot be widened "
        "beyond it, and a narrowing is enforced by the layers above (docs/reload.md, field by field)",
    }


def memory_guarantee(host: dict) -> dict:
    """Guarantee 2 on this host: the allocator cap (this interpreter's patch) and the
    cells' cgroup memory limit (pyisolate.cgroups.detect), each only where it is real."""
    import _imp

    from . import cgroups

    found = cgroups.detect()
    cap = hasattr(_imp, "_pyisolate_memory")
    held, missing = [], []
    if cap:
        held.append(
            "a hard per-interpreter cap in the allocator (limits.memory; cpython-patches/interp-memory-cap.patch): "
            "an allocation past it is MemoryError in that sandbox only"
        )
    else:
        missing.append("this interpreter lacks the per-interpreter memory cap patch")
    ctl = found["memory"]
    if ctl is not None:
        held.append(f"each cell in its own cgroup v{ctl.version} memory group (the memory outside interpreters)")
    else:
        missing.append(f"no process-level memory limit for cells: {found['why'].get('memory')}")
    missing.append("the RAW allocator domain (libc malloc) and C libraries' own memory are bounded per cell only")
    missing.append("sandboxes sharing a cell share an address space (isolation='process' separates them)")
    return {
        "status": "partial" if held else "missing",
        "mechanism": "; ".join(held) or "isolated sub-interpreters only",
        "missing": "; ".join(missing),
    }


def crash_guarantee(host: dict) -> dict:
    lib = kernel.native()
    guard = lib is not None and hasattr(lib, "crash_guard_install")
    base = (
        "cells are separate processes: a crashing cell is reported as CellCrashed to each of its sandboxes and "
        "the supervisor and other cells keep serving; no core dumps (RLIMIT_CORE=0)"
    )
    if guard:
        return {
            "status": "partial",
            "mechanism": base + "; SIGSEGV/SIGBUS/SIGILL/SIGFPE/SIGABRT handlers on per-thread alternate stacks "
            "write a fault report (signal, address, sandbox thread) to the supervisor, which attaches it",
            "missing": "sandboxes sharing a cell end with it; use isolation='process' to give a sandbox its own cell",
        }
    return {
        "status": "partial",
        "mechanism": base,
        "missing": "no fault reports (the _pyisolate extension lacks crash_guard); sandboxes sharing a cell die "
        "with it",
    }


def render(data: dict, out=sys.stdout) -> None:
    host = data["host"]
    abi = host["landlock"]["abi"]
    features = ", ".join(name for level, name in LANDLOCK_FEATURES if abi >= level)
    lsm = host["bpf_lsm"]
    cg = host["cgroup"]
    rows = [
        ("native extension", "_pyisolate present" if host["native"] else "MISSING: no kernel guards can be applied"),
        ("Landlock", f"ABI {abi} ({features})" if abi else f"unavailable: {host['landlock'].get('why')}"),
        (
            "seccomp",
            f"available (libseccomp API level {host['seccomp']['api']})"
            if host["seccomp"]["api"]
            else f"unavailable: {host['seccomp'].get('why')}",
        ),
        (
            "BPF-LSM",
            f"active LSMs: {lsm['active_lsms']}" if lsm["active_lsms"] is not None else f"unknown: {lsm.get('why')}",
        ),
        (
            "BPF programs",
            (
                "host guards load (guard.bpf.o, verified)"
                if host["bpf"]["host_guards"]["loads"]
                else f"host guards do not load: {host['bpf']['host_guards']['why']}"
            )
            + f"; {switch_text(host['bpf']['host_guards'])}"
            + "; "
            + (
                "an lsm/file_open program loads"
                if host["bpf"]["lsm"]["loads"]
                else f"BPF-LSM refused: {host['bpf']['lsm']['why']}"
            ),
        ),
        (
            "cgroups",
            f"{cg['layout']}; v2 controllers: {' '.join(cg['v2_controllers']) or 'none'}; "
            f"v1 controllers: {' '.join(cg['v1_controllers']) or 'none'}",
        ),
    ]
    print(f"PyIsolate doctor — Linux {host['kernel']}, {sys.prefix}", file=out)
    print("\nHost mechanisms", file=out)
    for name, text in rows:
        print(f"  {name:17} {text}", file=out)
    explain = {
        "landlock": "seccomp + Landlock + rlimits (+ the host BPF guards where they load): the design's "
        "reduced-guarantees fallback (no BPF-LSM)",
        "none": "NO KERNEL GUARDS: sandboxes are refused unless their policy accepts reduced guarantees",
        "full": "BPF-LSM (loaded by the runtime) + seccomp + Landlock + rlimits + cgroups",
    }
    print(f"\nMode: {data['mode']} — {explain[data['mode']]}", file=out)
    print("\nSecurity contract (SECURITY.md §2)", file=out)
    for g in data["guarantees"]:
        print(f"  {g['id']}. {g['name']}: {g['status'].upper()}", file=out)
        print(f"       provided by: {g['mechanism']}", file=out)
        if g.get("missing"):
            print(f"       missing:     {g['missing']}", file=out)
