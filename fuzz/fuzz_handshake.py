"""Fuzz target: the handshake message parser (IK message 1 on the supervisor's side,
message 2 on the cell's side).

The first input byte picks the side; the rest is the message. Properties: a message
that fails leaves the handshake unusable (no second try, no transport); one that is
accepted gives the payload and, on the supervisor's side, the cell's static key.
"""

import sys

import atheris

with atheris.instrument_imports():
    import keys

    from pyisolate import _broker_ctypes as c

CELL_PUBLIC = c.x25519_public(keys.CELL_S)


def _refuses_after_failure(hs) -> None:
    for attempt in (lambda: hs.write_message(b""), lambda: hs.read_message(b"\x00" * 48), hs.to_transport):
        try:
            attempt()
        except c.BrokerError:
            continue
        raise AssertionError("a failed handshake went on")


def test_one_input(data: bytes) -> None:
    if not data:
        return
    side, message = data[0] & 1, data[1:]
    if side == 0:  # the supervisor reads message 1
        hs = keys.responder()
        try:
            hs.read_message(message)
        except c.BrokerError:
            _refuses_after_failure(hs)
            return
        assert hs.remote_static == CELL_PUBLIC  # accepted only from the real cell key
    else:  # the cell reads message 2
        hs = keys.initiator()
        hs.write_message(b"")
        try:
            hs.read_message(message)
        except c.BrokerError:
            _refuses_after_failure(hs)
            return
        hs.to_transport()


def seeds() -> list[bytes]:
    m1, m2 = keys.messages()
    return [b"\x00" + m1, b"\x01" + m2]


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
