# ruff: noqa: F811 (the fixtures imported from broker_support are parameters here)
"""Published Noise IK vectors (tests/vectors/noise_ik.json: cacophony and snow) and the
X-Wing KATs (tests/vectors/xwing.json, from libsodium's test suite / the X-Wing draft),
in the built interpreter's extension and in the C core through ctypes."""

import json

from broker_support import VECTORS, broker_lib, c, peer  # noqa: F401 (fixtures, used as parameters)

H = bytes.fromhex


def _ik():
    return json.loads((VECTORS / "noise_ik.json").read_text())["vectors"]


def _xwing():
    return json.loads((VECTORS / "xwing.json").read_text())["vectors"]


def test_noise_ik_vectors_in_the_extension(peer):
    results = peer({"mode": "vectors", "path": str(VECTORS / "noise_ik.json")})
    assert len(results) == len(_ik()) >= 2
    for vector, got in zip(_ik(), results, strict=True):
        assert got["ciphertexts"] == [m["ciphertext"] for m in vector["messages"]], vector["source"]
        if "handshake_hash" in vector:
            assert got["handshake_hash"] == vector["handshake_hash"]


def test_noise_ik_vectors_through_ctypes(c):
    for v in _ik():
        i = c.NoiseHandshake(
            True,
            H(v["init_static"]),
            prologue=H(v["init_prologue"]),
            remote_static=H(v["init_remote_static"]),
            ephemeral_for_testing_only=H(v["init_ephemeral"]),
        )
        e = H(v["resp_ephemeral"])
        r = c.NoiseHandshake(False, H(v["resp_static"]), prologue=H(v["resp_prologue"]), ephemeral_for_testing_only=e)
        m = v["messages"]
        assert i.write_message(H(m[0]["payload"])) == H(m[0]["ciphertext"])
        assert r.read_message(H(m[0]["ciphertext"])) == H(m[0]["payload"])
        assert r.write_message(H(m[1]["payload"])) == H(m[1]["ciphertext"])
        assert i.read_message(H(m[1]["ciphertext"])) == H(m[1]["payload"])
        assert r.remote_static == c.x25519_public(H(v["init_static"]))
        ti, tr = i.to_transport(), r.to_transport()
        for n, msg in enumerate(m[2:]):
            a, b = (ti, tr) if n % 2 == 0 else (tr, ti)
            frame = a.seal(H(msg["payload"]))
            assert frame[4:] == H(msg["ciphertext"])
            assert b.open(frame[4:]) == H(msg["payload"])


def test_xwing_kats(peer, c):
    in_extension = peer({"mode": "xwing", "path": str(VECTORS / "xwing.json")})
    for v, got in zip(_xwing(), in_extension, strict=True):
        pk, sk = c.xwing_keypair(H(v["seed"]))
        ct, ss = c.xwing_encapsulate(pk, seed_for_testing_only=H(v["randomness"]))
        for pk_hex, ct_hex, ss_hex, dec_hex in (
            (pk.hex(), ct.hex(), ss.hex(), c.xwing_decapsulate(ct, sk).hex()),
            (got["pk"], got["ct"], got["ss"], got["ss_dec"]),
        ):
            assert pk_hex.startswith(v["ek_prefix"]) and len(pk_hex) == 2 * 1216
            assert ct_hex.startswith(v["ct_prefix"]) and len(ct_hex) == 2 * 1120
            assert ss_hex == dec_hex == v["ss"]


def test_xwing_wrong_ciphertext_gives_another_secret(c):
    pk, sk = c.xwing_keypair()
    ct, ss = c.xwing_encapsulate(pk)
    bad = bytes([ct[0] ^ 1]) + ct[1:]
    assert c.xwing_decapsulate(bad, sk) != ss  # implicit rejection
