# ruff: noqa: F811 (the fixtures imported from broker_support are parameters here)
"""The cell's relay between each sandbox's sealed socket and the guest's plain end
(docs/broker-protocol.md §2): on the distribution it is the extension's native thread
(native/src/broker_relay.c), which must behave as the Python relay it replaces; with the
ctypes backend the Python relay still runs."""

import os
import socket
import struct
import threading
from pathlib import Path

import pytest
from broker_support import broker_lib, c  # noqa: F401 (fixtures, used as parameters)

import pyisolate as iso
from pyisolate import broker
from pyisolate.errors import PyIsolateError

NATIVE, PYTHON = "pyi-seal-relay", "broker-relay"


def thread_names(pid: int) -> list[str]:
    return [(task / "comm").read_text().strip() for task in Path(f"/proc/{pid}/task").iterdir()]


def test_the_distribution_cell_relays_natively(supervisor):
    sb = supervisor.spawn("native")
    assert sb.call("statistics.mean", [1, 2, 3]) == 2
    names = thread_names(sb.cell.pid)
    assert names.count(NATIVE) == 1 and PYTHON not in names
    supervisor.spawn("second").call("abs", -1)
    assert thread_names(sb.cell.pid).count(NATIVE) == 1  # one relay per cell, not per sandbox


def test_large_empty_and_fatal_frames_cross_the_relay(supervisor):
    sb = supervisor.spawn("frames")
    big = 6 << 20  # several reads and one buffer growth each way
    assert sb.call("len", "z" * big) == big
    sb.exec(f"post('y' * {big})")
    assert sb.recv(timeout=30) == "y" * big
    sb._channel.send_bytes(b"")  # the supervisor's drain frame: the guest skips it
    assert sb.call("math.factorial", 5) == 120
    own = sb._channel.transport
    assert own.send_nonce >= 4 and own.recv_nonce >= 4


def test_forged_frame_on_a_sandbox_socket_ends_that_sandbox_only(supervisor):
    victim, neighbour = supervisor.spawn("victim"), supervisor.spawn("neighbour")
    assert victim.cell is neighbour.cell
    # Bytes written straight into the supervisor's end of the sandbox socket, bypassing the
    # transport: the relay fails to open them and closes that link (nothing reaches the guest).
    os.write(victim._channel.sock.fileno(), b"\x00\x00\x00\x20" + b"\x41" * 32)
    with pytest.raises(PyIsolateError):
        victim.call("abs", -1, timeout=10)
    assert neighbour.call("abs", -7) == 7  # same cell, same relay thread: unaffected
    assert victim.cell.request({"op": "stats"}, timeout=5)["pid"] == victim.cell.pid


def test_ctypes_backend_keeps_the_python_relay(cell_python):
    with iso.Supervisor(python=cell_python, pool=0) as sup:
        sup.cell_env["PYISOLATE_BROKER_BACKEND"] = "ctypes"
        lib = sorted(Path(cell_python).resolve().parents[1].glob("lib/python3*/site-packages/pyisolate/lib*broker.so"))
        sup.cell_env["PYISOLATE_BROKER_LIB"] = str(lib[0])
        sb = sup.spawn("fallback")
        assert sb.call("len", "z" * 100_000) == 100_000
        names = thread_names(sb.cell.pid)
        assert PYTHON in names and NATIVE not in names


def test_concurrent_sandboxes_share_the_relay(supervisor):
    sbs = [supervisor.spawn(f"busy{i}") for i in range(3)]
    assert len({sb.cell.pid for sb in sbs}) == 1
    failures: list = []

    def hammer(sb, i):
        try:
            for n in range(150):
                text = f"{sb.name}:{n}:" + "w" * (n * 97 % 70_000)  # sizes across a read chunk
                assert sb.call("builtins.str", text) == text
        except Exception as exc:
            failures.append((i, exc))

    threads = [threading.Thread(target=hammer, args=(sb, i)) for i, sb in enumerate(sbs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not failures and not any(t.is_alive() for t in threads)


def _python_link(c):
    """A link as the cell makes it: (supervisor's transport and end, the relay's two
    sockets with the cell's transport, the guest's plain end)."""
    (cs, _), (ss, sp) = c.x25519_keypair(), c.x25519_keypair()
    cell = c.NoiseHandshake(True, cs, prologue=b"relay", remote_static=sp)
    sup = c.NoiseHandshake(False, ss, prologue=b"relay")
    sup.read_message(cell.write_message())
    cell.read_message(sup.write_message())
    supervisor_end, sealed = socket.socketpair()
    guest_end, inner = socket.socketpair()
    return sup.to_transport(), supervisor_end, (sealed, inner, cell.to_transport()), guest_end


def test_python_relay_outlives_a_link_whose_two_ends_close_together(c):
    """A sandbox refused at create: the supervisor and the guest drop their ends at once,
    so one select() batch reports both of the link's sockets. The relay must close that
    link once and keep serving the cell's next sandbox (it once died on the second event,
    and every later sandbox of the cell hung before `ready`)."""
    relay = broker._Relay()
    _, supervisor_end, link, guest_end = _python_link(c)
    supervisor_end.close()
    guest_end.close()
    relay.add(*link)
    transport, supervisor_end, link, guest_end = _python_link(c)
    relay.add(*link)
    guest_end.settimeout(10)
    supervisor_end.settimeout(10)
    supervisor_end.sendall(transport.seal(b"to the guest"))
    (length,) = struct.unpack(">I", guest_end.recv(4))
    assert guest_end.recv(length) == b"to the guest"
    guest_end.sendall(struct.pack(">I", 13) + b"to the broker")
    header = supervisor_end.recv(4)
    body = supervisor_end.recv(transport.frame_length(header), socket.MSG_WAITALL)
    assert transport.open(body) == b"to the broker"
