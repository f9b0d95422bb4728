"""Fixed keys and ephemerals for the fuzz targets, so a valid frame or handshake message
in the seed corpus stays valid from run to run and the fuzzer can mutate it."""

from pyisolate import _broker_ctypes as c

PROLOGUE = b"pyisolate-broker/1\x00fuzz"
CELL_S, SUP_S = bytes(range(1, 33)), bytes(range(33, 65))
CELL_E, SUP_E = bytes(range(65, 97)), bytes(range(97, 129))
SUP_PUBLIC = c.x25519_public(SUP_S)


def initiator() -> "c.NoiseHandshake":
    return c.NoiseHandshake(
        True, CELL_S, prologue=PROLOGUE, remote_static=SUP_PUBLIC, ephemeral_for_testing_only=CELL_E
    )


def responder() -> "c.NoiseHandshake":
    return c.NoiseHandshake(False, SUP_S, prologue=PROLOGUE, ephemeral_for_testing_only=SUP_E)


def messages() -> tuple[bytes, bytes]:
    i, r = initiator(), responder()
    m1 = i.write_message(b"hello")
    r.read_message(m1)
    return m1, r.write_message(b"")


def transports():
    """(cell's transport, supervisor's transport) after the fixed handshake."""
    i, r = initiator(), responder()
    r.read_message(i.write_message())
    i.read_message(r.write_message())
    return i.to_transport(), r.to_transport()
