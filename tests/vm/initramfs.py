"""A gzip'd newc cpio archive written from a list of entries: the VM test's initramfs.

Written here rather than by `cpio`/`mknod`, so building it needs no root and no tool,
and the same inputs give the same bytes (fixed owner, times and inode numbers).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Entry:
    path: str  # inside the archive, without a leading "/"
    mode: int  # file type and permission bits, as st_mode
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)  # (major, minor) of a device node


def directory(path: str) -> Entry:
    return Entry(path, stat.S_IFDIR | 0o755)


def file(path: str, data: bytes, executable: bool = False) -> Entry:
    return Entry(path, stat.S_IFREG | (0o755 if executable else 0o644), data)


def symlink(path: str, target: str) -> Entry:
    return Entry(path, stat.S_IFLNK | 0o777, target.encode())


def char_device(path: str, major: int, minor: int, perms: int = 0o600) -> Entry:
    return Entry(path, stat.S_IFCHR | perms, rdev=(major, minor))


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _record(ino: int, entry: Entry) -> bytes:
    name = entry.path.encode() + b"\0"
    fields = (
        ino,
        entry.mode,
        0,  # uid
        0,  # gid
        2 if stat.S_ISDIR(entry.mode) else 1,
        0,  # mtime
        len(entry.data),
        0,  # devmajor
        0,  # devminor
        entry.rdev[0],
        entry.rdev[1],
        len(name),
        0,  # check
    )
    header = b"070701" + b"".join(b"%08X" % f for f in fields)
    return header + name + _pad4(len(header) + len(name)) + entry.data + _pad4(len(entry.data))


def write(entries: list[Entry], out: Path) -> None:
    """Write the archive to `out` (temp + rename: never half-written)."""
    blob = b"".join(_record(i + 1, e) for i, e in enumerate(entries))
    blob += _record(0, Entry("TRAILER!!!", 0))
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(gzip.compress(blob, compresslevel=1, mtime=0))
    tmp.replace(out)
