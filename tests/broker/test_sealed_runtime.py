"""The sealed broker wired into the runtime: every channel between the supervisor and a
cell (control and each sandbox socket) runs sealed after its handshake; a forged frame
ends the channel; a cell that does not hold the key issued for it gets no channel."""

import os

import pytest

import pyisolate as iso
from pyisolate.errors import CellCrashed, PyIsolateError, SandboxClosed


def test_control_and_sandbox_channels_are_sealed(supervisor):
    sb = supervisor.spawn("sealed")
    assert sb.call("statistics.mean", [1, 2, 3]) == 2
    sb.exec("post('x' * 5000)")
    assert sb.recv(timeout=10) == "x" * 5000
    control, own = sb.cell.channel.transport, sb._channel.transport
    assert control is not None and own is not None
    assert control.send_nonce >= 2 and control.recv_nonce >= 2  # go, create ↔ hello, replies
    assert own.send_nonce >= 2 and own.recv_nonce >= 3  # call, exec ↔ ready, ret, post


def test_hybrid_supervisor_seals_too(cell_python):
    with iso.Supervisor(python=cell_python, pool=0, broker_hybrid=True) as sup:
        assert sup.broker_keys.hybrid
        sb = sup.spawn("hybrid")
        assert sb.call("math.factorial", 10) == 3628800


def test_forged_frame_on_the_control_channel_ends_it(supervisor):
    sb = supervisor.spawn("forged")
    cell = sb.cell
    # Bytes written straight into the supervisor's end of the control socket, bypassing
    # the transport: to the cell they are a frame that fails authentication.
    os.write(cell.channel.sock.fileno(), b"\x00\x00\x00\x20" + b"\x41" * 32)
    report = cell.crash_report(timeout=20)
    assert isinstance(report, CellCrashed)
    with pytest.raises(SandboxClosed):
        cell.request({"op": "stats"}, timeout=5)


def test_cell_with_another_key_gets_no_channel(cell_python, monkeypatch):
    sup = iso.Supervisor(python=cell_python, pool=0)
    issued = sup.broker_keys.issue

    def wrong_key():
        public, _ = issued()
        _, other = issued()
        return public, other  # the cell receives a valid key that is not the issued one

    monkeypatch.setattr(sup.broker_keys, "issue", wrong_key)
    try:
        with pytest.raises(PyIsolateError, match="no sealed channel"):
            sup.spawn("impostor")
    finally:
        sup.close()
