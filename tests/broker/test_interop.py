# ruff: noqa: F811 (the fixtures imported from broker_support are parameters here)
"""Interop with an independent Noise implementation: the PyPI `noiseprotocol` package on
this (host) Python against PyIsolate's C core, in both roles, handshake and transport:
the built interpreter's extension over a socketpair (tests/broker/peer.py), and the C
core through ctypes in this process."""

import json
import os
import socket
import struct
import subprocess

import pytest
from broker_support import HERE, broker_lib, c, peer  # noqa: F401 (fixtures, used as parameters)
from noise.connection import Keypair, NoiseConnection

PATTERN = b"Noise_IK_25519_ChaChaPoly_SHA256"
PROLOGUE = b"pyisolate-broker/1\x00interop"
PAYLOADS = [b"", b"x", b"hello cell", os.urandom(1000), b"\x00" * 64, os.urandom(65000)]


def _noise(initiator: bool, static: bytes, remote: bytes | None) -> NoiseConnection:
    conn = NoiseConnection.from_name(PATTERN)
    conn.set_as_initiator() if initiator else conn.set_as_responder()
    conn.set_keypair_from_private_bytes(Keypair.STATIC, static)
    if remote is not None:
        conn.set_keypair_from_public_bytes(Keypair.REMOTE_STATIC, remote)
    conn.set_prologue(PROLOGUE)
    conn.start_handshake()
    return conn


def _send(sock, data: bytes) -> None:
    sock.sendall(struct.pack(">I", len(data)) + data)


def _recv(sock) -> bytes:
    (n,) = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))
    return sock.recv(n, socket.MSG_WAITALL) if n else b""


@pytest.mark.parametrize("our_role", ["initiator", "responder"])
def test_extension_interoperates_with_noiseprotocol(python, cell_python, c, our_role):
    (init_s, init_p), (resp_s, resp_p) = c.x25519_keypair(), c.x25519_keypair()
    ours_initiator = our_role == "initiator"
    mine, theirs = socket.socketpair()
    config = {
        "mode": "noise",
        "fd": theirs.fileno(),
        "role": our_role,
        "static": (init_s if ours_initiator else resp_s).hex(),
        "remote_static": resp_p.hex(),
        "prologue": PROLOGUE.hex(),
        "payloads": [b"from initiator".hex(), b"from responder".hex()],
        "frames": len(PAYLOADS),
    }
    proc = subprocess.Popen(
        [str(python), "-I", str(HERE / "peer.py"), json.dumps(config)],
        pass_fds=[theirs.fileno()],
        stdout=subprocess.PIPE,
        text=True,
    )
    theirs.close()
    try:
        other = _noise(not ours_initiator, resp_s if ours_initiator else init_s, None if ours_initiator else resp_p)
        if ours_initiator:
            assert other.read_message(_recv(mine)) == b"from initiator"
            _send(mine, other.write_message(b"from responder"))
        else:
            _send(mine, other.write_message(b"from initiator"))
            assert other.read_message(_recv(mine)) == b"from responder"
        assert other.handshake_finished
        for payload in PAYLOADS:  # noiseprotocol seals, the extension opens and answers sealed
            _send(mine, other.encrypt(payload))
            assert other.decrypt(_recv(mine)) == payload[::-1]
        out, _ = proc.communicate(timeout=60)
    finally:
        mine.close()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0
    result = json.loads(out)
    assert result["payloads"][0] == (b"from responder" if ours_initiator else b"from initiator").hex()
    assert [bytes.fromhex(p) for p in result["payloads"][1:]] == PAYLOADS
    assert result["handshake_hash"] == other.get_handshake_hash().hex()
    if not ours_initiator:
        assert result["remote_static"] == init_p.hex()


@pytest.mark.parametrize("ours_initiator", [True, False])
def test_ctypes_core_interoperates_with_noiseprotocol(c, ours_initiator):
    (init_s, _), (resp_s, resp_p) = c.x25519_keypair(), c.x25519_keypair()
    mine = init_s if ours_initiator else resp_s
    ours = c.NoiseHandshake(ours_initiator, mine, prologue=PROLOGUE, remote_static=resp_p if ours_initiator else None)
    other = _noise(not ours_initiator, resp_s if ours_initiator else init_s, None if ours_initiator else resp_p)
    first, second = (ours, other) if ours_initiator else (other, ours)
    assert second.read_message(first.write_message(b"one")) == b"one"
    assert first.read_message(second.write_message(b"two")) == b"two"
    assert ours.handshake_hash == other.get_handshake_hash()
    transport = ours.to_transport()
    for payload in PAYLOADS:
        assert other.decrypt(transport.seal(payload)[4:]) == payload
        assert transport.open(other.encrypt(payload)) == payload
    # Noise Rekey() in both directions agrees with the independent implementation.
    transport.rekey()
    other.rekey_inbound_cipher()
    assert other.decrypt(transport.seal(b"after rekey")[4:]) == b"after rekey"
    other.rekey_outbound_cipher()
    transport.rekey_recv()
    assert transport.open(other.encrypt(b"back")) == b"back"
