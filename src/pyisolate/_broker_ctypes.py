"""The broker's C core through ctypes, for a supervisor that runs on a Python other than
the distribution's (where the `_pyisolate` extension cannot load), and for the fuzz
harness. Same names and behaviour as the extension's NoiseHandshake/SealedTransport.

The library is libpyisolate_broker.so (native/CMakeLists.txt: the broker's C files and
the static libsodium, nothing else exported than noise.h's PYI_API functions), found at
$PYISOLATE_BROKER_LIB, beside this file (the distribution's copy), or in the
distribution named by $PYISOLATE_PYTHON.
"""

from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path

LIBRARY = "libpyisolate_broker.so"
MAX_PAYLOAD = 16 << 20
_TAG = 16
_HEADER = 4


class BrokerError(Exception):
    """args: (status code, text); the same categories as the extension's BrokerError."""


def _candidates() -> list[Path]:
    found = []
    if env := os.environ.get("PYISOLATE_BROKER_LIB"):
        found.append(Path(env))
    found.append(Path(__file__).with_name(LIBRARY))
    if python := os.environ.get("PYISOLATE_PYTHON"):
        prefix = Path(python).resolve().parents[1]
        found += sorted(prefix.glob(f"lib/python3*/site-packages/pyisolate/{LIBRARY}"))
    return found


def _load() -> ctypes.CDLL:
    for path in _candidates():
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            break
    else:
        tried = ", ".join(str(p) for p in _candidates())
        raise ImportError(
            f"{LIBRARY} not found (tried {tried}): run the supervisor on the distribution's python3, "
            "or set PYISOLATE_PYTHON (or PYISOLATE_BROKER_LIB) to the distribution"
        )
    c_p, sz, u64 = ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint64
    vp = ctypes.c_void_p
    for name, res, args in [
        ("pyi_sodium_init", ctypes.c_int, []),
        ("pyi_status_text", c_p, [ctypes.c_int]),
        ("pyi_sodium_version", c_p, []),
        ("pyi_handshake_size", sz, []),
        ("pyi_transport_size", sz, []),
        ("pyi_handshake_init", ctypes.c_int, [vp, ctypes.c_int, ctypes.c_int, c_p, sz, c_p, c_p, c_p]),
        ("pyi_handshake_set_ephemeral_for_testing_only", None, [vp, c_p]),
        ("pyi_handshake_message_len", sz, [vp, sz]),
        ("pyi_handshake_write", ctypes.c_int, [vp, c_p, sz, vp]),
        ("pyi_handshake_read", ctypes.c_int, [vp, c_p, sz, vp, ctypes.POINTER(sz)]),
        ("pyi_handshake_clear", None, [vp]),
        ("pyi_handshake_step", ctypes.c_int, [vp]),
        ("pyi_handshake_remote_static", ctypes.c_int, [vp, vp]),
        ("pyi_handshake_hash", None, [vp, vp]),
        ("pyi_transport_from_handshake", ctypes.c_int, [vp, vp]),
        ("pyi_transport_close", None, [vp]),
        ("pyi_transport_seal", ctypes.c_int, [vp, c_p, sz, vp]),
        ("pyi_transport_check_header", ctypes.c_int64, [vp, c_p]),
        ("pyi_transport_open", ctypes.c_int, [vp, c_p, sz, vp]),
        ("pyi_transport_state", None, [vp, ctypes.POINTER(u64), ctypes.POINTER(u64), ctypes.POINTER(u64), vp]),
        ("pyi_transport_set_for_testing_only", None, [vp, u64, u64, u64]),
        ("pyi_transport_key_digest_for_testing_only", None, [vp, vp]),
        ("pyi_transport_rekey", None, [vp, ctypes.c_int]),
        ("pyi_x25519_keypair", None, [vp, vp]),
        ("pyi_x25519_public", None, [c_p, vp]),
        ("pyi_xwing_keypair", ctypes.c_int, [vp, vp, c_p]),
        ("pyi_xwing_encapsulate", ctypes.c_int, [vp, vp, c_p, c_p]),
        ("pyi_xwing_decapsulate", ctypes.c_int, [vp, c_p, c_p]),
        ("pyi_bench_ns", ctypes.c_double, [c_p, u64]),
    ]:
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    if lib.pyi_sodium_init() != 0:
        raise ImportError("libsodium failed to initialise")
    return lib


