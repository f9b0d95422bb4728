"""The one framing module for supervisor ↔ cell traffic.

A frame is a 4-byte big-endian length and that many payload bytes; a payload is one
JSON object (plain data only: never pickle). `Channel.send_bytes`/`recv_bytes` move raw
payloads; once `Channel.seal(transport)` has installed a sealed broker transport
(broker.py), they seal and open every frame instead, so callers do not change.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import threading

from . import broker
from .errors import ProtocolError

MAX_FRAME = 16 << 20  # bytes of payload; larger frames close the channel
_HEADER = struct.Struct(">I")


def encode(message: dict) -> bytes:
    try:
        return json.dumps(message, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ProtocolError(f"message is not plain JSON data: {exc}") from exc


def decode(payload: bytes) -> dict:
    try:
        message = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError(f"frame must be a JSON object, found {type(message).__name__}")
    return message


class Channel:
    """Frames over a connected stream socket. send() is thread-safe; recv() is meant for
    one reader thread."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._send_lock = threading.Lock()
        self.closed = False
        self.transport = None  # a _pyisolate.SealedTransport once the handshake is done

    def seal(self, transport) -> None:
        """From now on every frame is sealed (docs/broker-protocol.md §4)."""
        self.transport = transport

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, message: dict, fds: list[int] | None = None) -> None:
        """Send one message; `fds` travel with it (SCM_RIGHTS) on Unix sockets."""
        self.send_bytes(encode(message), fds)

    def recv(self) -> dict | None:
        """The next message, or None on a clean end of stream."""
        payload = self.recv_bytes()
        return None if payload is None else decode(payload)

    def send_bytes(self, payload: bytes, fds: list[int] | None = None) -> None:
        if len(payload) > MAX_FRAME:
            raise ProtocolError(f"frame of {len(payload)} bytes exceeds the {MAX_FRAME}-byte limit")
        with self._send_lock:  # sealed under the lock: counters go out in order
            data = _HEADER.pack(len(payload)) + payload if self.transport is None else self._sealed(payload)
            if fds:
                sent = socket.send_fds(self.sock, [data], fds)
                data = data[sent:]
            if data:
                self.sock.sendall(data)

    def recv_with_fds(self) -> tuple[dict | None, list[int]]:
        """Like recv(), also returning descriptors that came with the frame's first bytes."""
        try:
            first, fds, _flags, _addr = socket.recv_fds(self.sock, _HEADER.size, 8)
        except OSError:
            first, fds = b"", []
        if not first:
            return None, fds
        try:
            header = first + self._read_exact(_HEADER.size - len(first), allow_eof=False)
            return decode(self._payload_after(header)), fds
        except ProtocolError:
            for fd in fds:  # descriptors that came with a bad frame are not kept
                os.close(fd)
            raise

    def recv_bytes(self) -> bytes | None:
        header = self._read_exact(_HEADER.size, allow_eof=True)
        return None if header is None else self._payload_after(header)

    def _payload_after(self, header: bytes) -> bytes:
        """The payload a frame header announces; the one place the size limit is checked."""
        if self.transport is not None:
            return self._opened(header)
        (length,) = _HEADER.unpack(header)
        if length > MAX_FRAME:
            self.close()
            raise ProtocolError(f"peer announced a {length}-byte frame; the limit is {MAX_FRAME}")
        return self._read_exact(length, allow_eof=False)

    def _sealed(self, payload: bytes) -> bytes:
        try:
            return self.transport.seal(payload)
        except broker.backend().BrokerError as exc:
            self.close()
            raise ProtocolError(f"cannot seal a frame: {exc.args[1]}") from None

    def _opened(self, header: bytes) -> bytes:
        """Open one sealed frame; any failure closes the channel and delivers nothing."""
        try:
            body = self._read_exact(self.transport.frame_length(header), allow_eof=False)
            return self.transport.open(body)
        except broker.backend().BrokerError:
            self.close()
            raise ProtocolError("a sealed frame failed (length, authentication or counter)") from None

    def _read_exact(self, n: int, allow_eof: bool) -> bytes | None:
        if n == 0:
            return b""
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            try:
                k = self.sock.recv_into(view[got:])
            except OSError:
                k = 0
            if k == 0:
                if got == 0 and allow_eof:
                    return None
                self.close()
                raise ProtocolError(f"stream ended inside a frame ({got} of {n} bytes)")
            got += k
        return bytes(buf)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.transport is not None:
                self.transport.close()  # wipes both keys
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
