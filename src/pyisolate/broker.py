"""The sealed broker's Python side (docs/broker-protocol.md): keys issued at spawn, the
Noise IK handshake on a socket, and the opcode table.

The cryptography is in C (`NoiseHandshake`, `SealedTransport`, over the statically
linked libsodium): the `_pyisolate` extension on the distribution's interpreter, else the
same C through ctypes (`_broker_ctypes`, for a supervisor on another Python). This module
moves handshake messages, checks the peer's identity, and hands the finished transport to
`framing.Channel.seal`, after which every frame of that channel is sealed.

    supervisor                                   cell
    SupervisorKeys() once
    keys.issue() → (cell_public, secret) ──pipe (PYISOLATE_BROKER_FD)──► read_spawn_secret()
    respond(sock, label, keys, cell_public) ◄── message 1 ── initiate(sock, label, secret)
                                             ── message 2 ──►
"""

from __future__ import annotations

import os
import selectors
import socket
import struct
import threading
from _operator import _compare_digest  # hmac.compare_digest, without importing OpenSSL
from collections import namedtuple

from .errors import ProtocolError

PROLOGUE = b"pyisolate-broker/1\x00"
SECRET_VERSION = 1
BROKER_FD_ENV = "PYISOLATE_BROKER_FD"
HANDSHAKE_MAX = 4096  # bytes of one handshake message (hybrid message 1 is 1216)
HANDSHAKE_TIMEOUT = 30.0
MAX_PAYLOAD = 16 << 20  # framing.MAX_FRAME, the C core's limit too
_LEN = struct.Struct(">I")

X25519_LEN = 32
XWING_PUBLIC_LEN = 1216
XWING_SECRET_LEN = 32


class HandshakeError(ProtocolError):
    """The sealed channel could not be set up: the peer is not who it must be, or it broke
    the handshake. The channel is closed."""


class DecryptError(ProtocolError):
    """A sealed frame failed (authentication, counter, length). The channel is closed;
    no detail on purpose."""


_backend = None


def backend(python: str | None = None):
    """The C core: the `_pyisolate` extension where it loads, else `_broker_ctypes`
    ($PYISOLATE_BROKER_BACKEND=ctypes forces the latter), which loads the library of the
    distribution whose interpreter is `python` (else $PYISOLATE_PYTHON's)."""
    global _backend
    if _backend is None:
        if python and "PYISOLATE_PYTHON" not in os.environ and "PYISOLATE_BROKER_LIB" not in os.environ:
            from pathlib import Path

            found = sorted(Path(python).resolve().parents[1].glob("lib/python3*/site-packages/pyisolate/lib*broker.so"))
            if found:
                os.environ["PYISOLATE_BROKER_LIB"] = str(found[0])
        if os.environ.get("PYISOLATE_BROKER_BACKEND") != "ctypes":
            try:
                import _pyisolate

                if hasattr(_pyisolate, "NoiseHandshake"):
                    _backend = _pyisolate
            except ImportError:
                pass
        if _backend is None:
            from . import _broker_ctypes

            _backend = _broker_ctypes
    return _backend


def sodium_version() -> str:
    """The version of the libsodium linked (statically) into the C core."""
    return backend().sodium_version()


def label_control() -> bytes:
    return b"control"


def label_sandbox(name: str) -> bytes:
    return b"sandbox:" + name.encode()


# -- keys issued at spawn -------------------------------------------------------------------


# A named tuple rather than a dataclass: a cell imports this module at start-up, and
# dataclasses (with inspect and ast behind it) would add ~9 ms to every cell start.
class SpawnSecret(namedtuple("SpawnSecret", "private supervisor_public kem_public", defaults=(None,))):
    """What a cell (or a sandbox channel) is given: its static private key, the
    supervisor's static public key and, in hybrid mode, the supervisor's X-Wing public key."""

    __slots__ = ()

    def to_bytes(self) -> bytes:
        mode = b"\x01" if self.kem_public else b"\x00"
        return bytes([SECRET_VERSION]) + mode + self.private + self.supervisor_public + (self.kem_public or b"")

    @classmethod
    def from_bytes(cls, data: bytes) -> SpawnSecret:
        if len(data) < 2 or data[0] != SECRET_VERSION or data[1] not in (0, 1):
            raise HandshakeError(f"spawn secret: unknown version/mode {data[:2].hex()!r}")
        want = 2 + 2 * X25519_LEN + (XWING_PUBLIC_LEN if data[1] else 0)
        if len(data) != want:
            raise HandshakeError(f"spawn secret: {len(data)} bytes, expected {want}")
        kem = data[2 + 2 * X25519_LEN :] if data[1] else None
        return cls(data[2:34], data[34:66], kem)

    def to_hex(self) -> str:
        return self.to_bytes().hex()


