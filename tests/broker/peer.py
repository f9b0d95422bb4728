"""Run by the BUILT interpreter (the `_pyisolate` extension): the other end of the
broker tests that run on the host's Python.

    peer.py CONFIG_JSON

Config keys: "mode" is "vectors" (run tests/vectors/noise_ik.json, print the results),
"xwing" (tests/vectors/xwing.json), "version", or "noise" (one side of an IK handshake on
the inherited socket "fd", then echo "frames" transport frames reversed); "role",
"static", "remote_static", "prologue", "payloads" for "noise" (hex strings).
"""

import json
import socket
import struct
import sys

import _pyisolate

from pyisolate import broker, framing
from pyisolate.errors import ProtocolError

H = bytes.fromhex


def vectors(path):
    results = []
    for v in json.load(open(path))["vectors"]:
        i = _pyisolate.NoiseHandshake(
            True,
            H(v["init_static"]),
            prologue=H(v["init_prologue"]),
            remote_static=H(v["init_remote_static"]),
            ephemeral_for_testing_only=H(v["init_ephemeral"]),
        )
        r = _pyisolate.NoiseHandshake(
            False,
            H(v["resp_static"]),
            prologue=H(v["resp_prologue"]),
            ephemeral_for_testing_only=H(v["resp_ephemeral"]),
        )
        out = []
        m = v["messages"]
        out.append(i.write_message(H(m[0]["payload"])).hex())
        r.read_message(H(out[0]))
        out.append(r.write_message(H(m[1]["payload"])).hex())
        i.read_message(H(out[1]))
        ti, tr = i.to_transport(), r.to_transport()
        for n, msg in enumerate(m[2:]):
            a, b = (ti, tr) if n % 2 == 0 else (tr, ti)
            frame = a.seal(H(msg["payload"]))
            assert b.open(frame[4:]) == H(msg["payload"])
            out.append(frame[4:].hex())
        results.append({"ciphertexts": out, "handshake_hash": i.handshake_hash.hex()})
    return results


def xwing(path):
    results = []
    for v in json.load(open(path))["vectors"]:
        pk, sk = _pyisolate.xwing_keypair(H(v["seed"]))
        ct, ss = _pyisolate.xwing_encapsulate(pk, seed_for_testing_only=H(v["randomness"]))
        ss_dec = _pyisolate.xwing_decapsulate(ct, sk)
        results.append({"pk": pk.hex(), "ct": ct.hex(), "ss": ss.hex(), "ss_dec": ss_dec.hex()})
    return results


def noise(cfg):
    sock = socket.socket(fileno=cfg["fd"])
    initiator = cfg["role"] == "initiator"
    hs = _pyisolate.NoiseHandshake(
        initiator,
        H(cfg["static"]),
        prologue=H(cfg["prologue"]),
        remote_static=H(cfg["remote_static"]) if initiator else None,
    )
    plain = []

    def send(msg):
        sock.sendall(struct.pack(">I", len(msg)) + msg)

    def recv():
        n = struct.unpack(">I", sock.recv(4, socket.MSG_WAITALL))[0]
        return sock.recv(n, socket.MSG_WAITALL)

    if initiator:
        send(hs.write_message(H(cfg["payloads"][0])))
        plain.append(hs.read_message(recv()).hex())
    else:
        plain.append(hs.read_message(recv()).hex())
        send(hs.write_message(H(cfg["payloads"][1])))
    channel = framing.Channel(sock)
    channel.seal(hs.to_transport())
    for _ in range(cfg["frames"]):
        payload = channel.recv_bytes()
        plain.append(payload.hex())
        channel.send_bytes(payload[::-1])
    remote = (hs.remote_static or b"").hex()
    return {"payloads": plain, "handshake_hash": hs.handshake_hash.hex(), "remote_static": remote}


def tamper():
    """The extension's SealedTransport under the tampering of test_tamper.py: every byte
    of a 64 B frame flipped, a replay, a bad length. Counts of refusals that closed it."""
    keys = broker.SupervisorKeys()
    _, secret = keys.issue()

    def pair():
        i = _pyisolate.NoiseHandshake(True, secret.private, prologue=b"t", remote_static=keys.public)
        r = _pyisolate.NoiseHandshake(False, keys._private, prologue=b"t")
        r.read_message(i.write_message())
        i.read_message(r.write_message())
        return i.to_transport(), r.to_transport()

    def refused(receiver, raw):
        """framing.Channel over a socketpair, as the runtime reads it: refused, closed."""
        a, b = socket.socketpair()
        channel = framing.Channel(b)
        channel.seal(receiver)
        a.sendall(raw)
        a.shutdown(socket.SHUT_WR)
        try:
            channel.recv_bytes()
        except ProtocolError:
            return channel.closed and receiver.closed
        finally:
            a.close()
            channel.close()
        return False

    out = {"flipped": 0, "positions": 0}
    for position in range(4 + 64 + 16):
        ti, tr = pair()
        frame = bytearray(ti.seal(bytes(64)))
        frame[position] ^= 0xFF
        out["positions"] += 1
        out["flipped"] += refused(tr, bytes(frame))
    ti, tr = pair()
    frame = ti.seal(b"once")
    assert tr.open(frame[4:]) == b"once"
    out["replay"] = refused(tr, frame)
    _, tr = pair()
    out["oversize"] = refused(tr, struct.pack(">I", (16 << 20) + 17))
    return out


def main():
    cfg = json.loads(sys.argv[1])
    mode = cfg["mode"]
    if mode == "version":
        result = {"sodium": _pyisolate.sodium_version(), "broker": broker.sodium_version(), "file": _pyisolate.__file__}
    elif mode == "vectors":
        result = vectors(cfg["path"])
    elif mode == "tamper":
        result = tamper()
    elif mode == "xwing":
        result = xwing(cfg["path"])
    else:
        result = noise(cfg)
    print(json.dumps(result))


main()
