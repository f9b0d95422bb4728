"""What a policy reload can change in a RUNNING sandbox, field by field, and why.

A reload publishes a new immutable Policy: new sandboxes get all of it. A running
sandbox is held by layers that differ in what they let change after the fact:

  Python layer   the guest's audit hook and import gate read the rule book
                 (rulebook.py) at every check: any change, either way, at the next check
  Landlock       a domain already applied to a thread can only be narrowed by stacking
                 another one from that thread itself; never widened
  seccomp        the same: filters stack and only ever refuse more
  C gate         `_imp._pyisolate_restrict` only adds to the set of refused modules
  supervisor     CPU and wall-time limits are read from the Sandbox's policy reference

So, for a running sandbox, measured against the policy it was CREATED with (the kernel
domain) rather than the one it runs now:

  field            inside the creation-time domain           beyond it
  fs_read/write    Python layer at the next check; the        NOT applied (Landlock
                   BPF-LSM path rules too in mode "full";     cannot widen)
                   Landlock keeps the creation-time rules
  net_connect      Python layer; the host BPF guards' (and    NOT applied (Landlock TCP
                   BPF-LSM's) connect rules too               ports, seccomp's socket())
  modules_deny     additions: import gate; removals: Python layer only (the C gate's
                   refusals at creation stay)
  modules_allow    import gate, either way
  builtins_enable  NOT applied (removed at boot; restored only in new sandboxes)
  cpu_time,        the supervisor, either way
  wall_time
  memory           lowered: the interpreter's allocator cap     raised or removed: NOT
                   (cpython-patches/interp-memory-cap.patch;    applied (the cap only
                   tighten-only) and the cell's cgroup budget   tightens)
  open_files, threads, accept_reduced: NOT applied (fixed at creation)

A change is "applied" when every layer that enforces it switched, "python-layer" when only
the Python layer did (the kernel still enforces the wider creation-time rule).

A reload with running="strict" (the default) is refused before anything changes if any
running sandbox would get a change marked NOT applied; "best-effort" applies what can be
applied and reports the rest; "new-only" leaves running sandboxes alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from . import quotas
from .policy import Limits, Policy

RUNNING_MODES = ("strict", "best-effort", "new-only")

APPLIED = "applied"  # fully, by every layer that enforces it
PYTHON_ONLY = "python-layer"  # the Python layer enforces the new rule; the kernel keeps the old, wider one
NOT_APPLIED = "not-applied"  # stays as it was for this sandbox; new sandboxes get it


@dataclass(frozen=True)
class Change:
    field: str
    disposition: str
    why: str = ""


@dataclass(frozen=True)
class SandboxPlan:
    sandbox: str
    changes: tuple[Change, ...]

    @property
    def complete(self) -> bool:
        return all(c.disposition != NOT_APPLIED for c in self.changes)


@dataclass
class ReloadReport:
    """What a reload did. `version` is the supervisor's policy version; `sandboxes` maps each
    running sandbox using the policy to its rule-book version and its plan."""

    policy: str
    version: int
    running: str
    plans: list[SandboxPlan] = field(default_factory=list)
    book_versions: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # sandbox -> why it kept its policy
    bpf_switched: dict[str, bool] = field(default_factory=dict)  # sandbox -> its BPF connect rules swapped
    lsm_switched: dict[str, bool] = field(default_factory=dict)  # sandbox -> its BPF-LSM rules swapped (mode full)
    memory_caps: dict[str, str] = field(default_factory=dict)  # sandbox -> its lowered allocator cap, as the cell says

    def to_wire(self) -> dict:
        return {
            "policy": self.policy,
            "version": self.version,
            "running": self.running,
            "sandboxes": {
                p.sandbox: {
                    "book_version": self.book_versions.get(p.sandbox),
                    "bpf_switched": self.bpf_switched.get(p.sandbox),
                    "lsm_switched": self.lsm_switched.get(p.sandbox),
                    "memory_cap": self.memory_caps.get(p.sandbox),
                    "changes": [{"field": c.field, "disposition": c.disposition, "why": c.why} for c in p.changes],
                }
                for p in self.plans
            },
            "skipped": dict(self.skipped),
        }

    def render(self) -> str:
        lines = [f"policy {self.policy!r} is now version {self.version} (running sandboxes: {self.running})"]
        for p in self.plans:
            where = f"rule book v{self.book_versions[p.sandbox]}" if p.sandbox in self.book_versions else "unchanged"
            if p.sandbox in self.bpf_switched:
                where += ", BPF connect rules " + ("swapped" if self.bpf_switched[p.sandbox] else "not attached")
            if self.lsm_switched.get(p.sandbox):
                where += ", BPF-LSM path and connect rules swapped"
            if p.sandbox in self.memory_caps:
                where += f", {self.memory_caps[p.sandbox]}"
            lines.append(f"  {p.sandbox}: {where}")
            for c in p.changes:
                lines.append(f"    {c.field:16} {c.disposition:12} {c.why}")
        for name, why in self.skipped.items():
            lines.append(f"  {name}: kept its policy ({why})")
        return "\n".join(lines)


def _kernel_bounded(
    name: str, spawned: tuple, current: tuple, new: tuple, switchable: frozenset, show=str
) -> list[Change]:
    """Path and network rules: the kernel's domain was built from the spawn-time policy;
    inside it the Python layer (and the BPF maps, where `name` is in `switchable`) may move
    freely, beyond it nothing can widen (Landlock and seccomp stay as created)."""
    if set(new) == set(current):
        return []
    beyond = set(new) - set(spawned)
    if beyond:
        return [Change(name, NOT_APPLIED, f"{sorted(map(show, beyond))} lie beyond the kernel domain made at creation")]
    if set(new) == set(spawned):
        return [Change(name, APPLIED, "back to the rules the kernel enforces")]
    if name in switchable:
        return [Change(name, APPLIED, "the BPF rules switch too; Landlock keeps the creation-time domain")]
    return [Change(name, PYTHON_ONLY, "the kernel keeps the wider rules made at creation")]


def plan(
    sandbox: str, spawned: Policy, current: Policy, new: Policy, switchable: frozenset = frozenset()
) -> SandboxPlan:
    """The plan for one running sandbox created with `spawned`, now under `current`, going
    to `new` (all three resolved). `switchable`: the fields whose kernel rules live in BPF
    maps a reload replaces (net_connect with the host guards; fs_* too in mode "full")."""
    old = current
    changes: list[Change] = []
    changes += _kernel_bounded("fs_read", spawned.fs_read, old.fs_read, new.fs_read, switchable)
    changes += _kernel_bounded("fs_write", spawned.fs_write, old.fs_write, new.fs_write, switchable)
    # The host BPF guards' connect rules (when attached) are swapped too: see the report.
    changes += _kernel_bounded(
        "net_connect",
        spawned.net_connect,
        old.net_connect,
        new.net_connect,
        switchable,
        show=lambda r: f"{r[0]}:{r[1]}",
    )
    old_deny, new_deny = set(old.modules_deny), set(new.modules_deny)
    if new_deny - old_deny:
        changes.append(Change("modules_deny", APPLIED, f"now denied: {sorted(new_deny - old_deny)} (import gate)"))
    if old_deny - new_deny:
        changes.append(
            Change(
                "modules_deny",
                PYTHON_ONLY,
                f"no longer denied: {sorted(old_deny - new_deny)}; builtin/extension modules the C gate "
                "refused at creation stay refused",
            )
        )
    if set(old.modules_allow) != set(new.modules_allow):
        changes.append(Change("modules_allow", APPLIED, "import gate"))
    if set(old.builtins_enable) != set(new.builtins_enable):
        changes.append(Change("builtins_enable", NOT_APPLIED, "builtins are removed at boot; new sandboxes only"))
    for f in fields(Limits):
        before, after = getattr(old.limits, f.name), getattr(new.limits, f.name)
        if before == after:
            continue
        if f.name in ("cpu_time", "wall_time"):
            changes.append(Change(f"limits.{f.name}", APPLIED, f"{before} -> {after} (supervisor)"))
        elif f.name == "memory" and quotas.cap_lowered(before, after):
            changes.append(Change("limits.memory", APPLIED, f"{before} -> {after} (the allocator cap, lowered)"))
        elif f.name == "memory":
            changes.append(
                Change("limits.memory", NOT_APPLIED, f"{before} -> {after}: the allocator cap only tightens")
            )
        else:
            changes.append(Change(f"limits.{f.name}", NOT_APPLIED, f"{before} -> {after}: fixed at creation"))
    if old.accept_reduced != new.accept_reduced:
        changes.append(Change("accept_reduced", NOT_APPLIED, "decided when the sandbox was created"))
    return SandboxPlan(sandbox, tuple(changes))
