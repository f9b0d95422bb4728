"""The frame codec: round trips, and every malformed stream closes the channel."""

import socket
import struct

import pytest

from pyisolate import framing
from pyisolate.errors import ProtocolError


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield framing.Channel(a), b
    a.close()
    b.close()


def test_round_trip():
    a, b = socket.socketpair()
    ca, cb = framing.Channel(a), framing.Channel(b)
    msg = {"op": "call", "args": [1, "ü", None, 2**70, {"k": [1.5]}]}
    ca.send(msg)
    assert cb.recv() == msg
    ca.close()
    assert cb.recv() is None  # clean end of stream between frames


def test_not_plain_data_is_refused():
    with pytest.raises(ProtocolError, match="plain JSON"):
        framing.encode({"x": object()})
    with pytest.raises(ProtocolError, match="plain JSON"):
        framing.encode({"x": float("nan")})


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        (struct.pack(">I", framing.MAX_FRAME + 1), "limit"),
        (struct.pack(">I", 10) + b"{}", "ended inside a frame"),
        (b"\x00\x00", "ended inside a frame"),
        (struct.pack(">I", 3) + b"[1]", "JSON object"),
        (struct.pack(">I", 3) + b"\xff\xfe{", "not JSON"),
    ],
)
def test_malformed_streams(pair, raw, problem):
    channel, peer = pair
    peer.sendall(raw)
    peer.shutdown(socket.SHUT_WR)
    with pytest.raises(ProtocolError, match=problem):
        channel.recv()