class SupervisorKeys:
    """The supervisor's static X25519 key (and X-Wing key pair when `hybrid`), made at start
    and kept only in memory."""

    def __init__(self, hybrid: bool = False, python: str | None = None):
        self._private, self.public = backend(python).x25519_keypair()
        self.kem_public, self._kem_secret = backend().xwing_keypair() if hybrid else (None, None)

    @property
    def hybrid(self) -> bool:
        return self.kem_public is not None

    def issue(self) -> tuple[bytes, SpawnSecret]:
        """A fresh identity for one cell or sandbox channel: (its public key, its secret)."""
        private, public = backend().x25519_keypair()
        return public, SpawnSecret(private, self.public, self.kem_public)


def hand_over(secret: SpawnSecret) -> int:
    """A pipe holding `secret`; its read end (inheritable by pass_fds) is returned and the
    write end closed. The caller closes the read end once the child has it."""
    r, w = os.pipe()
    try:
        os.write(w, secret.to_bytes())  # far below the pipe's buffer: never blocks
    finally:
        os.close(w)
    return r


def child_env(fd: int) -> dict[str, str]:
    """The variable that names the secret's pipe in the child (a number, not a secret)."""
    return {BROKER_FD_ENV: str(fd)}


def read_spawn_secret() -> SpawnSecret | None:
    """The cell's secret from the pipe named by $PYISOLATE_BROKER_FD (then closed and the
    variable removed); None when the cell was started without one."""
    fd_text = os.environ.pop(BROKER_FD_ENV, None)
    if fd_text is None:
        return None
    if not fd_text.isdigit():
        raise HandshakeError(f"{BROKER_FD_ENV}={fd_text!r} is not a descriptor number")
    fd = int(fd_text)
    try:
        chunks = []
        while chunk := os.read(fd, 4096):
            chunks.append(chunk)
    finally:
        os.close(fd)
    return SpawnSecret.from_bytes(b"".join(chunks))


# -- the handshake on a socket ----------------------------------------------------------------


def _send_message(sock: socket.socket, message: bytes) -> None:
    sock.sendall(_LEN.pack(len(message)) + message)


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise HandshakeError(f"peer closed the channel during the handshake ({len(buf)} of {n} bytes)")
        buf += chunk
    return bytes(buf)


def _recv_message(sock: socket.socket) -> bytes:
    (length,) = _LEN.unpack(_recv_exact(sock, _LEN.size))
    if length > HANDSHAKE_MAX:
        raise HandshakeError(f"handshake message of {length} bytes; the limit is {HANDSHAKE_MAX}")
    return _recv_exact(sock, length)


def _with_timeout(sock: socket.socket, timeout: float, step):
    previous = sock.gettimeout()
    sock.settimeout(timeout)
    try:
        return step()
    except TimeoutError:
        raise HandshakeError(f"no handshake message within {timeout}s") from None
    except backend().BrokerError as exc:
        raise HandshakeError(f"handshake failed: {exc.args[1]}") from None
    except OSError as exc:
        raise HandshakeError(f"handshake failed: {exc}") from None
    finally:
        sock.settimeout(previous)


def _initiator(send, recv, label: bytes, secret: SpawnSecret):
    hs = backend().NoiseHandshake(
        True,
        secret.private,
        prologue=PROLOGUE + label,
        remote_static=secret.supervisor_public,
        kem_key=secret.kem_public,
    )
    send(hs.write_message())
    hs.read_message(recv())
    return hs.to_transport()


def _responder(send, recv, label: bytes, keys: SupervisorKeys, expected: bytes):
    hs = backend().NoiseHandshake(False, keys._private, prologue=PROLOGUE + label, kem_key=keys._kem_secret)
    hs.read_message(recv())
    if not _compare_digest(hs.remote_static or b"", expected):
        raise HandshakeError("the peer's static key is not the one issued for this channel")
    send(hs.write_message())
    return hs.to_transport()


def initiate(sock: socket.socket, label: bytes, secret: SpawnSecret, timeout: float = HANDSHAKE_TIMEOUT):
    """The cell's side: message 1 out, message 2 in; the SealedTransport."""
    send, recv = (lambda m: _send_message(sock, m)), (lambda: _recv_message(sock))
    return _with_timeout(sock, timeout, lambda: _initiator(send, recv, label, secret))


