"""Fuzz target: the sealed frame decoder (length check, authentication, counters).

The input is a byte stream from the peer: frames are taken from it one after another
(4-byte length, then the body) and opened by the supervisor's transport. Properties:
a bad length or a frame that fails closes the transport, and a closed transport refuses
everything after; a frame that opens must be one the cell sealed, in order.
"""

import sys

import atheris

with atheris.instrument_imports():
    import keys

    from pyisolate import _broker_ctypes as c

SEALED = []  # what the cell sealed, in order (the seeds are made of these frames)


def test_one_input(data: bytes) -> None:
    _, receiver = keys.transports()
    pos, n = 0, 0
    while len(data) - pos >= 4:
        try:
            length = receiver.frame_length(data[pos : pos + 4])
        except c.BrokerError:
            assert receiver.closed
            break
        body = data[pos + 4 : pos + 4 + length]
        if len(body) < length:
            break  # the stream ends inside a frame: the channel closes (framing.Channel)
        try:
            payload = receiver.open(body)
        except c.BrokerError:
            assert receiver.closed
            try:
                receiver.open(body)
            except c.BrokerError:
                break
            raise AssertionError("a closed transport opened a frame") from None
        assert n < len(SEALED) and payload == SEALED[n], "a frame opened that the cell never sealed"
        n += 1
        pos += 4 + length


def seeds() -> list[bytes]:
    sender, _ = keys.transports()
    payloads = [b"", b'{"op":"stats","id":1}', bytes(64), bytes(range(256)) * 4]
    SEALED.extend(payloads)
    frames = [sender.seal(p) for p in payloads]
    return [frames[0], b"".join(frames[:2]), b"".join(frames)]


if __name__ == "__main__":
    seeds()  # SEALED must be known in every run, also when the corpus already exists
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