_lib = _load()


def _error(status: int) -> BrokerError:
    return BrokerError(status, _lib.pyi_status_text(status).decode())


def _check(status: int) -> None:
    if status != 0:
        raise _error(status)


def _exact(value, length: int, what: str) -> bytes:
    value = bytes(value)
    if len(value) != length:
        raise ValueError(f"{what} must be {length} bytes, got {len(value)}")
    return value


class SealedTransport:
    """The two CipherStates of a finished handshake, with the broker's framing."""

    def __init__(self, handshake_state):
        self._t = ctypes.create_string_buffer(_lib.pyi_transport_size())
        self._send_lock, self._recv_lock = threading.Lock(), threading.Lock()
        _check(_lib.pyi_transport_from_handshake(self._t, handshake_state))

    def _state(self):
        s, r, i, c = ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_uint64(), ctypes.c_int()
        _lib.pyi_transport_state(self._t, ctypes.byref(s), ctypes.byref(r), ctypes.byref(i), ctypes.byref(c))
        return s.value, r.value, i.value, bool(c.value)

    closed = property(lambda self: self._state()[3])
    send_nonce = property(lambda self: self._state()[0])
    recv_nonce = property(lambda self: self._state()[1])
    rekey_interval = property(lambda self: self._state()[2])

    def seal(self, payload) -> bytes:
        payload = bytes(payload)
        if len(payload) > MAX_PAYLOAD:
            raise _error(-3)
        out = ctypes.create_string_buffer(_HEADER + len(payload) + _TAG)
        with self._send_lock:
            _check(_lib.pyi_transport_seal(self._t, payload, len(payload), out))
        return out.raw

    def frame_length(self, header) -> int:
        header = bytes(header)
        with self._recv_lock, self._send_lock:
            if len(header) != _HEADER:
                _lib.pyi_transport_close(self._t)
                raise _error(-3)
            n = _lib.pyi_transport_check_header(self._t, header)
        if n < 0:
            raise _error(n)
        return n

    def open(self, body) -> bytes:
        body = bytes(body)
        out = ctypes.create_string_buffer(max(len(body) - _TAG, 1))
        with self._recv_lock, self._send_lock:
            rc = _lib.pyi_transport_open(self._t, body, len(body), out)
            if rc != 0:
                _lib.pyi_transport_close(self._t)
        _check(rc)
        return out.raw[: len(body) - _TAG]

    def close(self) -> None:
        with self._recv_lock, self._send_lock:
            _lib.pyi_transport_close(self._t)

    def rekey(self) -> None:
        with self._send_lock:
            _lib.pyi_transport_rekey(self._t, 1)

    def rekey_recv(self) -> None:
        with self._recv_lock:
            _lib.pyi_transport_rekey(self._t, 0)

    def set_for_testing_only(self, *, send_nonce=None, recv_nonce=None, rekey_interval=None) -> None:
        with self._recv_lock, self._send_lock:
            s, r, i, _ = self._state()
            send = s if send_nonce is None else send_nonce
            recv = r if recv_nonce is None else recv_nonce
            interval = i if rekey_interval is None else rekey_interval
            _lib.pyi_transport_set_for_testing_only(self._t, send, recv, interval)

    def key_digest_for_testing_only(self) -> bytes:
        out = ctypes.create_string_buffer(32)
        _lib.pyi_transport_key_digest_for_testing_only(self._t, out)
        return out.raw

    def __del__(self):
        if getattr(self, "_t", None) is not None:
            _lib.pyi_transport_close(self._t)