def respond(
    sock: socket.socket, label: bytes, keys: SupervisorKeys, expected: bytes, timeout: float = HANDSHAKE_TIMEOUT
):
    """The supervisor's side: message 1 in (its static key must be `expected`, the key
    issued for this channel), message 2 out; the SealedTransport."""

    send, recv = (lambda m: _send_message(sock, m)), (lambda: _recv_message(sock))
    return _with_timeout(sock, timeout, lambda: _responder(send, recv, label, keys, expected))


def _rehandshake(channel, run) -> None:
    """A new handshake whose two messages travel as frames of the current sealed session
    (so no outsider can start one); then the new transport replaces the old, whose keys
    are wiped. Counters start again at zero."""

    def received() -> bytes:
        message = channel.recv_bytes()
        if message is None:
            raise HandshakeError("peer closed the channel during a new handshake")
        return message

    try:
        transport = run(channel.send_bytes, received)
    except backend().BrokerError as exc:
        channel.close()
        raise HandshakeError(f"new handshake failed: {exc.args[1]}") from None
    old, channel.transport = channel.transport, transport
    old.close()


def rehandshake_initiator(channel, label: bytes, secret: SpawnSecret) -> None:
    """The cell's side of a new handshake on a sealed `framing.Channel` (no other frames
    may travel meanwhile)."""
    _rehandshake(channel, lambda send, recv: _initiator(send, recv, label, secret))


def rehandshake_responder(channel, label: bytes, keys: SupervisorKeys, expected: bytes) -> None:
    """The supervisor's side of a new handshake on a sealed `framing.Channel`."""
    _rehandshake(channel, lambda send, recv: _responder(send, recv, label, keys, expected))


# -- sandbox sockets ----------------------------------------------------------------------------


def respond_in_background(sock: socket.socket, label: bytes, keys: SupervisorKeys, expected: bytes):
    """The supervisor's side of a sandbox socket's handshake, run while the `create` request
    is in flight (the cell answers `create` only after its side is done). `.result()`
    gives the transport or raises HandshakeError."""
    outcome: dict = {}

    def run():
        try:
            outcome["transport"] = respond(sock, label, keys, expected)
        except ProtocolError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="sandbox-handshake", daemon=True)
    thread.start()

    class Pending:
        @staticmethod
        def result():
            thread.join()
            if "error" in outcome:
                raise outcome["error"]
            return outcome["transport"]

    return Pending()


def seal_sandbox_socket(sealed: socket.socket, label: bytes, secret: SpawnSecret) -> socket.socket:
    """The cell's side of a sandbox socket: the handshake (the supervisor answers while its
    `create` waits), then the socket joins the cell's relay. The guest's interpreter cannot
    load the C core (`_pyisolate` is main-interpreter only), so it gets the plain end of a
    private socketpair; the relay seals and opens every frame between the two."""
    transport = initiate(sealed, label, secret)
    guest, inner = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    native = getattr(backend(), "relay_sandbox", None)
    if native is None:  # the ctypes backend: the Python relay below
        _relay().add(sealed, inner, transport)
        return guest
    # The extension's relay thread (native/src/broker_relay.c) takes both descriptors and
    # the transport's keys (the object is left closed) and never calls into Python.
    native(transport, sealed.fileno(), inner.fileno())
    sealed.detach()
    inner.detach()
    return guest


_the_relay = None
_relay_lock = threading.Lock()


def _relay() -> _Relay:
    global _the_relay
    with _relay_lock:
        if _the_relay is None:
            _the_relay = _Relay()
        return _the_relay


class _Relay:
    """One thread per cell (its task budget counts a few helpers, not one per sandbox)
    moving frames between each sandbox's sealed socket and its guest socketpair. It
    reads only what select() says is there and keeps partial frames per socket; a frame
    that fails closes that sandbox's link (both sockets, the transport's keys wiped).
    Writes block: a guest that stops reading stalls the relay of its own cell, which
    only hosts sandboxes of the same tenant."""

    def __init__(self):
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        self._new: list = []
        self._lock = threading.Lock()
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        threading.Thread(target=self._run, name="broker-relay", daemon=True).start()

    def add(self, sealed: socket.socket, inner: socket.socket, transport) -> None:
        with self._lock:
            self._new.append(_Link(sealed, inner, transport))
        os.write(self._wake_w, b"\0")

    def _run(self) -> None:
        while True:
            for key, _ in self._selector.select():
                if key.data is None:
                    os.read(self._wake_r, 4096)
                    with self._lock:
                        new, self._new = self._new, []
                    for link in new:
                        self._selector.register(link.sealed, selectors.EVENT_READ, (link, True))
                        self._selector.register(link.inner, selectors.EVENT_READ, (link, False))
                    continue
                link, from_supervisor = key.data
                if link.closed:  # both its ends were ready in this batch; the first closed it
                    continue
                try:
                    link.pump(from_supervisor)
                except Exception:  # whatever ends one link must not end the relay
                    for sock in (link.sealed, link.inner):
                        self._selector.unregister(sock)  # while open: unregister needs its number
                    link.close()


