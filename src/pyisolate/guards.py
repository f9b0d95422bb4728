"""Kernel guards attached to a cell before it is allowed to run guest code.

This is the seam the kernel-guard work fills (seccomp, Landlock, eBPF, cgroups). Today
no kernel guard is attached: `attach` reports mode "none", and `pyisolate doctor`-style
callers must say so. The supervisor calls `attach` between the cell's hello and its
"go", so whatever is attached here is in place before any guest code runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class GuardReport:
    mode: str  # "full", "landlock", or "none"
    attached: tuple[str, ...] = ()
    missing: tuple[str, ...] = field(default=("seccomp", "landlock", "bpf-lsm", "cgroup"))


def attach(cell) -> GuardReport:
    """Attach the guards to `cell` (its pid is `cell.pid`) and report what holds."""
    return GuardReport(mode="none")
