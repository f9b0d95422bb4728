"""The rule book: how a running sandbox's Python layer gets a new policy version, atomically.

Each sandbox has one memfd, written by its cell (outside the sandbox's interpreter) and
mapped READ-ONLY inside the sandbox's interpreter. The guest's audit hook and import gate
read the current rules from it at every check (`_guest.py`); nothing the guest can reach
holds a writable reference to the rules, and the memfd's descriptor is closed inside the
guest's boot, before any guest code runs, so only the cell's own mapping can write it.

Layout (little-endian, x86-64; stores from one thread are seen in order there):

    0   8  magic b"PYIRULE1"
    8   8  gen      the published generation (0 = nothing yet); its slot is gen % 2
    16  ..  (unused up to HEADER)
    slot i at HEADER + i * SLOT:
        0   8  gen      the generation this slot holds, 0 while it is being written
        8   4  length   of the body
        12 16  tag      random per publication: a cache key a guest cannot predict
        28  .. body     the resolved policy's wire form, JSON

A publication writes the slot the current generation does NOT use (marking it 0 first),
then the slot's gen, then the header's gen: one 8-byte store switches every reader from
the old rules to the new. A reader takes the header's gen, reads that slot, and accepts
its body only if the slot's gen still equals it afterwards (a per-slot seqlock), so a
check sees one version whole, never a mix: RCU with the memfd as the shared pointer.
"""

from __future__ import annotations

import json
import mmap
import os
import struct

MAGIC = b"PYIRULE1"
HEADER = 64
SLOT = 256 << 10  # the largest policy a sandbox can be given, as JSON
SIZE = HEADER + 2 * SLOT
_SLOT_HEAD = struct.Struct("<QI16s")


class PolicyTooLarge(ValueError):
    pass


class RuleBook:
    """The cell's writable side of one sandbox's rules. `fd` goes to the guest, which maps
    it read-only and closes it; the cell never uses the descriptor after handing it over."""

    def __init__(self, name: str):
        fd = os.memfd_create(f"pyisolate-rules-{name}", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, SIZE)
            # The size is fixed for good: neither side can shrink the mapping under the other.
            import fcntl

            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._map = mmap.mmap(fd, SIZE, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self._map[0:8] = MAGIC
        self.gen = 0

    def publish(self, wire: dict) -> int:
        """Make `wire` (a resolved policy's plain-data form) the current rules; returns
        the new generation. Only the cell's serving thread calls this (one writer)."""
        body = json.dumps(wire, sort_keys=True, allow_nan=False).encode()
        if len(body) > SLOT - _SLOT_HEAD.size:
            raise PolicyTooLarge(f"the policy is {len(body)} bytes as JSON; a sandbox takes at most {SLOT - 28}")
        gen = self.gen + 1
        base = HEADER + (gen % 2) * SLOT
        m = self._map
        m[base : base + 8] = bytes(8)  # readers of this slot's old generation now retry
        m[base + _SLOT_HEAD.size : base + _SLOT_HEAD.size + len(body)] = body
        m[base + 8 : base + _SLOT_HEAD.size] = _SLOT_HEAD.pack(0, len(body), os.urandom(16))[8:]
        m[base : base + 8] = gen.to_bytes(8, "little")
        m[8:16] = gen.to_bytes(8, "little")  # the switch
        self.gen = gen
        return gen

    def close(self) -> None:
        self._map.close()
