"""The cell: a worker process of the distribution's interpreter that hosts sandboxes.

    python3.14t -I -B -m pyisolate.cell FD

FD is the cell's end of a Unix socket to the supervisor. The cell says hello and then
does nothing but wait until the supervisor has attached the guards and says "go": no
sandbox is created and no guest code runs before that. Each sandbox is one isolated
sub-interpreter driven by its own OS thread; guest output (post, call results) comes
back over a per-sandbox socket as plain JSON frames, so no guest object, and no pickle,
ever crosses into the cell's own interpreter.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import sys
import sysconfig
import threading
import time
from pathlib import Path

import _interpreters

from . import framing
from .errors import ProtocolError

GUEST_SOURCE = (Path(__file__).with_name("_guest.py")).read_text(encoding="utf-8")
# Imported into warm interpreters before any policy applies (from the distribution's own
# bytecode); the boot drops whichever of them a policy denies.
PRELOAD = (
    "import json, re, math, collections, functools, itertools, operator, statistics, "
    "traceback, linecache, io, random, datetime, typing, dataclasses, enum, textwrap, tempfile"
)
MAX_GUEST_FRAME = 16 << 20


def _excinfo(info) -> dict:
    type_name = getattr(getattr(info, "type", None), "__name__", None) or "Exception"
    return {
        "type": type_name,
        "msg": str(getattr(info, "msg", "") or ""),
        "tb": str(getattr(info, "errdisplay", "") or getattr(info, "formatted", "") or ""),
    }


class Pool:
    """Pre-created interpreters with PRELOAD done, refilled in the background."""

    def __init__(self, size: int):
        self.size = size
        self._ready: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._wanted = threading.Semaphore(0)
        if size > 0:
            for _ in range(size):
                self._wanted.release()
            threading.Thread(target=self._fill, name="pool", daemon=True).start()

    @staticmethod
    def new_interpreter(preload: bool = True) -> int:
        iid = _interpreters.create("isolated", reqrefs=False)
        if preload:
            info = _interpreters.exec(iid, PRELOAD)
            if info is not None:
                raise RuntimeError(f"preload failed: {_excinfo(info)}")
        return iid

    def _fill(self) -> None:
        while True:
            self._wanted.acquire()
            self._ready.put(self.new_interpreter())

    def take(self) -> tuple[int, bool]:
        """An interpreter id, and whether it came warm from the pool."""
        try:
            iid = self._ready.get_nowait()
        except queue.Empty:
            return self.new_interpreter(), False
        self._wanted.release()
        return iid, True


class CellSandbox:
    def __init__(self, cell: Cell, name: str, iid: int, policy: dict, tmp: str | None = None):
        self.cell, self.name, self.iid = cell, name, iid
        self.cell_end, self.guest_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.channel = framing.Channel(self.cell_end)
        self.requests: queue.SimpleQueue = queue.SimpleQueue()
        self.results: dict[int, object] = {}
        self.ends: dict[int, threading.Event] = {}
        self.broken = ""
        config = json.dumps({"fd": self.guest_end.fileno(), "policy": policy, "stdlib": cell.stdlib, "tmp": tmp})
        _interpreters.set___main___attrs(iid, {"__pyisolate_config__": config})
        info = _interpreters.exec(iid, cell.guest_code)
        if info is not None:
            raise RuntimeError(f"sandbox boot failed: {_excinfo(info)['tb'] or _excinfo(info)['msg']}")
        threading.Thread(target=self._read, name=f"{name}-reader", daemon=True).start()
        threading.Thread(target=self._serve, name=f"{name}-thread", daemon=True).start()

    # -- guest → cell: frames from the guest's post()/call() -----------------------------
    def _read(self) -> None:
        while True:
            try:
                payload = self.channel.recv_bytes()
                if payload is None:
                    return
                if len(payload) > MAX_GUEST_FRAME:
                    raise ProtocolError("guest frame too large")
                frame = framing.decode(payload)
            except ProtocolError as exc:
                self.broken = f"sandbox output stream violated the protocol: {exc}"
                for event in list(self.ends.values()):
                    event.set()
                return
            kind = frame.get("k")
            if kind == "post":
                self.cell.send({"op": "post", "sb": self.name, "v": frame.get("v")})
            elif kind == "ret" and isinstance(frame.get("rid"), int):
                self.results[frame["rid"]] = frame.get("v")
            elif kind == "end" and frame.get("rid") in self.ends:
                self.ends[frame["rid"]].set()

    # -- cell → guest: requests run on this sandbox's own thread ----------------------------
    def _serve(self) -> None:
        while True:
            rid, op, body = self.requests.get()
            if op == "close":
                self._close(rid)
                return
            self.cell.mark_first_code()
            self.ends[rid] = threading.Event()
            info = _interpreters.exec(self.iid, body)
            # The end marker travels behind everything the guest wrote for this request.
            marker = framing.encode({"k": "end", "rid": rid})
            try:
                self.guest_end.sendall(len(marker).to_bytes(4, "big") + marker)
            except OSError:
                pass
            self.ends[rid].wait()
            del self.ends[rid]
            result = self.results.pop(rid, None)
            if info is not None:
                self.cell.send({"id": rid, "ok": False, "error": _excinfo(info)})
            elif self.broken:
                self.cell.send({"id": rid, "ok": False, "error": {"type": "ProtocolError", "msg": self.broken}})
            else:
                self.cell.send({"id": rid, "ok": True, "v": result})

    def _close(self, rid: int) -> None:
        try:
            _interpreters.destroy(self.iid)
            self.cell.send({"id": rid, "ok": True, "v": None})
        except Exception as exc:  # e.g. guest threads still running in it
            self.cell.send({"id": rid, "ok": False, "error": {"type": type(exc).__name__, "msg": str(exc)}})
        finally:
            self.channel.close()
            self.guest_end.close()
            self.cell.sandboxes.pop(self.name, None)


class Cell:
    def __init__(self, fd: int):
        self.channel = framing.Channel(socket.socket(fileno=fd))
        self.sandboxes: dict[str, CellSandbox] = {}
        self.stdlib = str(Path(sysconfig.get_paths()["stdlib"]).resolve())
        self.guest_code = compile(GUEST_SOURCE, "<pyisolate-guest>", "exec")
        self.go_at: float | None = None
        self.first_code_at: float | None = None
        self.pool: Pool | None = None

    def send(self, message: dict) -> None:
        try:
            self.channel.send(message)
        except OSError:
            os._exit(0)  # the supervisor is gone: nobody to serve

    def mark_first_code(self) -> None:
        if self.first_code_at is None:
            self.first_code_at = time.monotonic()

    def serve(self) -> None:
        self.send(
            {
                "op": "hello",
                "pid": os.getpid(),
                "stdlib": self.stdlib,
                "prefix": sys.prefix,
                "version": sys.version,
                "c_gate": hasattr(__import__("_imp"), "_pyisolate_restrict"),
            }
        )
        while True:
            message = self.channel.recv()
            if message is None:
                return
            op, rid = message.get("op"), message.get("id")
            if op == "go":
                self.go_at = time.monotonic()
                self.pool = Pool(int(message.get("pool", 0)))
                self.send({"id": rid, "ok": True, "v": {"go_at": self.go_at}})
            elif self.go_at is None:
                # Guards are not attached yet: refuse everything that could run code.
                self.send({"id": rid, "ok": False, "error": {"type": "NotReady", "msg": f"{op!r} before go"}})
            else:
                try:
                    self.dispatch(op, rid, message)
                except Exception as exc:
                    self.send({"id": rid, "ok": False, "error": {"type": type(exc).__name__, "msg": str(exc)}})

    def dispatch(self, op: str, rid: int, message: dict) -> None:
        if op == "create":
            name = message["sb"]
            if name in self.sandboxes:
                raise ValueError(f"sandbox {name!r} already exists in this cell")
            t0 = time.perf_counter()
            iid, warm = self.pool.take()
            self.sandboxes[name] = CellSandbox(self, name, iid, message["policy"], message.get("tmp"))
            self.send({"id": rid, "ok": True, "v": {"warm": warm, "seconds": time.perf_counter() - t0}})
        elif op in ("exec", "call", "run", "close"):
            sandbox = self.sandboxes.get(message.get("sb"))
            if sandbox is None:
                raise KeyError(f"no sandbox {message.get('sb')!r} in this cell")
            if op == "exec":
                body = message["code"]
            elif op == "call":
                body = f"__pyisolate_call__({rid}, {message['target']!r}, {json.dumps(message['args'])!r})"
            elif op == "run":
                body = f"__pyisolate_run__({message['mode']!r}, {message['target']!r}, {message['argv']!r})"
            else:
                body = ""
            sandbox.requests.put((rid, op, body))
        elif op == "stats":
            self.send(
                {
                    "id": rid,
                    "ok": True,
                    "v": {
                        "go_at": self.go_at,
                        "first_code_at": self.first_code_at,
                        "sandboxes": sorted(self.sandboxes),
                        "pid": os.getpid(),
                    },
                }
            )
        elif op == "exit":
            self.send({"id": rid, "ok": True, "v": None})
            os._exit(0)
        else:
            raise ValueError(f"unknown op {op!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[1].isdigit():
        print("usage: python -m pyisolate.cell FD (started by the supervisor)", file=sys.stderr)
        return 2
    Cell(int(argv[1])).serve()
    # The supervisor hung up. Sandbox threads may still be inside guest code, so skip
    # interpreter finalisation (which would wait for them, or warn about them).
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
