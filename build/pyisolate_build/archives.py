"""Unpacking verified source tarballs, on every Python the driver supports (≥ 3.11).

tarfile's "data" filter exists from Python 3.11.4 (and 3.12) on; Debian bookworm's
python3 is 3.11.2 (the Docker builder runs the driver with it). There the same refusals
are made by hand before extracting: no absolute or escaping names, no links that leave
the destination, no device or FIFO members, no setuid/setgid/sticky or group/other
write bits, and no owner taken from the archive.
"""

from __future__ import annotations

import copy
import os
import tarfile
from pathlib import Path

from .errors import BuildError


def extract(tar: tarfile.TarFile, dest: Path) -> None:
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, filter="data")
        return
    root = os.path.realpath(dest)

    def inside(path: str) -> bool:
        real = os.path.realpath(path)
        return real == root or real.startswith(root + os.sep)

    members = []
    for member in tar.getmembers():
        where = os.path.join(root, member.name)
        if os.path.isabs(member.name) or not inside(where):
            raise BuildError(f"{tar.name}: member {member.name!r} would land outside {dest}")
        if member.issym() and (
            os.path.isabs(member.linkname) or not inside(os.path.join(os.path.dirname(where), member.linkname))
        ):
            raise BuildError(f"{tar.name}: symlink {member.name!r} -> {member.linkname!r} leaves {dest}")
        if member.islnk() and not inside(os.path.join(root, member.linkname)):
            raise BuildError(f"{tar.name}: hard link {member.name!r} -> {member.linkname!r} leaves {dest}")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise BuildError(f"{tar.name}: member {member.name!r} is a device or FIFO")
        member = copy.copy(member)
        member.mode &= ~0o7022
        if member.isreg():
            member.mode |= 0o600
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
        members.append(member)
    tar.extractall(dest, members=members)