class NoiseHandshake:
    """Noise_IK_25519_ChaChaPoly_SHA256 (hybrid with kem_key); see the extension's type."""

    def __init__(
        self, initiator, static_key, *, prologue, remote_static=None, kem_key=None, ephemeral_for_testing_only=None
    ):
        s = _exact(static_key, 32, "static_key")
        rs = None if remote_static is None else _exact(remote_static, 32, "remote_static")
        if initiator and rs is None:
            raise ValueError("the initiator needs remote_static")
        kem = None if kem_key is None else _exact(kem_key, 1216 if initiator else 32, "kem_key")
        self._hs = ctypes.create_string_buffer(_lib.pyi_handshake_size())
        self._lock = threading.Lock()
        self._consumed = False
        self._rs = self._h = None
        prologue = bytes(prologue)
        mode = (int(bool(initiator)), int(kem is not None))
        _check(_lib.pyi_handshake_init(self._hs, *mode, prologue, len(prologue), s, rs, kem))
        if ephemeral_for_testing_only is not None:
            e = _exact(ephemeral_for_testing_only, 32, "ephemeral_for_testing_only")
            _lib.pyi_handshake_set_ephemeral_for_testing_only(self._hs, e)

    def _usable(self) -> None:
        if self._consumed or _lib.pyi_handshake_step(self._hs) < 0:
            raise _error(-2)

    def _note(self) -> None:
        if self._rs is None:
            out = ctypes.create_string_buffer(32)
            if _lib.pyi_handshake_remote_static(self._hs, out) == 0:
                self._rs = out.raw
        if _lib.pyi_handshake_step(self._hs) == 2:
            out = ctypes.create_string_buffer(32)
            _lib.pyi_handshake_hash(self._hs, out)
            self._h = out.raw

    def write_message(self, payload=b"") -> bytes:
        payload = bytes(payload)
        with self._lock:
            self._usable()
            out = ctypes.create_string_buffer(_lib.pyi_handshake_message_len(self._hs, len(payload)))
            _check(_lib.pyi_handshake_write(self._hs, payload, len(payload), out))
            self._note()
            return out.raw

    def read_message(self, message) -> bytes:
        message = bytes(message)
        with self._lock:
            self._usable()
            out = ctypes.create_string_buffer(len(message) + 1)
            n = ctypes.c_size_t()
            _check(_lib.pyi_handshake_read(self._hs, message, len(message), out, ctypes.byref(n)))
            self._note()
            return out.raw[: n.value]

    def to_transport(self) -> SealedTransport:
        with self._lock:
            if self._consumed:
                raise _error(-2)
            transport = SealedTransport(self._hs)
            self._consumed = True
            return transport

    finished = property(lambda self: self._h is not None)
    remote_static = property(lambda self: self._rs)
    handshake_hash = property(lambda self: self._h)

    def __del__(self):
        if getattr(self, "_hs", None) is not None:
            _lib.pyi_handshake_clear(self._hs)


def sodium_version() -> str:
    return _lib.pyi_sodium_version().decode()


def x25519_keypair() -> tuple[bytes, bytes]:
    sk, pk = ctypes.create_string_buffer(32), ctypes.create_string_buffer(32)
    _lib.pyi_x25519_keypair(sk, pk)
    return sk.raw, pk.raw


def x25519_public(private) -> bytes:
    pk = ctypes.create_string_buffer(32)
    _lib.pyi_x25519_public(_exact(private, 32, "private key"), pk)
    return pk.raw


def xwing_keypair(seed=None) -> tuple[bytes, bytes]:
    pk, sk = ctypes.create_string_buffer(1216), ctypes.create_string_buffer(32)
    _check(_lib.pyi_xwing_keypair(pk, sk, None if seed is None else _exact(seed, 32, "seed")))
    return pk.raw, sk.raw


def xwing_encapsulate(public_key, *, seed_for_testing_only=None) -> tuple[bytes, bytes]:
    ct, ss = ctypes.create_string_buffer(1120), ctypes.create_string_buffer(32)
    seed = None if seed_for_testing_only is None else _exact(seed_for_testing_only, 64, "seed")
    _check(_lib.pyi_xwing_encapsulate(ct, ss, _exact(public_key, 1216, "public_key"), seed))
    return ct.raw, ss.raw


def xwing_decapsulate(ciphertext, secret_key) -> bytes:
    ss = ctypes.create_string_buffer(32)
    _check(_lib.pyi_xwing_decapsulate(ss, _exact(ciphertext, 1120, "ciphertext"), _exact(secret_key, 32, "secret_key")))
    return ss.raw


def broker_bench(what: str, iterations: int) -> float:
    ns = _lib.pyi_bench_ns(what.encode(), iterations)
    if ns < 0:
        raise ValueError(f"broker_bench: unknown measurement {what!r} or a failure")
    return ns
