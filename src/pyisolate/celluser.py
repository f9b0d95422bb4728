"""Which user a cell process runs as.

`Supervisor(cell_user=...)`:
  "auto" (default)  not root: the caller's own uid (already unprivileged).
                    root: a dedicated uid and gid per cell, from PyIsolate's range
                    BASE.. BASE+SPAN (no login, no files, no groups), so cells of different
                    tenants cannot signal, trace or read one another as the same user, and
                    no cell has root's file access. This needs an interpreter that user can
                    run: every directory on the way searchable by others, the interpreter and
                    its standard library readable by others (an installed release is; a
                    development build under /root is not). When that does not hold the cell
                    runs as root and `Sandbox.cell.guards` says why, naming the path.
  "caller"          the supervisor's own uid, whatever it is (root stays root: reported).
  an int            that uid (and gid), for operators with their own allocation.

The range sits below 2**31 (tools that print uids as signed ints stay right) and far
above the ranges distributions and systemd allocate.
"""

from __future__ import annotations

import itertools
import os
import stat
from dataclasses import dataclass
from pathlib import Path

BASE = 2_100_000_000
SPAN = 1 << 24
_serial = itertools.count()


@dataclass(frozen=True)
class CellUser:
    uid: int | None  # None: the supervisor's own (no switch)
    gid: int | None
    note: str  # how it was chosen, or why the cell keeps the supervisor's uid

    @property
    def unprivileged(self) -> bool:
        return (self.uid if self.uid is not None else os.geteuid()) != 0


def unreachable_part(python: str) -> str | None:
    """None when a user without special rights can run `python` and read its standard
    library; otherwise the first path that stops it (mode bits; ACLs are not consulted)."""
    exe = Path(python).resolve()
    prefix = exe.parent.parent
    stdlib = next(prefix.glob("lib/python3*"), prefix / "lib")
    for directory in [*reversed(exe.parents), stdlib]:
        if not os.stat(directory).st_mode & stat.S_IXOTH:
            return f"{directory} is not searchable by other users"
    for path, bits in ((exe, stat.S_IROTH | stat.S_IXOTH), (stdlib, stat.S_IROTH)):
        if os.stat(path).st_mode & bits != bits:
            return f"{path} is not readable by other users"
    return None


def choose(setting: str | int | None, python: str) -> CellUser:
    """The identity of the next cell started on `python`."""
    if setting == "caller":
        return CellUser(None, None, f"runs as the supervisor's uid {os.geteuid()} (cell_user='caller')")
    if isinstance(setting, int) and not isinstance(setting, bool):
        if setting < 0:
            raise ValueError(f"cell_user {setting} is not a uid")
        return CellUser(setting, setting, f"uid {setting} (cell_user={setting})")
    if setting != "auto":
        raise ValueError(f"cell_user must be 'auto', 'caller' or a uid, not {setting!r}")
    if os.geteuid() != 0:
        return CellUser(None, None, f"runs as the caller's uid {os.geteuid()}, not root")
    blocked = unreachable_part(python)
    if blocked:
        return CellUser(None, None, f"runs as ROOT: a cell uid could not start {python} ({blocked})")
    uid = BASE + (((os.getpid() & 0xFFFF) << 8 | next(_serial) & 0xFF) % SPAN)
    return CellUser(uid, uid, f"uid {uid}, a dedicated unprivileged user for this cell")
