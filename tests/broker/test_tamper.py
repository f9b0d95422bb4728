# ruff: noqa: F811 (the fixtures imported from broker_support are parameters here)
"""Tampering with sealed frames: every byte position flipped, truncation, reordering,
replay, counter rollback, bad lengths. Each is refused, the channel is closed (its keys
wiped, later frames refused too) and nothing is delivered. Lockstep rekey, counter
exhaustion and a new handshake (new keys, counters at zero). The C core runs in this
process through ctypes; framing.Channel is the code the supervisor and cells use."""

import os
import socket
import struct
import threading

import pytest
from broker_support import broker_lib, c, peer  # noqa: F401 (fixtures, used as parameters)

from pyisolate import broker, framing
from pyisolate.errors import ProtocolError

SAMPLES = [b"", b'{"op":"call","args":[1,2]}', os.urandom(64), os.urandom(1024)]


def _pair(c):
    (cs, _), (ss, sp) = c.x25519_keypair(), c.x25519_keypair()
    i = c.NoiseHandshake(True, cs, prologue=b"t", remote_static=sp)
    r = c.NoiseHandshake(False, ss, prologue=b"t")
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    return i.to_transport(), r.to_transport()


def _receiver(c):
    """(sending transport, receiving Channel, the socket to write raw bytes into)."""
    ti, tr = _pair(c)
    a, b = socket.socketpair()
    channel = framing.Channel(b)
    channel.seal(tr)
    return ti, channel, a


def _refused(channel, raw: bytes, writer: socket.socket, then_close: bool = True) -> None:
    writer.sendall(raw)
    if then_close:
        writer.shutdown(socket.SHUT_WR)  # a shortened frame ends the stream, never blocks
    with pytest.raises(ProtocolError):
        channel.recv_bytes()
    assert channel.closed and channel.transport.closed
    with pytest.raises(Exception):  # noqa: B017 - the wiped transport refuses everything
        channel.transport.open(b"\x00" * 32)


def test_sample_frames_round_trip(c):
    ti, channel, writer = _receiver(c)
    for payload in SAMPLES:
        writer.sendall(ti.seal(payload))
        assert channel.recv_bytes() == payload
    assert channel.transport.recv_nonce == len(SAMPLES)


@pytest.mark.parametrize("payload", SAMPLES, ids=lambda p: f"{len(p)}B")
def test_every_byte_position_flipped_is_refused(c, payload):
    size = 4 + len(payload) + 16
    for position in range(size):
        ti, channel, writer = _receiver(c)
        frame = bytearray(ti.seal(payload))
        frame[position] ^= 0xFF
        _refused(channel, bytes(frame), writer)
        writer.close()


def test_truncated_frames_are_refused(c):
    for cut in range(1, 4 + 64 + 16):  # every proper prefix of a 64-byte frame
        ti, channel, writer = _receiver(c)
        frame = ti.seal(SAMPLES[2])
        writer.sendall(frame[:cut])
        writer.shutdown(socket.SHUT_WR)
        with pytest.raises(ProtocolError):
            channel.recv_bytes()
        assert channel.closed
        writer.close()


def test_reordered_frames_are_refused(c):
    ti, channel, writer = _receiver(c)
    first, second = ti.seal(b"first"), ti.seal(b"second")
    _refused(channel, second + first, writer)


def test_replayed_frame_is_refused(c):
    ti, channel, writer = _receiver(c)
    frame = ti.seal(b"once")
    writer.sendall(frame)
    assert channel.recv_bytes() == b"once"
    _refused(channel, frame, writer)


def test_rolled_back_counter_is_refused(c):
    ti, channel, writer = _receiver(c)
    for n in range(5):
        writer.sendall(ti.seal(b"%d" % n))
        assert channel.recv_bytes() == b"%d" % n
    ti.set_for_testing_only(send_nonce=2)  # a sender that rolls its counter back
    _refused(channel, ti.seal(b"rolled back"), writer)


def test_skipped_counter_is_refused(c):
    ti, channel, writer = _receiver(c)
    ti.set_for_testing_only(send_nonce=7)
    _refused(channel, ti.seal(b"from the future"), writer)


@pytest.mark.parametrize("length", [0, 15, (16 << 20) + 17, 0xFFFFFFFF])
def test_bad_lengths_are_refused_before_reading_a_body(c, length):
    _, channel, writer = _receiver(c)
    # Only the header is written and the stream stays open: the refusal must not wait for a body.
    _refused(channel, struct.pack(">I", length), writer, then_close=False)


