"""PyIsolate: run untrusted Python in sandboxed sub-interpreters.

import pyisolate as iso
with iso.spawn("demo", policy="stdlib-readonly") as sb:
    sb.exec("from math import sqrt\npost(sqrt(2))")
    print(sb.recv())                                 # 1.4142135623730951
    print(sb.call("statistics.mean", [1, 2, 3]))     # 2
"""

from .errors import (
    CellCrashed,
    GuardError,
    PolicyError,
    ProtocolError,
    PyIsolateError,
    QuotaExceeded,
    ReloadRefused,
    SandboxClosed,
    SandboxError,
    SandboxTimeout,
)

__version__ = "0.1.0.dev0"
__all__ = [
    "CellCrashed",
    "GuardError",
    "Policy",
    "PolicyError",
    "ProtocolError",
    "PyIsolateError",
    "QuotaExceeded",
    "ReloadRefused",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "SandboxTimeout",
    "Supervisor",
    "load_policy",
    "spawn",
]
# The supervisor and policy modules load on first use: a cell imports this package too,
# and its start-up should not pay for the supervisor's imports.
_LAZY = {
    "Policy": ("policy", "Policy"),
    "load_policy": ("policy", "load"),
    "Sandbox": ("supervisor", "Sandbox"),
    "Supervisor": ("supervisor", "Supervisor"),
    "spawn": ("supervisor", "spawn"),
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(f".{module}", __name__), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pyisolate' has no attribute {name!r}")