class _Link:
    def __init__(self, sealed: socket.socket, inner: socket.socket, transport):
        self.sealed, self.inner, self.transport = sealed, inner, transport
        self.buffers = {True: bytearray(), False: bytearray()}
        self.closed = False

    def pump(self, from_supervisor: bool) -> None:
        source = self.sealed if from_supervisor else self.inner
        data = source.recv(1 << 16)
        if not data:
            raise OSError("end of stream")
        buf = self.buffers[from_supervisor]
        buf += data
        while len(buf) >= _LEN.size:
            if from_supervisor:
                length = self.transport.frame_length(bytes(buf[: _LEN.size]))  # a bad one closes
            else:
                (length,) = _LEN.unpack(buf[: _LEN.size])
                if length > MAX_PAYLOAD:
                    raise ProtocolError(f"guest frame of {length} bytes")
            if len(buf) < _LEN.size + length:
                return
            body = bytes(buf[_LEN.size : _LEN.size + length])
            del buf[: _LEN.size + length]
            if from_supervisor:
                payload = self.transport.open(body)
                self.inner.sendall(_LEN.pack(len(payload)) + payload)
            else:
                self.sealed.sendall(self.transport.seal(body))

    def close(self) -> None:
        self.closed = True
        self.transport.close()
        for sock in (self.sealed, self.inner):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


# -- opcodes ----------------------------------------------------------------------------------

# Typed arguments of each request the broker carries (docs/broker-protocol.md §5): a type,
# or a tuple of accepted types; a name ending in "?" is optional. "id" (control) and "rid"
# (sandbox) are the request ids every request carries.
OPCODES: dict[str, dict[str, type | tuple[type, ...]]] = {
    # supervisor → cell, control channel
    "go": {"id": int, "pool": int, "exclusive": bool},
    "create": {"id": int, "sb": str, "policy": dict, "tmp": (str, type(None)), "broker?": str},
    "stats": {"id": int},
    "exit": {"id": int},
    "reload": {"id": int, "sb": str, "policy": dict},
    "usage": {"id": int, "sb": str},
    "interrupt": {"id": int, "sb": str, "message": str},
    # supervisor → sandbox
    "exec": {"rid": int, "code": str},
    "call": {"rid": int, "target": str, "args": list},
    "run": {"rid": int, "mode": str, "target": str, "argv": list},
    "close": {},
}


def register_opcode(name: str, args: dict[str, type | tuple[type, ...]]) -> None:
    """Add a plugin's operation with its typed arguments; a name is registered once."""
    if not name.isidentifier() or name in OPCODES:
        raise ValueError(f"opcode {name!r} is not a new identifier")
    OPCODES[name] = dict(args)


def check_request(message: dict) -> str:
    """The request's opcode, once its arguments have the registered types; ProtocolError
    naming the opcode and the field otherwise (unknown opcodes are refused)."""
    op = message.get("op")
    spec = OPCODES.get(op) if isinstance(op, str) else None
    if spec is None:
        raise ProtocolError(f"unknown opcode {op!r}")
    allowed = {"op"}
    for field, kind in spec.items():
        name = field.rstrip("?")
        allowed.add(name)
        if name not in message:
            if field.endswith("?"):
                continue
            raise ProtocolError(f"opcode {op!r}: missing argument {name!r}")
        value = message[name]
        if isinstance(value, bool) and kind is int:
            raise ProtocolError(f"opcode {op!r}: argument {name!r} must be int, found bool")
        if not isinstance(value, kind):
            raise ProtocolError(f"opcode {op!r}: argument {name!r} has type {type(value).__name__}")
    extra = set(message) - allowed
    if extra:
        raise ProtocolError(f"opcode {op!r}: unexpected arguments {sorted(extra)}")
    return op
