"""The supervisor's control socket: administration of a RUNNING supervisor from outside
(today: `pyisolate policy reload FILE --socket PATH`).

Only the supervisor's owner may use it. Two checks, both by the kernel's word:
  - the socket file is created 0600 in a directory the caller chose, owned by the
    supervisor's effective uid (umask 077 while it is bound: no window with wider modes);
  - every connection's peer credentials (SO_PEERCRED: pid, uid, gid, filled in by the
    kernel at connect time) must carry the supervisor's effective uid. There is no
    default that skips this; root is not an exception (it can become the owner).
A refused request is logged to the supervisor's stderr with who asked.

The conversation, on one connection:
  1. the supervisor checks the peer's credentials and sends one PLAIN status frame:
     {"ok": true}, or {"ok": false, "error": why} and closes (a refused caller learns why;
     nothing secret has been exchanged);
  2. the caller runs the broker's Noise IK handshake (docs/broker-protocol.md) as the
     initiator with the key in `<socket>.key`: a spawn-style secret the supervisor wrote
     0600 next to the socket, so reading it is a second proof of being the owner; the
     supervisor accepts only that key's public half;
  3. one sealed request, one sealed reply (framing.Channel frames, AEAD with counters).
The policy travels as TOML text and is validated by the supervisor before anything changes.
"""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
from pathlib import Path

from . import broker, framing
from . import policy as policy_mod
from .errors import PyIsolateError, ReloadRefused

_UCRED = struct.Struct("3i")
LABEL = b"admin"  # the handshake's prologue label for control connections


def key_path(path: str | Path) -> Path:
    """Where the control socket's client key lives: next to the socket, 0600."""
    path = Path(path)
    return path.with_name(path.name + ".key")


def peer(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end, as the kernel recorded them."""
    return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))


class ControlServer:
    """Serves one supervisor's control socket on a daemon thread; `close()` removes it."""

    def __init__(self, supervisor, path: str | Path, log=None):
        self.supervisor = supervisor
        self.path = Path(path)
        self.owner = os.geteuid()
        self.log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self.refused: list[dict] = []  # who was turned away (also logged)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)
        try:
            self._sock.bind(str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)
        # The client's key: written 0600 under a temporary name, then renamed into place.
        self.identity, secret = supervisor.broker_keys.issue()
        self.key_path = key_path(self.path)
        temp = self.key_path.with_name(self.key_path.name + f".{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, secret.to_bytes())
        finally:
            os.close(fd)
        os.replace(temp, self.key_path)
        self._sock.listen(8)
        self._closed = False
        threading.Thread(target=self._accept, name="pyisolate-control", daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        channel = framing.Channel(conn)
        pid = None
        try:
            pid, uid, gid = peer(conn)
            if uid != self.owner:
                self.refused.append({"pid": pid, "uid": uid, "gid": gid})
                self.log(
                    f"pyisolate: control: refused a connection from pid {pid} uid {uid} gid {gid}: "
                    f"only the supervisor's owner (uid {self.owner}) may use this socket"
                )
                channel.send({"ok": False, "error": f"refused: uid {uid} is not the supervisor's owner"})
                return
            channel.send({"ok": True})
            channel.seal(broker.respond(conn, LABEL, self.supervisor.broker_keys, self.identity))
            request = channel.recv()
            if request is None:
                return
            self.log(f"pyisolate: control: {request.get('op')!r} from pid {pid} uid {uid}")
            channel.send(self._handle(request.get("op"), request))
        except (OSError, PyIsolateError) as exc:
            self.log(f"pyisolate: control: connection from pid {pid} ended: {exc}")
        finally:
            channel.close()

    def _handle(self, op: str, request: dict) -> dict:
        if op != "reload":
            return {"ok": False, "error": f"unknown operation {op!r}"}
        try:
            new = policy_mod.loads(str(request.get("toml", "")), str(request.get("source", "<control>")))
            report = self.supervisor.reload_policy(new, running=str(request.get("running", "strict")))
        except policy_mod.PolicyError as exc:
            return {"ok": False, "error": f"invalid policy: {exc}"}
        except (ReloadRefused, ValueError) as exc:
            return {"ok": False, "error": str(exc)}
        return {"ok": True, "report": report.to_wire(), "text": report.render()}

    def close(self) -> None:
        self._closed = True
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self.path.unlink(missing_ok=True)
        self.key_path.unlink(missing_ok=True)


def serve(supervisor, path: str | Path, log=None) -> ControlServer:
    return ControlServer(supervisor, path, log)


def request(path: str | Path, message: dict, timeout: float = 60.0) -> dict:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(path))
    except OSError as exc:
        sock.close()
        raise PyIsolateError(f"cannot reach a supervisor at {path}: {exc.strerror}") from None
    channel = framing.Channel(sock)
    try:
        status = channel.recv()
        if status is None or not status.get("ok"):
            raise ReloadRefused(str((status or {}).get("error", "the supervisor closed the connection")))
        try:
            secret = broker.SpawnSecret.from_bytes(key_path(path).read_bytes())
        except OSError as exc:
            raise PyIsolateError(f"cannot read the control key {key_path(path)}: {exc.strerror}") from None
        channel.seal(broker.initiate(sock, LABEL, secret))
        channel.send(message)
        reply = channel.recv()
    finally:
        channel.close()
    if reply is None:
        raise PyIsolateError(f"the supervisor at {path} closed the connection without answering")
    return reply


def reload(path: str | Path, policy_file: str | Path, running: str = "strict") -> dict:
    """Ask the supervisor at `path` to reload the policy in `policy_file`; raises
    ReloadRefused with the supervisor's reason when it changed nothing."""
    text = Path(policy_file).read_text(encoding="utf-8")
    reply = request(path, {"op": "reload", "toml": text, "source": str(policy_file), "running": running})
    if not reply.get("ok"):
        raise ReloadRefused(str(reply.get("error")))
    return reply