def test_nothing_after_a_bad_frame_is_delivered(c):
    ti, channel, writer = _receiver(c)
    good1, bad, good2 = ti.seal(b"one"), bytearray(ti.seal(b"two")), ti.seal(b"three")
    bad[-1] ^= 1
    writer.sendall(good1 + bytes(bad) + good2)
    assert channel.recv_bytes() == b"one"
    with pytest.raises(ProtocolError):
        channel.recv_bytes()
    assert channel.recv_bytes() is None  # closed: the valid frame behind the bad one is never opened


def test_oversize_payload_is_refused_on_send(c):
    ti, tr = _pair(c)
    with pytest.raises(c.BrokerError):
        ti.seal(b"\x00" * ((16 << 20) + 1))
    assert tr.open(ti.seal(b"still usable")[4:]) == b"still usable"  # the caller's mistake, not the peer's


def test_lockstep_rekey_rotates_keys(c):
    ti, tr = _pair(c)
    for t in (ti, tr):
        t.set_for_testing_only(rekey_interval=3)
    digests = set()
    for n in range(10):
        digests.add(ti.key_digest_for_testing_only())
        assert tr.open(ti.seal(b"%d" % n)[4:]) == b"%d" % n
    assert len(digests) == 4  # counters 0-2, 3-5, 6-8, 9: a new key every 3 frames
    assert ti.send_nonce == tr.recv_nonce == 10


def test_one_sided_rekey_is_refused(c):
    ti, tr = _pair(c)
    ti.rekey()
    with pytest.raises(c.BrokerError):
        tr.open(ti.seal(b"x")[4:])
    assert tr.closed


def test_counter_exhaustion_forces_a_new_handshake(c):
    ti, tr = _pair(c)
    ti.set_for_testing_only(send_nonce=2**64 - 2)
    tr.set_for_testing_only(recv_nonce=2**64 - 2)
    assert tr.open(ti.seal(b"last")[4:]) == b"last"
    with pytest.raises(c.BrokerError) as info:
        ti.seal(b"one too many")  # 2^64-1 is reserved
    assert info.value.args[0] == -4 and ti.closed


def test_new_handshake_rotates_keys_and_resets_counters(c):
    keys = broker.SupervisorKeys()
    public, secret = keys.issue()
    a, b = socket.socketpair()
    sup, cell = framing.Channel(a), framing.Channel(b)
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("cell", broker.initiate(b, b"control", secret)))
    t.start()
    sup.seal(broker.respond(a, b"control", keys, public))
    t.join()
    cell.seal(got["cell"])
    for n in range(3):
        cell.send({"n": n})
        assert sup.recv() == {"n": n}
    old_sup, old_cell = sup.transport, cell.transport
    before = old_sup.key_digest_for_testing_only()
    t = threading.Thread(target=lambda: broker.rehandshake_initiator(cell, b"control", secret))
    t.start()
    broker.rehandshake_responder(sup, b"control", keys, public)
    t.join()
    assert sup.transport is not old_sup and old_sup.closed and old_cell.closed  # old keys wiped
    assert sup.transport.key_digest_for_testing_only() != before
    assert (sup.transport.send_nonce, sup.transport.recv_nonce) == (0, 0)
    cell.send({"after": True})
    assert sup.recv() == {"after": True}


def _cell_side(*args) -> threading.Thread:
    """broker.initiate in a thread; its exception (or None) in thread.outcome."""

    def run():
        try:
            broker.initiate(*args)
            thread.outcome = None
        except ProtocolError as exc:
            thread.outcome = exc

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_wrong_identity_is_refused(c):
    keys = broker.SupervisorKeys()
    public, _ = keys.issue()
    _, impostor = keys.issue()  # a valid secret, but not the one issued for this channel
    a, b = socket.socketpair()
    t = _cell_side(b, b"control", impostor, 5)
    with pytest.raises(broker.HandshakeError, match="not the one issued"):
        broker.respond(a, b"control", keys, public, 5)
    a.close()
    t.join()
    assert isinstance(t.outcome, ProtocolError)  # the cell side fails too: no session exists


def test_other_channel_label_is_refused(c):
    keys = broker.SupervisorKeys()
    public, secret = keys.issue()
    a, b = socket.socketpair()
    t = _cell_side(b, b"sandbox:x", secret, 5)
    with pytest.raises(broker.HandshakeError):
        broker.respond(a, b"control", keys, public, 5)  # the prologue differs: message 1 fails
    a.close()
    t.join()
    assert isinstance(t.outcome, ProtocolError)  # the cell side fails too: no session exists


def test_extension_refuses_the_same_tampering(peer):
    got = peer({"mode": "tamper"})  # the built interpreter's _pyisolate.SealedTransport
    assert got["flipped"] == got["positions"] == 4 + 64 + 16
    assert got["replay"] is True and got["oversize"] is True
