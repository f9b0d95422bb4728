"""PyIsolate: run untrusted Python in sandboxed sub-interpreters.

import pyisolate as iso
with iso.spawn("demo", policy="stdlib-readonly") as sb:
    sb.exec("from math import sqrt\npost(sqrt(2))")
    print(sb.recv())                                 # 1.4142135623730951
    print(sb.call("statistics.mean", [1, 2, 3]))     # 2
"""

from .errors import (
    CellCrashed,
    PolicyError,
    ProtocolError,
    PyIsolateError,
    SandboxClosed,
    SandboxError,
    SandboxTimeout,
)
from .policy import Policy
from .policy import load as load_policy
from .supervisor import Sandbox, Supervisor, spawn

__version__ = "0.1.0.dev0"
__all__ = [
    "CellCrashed",
    "Policy",
    "PolicyError",
    "ProtocolError",
    "PyIsolateError",
    "Sandbox",
    "SandboxClosed",
    "SandboxError",
    "SandboxTimeout",
    "Supervisor",
    "load_policy",
    "spawn",
]
